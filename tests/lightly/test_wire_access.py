"""Every `/v1/` endpoint: anonymous is 401, another user's dataset is 404, a viewer's write is 403; none writes."""

from __future__ import annotations

import pytest

from curation import embeddings, services
from curation.models import Dataset, Embedding, PredictionTask, Sample, Tag
from sampling.models import SamplingRun

pytestmark = pytest.mark.django_db

CSV = b"filenames,embedding_0,labels\r\na.jpg,1.0,0\r\nb.jpg,2.0,0\r\n"
# (method, path, body, writes): {ds}, {sample}, {tag} and {emb} are filled in per test.
ENDPOINTS = [
    ("get", "datasets/{ds}", None, False),
    ("delete", "datasets/{ds}", None, True),
    ("get", "datasets/{ds}/mappings", None, False),
    ("post", "datasets/{ds}/samples", {"fileName": "new.jpg"}, True),
    ("get", "datasets/{ds}/samples/partial", None, False),
    ("get", "datasets/{ds}/samples/{sample}", None, False),
    ("put", "datasets/{ds}/samples/{sample}", {"customMetaData": {"x": 1}}, True),
    ("get", "datasets/{ds}/samples/{sample}/readurl", None, False),
    ("get", "datasets/{ds}/tags", None, False),
    ("post", "datasets/{ds}/tags", {"name": "new-tag", "prevTagId": "{tag}", "bitMaskData": "0x1", "totSize": 2}, True),
    ("post", "datasets/{ds}/tags/initial", {"imgType": "meta"}, True),
    (
        "post",
        "datasets/{ds}/tags/arithmetics/bitmask",
        {"tagId1": "{tag}", "tagId2": "{tag}", "operation": "UNION"},
        False,
    ),
    ("get", "datasets/{ds}/tags/{tag}", None, False),
    ("delete", "datasets/{ds}/tags/{tag}", None, True),
    ("get", "datasets/{ds}/tags/{tag}/export/basic/filenames", None, False),
    ("get", "datasets/{ds}/tags/{tag}/export/LabelStudio/tasks", None, False),
    ("get", "datasets/{ds}/embeddings", None, False),
    ("get", "datasets/{ds}/embeddings/writeCSVUrl?name=x", None, True),
    ("get", "datasets/{ds}/embeddings/{emb}/readCSVUrl", None, False),
    ("post", "datasets/{ds}/embeddings/{emb}/trigger2dEmbeddingsJob", {"dimensionalityReductionMethod": "PCA"}, True),
    ("delete", "datasets/{ds}/embeddings/{emb}", None, True),
    (
        "post",
        "datasets/{ds}/embeddings/{emb}/sampling",
        {"newTagName": "picked", "method": "RANDOM", "config": {"stoppingCondition": {"nSamples": 1}}},
        True,
    ),
    (
        "post",
        "datasets/{ds}/predictions/tasks",
        {"name": "t", "type": "CLASSIFICATION", "categories": [{"id": 0, "name": "a"}]},
        True,
    ),
    ("post", "datasets/{ds}/predictions/samples/{sample}", [{"taskName": "t", "categoryId": 0, "score": 1}], True),
    ("post", "datasets/{ds}/tags/{tag}/scores", {"scoreType": "uncertainty_margin", "scores": [0.5]}, True),
]


@pytest.fixture
def world(dataset):
    """The dataset with two samples, a second tag and an embedding; ids to fill the paths with."""
    services.add_samples(dataset, [{"file_name": "a.jpg"}, {"file_name": "b.jpg"}])
    tag = Tag.objects.create(dataset=dataset, name="second", bitmask=b"\x02", count=1, origin="selection")
    embedding = embeddings.create_from_csv(dataset, "default", CSV)
    sample = Sample.objects.get(dataset=dataset, idx=0)
    return {"ds": dataset.id, "sample": sample.id, "tag": tag.id, "emb": embedding.id}


def snapshot():
    return [
        list(model.objects.order_by("pk").values_list("pk", flat=True))
        for model in (Dataset, Sample, Tag, Embedding, SamplingRun, PredictionTask)
    ] + [list(Sample.objects.order_by("pk").values_list("metadata", flat=True))]


def fill(value, ids):
    if isinstance(value, str):
        return value.format(**ids)
    if isinstance(value, dict):
        return {k: fill(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, ids) for v in value]
    return value


def call(v1, method, path, body, ids):
    path = fill(path, ids)
    params = {}
    if "?" in path:
        path, query = path.split("?")
        params = dict(part.split("=") for part in query.split("&"))
    if method in ("post", "put"):
        return getattr(v1, method)(path, fill(body, ids), **params)
    return getattr(v1, method)(path, **params)


@pytest.mark.parametrize("method, path, body, writes", ENDPOINTS)
def test_anonymous_is_401(anon_v1, world, method, path, body, writes):
    before = snapshot()
    response = call(anon_v1, method, path, body, world)
    assert response.status_code == 401 and response.json()["code"] == "UNAUTHORIZED"
    assert snapshot() == before


@pytest.mark.parametrize("method, path, body, writes", ENDPOINTS)
def test_another_users_dataset_is_404(outsider_v1, world, method, path, body, writes):
    before = snapshot()
    response = call(outsider_v1, method, path, body, world)
    assert response.status_code == 404 and response.json()["code"] == "DATASET_UNKNOWN"
    assert snapshot() == before


@pytest.mark.parametrize("method, path, body, writes", [e for e in ENDPOINTS if e[3]])
def test_a_viewer_cannot_write(viewer_v1, world, method, path, body, writes):
    before = snapshot()
    response = call(viewer_v1, method, path, body, world)
    assert response.status_code == 403 and response.json()["code"] == "FORBIDDEN"
    assert snapshot() == before


@pytest.mark.parametrize("method, path, body, writes", [e for e in ENDPOINTS if not e[3]])
def test_a_viewer_can_read(viewer_v1, world, method, path, body, writes):
    response = call(viewer_v1, method, path, body, world)
    if path.endswith("/readurl"):  # a meta dataset keeps no pixels: no read URL to give
        assert response.status_code == 404 and "no pixels" in response.json()["error"]
    else:
        assert response.status_code == 200, response.content


def test_jobs_and_lists_need_a_token(anon_v1, outsider_v1):
    for path in ("datasets", "datasets/query/name/abc", f"jobs/{'0' * 24}"):
        assert anon_v1.get(path).status_code == 401
    assert anon_v1.post("datasets", {"name": "sneaky"}).status_code == 401
    assert not Dataset.objects.exists()
