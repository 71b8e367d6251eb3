"""Data for the browser tests, loaded through the real REST API with a token (as the CLI would)."""

from __future__ import annotations

import io

import numpy as np
import requests

SCENARIOS = ["sunny", "cloudy", "rainy", "snowy"]
WEIGHTS = [0.5, 0.25, 0.2, 0.05]


class Api:
    def __init__(self, base_url: str, token: str):
        self.base = base_url.rstrip("/") + "/api/v1"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def call(self, method: str, path: str, **kwargs):
        response = self.session.request(method, self.base + path, timeout=120, **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json() if response.content and "json" in response.headers.get("Content-Type", "") else response


def street_scenes(n: int, seed: int = 7):
    """n samples with Lightly-style driving metadata, and a 16-d embedding with one cluster per scenario."""
    rng = np.random.default_rng(seed)
    scenario = rng.choice(len(SCENARIOS), size=n, p=WEIGHTS)
    names = [f"scene_{i:04d}.jpg" for i in range(n)]
    metadata = []
    for i in range(n):
        metadata.append(
            {
                "weather": {
                    "scenario": SCENARIOS[scenario[i]],
                    "temperature": round(float(rng.normal([24, 15, 9, -3][scenario[i]], 3)), 1),
                },
                "number_of_pedestrians": int(rng.poisson(3)),
            }
        )
    centers = rng.normal(0, 6, size=(len(SCENARIOS), 16))
    embedding = (centers[scenario] + rng.normal(0, 1, size=(n, 16))).astype(np.float32)
    return names, metadata, embedding


def load_street_scenes(api: Api, dataset_id: str, n: int = 300):
    names, metadata, embedding = street_scenes(n)
    api.call("POST", f"/datasets/{dataset_id}/samples", json={"samples": [{"file_name": f} for f in names]})
    doc = {
        "images": [{"file_name": f, "id": i} for i, f in enumerate(names)],
        "metadata": [{"image_id": i, **m} for i, m in enumerate(metadata)],
    }
    api.call("POST", f"/datasets/{dataset_id}/metadata", json=doc)
    return names, metadata, embedding


def embeddings_csv(names, embedding) -> bytes:
    out = io.StringIO()
    d = embedding.shape[1]
    out.write("filenames," + ",".join(f"embedding_{j}" for j in range(d)) + ",labels\n")
    for name, row in zip(names, embedding):
        out.write(name + "," + ",".join(f"{x:.6f}" for x in row) + ",0\n")
    return out.getvalue().encode()
