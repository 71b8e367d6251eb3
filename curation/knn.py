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


EXACT_PAIRS_MAX_ROWS = 20_000  # up to this many rows, every pair is compared (a few seconds); above, by cells
MAX_PROBES = 24  # cells beyond its own that one row is compared with (the bound asks for more only in dense spots)
# The cells must save this factor of the every-pair work to be used. A pair through the cells costs about 1.6x one
# in the big every-pair blocks; the rest is margin for exactness: where they save little the rows have no clusters,
# most get capped, and comparing every pair is both exact and about as fast.
CELL_PAIR_COST = 8.0


def threshold_pairs(
    X: np.ndarray,
    covered: np.ndarray,
    threshold: float,
    metric: str = "euclidean",
    *,
    block_rows: int = 4096,
    max_pairs: int = 50_000_000,
    exact_max_rows: int | None = None,
    cells: int | None = None,
    max_probes: int = MAX_PROBES,
    seed: int = 0,
    progress: Progress = None,
    stats: dict | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of covered rows (i < j) within `threshold` of each other: (i, j, distance), sorted by (i, j).

    Up to `exact_max_rows` (None: EXACT_PAIRS_MAX_ROWS) covered rows: every block against every later block, O(n^2 d). Above that the rows are
    split into k-means cells (about sqrt(n)) and each cell is compared with its own rows and with the rows of other
    cells that may hold a pair: by the triangle inequality, x in cell a and |x - y| <= t imply
    d(y, c_a) <= d(y, c_own(y)) + 2t, so a row visits every cell within that bound, at most `max_probes` of them (the
    nearest): exact whenever no row needed more, which `stats["capped_rows"]` counts. When the cells would not save
    CELL_PAIR_COST times the work of every pair (rows with no cluster structure), every pair is compared after all.
    Stops with a ValueError past
    `max_pairs` (a threshold that joins everything).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}")
    n = min(len(X), len(covered))
    where = np.flatnonzero(covered[:n]).astype(np.int64)
    if len(where) <= (EXACT_PAIRS_MAX_ROWS if exact_max_rows is None else exact_max_rows):
        if stats is not None:
            stats.update(method="all pairs", cells=0, capped_rows=0, compared=len(where) * (len(where) - 1) // 2)
        return _all_pairs(X, where, threshold, metric, block_rows, max_pairs, progress)
    return _cell_pairs(X, where, threshold, metric, block_rows, max_pairs, cells, max_probes, seed, progress, stats)


def _too_many(max_pairs: int, threshold: float) -> ValueError:
    return ValueError(f"more than {max_pairs} pairs lie within {threshold:g}: the threshold is far too high")


def _sorted_pairs(found_i: list, found_j: list, found_d: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not found_i:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty.copy(), np.empty(0, dtype=np.float32)
    i, j, d = np.concatenate(found_i), np.concatenate(found_j), np.concatenate(found_d)
    order = np.lexsort((j, i))
    i, j, d = i[order], j[order], d[order]
    first = np.ones(len(i), dtype=bool)  # a pair the cells found twice (each row visiting the other's cell)
    first[1:] = (i[1:] != i[:-1]) | (j[1:] != j[:-1])
    return i[first], j[first], d[first]


def _all_pairs(X, where, threshold, metric, block_rows, max_pairs, progress):
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
                    raise _too_many(max_pairs, threshold)
            done += 1
            if progress is not None:
                progress(done / total)
    return _sorted_pairs(found_i, found_j, found_d)


def _rows_for_cells(X, rows: np.ndarray, normalise: bool) -> np.ndarray:
    """X[rows] as float32 (rows ascending reads the memory map in order); unit length for cosine."""
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows), X.shape[1]), dtype=np.float32)
    out[order] = np.asarray(X[rows[order]], dtype=np.float32)
    if normalise:
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-30)
    return out


def kmeans_centres(
    X, where: np.ndarray, cells: int, *, seed: int = 0, iterations: int = 8, normalise: bool = False
) -> np.ndarray:
    """Lloyd's k-means on a seeded sample of the rows (64 per cell): the cells' centres, empty cells dropped."""
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(where, size=min(len(where), 64 * cells), replace=False))
    S = _rows_for_cells(X, sample, normalise)
    C = S[rng.choice(len(S), size=min(cells, len(S)), replace=False)].copy()
    for _ in range(iterations):
        label = _nearest_centre(S, C)
        counts = np.bincount(label, minlength=len(C))
        sums = np.zeros(C.shape, dtype=np.float64)
        np.add.at(sums, label, S)
        C = (sums[counts > 0] / counts[counts > 0, None]).astype(np.float32)
    return C


def _nearest_centre(B: np.ndarray, C: np.ndarray, block: int = 8192) -> np.ndarray:
    shift = C.mean(axis=0)
    labels = np.empty(len(B), dtype=np.int64)
    for s in range(0, len(B), block):
        labels[s : s + block] = _block_squared(B[s : s + block], C - shift, shift, "euclidean").argmin(axis=1)
    return labels


def _cell_pairs(X, where, threshold, metric, block_rows, max_pairs, cells, max_probes, seed, progress, stats):
    normalise = metric == "cosine"
    # On unit vectors cosine distance c is |a - b|^2 / 2: one euclidean threshold serves both.
    t = float(np.sqrt(2.0 * threshold)) if normalise else float(threshold)
    n_rows = len(where)
    cells = cells or int(np.clip(np.sqrt(n_rows), 16, 8192))
    centres = kmeans_centres(X, where, cells, seed=seed, normalise=normalise)
    shift = centres.mean(axis=0)
    Cq = centres - shift
    Cm2, c_sq = -2.0 * Cq, np.einsum("ij,ij->i", Cq, Cq)
    P = min(max_probes, len(centres) - 1)
    own = np.empty(n_rows, dtype=np.int32)
    visit_row, visit_cell = [], []
    capped = 0
    step = 16384
    for s in range(0, n_rows, step):  # pass 1: each row's cell and the other cells it must visit
        B = _rows_for_cells(X, where[s : s + step], normalise) - shift
        G = B @ Cm2.T  # |b - c|^2 - |b|^2 = |c|^2 - 2 b.c: |b|^2 is added to the row's bound instead
        G += c_sq
        mine = G.argmin(axis=1)
        at = np.arange(len(G))
        b_sq = np.einsum("ij,ij->i", B, B)
        near = np.sqrt(np.maximum(G[at, mine] + b_sq, 0.0))
        reach = near + 2.0 * t + 1e-4 * near + 1e-6  # slack for float32 rounding: never drop a pair
        G[at, mine] = np.inf
        r, c = np.nonzero(np.less_equal(G, (reach * reach - b_sq)[:, None]))  # the other cells each row visits
        wanted = np.bincount(r, minlength=len(G))
        over = wanted > P
        capped += int(over.sum())
        if over.any():  # keep the P nearest cells of those rows
            rows_over = np.flatnonzero(over)
            top = np.argpartition(G[rows_over], max(P - 1, 0), axis=1)[:, :P]
            keep = ~over[r]
            r = np.concatenate([r[keep], np.repeat(rows_over, P)])
            c = np.concatenate([c[keep], top.ravel()])
        own[s : s + len(B)] = mine
        visit_row.append((r + s).astype(np.int64))
        visit_cell.append(c.astype(np.int32))
        if progress is not None:
            progress(0.25 * min(1.0, (s + step) / n_rows))
    visit_row = np.concatenate(visit_row)
    visit_cell = np.concatenate(visit_cell)
    by_own = np.argsort(own, kind="stable")
    own_starts = np.searchsorted(own[by_own], np.arange(len(centres) + 1))
    by_visit = np.argsort(visit_cell, kind="stable")
    visit_starts = np.searchsorted(visit_cell[by_visit], np.arange(len(centres) + 1))
    sizes = np.diff(own_starts).astype(np.float64)
    compared = int((sizes * (sizes - 1) / 2).sum() + (sizes * np.diff(visit_starts)).sum())
    every_pair = n_rows * (n_rows - 1) / 2
    if CELL_PAIR_COST * compared >= every_pair:  # rows without clusters: the bound prunes too little to pay
        if stats is not None:
            stats.update(method="all pairs", cells=len(centres), capped_rows=0, compared=int(every_pair))
        rest = None if progress is None else (lambda f: progress(0.25 + 0.75 * f))
        return _all_pairs(X, where, threshold, metric, block_rows, max_pairs, rest)
    work = sizes * (sizes + np.diff(visit_starts))
    total = float(work.sum()) or 1.0
    limit = t * t
    found_i, found_j, found_d = [], [], []
    count, done = 0, 0.0
    for cell in range(len(centres)):  # pass 2: each cell's rows against its rows and its visitors
        members = by_own[own_starts[cell] : own_starts[cell + 1]]
        if members.size == 0:
            continue
        visitors = visit_row[by_visit[visit_starts[cell] : visit_starts[cell + 1]]]
        everyone = np.concatenate([members, visitors])  # positions in `where`; members first
        R = _rows_for_cells(X, where[everyone], normalise)
        R -= R[: members.size].mean(axis=0)  # centred on the cell: |r - q|^2 = |r|^2 - 2 r.q + |q|^2 loses little
        r_sq = np.einsum("ij,ij->i", R, R)
        for qa in range(0, members.size, block_rows):
            stop = min(qa + block_rows, members.size)  # queries are members only: visitors meet in their own cells
            Qm2 = -2.0 * R[qa:stop]
            q_limit = limit - r_sq[qa:stop]
            for rb in range(qa, len(everyone), block_rows):  # members before qa were compared with this block
                G = R[rb : rb + block_rows] @ Qm2.T  # (rows, queries): |r - q|^2 - |q|^2
                G += r_sq[rb : rb + block_rows, None]
                jj, ii = np.nonzero(np.less_equal(G, q_limit))
                keep = (jj + rb) > (ii + qa)  # members pair once, never with themselves; visitors all count
                jj, ii = jj[keep], ii[keep]
                if ii.size:
                    a, b = where[everyone[ii + qa]], where[everyone[jj + rb]]
                    d = np.sqrt(np.maximum(G[jj, ii] + r_sq[ii + qa], 0.0))
                    found_i.append(np.minimum(a, b))
                    found_j.append(np.maximum(a, b))
                    found_d.append((0.5 * d * d if normalise else d).astype(np.float32))
                    count += ii.size
                    if count > 2 * max_pairs:  # a pair may be found twice, once from each side
                        raise _too_many(max_pairs, threshold)
        done += work[cell]
        if progress is not None:
            progress(0.25 + 0.75 * done / total)
    i, j, d = _sorted_pairs(found_i, found_j, found_d)
    if len(i) > max_pairs:
        raise _too_many(max_pairs, threshold)
    if stats is not None:
        stats.update(
            method="cells",
            cells=len(centres),
            capped_rows=capped,
            compared=compared,
        )
    return i, j, d


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
