"""Tags: list, create (ids, file names, filter, arithmetic, a run's top K), get, delete, export."""

import csv
import io
import json
import time

import numpy as np
import pytest

from curation import tagging
from curation.errors import DomainError
from curation.models import (
    Membership,
    MetadataField,
    Role,
    Sample,
    Tag,
    TagOrigin,
)
from curation.services import create_dataset
from sampling import tagging as sampling_tagging
from sampling.models import ImportanceScore, RunStatus, SamplingRun
from tests.factories import make_samples

pytestmark = pytest.mark.django_db


def street_meta(i):
    return {"camera": ["front", "rear"][i % 2], "weather": {"temperature": i * 1.5, "rain": i % 3 == 0}, "n": i}


@pytest.fixture
def ds(dataset, owner):
    """20 samples with metadata and an initial-tag holding all of them."""
    make_samples(dataset, 20, street_meta)
    tagging.create_tag(dataset, "initial-tag", range(20), origin=TagOrigin.UPLOAD, origin_detail={}, creator=owner)
    return dataset


def url(dataset, suffix=""):
    return f"/api/v1/datasets/{dataset.id}/tags{suffix}"


def idx_set(dataset, name):
    return set(Tag.objects.get(dataset=dataset, name=name).indices().tolist())


def make_tag(dataset, name, indices, **kwargs):
    return tagging.create_tag(dataset, name, sorted(indices), origin=TagOrigin.SELECTION, origin_detail={}, **kwargs)


def sample_id(dataset, idx):
    return Sample.objects.get(dataset=dataset, idx=idx).id


def tag_names(dataset):
    return set(Tag.objects.filter(dataset=dataset).values_list("name", flat=True))


# --- list and detail -------------------------------------------------------------------------------


def test_list_shows_counts_origin_parent_and_creator(ds, viewer_api, editor):
    root = Tag.objects.get(dataset=ds, name="initial-tag")
    make_tag(ds, "even", range(0, 20, 2), parent=root, creator=editor)
    response = viewer_api.get(url(ds))
    assert response.status_code == 200, response.content
    tags = {t["name"]: t for t in response.json()}
    assert tags["initial-tag"]["count"] == 20 and tags["initial-tag"]["origin"] == "upload"
    assert tags["initial-tag"]["creator"] == "olivia" and tags["initial-tag"]["parent"] is None
    even = tags["even"]
    assert even["count"] == 10 and even["parent"] == root.id and even["creator"] == "ed"
    assert set(even) == {"id", "name", "count", "origin", "origin_detail", "parent", "creator", "created_at"}


def test_detail_includes_sample_ids_only_on_request(ds, viewer_api):
    tag = make_tag(ds, "three", [7, 2, 11])
    body = viewer_api.get(url(ds, f"/{tag.id}")).json()
    assert body["count"] == 3 and "sample_ids" not in body
    body = viewer_api.get(url(ds, f"/{tag.id}?include=sample_ids")).json()
    assert body["sample_ids"] == [sample_id(ds, 2), sample_id(ds, 7), sample_id(ds, 11)]
    assert viewer_api.get(url(ds, f"/{tag.id}?include=bitmask")).status_code == 400


def test_another_datasets_tag_is_a_404(ds, owner, owner_api):
    other = create_dataset(owner, "other", "meta")
    make_samples(other, 2)
    foreign = make_tag(other, "theirs", [0, 1])
    assert owner_api.get(url(ds, f"/{foreign.id}")).status_code == 404
    assert owner_api.delete(url(ds, f"/{foreign.id}")).status_code == 404
    assert owner_api.get(url(ds, f"/{foreign.id}/export?format=csv")).status_code == 404
    assert Tag.objects.filter(pk=foreign.pk).exists()


# --- create ----------------------------------------------------------------------------------------


def test_create_from_sample_ids(ds, editor_api):
    root = Tag.objects.get(dataset=ds, name="initial-tag")
    ids = [sample_id(ds, i) for i in (3, 5, 5, 9)]
    response = editor_api.post(url(ds), {"name": "picked", "sample_ids": ids, "parent": root.id}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["count"] == 3 and body["origin"] == "selection" and body["parent"] == root.id
    assert body["creator"] == "ed"
    assert idx_set(ds, "picked") == {3, 5, 9}


def test_create_from_file_names(ds, editor_api):
    names = ["img_000001.jpg", "img_000019.jpg"]
    response = editor_api.post(url(ds), {"name": "by name", "file_names": names}, format="json")
    assert response.status_code == 201, response.content
    assert idx_set(ds, "by name") == {1, 19}


def test_unknown_ids_and_names_are_named(ds, editor_api):
    ids = [sample_id(ds, 0)] + [f"{i:024x}" for i in range(12)]
    response = editor_api.post(url(ds), {"name": "x", "sample_ids": ids}, format="json")
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail.startswith("sample_ids: 12 unknown sample id(s)") and "'000000000000000000000000'" in detail
    assert "and 2 more" in detail
    response = editor_api.post(url(ds), {"name": "x", "file_names": ["img_000000.jpg", "nope.jpg"]}, format="json")
    assert response.status_code == 400
    assert "'nope.jpg'" in response.json()["detail"]
    assert tag_names(ds) == {"initial-tag"}


def test_ids_of_another_dataset_are_unknown(ds, owner):
    other = create_dataset(owner, "other", "meta")
    make_samples(other, 1)
    with pytest.raises(Exception) as err:
        tagging.tag_from_sample_ids(ds, "x", [sample_id(other, 0)])
    assert "unknown sample id" in str(err.value)


@pytest.mark.parametrize("operation", ["union", "intersection", "difference"])
def test_arithmetic_matches_python_sets(ds, editor_api, operation):
    a, b = {1, 2, 3, 4, 10, 19}, {3, 4, 5, 6, 19}
    tag_a, tag_b = make_tag(ds, "a", a), make_tag(ds, "b", b)
    expected = {"union": a | b, "intersection": a & b, "difference": a - b}[operation]
    response = editor_api.post(
        url(ds), {"name": "result", "operation": operation, "tags": [tag_a.id, tag_b.id]}, format="json"
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["origin"] == "arithmetic" and body["parent"] == tag_a.id and body["count"] == len(expected)
    assert body["origin_detail"]["operation"] == operation
    assert idx_set(ds, "result") == expected


def test_arithmetic_over_three_tags_folds_left(ds, editor_api):
    sets = [{1, 2, 3, 4}, {2, 3}, {4, 5}]
    tags = [make_tag(ds, f"t{i}", s) for i, s in enumerate(sets)]
    response = editor_api.post(
        url(ds), {"name": "r", "operation": "difference", "tags": [t.id for t in tags]}, format="json"
    )
    assert response.status_code == 201
    assert idx_set(ds, "r") == {1}


def test_arithmetic_bad_input(ds, owner, editor_api):
    a, b = make_tag(ds, "a", {1, 2}), make_tag(ds, "b", {5, 6})
    other = create_dataset(owner, "other", "meta")
    make_samples(other, 3)
    foreign = make_tag(other, "theirs", {0})
    cases = [
        ({"operation": "xor", "tags": [a.id, b.id]}, "operation:"),
        ({"operation": "union", "tags": [a.id]}, "tags:"),
        ({"operation": "union", "tags": a.id}, "tags:"),
        ({"operation": "union", "tags": [a.id, foreign.id]}, "tags: no tag with id"),
        ({"operation": "union", "tags": [a.id, 7]}, "tags:"),
        ({"operation": "union"}, "tags:"),
        ({"operation": "intersection", "tags": [a.id, b.id]}, "empty"),
    ]
    for body, fragment in cases:
        response = editor_api.post(url(ds), {"name": "r", **body}, format="json")
        assert response.status_code == 400, (body, response.content)
        assert fragment in response.json()["detail"], (body, response.json())
    assert tag_names(ds) == {"initial-tag", "a", "b"}


def test_arithmetic_on_two_tags_of_100k_samples(dataset, editor_api, django_assert_max_num_queries):
    # Bitmasks built directly: arithmetic reads the two masks, never the samples.
    n = 100_000
    rng = np.random.default_rng(7)
    a_bits, b_bits = rng.random(n) < 0.5, rng.random(n) < 0.3
    tag_a = tagging.create_tag(dataset, "a", a_bits, origin=TagOrigin.SELECTION, origin_detail={})
    tag_b = tagging.create_tag(dataset, "b", b_bits, origin=TagOrigin.SELECTION, origin_detail={})
    a, b = set(np.flatnonzero(a_bits).tolist()), set(np.flatnonzero(b_bits).tolist())
    for operation, expected in (("union", a | b), ("intersection", a & b), ("difference", a - b)):
        with django_assert_max_num_queries(15):
            response = editor_api.post(
                url(dataset), {"name": operation, "operation": operation, "tags": [tag_a.id, tag_b.id]}, format="json"
            )
        assert response.status_code == 201, response.content
        assert response.json()["count"] == len(expected)
        assert idx_set(dataset, operation) == expected


@pytest.fixture
def run(ds, editor):
    """A succeeded run that scored samples 0..9 (its input tag `first-ten`)."""
    first_ten = make_tag(ds, "first-ten", range(10))
    run = SamplingRun.objects.create(
        dataset=ds,
        name="coreset 1",
        strategy="coreset",
        status=RunStatus.SUCCEEDED,
        score_count=10,
        input_tag=first_ten,
        creator=editor,
    )
    order = [7, 2, 9, 0, 4, 1, 8, 3, 6, 5]  # rank 1 is sample idx 7
    samples = {s.idx: s for s in Sample.objects.filter(dataset=ds, idx__lt=10)}
    ImportanceScore.objects.bulk_create(
        [ImportanceScore(run=run, sample=samples[i], rank=r + 1, score=10.0 - r) for r, i in enumerate(order)]
    )
    return run


def test_create_from_a_runs_top_k(ds, editor_api, run):
    response = editor_api.post(url(ds), {"name": "top 3", "sampling_run": run.id, "top_k": 3}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["origin"] == "sampling" and body["count"] == 3
    assert body["parent"] == run.input_tag_id
    assert body["origin_detail"]["top_k"] == 3 and body["origin_detail"]["sampling_run"] == run.id
    assert idx_set(ds, "top 3") == {7, 2, 9}
    response = editor_api.post(url(ds), {"name": "all", "sampling_run": run.id, "top_k": 10}, format="json")
    assert response.status_code == 201
    assert idx_set(ds, "all") == set(range(10))


def test_run_tag_bad_input(ds, owner, editor_api, run):
    other = create_dataset(owner, "other", "meta")
    foreign_run = SamplingRun.objects.create(
        dataset=other, name="x", strategy="random", status=RunStatus.SUCCEEDED, score_count=1
    )
    pending = SamplingRun.objects.create(dataset=ds, name="y", strategy="random", status=RunStatus.RUNNING)
    cases = [
        ({"sampling_run": run.id, "top_k": 0}, "top_k:"),
        ({"sampling_run": run.id, "top_k": 11}, "top_k: must be between 1 and 10"),
        ({"sampling_run": run.id, "top_k": "3"}, "top_k:"),
        ({"sampling_run": run.id, "top_k": True}, "top_k:"),
        ({"sampling_run": run.id, "top_k": 2.5}, "top_k:"),
        ({"sampling_run": run.id}, "top_k:"),
        ({"sampling_run": foreign_run.id, "top_k": 1}, "sampling_run: no sampling run"),
        ({"sampling_run": "f" * 24, "top_k": 1}, "sampling_run: no sampling run"),
        ({"sampling_run": pending.id, "top_k": 1}, "sampling_run: the run is running"),
    ]
    for body, fragment in cases:
        response = editor_api.post(url(ds), {"name": "r", **body}, format="json")
        assert response.status_code == 400, (body, response.content)
        assert fragment in response.json()["detail"], (body, response.json())
    assert tag_names(ds) == {"initial-tag", "first-ten"}


def test_tag_from_run_service_takes_a_run_object(ds, editor, run):
    tag = sampling_tagging.tag_from_run(ds, run, 2, "slider", editor)
    assert set(tag.indices().tolist()) == {7, 2} and tag.creator == editor


def test_exactly_one_way_to_create(ds, editor_api):
    a = make_tag(ds, "a", {1})
    bodies = [
        {"name": "x"},
        {"name": "x", "sample_ids": [sample_id(ds, 1)], "file_names": ["img_000001.jpg"]},
        {"name": "x", "sample_ids": [sample_id(ds, 1)], "tags": [a.id, a.id]},
        {"name": "x", "file_names": ["img_000001.jpg"], "top_k": 3},
        {"file_names": ["img_000001.jpg"]},
    ]
    for body in bodies:
        response = editor_api.post(url(ds), body, format="json")
        assert response.status_code == 400, (body, response.content)
    assert editor_api.post(url(ds), "[1, 2]", content_type="application/json").status_code == 400
    assert editor_api.post(url(ds), '{"name": ', content_type="application/json").status_code == 400
    assert tag_names(ds) == {"initial-tag", "a"}


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("initial-tag", "already exists"),
        ("", "empty"),
        ("   ", "empty"),
        (" padded", "spaces"),
        ("tab\there", "control"),
        ("x" * 201, "200"),
        (5, "string"),
        (None, "string"),
    ],
)
def test_names_are_checked(ds, editor_api, name, fragment):
    response = editor_api.post(url(ds), {"name": name, "file_names": ["img_000001.jpg"]}, format="json")
    assert response.status_code == 400, response.content
    detail = response.json()["detail"]
    assert detail.startswith("name:") and fragment in detail, detail
    assert tag_names(ds) == {"initial-tag"}


def test_accepted_names(ds, editor_api):
    for name in ("Weather: rain 2024-05", "x" * 200, "nuit été"):
        response = editor_api.post(url(ds), {"name": name, "file_names": ["img_000001.jpg"]}, format="json")
        assert response.status_code == 201, (name, response.content)


def test_parent_must_be_a_tag_of_the_dataset(ds, owner, editor_api):
    other = create_dataset(owner, "other", "meta")
    make_samples(other, 1)
    foreign = make_tag(other, "theirs", {0})
    response = editor_api.post(
        url(ds), {"name": "x", "file_names": ["img_000001.jpg"], "parent": foreign.id}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["detail"].startswith("parent:")
    assert tag_names(ds) == {"initial-tag"}


# --- filter ----------------------------------------------------------------------------------------


def test_create_from_a_filter(ds, editor_api):
    rear = make_tag(ds, "rear", range(1, 20, 2))
    body = {
        "name": "warm rear",
        "filter": {"tag": rear.id, "conditions": [{"path": "weather.temperature", "op": "gte", "value": 15}]},
    }
    response = editor_api.post(url(ds), body, format="json")
    assert response.status_code == 201, response.content
    created = response.json()
    assert created["origin"] == "filter" and created["parent"] == rear.id
    expected = {i for i in range(20) if i % 2 == 1 and i * 1.5 >= 15}
    assert idx_set(ds, "warm rear") == expected
    assert created["origin_detail"]["filter"] == body["filter"]


def test_filter_bad_input(ds, editor_api):
    cases = [
        {"conditions": [{"path": "weather..x", "op": "eq", "value": 1}]},
        {"conditions": [{"path": "n", "op": "like", "value": 1}]},
        {"conditions": [{"path": "n", "op": "gt", "value": 1000}]},  # matches nothing: empty tag
        {"tag": "0" * 24},
        "not an object",
    ]
    for flt in cases:
        response = editor_api.post(url(ds), {"name": "f", "filter": flt}, format="json")
        assert response.status_code == 400, (flt, response.content)
        detail = response.json()["detail"]
        assert detail.startswith("filter") or "empty" in detail, detail
    assert tag_names(ds) == {"initial-tag"}


# --- delete ----------------------------------------------------------------------------------------


def test_delete(ds, editor_api, viewer_api):
    tag = make_tag(ds, "gone", {1, 2})
    child = make_tag(ds, "child", {1}, parent=tag)
    assert viewer_api.delete(url(ds, f"/{tag.id}")).status_code == 403
    assert editor_api.delete(url(ds, f"/{tag.id}")).status_code == 204
    assert not Tag.objects.filter(pk=tag.pk).exists()
    child.refresh_from_db()
    assert child.parent is None
    assert editor_api.delete(url(ds, f"/{tag.id}")).status_code == 404


def test_initial_tag_cannot_be_deleted(ds, owner_api):
    root = Tag.objects.get(dataset=ds, name="initial-tag")
    response = owner_api.delete(url(ds, f"/{root.id}"))
    assert response.status_code == 400
    assert "initial-tag" in response.json()["detail"]
    assert Tag.objects.filter(pk=root.pk).exists()


# --- access ----------------------------------------------------------------------------------------


def test_access(ds, viewer_api, outsider_api, anon_api):
    tag = Tag.objects.get(dataset=ds, name="initial-tag")
    body = {"name": "x", "file_names": ["img_000001.jpg"]}
    assert viewer_api.post(url(ds), body, format="json").status_code == 403
    assert viewer_api.get(url(ds, f"/{tag.id}/export?format=filenames")).status_code == 200
    for client, code in ((outsider_api, 404), (anon_api, 401)):
        assert client.get(url(ds)).status_code == code
        assert client.post(url(ds), body, format="json").status_code == code
        assert client.get(url(ds, f"/{tag.id}")).status_code == code
        assert client.delete(url(ds, f"/{tag.id}")).status_code == code
        assert client.get(url(ds, f"/{tag.id}/export?format=csv")).status_code == code
    assert tag_names(ds) == {"initial-tag"}


def test_unknown_dataset_is_a_404(editor_api):
    assert editor_api.get("/api/v1/datasets/" + "0" * 24 + "/tags").status_code == 404


# --- export ----------------------------------------------------------------------------------------


def export(client, dataset, tag, fmt):
    response = client.get(url(dataset, f"/{tag.id}/export?format={fmt}"))
    assert response.status_code == 200, response.content
    return response, response.getvalue().decode()


def test_export_filenames(ds, viewer_api):
    tag = make_tag(ds, "Rainy / night?", {0, 3, 6})
    response, text = export(viewer_api, ds, tag, "filenames")
    assert response["Content-Type"].startswith("text/plain")
    assert response["Content-Disposition"] == 'attachment; filename="Rainy_night.txt"'
    assert text.splitlines() == ["img_000000.jpg", "img_000003.jpg", "img_000006.jpg"]


def test_export_csv_with_metadata_paths(ds, viewer_api):
    Sample.objects.filter(dataset=ds, idx=3).update(metadata={"camera": 'rear, "left"', "width": 5, "tags": [1, 2]})
    tag = make_tag(ds, "csv", {2, 3})
    response, text = export(viewer_api, ds, tag, "csv")
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0])[:5] == ["file_name", "sample_id", "idx", "width", "height"]
    assert set(list(rows[0])[5:]) == {"camera", "metadata.width", "n", "tags", "weather.rain", "weather.temperature"}
    first, second = rows
    assert first["file_name"] == "img_000002.jpg" and first["sample_id"] == sample_id(ds, 2) and first["idx"] == "2"
    assert first["width"] == "640" and first["camera"] == "front" and first["weather.temperature"] == "3.0"
    assert first["weather.rain"] == "false" and first["tags"] == ""
    assert second["camera"] == 'rear, "left"' and second["metadata.width"] == "5" and second["tags"] == "[1,2]"
    assert second["n"] == ""


def test_export_csv_uses_configured_fields(ds, viewer_api):
    MetadataField.objects.create(dataset=ds, path="weather.rain", type="boolean")
    MetadataField.objects.create(dataset=ds, path="camera", type="categorical_string")
    tag = make_tag(ds, "cfg", {0, 1})
    _response, text = export(viewer_api, ds, tag, "csv")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["file_name", "sample_id", "idx", "width", "height", "camera", "weather.rain"]
    assert rows[1][5:] == ["front", "true"] and rows[2][5:] == ["rear", "false"]


def test_export_json(ds, viewer_api):
    tag = make_tag(ds, "json", {4, 5})
    response, text = export(viewer_api, ds, tag, "json")
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == 'attachment; filename="json.json"'
    items = json.loads(text)
    assert [item["idx"] for item in items] == [4, 5]
    # A meta dataset keeps no pixels: no image link.
    assert items[0] == {
        "id": sample_id(ds, 4),
        "idx": 4,
        "file_name": "img_000004.jpg",
        "width": 640,
        "height": 480,
        "image_url": None,
        "metadata": street_meta(4),
    }


def test_export_empty_metadata_and_json_of_many_samples_across_batches(dataset, viewer_api):
    make_samples(dataset, 12_000)
    tag = make_tag(dataset, "big", range(0, 12_000, 2))
    _response, text = export(viewer_api, dataset, tag, "json")
    items = json.loads(text)
    assert [item["idx"] for item in items] == list(range(0, 12_000, 2))
    _response, text = export(viewer_api, dataset, tag, "filenames")
    assert len(text.splitlines()) == 6_000


@pytest.mark.parametrize("mode, kind", [("full", "image"), ("thumbnails", "thumbnail")])
def test_export_label_studio_points_at_the_image(owner, owner_api, mode, kind):
    ds = create_dataset(owner, "pics", mode)
    make_samples(ds, 3, lambda i: {"camera": "front", "image": "overridden"})
    tag = make_tag(ds, "to label", {0, 2})
    response, text = export(owner_api, ds, tag, "label-studio")
    assert response["Content-Disposition"] == 'attachment; filename="to_label-label-studio.json"'
    tasks = json.loads(text)
    assert [t["id"] for t in tasks] == [0, 2]
    sid = sample_id(ds, 2)
    data = dict(tasks[1]["data"])
    link = data.pop("image")
    assert data == {"file_name": "img_000002.jpg", "sample_id": sid, "camera": "front"}
    # A signed link (Label Studio sends no token), valid for a week by default.
    path, query = link.split("?")
    assert path == f"http://testserver/api/v1/datasets/{ds.id}/samples/{sid}/{kind}/signed"
    params = dict(part.split("=") for part in query.split("&"))
    assert set(params) == {"user", "expires", "signature"} and params["user"] == str(owner.pk)
    assert 7 * 24 * 3600 - 60 < int(params["expires"]) - time.time() <= 7 * 24 * 3600
    _response, text = export(owner_api, ds, tag, "json")
    assert [item["image_url"].split("?")[0] for item in json.loads(text)] == [
        f"http://testserver/api/v1/datasets/{ds.id}/samples/{sample_id(ds, i)}/{kind}/signed" for i in (0, 2)
    ]


def test_export_label_studio_of_a_meta_dataset_names_the_file(ds, viewer_api):
    tag = make_tag(ds, "meta", {1})
    _response, text = export(viewer_api, ds, tag, "label-studio")
    [task] = json.loads(text)
    assert task["data"]["image"] == "img_000001.jpg" and task["data"]["camera"] == "rear"


def test_export_unknown_format(ds, viewer_api):
    tag = Tag.objects.get(dataset=ds, name="initial-tag")
    for query in ("?format=xml", "", "?format=api"):
        response = viewer_api.get(url(ds, f"/{tag.id}/export{query}"))
        assert response.status_code == 400, (query, response.content)
        assert "filenames, csv, json, label-studio" in response.json()["detail"]


def test_viewer_membership_is_enough_to_export(ds, outsider, outsider_api):
    Membership.objects.create(dataset=ds, user=outsider, role=Role.VIEWER)
    tag = Tag.objects.get(dataset=ds, name="initial-tag")
    _response, text = export(outsider_api, ds, tag, "filenames")
    assert len(text.splitlines()) == 20


def test_walkthrough_samples_metadata_filter_tag_export(dataset, editor, editor_api):
    """Samples registered by the upload service, metadata from a Lightly document, a filter tag, a CSV."""
    from curation.services import add_samples

    result = add_samples(dataset, [{"file_name": f"cam/{i}.jpg"} for i in range(6)], creator=editor)
    root = result.initial_tag
    document = {
        "images": [{"file_name": f"cam/{i}.jpg", "id": i} for i in range(6)],
        "metadata": [{"image_id": i, "weather": {"rain": i % 2 == 0}, "speed": i * 10} for i in range(6)],
    }
    assert editor_api.post(f"/api/v1/datasets/{dataset.id}/metadata", document, format="json").status_code == 200
    response = editor_api.post(
        url(dataset),
        {
            "name": "rainy fast",
            "filter": {
                "conditions": [
                    {"path": "weather.rain", "op": "eq", "value": True},
                    {"path": "speed", "op": "gte", "value": 20},
                ]
            },
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    tag = Tag.objects.get(pk=response.json()["id"])
    assert tag.count == 2 and tag.origin == "filter"
    _response, text = export(editor_api, dataset, tag, "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["file_name"], r["speed"], r["weather.rain"]) for r in rows] == [
        ("cam/2.jpg", "20", "true"),
        ("cam/4.jpg", "40", "true"),
    ]
    assert root is not None and root.count == 6


def test_export_csv_prefixes_formula_cells(ds, viewer_api):
    """OWASP CSV injection: text starting with = + - @ tab or CR gets a leading quote; numbers stay numbers."""
    Sample.objects.filter(dataset=ds, idx=1).update(
        file_name="=cmd.jpg",
        metadata={"camera": '=HYPERLINK("http://x")', "note": "+1", "who": "@me", "t": "\tx", "n": -3.5},
    )
    Sample.objects.filter(dataset=ds, idx=2).update(metadata={"camera": "-rear", "note": "\rx", "who": "a=b"})
    tag = make_tag(ds, "formulas", {1, 2})
    _response, text = export(viewer_api, ds, tag, "csv")
    first, second = list(csv.DictReader(io.StringIO(text)))
    assert first["file_name"] == "'=cmd.jpg" and first["camera"] == '\'=HYPERLINK("http://x")'
    assert first["note"] == "'+1" and first["who"] == "'@me" and first["t"] == "'\tx" and first["n"] == "-3.5"
    assert second["camera"] == "'-rear" and second["note"] == "'\rx" and second["who"] == "a=b"


def test_export_is_a_service_of_plain_values(ds):
    tag = Tag.objects.get(dataset=ds, name="initial-tag")
    export = tagging.export_tag(ds, tag, "filenames")
    assert export.content_type.startswith("text/plain") and export.filename.endswith(".txt")
    assert len("".join(export.body).splitlines()) == 20
    with pytest.raises(DomainError) as caught:
        tagging.export_tag(ds, tag, "xml")
    assert caught.value.field == "format" and "filenames, csv, json, label-studio" in caught.value.message
