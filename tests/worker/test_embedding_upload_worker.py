"""A completed resumable embeddings upload is parsed and stored by a real Celery worker, with progress."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest

from curation import embeddings, services, storage
from curation.models import Embedding, EmbeddingUpload

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

N, D = 3000, 16


@pytest.fixture(autouse=True)
def _media_root(dataset):
    """The worker process reads the chunks: use the configured storage it shares, not a per-test folder."""
    yield
    storage.delete_prefix(dataset.storage_prefix)


def wait_until_done(api, url: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = api.get(url).json()
        if state["status"] in ("succeeded", "failed"):
            return state
        time.sleep(0.2)
    raise AssertionError(f"the upload is still {state['status']}")


def send(api, dataset, kind: str, parts: dict[str, bytes], chunk: int = 20_000) -> str:
    base = f"/api/v1/datasets/{dataset.id}/embeddings/uploads"
    upload = api.post(
        base, {"kind": kind, "name": f"w-{kind}", "sizes": {p: len(b) for p, b in parts.items()}}, format="json"
    ).json()
    for part, data in parts.items():
        for offset in range(0, len(data), chunk):
            piece = data[offset : offset + chunk]
            response = api.put(
                f"{base}/{upload['id']}/{part}",
                piece,
                content_type="application/octet-stream",
                HTTP_CONTENT_RANGE=f"bytes {offset}-{offset + len(piece) - 1}/{len(data)}",
            )
            assert response.status_code == 200, response.content
    assert api.post(f"{base}/{upload['id']}/complete").status_code == 202
    return f"{base}/{upload['id']}"


def test_a_completed_upload_is_stored_by_a_worker(celery_worker, editor_api, dataset):
    names = [f"w/{i:05d}.jpg" for i in range(N)]
    services.add_samples(dataset, [{"file_name": name} for name in names])
    X = np.random.default_rng(0).normal(size=(N, D)).astype(np.float32)
    out = io.StringIO()
    out.write("filenames," + ",".join(f"embedding_{i}" for i in range(D)) + ",labels\n")
    for name, row in zip(names, X):
        out.write(name + "," + ",".join(repr(float(v)) for v in row) + ",0\n")
    state = wait_until_done(editor_api, send(editor_api, dataset, "csv", {"file": out.getvalue().encode()}))
    assert state["status"] == "succeeded", state
    embedding = Embedding.objects.get(pk=state["embedding"])
    np.testing.assert_array_equal(embeddings.load(embedding)[0], X)

    matrix = io.BytesIO()
    np.save(matrix, X[:10])
    state = wait_until_done(
        editor_api,
        send(editor_api, dataset, "npy", {"matrix": matrix.getvalue(), "names": "\n".join(names[:10]).encode()}),
    )
    assert state["status"] == "failed" and "2990 of 3000 are missing" in state["error"]
    assert Embedding.objects.filter(dataset=dataset).count() == 1
    assert EmbeddingUpload.objects.filter(status="succeeded").count() == 1
    _dirs, files = (
        storage.default_storage.listdir(f"{dataset.storage_prefix}uploads")
        if storage.default_storage.exists(f"{dataset.storage_prefix}uploads")
        else ([], [])
    )
    assert files == []
