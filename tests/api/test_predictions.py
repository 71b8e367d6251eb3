"""Prediction tasks over the API: upload a whole task, scores in the metadata, atomic replacement, bad input."""

import json

import pytest

from curation import bitmask
from curation.models import PredictionTask, PredictionUpload, Sample, Tag
from tests.factories import make_samples

pytestmark = pytest.mark.django_db

CATS = [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}, {"id": 2, "name": "bird"}]


def url(dataset, task="clf"):
    return f"/api/v1/datasets/{dataset.id}/predictions/{task}"


def clf(name, probs):
    top = max(range(len(probs)), key=probs.__getitem__)
    return {"file_name": name, "predictions": [{"category_id": top, "score": probs[top], "probabilities": probs}]}


def body(records, task_type="classification", categories=CATS, **extra):
    return {"schema": {"task_type": task_type, "categories": categories}, "predictions": records, **extra}


def put(api, dataset, doc, task="clf"):
    return api.put(url(dataset, task), json.dumps(doc), content_type="application/json")


def errors(response):
    return response.json()["errors"]


def meta(dataset):
    return dict(Sample.objects.filter(dataset=dataset).values_list("file_name", "metadata"))


@pytest.fixture
def samples(dataset):
    make_samples(dataset, 4, metadata=lambda i: {"camera": "front"})
    return dataset


def test_classification_upload_writes_scores_a_curator_can_filter_on(samples, editor_api):
    records = [clf("img_000000.jpg", [0.7, 0.2, 0.1]), clf("img_000001.jpg", [0.4, 0.4, 0.2])]
    response = put(editor_api, samples, body(records))
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "succeeded"
    m = meta(samples)
    p0 = m["img_000000.jpg"]["predictions"]["clf"]
    # least confidence (1 - 0.7) / (1 - 1/3) = 0.45; margin 1 - (0.7 - 0.2) = 0.5;
    # entropy -(0.7 ln 0.7 + 0.2 ln 0.2 + 0.1 ln 0.1) / ln 3 = 0.801819 / 1.098612 = 0.729847
    assert p0["uncertainty_least_confidence"] == pytest.approx(0.45, abs=1e-6)
    assert p0["uncertainty_margin"] == pytest.approx(0.5, abs=1e-6)
    assert p0["uncertainty_entropy"] == pytest.approx(0.729847, abs=1e-5)
    assert p0["confidence"] == pytest.approx(0.7, abs=1e-6)
    assert p0["predicted_class"] == "cat"
    assert m["img_000001.jpg"]["predictions"]["clf"]["uncertainty_margin"] == pytest.approx(1.0)
    assert m["img_000000.jpg"]["camera"] == "front"  # the rest of the metadata stays
    assert "predictions" not in m["img_000002.jpg"]
    task = PredictionTask.objects.get(dataset=samples, name="clf")
    assert (task.type, task.count, task.is_labels) == ("classification", 2, False)

    # The proposals list the scores as fields, with types.
    fields = {f["path"]: f for f in editor_api.get(f"/api/v1/datasets/{samples.id}/metadata/fields").json()["fields"]}
    assert fields["predictions.clf.uncertainty_entropy"]["type"] == "float"
    assert fields["predictions.clf.predicted_class"]["type"] == "categorical_string"


def test_a_new_upload_replaces_the_task_and_a_bad_one_changes_nothing(samples, editor_api):
    assert put(editor_api, samples, body([clf("img_000000.jpg", [0.7, 0.2, 0.1])])).status_code == 200
    assert put(editor_api, samples, body([clf("img_000001.jpg", [0.1, 0.8, 0.1])])).status_code == 200
    m = meta(samples)
    assert "clf" not in m["img_000000.jpg"].get("predictions", {})
    assert m["img_000001.jpg"]["predictions"]["clf"]["predicted_class"] == "dog"

    bad = body([clf("img_000002.jpg", [0.5, 0.3, 0.2]), clf("nope.jpg", [0.5, 0.3, 0.2])])
    response = put(editor_api, samples, bad)
    assert response.status_code == 400, response.content
    assert "nope.jpg" in errors(response)["predictions"][0]
    assert meta(samples) == m
    assert PredictionTask.objects.get(dataset=samples).count == 1
    sample = Sample.objects.get(dataset=samples, idx=1)
    got = editor_api.get(f"/api/v1/datasets/{samples.id}/samples/{sample.id}/predictions").json()
    assert got["tasks"][0]["predictions"] == [
        {"category_id": 1, "score": pytest.approx(0.8), "probabilities": pytest.approx([0.1, 0.8, 0.1])}
    ]


@pytest.mark.parametrize(
    "record, needle",
    [
        ({"file_name": "img_000000.jpg", "predictions": [{"category_id": 7, "score": 0.5}]}, "category_id"),
        (clf("img_000000.jpg", [0.5, 0.3, 0.3]), "sum to 1.1"),
        (clf("img_000000.jpg", [0.5, 0.5]), "must list 3 numbers"),
        ({"file_name": "img_000000.jpg", "predictions": []}, "exactly one singleton"),
        ({"file_name": "img_000000.jpg", "predictions": [{"category_id": 0, "score": 1.5}]}, "score"),
        ({"file_name": "img_000000.jpg"}, "predictions: must be a list"),
    ],
)
def test_bad_classification_records_are_refused_naming_file_and_field(samples, editor_api, record, needle):
    response = put(editor_api, samples, body([record]))
    assert response.status_code == 400
    message = errors(response)["predictions"][0]
    assert needle in message and "img_000000.jpg" in message
    assert not PredictionTask.objects.filter(dataset=samples).exists()
    assert all("predictions" not in m for m in meta(samples).values())


def test_detection_scores_and_boxes_outside_the_image(samples, editor_api):
    det = [
        {"file_name": "img_000000.jpg", "predictions": [
            {"category_id": 0, "score": 0.9, "bbox": [10, 20, 100, 50]},
            {"category_id": 2, "score": 0.3, "bbox": [0, 0, 640, 480]},
        ]},
        {"file_name": "img_000001.jpg", "predictions": []},
    ]  # fmt: skip
    response = put(editor_api, samples, body(det, task_type="object-detection"), task="det")
    assert response.status_code == 200, response.content
    m = meta(samples)
    d0, d1 = m["img_000000.jpg"]["predictions"]["det"], m["img_000001.jpg"]["predictions"]["det"]
    assert d0["object_count"] == 2
    assert d0["mean_confidence"] == pytest.approx(0.6)
    assert d0["min_confidence"] == pytest.approx(0.3)
    assert d0["objectness_least_confidence"] == pytest.approx(0.1)
    assert d0["predicted_class"] == "cat"
    assert d1 == {"object_count": 0, "objectness_least_confidence": 1.0}

    sample = Sample.objects.get(dataset=samples, idx=0)
    got = editor_api.get(f"/api/v1/datasets/{samples.id}/samples/{sample.id}/predictions").json()
    assert got["tasks"][0]["predictions"][0]["bbox"] == [10, 20, 100, 50]

    outside = [
        {"file_name": "img_000002.jpg", "predictions": [{"category_id": 1, "score": 0.5, "bbox": [600, 0, 50, 10]}]}
    ]
    response = put(editor_api, samples, body(outside, task_type="object-detection"), task="det")
    assert response.status_code == 400
    message = errors(response)["predictions"][0]
    assert "img_000002.jpg.predictions[0].bbox" in message and "640 x 480" in message
    assert meta(samples) == m


def test_json_lines_upload_and_labels_task(samples, editor_api):
    lines = [json.dumps({"schema": {"task_type": "classification", "categories": CATS}, "is_labels": True})]
    lines += [
        json.dumps({"file_name": f"img_00000{i}.jpg", "predictions": [{"category_id": i % 3, "score": 1}]})
        for i in range(4)
    ]
    response = editor_api.put(url(samples, "truth"), "\n".join(lines), content_type="application/x-ndjson")
    assert response.status_code == 200, response.content
    m = meta(samples)
    assert m["img_000003.jpg"]["predictions"]["truth"] == {"label": "cat"}
    assert PredictionTask.objects.get(name="truth").is_labels is True
    listed = editor_api.get(f"/api/v1/datasets/{samples.id}/predictions").json()
    assert [(t["name"], t["count"]) for t in listed] == [("truth", 4)]
    assert editor_api.delete(url(samples, "truth")).status_code == 204
    assert all("truth" not in m.get("predictions", {}) for m in meta(samples).values())


def test_bad_schema_task_name_and_content_type(samples, editor_api):
    response = put(editor_api, samples, {"schema": {"task_type": "keypoints", "categories": CATS}, "predictions": []})
    assert response.status_code == 400 and "task_type" in errors(response)["predictions"][0]
    response = put(editor_api, samples, body([]), task="bad.name")
    assert response.status_code == 400 and "task" in errors(response)
    response = editor_api.put(url(samples), "x", content_type="text/plain")
    assert response.status_code == 400 and "Content-Type" in errors(response)["body"][0]
    response = editor_api.put(url(samples), "{not json", content_type="application/json")
    assert response.status_code == 400 and "not valid JSON" in errors(response)["predictions"][0]


def test_access(samples, viewer_api, outsider_api, editor_api):
    doc = body([clf("img_000000.jpg", [0.7, 0.2, 0.1])])
    assert put(viewer_api, samples, doc).status_code == 403
    assert put(outsider_api, samples, doc).status_code == 404
    assert outsider_api.get(f"/api/v1/datasets/{samples.id}/predictions").status_code == 404
    assert not PredictionUpload.objects.filter(status="succeeded").exists()


def test_large_uploads_go_to_the_worker_path(samples, editor_api, settings, django_capture_on_commit_callbacks):
    settings.WINNOW_PREDICTIONS_INLINE_BYTES = 10  # tasks run eagerly here; tests/worker runs a real worker
    with django_capture_on_commit_callbacks(execute=True):
        response = put(editor_api, samples, body([clf("img_000000.jpg", [0.2, 0.2, 0.6])]))
    assert response.status_code == 202
    state = editor_api.get(f"/api/v1/datasets/{samples.id}/predictions/uploads/{response.json()['id']}").json()
    assert state["status"] == "succeeded" and state["progress"] == 1.0
    assert meta(samples)["img_000000.jpg"]["predictions"]["clf"]["predicted_class"] == "bird"
    assert state["result"]["samples"] == 1


def test_a_metadata_upload_keeps_the_prediction_scores_and_reserves_their_key(samples, editor_api):
    assert put(editor_api, samples, body([clf("img_000000.jpg", [0.7, 0.2, 0.1])])).status_code == 200
    doc = {"images": [{"file_name": "img_000000.jpg", "id": 1}], "metadata": [{"image_id": 1, "camera": "rear"}]}
    assert editor_api.post(f"/api/v1/datasets/{samples.id}/metadata", doc, format="json").status_code == 200
    m = meta(samples)["img_000000.jpg"]
    assert m["camera"] == "rear" and m["predictions"]["clf"]["predicted_class"] == "cat"
    doc["metadata"][0]["predictions"] = {"clf": {"predicted_class": "dog"}}
    response = editor_api.post(f"/api/v1/datasets/{samples.id}/metadata", doc, format="json")
    assert response.status_code == 400 and "reserved" in str(response.json())
    assert meta(samples)["img_000000.jpg"]["predictions"]["clf"]["predicted_class"] == "cat"


def test_scores_filter_and_sort_like_any_field(samples, editor_api):
    records = [
        clf(f"img_00000{i}.jpg", p) for i, p in enumerate([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.6, 0.3, 0.1]])
    ]
    assert put(editor_api, samples, body(records)).status_code == 200
    field = {"path": "predictions.clf.uncertainty_margin", "type": "float"}
    assert editor_api.post(f"/api/v1/datasets/{samples.id}/configurator", field, format="json").status_code == 201
    listing = f"/api/v1/datasets/{samples.id}/samples"
    got = editor_api.get(listing, {"where": "predictions.clf.uncertainty_margin:gt:0.5"}).json()["results"]
    assert sorted(s["file_name"] for s in got) == ["img_000001.jpg", "img_000002.jpg"]
    got = editor_api.get(listing, {"sort": "-predictions.clf.uncertainty_margin", "limit": 3}).json()["results"]
    assert [s["file_name"] for s in got] == ["img_000001.jpg", "img_000002.jpg", "img_000000.jpg"]
    got = editor_api.get(listing, {"where": "predictions.clf.predicted_class:eq:cat"}).json()["results"]
    assert len(got) == 3


def test_label_studio_export_carries_the_predictions_as_pre_annotations(samples, editor_api):
    det = [
        {"file_name": "img_000000.jpg", "predictions": [{"category_id": 1, "score": 0.8, "bbox": [64, 48, 320, 240]}]}
    ]
    assert put(editor_api, samples, body(det, task_type="object-detection"), task="det").status_code == 200
    assert put(editor_api, samples, body([clf("img_000001.jpg", [0.1, 0.2, 0.7])])).status_code == 200
    tag = Tag.objects.create(
        dataset=samples, name="all", bitmask=bitmask.from_indices([0, 1, 2]), count=3, origin="selection"
    )
    response = editor_api.get(f"/api/v1/datasets/{samples.id}/tags/{tag.id}/export", {"format": "label-studio"})
    tasks = json.loads(b"".join(response.streaming_content))
    first, second, third = tasks[0]["predictions"], tasks[1]["predictions"], tasks[2]["predictions"]
    assert first[0]["model_version"] == "det"
    assert first[0]["result"][0]["type"] == "rectanglelabels"
    assert first[0]["result"][0]["value"] == {
        "x": 10.0, "y": 10.0, "width": 50.0, "height": 50.0, "rotation": 0, "rectanglelabels": ["dog"]
    }  # fmt: skip
    assert second[0]["result"][0]["value"] == {"choices": ["bird"]} and second[0]["score"] == pytest.approx(0.7)
    assert third == []


def test_the_class_and_default_score_are_configured_for_filters_and_sort(samples, editor_api):
    assert put(editor_api, samples, body([clf("img_000000.jpg", [0.7, 0.2, 0.1])])).status_code == 200
    fields = {f["path"]: f["type"] for f in editor_api.get(f"/api/v1/datasets/{samples.id}/configurator").json()}
    assert fields == {
        "predictions.clf.predicted_class": "categorical_string",
        "predictions.clf.uncertainty_least_confidence": "float",
    }
    assert put(editor_api, samples, body([clf("img_000000.jpg", [0.7, 0.2, 0.1])])).status_code == 200  # no twice
    assert len(editor_api.get(f"/api/v1/datasets/{samples.id}/configurator").json()) == 2


def test_an_upload_a_worker_died_on_is_taken_over_once_silent(samples, editor_api, settings):
    from datetime import timedelta

    from django.utils import timezone

    from curation import predictions as services
    from curation.tasks import resume_prediction_uploads

    settings.WINNOW_PREDICTIONS_INLINE_BYTES = 10
    response = put(editor_api, samples, body([clf("img_000000.jpg", [0.2, 0.2, 0.6])]))
    upload_id = response.json()["id"]
    # As if a worker had claimed it and died: "processing", and silent.
    PredictionUpload.objects.filter(pk=upload_id).update(status="processing")
    assert services.process(upload_id) == "skipped"  # a live claim is not taken over
    PredictionUpload.objects.filter(pk=upload_id).update(updated_at=timezone.now() - timedelta(hours=1))
    assert resume_prediction_uploads() == [upload_id]  # runs eagerly here
    assert PredictionUpload.objects.get(pk=upload_id).status == "succeeded"
    assert meta(samples)["img_000000.jpg"]["predictions"]["clf"]["predicted_class"] == "bird"


def test_each_sample_reads_back_its_own_boxes_whatever_the_upload_order(samples, editor_api):
    def box(cat, x):
        return {"category_id": cat, "score": 0.5, "bbox": [x, 1, 2, 3]}

    det = [
        {"file_name": "img_000002.jpg", "predictions": [box(0, 20), box(2, 21)]},
        {"file_name": "img_000000.jpg", "predictions": [box(1, 0)]},
        {"file_name": "img_000001.jpg", "predictions": []},
        {"file_name": "img_000003.jpg", "predictions": [box(2, 30), box(0, 31), box(1, 32)]},
    ]
    assert put(editor_api, samples, body(det, task_type="object-detection"), task="det").status_code == 200
    for idx, expected in [(0, [(1, 0)]), (1, []), (2, [(0, 20), (2, 21)]), (3, [(2, 30), (0, 31), (1, 32)])]:
        sample = Sample.objects.get(dataset=samples, idx=idx)
        got = editor_api.get(f"/api/v1/datasets/{samples.id}/samples/{sample.id}/predictions").json()["tasks"]
        assert [(p["category_id"], p["bbox"][0]) for p in got[0]["predictions"]] == expected


def test_boxes_of_many_samples_at_once_for_the_tiles(samples, editor_api, outsider_api):
    det = [
        {"file_name": "img_000000.jpg", "predictions": [{"category_id": 2, "score": 0.8, "bbox": [5, 6, 7, 8]}]},
        {"file_name": "img_000001.jpg", "predictions": []},
    ]
    assert put(editor_api, samples, body(det, task_type="object-detection"), task="det").status_code == 200
    assert put(editor_api, samples, body([clf("img_000000.jpg", [0.7, 0.2, 0.1])])).status_code == 200
    ids = {s.idx: s.id for s in Sample.objects.filter(dataset=samples)}
    boxes_url = f"/api/v1/datasets/{samples.id}/prediction-boxes"
    got = editor_api.get(boxes_url, {"sample_ids": ",".join([ids[0], ids[1], ids[2]])}).json()
    # Only detection tasks; only the samples with a box; each with the image size the boxes are in.
    assert got["tasks"] == [{"name": "det", "is_labels": False, "categories": CATS}]
    assert got["samples"] == {
        ids[0]: {
            "width": 640,
            "height": 480,
            "boxes": {"det": [{"category_id": 2, "score": 0.8, "bbox": [5, 6, 7, 8]}]},
        }
    }
    odd = editor_api.get(boxes_url, {"sample_ids": "no such id;1=1," + ids[0]})
    assert odd.status_code == 200 and list(odd.json()["samples"]) == [ids[0]]
    too_many = ",".join(["x"] * 501)
    response = editor_api.get(boxes_url, {"sample_ids": too_many})
    assert response.status_code == 400 and "sample_ids" in errors(response)
    assert outsider_api.get(boxes_url, {"sample_ids": ids[0]}).status_code == 404


def test_a_reupload_keeps_unchanged_samples_changes_the_rest_and_drops_the_left_out(samples, editor_api):
    first = [clf("img_000000.jpg", [0.7, 0.2, 0.1]), clf("img_000001.jpg", [0.1, 0.8, 0.1]),
             clf("img_000002.jpg", [0.2, 0.2, 0.6])]  # fmt: skip
    assert put(editor_api, samples, body(first)).status_code == 200
    before = meta(samples)
    second = [clf("img_000000.jpg", [0.7, 0.2, 0.1]), clf("img_000001.jpg", [0.6, 0.3, 0.1]),
              clf("img_000003.jpg", [0.1, 0.1, 0.8])]  # fmt: skip
    assert put(editor_api, samples, body(second)).status_code == 200
    m = meta(samples)
    assert m["img_000000.jpg"] == before["img_000000.jpg"]
    assert m["img_000001.jpg"]["predictions"]["clf"]["predicted_class"] == "cat"
    assert m["img_000001.jpg"]["predictions"]["clf"]["confidence"] == pytest.approx(0.6)
    assert "clf" not in m["img_000002.jpg"].get("predictions", {})
    assert m["img_000002.jpg"]["camera"] == "front"
    assert m["img_000003.jpg"]["predictions"]["clf"]["predicted_class"] == "bird"
