"""The `auto` strategy on plain arrays: what a curator relies on when keeping its top K."""

from __future__ import annotations

import numpy as np
import pytest

from sampling.samplers import Cancelled, SamplerError, SelectionInput, ranking, select
from sampling.samplers import auto as auto_mod

EMPTY = np.zeros(0, dtype=np.int64)


def make_input(X, preselected=EMPTY, candidates=None):
    n = len(X)
    cand = np.arange(n, dtype=np.int64) if candidates is None else np.asarray(candidates, dtype=np.int64)
    return SelectionInput(embeddings=X, candidates=cand, preselected=np.asarray(preselected, dtype=np.int64))


def top(scores, idx, k):
    return idx[ranking(scores, idx)[:k]]


def planted(sizes, d=8, spread=1.0, gap=30.0, seed=0, outliers=0):
    """Well-separated gaussian clusters of the given sizes, plus far-away single outliers."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(len(sizes), d)) * gap
    labels = np.repeat(np.arange(len(sizes)), sizes)
    X = centers[labels] + spread * rng.normal(size=(len(labels), d))
    if outliers:
        far = rng.normal(size=(outliers, d)) * gap * 4
        X = np.concatenate([X, far])
        labels = np.concatenate([labels, np.full(outliers, -1)])
    return X.astype(np.float32), labels


def test_auto_spreads_the_first_picks_over_every_planted_cluster_long_tail_included():
    X, labels = planted([400, 200, 100, 50, 25, 12, 6])
    idx = np.arange(len(X))
    scores = select(make_input(X), [{"strategy": "auto"}], n_samples=7, seed=0)
    assert sorted(labels[top(scores, idx, 7)].tolist()) == list(range(7))


def test_auto_first_pick_is_the_most_typical_sample_of_the_densest_region():
    X, labels = planted([300, 30, 30], seed=1)
    scores = select(make_input(X), [{"strategy": "auto"}], n_samples=3, seed=0)
    first = top(scores, np.arange(len(X)), 1)[0]
    assert labels[first] == 0
    typ = auto_mod.typicality(X, np.arange(len(X)), np.arange(len(X)))
    assert first == int(np.argmax(typ))


def test_auto_holds_outliers_back_where_coreset_takes_them_first():
    X, labels = planted([200, 200, 200], seed=2, outliers=5)
    idx = np.arange(len(X))
    auto = labels[top(select(make_input(X), [{"strategy": "auto"}], n_samples=6, seed=0), idx, 6)]
    core = labels[top(select(make_input(X), [{"strategy": "coreset"}], n_samples=6, seed=0), idx, 6)]
    assert {0, 1, 2} <= set(auto.tolist()) and np.sum(auto == -1) <= 3
    assert np.sum(core == -1) >= 4  # the farthest points are the outliers


def test_auto_is_deterministic_for_a_seed_and_its_top_k_is_the_run_for_k():
    X = np.random.default_rng(3).normal(size=(500, 6)).astype(np.float32)
    idx = np.arange(len(X))
    a = select(make_input(X), [{"strategy": "auto"}], n_samples=120, seed=4)
    b = select(make_input(X), [{"strategy": "auto"}], n_samples=120, seed=4)
    assert np.array_equal(a, b)
    small = select(make_input(X), [{"strategy": "auto"}], n_samples=15, seed=4)
    assert np.array_equal(top(a, idx, 15), top(small, idx, 15))


def test_auto_scores_rank_the_picks_first_in_pick_order_then_the_rest():
    X = np.random.default_rng(5).normal(size=(300, 4)).astype(np.float32)
    scores = select(make_input(X), [{"strategy": "auto"}], n_samples=20, seed=0)
    assert np.all(np.isfinite(scores))
    assert np.sum(scores > 1.0) == 20 and np.all(scores <= 2.0)
    rest = scores[scores <= 1.0]
    assert rest.min() >= 0.0 and len(np.unique(scores[scores > 1.0])) == 20


def test_auto_does_not_depend_on_the_scale_of_the_embeddings():
    X = np.random.default_rng(6).normal(size=(400, 5)).astype(np.float32)
    idx = np.arange(len(X))
    a = select(make_input(X), [{"strategy": "auto"}], n_samples=30, seed=0)
    b = select(make_input(X * 1000), [{"strategy": "auto"}], n_samples=30, seed=0)
    assert np.array_equal(top(a, idx, 30), top(b, idx, 30))


def test_auto_counts_the_preselected_samples_as_covered():
    X, labels = planted([100, 100, 100, 100], seed=7)
    pre = np.flatnonzero(labels <= 1)[::50]  # clusters 0 and 1 already have labels
    eff = np.setdiff1d(np.arange(len(X)), pre)
    scores = select(make_input(X, preselected=pre), [{"strategy": "auto"}], n_samples=2, seed=0)
    assert sorted(labels[top(scores, eff, 2)].tolist()) == [2, 3]


def test_auto_reference_path_matches_the_planted_structure_and_is_seeded(monkeypatch):
    """Past EXACT_ROWS: typicality against a reference sample, searched within clusters."""
    monkeypatch.setattr(auto_mod, "EXACT_ROWS", 300)
    monkeypatch.setattr(auto_mod, "REF_PER_CLUSTER", 50)
    monkeypatch.setattr(auto_mod, "_CHUNK_ELEMS", 256)  # many small blocks
    X, labels = planted([500, 250, 120, 60, 30], seed=8)
    idx = np.arange(len(X))
    a = select(make_input(X), [{"strategy": "auto"}], n_samples=5, seed=1)
    b = select(make_input(X), [{"strategy": "auto"}], n_samples=5, seed=1)
    assert np.array_equal(a, b)
    assert sorted(labels[top(a, idx, 5)].tolist()) == [0, 1, 2, 3, 4]
    typ = auto_mod.typicality(X, idx, idx, seed=1)
    assert np.all(np.isfinite(typ)) and np.all(typ > 0)
    # denser clusters (same spread, more members) are more typical on average
    means = [typ[labels == c].mean() for c in range(5)]
    assert means[0] > means[-1]


def test_alpha_goes_from_two_to_one_as_the_picks_grow():
    assert auto_mod.alpha_at(0) == auto_mod.alpha_at(auto_mod.ALPHA_FROM) == 2.0
    assert 1.0 < auto_mod.alpha_at(200) < 2.0
    assert auto_mod.alpha_at(auto_mod.ALPHA_TO) == auto_mod.alpha_at(10**6) == 1.0


@pytest.mark.parametrize(
    "strategies,kwargs,name",
    [
        ([{"strategy": "auto"}], {"n_samples": None}, "n_samples"),
        ([{"strategy": "auto"}, {"strategy": "coreset"}], {"n_samples": 3}, "strategies"),
        ([{"strategy": "auto", "strength": 2}], {"n_samples": 3}, "strength"),
    ],
)
def test_auto_bad_requests_name_the_parameter(strategies, kwargs, name):
    X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    with pytest.raises(SamplerError, match=name):
        select(make_input(X), strategies, **kwargs)


def test_auto_with_a_threshold_only_picks_samples_that_pass():
    X = np.random.default_rng(9).normal(size=(200, 4)).astype(np.float32)
    inp = make_input(X)
    inp.metadata = {"w": np.arange(200, dtype=np.float64)}
    scores = select(
        inp,
        [{"strategy": "auto"}, {"strategy": "threshold", "field": "w", "operation": "ge", "value": 100}],
        n_samples=10,
    )
    assert np.all(top(scores, np.arange(200), 10) >= 100)


def test_auto_can_be_cancelled_and_reports_progress():
    X = np.random.default_rng(1).normal(size=(400, 4)).astype(np.float32)
    seen = []
    select(make_input(X), [{"strategy": "auto"}], n_samples=50, progress=seen.append)
    assert seen[-1] == 1.0 and len(seen) <= 102 and seen == sorted(seen)
    with pytest.raises(Cancelled):
        select(make_input(X), [{"strategy": "auto"}], n_samples=50, should_stop=lambda: True)


def test_auto_with_exact_duplicates_still_spreads_and_scores_finitely():
    X, labels = planted([100, 100, 100], seed=10)
    X[:60] = X[0]  # sixty copies of one sample of cluster 0
    idx = np.arange(len(X))
    scores = select(make_input(X), [{"strategy": "auto"}], n_samples=5, seed=0)
    assert np.all(np.isfinite(scores))
    picked = top(scores, idx, 5)
    assert {0, 1, 2} <= set(labels[picked].tolist())
    assert np.sum(picked < 60) <= 1  # one copy is enough


def test_auto_on_a_single_candidate():
    X = np.ones((1, 3), dtype=np.float32)
    assert select(make_input(X), [{"strategy": "auto"}], n_samples=1).tolist() == [2.0]


def with_burst(seed=11, burst=40):
    """Three planted clusters; cluster 2 (sparse, 30 samples) also holds a burst of `burst` near-identical frames."""
    X, labels = planted([300, 150, 30], spread=1.0, seed=seed)
    rng = np.random.default_rng(seed)
    frame = X[labels == 2][0]
    copies = frame + 0.01 * rng.normal(size=(burst, X.shape[1]))
    return np.concatenate([X, copies.astype(np.float32)]), np.concatenate([labels, np.full(burst, 3)])


def test_near_duplicate_groups_gather_a_burst_and_leave_the_spread_samples_alone():
    X, labels = with_burst()
    R = X - X.mean(axis=0)
    radius = auto_mod.near_duplicate_radius(R, auto_mod.K_NN, seed=0)
    groups = auto_mod.near_duplicate_groups(R, radius)
    burst = groups[labels == 3]
    assert len(np.unique(burst)) == 1
    others = groups[labels != 3]
    assert np.sum(np.isin(others, burst)) <= 1  # the burst's source frame may join it
    rest = others[~np.isin(others, burst)]
    sizes = np.bincount(rest)
    assert sizes.max() <= 2 and np.sum(sizes == 1) >= 0.95 * len(rest)  # spread samples: (almost) all alone


def test_a_burst_of_near_duplicates_counts_once_in_typicality_so_auto_starts_in_the_dense_cluster():
    X, labels = with_burst()
    idx = np.arange(len(X))
    typ = auto_mod.typicality(X, idx, idx)
    # without the grouping the burst frames would be the densest samples by far
    assert typ[labels == 3].max() < typ[labels == 0].max()
    scores = select(make_input(X), [{"strategy": "auto"}], n_samples=3, seed=0)
    picked = top(scores, idx, 3)
    assert labels[picked[0]] == 0
    assert np.sum(np.isin(labels[picked], [2, 3])) == 1  # the sparse cluster and its burst: one pick


def test_without_near_duplicates_typicality_is_one_over_the_mean_distance_to_the_nearest_samples():
    grid = np.stack(np.meshgrid(*[np.arange(7)] * 3), axis=-1).reshape(-1, 3)  # no two samples nearly alike
    X = (grid + 0.05 * np.random.default_rng(12).normal(size=grid.shape)).astype(np.float32)
    idx = np.arange(len(X))
    R = X - X.mean(axis=0)
    groups = auto_mod.near_duplicate_groups(R, auto_mod.near_duplicate_radius(R, auto_mod.K_NN, seed=0))
    assert len(np.unique(groups)) == len(X)
    D = np.sqrt(((R[:, None].astype(np.float64) - R[None]) ** 2).sum(-1))
    np.fill_diagonal(D, np.inf)
    mean = np.sort(D, axis=1)[:, : auto_mod.K_NN].mean(axis=1)
    assert np.allclose(auto_mod.typicality(X, idx, idx), auto_mod._inverse(mean), rtol=1e-4)


def test_reference_path_counts_a_burst_once_too(monkeypatch):
    monkeypatch.setattr(auto_mod, "EXACT_ROWS", 400)
    monkeypatch.setattr(auto_mod, "REF_PER_CLUSTER", 100)
    X, labels = with_burst(seed=13, burst=300)
    idx = np.arange(len(X))
    typ = auto_mod.typicality(X, idx, idx, seed=2)
    assert np.all(np.isfinite(typ)) and np.all(typ > 0)
    assert typ[labels == 3].max() < typ[labels == 0].max()
