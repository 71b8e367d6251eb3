"""Typicality as in TypiClust (Hacohen, Dekel & Weinshall 2022), not plain global density.

1. Cluster the candidates together with the preselected samples into
   min(n_preselected + n_samples, MAX_CLUSTERS, n) clusters. Up to FULL_KMEANS_MAX rows: KMeans
   on every row. Past it: KMeans (plain k-means++ seeding) on a seeded uniform sample of
   max(FIT_ROWS, FIT_PER_CLUSTER x clusters) rows, then every row goes to its nearest center, in
   blocks (`assign`); at 1M rows that is seconds instead of minutes, with the same classes
   covered and accuracy on the long-tail benchmark (benchmarks/bench_quality.py --typicality-only).
2. Typicality of a sample = 1 / mean distance to its K_NN = min(20, size // 2) nearest
   neighbours within its own cluster (against a seeded reference subsample of REF_MAX members
   in a very large cluster), computed one cluster at a time, in blocks.
3. Pick order: repeatedly take the cluster with the fewest samples selected so far (preselected
   count), then the largest, skipping clusters smaller than MIN_CLUSTER_SIZE while others are
   left, and pick its most typical remaining sample. So on a long-tailed set the budget spreads
   over the modes instead of piling onto the densest class.

X may be a read-only memory map: only the fit sample, one block and one cluster are copied at a time.
"""

from __future__ import annotations

import numpy as np

from .base import NO_MONITOR, Monitor, drop_pages

MAX_CLUSTERS = 1000
FULL_KMEANS_MAX = 50_000
FIT_ROWS = 30_000
FIT_PER_CLUSTER = 30
K_NN = 20
REF_MAX = 20_000
MIN_CLUSTER_SIZE = 5
_CHUNK_ELEMS = 1 << 24


def kmeans(Z: np.ndarray, n_clusters: int, seed: int, *, greedy_init: bool = True):
    """A fitted scikit-learn KMeans (one k-means++ init, Lloyd) on the float32 rows Z.

    greedy_init=False seeds with plain k-means++ (one candidate per center instead of 2 + ln k):
    for a thousand clusters that is most of the fitting time saved, and Lloyd's iterations that
    follow make up the difference.
    """
    from sklearn.cluster import KMeans, kmeans_plusplus

    init = "k-means++"
    if not greedy_init:
        init, _ = kmeans_plusplus(Z, n_clusters, random_state=seed, n_local_trials=1)
    return KMeans(n_clusters=n_clusters, init=init, n_init=1, random_state=seed, max_iter=100).fit(Z)


def cluster(Z: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
    """Cluster label per row of Z (float32): KMeans on every row."""
    n_clusters = max(1, min(n_clusters, len(Z)))
    if n_clusters == 1:
        return np.zeros(len(Z), dtype=np.int64)
    return kmeans(Z, n_clusters, seed).labels_.astype(np.int64)


def fit_rows(n: int, n_clusters: int) -> int:
    """How many rows the clustering is fitted on: every row up to FULL_KMEANS_MAX, else a sample."""
    if n <= FULL_KMEANS_MAX:
        return n
    return min(n, max(FIT_ROWS, FIT_PER_CLUSTER * n_clusters))


def assign(
    X: np.ndarray, rows: np.ndarray, shift: np.ndarray, centers: np.ndarray, monitor: Monitor = NO_MONITOR
) -> np.ndarray:
    """Nearest center (squared euclidean) of each row X[rows] - shift, in blocks; ties to the lower center."""
    C = np.ascontiguousarray(centers, dtype=np.float32)
    c_sq = np.einsum("ij,ij->i", C, C)
    Cm2 = -2.0 * C.T
    labels = np.empty(len(rows), dtype=np.int64)
    step = max(1, _CHUNK_ELEMS // max(len(C), 1))
    for s in range(0, len(rows), step):
        B = X[rows[s : s + step]].astype(np.float32, copy=False) - shift
        D = B @ Cm2
        D += c_sq  # ||b||^2 is the same for every center: argmin without it
        labels[s : s + step] = D.argmin(axis=1)
        drop_pages(X)
        monitor.tick(min(1.0, (s + step) / max(len(rows), 1)))
    return labels


def cluster_rows(
    X: np.ndarray, rows: np.ndarray, shift: np.ndarray, n_clusters: int, seed: int, monitor: Monitor = NO_MONITOR
) -> np.ndarray:
    """Cluster label of each row X[rows] - shift; KMeans on every row, or on a sample then `assign`."""
    n = len(rows)
    n_clusters = max(1, min(n_clusters, n))
    if n_clusters == 1:
        return np.zeros(n, dtype=np.int64)
    fit = fit_rows(n, n_clusters)
    if fit >= n:
        Z = X[rows].astype(np.float32, copy=False) - shift
        drop_pages(X)
        return cluster(Z, n_clusters, seed)
    sample = np.sort(np.random.default_rng(seed).choice(n, fit, replace=False))
    Z = X[rows[sample]].astype(np.float32, copy=False) - shift
    drop_pages(X)
    centers = kmeans(Z, n_clusters, seed, greedy_init=False).cluster_centers_
    del Z
    monitor.tick(0.3)
    return assign(X, rows, shift, centers)


def _mean(X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    total = np.zeros(X.shape[1])
    step = max(1, _CHUNK_ELEMS // max(X.shape[1], 1))
    for s in range(0, len(rows), step):
        total += X[rows[s : s + step]].sum(axis=0, dtype=np.float64)
        drop_pages(X)
    return (total / max(len(rows), 1)).astype(np.float32)


def knn_typicality(Z: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """1 / mean distance to the k nearest other members, for every row of one cluster."""
    m = len(Z)
    if m < 2 or k < 1:
        return np.zeros(m)
    ref_idx = np.arange(m) if m <= REF_MAX else np.sort(rng.choice(m, REF_MAX, replace=False))
    R = Z[ref_idx]
    r_sq = np.einsum("ij,ij->i", R, R)
    in_ref = np.zeros(m, dtype=bool)
    in_ref[ref_idx] = True
    k = min(k, len(R) - 1)
    out = np.empty(m)
    rows = max(1, _CHUNK_ELEMS // len(R))
    for s in range(0, m, rows):
        B = Z[s : s + rows]
        d2 = np.einsum("ij,ij->i", B, B)[:, None] + r_sq[None, :] - 2.0 * (B @ R.T)
        np.maximum(d2, 0.0, out=d2)
        near = np.sqrt(np.partition(d2, k, axis=1)[:, : k + 1], dtype=np.float64)
        near.sort(axis=1)
        # A row in the reference set finds itself at distance ~0: drop that one, else the farthest.
        mean = np.where(in_ref[s : s + rows], near[:, 1:].mean(axis=1), near[:, :k].mean(axis=1))
        out[s : s + rows] = 1.0 / (mean + 1e-12)
    return out


class Typicality:
    """Clusters, per-sample typicality and the TypiClust pick order over candidate positions."""

    def __init__(
        self,
        X: np.ndarray,
        rows: np.ndarray,
        preselected_rows: np.ndarray,
        n_samples: int,
        seed: int = 0,
        monitor: Monitor = NO_MONITOR,
    ):
        m = len(rows)
        all_rows = np.concatenate([rows, preselected_rows]).astype(np.int64)
        shift = _mean(X, all_rows)  # centered rows keep the float32 distance expansions accurate
        n_clusters = min(len(preselected_rows) + n_samples, MAX_CLUSTERS, len(all_rows))
        labels = cluster_rows(X, all_rows, shift, n_clusters, seed, monitor)
        monitor.tick(0.5)
        self.labels = labels[:m]
        n_lab = int(labels.max()) + 1
        self.size = np.bincount(labels, minlength=n_lab)
        self.covered = np.bincount(labels[m:], minlength=n_lab)
        rng = np.random.default_rng(seed)
        self.typicality = np.zeros(m)
        order = np.argsort(self.labels, kind="stable")
        bounds = np.searchsorted(self.labels[order], np.arange(n_lab + 1))
        self.members = []  # candidate positions per cluster, most typical first (ties by position)
        for c in range(n_lab):
            pos = order[bounds[c] : bounds[c + 1]]
            size = int(self.size[c])
            Z = X[rows[pos]].astype(np.float32, copy=False) - shift  # one cluster at a time
            self.typicality[pos] = knn_typicality(Z, min(K_NN, size // 2), rng)
            self.members.append(pos[np.lexsort((pos, -self.typicality[pos]))])
            if c % 64 == 63:
                drop_pages(X)
            monitor.tick(0.5 + 0.5 * (c + 1) / n_lab)
        drop_pages(X)

    def cluster_order_key(self, c: int) -> tuple:
        small = self.size[c] < MIN_CLUSTER_SIZE
        return (small, int(self.covered[c]), -int(self.size[c]), c)

    def pick_order(self, n_picks: int, allowed: np.ndarray | None = None) -> np.ndarray:
        """The TypiClust picks (candidate positions); `allowed` masks candidate positions."""
        import heapq

        heads = []
        cursors = [0] * len(self.members)
        for c, pos in enumerate(self.members):
            if len(pos):
                heapq.heappush(heads, (self.cluster_order_key(c), c))
        out = []
        while heads and len(out) < n_picks:
            _, c = heapq.heappop(heads)
            pos = self.members[c]
            i = cursors[c]
            while allowed is not None and i < len(pos) and not allowed[pos[i]]:
                i += 1
            if i >= len(pos):
                continue
            out.append(int(pos[i]))
            cursors[c] = i + 1
            self.covered[c] += 1
            if cursors[c] < len(pos):
                heapq.heappush(heads, (self.cluster_order_key(c), c))
        return np.asarray(out, dtype=np.int64)
