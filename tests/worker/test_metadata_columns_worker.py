"""A real Celery worker builds the metadata column store when fields are configured and rebuilds it after
metadata changes; meanwhile requests are answered by SQL, the same answers."""

from __future__ import annotations

import time

import pytest

from curation import columns, storage
from curation.api.analytics import histograms
from curation.models import Dataset, UploadMode

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _media_root(dataset):
    """The worker writes the columns: use the configured storage it shares, not a per-test folder."""
    yield
    storage.delete_prefix(dataset.storage_prefix)


def wait_fresh(api, dataset, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = api.get(f"/api/v1/datasets/{dataset.id}/metadata/columns").json()
        if state["fresh"]:
            return state
        time.sleep(0.2)
    raise AssertionError(f"the column store is not fresh: {state}")


def test_configuring_uploading_and_registering_rebuild_the_store(celery_worker, editor_api, dataset, monkeypatch):
    monkeypatch.setattr(columns, "REGISTRATION_DELAY_S", 0)
    Dataset.objects.filter(pk=dataset.pk).update(upload_mode=UploadMode.META)
    base = f"/api/v1/datasets/{dataset.id}"
    samples = [{"file_name": f"{i}.jpg", "metadata": {"w": ["a", "b", "c"][i % 3], "t": i / 7}} for i in range(300)]
    assert editor_api.post(f"{base}/samples", {"samples": samples}, format="json").status_code == 201
    for body in ({"path": "w", "type": "categorical_string"}, {"path": "t", "type": "float", "fallback": 1.5}):
        assert editor_api.post(f"{base}/configurator", body, format="json").status_code == 201
    state = wait_fresh(editor_api, dataset)
    assert state["size"] == 300 and all(f["column"] for f in state["fields"].values())
    filter_obj = {"conditions": [{"path": "w", "op": "eq", "value": "d"}]}

    doc = {"images": [{"file_name": "0.jpg", "id": 0}], "metadata": [{"image_id": 0, "w": "d"}]}
    assert editor_api.post(f"{base}/metadata", doc, format="json").status_code == 200
    stale = histograms(Dataset.objects.get(pk=dataset.pk), filter_obj, 6)  # answered by SQL meanwhile
    assert stale["matched"] == 1
    wait_fresh(editor_api, dataset)
    ds = Dataset.objects.get(pk=dataset.pk)
    assert columns.fresh_store(ds, queue=False) is not None
    assert histograms(ds, filter_obj, 6) == histograms(ds, filter_obj, 6, use_columns=False) == stale

    more = [{"file_name": f"n{i}.jpg", "metadata": {"w": "d"}} for i in range(5)]
    assert editor_api.post(f"{base}/samples", {"samples": more}, format="json").status_code == 201
    assert wait_fresh(editor_api, dataset)["size"] == 305
    count = editor_api.get(f"{base}/samples", {"where": "w:eq:d", "count": "true"}).json()["count"]
    assert count == 6
