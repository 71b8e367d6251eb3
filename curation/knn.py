"""Exact nearest neighbours over an embedding matrix, in blocks: pure numpy (and scipy), no Django.

The matrix is the stored (n, d) float32 matrix by idx, usually memory-mapped; `covered` marks the rows that
hold a vector. Every function reads it a block of rows at a time, so memory is O(block x d + k), whatever n.

Distances are euclidean, or cosine distance (1 - cosine similarity). Ties are broken by idx, so the order is
fully determined and a brute-force reference gives the same list.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

METRICS = ("euclidean", "cosine")
BLOCK_ROWS = 65536  # 65536 x 64 float32 = 16 MiB read per block
_QUERY_BLOCK = 256  # query vectors per product: a (BLOCK_ROWS x 256) float32 product is 64 MiB

Progress = Callable[[float], None] | None


def _prepare(Q: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Queries ready for the block products, and the shift subtracted from every row (euclidean: the queries'
    mean, so |b|^2 - 2 b.q + |q|^2 loses less to cancellation)."""
    Q = np.atleast_2d(np.asarray(Q, dtype=np.float32))
    if metric == "cosine":
        return Q / np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-30), np.zeros(Q.shape[1], np.float32)
    shift = Q.mean(axis=0)
    return Q - shift, shift


def _block_squared(
    B: np.ndarray, Q: np.ndarray, shift: np.ndarray, metric: str, buffer: np.ndarray | None = None
) -> np.ndarray:
    """(len(B), len(Q)) squared euclidean distances, or cosine distances; B is a block of rows (not modified).

    Written in place into the one product matrix: the temporaries of a plain expression would each be as large.
    `buffer` (float32, at least B's shape) takes the shifted or normalised copy of B, so a loop over blocks does
    not allocate (and fault in) a fresh block each time.
    """
    work = buffer[: len(B)] if buffer is not None and len(buffer) >= len(B) else np.empty(B.shape, np.float32)
    if metric == "cosine":
        np.divide(B, np.maximum(np.linalg.norm(B, axis=1, keepdims=True), 1e-30), out=work)
        G = work @ Q.T
        np.subtract(1.0, G, out=G)
        return np.maximum(G, 0.0, out=G)
    B = np.subtract(B, shift, out=work)
    G = B @ Q.T
    G *= -2.0
    G += np.einsum("ij,ij->i", B, B)[:, None]
    G += np.einsum("ij,ij->i", Q, Q)[None, :]
    return np.maximum(G, 0.0, out=G)


def _finish(values: np.ndarray, metric: str) -> np.ndarray:
    """Distances from what _block_squared returned (euclidean: the square root)."""
    return np.sqrt(values) if metric == "euclidean" else values


def _rows(X: np.ndarray, covered: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """The covered rows of X[start:stop] as float32, and their offsets; no copy when all are covered."""
    rows = np.flatnonzero(covered[start:stop])
    block = X[start:stop]
    if rows.size == stop - start:
        return np.asarray(block, dtype=np.float32), rows
    return np.asarray(block, dtype=np.float32)[rows], rows


def nearest_to_queries(
    X: np.ndarray,
    covered: np.ndarray,
    queries: np.ndarray,
    k: int,
    metric: str = "euclidean",
    *,
    block_rows: int = BLOCK_ROWS,
    progress: Progress = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The k rows of X (among `covered`, a bool mask over rows) closest to any of `queries` (m, d).

    A row's distance is its distance to the nearest query (one query: plain kNN; a tag's members: "like any of
    these"). Returns (idx, distance), ascending by distance, then idx.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}")
    Q, shift = _prepare(queries, metric)
    n = min(len(X), len(covered))
    best_idx = np.empty(0, dtype=np.int64)
    best_dist = np.empty(0, dtype=np.float32)
    buffer = np.empty((min(n, block_rows), X.shape[1]), dtype=np.float32)
    for start in range(0, n, block_rows):
        stop = min(n, start + block_rows)
        B, rows = _rows(X, covered, start, stop)
        if rows.size == 0:
            continue
        dist = np.full(len(B), np.inf, dtype=np.float32)
        for q in range(0, len(Q), _QUERY_BLOCK):
            np.minimum(dist, _block_squared(B, Q[q : q + _QUERY_BLOCK], shift, metric, buffer).min(axis=1), out=dist)
        dist = _finish(dist, metric)
        idx = rows.astype(np.int64) + start
        if len(dist) > k:  # keep the block's k best (ties at the cut are settled below, by idx)
            cut = np.partition(dist, k - 1)[k - 1]
            keep = dist <= cut
            idx, dist = idx[keep], dist[keep]
        best_idx, best_dist = _top(np.concatenate([best_idx, idx]), np.concatenate([best_dist, dist]), k)
        if progress is not None:
            progress(stop / n)
    return best_idx, best_dist


def _top(idx: np.ndarray, dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((idx, dist))[:k]
    return idx[order], dist[order]


def threshold_pairs(
    X: np.ndarray,
    covered: np.ndarray,
    threshold: float,
    metric: str = "euclidean",
    *,
    block_rows: int = 4096,
    max_pairs: int = 50_000_000,
    progress: Progress = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of covered rows (i < j) within `threshold` of each other: (i, j, distance).

    Exact: each block of rows against every later block (the upper triangle), so O(n^2 d) arithmetic in
    O(block_rows^2) memory. Stops with a ValueError past `max_pairs` (a threshold that joins everything).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}")
    n = min(len(X), len(covered))
    where = np.flatnonzero(covered[:n]).astype(np.int64)
    starts = list(range(0, len(where), block_rows))
    total = len(starts) * (len(starts) + 1) / 2 or 1
    limit = threshold * threshold if metric == "euclidean" else threshold
    done = 0
    found_i, found_j, found_d = [], [], []
    count = 0
    for a, sa in enumerate(starts):
        ia = where[sa : sa + block_rows]
        A = np.asarray(X[ia], dtype=np.float32)
        Qa, shift = _prepare(A, metric)
        for sb in starts[a:]:
            ib = where[sb : sb + block_rows]
            B = A if sb == sa else np.asarray(X[ib], dtype=np.float32)
            dist = _block_squared(B, Qa, shift, metric)  # (len(ib), len(ia))
            jj, ii = np.nonzero(dist <= limit)
            if sb == sa:  # the diagonal block: each pair once (j > i), no self pairs
                keep = jj > ii
                jj, ii = jj[keep], ii[keep]
            if ii.size:
                found_i.append(ia[ii])
                found_j.append(ib[jj])
                found_d.append(_finish(dist[jj, ii], metric).astype(np.float32))
                count += ii.size
                if count > max_pairs:
                    raise ValueError(
                        f"more than {max_pairs} pairs lie within {threshold:g}: the threshold is far too high"
                    )
            done += 1
            if progress is not None:
                progress(done / total)
    if not found_i:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty.copy(), np.empty(0, dtype=np.float32)
    return np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d)


def groups_from_pairs(n: int, i: np.ndarray, j: np.ndarray) -> list[np.ndarray]:
    """Connected groups (of at least two) of the graph with edges (i, j) over 0..n-1: each group's idx ascending,
    groups by size descending, then by their first idx."""
    if len(i) == 0:
        return []
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    _count, labels = connected_components(graph, directed=False)
    touched = np.unique(np.concatenate([i, j]))
    lab = labels[touched]
    order = np.lexsort((touched, lab))
    touched, lab = touched[order], lab[order]
    cuts = np.flatnonzero(np.diff(lab)) + 1
    groups = [g for g in np.split(touched, cuts) if len(g) > 1]
    groups.sort(key=lambda g: (-len(g), int(g[0])))
    return groups


def nearest_neighbour_distances(
    X: np.ndarray,
    covered: np.ndarray,
    sample_size: int = 2000,
    metric: str = "euclidean",
    *,
    seed: int = 0,
    block_rows: int = BLOCK_ROWS,
    progress: Progress = None,
) -> np.ndarray:
    """Distances from a seeded sample of covered rows to their nearest other covered row (exact, blockwise)."""
    n = min(len(X), len(covered))
    where = np.flatnonzero(covered[:n])
    if len(where) < 2:
        return np.empty(0, dtype=np.float32)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(where, size=min(sample_size, len(where)), replace=False))
    Q, shift = _prepare(np.asarray(X[chosen], dtype=np.float32), metric)
    best = np.full(len(chosen), np.inf, dtype=np.float32)
    for start in range(0, n, block_rows):
        stop = min(n, start + block_rows)
        B, rows = _rows(X, covered, start, stop)
        if rows.size == 0:
            continue
        dist = _block_squared(B, Q, shift, metric)  # (rows, chosen)
        here = np.flatnonzero((chosen >= start) & (chosen < stop))  # a sampled row is not its own neighbour
        if here.size:
            pos = np.searchsorted(rows, chosen[here] - start)
            dist[pos, here] = np.inf
        np.minimum(best, dist.min(axis=0), out=best)
        if progress is not None:
            progress(stop / n)
    return _finish(best, metric)


def suggest_threshold(nn_distances: np.ndarray) -> float:
    """A near-duplicate distance from the nearest-neighbour distances of a sample of the data.

    A near-duplicate (a re-encode, a small crop, the next frame of a burst) lies far closer to its twin than
    samples lie to their ordinary nearest neighbour. Half the median nearest-neighbour distance is where that
    gap sits; when most samples have a twin the median itself is a twin's distance, so the 90th percentile
    (almost always an ordinary neighbour) caps it at a quarter.
    """
    d = np.asarray(nn_distances, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return 0.0
    return float(min(0.5 * np.median(d), 0.25 * np.percentile(d, 90)))
