"""Sampler quality on a long-tailed Fashion-MNIST subset: classes covered and accuracy.

Pool: the ten training classes, 3,000 images of class 0 down to 20 of class 9 (geometric).
Embeddings: raw pixels / 255, PCA to 64 dimensions fitted on the pool (or, with --embeddings,
a float .npy with one row per Fashion-MNIST image: the 60,000 training images in file order,
then the 10,000 test images). For each budget k the selected pool samples train a 1-NN and a
logistic-regression classifier, evaluated on the balanced 10,000-image test set.

    apt-get install -y dataset-fashion-mnist
    .venv/bin/python benchmarks/bench_quality.py [--embeddings PATH.npy]
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_section  # noqa: E402

from sampling.samplers import SelectionInput, ranking, select  # noqa: E402

DATA = Path("/usr/share/datasets/fashion-mnist")
BUDGETS = (10, 20, 50, 100, 500)
SEEDS = (0, 1, 2)
RANDOM_SEEDS = tuple(range(10))
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(name: str) -> np.ndarray:
    with gzip.open(DATA / name) as f:
        raw = f.read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def long_tail_sizes(top: int = 3000, bottom: int = 20, classes: int = 10) -> list[int]:
    return [int(round(top * (bottom / top) ** (i / (classes - 1)))) for i in range(classes)]


def load(embeddings_path: str | None, seed: int = 0):
    train_x, train_y = read_idx("train-images-idx3-ubyte.gz"), read_idx("train-labels-idx1-ubyte.gz")
    test_x, test_y = read_idx("t10k-images-idx3-ubyte.gz"), read_idx("t10k-labels-idx1-ubyte.gz")
    rng = np.random.default_rng(seed)
    pool = np.sort(
        np.concatenate(
            [rng.choice(np.flatnonzero(train_y == c), size, replace=False) for c, size in enumerate(long_tail_sizes())]
        )
    )
    if embeddings_path:
        E = np.load(embeddings_path).astype(np.float32)
        if len(E) != len(train_x) + len(test_x):
            raise SystemExit(f"--embeddings: expected {len(train_x) + len(test_x)} rows (train then test)")
        return E[pool], train_y[pool].astype(int), E[len(train_x) :], test_y.astype(int), "given embeddings"
    from sklearn.decomposition import PCA

    P = train_x[pool].reshape(len(pool), -1).astype(np.float32) / 255.0
    T = test_x.reshape(len(test_x), -1).astype(np.float32) / 255.0
    pca = PCA(n_components=64, random_state=0).fit(P)
    return (
        pca.transform(P).astype(np.float32),
        train_y[pool].astype(int),
        pca.transform(T).astype(np.float32),
        test_y.astype(int),
        "raw-pixel PCA-64",
    )


def picks_for(X, strategies, k, seed, **kw) -> np.ndarray:
    n = len(X)
    inp = SelectionInput(embeddings=X, candidates=np.arange(n), preselected=np.zeros(0, dtype=np.int64), metadata={})
    scores = select(inp, strategies, n_samples=k, seed=seed, **kw)
    return ranking(scores, np.arange(n))[:k]


def diversity_picks(X, k, seed):
    """Diversity with the min_distance (found by bisection) whose stopping point is closest to k picks."""
    n = len(X)
    inp = SelectionInput(embeddings=X, candidates=np.arange(n), preselected=np.zeros(0, dtype=np.int64), metadata={})
    lo, hi = 1e-3, float(np.linalg.norm(X - X.mean(0), axis=1).max() * 2)
    best = None
    for _ in range(30):
        md = (lo + hi) / 2
        scores = select(inp, [{"strategy": "diversity", "min_distance": md}], n_samples=None, seed=seed)
        count = int(np.sum(scores > md))
        if best is None or abs(count - k) < abs(best[0] - k):
            best = (count, md, scores)
        if count == k:
            break
        lo, hi = (md, hi) if count > k else (lo, md)
    count, md, scores = best
    return ranking(scores, np.arange(n))[:count], md


def global_density_picks(X, k):
    """The trap DESIGN.md warns about: top-k by global kNN density (k=20)."""
    X64 = X.astype(np.float64)
    sq = (X64**2).sum(1)
    mean_knn = np.empty(len(X))
    for s in range(0, len(X), 1024):
        d2 = np.maximum(sq[s : s + 1024, None] + sq[None] - 2 * X64[s : s + 1024] @ X64.T, 0)
        mean_knn[s : s + 1024] = np.sqrt(np.sort(d2, axis=1)[:, 1:21]).mean(1)
    return np.argsort(mean_knn, kind="stable")[:k]


# Typicality's clustering at scale, forced onto the small pool so its quality can be compared with
# the exact path (KMeans on every row, what the pool itself uses):
# - "sampled": the path past FULL_KMEANS_MAX rows: KMeans on FIT_PER_CLUSTER rows per cluster
#   (30; at least FIT_ROWS, lowered here to 500), then every row assigned to its nearest center;
# - "minibatch": what runs past FULL_KMEANS_MAX used before (MiniBatchKMeans over every row).
TYPICALITY_VARIANTS = ("exact", "sampled", "minibatch")
TYPICALITY_BUDGETS = (10, 20, 50, 100)


def typicality_variant(name: str):
    """A context manager that makes typicality cluster the `name` way."""
    import contextlib

    from sampling.samplers import typicality

    @contextlib.contextmanager
    def forced():
        saved = (typicality.FULL_KMEANS_MAX, typicality.FIT_ROWS, typicality.cluster_rows)
        try:
            if name == "sampled":
                typicality.FULL_KMEANS_MAX, typicality.FIT_ROWS = 0, 500
            elif name == "minibatch":

                def minibatch(X, rows, shift, n_clusters, seed, monitor=None):
                    from sklearn.cluster import MiniBatchKMeans

                    Z = X[rows].astype(np.float32) - shift
                    if min(n_clusters, len(Z)) <= 1:
                        return np.zeros(len(Z), dtype=np.int64)
                    km = MiniBatchKMeans(
                        n_clusters=n_clusters,
                        n_init=1,
                        random_state=seed,
                        batch_size=max(4096, 3 * n_clusters),
                        max_iter=50,
                    )
                    return km.fit_predict(Z).astype(np.int64)

                typicality.cluster_rows = minibatch
            yield
        finally:
            typicality.FULL_KMEANS_MAX, typicality.FIT_ROWS, typicality.cluster_rows = saved

    return forced()


def typicality_rows(X, y, Xt, yt, variants=TYPICALITY_VARIANTS) -> list[str]:
    """Typicality's clustering variants side by side: classes covered and accuracy, mean and spread over seeds."""
    lines = [
        "| typicality clustering | k | classes covered (per seed) | 1-NN accuracy | logistic regression accuracy |",
        "|---|---:|---:|---:|---:|",
    ]
    for variant in variants:
        for k in TYPICALITY_BUDGETS:
            rows = []
            with typicality_variant(variant):
                for seed in SEEDS:
                    rows.append(evaluate(X, y, Xt, yt, picks_for(X, [{"strategy": "typicality"}], k, seed)))
            cov = [r[0] for r in rows]
            nn, lr = np.array([r[1] for r in rows]), np.array([r[2] for r in rows])
            lines.append(
                f"| {variant} | {k} | {np.mean(cov):.1f} ({', '.join(map(str, cov))}) | "
                f"{nn.mean():.3f} ± {nn.std():.3f} | {lr.mean():.3f} ± {lr.std():.3f} |"
            )
    return lines


def evaluate(X, y, Xt, yt, picks):
    from sklearn.linear_model import LogisticRegression

    picks = np.asarray(picks)
    classes = len(np.unique(y[picks]))
    S, sy = X[picks].astype(np.float64), y[picks]
    T = Xt.astype(np.float64)
    nn = np.empty(len(T), dtype=int)
    for s in range(0, len(T), 2000):
        d2 = (T[s : s + 2000] ** 2).sum(1)[:, None] + (S**2).sum(1)[None] - 2 * T[s : s + 2000] @ S.T
        nn[s : s + 2000] = sy[np.argmin(d2, axis=1)]
    acc_nn = float(np.mean(nn == yt))
    if classes > 1:
        lr = LogisticRegression(max_iter=2000, C=1.0).fit(S, sy)
        acc_lr = float(np.mean(lr.predict(T) == yt))
    else:
        acc_lr = float(np.mean(yt == sy[0]))
    return classes, acc_nn, acc_lr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embeddings", help="float .npy, 70,000 rows: Fashion-MNIST train then test")
    parser.add_argument("--no-report", action="store_true")
    parser.add_argument(
        "--typicality-only",
        action="store_true",
        help="only typicality's clustering variants (exact, sampled, minibatch)",
    )
    parser.add_argument("--variants", default=",".join(TYPICALITY_VARIANTS), help="with --typicality-only")
    args = parser.parse_args()
    t0 = time.perf_counter()
    X, y, Xt, yt, source = load(args.embeddings)
    sizes = np.bincount(y, minlength=10)
    print(f"pool {len(X)} ({source}), class sizes {sizes.tolist()}", flush=True)
    if args.typicality_only:
        body = "\n".join(
            [
                "## Typicality's clustering at scale: quality on long-tailed Fashion-MNIST",
                "",
                f"Command: `.venv/bin/python benchmarks/bench_quality.py --typicality-only`. Pool and evaluation as in "
                f"the sampler quality section ({len(X):,} images, {source}); mean over seeds {', '.join(map(str, SEEDS))} "
                "(± the spread over seeds). *exact*: KMeans on every row (the path up to 50,000 rows); *sampled*: the "
                "path past 50,000 rows forced here (KMeans with plain k-means++ seeding on 30 rows per cluster, at least 500, then every row "
                "assigned to its nearest center in blocks); *minibatch*: MiniBatchKMeans over every row, what ran "
                "past 50,000 rows before.",
                "",
                *typicality_rows(X, y, Xt, yt, args.variants.split(",")),
                "",
            ]
        )
        print(body)
        print(f"total {time.perf_counter() - t0:.0f}s")
        if not args.no_report:
            write_section("bench_quality_typicality" + ("_embeddings" if args.embeddings else ""), body)
        return
    kmax = max(BUDGETS)
    results: dict[str, dict[int, list]] = {}

    def add(method, k, picks, extra=None):
        results.setdefault(method, {}).setdefault(k, []).append(evaluate(X, y, Xt, yt, picks) + (extra,))

    for seed in RANDOM_SEEDS:
        order = picks_for(X, [{"strategy": "random"}], kmax, seed)
        for k in BUDGETS:
            add("random", k, order[:k])
    for seed in SEEDS:
        order = picks_for(X, [{"strategy": "coreset"}], kmax, seed)
        for k in BUDGETS:
            add("coreset", k, order[:k])
        for k in BUDGETS:
            add("typicality", k, picks_for(X, [{"strategy": "typicality"}], k, seed))
            picks, md = diversity_picks(X, k, seed)
            add("diversity", k, picks, (len(picks), md))
        print(f"seed {seed} done ({time.perf_counter() - t0:.0f}s)", flush=True)
    dens = global_density_picks(X, kmax)
    for k in BUDGETS:
        add("global density (trap)", k, dens[:k])
    # How many coreset / random picks until every class is covered.
    full_cover = {}
    for name, strategy, seeds in (("random", "random", RANDOM_SEEDS), ("coreset", "coreset", SEEDS)):
        counts = []
        for seed in seeds:
            order = picks_for(X, [{"strategy": strategy}], len(X) if strategy == "random" else 2000, seed)
            seen = np.zeros(10, bool)
            for i, j in enumerate(order):
                seen[y[j]] = True
                if seen.all():
                    counts.append(i + 1)
                    break
        full_cover[name] = counts

    lines = [
        "## Sampler quality: long-tailed Fashion-MNIST",
        "",
        f"Command: `.venv/bin/python benchmarks/bench_quality.py{' --embeddings ' + args.embeddings if args.embeddings else ''}` "
        "(needs Debian's `dataset-fashion-mnist`).",
        "",
        f"Pool: {len(X):,} training images, class sizes {', '.join(map(str, sizes))} (classes 0-9 in "
        f"Fashion-MNIST order, 3,000 down to 20, geometric); embeddings: {source}. Classifiers are trained "
        "on the selected samples only and evaluated on the balanced 10,000-image test set: 1-NN in the "
        "embedding space and logistic regression. random: mean over "
        f"{len(RANDOM_SEEDS)} seeds; coreset, typicality, diversity: mean over {len(SEEDS)} seeds; diversity's "
        "`min_distance` is bisected so its stopping point lands as close to k picks as it can (the count "
        "it reached is shown; stopped at exactly k picks it is the same greedy order as coreset, so equal "
        "rows are expected); *global density* is the top-k by global 20-NN density, the trap that "
        "TypiClust's clustering avoids.",
        "",
        "| method | k | classes covered | 1-NN accuracy | logistic regression accuracy |",
        "|---|---:|---:|---:|---:|",
    ]
    for method in ("random", "coreset", "diversity", "typicality", "global density (trap)"):
        for k in BUDGETS:
            rows = results[method][k]
            cov = np.mean([r[0] for r in rows])
            nn = np.mean([r[1] for r in rows])
            lr = np.mean([r[2] for r in rows])
            label = str(k)
            if method == "diversity":
                got = [r[3][0] for r in rows]
                label = f"{k} (reached {min(got)}-{max(got)})" if min(got) != max(got) else f"{k} (reached {got[0]})"
            lines.append(f"| {method} | {label} | {cov:.1f} | {nn:.3f} | {lr:.3f} |")
    lines += [
        "",
        "Picks until all ten classes are covered: "
        + "; ".join(f"{name}: {', '.join(map(str, c))} (per seed)" for name, c in full_cover.items())
        + ".",
        "",
    ]
    cov20 = np.mean([r[0] for r in results["coreset"][20]])
    cov100 = np.mean([r[0] for r in results["coreset"][100]])
    r20 = np.mean([r[0] for r in results["random"][20]])
    r100 = np.mean([r[0] for r in results["random"][100]])
    lines.append(
        f"DESIGN.md's claim (greedy k-center covers 9 of 10 classes in 20 picks and 10 in 100; random about "
        f"6 and 8): measured here coreset {cov20:.1f} and {cov100:.1f}, random {r20:.1f} and {r100:.1f}."
    )
    body = "\n".join(lines)
    print(body)
    print(f"total {time.perf_counter() - t0:.0f}s")
    if not args.no_report:
        write_section("bench_quality" + ("_embeddings" if args.embeddings else ""), body)


if __name__ == "__main__":
    main()
