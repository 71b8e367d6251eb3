"""Shared pieces of the samplers: the input record, errors, ranking, progress and score encoding."""

from __future__ import annotations

import mmap
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


class SamplerError(ValueError):
    """A bad parameter or input; the message names the parameter (`field`, when given, is that name alone)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(f"{field}: {message}" if field else message)
        self.message, self.field = message, field


class Cancelled(Exception):
    """`should_stop()` answered True while the sampler was running."""


@dataclass
class SelectionInput:
    """What a selection run works on; every index is a row of `embeddings` (the sample's idx)."""

    embeddings: np.ndarray | None
    candidates: np.ndarray
    preselected: np.ndarray
    metadata: dict[str, np.ndarray] = field(default_factory=dict)
    query: np.ndarray | None = None


def ranking(scores: np.ndarray, candidate_idx: np.ndarray) -> np.ndarray:
    """Positions into `scores` in ranked order: score descending, ties by ascending idx."""
    scores = np.asarray(scores, dtype=np.float64)
    candidate_idx = np.asarray(candidate_idx)
    if scores.shape != candidate_idx.shape:
        raise SamplerError("scores: length differs from candidate_idx")
    return np.lexsort((candidate_idx, -scores))


class Monitor:
    """Reports progress at most ~100 times and polls `should_stop` at most every `poll_s` seconds."""

    def __init__(
        self,
        progress: Callable[[float], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        poll_s: float = 0.2,
    ):
        self._progress = progress
        self._should_stop = should_stop
        self._poll_s = poll_s
        self._next_poll = 0.0
        self._last_pct = -1
        self._lo, self._hi = 0.0, 1.0

    def phase(self, lo: float, hi: float) -> None:
        """Map the fractions of the next piece of work into [lo, hi] of the whole run."""
        self._lo, self._hi = lo, hi

    def tick(self, fraction: float) -> None:
        """Cheap enough to call once per pick."""
        if self._progress is not None:
            pct = int(100 * (self._lo + (self._hi - self._lo) * min(max(fraction, 0.0), 1.0)))
            if pct > self._last_pct:
                self._last_pct = pct
                self._progress(pct / 100.0)
        if self._should_stop is not None:
            now = time.monotonic()
            if now >= self._next_poll:
                self._next_poll = now + self._poll_s
                if self._should_stop():
                    raise Cancelled("selection run cancelled")

    def check(self) -> None:
        """Poll `should_stop` now, whatever the time since the last poll."""
        if self._should_stop is not None and self._should_stop():
            raise Cancelled("selection run cancelled")


NO_MONITOR = Monitor()


def step_for(values: np.ndarray) -> float:
    """The gap that keeps chained scores strictly apart: 1e-12 of the values' magnitude."""
    finite = values[np.isfinite(values)] if values.size else values
    scale = float(np.max(np.abs(finite))) if finite.size else 0.0
    return 1e-12 * (scale if scale > 0 else 1.0)


def chain_scores(n: int, picks: np.ndarray, pick_values: np.ndarray, rest_values: np.ndarray | None) -> np.ndarray:
    """Scores where the picks rank first, in pick order, and every other position after them.

    Pick i gets min(pick_values[i], score of pick i-1 - step): its value, lowered just enough
    that the scores strictly decrease along the pick order (ties among values would otherwise
    be broken by idx, not by pick order). The others get min(rest_values, last pick - step).
    `step` is 1e-12 of the values' magnitude, so the numbers stay the strategy's values.
    """
    pick_values = np.asarray(pick_values, dtype=np.float64)
    rest = np.zeros(n) if rest_values is None else np.asarray(rest_values, dtype=np.float64).copy()
    step = step_for(np.concatenate([pick_values, rest]))
    if len(picks):
        chained = np.empty(len(picks))
        prev = np.inf
        for i, v in enumerate(pick_values.tolist()):
            prev = v if v < prev - step else prev - step
            chained[i] = prev
        np.minimum(rest, prev - step, out=rest)
        rest[picks] = chained
    return rest


def below(values: np.ndarray) -> float:
    """A finite score strictly below every value (for candidates a threshold left out)."""
    if values.size == 0:
        return 0.0
    low = float(np.min(values))
    return low - max(1.0, abs(low))


def as_index(name: str, value, n: int | None, *, sorted_unique: bool = False) -> np.ndarray:
    """Validate an index array: one-dimensional integers in [0, n)."""
    arr = np.asarray(value if value is not None else [], dtype=None)
    if arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise SamplerError(f"{name}: expected a one-dimensional array of integer indices")
    arr = arr.astype(np.int64, copy=False)
    if arr.min() < 0 or (n is not None and arr.max() >= n):
        raise SamplerError(f"{name}: index out of range [0, {n})")
    if sorted_unique and arr.size > 1 and not np.all(arr[1:] > arr[:-1]):
        raise SamplerError(f"{name}: indices must be unique and sorted ascending")
    return arr


def drop_pages(X: np.ndarray) -> None:
    """Unmap the pages of a read-only memory-mapped matrix that this process has read so far.

    A sampler that copies the rows it needs blockwise calls this after each block: the pages stay
    in the kernel's page cache (a later read maps them again, without disk I/O), but they stop
    counting in this process's resident memory, so copy + mapping is not held twice. No-op for
    an array that is not (a view of) a memory map; any view drops the whole mapping's pages.
    """
    mm = X
    while mm is not None and not isinstance(mm, mmap.mmap):
        mm = getattr(mm, "base", None)
    if mm is None or not hasattr(mm, "madvise"):
        return
    try:
        mm.madvise(mmap.MADV_DONTNEED)
    except (OSError, ValueError):  # not supported here: the pages are just kept
        pass
