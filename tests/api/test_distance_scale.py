"""An embedding's distance scale (for diversity's min_distance): percentiles from a bounded sample of rows."""

from __future__ import annotations

import numpy as np
import pytest

from sampling.scale import distance_scale
from tests.api.test_embeddings import commit, names, post_csv, registered, stored, url, vectors  # noqa: F401

pytestmark = pytest.mark.django_db


def brute(x: np.ndarray):
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    pairs = d[np.triu_indices(len(x), k=1)]
    np.fill_diagonal(d, np.inf)
    return d.min(axis=1), pairs


def test_percentiles_match_a_brute_force_count_when_every_row_is_sampled():
    x = np.random.default_rng(3).normal(size=(700, 4)).astype(np.float32)
    out = distance_scale(x, np.arange(700))
    nearest, pairs = brute(x.astype(np.float64))
    assert out["sampled"] == 700 and out["rows"] == 700
    for p in (5, 50, 95):
        assert out["nearest_neighbour"][f"p{p}"] == pytest.approx(np.percentile(nearest, p), rel=1e-5)
        assert out["pairwise"][f"p{p}"] == pytest.approx(np.percentile(pairs, p), rel=1e-5)


def test_a_large_matrix_is_sampled_and_only_covered_rows_count():
    x = np.zeros((5000, 3), dtype=np.float32)
    x[::2] = np.random.default_rng(0).normal(size=(2500, 3))
    x[1::2] = np.nan  # rows not covered by the embedding are never read
    out = distance_scale(x, np.arange(0, 5000, 2), sample=300)
    assert out["sampled"] == 300 and out["rows"] == 2500
    assert np.isfinite(out["pairwise"]["p50"]) and out["pairwise"]["p50"] > out["nearest_neighbour"]["p50"]


def test_one_row_has_no_scale():
    out = distance_scale(np.zeros((1, 2), np.float32), np.arange(1))
    assert out["nearest_neighbour"] is None and out["pairwise"] is None


def test_the_api_gives_the_scale_to_members_only(viewer_api, outsider_api, registered, stored):
    response = viewer_api.get(url(registered, f"/{stored.id}/distance-scale"))
    assert response.status_code == 200, response.content
    body = response.json()
    nearest, _pairs = brute(vectors().astype(np.float64))
    assert body["metric"] == "euclidean" and body["sampled"] == len(names())
    assert body["nearest_neighbour"]["p50"] == pytest.approx(np.percentile(nearest, 50), rel=1e-4)
    assert outsider_api.get(url(registered, f"/{stored.id}/distance-scale")).status_code == 404
    missing = viewer_api.get(url(registered, "/" + "0" * 24 + "/distance-scale"))
    assert missing.status_code == 404 and "No embedding" in missing.json()["detail"]
