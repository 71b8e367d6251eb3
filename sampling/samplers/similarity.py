"""Similarity to a query tag: the closest sample of the query set decides.

A query sample that is also a candidate is its own closest sample, so it ranks first; put the
query tag in `preselected` to leave it out.
"""

from __future__ import annotations

import numpy as np

from .base import NO_MONITOR, Monitor, drop_pages

METRICS = ("cosine", "euclidean")
_CHUNK_ELEMS = 1 << 24


def similarity(
    X: np.ndarray, rows: np.ndarray, query_rows: np.ndarray, metric: str = "cosine", monitor: Monitor = NO_MONITOR
) -> np.ndarray:
    """Per row: max cosine similarity to any query sample ("cosine", in [-1, 1]) or minus the
    min euclidean distance to any query sample ("euclidean"). Higher = closer. O(rows x query x d)."""
    Q = X[query_rows].astype(np.float32)
    # Euclidean distances are expanded as |b|^2 - 2 b.q + |q|^2: center on the query for accuracy.
    shift = np.zeros(X.shape[1], dtype=np.float32) if metric == "cosine" else Q.mean(axis=0)
    Q = Q - shift
    if metric == "cosine":
        Q = Q / np.maximum(np.linalg.norm(Q, axis=1, keepdims=True), 1e-30)
    else:
        q_sq = np.einsum("ij,ij->i", Q, Q)
    out = np.empty(len(rows))
    qstep = max(1, min(len(Q), _CHUNK_ELEMS // 1024))
    rstep = max(1, _CHUNK_ELEMS // qstep)
    for s in range(0, len(rows), rstep):
        B = X[rows[s : s + rstep]].astype(np.float32) - shift
        if metric == "cosine":
            B /= np.maximum(np.linalg.norm(B, axis=1, keepdims=True), 1e-30)
            best = np.full(len(B), -np.inf, dtype=np.float32)
            for t in range(0, len(Q), qstep):
                np.maximum(best, (B @ Q[t : t + qstep].T).max(axis=1), out=best)
            out[s : s + rstep] = np.clip(best, -1.0, 1.0)
        else:
            b_sq = np.einsum("ij,ij->i", B, B)
            best = np.full(len(B), np.inf, dtype=np.float32)
            for t in range(0, len(Q), qstep):
                d2 = q_sq[None, t : t + qstep] - 2.0 * (B @ Q[t : t + qstep].T)
                np.minimum(best, d2.min(axis=1) + b_sq, out=best)
            out[s : s + rstep] = -np.sqrt(np.maximum(best, 0.0), dtype=np.float64)
        drop_pages(X)
        monitor.tick(min(1.0, (s + rstep) / max(len(rows), 1)))
    return out


def similarity_factor(values: np.ndarray, metric: str) -> np.ndarray:
    """Similarity as a factor in [0, 1] for the product of objectives."""
    if metric == "cosine":
        return (values + 1.0) / 2.0
    dist = -values
    hi = float(dist.max()) if dist.size else 0.0
    return 1.0 - dist / hi if hi > 0 else np.ones_like(dist)
