"""Client.register_samples against a live server: streamed parallel batches, retries, errors."""

from __future__ import annotations

import hashlib
import threading

import pytest
import requests

from curation import services
from curation.models import INITIAL_TAG, Sample, Tag
from winnow.accounts.models import ApiToken
from winnow.client import Client, WinnowError
from winnow.client import api as client_api

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def client(live_server, owner):
    with Client(token=ApiToken.issue(owner, "t")[1], server=live_server.url) as client:
        client.create_dataset("meta scenes", upload_mode="meta")
        yield client


def entries(n: int, start: int = 0, pulled: list | None = None):
    for i in range(start, start + n):
        if pulled is not None:
            pulled.append(i)
        yield {
            "file_name": f"cam{i % 3}/{i:05d}.jpg",
            "width": 640,
            "height": 480,
            "size_bytes": 1000 + i,
            "metadata": {"weather": {"scenario": ["sun", "rain"][i % 2], "temperature": i / 10}, "night": i % 5 == 0},
        }


def dense(dataset_id: str, n: int) -> None:
    idx = list(Sample.objects.filter(dataset_id=dataset_id).order_by("idx").values_list("idx", flat=True))
    assert idx == list(range(n))
    assert Tag.objects.get(dataset_id=dataset_id, name=INITIAL_TAG).count == n


def test_registers_a_stream_in_parallel_batches_and_resumes(client):
    pulled, seen_at_first_answer = [], []

    def on_batch(body, size):
        if not seen_at_first_answer:
            seen_at_first_answer.append(len(pulled))

    done = client.register_samples(
        entries(1234, pulled=pulled), batch_size=100, workers=3, progress=False, on_batch=on_batch
    )
    assert done == {"dataset_id": client.dataset_id, "created": 1234, "replaced": 0, "skipped": 0, "batches": 13}
    dense(client.dataset_id, 1234)
    # Streamed: the entries are read a few batches ahead of the answers, not all at once.
    assert seen_at_first_answer[0] <= (2 * 3 + 1) * 100 + 1
    sample = Sample.objects.get(dataset_id=client.dataset_id, file_name="cam1/00007.jpg")
    assert (sample.width, sample.size_bytes, sample.metadata["weather"]["scenario"]) == (640, 1007, "rain")

    # Again, overlapping: what is there is skipped, the rest lands after it.
    again = client.register_samples(entries(300, start=1100), batch_size=128, progress=False)
    assert (again["created"], again["skipped"]) == (166, 134)
    dense(client.dataset_id, 1400)

    # Overwritten in place: its idx (whichever its parallel batch landed at) stays.
    idx = sample.idx
    replaced = client.register_samples(
        [{"file_name": "cam1/00007.jpg", "width": 10, "metadata": {"fixed": True}}], overwrite=True, progress=False
    )
    assert (replaced["created"], replaced["replaced"]) == (0, 1)
    sample.refresh_from_db()
    assert (sample.idx, sample.width, sample.height, sample.metadata) == (idx, 10, None, {"fixed": True})


def test_retries_what_is_safe_and_counts_each_sample_once(client, monkeypatch):
    real_post = client.session.post
    tries: dict[str, int] = {}
    kinds: dict[str, int] = {}
    lock = threading.Lock()
    sleeps = []
    monkeypatch.setattr(client_api.time, "sleep", sleeps.append)

    def flaky(url, data=None, **kwargs):
        key = hashlib.sha1(data).hexdigest()
        with lock:  # each batch gets one kind of trouble: 2 batches of each
            tries[key] = tries.get(key, 0) + 1
            kind = kinds.setdefault(key, len(kinds) % 4)
        if tries[key] == 1 and kind == 0:
            raise requests.ConnectionError("connection reset by peer")
        if tries[key] == 1 and kind == 1:
            real_post(url, data=data, **kwargs)  # it landed, but the answer was lost on the way
            raise requests.ReadTimeout("read timed out")
        if tries[key] == 1 and kind == 2:
            response = requests.Response()
            response.status_code, response.headers["Retry-After"] = 429, "2"
            response._content = b'{"detail": "slow down"}'
            return response
        if tries[key] <= 2 and kind == 3:
            response = requests.Response()
            response.status_code, response._content = 503, b"<html>unavailable</html>"
            return response
        return real_post(url, data=data, **kwargs)

    monkeypatch.setattr(client.session, "post", flaky)
    done = client.register_samples(entries(800), batch_size=100, workers=4, progress=False)
    dense(client.dataset_id, 800)
    assert done["created"] + done["skipped"] == 800 and done["skipped"] == 200  # 2 batches landed unanswered
    assert 2.0 in sleeps and len(sleeps) == 2 + 2 + 2 + 2 * 2


def test_a_rejected_batch_stops_and_names_where_it_is(client):
    def with_a_bad_entry():
        for i, entry in enumerate(entries(700)):
            if i == 317:
                entry["width"] = "wide"
            yield entry

    with pytest.raises(WinnowError) as caught:
        client.register_samples(with_a_bad_entry(), batch_size=100, workers=1, progress=False)
    assert caught.value.status == 400
    assert "batch of entries 300 to 399" in str(caught.value) and "entry 17" in str(caught.value)
    assert "width must be an integer" in str(caught.value)
    dense(client.dataset_id, 300)  # the batches before it stay; nothing of the rejected one


def test_gives_up_after_the_retries(client, monkeypatch):
    monkeypatch.setattr(client_api.time, "sleep", lambda s: None)

    def down(url, data=None, **kwargs):
        raise requests.ConnectionError("connection refused")

    monkeypatch.setattr(client.session, "post", down)
    with pytest.raises(WinnowError, match="cannot register samples"):
        client.register_samples(entries(10), progress=False)
    assert not Sample.objects.filter(dataset_id=client.dataset_id).exists()


def test_registration_service_is_what_the_client_reaches(client):
    """The service returns ids in entry order, present or new, which the API passes on unchanged."""
    client.register_samples(entries(3), progress=False)
    from curation.models import Dataset

    dataset = Dataset.objects.get(pk=client.dataset_id)
    result = services.register_samples(dataset, list(entries(4)))
    held = dict(Sample.objects.filter(dataset=dataset).values_list("file_name", "id"))
    assert result.ids == [held[e["file_name"]] for e in entries(4)] and result.created == 1
