"""curation.knn against brute-force references, with plain arrays (no database)."""

from __future__ import annotations

import numpy as np
import pytest

from curation import knn


def brute(X, covered, Q, metric):
    rows = np.flatnonzero(covered)
    A = X[rows].astype(np.float64)
    Qd = np.atleast_2d(Q).astype(np.float64)
    if metric == "cosine":
        A = A / np.linalg.norm(A, axis=1, keepdims=True)
        Qd = Qd / np.linalg.norm(Qd, axis=1, keepdims=True)
        d = 1.0 - A @ Qd.T
    else:
        d = np.linalg.norm(A[:, None, :] - Qd[None, :, :], axis=2)
    return rows, d.min(axis=1)


@pytest.mark.parametrize("metric", knn.METRICS)
@pytest.mark.parametrize("n_queries", [1, 7])
def test_search_matches_brute_force_in_order(metric, n_queries):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(1000, 16)).astype(np.float32) + 5.0  # offset: euclidean must not lose precision
    covered = rng.random(1000) > 0.2
    Q = rng.normal(size=(n_queries, 16)).astype(np.float32) + 5.0
    idx, dist = knn.nearest_to_queries(X, covered, Q, k=50, metric=metric, block_rows=97)
    rows, ref = brute(X, covered, Q, metric)
    order = np.lexsort((rows, ref))[:50]
    np.testing.assert_array_equal(idx, rows[order])
    np.testing.assert_allclose(dist, ref[order], rtol=1e-4, atol=1e-4)
    assert np.all(covered[idx])


def test_search_ties_are_broken_by_idx_and_k_above_n():
    X = np.zeros((10, 4), dtype=np.float32)
    X[5:] = 1.0
    covered = np.ones(10, dtype=bool)
    idx, dist = knn.nearest_to_queries(X, covered, np.zeros(4), k=100, block_rows=3)
    np.testing.assert_array_equal(idx, np.arange(10))
    np.testing.assert_allclose(dist, [0] * 5 + [2] * 5)


def test_planted_duplicates_are_grouped():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(600, 32)).astype(np.float32)
    planted = {7: [300, 451], 12: [13], 500: [599]}
    for src, copies in planted.items():
        for c in copies:
            X[c] = X[src] + rng.normal(scale=0.01, size=32)
    covered = np.ones(600, dtype=bool)
    nn = knn.nearest_neighbour_distances(X, covered, sample_size=600, block_rows=128)
    threshold = knn.suggest_threshold(nn)
    i, j, d = knn.threshold_pairs(X, covered, threshold, block_rows=100)
    assert np.all(i < j) and np.all(d <= threshold)
    groups = knn.groups_from_pairs(600, i, j)
    assert [g.tolist() for g in groups] == [[7, 300, 451], [12, 13], [500, 599]]


def test_threshold_pairs_match_brute_force():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 8)).astype(np.float32)
    covered = rng.random(300) > 0.1
    t = 2.0
    i, j, _d = knn.threshold_pairs(X, covered, t, block_rows=64)
    rows = np.flatnonzero(covered)
    full = np.linalg.norm(X[rows][:, None] - X[rows][None], axis=2)
    a, b = np.nonzero(np.triu(full <= t, 1))
    assert sorted(zip(i.tolist(), j.tolist(), strict=True)) == sorted(
        zip(rows[a].tolist(), rows[b].tolist(), strict=True)
    )


def test_too_many_pairs_is_refused():
    X = np.zeros((50, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="threshold is far too high"):
        knn.threshold_pairs(X, np.ones(50, dtype=bool), 1.0, max_pairs=100)


def clustered(n, d, seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(12, d))
    return (centres[rng.integers(0, 12, n)] + rng.normal(size=(n, d))).astype(np.float32)


def brute_pairs(X, covered, t, metric):
    rows = np.flatnonzero(covered)
    A = X[rows].astype(np.float64)
    if metric == "cosine":
        A = A / np.linalg.norm(A, axis=1, keepdims=True)
        full = 1.0 - A @ A.T
    else:
        full = np.linalg.norm(A[:, None] - A[None], axis=2)
    a, b = np.nonzero(np.triu(full <= t, 1))
    return rows[a], rows[b]


@pytest.fixture
def cells_always(monkeypatch):
    """Small test sets would have every pair compared (cheaper there): force the cells."""
    monkeypatch.setattr(knn, "CELL_PAIR_COST", 0.0)


@pytest.mark.usefixtures("cells_always")
@pytest.mark.parametrize(("metric", "t"), [("euclidean", 2.5), ("cosine", 0.05)])
def test_cells_find_every_pair_the_brute_force_finds(metric, t):
    X = clustered(2000, 12, 4)
    X[1500:1600] = X[:100] + np.random.default_rng(5).normal(scale=0.2, size=(100, 12))
    covered = np.random.default_rng(6).random(2000) > 0.1
    stats = {}
    i, j, d = knn.threshold_pairs(X, covered, t, metric, exact_max_rows=0, block_rows=64, max_probes=200, stats=stats)
    a, b = brute_pairs(X, covered, t, metric)
    assert stats["method"] == "cells" and stats["cells"] > 16 and stats["capped_rows"] == 0
    assert stats["compared"] < 2000 * 1999 / 2 / 3  # far fewer comparisons than every pair
    assert len(a) > 100
    np.testing.assert_array_equal(i, a)  # sorted by (i, j), as brute force lists them
    np.testing.assert_array_equal(j, b)
    assert np.all(d <= t * (1 + 1e-5)) and np.all(covered[i]) and np.all(covered[j])


@pytest.mark.usefixtures("cells_always")
def test_cells_group_planted_duplicates_deterministically_with_progress():
    X = clustered(3000, 16, 7)
    rng = np.random.default_rng(8)
    planted = {5: [2999, 1200], 40: [41], 777: [2000, 2001, 2002]}
    for src, copies in planted.items():
        for c in copies:
            X[c] = X[src] + rng.normal(scale=0.01, size=16)
    covered = np.ones(3000, dtype=bool)
    threshold = knn.suggest_threshold(knn.nearest_neighbour_distances(X, covered, sample_size=1000))
    seen = []
    first = knn.threshold_pairs(X, covered, threshold, exact_max_rows=1000, progress=seen.append)
    again = knn.threshold_pairs(X, covered, threshold, exact_max_rows=1000)
    for x, y in zip(first, again, strict=True):
        np.testing.assert_array_equal(x, y)
    groups = knn.groups_from_pairs(3000, first[0], first[1])
    assert [g.tolist() for g in groups] == [[777, 2000, 2001, 2002], [5, 1200, 2999], [40, 41]]
    assert len(seen) > 5 and seen == sorted(seen) and seen[-1] == pytest.approx(1.0)


@pytest.mark.usefixtures("cells_always")
def test_capped_probes_are_counted_and_find_a_subset():
    X = clustered(2000, 8, 9)
    covered = np.ones(2000, dtype=bool)
    stats = {}
    i, j, _d = knn.threshold_pairs(X, covered, 2.0, exact_max_rows=0, max_probes=1, stats=stats)
    a, b = brute_pairs(X, covered, 2.0, "euclidean")
    assert stats["capped_rows"] > 0
    assert set(zip(i.tolist(), j.tolist(), strict=True)) <= set(zip(a.tolist(), b.tolist(), strict=True))


def test_rows_without_clusters_fall_back_to_every_pair():
    rng = np.random.default_rng(11)
    X = rng.normal(size=(3000, 32)).astype(np.float32)  # one round cloud: no cell can be ruled out
    X[2990:] = X[:10] + 0.01
    covered = np.ones(3000, dtype=bool)
    stats, seen = {}, []
    i, j, _d = knn.threshold_pairs(X, covered, 1.0, exact_max_rows=0, stats=stats, progress=seen.append)
    assert stats["method"] == "all pairs" and stats["cells"] > 0
    assert list(zip(i.tolist(), j.tolist(), strict=True)) == [(k, 2990 + k) for k in range(10)]
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)


@pytest.mark.usefixtures("cells_always")
def test_too_many_pairs_is_refused_by_cells():
    X = np.zeros((300, 4), dtype=np.float32)
    X[150:] = 1.0
    with pytest.raises(ValueError, match="threshold is far too high"):
        knn.threshold_pairs(X, np.ones(300, dtype=bool), 0.5, exact_max_rows=0, cells=4, max_pairs=1000)
