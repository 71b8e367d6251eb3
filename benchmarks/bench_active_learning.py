"""Active learning on Fashion-MNIST through the API: which selection strategy reaches an accuracy with the fewest labels.

Pool: 10,000 training images (balanced, random); test: the 10,000-image test set; embeddings: raw pixels / 255,
PCA to 64 dimensions fitted on the pool. Everything a curator would do goes through Winnow's REST API (Django's
test client on a throwaway PostgreSQL database, Celery in-process): the pool is registered as samples of a
metadata-only dataset, the PCA-64 matrix uploaded as its embedding. Each run starts from 100 random labels; a
round trains a logistic regression on the labeled samples, predicts the pool, uploads the predictions as a
classification task (`PUT /predictions/<task>`, JSON lines, Lightly's format: the server parses, validates and
scores them), saves the labeled samples as a tag and asks for the next 100 with a sampling run
(`POST /sampling-runs`, the labeled tag preselected), reading the picks back from the run's ranked scores; for
10 rounds (1,100 labels). Strategies: random, coreset, typicality, uncertainty (the task's margin score), CORAL
(`coral` with a weight, one column per weight measured) and class balance on the predicted class with
uncertainty. Reported: mean test accuracy over seeds by labels used, and the labels each needs to reach
random's 1,000-label accuracy.

A second part times the parse of predictions for 1M samples x 10 classes (parse + validate + score, as the
worker does, from a JSON-lines file) against writing the same float32 probabilities with numpy; --upload-n 0
leaves it out (bench_prediction_upload.py times the whole upload through PostgreSQL).

    apt-get install -y dataset-fashion-mnist
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/winnow_bench_al \
      .venv/bin/python benchmarks/bench_active_learning.py [--seeds 3] [--coral-weights 0.3,0.5,0.7] [--upload-n 1000000]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import django_environment

django_environment(None)  # a throwaway test database made from DATABASE_URL's server
os.environ["WINNOW_MEDIA_ROOT"] = tempfile.mkdtemp(prefix="winnow-bench-al-")
os.environ.pop("AWS_STORAGE_BUCKET_NAME", None)
os.environ.pop("CELERY_BROKER_URL", None)  # runs and uploads execute in-process, as the embedded default does

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from _report import write_section  # noqa: E402
from bench_quality import read_idx  # noqa: E402

POOL, START, STEP, ROUNDS = 10_000, 100, 100, 10
TASK = "model"
CATEGORIES = [{"id": i, "name": f"class_{i}"} for i in range(10)]


def strategies(coral_weights: list[float]) -> dict[str, list[dict] | None]:
    """Name -> the run request's `strategies` (None: no predictions needed, a plain `strategy`)."""
    out: dict[str, list[dict] | None] = {
        "random": [{"strategy": "random"}],
        "coreset": [{"strategy": "coreset"}],
        "typicality": [{"strategy": "typicality"}],
        "uncertainty": [{"strategy": "uncertainty", "task": TASK, "score": "uncertainty_margin"}],
    }
    for w in coral_weights:
        out[f"coral w={w:g}"] = [{"strategy": "coral", "task": TASK, "score": "uncertainty_margin", "weight": w}]
    out["balance+uncertainty"] = [
        {"strategy": "balance", "task": TASK, "target": "uniform"},
        {"strategy": "uncertainty", "task": TASK, "score": "uncertainty_margin"},
    ]
    return out


def uses_predictions(spec: list[dict]) -> bool:
    return any("task" in s for s in spec)


def load(seed: int = 0):
    from sklearn.decomposition import PCA

    train_x, train_y = read_idx("train-images-idx3-ubyte.gz"), read_idx("train-labels-idx1-ubyte.gz")
    test_x, test_y = read_idx("t10k-images-idx3-ubyte.gz"), read_idx("t10k-labels-idx1-ubyte.gz")
    pool = np.sort(np.random.default_rng(seed).choice(len(train_x), POOL, replace=False))
    P = train_x[pool].reshape(POOL, -1).astype(np.float32) / 255.0
    T = test_x.reshape(len(test_x), -1).astype(np.float32) / 255.0
    pca = PCA(n_components=64, random_state=0).fit(P)
    return pca.transform(P).astype(np.float32), train_y[pool].astype(int), pca.transform(T).astype(np.float32), test_y


def train(X, y):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X)
    model = LogisticRegression(max_iter=300, C=0.5).fit(scaler.transform(X), y)
    return lambda Z: model.predict_proba(scaler.transform(Z)), model.classes_


def file_name(i: int) -> str:
    return f"fmnist_{i:05d}.png"


class Winnow:
    """The calls a curator's script makes, through the REST API with a token."""

    def __init__(self, client, dataset_id: str):
        self.client, self.base = client, f"/api/v1/datasets/{dataset_id}"
        self.timings = {"predictions": [], "tag": [], "run": []}

    def _ok(self, response, *codes):
        if response.status_code not in codes:
            raise SystemExit(f"{response.request['REQUEST_METHOD']} {response.request['PATH_INFO']}: "
                             f"{response.status_code} {response.content[:800]!r}")  # fmt: skip
        return response.json() if response.content else None

    def register(self, n: int) -> dict[int, str]:
        for start in range(0, n, 1000):
            body = {"samples": [{"file_name": file_name(i)} for i in range(start, min(n, start + 1000))]}
            self._ok(self.client.post(f"{self.base}/samples", body, format="json"), 200, 201)
        ids, url = {}, f"{self.base}/samples?limit=1000"
        while url:
            page = self._ok(self.client.get(url), 200)
            ids.update({s["idx"]: s["id"] for s in page["results"]})
            url = page["next"]
        return ids

    def embedding(self, X: np.ndarray) -> str:
        from django.core.files.uploadedfile import SimpleUploadedFile

        buffer = io.BytesIO()
        np.save(buffer, X.astype(np.float32))
        names = "\n".join(file_name(i) for i in range(len(X)))
        body = {"name": "pca64", "matrix": SimpleUploadedFile("m.npy", buffer.getvalue()),
                "names": SimpleUploadedFile("names.txt", names.encode())}  # fmt: skip
        return self._ok(self.client.post(f"{self.base}/embeddings", body, format="multipart"), 201)["id"]

    def upload_predictions(self, proba: np.ndarray) -> None:
        t0 = time.perf_counter()
        top = proba.argmax(axis=1)
        lines = [json.dumps({"schema": {"task_type": "classification", "categories": CATEGORIES}})]
        for i, (row, t) in enumerate(zip(np.round(proba, 6).tolist(), top.tolist(), strict=True)):
            lines.append(json.dumps({"file_name": file_name(i), "predictions": [
                {"category_id": t, "score": row[t], "probabilities": row}]}, separators=(",", ":")))  # fmt: skip
        response = self.client.put(f"{self.base}/predictions/{TASK}", "\n".join(lines) + "\n",
                                   content_type="application/x-ndjson")  # fmt: skip
        upload = self._ok(response, 200, 202)
        while upload["status"] not in ("succeeded", "failed"):  # a large body went to the (in-process) worker
            time.sleep(0.2)
            upload = self._ok(self.client.get(f"{self.base}/predictions/uploads/{upload['id']}"), 200)
        if upload["status"] != "succeeded":
            raise SystemExit(f"prediction upload failed: {upload['error']}")
        self.timings["predictions"].append(time.perf_counter() - t0)

    def tag(self, name: str, sample_ids: list[str]) -> str:
        t0 = time.perf_counter()
        tag = self._ok(
            self.client.post(f"{self.base}/tags", {"name": name, "sample_ids": sample_ids}, format="json"), 201
        )
        self.timings["tag"].append(time.perf_counter() - t0)
        return tag["id"]

    def select(self, name: str, embedding: str, spec: list[dict], preselected: str, seed: int) -> list[int]:
        t0 = time.perf_counter()
        body = {"name": name, "embedding": embedding, "strategies": spec, "n_samples": STEP,
                "preselected_tag": preselected, "seed": seed}  # fmt: skip
        run = self._ok(self.client.post(f"{self.base}/sampling-runs", body, format="json"), 201, 202)
        while run["status"] not in ("succeeded", "failed"):
            time.sleep(0.2)
            run = self._ok(self.client.get(f"{self.base}/sampling-runs/{run['id']}"), 200)
        if run["status"] != "succeeded":
            raise SystemExit(f"run {name} failed: {run['error']}")
        page = self._ok(self.client.get(f"{self.base}/sampling-runs/{run['id']}/scores?limit={STEP}"), 200)
        self.timings["run"].append(time.perf_counter() - t0)
        return [row["idx"] for row in page["results"]]


def run(api: Winnow, ids: dict[int, str], embedding: str, name: str, spec, X, y, TX, Ty, seed: int):
    rng = np.random.default_rng(seed)
    labeled = np.sort(rng.choice(len(X), START, replace=False))
    curve = []
    for r in range(ROUNDS + 1):
        predict, classes = train(X[labeled], y[labeled])
        curve.append(float((classes[predict(TX).argmax(axis=1)] == Ty).mean()))
        if r == ROUNDS:
            break
        if uses_predictions(spec):
            full = np.zeros((len(X), 10))
            full[:, classes] = predict(X)  # a class not yet labeled has probability 0
            api.upload_predictions(full)
        tag = api.tag(f"labeled {name} s{seed} r{r}", [ids[int(i)] for i in labeled])
        picked = api.select(f"{name} s{seed} r{r}", embedding, spec, tag, seed * 100 + r)
        assert len(picked) == STEP and not set(picked) & set(labeled.tolist()), name
        labeled = np.sort(np.concatenate([labeled, picked]))
    return curve


def labels_to_reach(curve, target) -> str:
    for i, acc in enumerate(curve):
        if acc >= target - 1e-9:
            return f"{START + STEP * i:,}"
    return f"> {START + STEP * ROUNDS:,}"


def upload_timing(n: int) -> tuple[float, float, float]:
    """(seconds to parse + validate + score n samples x 10 classes from JSON lines, numpy write, file MB)."""
    from winnow.client import predictions as fmt

    rng = np.random.default_rng(0)
    cats = [{"id": i, "name": f"c{i}"} for i in range(10)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "predictions.jsonl"
        with path.open("w") as out:
            out.write(json.dumps({"schema": {"task_type": "classification", "categories": cats}}) + "\n")
            for start in range(0, n, 100_000):
                p = rng.dirichlet(np.ones(10), size=min(100_000, n - start)).round(5)
                p[:, 0] = np.clip(1 - p[:, 1:].sum(axis=1), 0, 1)
                top = p.argmax(axis=1)
                for i, (row, t) in enumerate(zip(p.tolist(), top.tolist(), strict=True)):
                    record = {"file_name": f"img_{start + i:07d}.jpg", "predictions": [
                        {"category_id": t, "score": row[t], "probabilities": row}]}  # fmt: skip
                    out.write(json.dumps(record, separators=(",", ":")) + "\n")
        t0 = time.perf_counter()
        with path.open("rb") as handle:
            columns = fmt.parse_stream(handle, task="bench")
        fmt.scores(columns)
        fmt.predicted_class(columns)
        parse = time.perf_counter() - t0
        t0 = time.perf_counter()
        np.save(Path(tmp) / "probabilities.npy", columns.arrays["probabilities"])
        write = time.perf_counter() - t0
        return parse, write, path.stat().st_size / 1e6


def report(curves_by_seed: dict, timings: dict, seeds: int, total_s: float) -> str:
    curves = {name: np.mean(c, axis=0) for name, c in curves_by_seed.items()}
    labels = [START + STEP * i for i in range(ROUNDS + 1)]
    shown = [0, 1, 2, 4, 5, 6, 8, 9, 10]
    head = (
        "| strategy | "
        + " | ".join(f"{labels[i]:,}" for i in shown)
        + " | labels to reach random's 1,000-label accuracy |"
    )
    rows = [head, "|---" * (len(shown) + 2) + "|"]
    target = curves["random"][ROUNDS - 1] if "random" in curves else float("nan")  # random's accuracy, 1,000 labels
    for name, curve in curves.items():
        cells = " | ".join(f"{curve[i]:.3f}" for i in shown)
        rows.append(f"| {name} | {cells} | {labels_to_reach(curve, target)} |")
    mean = {k: float(np.mean(v)) if v else float("nan") for k, v in timings.items()}
    load_avg = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    body = (
        "## Active learning (bench_active_learning.py)\n\n"
        f"Fashion-MNIST, a pool of {POOL:,} training images, raw-pixel PCA-64, logistic regression; {START} random "
        f"labels then {ROUNDS} rounds of {STEP}; test accuracy on the 10,000 test images, mean of {seeds} seed(s). "
        "Every round goes through the REST API (Django's test client, a throwaway PostgreSQL database, Celery "
        "in-process): the pool's predictions are uploaded as a classification task (`PUT /predictions/model`, "
        "JSON lines; only for the strategies that read them), the labeled samples saved as a tag, and the next "
        f"{STEP} asked of a sampling run with that tag preselected; uncertainty is the task's `uncertainty_margin` "
        "score, class balance is on its predicted class (target uniform), CORAL is `coral` with the weight "
        "shown (uncertainty ** w x coreset distance ** (1 - w)).\n\n"
        + "\n".join(rows)
        + f"\n\nRandom's accuracy with 1,000 labels: {target:.3f} (the goal: reach it with at most 600 labels).\n\n"
        f"Per round, mean over all rounds: prediction upload of {POOL:,} samples x 10 classes "
        f"{mean['predictions']:.2f} s, tag {mean['tag']:.2f} s, sampling run and its picks {mean['run']:.2f} s; "
        f"the whole run {total_s / 60:.0f} min on the shared 2-core machine (load average at the end {load_avg})."
    )
    return body


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--coral-weights", default="0.3,0.5,0.7", help="CORAL weights to measure, comma-separated")
    parser.add_argument("--only", default="", help="comma-separated strategy names (default: all)")
    parser.add_argument("--upload-n", type=int, default=1_000_000, help="0 leaves the parse timing out")
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    weights = [float(w) for w in args.coral_weights.split(",") if w.strip()]
    chosen = strategies(weights)
    if args.only:
        chosen = {k: v for k, v in chosen.items() if k in args.only.split(",")}

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test.utils import setup_test_environment
    from rest_framework.test import APIClient

    from curation.services import create_dataset
    from winnow.accounts.models import ApiToken

    X, y, TX, Ty = load()
    setup_test_environment()
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    t_all = time.perf_counter()
    try:
        user = get_user_model().objects.create_user("bench-al", password="bench-pw-123")
        _token, key = ApiToken.issue(user, "bench")
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
        curves = {name: [] for name in chosen}
        timings = {"predictions": [], "tag": [], "run": []}
        for seed in range(args.seeds):
            for name, spec in chosen.items():
                # A dataset per strategy and seed: each loop's uploads replace only its own predictions.
                dataset = create_dataset(user, f"fmnist {name} s{seed}", "meta")
                api = Winnow(client, dataset.id)
                ids = api.register(len(X))
                embedding = api.embedding(X)
                t0 = time.perf_counter()
                curves[name].append(run(api, ids, embedding, name, spec, X, y, TX, Ty, seed))
                for k, v in api.timings.items():
                    timings[k] += v
                print(f"seed {seed} {name}: {curves[name][-1][-1]:.4f} after {START + STEP * ROUNDS} labels "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip
            # After each seed, the report so far (a long run stopped early still leaves its numbers).
            body = report(curves, timings, seed + 1, time.perf_counter() - t_all)
            print(body, flush=True)
            if not args.no_write:
                write_section("active-learning", body)
    finally:
        connection.creation.destroy_test_db(old_name, verbosity=0)
    if args.upload_n:
        parse, write, mb = upload_timing(args.upload_n)
        body += (
            f"\n\nPrediction parse, {args.upload_n:,} samples x 10 classes ({mb:,.0f} MB of JSON lines): parse, "
            f"validate and score {parse:.1f} s ({args.upload_n / parse:,.0f} samples/s); writing the same float32 "
            f"probabilities with numpy {write:.2f} s (ratio {parse / max(write, 1e-9):,.0f}x). The database part is "
            "in the prediction-upload section."
        )
    print(body)
    if not args.no_write:
        write_section("active-learning", body)


if __name__ == "__main__":
    main()
