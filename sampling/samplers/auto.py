"""`auto`: the recommended "what to label first" strategy, chosen by measurement (benchmarks/bench_quality.py).

Greedy like coreset, but each pick maximises  distance to the selected set ** alpha(t) x typicality:
- typicality = 1 / mean distance to the K_NN nearest near-duplicate groups (global density, not per
  cluster), where a group counts once, at its nearest member. Near-duplicates are samples closer than
  DUP_RADIUS x the median distance to the K_NN-th neighbour (measured on a seeded sample of
  RADIUS_SAMPLE rows); the groups are the connected components of such pairs, and a sample's own group
  and any group within the radius are left out of its neighbours. Without this a burst of
  near-identical frames (a camera waiting at a light) is the densest spot of the data and draws the
  first picks (bench_quality.py --street); on data without near-duplicates it changes nothing (no pair
  is that close: every group is one sample).
  Up to EXACT_ROWS rows: exact, against every row. Past it: against a seeded uniform reference
  sample of EXACT_ROWS rows, with K_NN scaled by the sampled fraction (at least K_MIN), searched
  only within the row's cluster (REF_PER_CLUSTER reference rows per cluster, KMeans fitted on the
  reference sample; groups among a cluster's reference rows): n x REF_PER_CLUSTER distances, not
  n x n. A uniform reference keeps the estimate comparable between clusters (bench_quality.py
  --auto-paths measures this path).
- alpha(t) = ALPHA_EARLY for the first ALPHA_FROM selected samples (preselected included), then
  falls with log(t) to ALPHA_LATE at ALPHA_TO picks: small budgets are spread over the modes
  (distance squared, so coverage first, outliers held back by typicality), large budgets lean on
  typicality (distance to the power 1, the most representative samples of each region).
- The first pick, with nothing preselected, is the most typical sample.

Both factors are distances, so the order does not depend on the scale of the embeddings. Because
alpha depends on the pick number only, the top K of a run for n_samples >= K are the picks of a
run for K. Deterministic for a seed (the seed chooses the rows that measure the radius, and the reference
sample and clustering past EXACT_ROWS). Cost: the typicality pass plus one greedy k-center (kcenter.KCenter) pass and
one multiply-argmax over the candidates per pick; no quadratic step past EXACT_ROWS.
"""

from __future__ import annotations

import math

import numpy as np

from .base import NO_MONITOR, Monitor, drop_pages
from .kcenter import KCenter
from .typicality import _mean, assign, kmeans

K_NN = 20
K_MIN = 3
DUP_RADIUS = 0.25
RADIUS_SAMPLE = 2_000
EXACT_ROWS = 20_000
REF_PER_CLUSTER = 1_000
ALPHA_EARLY, ALPHA_LATE = 2.0, 1.0
ALPHA_FROM, ALPHA_TO = 100, 500
_CHUNK_ELEMS = 1 << 24


def alpha_at(t: int) -> float:
    """The exponent of the distance for the pick made when t samples are already selected."""
    if t <= ALPHA_FROM:
        return ALPHA_EARLY
    frac = math.log(t / ALPHA_FROM) / math.log(ALPHA_TO / ALPHA_FROM)
    return max(ALPHA_LATE, ALPHA_EARLY - (ALPHA_EARLY - ALPHA_LATE) * frac)


def _d2_blocks(Q: np.ndarray, R: np.ndarray):
    """(start, squared distances from the rows Q[start:start + len(block)] to every row of R), in blocks."""
    r_sq = np.einsum("ij,ij->i", R, R)
    Rm2 = -2.0 * R.T
    step = max(1, _CHUNK_ELEMS // max(len(R), 1))
    for s in range(0, len(Q), step):
        B = Q[s : s + step]
        d2 = B @ Rm2
        d2 += r_sq
        d2 += np.einsum("ij,ij->i", B, B)[:, None]
        np.maximum(d2, 0.0, out=d2)
        yield s, d2


def near_duplicate_radius(R: np.ndarray, k: int, seed: int) -> float:
    """DUP_RADIUS x the median distance to the k-th nearest other row of R, over a seeded sample of its rows."""
    if len(R) < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    sample = R[np.sort(rng.choice(len(R), min(len(R), RADIUS_SAMPLE), replace=False))]
    kk = min(k + 1, len(R))  # the sampled row itself is the nearest
    kth = np.concatenate([np.partition(d2, kk - 1, axis=1)[:, kk - 1] for _s, d2 in _d2_blocks(sample, R)])
    return DUP_RADIUS * float(np.median(np.sqrt(kth)))


def near_duplicate_groups(R: np.ndarray, radius: float) -> np.ndarray:
    """Group label of each row of R: the connected components of the pairs closer than `radius`."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(R)
    labels = np.arange(n)
    if radius <= 0 or n < 2:
        return labels
    r2 = radius * radius
    pairs_i, pairs_j, held = [], [], 0
    for s, d2 in _d2_blocks(R, R):
        i, j = np.nonzero(d2 < r2)
        keep = s + i < j  # each pair once, never a row with itself
        pairs_i.append(s + i[keep])
        pairs_j.append(j[keep])
        held += int(keep.sum())
        if held > _CHUNK_ELEMS // 4:  # many duplicates: fold the pairs into components so far, one edge per row
            labels = _components(labels, pairs_i, pairs_j, n, coo_matrix, connected_components)
            pairs_i, pairs_j, held = [], [], 0
    return _components(labels, pairs_i, pairs_j, n, coo_matrix, connected_components)


def _components(labels, pairs_i, pairs_j, n, coo_matrix, connected_components) -> np.ndarray:
    """Connected components of the pairs plus, for each row, an edge to the first row of its group so far."""
    first = np.full(n, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n))
    i = np.concatenate([np.arange(n), *pairs_i])
    j = np.concatenate([first[labels], *pairs_j])
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def _mean_group_knn(
    Q: np.ndarray, R: np.ndarray, groups: np.ndarray, own: np.ndarray, k: int, radius: float
) -> np.ndarray:
    """Mean distance from each row of Q to the k nearest near-duplicate groups of R's rows (a group's
    distance: its nearest member). A group within `radius` of the row, or its own group (own: group
    label, -1 for none), is the row's near-duplicates and does not count; inf if no group is left."""
    out = np.empty(len(Q))
    if len(R) == 0:
        out[:] = np.inf
        return out
    # Columns: the rows alone in their group as they are, then one column per larger group (its minimum).
    sizes = np.bincount(groups)
    single = np.flatnonzero(sizes[groups] == 1)
    multi = np.flatnonzero(sizes[groups] > 1)
    multi = multi[np.argsort(groups[multi], kind="stable")]
    starts = np.flatnonzero(np.r_[True, groups[multi][1:] != groups[multi][:-1]]) if len(multi) else multi
    n_cols = len(single) + len(starts)
    column = np.full(len(sizes), -1, dtype=np.int64)  # group label -> its column
    column[groups[single]] = np.arange(len(single))
    column[groups[multi[starts]]] = len(single) + np.arange(len(starts))
    own_col = np.where(own >= 0, column[np.maximum(own, 0)], -1)
    r2 = radius * radius
    kk = min(k, n_cols)
    for s, d2 in _d2_blocks(Q, R):
        if len(multi) == 0:
            g = d2
        else:
            g = np.concatenate([d2[:, single], np.minimum.reduceat(d2[:, multi], starts, axis=1)], axis=1)
        hit = np.flatnonzero(own_col[s : s + len(g)] >= 0)
        g[hit, own_col[s + hit]] = np.inf
        g[g < r2] = np.inf
        near = np.sqrt(np.partition(g, kk - 1, axis=1)[:, :kk], dtype=np.float64)
        finite = np.isfinite(near)
        count = finite.sum(axis=1)
        total = np.where(finite, near, 0.0).sum(axis=1)
        out[s : s + len(g)] = np.where(count > 0, total / np.maximum(count, 1), np.inf)
    return out


def typicality(
    X: np.ndarray, rows: np.ndarray, population: np.ndarray, seed: int = 0, monitor: Monitor = NO_MONITOR
) -> np.ndarray:
    """1 / mean distance to the K_NN nearest near-duplicate groups of `population` (rows of X), for each
    of `rows` (see the module docstring)."""
    shift = _mean(X, population)
    n_pop = len(population)
    if n_pop <= EXACT_ROWS:
        R = X[population].astype(np.float32, copy=False) - shift
        drop_pages(X)
        radius = near_duplicate_radius(R, K_NN, seed)
        groups = near_duplicate_groups(R, radius)
        monitor.tick(0.3)
        pos = np.searchsorted(population, rows)  # rows are part of the population
        mean = _mean_group_knn(R[pos], R, groups, groups[pos], K_NN, radius)
        monitor.tick(1.0)
        return _inverse(mean)
    rng = np.random.default_rng(seed)
    ref = np.sort(rng.choice(population, EXACT_ROWS, replace=False))
    R = X[ref].astype(np.float32, copy=False) - shift
    drop_pages(X)
    n_clusters = max(1, EXACT_ROWS // REF_PER_CLUSTER)
    # The K_NN-th neighbour among all rows is about the (K_NN x fraction)-th among the reference rows.
    k_ref = max(K_MIN, round(K_NN * EXACT_ROWS / n_pop))
    radius = near_duplicate_radius(R, k_ref, seed)
    centers = kmeans(R, n_clusters, seed, greedy_init=False).cluster_centers_
    monitor.tick(0.1)
    ref_labels = assign(R, np.arange(len(R)), np.zeros(R.shape[1], np.float32), centers)
    row_labels = assign(X, rows, shift, centers)
    monitor.tick(0.3)
    out = np.empty(len(rows))
    order = np.argsort(row_labels, kind="stable")
    bounds = np.searchsorted(row_labels[order], np.arange(n_clusters + 1))
    for c in range(n_clusters):
        pos = order[bounds[c] : bounds[c + 1]]
        if len(pos) == 0:
            continue
        Rc = R[ref_labels == c]
        ref_c = ref[ref_labels == c]
        groups = near_duplicate_groups(Rc, radius)
        own = np.full(len(pos), -1, dtype=np.int64)  # the group of a row that is itself a reference row
        if len(ref_c):
            at = np.minimum(np.searchsorted(ref_c, rows[pos]), len(ref_c) - 1)
            own = np.where(ref_c[at] == rows[pos], groups[at], -1)
        step = max(1, _CHUNK_ELEMS // X.shape[1])
        for s in range(0, len(pos), step):
            part = pos[s : s + step]
            Q = X[rows[part]].astype(np.float32, copy=False) - shift
            out[part] = _mean_group_knn(Q, Rc, groups, own[s : s + step], k_ref, radius)
            drop_pages(X)
        monitor.tick(0.3 + 0.7 * (c + 1) / n_clusters)
    return _inverse(out)


def _inverse(mean: np.ndarray) -> np.ndarray:
    """1 / (mean distance + a thousandth of the median one): exact duplicates get a large but finite
    typicality, and the ratios stay within what float32 powers can hold; a row without neighbours gets 0."""
    finite = mean[np.isfinite(mean)]
    eps = 1e-3 * float(np.median(finite)) if finite.size else 0.0
    return 1.0 / (mean + (eps if eps > 0 else 1e-12))


def auto_picks(
    X: np.ndarray,
    rows: np.ndarray,
    preselected_rows: np.ndarray,
    n_samples: int,
    seed: int = 0,
    monitor: Monitor = NO_MONITOR,
) -> tuple[np.ndarray, np.ndarray]:
    """(pick positions into rows in pick order, final objective of every row: distance ** alpha x typicality)."""
    rows = np.asarray(rows, dtype=np.int64)
    pre = np.asarray(preselected_rows, dtype=np.int64)
    m = len(rows)
    monitor.phase(0.0, 0.4)
    population = np.union1d(rows, pre)
    typ = typicality(X, rows, population, seed, monitor)
    monitor.phase(0.4, 0.45)
    kc = KCenter(X, rows, pre if len(pre) else None, monitor)
    monitor.phase(0.45, 1.0)
    cap = min(int(n_samples), m)
    picks = np.empty(cap, dtype=np.int64)
    weight = np.empty(m, dtype=np.float32)
    value = np.empty(m, dtype=np.float32)
    top = float(typ.max())
    typ_norm = typ / top if top > 0 else np.ones(m)  # in [0, 1]: its powers stay finite in float32
    alpha = None
    t = 0
    if len(pre) == 0 and cap > 0:
        j = int(np.argmax(typ))  # ties: the lowest position, i.e. the lowest idx
        picks[0] = j
        kc.add(j)
        t = 1
    while t < cap:
        a = round(alpha_at(len(pre) + t) * 20) / 20  # new weights only when alpha moves by 0.05
        if a != alpha:
            alpha = a
            # argmax of d ** a x typ  ==  argmax of d² x typ ** (2 / a)
            np.power(typ_norm, 2.0 / a, out=weight, casting="unsafe")
        np.multiply(kc.min_d2, weight, out=value)  # picked rows hold -inf
        j = int(np.argmax(value))
        picks[t] = j
        kc.add(j)
        t += 1
        monitor.tick(t / cap)
    a = alpha_at(len(pre) + cap)
    final = np.sqrt(np.maximum(kc.min_d2, 0.0), dtype=np.float64) ** a * typ
    final[kc.picked] = 0.0
    return picks, final
