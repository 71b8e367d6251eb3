"""Similarity runs on a real Celery worker: a large search goes to the worker (202), duplicates report progress."""

from __future__ import annotations

import time

import numpy as np
import pytest

from curation import storage
from curation.models import Embedding, Sample

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
N, D = 70_000, 64  # N x D is above what a request searches itself (curation.similarity.INLINE_MAX_ELEMENTS)


@pytest.fixture(autouse=True)
def _media_root(dataset):
    """Worker processes read the embedding files: use the configured storage they share, not a per-test folder."""
    yield
    storage.delete_prefix(dataset.storage_prefix)


def make_dataset(dataset) -> np.ndarray:
    Sample.objects.bulk_create(
        (Sample(dataset=dataset, idx=i, file_name=f"frame_{i:06d}.jpg") for i in range(N)), batch_size=5000
    )
    dataset.next_idx = N
    dataset.save(update_fields=["next_idx"])
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, D)).astype(np.float32)
    X[N - 5 :] = X[:5] + 0.001  # five planted near-duplicate pairs
    key = storage.save_matrix(f"{dataset.storage_prefix}embeddings/big.npy", X)
    Embedding.objects.create(dataset=dataset, name="default", dimension=D, count=N, matrix_key=key)
    return X


def wait(api, dataset, run_id: str, timeout: float = 300) -> list[dict]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.get(f"/api/v1/datasets/{dataset.id}/similarity/runs/{run_id}").json()
        seen.append(run)
        if run["status"] in ("succeeded", "failed"):
            return seen
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still {seen[-1]['status']} after {timeout} s")


def test_search_and_duplicates_run_on_the_worker(celery_worker, editor_api, dataset):
    X = make_dataset(dataset)
    first = Sample.objects.get(dataset=dataset, idx=3).id
    resp = editor_api.post(f"/api/v1/datasets/{dataset.id}/similarity/search", {"sample": first, "k": 5}, format="json")
    assert resp.status_code == 202 and resp.json()["status"] == "queued"
    run = wait(editor_api, dataset, resp.json()["id"])[-1]
    assert run["status"] == "succeeded", run
    page = editor_api.get(f"/api/v1/datasets/{dataset.id}/similarity/runs/{run['id']}/results").json()
    d = np.linalg.norm(X - X[3], axis=1)
    d[3] = np.inf
    assert [r["idx"] for r in page["results"]] == np.lexsort((np.arange(N), d))[:5].tolist()
    assert page["results"][0]["idx"] == N - 5 + 3

    resp = editor_api.post(f"/api/v1/datasets/{dataset.id}/similarity/duplicates", {}, format="json")
    seen = wait(editor_api, dataset, resp.json()["id"])
    assert seen[-1]["status"] == "succeeded", seen[-1]
    assert any(0 < r["progress"] < 1 for r in seen)  # progress while it ran (many seconds)
    # 70,000 rows in one round cloud: the cells cannot rule out enough, so every pair is compared (faster here)
    assert seen[-1]["summary"]["pairs_by"] == "all pairs"
    groups = editor_api.get(f"/api/v1/datasets/{dataset.id}/similarity/runs/{seen[-1]['id']}/results").json()
    assert sorted([m["idx"] for m in g["members"]] for g in groups["results"]) == [[i, N - 5 + i] for i in range(5)]
