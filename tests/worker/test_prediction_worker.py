"""A large prediction upload is parsed and stored by a real Celery worker, with progress; a bad one stores nothing."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from curation import storage
from curation.models import PredictionTask, Sample
from tests.factories import make_samples

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

N = 3000
CATS = [{"id": i, "name": f"c{i}"} for i in range(10)]


@pytest.fixture(autouse=True)
def _media_root(dataset):
    """The worker process reads the body: use the configured storage it shares, not a per-test folder."""
    yield
    storage.delete_prefix(dataset.storage_prefix)


def body(n: int, bad_at: int | None = None) -> bytes:
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(10), size=n).round(6)
    p[:, 0] += 1 - p.sum(axis=1)
    lines = [json.dumps({"schema": {"task_type": "classification", "categories": CATS}})]
    for i in range(n):
        name = "missing.jpg" if i == bad_at else f"img_{i:06d}.jpg"
        top = int(p[i].argmax())
        lines.append(json.dumps({"file_name": name, "predictions": [
            {"category_id": top, "score": float(p[i, top]), "probabilities": p[i].tolist()}]}))  # fmt: skip
    return "\n".join(lines).encode()


def wait(api, url: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = api.get(url).json()
        if state["status"] in ("succeeded", "failed"):
            return state
        time.sleep(0.2)
    raise AssertionError(f"the upload is still {state['status']}")


def test_worker_stores_a_large_upload_and_refuses_a_bad_one_whole(celery_worker, dataset, editor_api):
    make_samples(dataset, N)
    base = f"/api/v1/datasets/{dataset.id}/predictions"
    response = editor_api.put(f"{base}/clf?background=true", body(N), content_type="application/x-ndjson")
    assert response.status_code == 202, response.content
    state = wait(editor_api, f"{base}/uploads/{response.json()['id']}")
    assert state["status"] == "succeeded", state
    assert state["progress"] == 1.0 and state["result"]["samples"] == N
    values = Sample.objects.filter(dataset=dataset, metadata__predictions__clf__isnull=False).count()
    assert values == N
    before = dict(Sample.objects.filter(dataset=dataset).values_list("idx", "metadata"))

    response = editor_api.put(f"{base}/clf?background=true", body(N, bad_at=2500), content_type="application/x-ndjson")
    state = wait(editor_api, f"{base}/uploads/{response.json()['id']}")
    assert state["status"] == "failed" and "missing.jpg" in state["error"]
    assert dict(Sample.objects.filter(dataset=dataset).values_list("idx", "metadata")) == before
    assert PredictionTask.objects.get(dataset=dataset, name="clf").count == N
