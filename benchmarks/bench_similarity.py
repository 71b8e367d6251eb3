"""Similarity search and duplicate grouping: Winnow's blockwise exact search (curation.knn) against scikit-learn's
NearestNeighbors(algorithm="brute") on the same data, in the same run: time and recall.

- kNN: N x 64 float32 (clustered, as embeddings are), memory-mapped from a .npy as the worker reads it; Q queries of
  k=10 each. Winnow answers one query per search (what "more like this" does); scikit-learn gets the Q queries in
  one call (its best case) and one at a time.
- Near-duplicates of real photos: augmented copies among crops, built-in vs pretrained embedder, at the suggested
  threshold (precision, recall) and 5-NN accuracy of "which photo is this crop from".
- Duplicates: M x 64 with planted near-duplicate groups (copies of 1% of the rows, with small noise); Winnow's
  suggested threshold, all pairs within it in blocks, connected groups; scikit-learn's radius_neighbors_graph at
  the same threshold plus scipy's connected_components. All-pairs work is O(M^2 d): at 1M that is 100x the 100k run.

    .venv/bin/python benchmarks/bench_similarity.py [--n 1000000] [--dup-n 100000] [--quick]
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import sklearn
from PIL import Image, ImageEnhance

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_section  # noqa: E402
from sklearn.neighbors import NearestNeighbors  # noqa: E402

from curation import knn  # noqa: E402
from winnow.client import embedder, pretrained  # noqa: E402

D = 64
K = 10


def blobs(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(256, D)).astype(np.float32)
    out = np.empty((n, D), dtype=np.float32)
    for start in range(0, n, 1 << 18):
        m = min(n, start + (1 << 18)) - start
        out[start : start + m] = centers[rng.integers(0, 256, m)] + rng.normal(size=(m, D)).astype(np.float32)
    return out


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start


def timed_cpu(fn):
    """(value, wall seconds, CPU seconds of this process, all threads): on a shared machine the CPU time is the
    steadier measure of the work done."""
    start, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - start, time.process_time() - cpu


def bench_knn(n: int, queries: int, folder: Path) -> list[str]:
    path = folder / f"knn-{n}.npy"
    if not path.exists():
        np.save(path, blobs(n, 0))
    X = np.load(path, mmap_mode="r")
    covered = np.ones(n, dtype=bool)
    rng = np.random.default_rng(1)
    Q = (np.asarray(X[rng.choice(n, queries, replace=False)]) + rng.normal(scale=0.1, size=(queries, D))).astype(
        np.float32
    )
    ours, t_ours = timed(lambda: [knn.nearest_to_queries(X, covered, q[None], K)[0] for q in Q])
    Xm = np.asarray(X)  # scikit-learn takes the matrix in memory
    nn, t_fit = timed(lambda: NearestNeighbors(n_neighbors=K, algorithm="brute").fit(Xm))
    (_d, ref), t_batch = timed(lambda: nn.kneighbors(Q, K))
    _single, t_single = timed(lambda: [nn.kneighbors(q[None], K) for q in Q])
    recall = np.mean([len(set(a.tolist()) & set(b.tolist())) / K for a, b in zip(ours, ref)])
    per = lambda t: f"{1000 * t / queries:.1f} ms"  # noqa: E731
    return [
        f"| kNN, {n:,} x {D}, k={K}, {queries} queries | Winnow, one search per query (memory-mapped, blocks of "
        f"{knn.BLOCK_ROWS:,}) | {per(t_ours)} per query | {recall:.3f} |",
        f"| | scikit-learn brute, all {queries} queries in one call (+ fit {t_fit:.1f} s) | {per(t_batch)} per query "
        f"| 1 (reference) |",
        f"| | scikit-learn brute, one call per query | {per(t_single)} per query | 1 (reference) |",
    ]


def planted(m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """m rows: 1% of them get 1-3 near copies, each with its own noise (0.005 to 0.4 of the data's scale per
    coordinate, so copy-to-source distances run from about 0.04 to 3.2: some inside the threshold, some across it);
    returns X and each row's source."""
    rng = np.random.default_rng(seed)
    n_src = m // 100
    copies = rng.integers(1, 4, n_src)
    base = m - int(copies.sum())
    X = blobs(base, seed)
    sources = rng.choice(base, n_src, replace=False)
    rows = [X]
    origin = [np.arange(base)]
    for src, c in zip(sources, copies):
        scale = rng.uniform(0.005, 0.4, size=(c, 1))
        rows.append(X[src] + (scale * rng.normal(size=(c, D))).astype(np.float32))
        origin.append(np.full(c, src))
    return np.concatenate(rows), np.concatenate(origin)


def _pair_codes(i: np.ndarray, j: np.ndarray, m: int) -> np.ndarray:
    return np.minimum(i, j).astype(np.int64) * m + np.maximum(i, j)


def bench_duplicates(m: int, sample: int = 2000, exact_n: int = 30_000) -> list[str]:
    X, origin = planted(m, 2)
    covered = np.ones(m, dtype=bool)
    stats: dict = {}

    def ours():
        nn = knn.nearest_neighbour_distances(X, covered)
        t = knn.suggest_threshold(nn)
        i, j, _d = knn.threshold_pairs(X, covered, t, stats=stats)
        return t, i, j, knn.groups_from_pairs(m, i, j)

    (threshold, i, j, groups), t_ours, c_ours = timed_cpu(ours)
    found = np.sort(_pair_codes(i, j, m))

    # Exact pairs of a sample: half random rows, half planted copies (where pairs near the threshold are), each
    # against all m rows by scikit-learn's brute radius search; its time for the sample, scaled to m queries
    # (brute force costs the same per query), stands for the whole radius_neighbors_graph.
    rng = np.random.default_rng(5)
    copies = np.flatnonzero(origin != np.arange(m))
    rows = np.unique(
        np.concatenate([rng.choice(m, sample // 2, replace=False), rng.choice(copies, sample // 2, replace=False)])
    )
    nn_ref = NearestNeighbors(radius=threshold, algorithm="brute").fit(X)
    (dist_ref, near_ref), t_ref, c_ref = timed_cpu(lambda: nn_ref.radius_neighbors(X[rows]))
    ref_i = np.concatenate([np.full(len(v), r) for r, v in zip(rows, near_ref)])
    ref_j = np.concatenate(near_ref)
    ref_d = np.concatenate(dist_ref)
    keep = (ref_j != ref_i) & (ref_d <= threshold * (1 - 1e-5))  # pairs a float rounding away are not scored
    ref_codes = np.unique(_pair_codes(ref_i[keep], ref_j[keep], m))
    recall_sample = np.isin(ref_codes, found).mean() if ref_codes.size else 1.0
    # Planted pairs (a copy and its source, two copies of a source) that lie within the threshold.
    by_src = np.argsort(origin, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(origin[by_src]) != 0, True])
    pa, pb = [], []
    for s, e in zip(starts[:-1], starts[1:]):
        members = by_src[s:e]
        for x in range(len(members)):
            for y in range(x + 1, len(members)):
                pa.append(members[x])
                pb.append(members[y])
    pa, pb = np.array(pa), np.array(pb)
    within = np.linalg.norm(X[pa] - X[pb], axis=1) <= threshold * (1 - 1e-5)
    recall_planted = np.isin(_pair_codes(pa[within], pb[within], m), found).mean()

    # The old way, every pair, timed on the first exact_n rows and scaled by (m / exact_n)^2.
    part = np.zeros(m, dtype=bool)
    part[:exact_n] = True
    _pairs, t_exact, c_exact = timed_cpu(lambda: knn.threshold_pairs(X, part, threshold, exact_max_rows=m))
    in_groups = int(sum(len(g) for g in groups))
    return [
        f"| duplicates, {m:,} x {D}, {int((np.diff(starts) > 1).sum()):,} planted groups "
        f"| Winnow: suggested threshold {threshold:.3f}, {stats['cells']:,} k-means cells, each row compared with its "
        f"cell and the cells the triangle inequality leaves open (capped at {knn.MAX_PROBES}: {stats['capped_rows']:,} "
        f"rows capped), groups | {t_ours:.0f} s (CPU {c_ours:.0f} s) | {len(groups):,} groups ({in_groups:,} rows); "
        f"{stats['compared'] / (m * (m - 1) / 2):.2e} of all pairs compared; recall {recall_sample:.4f} of the "
        f"{ref_codes.size:,} exact pairs of {len(rows):,} sampled rows, {recall_planted:.4f} of the "
        f"{int(within.sum()):,} planted pairs within the threshold |",
        f"| | scikit-learn brute radius_neighbors, {len(rows):,} rows against all {m:,} (the exact reference above): "
        f"{t_ref:.1f} s (CPU {c_ref:.1f} s); scaled to all {m:,} rows | {t_ref * m / len(rows):.0f} s "
        f"(CPU {c_ref * m / len(rows):.0f} s), extrapolated | 1 (reference) |",
        f"| | Winnow before: every pair in blocks, {exact_n:,} rows {t_exact:.1f} s (CPU {c_exact:.1f} s); scaled by "
        f"(n / {exact_n:,})^2 | {t_exact * (m / exact_n) ** 2:.0f} s (CPU {c_exact * (m / exact_n) ** 2:.0f} s), "
        "extrapolated | exact |",
    ]


def fashion_mnist(n: int, seed: int = 0) -> tuple[list[Image.Image], np.ndarray]:
    """A seeded sample of Fashion-MNIST's 10,000 test images (Debian's dataset-fashion-mnist) and their labels."""
    folder = Path("/usr/share/datasets/fashion-mnist")
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz") as f:
        pixels = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8).astype(np.int64)
    chosen = np.sort(np.random.default_rng(seed).choice(len(labels), size=min(n, len(labels)), replace=False))
    return [Image.fromarray(pixels[c]).convert("RGB") for c in chosen], labels[chosen]


def bench_fashion(n: int) -> list[str]:
    if not Path("/usr/share/datasets/fashion-mnist").exists():
        return ["Fashion-MNIST: not installed (apt-get install dataset-fashion-mnist)."]
    images, labels = fashion_mnist(n)
    rows = []
    for model in (pretrained.BUILTIN, pretrained.NAME):
        if model == pretrained.NAME and not pretrained.available():
            rows.append(f"| {model} | not installed (pip install 'winnow[model]') | |")
            continue
        X, t_embed = timed(lambda model=model: embed(images, model))
        rows.append(f"| {model} | {knn_accuracy(X, labels):.3f} | {n / t_embed:.0f} |")
    return [
        f"Fashion-MNIST, {n:,} images drawn (seed 0) from its 10,000 test images (Debian's dataset-fashion-mnist), "
        "28 x 28 grey scaled up as any image: 5-NN accuracy of the class (leave-one-out among the sample); "
        "images/s includes the built-in's fit.",
        "",
        "| embedder | 5-NN accuracy | images/s embedded |",
        "|---|---|---|",
        *rows,
    ]


PHOTOS = [
    "astronaut", "brick", "camera", "cell", "chelsea", "clock_motion", "coffee", "coins", "grass", "gravel",
    "hubble_deep_field", "ihc", "moon", "motorcycle_left", "page", "retina", "rocket", "text",
]  # fmt: skip


def photos(folder: Path) -> list[Image.Image]:
    """The photos bundled in scikit-image's wheel (read out of the wheel, not installed) and scikit-learn's two."""
    wheels = sorted((folder / "wheels").glob("scikit_image-*.whl"))
    if not wheels:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "scikit-image==0.26.0",
                "-d",
                folder / "wheels",
            ],
            check=True,
        )
        wheels = sorted((folder / "wheels").glob("scikit_image-*.whl"))
    out = []
    with zipfile.ZipFile(wheels[-1]) as wheel:
        names = set(wheel.namelist())
        for stem in PHOTOS:
            name = next(n for n in (f"skimage/data/{stem}.png", f"skimage/data/{stem}.jpg") if n in names)
            out.append(Image.open(io.BytesIO(wheel.read(name))).convert("RGB"))
    for path in sorted((Path(sklearn.__file__).parent / "datasets" / "images").glob("*.jpg")):
        out.append(Image.open(path).convert("RGB"))
    return out


AUGMENTATIONS = ("crop", "flip", "jpeg", "jitter")


def augment(image: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    """A near-duplicate by one change: a slight crop (up to 8% off each side), a horizontal flip, a JPEG re-encode
    (quality 30-70), or brightness and colour jitter (+-15%)."""
    w, h = image.size
    if kind == "crop":
        cut = [rng.uniform(0, 0.08) for _ in range(4)]
        image = image.crop((int(w * cut[0]), int(h * cut[1]), w - int(w * cut[2]), h - int(h * cut[3])))
    elif kind == "flip":
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    elif kind == "jitter":
        image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.85, 1.15))
        image = ImageEnhance.Color(image).enhance(rng.uniform(0.85, 1.15))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(rng.integers(30, 70)) if kind == "jpeg" else 95)
    return Image.open(buffer).convert("RGB")


def photo_set(folder: Path, grid: int = 3, seed: int = 3):
    """Each photo cut into grid x grid tiles that do not overlap (distinct samples; neighbours are hard negatives),
    half of them with a copy changed one way (AUGMENTATIONS). Returns images, the photo each came from, the tile each
    is (a copy shares its tile's id), and the change of each copy in order."""
    rng = np.random.default_rng(seed)
    images, photo, base, kinds = [], [], [], []
    for p, image in enumerate(photos(folder)):
        w, h = image.size
        for r in range(grid):
            for c in range(grid):
                tile = image.crop((c * w // grid, r * h // grid, (c + 1) * w // grid, (r + 1) * h // grid))
                tile.thumbnail((256, 256))  # what the server embeds: the thumbnail
                images.append(tile)
                photo.append(p)
                base.append(len(base))
                if rng.random() < 0.5:
                    kind = AUGMENTATIONS[int(rng.integers(len(AUGMENTATIONS)))]
                    images.append(augment(tile, kind, rng))
                    photo.append(p)
                    base.append(base[-1])
                    kinds.append(kind)
    return images, np.array(photo), np.array(base), kinds


def embed(images: list[Image.Image], model: str) -> np.ndarray:
    if model == pretrained.NAME:
        m = pretrained.PretrainedEmbedder()
    else:
        m = embedder.PatchEmbedder(seed=0)
    arrays = np.stack([embedder.to_array(im, m.image_size) for im in images])
    return m.fit_transform(arrays)


def knn_accuracy(X: np.ndarray, labels: np.ndarray, k: int = 5) -> float:
    X = np.asarray(X, dtype=np.float64)
    sq = (X * X).sum(axis=1)
    d = sq[:, None] + sq[None, :] - 2.0 * (X @ X.T)
    np.fill_diagonal(d, np.inf)
    near = np.argsort(d, axis=1)[:, :k]
    votes = labels[near]
    guess = np.array([np.bincount(v).argmax() for v in votes])
    return float((guess == labels).mean())


def bench_photos(folder: Path) -> list[str]:
    images, photo, base, kinds = photo_set(folder)
    n = len(images)
    truth = {(a, b) for a in range(n) for b in range(a + 1, n) if base[a] == base[b]}
    kind_of = dict(zip(sorted(truth, key=lambda pair: pair[1]), kinds))
    firsts = np.unique(base, return_index=True)[1]  # the base crops: one per crop, no copies
    rows = []
    for model in (pretrained.BUILTIN, pretrained.NAME):
        if model == pretrained.NAME and not pretrained.available():
            rows.append(f"| {model} | not installed (pip install 'winnow[model]') | | | | |")
            continue
        X, t_embed = timed(lambda model=model: embed(images, model))
        covered = np.ones(n, dtype=bool)
        threshold = knn.suggest_threshold(knn.nearest_neighbour_distances(X, covered))
        i, j, _d = knn.threshold_pairs(X, covered, threshold)
        found = {(int(a), int(b)) for g in knn.groups_from_pairs(n, i, j) for a in g for b in g if a < b}
        precision = len(found & truth) / max(len(found), 1)
        recall = len(found & truth) / max(len(truth), 1)
        by_kind = {
            k: sum(1 for pair, kk in kind_of.items() if kk == k and pair in found)
            / max(1, sum(1 for kk in kind_of.values() if kk == k))
            for k in AUGMENTATIONS
        }
        accuracy = knn_accuracy(X[firsts], photo[firsts])
        per_kind = ", ".join(f"{k} {v:.2f}" for k, v in by_kind.items())
        rows.append(
            f"| {model} | {threshold:.3f} | {precision:.3f} | {recall:.3f} ({per_kind}) | {accuracy:.3f} | "
            f"{n / t_embed:.0f} |"
        )
    header = [
        f"Near-duplicates among {n} images: {len(firsts)} tiles (3 x 3, not overlapping) of {int(photo.max()) + 1} "
        f"real photos bundled in PyPI wheels (scikit-image's data, scikit-learn's two), {len(truth)} of them with a "
        "copy changed one way: a slight crop, a flip, a JPEG re-encode or colour jitter. Pairs "
        "within the suggested threshold, grouped; precision and recall over pairs (tiles of the same photo are not "
        "duplicates). 5-NN accuracy: which photo a tile comes from.",
        "",
        "| embedder | suggested threshold | pair precision | pair recall (by change) | 5-NN photo accuracy | images/s embedded |",
        "|---|---|---|---|---|---|",
    ]
    return header + rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dup-n", type=int, default=1_000_000)
    parser.add_argument("--fashion-n", type=int, default=5_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="100k rows, 1,000 Fashion-MNIST images")
    args = parser.parse_args()
    if args.quick:
        args.n, args.dup_n, args.fashion_n = 100_000, 100_000, 1_000
    folder = ROOT / "var" / "bench"
    folder.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    photo_rows = bench_photos(folder)
    print("\n".join(photo_rows), flush=True)
    fashion_rows = bench_fashion(args.fashion_n)
    print("\n".join(fashion_rows), flush=True)
    rows = bench_knn(args.n, args.queries, folder)
    print("\n".join(rows), flush=True)
    dup = bench_duplicates(args.dup_n)
    print("\n".join(dup), flush=True)
    load = max(load[0], os.getloadavg()[0])
    body = "\n".join(
        [
            "## Similarity search and duplicates (`benchmarks/bench_similarity.py`)",
            "",
            f"The machine was shared with other jobs while this ran (load average up to {load:.1f} on 2 cores), so "
            "times are loose; the ratios within a row's group are from the same run.",
            "",
            "kNN is exact, so its recall is the share of scikit-learn's k nearest that Winnow also returns (ties "
            "aside). Duplicate grouping above 20,000 rows is by cells, so its recall is measured: against the exact "
            "pairs (scikit-learn brute) of a sample of rows, and against the planted pairs within the threshold. "
            "These rows are clustered, as embeddings are; rows with no cluster structure (one round cloud) defeat the "
            "triangle bound: every row gets capped, so the grouping compares every pair instead while the cells would "
            "not save 8 times its work (`CELL_PAIR_COST`), and past that the capped cells are approximate, counted in "
            "the run's summary as `capped_rows` (not measured here).",
            "",
            "| task | method | time | recall / result |",
            "|---|---|---|---|",
            *rows,
            *dup,
            "",
            *photo_rows,
            "",
            *fashion_rows,
        ]
    )
    write_section("similarity", body)


if __name__ == "__main__":
    main()
