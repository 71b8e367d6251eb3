"""Pure-numpy samplers: one importance score per candidate sample, no Django.

    from sampling.samplers import select, SelectionInput, STRATEGIES, SamplerError, Cancelled

`select` (in select.py) documents the strategies, how a list of them combines and what the
scores mean; kcenter.py the greedy k-center and its two-round sharded variant for Celery:

    shards = shard_split(effective_candidates(inp), n_shards)        # in the task that fans out
    picks = [shard_centers(X, rows, k, preselected) for rows in shards]  # one Celery task each (group)
    scores = merge_centers(X, np.sort(np.concatenate(picks)), k, preselected, candidates)  # chord callback

`distributed_coreset` runs the same three steps in one process. All indices are embedding rows
(sample idx); scores are aligned with `effective_candidates(inp)` and ordered by `ranking`.
"""

from .base import Cancelled, SamplerError, SelectionInput, ranking
from .kcenter import distributed_coreset, merge_centers, shard_centers, shard_split
from .select import STRATEGIES, effective_candidates, select

__all__ = [
    "Cancelled",
    "SamplerError",
    "SelectionInput",
    "STRATEGIES",
    "distributed_coreset",
    "effective_candidates",
    "merge_centers",
    "ranking",
    "select",
    "shard_centers",
    "shard_split",
]
