"""The client installs and runs without the server: `pip install winnow` pulls four packages, and nothing in
`winnow.client` imports the server's libraries (Django, DRF, Celery, psycopg2, boto3, scikit-learn, scipy)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
SERVER_ONLY = (
    "django",
    "rest_framework",
    "drf_spectacular",
    "celery",
    "kombu",
    "redis",
    "psycopg2",
    "boto3",
    "botocore",
    "storages",
    "whitenoise",
    "dj_database_url",
    "sklearn",
    "scipy",
    "gunicorn",
)

# Runs in a fresh interpreter in which importing any server-only package raises, as on a machine without them.
_BLOCKED_RUN = """
import importlib.abc, sys

BLOCKED = set({blocked!r})

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"blocked server-only import: {{name}}", name=name)
        return None

sys.meta_path.insert(0, Blocker())
{body}
"""


def _run_without_server(body: str, tmp_path: Path) -> subprocess.CompletedProcess:
    code = _BLOCKED_RUN.format(blocked=SERVER_ONLY, body=textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1"},
    )


def test_the_blocker_blocks(tmp_path):
    """The check below can fail: with the blocker in place, importing Django is refused."""
    result = _run_without_server("import django", tmp_path)
    assert result.returncode != 0
    assert "blocked server-only import: django" in result.stderr


def test_client_modules_import_and_work_without_server_packages(tmp_path):
    result = _run_without_server(
        """
        import numpy as np
        from PIL import Image
        import winnow.client
        from winnow.client import api, cli, formats, embedder

        # The paths that import lazily: the embedder, the Lightly CSV and the metadata JSON, the CLI's help.
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, size=(12, 16, 16, 3), dtype=np.uint8)
        vectors = embedder.embed_images(images, image_size=16, patch_size=4, n_centroids=8, grid=2, dim=4)
        assert vectors.shape == (12, 4), vectors.shape
        names = [f"img_{i}.png" for i in range(12)]
        formats.save_embeddings("e.csv", vectors, [0] * 12, names)
        matrix, _labels, file_names = formats.load_embeddings("e.csv")
        assert matrix.shape == (12, 4) and file_names == names
        for i in range(3):
            Image.fromarray(images[i]).save(f"img_{i}.png")
        assert cli.main(["embed", "--input-dir", ".", "--output", "cli.csv", "--quiet"]) == 0
        client = api.Client(token="wnw_x", server="http://127.0.0.1:9")
        print("OK", sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED))
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "OK []"


def test_demo_without_the_server_extra_says_what_to_install(tmp_path):
    result = _run_without_server("from winnow.client import cli; sys.exit(cli.main(['demo', '--no-serve']))", tmp_path)
    assert result.returncode == 1, result.stderr
    assert "pip install 'winnow[server]'" in result.stderr


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def test_base_dependencies_are_the_clients_four():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert _requirement_names(project["dependencies"]) == {"numpy", "pillow", "requests", "tqdm"}
    server = _requirement_names(project["optional-dependencies"]["server"])
    assert {
        "django",
        "djangorestframework",
        "celery",
        "psycopg2-binary",
        "boto3",
        "scikit-learn",
        "scipy",
        "gunicorn",
    } <= server


def test_numpy_pca_matches_scikit_learns_randomized_pca():
    """The embedder's PCA replaced scikit-learn's PCA(svd_solver="randomized"): same components up to rounding."""
    sklearn_pca = pytest.importorskip("sklearn.decomposition").PCA
    from winnow.client.embedder import _PCA

    rng = np.random.default_rng(1)
    # A decaying spectrum, as pooled image features have; both the wide (n < d) and the tall case.
    for n, d, k in [(150, 400, 40), (900, 120, 30)]:
        scales = 1.0 / np.arange(1, d + 1)
        data = (rng.normal(size=(n, d)) * scales).astype(np.float32) @ np.linalg.qr(rng.normal(size=(d, d)))[0].astype(
            np.float32
        )
        theirs = sklearn_pca(n_components=k, svd_solver="randomized", random_state=3).fit(data)
        ours = _PCA.fit(data, k, seed=3)
        assert ours.components_.shape == (k, d) and ours.components_.dtype == np.float32
        np.testing.assert_allclose(
            ours.transform(data), theirs.transform(data), atol=2e-4 * np.abs(theirs.transform(data)).max()
        )
