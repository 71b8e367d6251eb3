"""The embedded default computes the map projection in a child process bounded in time and memory (issue 14:
"the map projection never runs in the web process"), not in the web process without limits."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
from django.db import connection

from curation import embeddings, projection_child, services, storage
from curation.embeddings import Status
from curation.models import Embedding

N, D = 60, 16


@pytest.fixture
def pca_only(settings, monkeypatch):
    """No t-SNE, here and in the child: the PCA layout is what these tests need, and it is quick."""
    settings.WINNOW_TSNE_MAX_POINTS = 0
    monkeypatch.setenv("WINNOW_TSNE_MAX_POINTS", "0")


@pytest.fixture
def in_child(settings, matrix_embedding):
    if connection.vendor != "postgresql":
        pytest.skip("the child process needs a database it can share (PostgreSQL)")
    settings.WINNOW_PROJECTION_IN_CHILD = True  # as in the embedded default (no broker)
    return settings


@pytest.fixture
def matrix_embedding(dataset, pca_only):
    """An embedding over N samples whose projection has not run (its message was never sent)."""
    services.add_samples(dataset, [{"file_name": f"{i:03d}.jpg"} for i in range(N)])
    names = [f"{i:03d}.jpg" for i in range(N)]
    matrix = np.random.default_rng(0).normal(size=(N, D)).astype(np.float32)
    lines = [",".join(["filenames", *(f"embedding_{j}" for j in range(D)), "labels"])]
    lines += [",".join([name, *(repr(float(v)) for v in row), "0"]) for name, row in zip(names, matrix)]
    embedding = embeddings.create_from_csv(dataset, "e", ("\n".join(lines) + "\n").encode())
    Embedding.objects.filter(pk=embedding.pk).update(projection_status=Status.PENDING, projection_key="")
    return embedding


@pytest.mark.django_db(transaction=True)
def test_the_projection_runs_in_a_child_process(in_child, matrix_embedding, monkeypatch):
    def not_here(embedding_id):
        raise AssertionError("the projection ran in the web process")

    monkeypatch.setattr(embeddings, "compute_projection", not_here)
    from curation import tasks

    assert tasks.compute_projection(matrix_embedding.id) == Status.READY
    embedding = Embedding.objects.get(pk=matrix_embedding.pk)
    assert embedding.projection_status == Status.READY and embedding.projection_key
    layout = storage.load_matrix(embedding.projection_key)
    assert layout.shape == (N, 2) and np.isfinite(layout).all()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("before, after", [(Status.PENDING, Status.FAILED), (Status.PARTIAL, Status.READY)])
def test_a_projection_past_its_time_limit_is_killed(in_child, matrix_embedding, monkeypatch, caplog, before, after):
    """Killed at WINNOW_PROJECTION_TIME_LIMIT: failed, unless its PCA layout was already saved (that stands)."""
    in_child.WINNOW_PROJECTION_TIME_LIMIT = 1
    monkeypatch.setattr(projection_child, "COMMAND", [sys.executable, "-c", "import time; time.sleep(120)"])
    Embedding.objects.filter(pk=matrix_embedding.pk).update(projection_status=before)
    with caplog.at_level(logging.WARNING, logger="curation.projection_child"):
        assert projection_child.run(matrix_embedding.id) == after
    assert "stopped after WINNOW_PROJECTION_TIME_LIMIT=1 s" in caplog.text
    assert Embedding.objects.get(pk=matrix_embedding.pk).projection_status == after


@pytest.mark.django_db(transaction=True)
def test_a_projection_past_its_memory_cap_fails_in_its_own_process(in_child, matrix_embedding, monkeypatch, caplog):
    """The child's address space is capped (here below what it already uses): its allocations fail there, and the
    embedding is marked failed; the web process is untouched."""
    monkeypatch.setenv("WINNOW_PROJECTION_MEMORY_BYTES", str(64 << 20))
    with caplog.at_level(logging.WARNING, logger="curation.projection_child"):
        assert projection_child.run(matrix_embedding.id) == Status.FAILED
    assert "failed in its process" in caplog.text and "Memory" in caplog.text, caplog.text
    assert Embedding.objects.get(pk=matrix_embedding.pk).projection_status == Status.FAILED
