"""Strategies over metadata columns: weights, thresholds and class balance."""

from __future__ import annotations

import numbers

import numpy as np

from .base import SamplerError

OPERATIONS = ("gt", "ge", "lt", "le", "eq")


def column(metadata: dict, name: str, where: str, n: int | None) -> np.ndarray:
    if not isinstance(name, str) or not name:
        raise SamplerError(f"{where}.field: a metadata field name is required")
    if metadata is None or name not in metadata:
        raise SamplerError(f"{where}.field: unknown metadata field {name!r}")
    col = np.asarray(metadata[name])
    if col.ndim != 1 or (n is not None and len(col) != n):
        raise SamplerError(f"{where}.field: metadata column {name!r} must have one value per sample")
    return col


def numeric(col: np.ndarray, name: str, where: str) -> np.ndarray:
    """float64 values with NaN for missing; a column that is not numeric is a SamplerError."""
    if col.dtype.kind in "fiub":
        return col.astype(np.float64)
    out = np.empty(len(col))
    for i, v in enumerate(col.tolist()):
        if v is None:
            out[i] = np.nan
        elif isinstance(v, numbers.Real) and not isinstance(v, bool):
            out[i] = float(v)
        else:
            raise SamplerError(f"{where}.field: metadata field {name!r} is not numeric")
    return out


def is_missing(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype.kind in "iub":
        return np.zeros(len(values), dtype=bool)
    return np.fromiter(
        (v is None or (isinstance(v, float) and v != v) for v in values.tolist()), dtype=bool, count=len(values)
    )


def weight_values(col: np.ndarray, name: str, where: str) -> np.ndarray:
    values = numeric(col, name, where)
    if np.isinf(values).any():
        raise SamplerError(f"{where}.field: metadata field {name!r} has infinite values")
    return values


def category_key(value) -> str:
    """How a category value is compared with the target's keys: 3.0 and 3 are both '3'."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def weight_factor(values: np.ndarray) -> np.ndarray:
    """Weights as a factor in [0, 1] for the product of objectives (missing = 0).

    Non-negative weights are divided by their maximum (the order and ratios stay Lightly's);
    a column with negative values is first shifted so that its minimum is 0.
    """
    ok = ~np.isnan(values)
    out = np.zeros(len(values))
    if not ok.any():
        return out
    v = values[ok]
    lo = float(v.min())
    if lo < 0:
        v = v - lo
    hi = float(v.max())
    out[ok] = v / hi if hi > 0 else 1.0
    return out


def threshold_mask(col: np.ndarray, name: str, where: str, operation, value) -> np.ndarray:
    """Which rows pass; a missing value never passes. (`operation` and `value` are checked by the grammar,
    strategies.check_strategy.)"""
    if operation == "eq" and not isinstance(value, numbers.Real):
        missing = is_missing(col)
        return np.array(
            [(not m) and (v == value or str(v) == str(value)) for v, m in zip(col.tolist(), missing)], dtype=bool
        )
    x = numeric(col, name, where)
    with np.errstate(invalid="ignore"):
        return {"gt": np.greater, "ge": np.greater_equal, "lt": np.less, "le": np.less_equal, "eq": np.equal}[
            operation
        ](x, value) & ~np.isnan(x)


def categories(col: np.ndarray) -> tuple[np.ndarray, list]:
    """Integer code per row (-1 for missing) and the category values (as str)."""
    missing = is_missing(col)
    keys = np.array(["" if m else category_key(v) for v, m in zip(col.tolist(), missing)], dtype=object)
    names, codes = (
        np.unique(keys[~missing].astype(str), return_inverse=True)
        if (~missing).any()
        else (np.array([], dtype=str), np.array([], dtype=np.int64))
    )
    out = np.full(len(col), -1, dtype=np.int64)
    out[~missing] = codes
    return out, [str(s) for s in names]


def balance_shares(target, names: list, where: str) -> np.ndarray:
    """Target share per category name (0 for categories the target leaves out), summing to 1. (The target's shape,
    'uniform' or non-negative shares not all zero, is checked by the grammar, strategies.check_strategy.)"""
    if target == "uniform":
        return np.full(len(names), 1.0 / max(len(names), 1))
    shares = np.zeros(len(names))
    index = {n: i for i, n in enumerate(names)}
    total = 0.0
    for key, share in target.items():
        total += float(share)
        if category_key(key) in index:
            shares[index[category_key(key)]] = float(share)
    return shares / total


def apportion(
    codes: np.ndarray, shares: np.ndarray, within: np.ndarray, already: np.ndarray | None = None
) -> np.ndarray:
    """Balanced order of positions: each prefix is as close to the target shares as possible.

    `codes` is the category per position (-1 missing), `within` a per-position key giving the
    order inside a category (ascending), `already` the preselected count per category. The j-th
    pick of category c is due at time (already_c + j + 0.5) / share_c (Sainte-Laguë); merging by due time gives every prefix near-target
    proportions, and a category that runs out simply stops contributing. Positions whose
    category has no share (or is missing) come after all the others, in `within` order.
    """
    n = len(codes)
    order = np.lexsort((np.arange(n), within, codes))
    sorted_codes = codes[order]
    starts = np.searchsorted(sorted_codes, sorted_codes, side="left")
    rank_in_cat = np.arange(n) - starts
    share = np.where(sorted_codes >= 0, shares[np.maximum(sorted_codes, 0)] if len(shares) else 0.0, 0.0)
    due = np.full(n, np.inf)
    has = share > 0
    if already is not None and len(already):
        rank_in_cat = rank_in_cat + np.where(sorted_codes >= 0, already[np.maximum(sorted_codes, 0)], 0)
    due[has] = (rank_in_cat[has] + 0.5) / share[has]
    tail_key = np.where(has, 0.0, within[order])
    return order[np.lexsort((order, tail_key, due))]


class BalanceState:
    """Greedy balance inside the combined pick loop: which category is most behind its share."""

    def __init__(self, codes: np.ndarray, shares: np.ndarray, alive: np.ndarray, picked_codes: np.ndarray):
        self.codes = codes
        self.shares = shares
        self.count = np.bincount(picked_codes[picked_codes >= 0], minlength=len(shares)).astype(np.float64)
        self.left = np.bincount(codes[alive & (codes >= 0)], minlength=len(shares))
        self.left_other = (
            int(np.sum(alive & ((codes < 0) | (shares[np.maximum(codes, 0)] <= 0))))
            if len(shares)
            else int(alive.sum())
        )

    def next_category(self) -> int | None:
        """Category to pick from next (largest deficit); -1: only unshared/missing left; None: none left."""
        avail = (self.left > 0) & (self.shares > 0)
        if avail.any():
            total = self.count.sum() + 1.0
            deficit = np.where(avail, self.shares * total - self.count, -np.inf)
            return int(np.argmax(deficit))
        return -1 if self.left_other > 0 else None

    def took(self, code: int, shared: bool) -> None:
        if shared:
            self.count[code] += 1
            self.left[code] -= 1
        else:
            self.left_other -= 1
