"""Limits on embeddings (issue 14): dimension, file size, one-shot request size, and a projection whose memory
grows with d rather than d squared."""

from __future__ import annotations

import numpy as np
import pytest

from curation import embeddings
from curation.models import Embedding
from tests.api.test_embedding_stream import npy_bytes, post_npy, uploads_url
from tests.api.test_embeddings import make_csv, names, post_csv, registered, vectors  # noqa: F401

pytestmark = pytest.mark.django_db


def test_a_csv_wider_than_the_limit_is_refused(editor_api, registered, settings):
    settings.WINNOW_MAX_EMBEDDING_DIMENSION = 8
    response = post_csv(editor_api, registered, make_csv(names(), vectors(d=9)))
    assert response.status_code == 400
    assert "9 embedding dimensions" in response.json()["detail"] and "at most 8" in response.json()["detail"]
    assert not Embedding.objects.exists()
    assert post_csv(editor_api, registered, make_csv(names(), vectors(d=8))).status_code == 201


def test_a_matrix_wider_than_the_limit_is_refused(editor_api, registered, settings):
    settings.WINNOW_MAX_EMBEDDING_DIMENSION = 8
    response = post_npy(editor_api, registered, npy_bytes(vectors(d=9)), "\n".join(names()).encode())
    assert response.status_code == 400 and "matrix" in response.json()["errors"]
    assert not Embedding.objects.exists()


def test_a_one_shot_upload_over_the_request_limit_is_413(editor_api, registered, settings):
    data = make_csv(names(), vectors(d=64))
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = len(data) // 2
    response = post_csv(editor_api, registered, data)
    assert response.status_code == 413 and "in chunks" in response.json()["detail"]
    assert not Embedding.objects.exists()


def test_a_chunked_upload_larger_than_the_file_limit_is_refused(editor_api, registered, settings):
    settings.WINNOW_MAX_EMBEDDING_FILE_BYTES = 10_000
    response = editor_api.post(
        uploads_url(registered), {"name": "big", "kind": "csv", "sizes": {"file": 10_001}}, format="json"
    )
    assert response.status_code == 400 and "WINNOW_MAX_EMBEDDING_FILE_BYTES" in response.json()["detail"]


def test_randomized_pca_finds_the_same_axes_as_the_exact_one(monkeypatch):
    rng = np.random.default_rng(3)
    d = 40
    axes = np.linalg.qr(rng.normal(size=(d, 2)))[0]
    points = (rng.normal(size=(3000, 2)) * [10.0, 4.0]) @ axes.T + rng.normal(scale=0.1, size=(3000, d)) + 5
    points = points.astype(np.float32)
    monkeypatch.setattr(embeddings, "_matrix_blocks", lambda key: iter([(0, points[:1000]), (1000, points[1000:])]))
    mask = np.ones(len(points), dtype=bool)
    exact, mean = embeddings._pca_axes("m", mask)
    monkeypatch.setattr(embeddings, "EXACT_PCA_MAX_DIMENSION", 10)
    randomized, mean2 = embeddings._pca_axes("m", mask)
    assert np.allclose(mean, mean2)
    assert randomized.shape == exact.shape == (d, 2)
    assert np.allclose(np.abs(np.sum(randomized * exact, axis=0)), 1, atol=1e-4)
