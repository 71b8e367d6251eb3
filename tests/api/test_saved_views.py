"""Saved views: a named filter + sort + map colour per dataset, through the API and the Python client."""

from __future__ import annotations

import pytest

from curation.models import MetadataField, SavedView, Tag
from curation.services import add_samples

pytestmark = pytest.mark.django_db


def url(dataset, rest: str = "") -> str:
    return f"/api/v1/datasets/{dataset.id}/views{rest}"


@pytest.fixture
def data(dataset):
    add_samples(dataset, [{"file_name": f"f{i}.jpg", "metadata": {"speed": i, "road": "ab"[i % 2]}} for i in range(10)])
    MetadataField.objects.create(dataset=dataset, path="speed", type="int")
    return dataset


FAST = {"conditions": [{"path": "speed", "op": "gte", "value": 6}]}


def test_save_list_get_rename_and_delete(editor_api, viewer_api, data):
    body = {"name": "fast ones", "filter": FAST, "sort": "-speed", "color": "field:speed"}
    created = editor_api.post(url(data), body, format="json")
    assert created.status_code == 201, created.content
    view = created.json()
    assert (view["name"], view["filter"], view["sort"], view["color"], view["creator"]) == (
        "fast ones",
        FAST,
        "-speed",
        "field:speed",
        "ed",
    )
    assert [v["name"] for v in viewer_api.get(url(data)).json()] == ["fast ones"]
    assert viewer_api.get(url(data, f"/{view['id']}")).json()["filter"] == FAST
    renamed = editor_api.patch(url(data, f"/{view['id']}"), {"name": "speedy"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["name"] == "speedy" and renamed.json()["sort"] == "-speed"
    assert editor_api.delete(url(data, f"/{view['id']}")).status_code == 204
    assert not SavedView.objects.exists()


def test_a_view_becomes_a_tag_to_sample_from_or_export(editor_api, data):
    view = editor_api.post(url(data), {"name": "fast", "filter": FAST}, format="json").json()
    response = editor_api.post(url(data, f"/{view['id']}/tag"), {"name": "fast now"}, format="json")
    assert response.status_code == 201, response.content
    assert Tag.objects.get(dataset=data, name="fast now").indices().tolist() == [6, 7, 8, 9]


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "name: is required"),
        ({"name": "  "}, "name: must be a non-empty string"),
        ({"name": "x", "colour": "red"}, "colour: unknown key"),
        ({"name": "x", "filter": {"tags": "a"}}, "filter: unknown keys ['tags']"),
        ({"name": "x", "filter": {"tag": "0" * 24}}, "filter.tag: no tag with id"),
        ({"name": "x", "filter": {"conditions": [{"path": "speed", "op": "near", "value": 1}]}}, "filter.conditions"),
        ({"name": "x", "sort": "bad path!"}, "sort: 'bad path!'"),
        ({"name": "x", "color": "paint:red"}, "color: 'paint:red'"),
        ({"name": "x", "color": "field:road"}, "color: 'road' is not a configured field"),
    ],
)
def test_bad_input_is_named_and_saves_nothing(editor_api, data, body, message):
    response = editor_api.post(url(data), body, format="json")
    assert response.status_code == 400 and response.json()["detail"].startswith(message), response.json()
    assert not SavedView.objects.exists()


def test_a_name_is_unique_in_its_dataset(editor_api, data):
    assert editor_api.post(url(data), {"name": "Mine"}, format="json").status_code == 201
    other = editor_api.post(url(data), {"name": "mine"}, format="json")
    assert (
        other.status_code == 400
        and other.json()["detail"] == "name: a view named 'mine' already exists in this dataset"
    )
    second = editor_api.post(url(data), {"name": "two"}, format="json").json()
    clash = editor_api.patch(url(data, f"/{second['id']}"), {"name": "MINE"}, format="json")
    assert clash.status_code == 400 and SavedView.objects.get(pk=second["id"]).name == "two"


def test_roles_and_outsiders(viewer_api, outsider_api, editor_api, data):
    view = editor_api.post(url(data), {"name": "v"}, format="json").json()
    assert viewer_api.post(url(data), {"name": "w"}, format="json").status_code == 403
    assert viewer_api.patch(url(data, f"/{view['id']}"), {"name": "w"}, format="json").status_code == 403
    assert viewer_api.delete(url(data, f"/{view['id']}")).status_code == 403
    assert outsider_api.get(url(data)).status_code == 404
    assert outsider_api.get(url(data, f"/{view['id']}")).status_code == 404
    assert editor_api.get(url(data, "/" + "0" * 24)).status_code == 404


def _body(response) -> str:
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content).decode()


def test_a_view_exports_directly_in_every_format_without_making_a_tag(editor_api, viewer_api, data):
    view = editor_api.post(url(data), {"name": "fast / now", "filter": FAST}, format="json").json()
    tags_before = Tag.objects.count()
    response = viewer_api.get(url(data, f"/{view['id']}/export"), {"format": "filenames"})
    assert response["Content-Disposition"] == 'attachment; filename="fast_now.txt"'
    assert _body(response).splitlines() == ["f6.jpg", "f7.jpg", "f8.jpg", "f9.jpg"]
    rows = _body(viewer_api.get(url(data, f"/{view['id']}/export"), {"format": "csv"})).splitlines()
    assert rows[0].startswith("file_name,sample_id,idx") and [r.split(",")[0] for r in rows[1:]] == [
        "f6.jpg",
        "f7.jpg",
        "f8.jpg",
        "f9.jpg",
    ]
    import json

    items = json.loads(_body(viewer_api.get(url(data, f"/{view['id']}/export"), {"format": "json"})))
    assert [item["file_name"] for item in items] == ["f6.jpg", "f7.jpg", "f8.jpg", "f9.jpg"]
    tasks = json.loads(_body(viewer_api.get(url(data, f"/{view['id']}/export"), {"format": "label-studio"})))
    assert len(tasks) == 4
    assert Tag.objects.count() == tags_before  # nothing was stored
    # The view is read when exported: a changed filter exports its new matches.
    editor_api.patch(url(data, f"/{view['id']}"), {"filter": {"conditions": ["road:ieq:B"]}}, format="json")
    text = _body(viewer_api.get(url(data, f"/{view['id']}/export"), {"format": "filenames"}))
    assert text.splitlines() == ["f1.jpg", "f3.jpg", "f5.jpg", "f7.jpg", "f9.jpg"]


def test_the_current_filter_exports_directly(viewer_api, data, owner):
    import json

    from curation import tagging

    base = f"/api/v1/datasets/{data.id}/export"
    text = _body(viewer_api.get(base, {"format": "filenames", "filter": json.dumps(FAST), "name": "quick"}))
    assert text.splitlines() == ["f6.jpg", "f7.jpg", "f8.jpg", "f9.jpg"]
    everything = viewer_api.get(base, {"format": "filenames"})
    assert everything["Content-Disposition"] == 'attachment; filename="samples.txt"'
    assert len(_body(everything).splitlines()) == 10
    tag = tagging.create_tag(data, "some", [1, 2, 3, 8], origin="selection", origin_detail={}, creator=owner)
    within = {"tag": tag.id, "conditions": [{"path": "road", "op": "icontains", "value": "A"}]}
    assert _body(viewer_api.get(base, {"format": "filenames", "filter": json.dumps(within)})).splitlines() == [
        "f2.jpg",
        "f8.jpg",
    ]


@pytest.mark.parametrize(
    "params, message",
    [
        ({"format": "xml"}, "format: unknown format 'xml'"),
        # The format is checked before the filter is parsed and run.
        (
            {"format": "xml", "filter": '{"conditions": ["speed:iin:abc"]}'},
            "format: unknown format 'xml'; accepted: filenames, csv, json, label-studio",
        ),
        ({"format": "csv", "filter": "{"}, "filter: must be a JSON object"),
        (
            {"format": "csv", "filter": '{"conditions": ["speed:iin:abc"]}'},
            "filter.conditions[0]: speed iin: value must be a JSON list",
        ),
        ({"format": "csv", "filter": '{"tag": "000000000000000000000000"}'}, "filter.tag: no tag with id"),
    ],
)
def test_a_bad_export_request_is_named(viewer_api, data, params, message):
    response = viewer_api.get(f"/api/v1/datasets/{data.id}/export", params)
    assert response.status_code == 400 and response.json()["detail"].startswith(message), response.json()


def test_exports_of_views_and_filters_need_membership(outsider_api, editor_api, data):
    view = editor_api.post(url(data), {"name": "v", "filter": FAST}, format="json").json()
    assert outsider_api.get(url(data, f"/{view['id']}/export"), {"format": "csv"}).status_code == 404
    assert outsider_api.get(f"/api/v1/datasets/{data.id}/export", {"format": "csv"}).status_code == 404
    assert editor_api.get(url(data, "/" + "0" * 24 + "/export"), {"format": "csv"}).status_code == 404


def test_a_view_keeps_the_detection_tasks_whose_boxes_it_hides(editor_api, viewer_api, data):
    from curation.models import PredictionTask

    PredictionTask.objects.create(dataset=data, name="det", type="object-detection")
    PredictionTask.objects.create(dataset=data, name="gt", type="object-detection", is_labels=True)
    PredictionTask.objects.create(dataset=data, name="cls", type="classification")
    created = editor_api.post(url(data), {"name": "no boxes", "hidden_boxes": ["gt", "det", "gt"]}, format="json")
    assert created.status_code == 201, created.content
    view = created.json()
    assert view["hidden_boxes"] == ["gt", "det"]
    assert viewer_api.get(url(data, f"/{view['id']}")).json()["hidden_boxes"] == ["gt", "det"]
    changed = editor_api.patch(url(data, f"/{view['id']}"), {"hidden_boxes": []}, format="json")
    assert changed.status_code == 200 and changed.json()["hidden_boxes"] == []
    assert editor_api.post(url(data), {"name": "plain"}, format="json").json()["hidden_boxes"] == []
    for bad, message in [
        ("det", "hidden_boxes: must be a list of task names"),
        ([1], "hidden_boxes: must be a list of task names"),
        (["cls"], "hidden_boxes: 'cls' is not an object-detection task of this dataset (tasks: det, gt)"),
        (["nope"], "hidden_boxes: 'nope' is not an object-detection task"),
    ]:
        response = editor_api.patch(url(data, f"/{view['id']}"), {"hidden_boxes": bad}, format="json")
        assert response.status_code == 400 and response.json()["detail"].startswith(message), response.json()
    assert SavedView.objects.get(pk=view["id"]).hidden_boxes == []
