"""Greedy k-center (Gonzalez 1985; Sener & Savarese 2018): coreset, diversity and the sharded variant.

Speed: the candidate rows are copied once, centered, as float32 Xc with ||x||² precomputed.
Per pick, for the new center c, at most ONE BLAS pass over the candidates: buf = ||x||² + ||c||²
(an in-place add into a preallocated buffer), then one sgemv adds -2 Xc @ c into buf in place
(beta = 1), np.minimum(..., out=) folds buf into the running min squared distance and np.argmax
finds the next pick. No per-pick temporaries of size n. Each row also remembers its nearest
center, so once the centers cover the data the triangle inequality rules most rows out
(d(a, c) >= 2 d(x, a) means x cannot get closer to c) and only the few rows left are gathered
and updated (see `KCenter.add`); the picks are the same as without it. Memory is about one copy
of the candidate embeddings. Distances are squared internally and square-rooted only when
reported. Centering keeps the float32 expansion ||x||² - 2 x.c + ||c||² accurate.

Scale-out (two-round distributed k-center, Malkomes et al. 2015): split the candidates into
shards (`shard_split`), run `shard_centers` on each shard (k picks each, a Celery group),
then `merge_centers` runs greedy k-center over the union of the shards' picks and scores every
candidate (the chord's callback). Its covering radius is within 4x of the optimum (2x for a
single greedy run); `benchmarks/bench_coreset.py` measures the actual gap.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg.blas import sgemv as _sgemv

from .base import NO_MONITOR, Monitor, SamplerError, as_index, chain_scores, drop_pages

# Bound the temporaries of the chunked passes to about 64 MB of float32.
_CHUNK_ELEMS = 1 << 24
# Sparse update while at most this fraction of the rows can move (a gathered row costs ~3 streamed rows).
PRUNE_MAX = 0.25
DENSE_RECHECK = 8
_GATHER_ROWS = 16384


class KCenter:
    """Running min squared distance from each candidate row to the selected set."""

    def __init__(
        self, X: np.ndarray, rows: np.ndarray, preselected_rows: np.ndarray | None = None, monitor: Monitor = NO_MONITOR
    ):
        rows = np.asarray(rows, dtype=np.int64)
        m, d = len(rows), X.shape[1]
        self.rows, self.d = rows, d
        step = max(1, _CHUNK_ELEMS // max(d, 1))
        total = np.zeros(d)
        for s in range(0, m, step):
            total += X[rows[s : s + step]].sum(axis=0, dtype=np.float64)
            drop_pages(X)
        self.mean = (total / max(m, 1)).astype(np.float32)
        self.Xc = np.empty((m, d), dtype=np.float32)
        self.sq = np.empty(m, dtype=np.float32)
        for s in range(0, m, step):
            block = self.Xc[s : s + step]
            np.subtract(X[rows[s : s + step]], self.mean, out=block, casting="unsafe")
            np.einsum("ij,ij->i", block, block, out=self.sq[s : s + step])
            drop_pages(X)  # a memory-mapped X: its pages need not stay resident next to the copy
        self._XcT = self.Xc.T  # Fortran-ordered view: BLAS reads it in place, no copy
        self.min_d2 = np.full(m, np.inf, dtype=np.float32)
        self.assign = np.full(m, -1, dtype=np.int32)  # nearest center, for the pruning bound
        self.picked = np.zeros(m, dtype=bool)
        self._buf = np.empty(m, dtype=np.float32)
        self._bound = np.empty(m, dtype=np.float32)
        self._mask = np.empty(m, dtype=bool)
        self._C = np.empty((64, d), dtype=np.float32)
        self._csq = np.empty(64, dtype=np.float32)
        self.n_centers = 0
        self._slack = 1e-5 * float(self.sq.max()) if m else 0.0
        self._dense_for = 0
        self._backoff = DENSE_RECHECK
        self.sparse_picks = 0
        if preselected_rows is not None and len(preselected_rows):
            self._add_centers(X, np.asarray(preselected_rows, dtype=np.int64), monitor)

    def _append_centers(self, C: np.ndarray, c_sq: np.ndarray) -> int:
        first = self.n_centers
        need = first + len(C)
        if need > len(self._C):
            size = max(need, 2 * len(self._C))
            self._C = np.concatenate([self._C[:first], np.empty((size - first, self.d), np.float32)])
            self._csq = np.concatenate([self._csq[:first], np.empty(size - first, np.float32)])
        self._C[first:need] = C
        self._csq[first:need] = c_sq
        self.n_centers = need
        self._slack = max(self._slack, 1e-5 * float(np.max(c_sq)))
        return first

    def _add_centers(self, X: np.ndarray, center_rows: np.ndarray, monitor: Monitor) -> None:
        """Fold many centers in at once: chunked matrix-matrix products."""
        m, n_c = len(self.rows), len(center_rows)
        cols = min(n_c, 8192)
        block = max(1, (1 << 22) // cols)  # row block x center block stays within 16 MB
        chunks = -(-n_c // cols) * -(-m // block)
        done = 0
        for s in range(0, n_c, cols):
            C = X[center_rows[s : s + cols]].astype(np.float32) - self.mean
            c_sq = np.einsum("ij,ij->i", C, C)
            first = self._append_centers(C, c_sq)
            Cm2 = -2.0 * C.T
            for r in range(0, m, block):
                D = self.Xc[r : r + block] @ Cm2
                D += c_sq
                nearest = D.argmin(axis=1)
                d2 = D[np.arange(len(D)), nearest] + self.sq[r : r + block]
                better = d2 < self.min_d2[r : r + block]
                self.min_d2[r : r + block][better] = d2[better]
                self.assign[r : r + block][better] = first + nearest[better]
                done += 1
                monitor.tick(done / chunks)
        # A preselected sample that is also a row here is covered: distance 0 (not float noise).
        self.min_d2[np.isin(self.rows, center_rows)] = 0.0

    def _might_move(self, to_centers: np.ndarray, rows: slice) -> np.ndarray:
        """The pruning bound on some rows: may the new center come closer than their nearest one?"""
        return to_centers[self.assign[rows]] < 4.0 * (1.0 + 1e-3) * self.min_d2[rows] + self._slack

    def add(self, j: int) -> None:
        """Make row position j a center.

        Pruning (triangle inequality): a row x whose nearest center a has d(a, c) >= 2 d(x, a)
        cannot get closer to the new center c. The distances from c to the existing centers are
        a small product; when at most PRUNE_MAX of the rows pass the bound, only those rows are
        gathered and updated. Otherwise (early picks, or data without cluster structure) one full
        pass: buf = ||x||^2 + ||c||^2, then one sgemv adds -2 X c into buf in place (beta = 1)
        and np.minimum folds it into the running minimum. Whether pruning pays is estimated on
        every 16th row; after a miss the next estimate waits DENSE_RECHECK picks (doubling up to
        8x), so data without cluster structure pays almost nothing for it.
        """
        t = self.n_centers
        c, c_sq = self.Xc[j], self.sq[j]
        idx = None
        if t > 0 and self._dense_for == 0:
            to_centers = ((self._csq[:t] + c_sq) - 2.0 * (self._C[:t] @ c)).astype(np.float32, copy=False)
            # Estimate on every 16th row first: on data where pruning does not pay, that is all it costs.
            if self._might_move(to_centers, slice(None, None, 16)).mean() <= PRUNE_MAX:
                np.take(to_centers, self.assign, out=self._bound)
                np.multiply(self.min_d2, 4.0 * (1.0 + 1e-3), out=self._buf)
                self._buf += self._slack  # float32 rounding: err on the side of updating
                np.less(self._bound, self._buf, out=self._mask)
                idx = np.flatnonzero(self._mask)
                self._backoff = DENSE_RECHECK
            else:
                self._dense_for = self._backoff
                self._backoff = min(2 * self._backoff, 8 * DENSE_RECHECK)
        elif self._dense_for > 0:
            self._dense_for -= 1
        new = self._append_centers(c[None, :], np.array([c_sq], dtype=np.float32))
        if idx is not None:
            self.sparse_picks += 1
            for s in range(0, len(idx), _GATHER_ROWS):
                part = idx[s : s + _GATHER_ROWS]
                d2 = self.Xc[part] @ (-2.0 * c)
                d2 += self.sq[part]
                d2 += c_sq
                moved = d2 < self.min_d2[part]
                self.min_d2[part[moved]] = d2[moved]
                self.assign[part[moved]] = new
        else:
            buf = self._buf
            np.add(self.sq, c_sq, out=buf)
            out = _sgemv(-2.0, self._XcT, c, beta=1.0, y=buf, overwrite_y=1, trans=1)
            np.less(out, self.min_d2, out=self._mask)
            np.putmask(self.assign, self._mask, new)
            np.minimum(self.min_d2, out, out=self.min_d2)
        self.picked[j] = True
        self.assign[j] = new
        self.min_d2[j] = -np.inf  # never picked again; its reported value is kept by the caller

    def farthest(self) -> int:
        return int(np.argmax(self.min_d2))

    def final_distances(self) -> np.ndarray:
        """float64 distance of each row to the selected set (0 for the picked rows)."""
        out = np.sqrt(np.maximum(self.min_d2, 0.0), dtype=np.float64)
        out[self.picked] = 0.0
        return out


def greedy(
    X: np.ndarray,
    rows: np.ndarray,
    preselected_rows: np.ndarray | None,
    k: int | None,
    *,
    min_distance: float | None = None,
    seed: int = 0,
    monitor: Monitor = NO_MONITOR,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedy k-center over `rows`.

    Returns (pick positions into rows, pick distances, final distance of every row), distances
    float64 and not squared. Stops after k picks (None: no cap), once no row is farther than
    `min_distance` from the selected set, or when every row is picked. With nothing preselected
    the first pick is drawn from the seed and its distance is reported as +inf (callers make it
    finite).
    """
    m = len(rows)
    has_pre = preselected_rows is not None and len(preselected_rows) > 0
    monitor.phase(0.0, 0.05 if has_pre else 0.0)
    kc = KCenter(X, rows, preselected_rows, monitor)
    cap = m if k is None else min(k, m)
    stop_d2 = None if min_distance is None else np.float32(min_distance) ** 2
    picks = np.empty(cap, dtype=np.int64)
    dists = np.empty(cap, dtype=np.float64)
    monitor.phase(0.05 if has_pre else 0.0, 1.0)
    t = 0
    if not has_pre and cap > 0:
        j = int(np.random.default_rng(seed).integers(m))
        picks[0], dists[0] = j, np.inf
        kc.add(j)
        t = 1
    while t < cap:
        j = kc.farthest()
        d2 = kc.min_d2[j]
        if not np.isfinite(d2) or (stop_d2 is not None and d2 <= stop_d2):
            break
        picks[t], dists[t] = j, float(np.sqrt(max(d2, 0.0)))
        kc.add(j)
        t += 1
        monitor.tick(t / cap)
    return picks[:t], dists[:t], kc.final_distances()


def finite_first(dists: np.ndarray, final: np.ndarray) -> np.ndarray:
    """Replace the +inf of a seeded first pick by the largest finite distance seen (then chained above it)."""
    dists = dists.copy()
    if len(dists) and not np.isfinite(dists[0]):
        rest = np.concatenate([dists[1:], final])
        dists[0] = float(rest.max()) if rest.size else 0.0
    return dists


def coreset_scores(
    X: np.ndarray,
    rows: np.ndarray,
    preselected_rows: np.ndarray | None,
    k: int | None,
    *,
    min_distance: float | None = None,
    seed: int = 0,
    monitor: Monitor = NO_MONITOR,
) -> np.ndarray:
    """Scores over `rows`: a pick scores its distance to the selected set when picked, the others
    their final distance; chained so the picks rank first, in pick order (see base.chain_scores)."""
    picks, dists, final = greedy(X, rows, preselected_rows, k, min_distance=min_distance, seed=seed, monitor=monitor)
    return chain_scores(len(rows), picks, finite_first(dists, final), final)


# ---- two-round distributed k-center -------------------------------------------------------------


def shard_split(candidates: np.ndarray, n_shards: int) -> list[np.ndarray]:
    """Deterministic strided split of the candidate rows into `n_shards` shards."""
    if int(n_shards) < 1:
        raise SamplerError("n_shards: must be at least 1")
    candidates = np.asarray(candidates, dtype=np.int64)
    return [candidates[i::n_shards] for i in range(int(n_shards))]


def shard_centers(
    X: np.ndarray, rows: np.ndarray, k: int, preselected_rows: np.ndarray | None = None, *, seed: int = 0
) -> np.ndarray:
    """Round one, per shard: greedy k-center picks (sample rows of X, in pick order, at most k)."""
    rows = as_index("rows", rows, len(X))
    pre = as_index("preselected_rows", preselected_rows, len(X))
    if int(k) < 1:
        raise SamplerError("k: must be at least 1")
    rows = np.setdiff1d(rows, pre)
    picks, _, _ = greedy(X, rows, pre, int(k), seed=seed)
    return rows[picks]


def merge_centers(
    X: np.ndarray,
    union_rows: np.ndarray,
    k: int,
    preselected: np.ndarray,
    candidates: np.ndarray,
    *,
    seed: int = 0,
    monitor: Monitor = NO_MONITOR,
) -> np.ndarray:
    """Round two: greedy k-center over the union of the shards' picks, then score every candidate.

    Returns float64 scores aligned with the effective candidates (candidates minus preselected,
    ascending). The k merge picks rank first in pick order and score their distance within the
    merge round; every other candidate scores its distance to (preselected + merge picks), capped
    just below the last pick so the picks stay on top.
    """
    pre = as_index("preselected", preselected, len(X))
    cand = np.setdiff1d(as_index("candidates", candidates, len(X)), pre)
    union = np.setdiff1d(np.intersect1d(as_index("union_rows", union_rows, len(X)), cand), pre)
    if int(k) < 1:
        raise SamplerError("k: must be at least 1")
    monitor.phase(0.0, 0.5)
    picks, dists, _ = greedy(X, union, pre, int(k), seed=seed, monitor=monitor)
    centers = np.concatenate([pre, union[picks]])
    monitor.phase(0.5, 1.0)
    final = KCenter(X, cand, centers, monitor).final_distances()
    pos = np.searchsorted(cand, union[picks])
    final[pos] = 0.0
    return chain_scores(len(cand), pos, finite_first(dists, final), final)


def distributed_coreset(
    X: np.ndarray, candidates: np.ndarray, preselected: np.ndarray, n_samples: int, n_shards: int, *, seed: int = 0
) -> np.ndarray:
    """Both rounds in one process (the Celery chord runs the same two functions)."""
    pre = as_index("preselected", preselected, len(X))
    cand = np.setdiff1d(as_index("candidates", candidates, len(X)), pre)
    shards = shard_split(cand, n_shards)
    union = np.concatenate([shard_centers(X, s, n_samples, pre, seed=seed) for s in shards if len(s)])
    return merge_centers(X, np.sort(union), n_samples, pre, cand, seed=seed)
