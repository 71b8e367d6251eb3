"""Active learning on Fashion-MNIST: which selection strategy reaches an accuracy with the fewest labels.

Pool: 10,000 training images (balanced, random); test: the 10,000-image test set; embeddings: raw pixels / 255,
PCA to 64 dimensions fitted on the pool. Each run starts from 100 random labels; a round trains a logistic
regression on the labeled samples (PCA-64 features), predicts the pool, computes the scores Winnow computes from
uploaded predictions (winnow.client.predictions, the parser and scorer the server runs), and selects the next
100 with `select()` and the labeled set preselected, for 10 rounds (1,100 labels). Strategies: random, coreset,
typicality, uncertainty (margin), CORAL-style (margin ** 0.5 * coreset distance ** 0.5) and class balance on the
predicted class with uncertainty. Reported: mean test accuracy over seeds by labels used, and the labels each
needs to reach random's 1,000-label accuracy.

A second part times the upload of predictions for 1M samples x 10 classes (parse + validate + score, as the
worker does, from a JSON-lines file) against writing the same float32 probabilities with numpy.

    apt-get install -y dataset-fashion-mnist
    .venv/bin/python benchmarks/bench_active_learning.py [--seeds 3] [--upload-n 1000000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_section  # noqa: E402
from bench_quality import read_idx  # noqa: E402

from sampling.samplers import SelectionInput, ranking, select  # noqa: E402
from winnow.client import predictions as fmt  # noqa: E402

POOL, START, STEP, ROUNDS = 10_000, 100, 100, 10
STRATEGIES = {
    "random": lambda: [{"strategy": "random"}],
    "coreset": lambda: [{"strategy": "coreset"}],
    "typicality": lambda: [{"strategy": "typicality"}],
    "uncertainty": lambda: [{"strategy": "uncertainty", "field": "margin"}],
    "coral": lambda: [{"strategy": "coral", "field": "margin", "weight": 0.5}],
    "balance+uncertainty": lambda: [
        {"strategy": "balance", "field": "predicted_class", "target": "uniform"},
        {"strategy": "uncertainty", "field": "margin"},
    ],
}


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


def round_scores(proba: np.ndarray, classes: np.ndarray) -> dict:
    """What the server stores from an uploaded prediction task: the same module, from the same probabilities."""
    full = np.zeros((len(proba), 10))
    full[:, classes] = proba  # a class not yet labeled has probability 0
    s = fmt.classification_scores(full, full.max(axis=1))
    return {"margin": s["uncertainty_margin"], "predicted_class": full.argmax(axis=1).astype(object)}


def run(name, X, y, TX, Ty, seed):
    rng = np.random.default_rng(seed)
    labeled = np.sort(rng.choice(len(X), START, replace=False))
    curve = []
    for r in range(ROUNDS + 1):
        predict, classes = train(X[labeled], y[labeled])
        curve.append(float((classes[predict(TX).argmax(axis=1)] == Ty).mean()))
        if r == ROUNDS:
            break
        metadata = round_scores(predict(X), classes)
        inp = SelectionInput(embeddings=X, candidates=np.arange(len(X)), preselected=labeled, metadata=metadata)
        scores = select(inp, STRATEGIES[name](), n_samples=STEP, seed=seed * 100 + r)
        cand = np.setdiff1d(np.arange(len(X)), labeled)
        picked = cand[ranking(scores, cand)[:STEP]]
        labeled = np.sort(np.concatenate([labeled, picked]))
    return curve


def labels_to_reach(curve, target) -> str:
    for i, acc in enumerate(curve):
        if acc >= target - 1e-9:
            return f"{START + STEP * i:,}"
    return f"> {START + STEP * ROUNDS:,}"


def upload_timing(n: int) -> tuple[float, float, float]:
    """(seconds to parse + validate + score n samples x 10 classes from JSON lines, numpy write, file MB)."""
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--upload-n", type=int, default=1_000_000)
    args = parser.parse_args()
    X, y, TX, Ty = load()
    curves = {}
    for name in STRATEGIES:
        t0 = time.perf_counter()
        curves[name] = np.mean([run(name, X, y, TX, Ty, seed) for seed in range(args.seeds)], axis=0)
        print(f"{name}: {curves[name][-1]:.4f} after {START + STEP * ROUNDS} labels ({time.perf_counter() - t0:.0f} s)")
    target = curves["random"][ROUNDS - 1]  # random's accuracy with 1,000 labels
    labels = [START + STEP * i for i in range(ROUNDS + 1)]
    shown = [0, 1, 2, 4, 6, 8, 10]
    head = (
        "| strategy | "
        + " | ".join(f"{labels[i]:,}" for i in shown)
        + " | labels to reach random's 1,000-label accuracy |"
    )
    rows = [head, "|---" * (len(shown) + 2) + "|"]
    for name, curve in curves.items():
        cells = " | ".join(f"{curve[i]:.3f}" for i in shown)
        rows.append(f"| {name} | {cells} | {labels_to_reach(curve, target)} |")
    parse, write, mb = upload_timing(args.upload_n)
    body = (
        "## Active learning (bench_active_learning.py)\n\n"
        f"Fashion-MNIST, a pool of {POOL:,} training images, raw-pixel PCA-64, logistic regression; {START} random "
        f"labels then {ROUNDS} rounds of {STEP}; test accuracy on the 10,000 test images, mean of {args.seeds} seeds. "
        "Scores are the ones Winnow stores from uploaded predictions (uncertainty_margin, predicted_class).\n\n"
        + "\n".join(rows)
        + f"\n\nRandom's accuracy with 1,000 labels: {target:.3f} (the goal: reach it with at most 600 labels).\n\n"
        f"Prediction upload, {args.upload_n:,} samples x 10 classes ({mb:,.0f} MB of JSON lines): parse, validate "
        f"and score {parse:.1f} s ({args.upload_n / parse:,.0f} samples/s); writing the same float32 probabilities "
        f"with numpy {write:.2f} s (ratio {parse / max(write, 1e-9):,.0f}x). The database part (file names to idx, "
        "one UPDATE of the scores) is not in this number."
    )
    print(body)
    write_section("active-learning", body)


if __name__ == "__main__":
    main()
