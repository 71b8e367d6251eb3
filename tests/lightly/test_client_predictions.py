"""Lightly's client: prediction task schemas, per-sample predictions, upload_scores, and ACTIVE_LEARNING / CORAL
selections run on a real Celery worker."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from curation import storage
from curation.models import Dataset, PredictionTask, Sample
from tests.lightly.helpers import register_samples, write_embeddings_csv

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]
CLUSTERS, PER_CLUSTER = 4, 10


@pytest.fixture(autouse=True)
def _media_root(transactional_db):
    yield
    for dataset_id in Dataset.objects.values_list("id", flat=True):
        storage.delete_prefix(f"datasets/{dataset_id}/")


def test_predictions_scores_and_active_learning_selection(celery_worker, lightly_client, owner, owner_api, tmp_path):
    from lightly.active_learning.config.selection_config import SelectionConfig
    from lightly.openapi_generated.swagger_client.models import PredictionSingleton, PredictionTaskSchema
    from lightly.openapi_generated.swagger_client.rest import ApiException

    client = lightly_client(owner)
    client.create_dataset("predictions-demo")
    names = [f"cluster{c}/img_{i:02d}.jpg" for c in range(CLUSTERS) for i in range(PER_CLUSTER)]
    sample_ids = register_samples(client, names)
    rng = np.random.default_rng(5)
    vectors = np.repeat(np.eye(CLUSTERS, 8, dtype=np.float32) * 50, PER_CLUSTER, axis=0)
    vectors += rng.normal(scale=0.5, size=vectors.shape).astype(np.float32)
    path = tmp_path / "embeddings.csv"
    write_embeddings_csv(path, names, vectors)
    client.upload_embeddings(str(path), name="default")
    dataset_id = client.dataset_id

    schema = PredictionTaskSchema.from_dict(
        {
            "name": "my-classification",
            "type": "CLASSIFICATION",
            "categories": [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}],
        }
    )
    # 1.5.26 refuses its own default prediction_version_id=-1 before sending: give one (it is ignored).
    client.create_or_update_prediction_task_schema(schema=schema, prediction_version_id=1)
    task = PredictionTask.objects.get(dataset_id=dataset_id, name="my-classification")
    assert task.type == "classification" and [c["name"] for c in task.categories] == ["cat", "dog"]

    def singleton(probabilities):
        return PredictionSingleton.from_dict(
            {"type": "CLASSIFICATION", "taskName": "my-classification", "categoryId": 1, "score": 0.6,
             "probabilities": probabilities}
        )  # fmt: skip

    client.create_or_update_prediction(
        sample_id=sample_ids[3], prediction_singletons=[singleton([0.4, 0.6])], prediction_version_id=1
    )
    scores = Sample.objects.get(pk=sample_ids[3]).metadata["predictions"]["my-classification"]
    assert scores["predicted_class"] == "dog"
    assert scores["uncertainty_least_confidence"] == pytest.approx(0.8)  # (1 - 0.6) / (1 - 1/2)
    shown = owner_api.get(f"/api/v1/datasets/{dataset_id}/samples/{sample_ids[3]}/predictions").json()
    assert shown["tasks"][0]["predictions"] == [{"category_id": 1, "score": 0.6, "probabilities": [0.4, 0.6]}]

    bad = singleton([0.9, 0.6])
    with pytest.raises(ApiException) as info:
        client.create_or_update_prediction(
            sample_id=sample_ids[4], prediction_singletons=[bad], prediction_version_id=1
        )
    assert info.value.status == 400 and "probabilities" in info.value.body
    assert "predictions" not in Sample.objects.get(pk=sample_ids[4]).metadata

    # Active-learning scores for initial-tag (mapping order): the most uncertain is the last of each cluster.
    initial = client.get_tag_by_name("initial-tag")
    margin = np.tile(np.linspace(0.0, 0.9, PER_CLUSTER), CLUSTERS)
    margin[[9, 19]] = [0.99, 0.98]
    client.upload_scores({"uncertainty_margin": margin}, query_tag_id=initial.id)
    assert Sample.objects.get(pk=sample_ids[9]).metadata["predictions"]["_scores"]["uncertainty_margin"] == 0.99

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # selection() and SelectionConfig are deprecated in 1.5.26
        al = client.selection(SelectionConfig(method="ACTIVE_LEARNING", n_samples=2, name="al-2"))
        coral = client.selection(SelectionConfig(method="CORAL", n_samples=4, name="coral-4"))
    assert sorted(client.get_filenames_in_tag(al)) == ["cluster0/img_09.jpg", "cluster1/img_09.jpg"]
    picked = client.get_filenames_in_tag(coral)
    # CORAL: uncertainty and diversity, so the four far-apart clusters each give one of their uncertain samples.
    assert sorted(name.split("/")[0] for name in picked) == [f"cluster{c}" for c in range(CLUSTERS)]
    assert all(int(name[-6:-4]) >= 5 for name in picked)
    runs = owner_api.get(f"/api/v1/datasets/{dataset_id}/sampling-runs").json()["results"]
    assert sorted(r["strategy"] for r in runs) == ["coral", "uncertainty"]


@pytest.mark.django_db(transaction=False)
def test_bad_prediction_calls_are_refused_and_change_nothing(owner_v1, dataset):
    from curation import services

    services.add_samples(dataset, [{"file_name": "a.jpg", "width": 10, "height": 10}])
    sample = Sample.objects.get(dataset=dataset)
    tasks = f"datasets/{dataset.id}/predictions/tasks"
    bad_schemas = [
        {"name": "t", "type": "KEYPOINT_DETECTION", "categories": [{"id": 0, "name": "a"}]},
        {"name": "bad name", "type": "CLASSIFICATION", "categories": [{"id": 0, "name": "a"}]},
        {"name": "t", "type": "CLASSIFICATION", "categories": [{"id": 0, "name": "a"}, {"id": 0, "name": "b"}]},
    ]
    for body in bad_schemas:
        response = owner_v1.post(tasks, body)
        assert response.status_code == 400, body
    det = {"name": "det", "type": "OBJECT_DETECTION", "categories": [{"id": 0, "name": "a"}]}
    assert owner_v1.post(tasks, det).status_code == 201
    path = f"datasets/{dataset.id}/predictions/samples/{sample.id}"
    outside = [{"type": "OBJECT_DETECTION", "taskName": "det", "categoryId": 0, "score": 0.5, "bbox": [5, 5, 10, 2]}]
    response = owner_v1.post(path, outside)
    assert response.status_code == 400 and "a.jpg.predictions[0].bbox" in response.json()["error"]
    response = owner_v1.post(path, [{"taskName": "nope", "categoryId": 0, "score": 0.5}])
    assert response.status_code == 400 and "nope" in response.json()["error"]
    assert Sample.objects.get(pk=sample.pk).metadata == {}
    initial = dataset.tags.get(name="initial-tag")
    scores = f"datasets/{dataset.id}/tags/{initial.id}/scores"
    assert owner_v1.post(scores, {"scoreType": "m", "scores": [0.1, 0.2]}).status_code == 400  # wrong length
    assert owner_v1.post(scores, {"scoreType": "a.b", "scores": [0.1]}).status_code == 400
    assert owner_v1.post(scores, {"scoreType": "m", "scores": ["x"]}).status_code == 400
    assert Sample.objects.get(pk=sample.pk).metadata == {}
    assert owner_v1.post(path, [{"type": "OBJECT_DETECTION", "taskName": "det", "categoryId": 0, "score": 0.5,
                                 "bbox": [0, 0, 10, 10]}]).status_code == 201  # fmt: skip
    assert Sample.objects.get(pk=sample.pk).metadata["predictions"]["det"]["object_count"] == 1
