"""`/v1/` on the wire: embeddings over signed URLs, the 2D trigger, selection and job polling."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from curation import bitmask, embeddings, services, signing
from curation.models import Embedding, Membership, Tag
from sampling.models import SamplingRun
from tests.lightly.helpers import lightly_model

pytestmark = pytest.mark.django_db
NAMES = [f"f{i:02d}.jpg" for i in range(20)]
VECTORS = np.random.default_rng(3).normal(size=(20, 4)).astype(np.float32)


def csv_bytes(names=NAMES, vectors=VECTORS, extra_row: str = "") -> bytes:
    lines = ["filenames,embedding_0,embedding_1,embedding_2,embedding_3,labels"]
    lines += [f"{n},{','.join(repr(float(v)) for v in vec)},0" for n, vec in zip(names, vectors)]
    return ("\r\n".join(lines) + "\r\n" + extra_row).encode()


@pytest.fixture
def samples(dataset):
    services.add_samples(dataset, [{"file_name": n} for n in NAMES])
    return dataset


def path_of(url: str) -> str:
    assert url.startswith("http://testserver/")
    return url.removeprefix("http://testserver")


def write_url(v1, dataset, name="default") -> tuple[str, str]:
    response = v1.get(f"datasets/{dataset.id}/embeddings/writeCSVUrl", name=name)
    assert response.status_code == 200, response.content
    data = lightly_model("WriteCSVUrlData", response.json())
    return path_of(data.signed_write_url), data.embedding_id


def put_csv(client, path: str, data: bytes):
    return client.generic("PUT", path, data)  # no token and no Content-Type, like the client's upload


# --- embeddings ------------------------------------------------------------------------------------


def test_signed_upload_stores_the_embedding_under_the_promised_id(editor_v1, viewer_v1, samples, client, editor):
    path, embedding_id = write_url(editor_v1, samples)
    assert "token" not in path and not Embedding.objects.exists()  # nothing before the PUT
    response = put_csv(client, path, csv_bytes())
    assert response.status_code == 200, response.content
    embedding = Embedding.objects.get(pk=embedding_id)
    assert (embedding.name, embedding.dimension, embedding.creator) == ("default", 4, editor)
    matrix, _idx, _labels = embeddings.load(embedding)
    assert np.array_equal(matrix, VECTORS)
    [listed] = viewer_v1.get(f"datasets/{samples.id}/embeddings").json()
    model = lightly_model("DatasetEmbeddingData", listed)
    assert (model.id, model.name, model.is_processed) == (embedding_id, "default", True)

    again = put_csv(client, path, csv_bytes())
    assert again.status_code == 403 and "already used" in again.json()["error"]
    assert client.get(path).status_code == 403  # a write URL does not read
    assert Embedding.objects.count() == 1


def test_signed_upload_refuses_tampering_expiry_and_lost_access(editor_v1, samples, client, editor, monkeypatch):
    path, _ = write_url(editor_v1, samples)
    assert put_csv(client, path.replace("name=default", "name=other"), csv_bytes()).status_code == 403
    assert put_csv(client, path.replace(samples.id, "a" * 24), csv_bytes()).status_code == 403
    real = time.time
    monkeypatch.setattr(signing, "time", SimpleNamespace(time=lambda: real() + signing.CSV_TTL + 5))
    expired = put_csv(client, path, csv_bytes())
    assert expired.status_code == 403 and "expired" in expired.json()["error"]
    monkeypatch.undo()
    Membership.objects.filter(dataset=samples, user=editor).delete()
    assert put_csv(client, path, csv_bytes()).status_code == 403
    assert not Embedding.objects.exists()


@pytest.mark.parametrize(
    "data, message",
    [
        (csv_bytes(NAMES[:-1], VECTORS[:-1]), "missing"),
        (csv_bytes(extra_row="ghost.jpg,1,2,3,4,0\r\n"), "not samples"),
        (csv_bytes(vectors=np.where(np.arange(4) == 2, np.nan, VECTORS)), "finite"),
        (b"filenames,labels\r\n", "header"),
        (b"", "empty"),
    ],
)
def test_signed_upload_validates_like_the_native_upload(editor_v1, samples, client, data, message):
    path, embedding_id = write_url(editor_v1, samples)
    response = put_csv(client, path, data)
    assert response.status_code == 422, response.content  # not 400: the client would retry for 31 s
    assert response.json()["code"] == "EMBEDDING_INVALID" and message in response.json()["error"]
    assert not Embedding.objects.exists()
    assert put_csv(client, path, csv_bytes()).status_code == 200  # a refused upload leaves the URL usable
    assert Embedding.objects.filter(pk=embedding_id).exists()


def test_write_url_needs_an_editor_and_a_free_name(editor_v1, viewer_v1, outsider_v1, samples):
    assert viewer_v1.get(f"datasets/{samples.id}/embeddings/writeCSVUrl", name="x").status_code == 403
    assert outsider_v1.get(f"datasets/{samples.id}/embeddings/writeCSVUrl", name="x").status_code == 404
    missing = editor_v1.get(f"datasets/{samples.id}/embeddings/writeCSVUrl")
    assert missing.status_code == 400 and "name" in missing.json()["error"]
    embeddings.create_from_csv(samples, "taken", csv_bytes())
    taken = editor_v1.get(f"datasets/{samples.id}/embeddings/writeCSVUrl", name="taken")
    assert taken.status_code == 400 and taken.json()["code"] == "EMBEDDING_NAME_EXISTS"


def test_read_url_serves_the_csv_uncompressed(viewer_v1, outsider_v1, samples, client):
    embedding = embeddings.create_from_csv(samples, "default", csv_bytes())
    url = viewer_v1.get(f"datasets/{samples.id}/embeddings/{embedding.id}/readCSVUrl").json()
    response = client.get(path_of(url), HTTP_ACCEPT_ENCODING="gzip, deflate")
    assert response.status_code == 200 and response["Content-Encoding"] == "identity"
    text = b"".join(response.streaming_content).decode()
    rows = [line.split(",") for line in text.strip().splitlines()]
    assert [r[0] for r in rows[1:]] == NAMES
    assert np.array_equal(np.array([[np.float32(v) for v in r[1:-1]] for r in rows[1:]]), VECTORS)
    assert client.generic("PUT", path_of(url), csv_bytes()).status_code == 403  # a read URL does not write
    assert outsider_v1.get(f"datasets/{samples.id}/embeddings/{embedding.id}/readCSVUrl").status_code == 404
    assert (
        viewer_v1.get(f"datasets/{samples.id}/embeddings/{'0' * 24}/readCSVUrl").json()["code"] == "EMBEDDING_UNKNOWN"
    )


def test_embeddings_are_listed_newest_first(viewer_v1, samples):
    older = embeddings.create_from_csv(samples, "default", csv_bytes())
    newer = embeddings.create_from_csv(samples, "default_20250101_10h00m00s", csv_bytes())
    listed = viewer_v1.get(f"datasets/{samples.id}/embeddings").json()
    assert [e["id"] for e in listed] == [newer.id, older.id]


def test_trigger_2d_and_delete(editor_v1, viewer_v1, samples):
    embedding = embeddings.create_from_csv(samples, "default", csv_bytes())
    url = f"datasets/{samples.id}/embeddings/{embedding.id}/trigger2dEmbeddingsJob"
    for method in ("PCA", "TSNE", "UMAP"):
        assert editor_v1.post(url, {"dimensionalityReductionMethod": method}).status_code == 204
    assert editor_v1.post(url, {"dimensionalityReductionMethod": "LDA"}).status_code == 400
    assert viewer_v1.post(url, {"dimensionalityReductionMethod": "PCA"}).status_code == 403
    unknown = editor_v1.post(
        f"datasets/{samples.id}/embeddings/{'0' * 24}/trigger2dEmbeddingsJob", {"dimensionalityReductionMethod": "PCA"}
    )
    assert unknown.json()["code"] == "EMBEDDING_UNKNOWN"
    assert viewer_v1.delete(f"datasets/{samples.id}/embeddings/{embedding.id}").status_code == 403
    assert editor_v1.delete(f"datasets/{samples.id}/embeddings/{embedding.id}").status_code == 204
    assert not Embedding.objects.exists()


# --- selection and jobs (tasks run in-process here; tests/lightly/test_client_selection.py uses a worker) ---


@pytest.fixture
def embedded(samples):
    return embeddings.create_from_csv(samples, "default", csv_bytes())


def select(v1, dataset, embedding, **body):
    request = {
        "newTagName": "picked",
        "method": "RANDOM",
        "config": {"stoppingCondition": {"nSamples": 5, "minDistance": -1}},
        "rowCount": 20,
    } | body
    return v1.post(f"datasets/{dataset.id}/embeddings/{embedding.id}/sampling", request)


def run_to_end(v1, dataset, embedding, capture, **body) -> dict:
    with capture(execute=True):  # the run is enqueued on commit; here it runs in-process
        response = select(v1, dataset, embedding, **body)
    assert response.status_code == 200, response.content
    job_id = lightly_model("AsyncTaskData", response.json()).job_id
    status = v1.get(f"jobs/{job_id}")
    assert status.status_code == 200
    lightly_model("JobStatusData", status.json())
    return status.json()


def test_random_selection_makes_the_tag(editor_v1, samples, embedded, django_capture_on_commit_callbacks):
    status = run_to_end(editor_v1, samples, embedded, django_capture_on_commit_callbacks)
    assert status["status"] == "FINISHED" and status["result"]["type"] == "SAMPLING"
    tag = Tag.objects.get(pk=status["result"]["data"])
    assert (tag.name, tag.count, tag.parent.name, tag.origin) == ("picked", 5, "initial-tag", "sampling")
    run = SamplingRun.objects.get(pk=status["id"])
    assert (run.strategy, run.n_samples, run.embedding_id, run.parameters["lightly"]["result_tag"]) == (
        "random",
        5,
        embedded.id,
        tag.id,
    )
    again = editor_v1.get(f"jobs/{run.id}").json()  # polling again finds the same tag
    assert again["result"]["data"] == tag.id and Tag.objects.filter(name="picked").count() == 1


def test_coreset_with_preselected_counts_them_in_n_samples(
    editor_v1, samples, embedded, django_capture_on_commit_callbacks
):
    labeled = Tag.objects.create(
        dataset=samples, name="labeled", bitmask=bitmask.from_indices([0, 1, 2]), count=3, origin="selection"
    )
    status = run_to_end(
        editor_v1,
        samples,
        embedded,
        django_capture_on_commit_callbacks,
        method="CORESET",
        preselectedTagId=labeled.id,
        config={"stoppingCondition": {"nSamples": 8, "minDistance": -1}},
    )
    tag = Tag.objects.get(pk=status["result"]["data"])
    assert tag.count == 8 and {0, 1, 2} <= set(tag.indices().tolist()) and tag.parent_id == labeled.id
    assert SamplingRun.objects.get(pk=status["id"]).n_samples == 5


def test_fraction_of_the_query_tag(editor_v1, samples, embedded, django_capture_on_commit_callbacks):
    half = Tag.objects.create(
        dataset=samples, name="second-half", bitmask=bitmask.from_indices(range(10, 20)), count=10, origin="selection"
    )
    status = run_to_end(
        editor_v1,
        samples,
        embedded,
        django_capture_on_commit_callbacks,
        queryTagId=half.id,
        config={"stoppingCondition": {"nSamples": 0.3, "minDistance": -1}},
    )
    tag = Tag.objects.get(pk=status["result"]["data"])
    assert tag.count == 3 and set(tag.indices().tolist()) <= set(range(10, 20))


@pytest.mark.parametrize(
    "body, field",
    [
        ({"method": "CORAL"}, "scoreType"),  # no active-learning scores uploaded
        ({"method": "ACTIVE_LEARNING", "scoreType": "margin"}, "scoreType"),
        ({"config": {"stoppingCondition": {"nSamples": 5, "minDistance": 0.5}}}, "minDistance"),
        ({"config": {"stoppingCondition": {"nSamples": 0}}}, "nSamples"),
        ({"config": {"stoppingCondition": {"nSamples": "5"}}}, "nSamples"),
        ({"newTagName": "ab"}, "newTagName"),
        ({"newTagName": "initial-tag"}, "already exists"),
        ({"preselectedTagId": "0" * 24}, "preselectedTagId"),
        ({"queryTagId": "0" * 24}, "queryTagId"),
    ],
)
def test_selection_refuses_bad_requests_and_queues_nothing(editor_v1, samples, embedded, body, field):
    response = select(editor_v1, samples, embedded, **body)
    assert response.status_code == 400 and field in response.json()["error"], response.content
    assert not SamplingRun.objects.exists()


def test_selection_roles_and_unknown_embedding(viewer_v1, outsider_v1, editor_v1, samples, embedded):
    assert select(viewer_v1, samples, embedded).status_code == 403
    assert select(outsider_v1, samples, embedded).status_code == 404
    unknown = editor_v1.post(
        f"datasets/{samples.id}/embeddings/{'0' * 24}/sampling",
        {"newTagName": "picked", "method": "RANDOM", "config": {}},
    )
    assert unknown.json()["code"] == "EMBEDDING_UNKNOWN"
    everything = Tag.objects.create(
        dataset=samples, name="all-labeled", bitmask=bitmask.from_indices(range(20)), count=20, origin="selection"
    )
    nothing_left = select(editor_v1, samples, embedded, preselectedTagId=everything.id)
    assert nothing_left.status_code == 400 and "nothing to select" in nothing_left.json()["error"]
    assert not SamplingRun.objects.exists()


def test_job_states_and_access(editor_v1, outsider_v1, samples, embedded, django_capture_on_commit_callbacks):
    status = run_to_end(editor_v1, samples, embedded, django_capture_on_commit_callbacks)
    run = SamplingRun.objects.get(pk=status["id"])
    assert outsider_v1.get(f"jobs/{run.id}").json()["code"] == "JOB_UNKNOWN"
    assert editor_v1.get(f"jobs/{'0' * 24}").json()["code"] == "JOB_UNKNOWN"

    SamplingRun.objects.filter(pk=run.pk).update(status="queued", parameters={**run.parameters, "lightly": {}})
    assert editor_v1.get(f"jobs/{run.id}").json()["status"] == "WAITING"
    SamplingRun.objects.filter(pk=run.pk).update(status="running", progress=40)
    running = editor_v1.get(f"jobs/{run.id}").json()
    assert (running["status"], running["meta"]) == ("RUNNING", {"total": 100, "processed": 40})
    SamplingRun.objects.filter(pk=run.pk).update(status="failed", error="out of memory")
    failed = lightly_model("JobStatusData", editor_v1.get(f"jobs/{run.id}").json())
    assert (failed.status, failed.error) == ("FAILED", "out of memory")

    from sampling import services as sampling

    native = sampling.create_run(samples, {"name": "native run", "strategy": "random", "n_samples": 3}, samples.owner)
    assert editor_v1.get(f"jobs/{native.id}").json()["code"] == "JOB_UNKNOWN"  # not a /v1/ selection


def test_a_taken_name_fails_the_job_with_a_message(editor_v1, samples, embedded, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        job_id = select(editor_v1, samples, embedded).json()["jobId"]
    Tag.objects.create(dataset=samples, name="picked", bitmask=bitmask.from_indices([4]), count=1, origin="selection")
    status = editor_v1.get(f"jobs/{job_id}").json()
    assert status["status"] == "FAILED" and "picked" in status["error"]


def test_a_csv_over_the_embedding_file_limit_is_413(editor_v1, samples, client, settings):
    path, _ = write_url(editor_v1, samples)
    settings.WINNOW_MAX_EMBEDDING_FILE_BYTES = 1024
    data = csv_bytes(extra_row="#" * 1024)
    response = put_csv(client, path, data)
    assert response.status_code == 413 and response.json()["code"] == "PAYLOAD_TOO_LARGE"
    assert "WINNOW_MAX_EMBEDDING_FILE_BYTES" in response.json()["error"]
    assert not Embedding.objects.exists()
    settings.WINNOW_MAX_EMBEDDING_FILE_BYTES = 10 * 1024 * 1024
    assert put_csv(client, path, csv_bytes()).status_code == 200  # the refused upload did not use the URL


def test_a_csv_over_the_request_limit_streams_into_the_matrix(editor_v1, samples, client, settings, monkeypatch):
    """Lightly's client sends the whole CSV in one PUT: it is parsed as it arrives (never read whole), so the
    request limit for JSON bodies and chunks (WINNOW_MAX_REQUEST_BYTES) does not bound it."""
    from curation import embeddings

    many = [f"img_{i:05d}.jpg" for i in range(2000)]
    services.add_samples(samples, [{"file_name": n} for n in many])
    names = [*NAMES, *many]
    vectors = [[i % 7, i % 5, i % 3, 1.5] for i in range(len(names))]
    data = csv_bytes(names, vectors)
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    settings.WINNOW_MAX_EMBEDDING_FILE_BYTES = 10 * len(data)
    assert len(data) > 10 * settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    reads: list[int] = []
    real_read = embeddings._Counting.read

    def read(self, n=-1):
        data = real_read(self, n)
        reads.append(len(data))
        return data

    monkeypatch.setattr(embeddings._Counting, "read", read)
    path, embedding_id = write_url(editor_v1, samples)
    response = put_csv(client, path, data)
    assert response.status_code == 200, response.content
    # Parsed from the request's stream (Django refuses `request.body` past DATA_UPLOAD_MAX_MEMORY_SIZE).
    assert sum(reads) == len(data)
    matrix, _idx, _labels = embeddings.load(Embedding.objects.get(pk=embedding_id))
    assert matrix.shape == (len(names), 4) and float(matrix[:, 3].min()) == 1.5
