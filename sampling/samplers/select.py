"""`select()`: validate a strategy list, run it, return one score per effective candidate.

How a list of strategies combines (after Lightly's selection: thresholds first, then one greedy
pick loop whose objective is the product of the strategies' objectives, each raised to its
`strength`):

1. threshold: every threshold filters the candidates; a candidate that fails one (or whose value
   is missing) is never picked and scores below every candidate that passes.
2. balance (at most one): a constraint on the category proportions of the selected set
   (preselected samples included). Each pick is taken from the category furthest behind its
   target share; categories the target leaves out (and missing values) come only after the
   targeted categories run out.
3. typicality: TypiClust's cluster rule chooses the cluster each pick is taken from (the cluster
   with the fewest selected samples, then the largest), within the balance category if any.
4. Within what 2 and 3 allow, the pick is the sample with the highest product of objectives:
   coreset/diversity: distance to the selected set; typicality: its typicality / the maximum;
   similarity: (cosine + 1) / 2, or 1 - distance / max distance for "euclidean"; weights: the
   value / the maximum (shifted to start at 0 if negative; missing = 0); random: a seeded
   uniform number. Ties go to the lowest idx; with nothing preselected, the first pick with
   coreset/diversity is drawn from the seed among the ties.
5. auto (the recommended strategy, see auto.py) is a fixed combination of diversity and global
   typicality; it combines only with thresholds.
6. The loop stops after n_samples picks, when diversity finds no sample farther than its
   `min_distance`, or when the candidates run out.

Scores (float64, finite, higher = more important; the order everywhere is score descending, ties
by ascending idx, see `ranking`):
- random: 1 - rank / m for a seeded permutation. similarity: the similarity (see 4). weights: the
  value. threshold alone: 1 for pass, 0 for fail.
- coreset / diversity alone: a pick scores its distance to the selected set (preselected
  included) when it was picked, the others their final distance. Ties are made strict along the
  pick order by lowering a score by 1e-12 of the largest distance where needed
  (`base.chain_scores`), so the top K of one run is exactly the greedy coreset of size K. With
  nothing preselected, the seeded first pick scores the largest distance to it (the second pick,
  which has that distance, is lowered by the 1e-12 step).
- typicality alone, auto, balance, and every combination: rank-encoded: pick i of k scores
  1 + (k - i) / k, in (1, 2]; the rest score their final combined objective divided by its
  maximum, in [0, 1] (balance alone orders every candidate, so all are picks).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable

import numpy as np

from . import kcenter
from . import metadata as meta
from . import predictions as pred
from .auto import auto_picks
from .base import Monitor, SamplerError, SelectionInput, as_index, below, drop_pages
from .similarity import similarity, similarity_factor
from .strategies import STRATEGIES, check_stops, check_strategies
from .typicality import MIN_CLUSTER_SIZE, Typicality

SMALL_ELEMS = 1 << 20


def _parse(strategies, n_samples, min_distance) -> list[dict]:
    """The strategies as the loop runs them: checked by the grammar (strategies.py), each with its `where` for
    messages and its strength, prediction strategies expanded into the weights / coreset they stand for."""
    checked = check_strategies(strategies)
    check_stops(checked, n_samples, min_distance)
    out = []
    for i, spec in enumerate(checked):
        where = f"strategies[{i}]"
        spec = dict(spec, strength=float(spec.get("strength", 1.0)))
        if spec["strategy"] in pred.STRATEGIES:
            out.extend(pred.expand(spec, where))
            continue
        spec["where"] = where
        if spec["strategy"] == "diversity" and spec.get("min_distance") is None:
            spec["min_distance"] = min_distance
        if "min_distance" in spec:
            spec["min_distance"] = float(spec["min_distance"])
        out.append(spec)
    return out


def _embeddings(inp: SelectionInput) -> np.ndarray:
    X = inp.embeddings
    if X is None:
        raise SamplerError("embeddings: required by an embedding strategy (coreset, diversity, typicality, similarity)")
    X = X if isinstance(X, np.ndarray) else np.asarray(X)  # a read-only memory map stays one (no copy)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0 or X.dtype.kind not in "fiu":
        raise SamplerError("embeddings: expected a non-empty (n, d) float array")
    return X if X.dtype == np.float32 else X.astype(np.float32)


def _check_finite(X: np.ndarray, rows: np.ndarray, name: str) -> None:
    step = max(1, (1 << 22) // X.shape[1])
    for s in range(0, len(rows), step):
        if not np.isfinite(X[rows[s : s + step]]).all():
            raise SamplerError(f"embeddings: NaN or infinite values in rows of {name}")
        drop_pages(X)


def effective_candidates(inp: SelectionInput) -> np.ndarray:
    """The candidate idx the scores of `select` are aligned with: candidates minus preselected."""
    cand = as_index("candidates", inp.candidates, None, sorted_unique=True)
    pre = np.unique(as_index("preselected", inp.preselected, None))
    return np.setdiff1d(cand, pre, assume_unique=True)


def select(
    inp: SelectionInput,
    strategies: list[dict],
    *,
    n_samples: int | None,
    min_distance: float | None = None,
    seed: int = 0,
    progress: Callable[[float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> np.ndarray:
    """Return float64 scores aligned with the effective candidates (`effective_candidates(inp)`),
    higher = more important; see the module docstring for what the scores mean and how a list of
    strategies combines. Raises SamplerError (message names the parameter) or Cancelled."""
    monitor = Monitor(progress, should_stop)
    monitor.check()
    specs = _parse(strategies, n_samples, min_distance)
    needs_x = any(STRATEGIES[s["strategy"]]["embeddings"] for s in specs)
    X = _embeddings(inp) if needs_x else None
    md = inp.metadata or {}
    if X is not None:
        n = len(X)
    elif md:
        n = len(np.asarray(next(iter(md.values()))))
    else:
        n = None
    cand = as_index("candidates", inp.candidates, n, sorted_unique=True)
    pre = np.unique(as_index("preselected", inp.preselected, n))
    eff = np.setdiff1d(cand, pre, assume_unique=True)
    if len(eff) == 0:
        raise SamplerError("candidates: no candidates left (empty, or all preselected)")
    if n_samples is not None:
        # A guard for direct callers: a run request had n_samples checked by its serializer (an integer >= 1) and
        # by services.prepare_run (at most the candidates).
        if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples <= 0:
            raise SamplerError("n_samples: must be a positive integer")
        if n_samples > len(eff):
            raise SamplerError(f"n_samples: {n_samples} is more than the {len(eff)} candidates")
        n_samples = int(n_samples)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise SamplerError("seed: must be an integer")
    query = None
    if any(s["strategy"] == "similarity" for s in specs):
        if inp.query is None or len(np.asarray(inp.query)) == 0:
            raise SamplerError("query: similarity needs a non-empty query tag")
        query = np.unique(as_index("query", inp.query, n))
    if X is not None:
        _check_finite(X, eff, "candidates")
        _check_finite(X, pre, "preselected")
        if query is not None:
            _check_finite(X, query, "query")
    for s in specs:
        if s["strategy"] == "similarity":
            s.setdefault("metric", "cosine")
        if "field" in s:
            col = meta.column(md, s["field"], s["where"], n)
            if s["strategy"] == "weights":
                s["values"] = meta.weight_values(col, s["field"], s["where"])
            elif s["strategy"] == "threshold":
                s["mask"] = meta.threshold_mask(col[eff], s["field"], s["where"], s["operation"], s["value"])
            else:
                s["codes"], names = meta.categories(col)
                s["shares"] = meta.balance_shares(s["target"], names, s["where"])
    if X is not None and len(eff) * X.shape[1] < SMALL_ELEMS:
        # Small inputs: starting BLAS/OpenMP threads costs more than it saves, and stalls on a busy host.
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            return _run(X, eff, pre, query, specs, n_samples, int(seed), monitor)
    return _run(X, eff, pre, query, specs, n_samples, int(seed), monitor)


def _run(X, eff, pre, query, specs, n_samples, seed, monitor) -> np.ndarray:
    m = len(eff)
    alive = np.ones(m, dtype=bool)
    for s in (s for s in specs if s["strategy"] == "threshold"):
        alive &= s["mask"]
    rest = [s for s in specs if s["strategy"] != "threshold"]
    pos = np.flatnonzero(alive)
    rows = eff[pos]
    if not rest:
        return alive.astype(np.float64)
    if len(pos) == 0:
        return np.zeros(m)
    monitor.check()
    if len(rest) == 1:
        sub = _single(X, rows, pre, query, rest[0], n_samples, seed, monitor)
    else:
        sub = _combined(X, rows, pre, query, rest, n_samples, seed, monitor)
    scores = np.full(m, below(sub))
    scores[pos] = sub
    monitor.phase(0.0, 1.0)
    monitor.tick(1.0)
    return scores


def _rank_scores(m: int, picks: np.ndarray, rest: np.ndarray | None) -> np.ndarray:
    """Picks score 1 + (k - i) / k in pick order; the rest their value / max, in [0, 1]."""
    out = np.zeros(m) if rest is None else np.asarray(rest, dtype=np.float64).copy()
    out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    hi = float(out.max()) if m else 0.0
    if hi > 0:
        out /= hi
    np.clip(out, 0.0, 1.0, out=out)
    k = len(picks)
    if k:
        out[picks] = 1.0 + (k - np.arange(k)) / k
    return out


def _single(X, rows, pre, query, s, n_samples, seed, monitor) -> np.ndarray:
    name, m = s["strategy"], len(rows)
    if name == "random":
        scores = np.empty(m)
        scores[np.random.default_rng(seed).permutation(m)] = 1.0 - np.arange(m) / m
        return scores
    if name in ("coreset", "diversity"):
        return kcenter.coreset_scores(
            X, rows, pre, n_samples, min_distance=s.get("min_distance"), seed=seed, monitor=monitor
        )
    if name == "auto":
        picks, final = auto_picks(X, rows, pre, n_samples, seed, monitor)
        return _rank_scores(m, picks, final)
    if name == "typicality":
        monitor.phase(0.0, 0.9)
        typ = Typicality(X, rows, pre, n_samples, seed, monitor)
        return _rank_scores(m, typ.pick_order(n_samples), typ.typicality)
    if name == "similarity":
        return similarity(X, rows, query, s["metric"], monitor)
    if name == "weights":
        values = s["values"][rows]
        missing = np.isnan(values)
        values[missing] = below(values[~missing])
        return values
    if name == "balance":
        codes, shares, already = _balance_codes(s, rows, pre)
        within = np.random.default_rng(seed).random(m)
        return _rank_scores(m, meta.apportion(codes, shares, within, already), None)
    raise AssertionError(name)


def _balance_codes(s, rows, pre):
    """Category code per row, target share per category, and the preselected count per category."""
    codes, shares = s["codes"], s["shares"]
    pre_codes = codes[pre]
    already = np.bincount(pre_codes[pre_codes >= 0], minlength=len(shares))
    return codes[rows], shares, already


def _combined(X, rows, pre, query, specs, n_samples, seed, monitor) -> np.ndarray:
    m = len(rows)
    by = {s["strategy"]: s for s in specs}
    rng = np.random.default_rng(seed)
    monitor.phase(0.0, 0.1)
    static = np.ones(m)
    for s in specs:
        name, power = s["strategy"], s["strength"]
        if name == "weights":
            f = meta.weight_factor(s["values"][rows])
        elif name == "similarity":
            f = similarity_factor(similarity(X, rows, query, s["metric"], monitor), s["metric"])
        elif name == "random":
            f = 1.0 - rng.random(m)
        else:
            continue
        static *= f**power
    div = by.get("coreset") or by.get("diversity")
    typ_spec = by.get("typicality")
    bal = by.get("balance")
    monitor.phase(0.1, 0.3)
    typ = None
    if typ_spec is not None:
        typ = Typicality(X, rows, pre, n_samples, seed, monitor)
        t = typ.typicality
        static *= (t / t.max() if t.max() > 0 else np.ones(m)) ** typ_spec["strength"]
    if bal is not None:
        codes, shares, already = _balance_codes(bal, rows, pre)
    if div is None and typ is None:
        # Only static objectives: the greedy loop reduces to a sort (and a balanced merge).
        if bal is None:
            return static
        return _rank_scores(m, meta.apportion(codes, shares, -static, already), None)

    monitor.phase(0.3, 1.0)
    stop_d = div.get("min_distance") if div is not None and div["strategy"] == "diversity" else None
    cap = n_samples if n_samples is not None else m
    kc = kcenter.KCenter(X, rows, pre) if div is not None else None
    dpow = div["strength"] if div is not None else 1.0
    has_centers = len(pre) > 0
    alive = np.ones(m, dtype=bool)
    state = None
    if bal is not None:
        state = meta.BalanceState(codes, shares, alive, bal["codes"][pre])
        shared = (codes >= 0) & (shares[np.maximum(codes, 0)] > 0) if len(shares) else np.zeros(m, bool)
    if typ is not None:
        n_cl = len(typ.members)
        cl_alive = np.bincount(typ.labels, minlength=n_cl)
    picks = []
    while len(picks) < cap:
        monitor.tick(len(picks) / cap)
        if kc is not None and stop_d is not None and has_centers:
            if float(kc.min_d2.max()) <= np.float32(stop_d) ** 2:
                break
        elig = alive
        if state is not None:
            cat = state.next_category()
            if cat is None:
                break
            elig = elig & ((codes == cat) if cat >= 0 else ~shared)
        if typ is not None:
            if state is not None:
                counts = np.bincount(typ.labels[elig], minlength=n_cl)
            else:
                counts = cl_alive
            ok = np.flatnonzero(counts > 0)
            if len(ok) == 0:
                break
            key = np.lexsort((ok, -typ.size[ok], typ.covered[ok], typ.size[ok] < MIN_CLUSTER_SIZE))
            c = int(ok[key[0]])
            elig = elig & (typ.labels == c)
        cand = np.flatnonzero(elig)
        if len(cand) == 0:
            break
        value = static[cand].copy()
        if kc is not None and has_centers:
            value *= np.sqrt(np.maximum(kc.min_d2[cand], 0.0), dtype=np.float64) ** dpow
        best = np.flatnonzero(value == value.max())
        j = int(cand[best[0]] if (has_centers or kc is None) else cand[rng.choice(best)])
        picks.append(j)
        alive[j] = False
        if kc is not None:
            kc.add(j)
            has_centers = True
        if state is not None:
            state.took(int(codes[j]), bool(shared[j]))
        if typ is not None:
            typ.covered[typ.labels[j]] += 1
            cl_alive[typ.labels[j]] -= 1
    final = static.copy()
    if kc is not None and has_centers:
        final *= kc.final_distances() ** dpow
    return _rank_scores(m, np.asarray(picks, dtype=np.int64), final)
