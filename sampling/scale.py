"""The distance scale of an embedding, so a curator can choose diversity's `min_distance` knowingly.

GET /datasets/<id>/embeddings/<embedding_id>/distance-scale answers it (sampling.api).

Computed from a seeded random sample of at most SCALE_SAMPLE rows of the memory-mapped matrix: the work
and the memory are bounded whatever the dataset's size, and only the sampled rows are read.
Distances are Euclidean, as the coreset and diversity samplers measure them.
"""

from __future__ import annotations

import numpy as np

SCALE_SAMPLE = 2000
PERCENTILES = (5, 25, 50, 75, 95)
_BLOCK = 500  # rows of the distance matrix computed at a time (500 x 2000 float64 = 8 MB)


def distance_scale(matrix: np.ndarray, rows: np.ndarray, *, sample: int = SCALE_SAMPLE, seed: int = 0) -> dict:
    """Percentiles of nearest-neighbour and pairwise distances over a random sample of `rows` of `matrix`."""
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(rows, size=min(sample, len(rows)), replace=False)) if len(rows) else rows
    m = len(take)
    if m < 2:
        return {"sampled": int(m), "rows": int(len(rows)), "nearest_neighbour": None, "pairwise": None}
    x = np.asarray(matrix[take], dtype=np.float64)
    sq = np.einsum("ij,ij->i", x, x)
    nearest = np.empty(m)
    pairwise = []
    for s in range(0, m, _BLOCK):
        block = x[s : s + _BLOCK]
        d2 = np.maximum(sq[s : s + _BLOCK, None] + sq[None, :] - 2.0 * block @ x.T, 0.0)
        own = np.arange(s, s + len(block))
        d2[own - s, own] = np.inf
        nearest[s : s + len(block)] = np.sqrt(d2.min(axis=1))
        pairwise.append(np.sqrt(d2[np.arange(m)[None, :] > own[:, None]]))  # each pair once
    pairs = np.concatenate(pairwise)

    def pct(values):
        return {f"p{p}": round(float(v), 6) for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES))}

    return {"sampled": int(m), "rows": int(len(rows)), "nearest_neighbour": pct(nearest), "pairwise": pct(pairs)}
