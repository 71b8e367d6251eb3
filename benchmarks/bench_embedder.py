"""Built-in embedder: k-nearest-neighbour accuracy on Fashion-MNIST against raw pixels, and speed.

Data: Debian's `dataset-fashion-mnist` (apt-get install -y dataset-fashion-mnist), read from
/usr/share/datasets/fashion-mnist/. The embedder is fitted without labels on the train split (as
it is fitted on a dataset's own images), then every test image is classified by the majority label
of its k nearest train images. Baselines: raw pixels, and raw-pixel PCA at the embedder's dimension.

    .venv/bin/python benchmarks/bench_embedder.py [--train 10000] [--test 2000] [--k 5]
        [--save-npy PATH]   # also embed all 70,000 images (train then test) for
                            # bench_quality.py --embeddings PATH

Writes its section of benchmarks/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import gzip
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA
from sklearn.neighbors import KNeighborsClassifier

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import write_section
from winnow.client.embedder import PatchEmbedder

DATA = Path("/usr/share/datasets/fashion-mnist")


def load_fashion_mnist(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Images as (n, 28, 28) uint8 and labels as (n,) uint8, from the idx files."""
    if not DATA.is_dir():
        sys.exit(f"{DATA} is missing: apt-get install -y dataset-fashion-mnist")
    with gzip.open(DATA / f"{kind}-labels-idx1-ubyte.gz", "rb") as handle:
        labels = np.frombuffer(handle.read(), dtype=np.uint8, offset=8)
    with gzip.open(DATA / f"{kind}-images-idx3-ubyte.gz", "rb") as handle:
        images = np.frombuffer(handle.read(), dtype=np.uint8, offset=16).reshape(len(labels), 28, 28)
    return images, labels


def knn_accuracy(train: np.ndarray, train_y: np.ndarray, test: np.ndarray, test_y: np.ndarray, k: int) -> float:
    knn = KNeighborsClassifier(n_neighbors=k, algorithm="brute", n_jobs=1).fit(train, train_y)
    return float((knn.predict(test) == test_y).mean())


def to_rgb(images: np.ndarray) -> np.ndarray:
    return np.repeat(images[..., None], 3, axis=3)


def thumbnail_decode_rate(images: np.ndarray) -> float:
    """Images per second for the worker's read step: a 256 px WebP thumbnail decoded and resized to 32 px."""
    import io

    from PIL import Image

    from winnow.client.embedder import to_array

    blobs = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).convert("RGB").resize((256, 256)).save(buffer, "WEBP", quality=80, method=2)
        blobs.append(buffer.getvalue())
    started = time.perf_counter()
    for blob in blobs:
        with Image.open(io.BytesIO(blob)) as img:
            to_array(img, 32)
    return len(blobs) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=10_000)
    parser.add_argument("--test", type=int, default=2_000)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--save-npy", type=Path, help="also embed all 70,000 images (train then test, file order) into this .npy"
    )
    parser.add_argument("--no-report", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    train_all, train_labels_all = load_fashion_mnist("train")
    test_all, test_labels_all = load_fashion_mnist("t10k")
    tr = np.sort(rng.choice(len(train_all), size=args.train, replace=False))
    te = np.sort(rng.choice(len(test_all), size=args.test, replace=False))
    train, train_y = train_all[tr], train_labels_all[tr]
    test, test_y = test_all[te], test_labels_all[te]

    embedder = PatchEmbedder(seed=args.seed)
    # Speed is for the whole path a dataset takes: resize to 32 px, fit, encode.
    started = time.perf_counter()
    train_vec = embedder.fit_transform(to_rgb(train))
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    test_vec = embedder.transform(to_rgb(test))
    encode_seconds = time.perf_counter() - started
    dim = train_vec.shape[1]

    raw_train = train.reshape(len(train), -1).astype(np.float32) / 255
    raw_test = test.reshape(len(test), -1).astype(np.float32) / 255
    pca = PCA(n_components=dim, random_state=args.seed).fit(raw_train)

    rows = [
        ("raw pixels (784)", knn_accuracy(raw_train, train_y, raw_test, test_y, args.k)),
        (
            f"raw-pixel PCA-{dim}",
            knn_accuracy(pca.transform(raw_train), train_y, pca.transform(raw_test), test_y, args.k),
        ),
        (f"built-in embedder ({dim})", knn_accuracy(train_vec, train_y, test_vec, test_y, args.k)),
    ]
    fit_rate = len(train) / fit_seconds
    encode_rate = len(test) / encode_seconds
    decode_rate = thumbnail_decode_rate(test)

    lines = [
        "## Built-in embedder (`bench_embedder.py`)",
        "",
        f"Fashion-MNIST, {len(train):,} train / {len(test):,} test images drawn at random (seed {args.seed}); "
        f"the embedder is fitted without labels on the train images; {args.k}-NN (Euclidean) accuracy "
        "on the test images.",
        "",
        "| vectors | k-NN accuracy |",
        "|---|---|",
        *(f"| {name} | {acc:.3f} |" for name, acc in rows),
        "",
        "| speed (one process) | images / second |",
        "|---|---|",
        f"| fit + encode the train images | {fit_rate:,.0f} |",
        f"| encode new images with the fitted model | {encode_rate:,.0f} |",
        f"| reference: decode a 256 px WebP thumbnail to 32 px (what the worker reads) | {decode_rate:,.0f} |",
        "",
        f"Encoding costs {decode_rate / encode_rate:.1f}x the thumbnail decode it follows.",
        "",
        "The embedder is k-means patch features (Coates & Ng 2011: 32 px RGB, 6x6 patches, ZCA, "
        f"{embedder.n_centroids} centroids, triangle activation, sum pooling over a "
        f"{embedder.grid}x{embedder.grid} grid) reduced by PCA to {dim} "
        "and L2-normalised; no labels and no downloaded weights.",
    ]
    body = "\n".join(lines)
    print(body)

    if args.save_npy:
        # Fitted without labels on (a sample of) the train images, as the platform fits on a dataset.
        full = PatchEmbedder(seed=args.seed).fit(to_rgb(train_all))
        vectors = np.concatenate([full.transform(to_rgb(train_all)), full.transform(to_rgb(test_all))])
        np.save(args.save_npy, vectors)
        print(f"saved {vectors.shape} embeddings (train then test) to {args.save_npy}")

    if not args.no_report:
        write_section("bench_embedder", body)


if __name__ == "__main__":
    main()
