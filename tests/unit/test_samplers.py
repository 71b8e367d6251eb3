"""Samplers on plain arrays: the properties a user relies on when keeping the top K of a run."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from sampling.samplers import (
    STRATEGIES,
    Cancelled,
    SamplerError,
    SelectionInput,
    distributed_coreset,
    effective_candidates,
    merge_centers,
    ranking,
    select,
    shard_centers,
    shard_split,
)

EMPTY = np.zeros(0, dtype=np.int64)


def make_input(X, candidates=None, preselected=EMPTY, metadata=None, query=None):
    n = len(X) if X is not None else len(next(iter(metadata.values())))
    cand = np.arange(n, dtype=np.int64) if candidates is None else np.asarray(candidates, dtype=np.int64)
    return SelectionInput(
        embeddings=X,
        candidates=cand,
        preselected=np.asarray(preselected, dtype=np.int64),
        metadata=metadata or {},
        query=query,
    )


def top(scores, idx, k):
    return idx[ranking(scores, idx)[:k]]


def gaussian(n, d, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)


def naive_greedy(X, first_centers, k):
    """Textbook farthest-first traversal in float64 (the definition, not the fast path)."""
    X = X.astype(np.float64)
    d = np.full(len(X), np.inf)
    for c in first_centers:
        d = np.minimum(d, np.linalg.norm(X - X[c], axis=1))
    picks = []
    for _ in range(k):
        j = int(np.argmax(d))
        picks.append(j)
        d = np.minimum(d, np.linalg.norm(X - X[j], axis=1))
    return picks


def covering_radius(X, centers, points=None):
    X = X.astype(np.float64)
    P = X if points is None else X[points]
    diff = P[:, None, :] - X[list(centers)][None, :, :]
    return float(np.sqrt((diff**2).sum(-1)).min(axis=1).max())


# ---- coreset ------------------------------------------------------------------------------------


def test_coreset_top_k_is_the_greedy_coreset_for_every_k():
    X = gaussian(300, 8)
    idx = np.arange(300)
    full = select(make_input(X), [{"strategy": "coreset"}], n_samples=60, seed=3)
    order = top(full, idx, 60)
    # Same first pick, then the float64 textbook greedy must agree pick for pick.
    assert list(order[1:60]) == naive_greedy(X, [order[0]], 59)
    for k in (1, 2, 5, 17, 60):
        alone = select(make_input(X), [{"strategy": "coreset"}], n_samples=k, seed=3)
        assert list(top(alone, idx, k)) == list(order[:k])


def test_coreset_scores_are_finite_and_picks_strictly_above_the_rest_even_with_duplicates():
    base = gaussian(10, 3)
    X = np.repeat(base, 8, axis=0)  # every point 8 times: many exact ties
    idx = np.arange(len(X))
    scores = select(make_input(X), [{"strategy": "coreset"}], n_samples=25, seed=0)
    assert np.isfinite(scores).all()
    order = ranking(scores, idx)
    picked = scores[order[:25]]
    assert np.all(np.diff(picked) < 0)
    assert picked[-1] > scores[order[25:]].max()
    # The first ten picks are the ten distinct points; after that every distance is zero.
    assert len({tuple(X[i]) for i in order[:10]}) == 10
    for k in (3, 10, 11, 25):
        alone = select(make_input(X), [{"strategy": "coreset"}], n_samples=k, seed=0)
        assert list(top(alone, idx, k)) == list(order[:k])


def test_coreset_pruning_keeps_the_same_picks(monkeypatch):
    from sampling.samplers import kcenter

    rng = np.random.default_rng(1)
    centers = rng.normal(size=(40, 8)) * 10
    X = (centers[rng.integers(0, 40, 4000)] + rng.normal(size=(4000, 8))).astype(np.float32)
    pre = np.arange(0, 4000, 401)
    rows = np.setdiff1d(np.arange(4000), pre)
    kc = kcenter.KCenter(X, rows, pre)
    for _ in range(200):
        kc.add(kc.farthest())
    assert kc.sparse_picks > 100  # clustered data: the triangle-inequality bound does rule rows out
    pruned = kcenter.greedy(X, rows, pre, 200)
    monkeypatch.setattr(kcenter, "PRUNE_MAX", -1.0)
    full = kcenter.greedy(X, rows, pre, 200)
    assert np.array_equal(pruned[0], full[0])
    np.testing.assert_allclose(pruned[2], full[2], rtol=1e-4, atol=1e-4)
    assert [int(rows[i]) for i in pruned[0][:50]] == [int(rows[j]) for j in naive_greedy_from(X, pre, rows, 50)]


@settings(max_examples=25, deadline=None)
@given(
    points=hnp.arrays(
        np.float32, st.tuples(st.integers(4, 12), st.integers(1, 3)), elements=st.integers(-20, 20).map(float)
    ),
    k=st.integers(1, 4),
    seed=st.integers(0, 5),
)
def test_coreset_covering_radius_is_within_twice_the_optimum(points, k, seed):
    n = len(points)
    k = min(k, n)
    scores = select(make_input(points), [{"strategy": "coreset"}], n_samples=k, seed=seed)
    picks = top(scores, np.arange(n), k)
    greedy_r = covering_radius(points, picks)
    best = min(covering_radius(points, c) for c in itertools.combinations(range(n), k))
    assert greedy_r <= 2 * best + 1e-3


def test_coreset_is_deterministic_for_a_seed():
    X = gaussian(500, 16)
    a = select(make_input(X), [{"strategy": "coreset"}], n_samples=40, seed=7)
    b = select(make_input(X), [{"strategy": "coreset"}], n_samples=40, seed=7)
    assert np.array_equal(a, b)
    firsts = {
        int(top(select(make_input(X), [{"strategy": "coreset"}], n_samples=1, seed=s), np.arange(500), 1)[0])
        for s in range(5)
    }
    assert len(firsts) > 1  # the seed decides the first pick


def test_coreset_measures_distance_from_the_preselected_samples():
    X = gaussian(200, 4, seed=1)
    pre = np.array([3, 50, 120])
    inp = make_input(X, preselected=pre)
    eff = effective_candidates(inp)
    assert not np.isin(pre, eff).any() and len(eff) == 197
    scores = select(inp, [{"strategy": "coreset"}], n_samples=10, seed=0)
    assert len(scores) == len(eff)
    d_pre = np.linalg.norm(X[eff][:, None].astype(np.float64) - X[pre][None].astype(np.float64), axis=2).min(axis=1)
    order = ranking(scores, eff)
    assert eff[order[0]] == eff[np.argmax(d_pre)]
    assert scores[order[0]] == pytest.approx(d_pre.max(), rel=1e-4)
    assert [int(eff[i]) for i in order[:10]] == [int(eff[j]) for j in naive_greedy_from(X, pre, eff, 10)]


def naive_greedy_from(X, pre, eff, k):
    Xe = X[eff].astype(np.float64)
    d = np.linalg.norm(Xe[:, None] - X[pre][None].astype(np.float64), axis=2).min(axis=1)
    out = []
    for _ in range(k):
        j = int(np.argmax(d))
        out.append(j)
        d = np.minimum(d, np.linalg.norm(Xe - Xe[j], axis=1))
    return out


def test_coreset_only_scores_the_input_tag():
    X = gaussian(400, 6, seed=2)
    cand = np.sort(np.random.default_rng(0).choice(400, 150, replace=False))
    scores = select(make_input(X, candidates=cand), [{"strategy": "coreset"}], n_samples=20, seed=4)
    alone = select(make_input(X[cand]), [{"strategy": "coreset"}], n_samples=20, seed=4)
    assert scores.shape == (150,)
    np.testing.assert_allclose(scores, alone, rtol=1e-6)


# ---- diversity ----------------------------------------------------------------------------------


def test_diversity_stops_once_every_sample_is_within_min_distance():
    X = gaussian(600, 3, seed=5)
    md = 1.0
    scores = select(make_input(X), [{"strategy": "diversity", "min_distance": md}], n_samples=None, seed=0)
    picks = np.flatnonzero(scores > md)
    assert 5 < len(picks) < 600
    X64 = X.astype(np.float64)
    pairwise = np.linalg.norm(X64[picks][:, None] - X64[picks][None], axis=2)
    assert pairwise[np.triu_indices(len(picks), 1)].min() > md - 1e-5
    assert covering_radius(X, picks) <= md + 1e-5
    # n_samples caps it; the top-level min_distance is the default.
    capped = select(make_input(X), [{"strategy": "diversity"}], n_samples=3, min_distance=md, seed=0)
    assert list(top(capped, np.arange(600), 3)) == list(top(scores, np.arange(600), 3))
    assert np.sum(capped >= capped[top(capped, np.arange(600), 3)[-1]]) == 3


# ---- typicality ---------------------------------------------------------------------------------


def long_tail_mixture():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(7, 8)) * 30
    sizes = [600, 15, 15, 15, 15, 15, 15]
    spreads = [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    X = np.concatenate([c + s * rng.normal(size=(n, 8)) for c, n, s in zip(centers, sizes, spreads)])
    labels = np.repeat(np.arange(7), sizes)
    return X.astype(np.float32), labels


def test_typicality_covers_the_long_tail_where_plain_density_does_not():
    X, labels = long_tail_mixture()
    idx = np.arange(len(X))
    scores = select(make_input(X), [{"strategy": "typicality"}], n_samples=7, seed=0)
    typical = labels[top(scores, idx, 7)]
    X64 = X.astype(np.float64)
    d = np.sort(np.linalg.norm(X64[:, None] - X64[None], axis=2), axis=1)[:, 1:21]
    dense = labels[np.argsort(-1.0 / d.mean(axis=1), kind="stable")[:7]]
    assert len(set(typical)) >= 6
    assert len(set(dense)) <= 2
    assert labels[top(scores, idx, 1)[0]] == 0  # the largest cluster first


@pytest.fixture
def sampled_clustering(monkeypatch):
    """Typicality's large-data path (k-means on a sample, then assignment in blocks) at small n."""
    from sampling.samplers import typicality

    monkeypatch.setattr(typicality, "FULL_KMEANS_MAX", 100)
    monkeypatch.setattr(typicality, "FIT_ROWS", 200)
    monkeypatch.setattr(typicality, "FIT_PER_CLUSTER", 20)
    monkeypatch.setattr(typicality, "_CHUNK_ELEMS", 64)  # many small blocks
    return typicality


def test_typicality_sampled_path_still_covers_the_long_tail(sampled_clustering):
    X, labels = long_tail_mixture()  # 690 rows: fitted on 200 of them
    idx = np.arange(len(X))
    scores = select(make_input(X), [{"strategy": "typicality"}], n_samples=7, seed=0)
    assert len(set(labels[top(scores, idx, 7)])) >= 6
    assert labels[top(scores, idx, 1)[0]] == 0


def test_typicality_sampled_path_picks_one_per_well_separated_cluster(sampled_clustering):
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(10, 16)) * 50
    labels = np.repeat(np.arange(10), 60)
    X = (centers[labels] + rng.normal(size=(600, 16))).astype(np.float32)
    typ = sampled_clustering.Typicality(X, np.arange(600), EMPTY, 10, seed=1)
    assert len(np.unique(typ.labels)) == 10
    for c in range(10):  # the clusters are the true ones
        assert len(np.unique(labels[typ.labels == c])) == 1
    picks = typ.pick_order(10)
    assert sorted(labels[picks].tolist()) == list(range(10))


def test_typicality_assignment_in_blocks_matches_kmeans_labels(sampled_clustering):
    X = gaussian(300, 5, seed=4)
    km = sampled_clustering.kmeans(X, 12, seed=0)
    got = sampled_clustering.assign(X, np.arange(300), np.zeros(5, np.float32), km.cluster_centers_)
    assert np.array_equal(got, km.labels_)


def test_typicality_fits_every_row_up_to_the_threshold_and_a_sample_past_it():
    from sampling.samplers import typicality

    assert typicality.fit_rows(typicality.FULL_KMEANS_MAX, 1000) == typicality.FULL_KMEANS_MAX
    assert typicality.fit_rows(1_000_000, 1000) == max(typicality.FIT_ROWS, 1000 * typicality.FIT_PER_CLUSTER)
    assert typicality.fit_rows(60_000, 1000) == min(60_000, max(typicality.FIT_ROWS, 1000 * typicality.FIT_PER_CLUSTER))
    assert typicality.fit_rows(typicality.FULL_KMEANS_MAX + 1, 2) == typicality.FIT_ROWS


def test_typicality_counts_preselected_samples_on_the_sampled_path(sampled_clustering):
    rng = np.random.default_rng(5)
    centers = rng.normal(size=(4, 8)) * 40
    labels = np.repeat(np.arange(4), 100)
    X = (centers[labels] + rng.normal(size=(400, 8))).astype(np.float32)
    pre = np.flatnonzero(labels == 0)[:3]  # cluster 0 is already covered
    scores = select(make_input(X, preselected=pre), [{"strategy": "typicality"}], n_samples=3, seed=0)
    eff = np.setdiff1d(np.arange(400), pre)
    assert sorted(labels[top(scores, eff, 3)].tolist()) == [1, 2, 3]


# ---- memory-mapped matrices ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "strategies,kw",
    [
        ([{"strategy": "coreset"}], {"n_samples": 40}),
        ([{"strategy": "diversity", "min_distance": 2.5}], {"n_samples": None}),
        ([{"strategy": "typicality"}], {"n_samples": 8}),
        ([{"strategy": "similarity", "metric": "euclidean"}], {"n_samples": None}),
        ([{"strategy": "random"}], {"n_samples": None}),
        ([{"strategy": "coreset"}, {"strategy": "typicality"}], {"n_samples": 10}),
    ],
)
def test_a_read_only_memory_map_gives_exactly_the_scores_of_the_array(tmp_path, strategies, kw, monkeypatch):
    from sampling.samplers import typicality

    monkeypatch.setattr(typicality, "FULL_KMEANS_MAX", 100)  # the sampled path too
    X = gaussian(500, 6, seed=7)
    np.save(tmp_path / "m.npy", X)
    M = np.load(tmp_path / "m.npy", mmap_mode="r")
    args = dict(candidates=np.arange(20, 480), preselected=[3, 30], query=np.array([5, 6]))
    on_array = select(make_input(X, **args), strategies, seed=2, **kw)
    on_map = select(make_input(M, **args), strategies, seed=2, **kw)
    assert np.array_equal(on_array, on_map)
    assert np.array_equal(M, X)  # read, never written


def test_drop_pages_is_harmless_on_arrays_maps_and_views(tmp_path):
    from sampling.samplers.base import drop_pages

    X = gaussian(50, 4)
    np.save(tmp_path / "m.npy", X)
    M = np.load(tmp_path / "m.npy", mmap_mode="r")
    for a in (X, M, M[5:], np.asarray(M)):
        drop_pages(a)
    assert np.array_equal(M, X) and np.array_equal(np.asarray(M)[5:], X[5:])


# ---- similarity ---------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_similarity_ranks_the_query_neighbours_first(metric):
    X = gaussian(300, 5, seed=8) + 3.0
    query = np.array([10, 20])
    cand = np.setdiff1d(np.arange(300), query)
    scores = select(
        make_input(X, candidates=cand, query=query), [{"strategy": "similarity", "metric": metric}], n_samples=None
    )
    X64 = X.astype(np.float64)
    if metric == "cosine":
        U = X64 / np.linalg.norm(X64, axis=1, keepdims=True)
        truth = (U[cand] @ U[query].T).max(axis=1)
    else:
        truth = -np.linalg.norm(X64[cand][:, None] - X64[query][None], axis=2).min(axis=1)
    assert list(top(scores, cand, 15)) == list(cand[np.argsort(-truth, kind="stable")[:15]])


# ---- metadata strategies ------------------------------------------------------------------------


def weather(n=400, seed=0):
    rng = np.random.default_rng(seed)
    kinds = np.array(["sunny"] * 280 + ["rainy"] * 80 + ["foggy"] * 40, dtype=object)[:n]
    rng.shuffle(kinds)
    kinds[5] = None
    return kinds


@pytest.mark.parametrize("extra", [[], [{"strategy": "coreset"}], [{"strategy": "weights", "field": "w"}]])
def test_balance_hits_the_target_proportions(extra):
    kinds = weather()
    md = {"weather.scenario": kinds, "w": np.random.default_rng(1).random(400)}
    X = gaussian(400, 4)
    idx = np.arange(400)
    strategies = [{"strategy": "balance", "field": "weather.scenario", "target": {"rainy": 0.5, "sunny": 0.5}}]
    scores = select(make_input(X, metadata=md), strategies + extra, n_samples=100, seed=0)
    picked = kinds[top(scores, idx, 100)]
    assert sum(picked == "rainy") == 50 and sum(picked == "sunny") == 50
    uniform = [{"strategy": "balance", "field": "weather.scenario", "target": "uniform"}]
    scores = select(make_input(X, metadata=md), uniform + extra, n_samples=90, seed=0)
    for k in (30, 90):
        picked = list(kinds[top(scores, idx, k)])
        assert [picked.count(c) for c in ("foggy", "rainy", "sunny")] == [k // 3] * 3


def test_balance_counts_the_preselected_samples():
    kinds = weather()
    pre = np.flatnonzero(kinds == "rainy")[:20]
    inp = make_input(None, preselected=pre, metadata={"s": kinds})
    scores = select(
        inp, [{"strategy": "balance", "field": "s", "target": {"rainy": 0.5, "sunny": 0.5}}], n_samples=None
    )
    eff = effective_candidates(inp)
    first = list(kinds[top(scores, eff, 20)])
    assert first.count("sunny") == 20  # sunny catches up with the 20 rainy already selected


@pytest.mark.parametrize(
    "operation,value,expected",
    [
        ("gt", 0.5, lambda v: v > 0.5),
        ("ge", 0.5, lambda v: v >= 0.5),
        ("lt", 0.25, lambda v: v < 0.25),
        ("le", 0.25, lambda v: v <= 0.25),
        ("eq", 1.0, lambda v: v == 1.0),
    ],
)
def test_threshold_filters_the_candidates(operation, value, expected):
    v = np.round(np.random.default_rng(3).random(300) * 4) / 4
    v[7] = np.nan
    X = gaussian(300, 4)
    idx = np.arange(300)
    passing = np.flatnonzero(expected(v) & ~np.isnan(v))
    for extra in ([], [{"strategy": "coreset"}]):
        strategies = [{"strategy": "threshold", "field": "x", "operation": operation, "value": value}] + extra
        scores = select(make_input(X, metadata={"x": v}), strategies, n_samples=5, seed=0)
        assert set(top(scores, idx, len(passing))) == set(passing)
        assert scores[passing].min() > np.delete(scores, passing).max()


def test_threshold_eq_on_a_category_and_weights_order():
    kinds = weather()
    w = np.linspace(0, 1, 400)
    w[kinds == None] = np.nan  # noqa: E711 (object array comparison)
    md = {"s": kinds, "w": w}
    scores = select(
        make_input(None, metadata=md),
        [
            {"strategy": "threshold", "field": "s", "operation": "eq", "value": "foggy"},
            {"strategy": "weights", "field": "w"},
        ],
        n_samples=None,
    )
    idx = np.arange(400)
    foggy = np.flatnonzero(kinds == "foggy")
    assert list(top(scores, idx, 40)) == list(foggy[::-1])
    weights = select(make_input(None, metadata=md), [{"strategy": "weights", "field": "w"}], n_samples=None)
    assert top(weights, idx, 1)[0] == 399 and ranking(weights, idx)[-1] == 5  # missing weight last


def test_random_is_a_seeded_permutation():
    idx = np.arange(50)
    a = select(make_input(None, metadata={"x": np.zeros(50)}), [{"strategy": "random"}], n_samples=None, seed=1)
    b = select(make_input(None, metadata={"x": np.zeros(50)}), [{"strategy": "random"}], n_samples=None, seed=1)
    c = select(make_input(None, metadata={"x": np.zeros(50)}), [{"strategy": "random"}], n_samples=None, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert len(np.unique(a)) == 50 and list(top(a, idx, 50)) != list(idx)


# ---- combinations ------------------------------------------------------------------------------


def test_coreset_with_weights_prefers_heavy_samples_among_far_ones():
    X = gaussian(300, 2, seed=4)
    w = np.ones(300)
    w[:150] = 0.01
    scores = select(
        make_input(X, metadata={"w": w}),
        [{"strategy": "coreset"}, {"strategy": "weights", "field": "w"}],
        n_samples=20,
        seed=0,
    )
    picks = top(scores, np.arange(300), 20)
    assert np.sum(picks >= 150) >= 18
    assert scores[picks].min() > np.delete(scores, picks).max()


def test_typicality_with_similarity_stays_near_the_query():
    X, labels = long_tail_mixture()
    query = np.flatnonzero(labels == 3)[:2]
    inp = make_input(X, candidates=np.setdiff1d(np.arange(len(X)), query), query=query)
    eff = effective_candidates(inp)
    scores = select(
        inp,
        [{"strategy": "typicality"}, {"strategy": "similarity", "metric": "euclidean", "strength": 4}],
        n_samples=10,
        seed=0,
    )
    assert len(scores) == len(eff) and np.isfinite(scores).all()
    assert len(set(labels[top(scores, eff, 10)])) >= 6  # typicality still spreads over the clusters


# ---- sharded coreset ---------------------------------------------------------------------------


def test_sharded_coreset_covers_nearly_as_well_as_one_run():
    X = gaussian(2000, 4, seed=9)
    pre = np.array([1, 2])
    cand = np.arange(2000)
    single = select(make_input(X, preselected=pre), [{"strategy": "coreset"}], n_samples=30, seed=0)
    eff = np.setdiff1d(cand, pre)
    shards = shard_split(eff, 4)
    assert sorted(np.concatenate(shards)) == list(eff)
    union = np.sort(np.concatenate([shard_centers(X, s, 30, pre) for s in shards]))
    assert len(union) == 120 and not np.isin(pre, union).any()
    merged = merge_centers(X, union, 30, pre, cand)
    assert np.array_equal(merged, distributed_coreset(X, cand, pre, 30, 4))
    picks = top(merged, eff, 30)
    assert np.isin(picks, union).all() and merged.shape == eff.shape
    r_single = covering_radius(X, np.concatenate([pre, top(single, eff, 30)]), eff)
    r_sharded = covering_radius(X, np.concatenate([pre, picks]), eff)
    assert r_sharded <= 4 * r_single


# ---- errors, cancellation, progress -----------------------------------------------------------

X_SMALL = gaussian(20, 3)
MD = {"x": np.arange(20, dtype=float), "s": np.array(["a", "b"] * 10, dtype=object)}


@pytest.mark.parametrize(
    "inp,strategies,kwargs,names",
    [
        (dict(), [{"strategy": "nope"}], {}, "strategies[0].strategy"),
        (dict(), [], {}, "strategies"),
        (dict(), [{"strategy": "coreset", "k": 3}], {}, "strategies[0].k"),
        (dict(), [{"strategy": "weights"}], {}, "strategies[0].field"),
        (dict(), [{"strategy": "weights", "field": "missing"}], {}, "strategies[0].field"),
        (dict(), [{"strategy": "weights", "field": "s"}], {}, "strategies[0].field"),
        (dict(), [{"strategy": "coreset"}], {"n_samples": 0}, "n_samples"),
        (dict(), [{"strategy": "coreset"}], {"n_samples": 21}, "n_samples"),
        (dict(), [{"strategy": "coreset"}], {"n_samples": None}, "n_samples"),
        (dict(embeddings=None), [{"strategy": "coreset"}], {}, "embeddings"),
        (dict(nan=True), [{"strategy": "coreset"}], {}, "embeddings"),
        (dict(), [{"strategy": "diversity"}], {}, "min_distance"),
        (dict(), [{"strategy": "diversity", "min_distance": -1}], {}, "min_distance"),
        (dict(), [{"strategy": "similarity"}], {}, "query"),
        (dict(), [{"strategy": "similarity", "metric": "manhattan"}], {"query": True}, "metric"),
        (dict(), [{"strategy": "threshold", "field": "x", "operation": "ne", "value": 1}], {}, "operation"),
        (dict(), [{"strategy": "threshold", "field": "x", "operation": "gt", "value": "a"}], {}, "value"),
        (dict(), [{"strategy": "balance", "field": "s", "target": "skewed"}], {}, "target"),
        (dict(), [{"strategy": "balance", "field": "s", "target": {"a": -1}}], {}, "target"),
        (dict(), [{"strategy": "coreset", "strength": 0}], {}, "strength"),
        (dict(), [{"strategy": "coreset"}, {"strategy": "diversity", "min_distance": 1}], {}, "strategies"),
        (dict(candidates=[3, 1]), [{"strategy": "random"}], {}, "candidates"),
        (dict(candidates=[1, 99]), [{"strategy": "random"}], {}, "candidates"),
        (dict(preselected=list(range(20))), [{"strategy": "random"}], {}, "candidates"),
        (dict(preselected=[-1]), [{"strategy": "random"}], {}, "preselected"),
        (dict(), [{"strategy": "random"}], {"seed": 1.5}, "seed"),
    ],
)
def test_bad_parameters_raise_a_sampler_error_naming_the_parameter(inp, strategies, kwargs, names):
    X = X_SMALL.copy()
    if inp.pop("nan", False):
        X[4, 1] = np.nan
    fields = dict(embeddings=X, candidates=np.arange(20), preselected=EMPTY, metadata=MD)
    fields.update({k: (np.asarray(v) if isinstance(v, list) else v) for k, v in inp.items()})
    query = np.array([0]) if kwargs.pop("query", False) else None
    kwargs.setdefault("n_samples", 5)
    with pytest.raises(SamplerError) as err:
        select(SelectionInput(query=query, **fields), strategies, **kwargs)
    assert names in str(err.value)


def test_should_stop_cancels_the_run():
    X = gaussian(2000, 8)
    with pytest.raises(Cancelled):
        select(make_input(X), [{"strategy": "coreset"}], n_samples=100, should_stop=lambda: True)
    calls = []

    def stop_on_second_poll():
        calls.append(1)
        return len(calls) >= 2

    with pytest.raises(Cancelled):
        select(make_input(X), [{"strategy": "coreset"}], n_samples=100, should_stop=stop_on_second_poll)


@pytest.mark.parametrize("strategy", [{"strategy": "coreset"}, {"strategy": "typicality"}])
def test_progress_is_reported_at_most_about_a_hundred_times(strategy):
    seen = []
    select(make_input(gaussian(1500, 4)), [strategy], n_samples=300, progress=seen.append)
    assert 2 <= len(seen) <= 101
    assert seen == sorted(seen) and seen[-1] == 1.0


def test_ranking_breaks_ties_by_ascending_idx():
    scores = np.array([1.0, 2.0, 1.0, 2.0])
    idx = np.array([40, 30, 20, 10])
    assert list(idx[ranking(scores, idx)]) == [10, 30, 20, 40]


def test_strategies_lists_every_strategy():
    assert set(STRATEGIES) == {
        "auto",
        "random",
        "coreset",
        "diversity",
        "typicality",
        "similarity",
        "weights",
        "threshold",
        "balance",
        "uncertainty",
        "coral",
    }
