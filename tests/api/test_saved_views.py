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
