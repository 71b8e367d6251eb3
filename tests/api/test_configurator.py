"""The configurator: which metadata paths the app shows, as which type, with which fallback."""

import pytest

from curation.models import MetadataField
from tests.factories import make_samples

pytestmark = pytest.mark.django_db


def url(dataset, field_id=None):
    base = f"/api/v1/datasets/{dataset.id}/configurator"
    return base if field_id is None else f"{base}/{field_id}"


def test_create_list_get_patch_delete(dataset, editor_api, viewer_api):
    response = editor_api.post(
        url(dataset),
        {"path": "weather.temperature", "type": "float", "display_name": "Temperature", "fallback": 0},
        format="json",
    )
    assert response.status_code == 201, response.content
    field = response.json()
    assert field["path"] == "weather.temperature" and field["fallback"] == 0 and field["type"] == "float"

    listed = viewer_api.get(url(dataset))
    assert listed.status_code == 200
    assert [f["path"] for f in listed.json()] == ["weather.temperature"]
    assert viewer_api.get(url(dataset, field["id"])).json()["display_name"] == "Temperature"

    patched = editor_api.patch(url(dataset, field["id"]), {"fallback": 12.5, "display_name": "Temp"}, format="json")
    assert patched.status_code == 200, patched.content
    assert patched.json()["fallback"] == 12.5 and patched.json()["display_name"] == "Temp"

    assert editor_api.delete(url(dataset, field["id"])).status_code == 204
    assert not MetadataField.objects.filter(dataset=dataset).exists()
    assert viewer_api.get(url(dataset, field["id"])).status_code == 404


def test_display_name_defaults_to_the_path(dataset, editor_api):
    response = editor_api.post(url(dataset), {"path": "camera", "type": "categorical_string"}, format="json")
    assert response.status_code == 201
    assert response.json()["display_name"] == "camera" and response.json()["fallback"] is None


@pytest.mark.parametrize(
    "field_type, fallback",
    [
        ("int", "abc"),
        ("int", 1.5),
        ("int", True),
        ("categorical_int", "3"),
        ("float", True),
        ("float", "1.0"),
        ("categorical_string", 3),
        ("categorical_string", "nul\x00"),
        ("boolean", 1),
        ("boolean", "true"),
    ],
)
def test_fallback_must_fit_the_type(dataset, editor_api, field_type, fallback):
    response = editor_api.post(url(dataset), {"path": "x", "type": field_type, "fallback": fallback}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["detail"].startswith("fallback:")
    assert not MetadataField.objects.exists()


@pytest.mark.parametrize(
    "field_type, fallback",
    [
        ("int", -4),
        ("categorical_int", 2),
        ("float", 3),
        ("float", -0.5),
        ("categorical_string", "sunny"),
        ("boolean", False),
        ("int", None),
    ],
)
def test_fallbacks_that_fit(dataset, editor_api, field_type, fallback):
    response = editor_api.post(url(dataset), {"path": "x", "type": field_type, "fallback": fallback}, format="json")
    assert response.status_code == 201, response.content
    assert MetadataField.objects.get().fallback == fallback


@pytest.mark.parametrize("path", ["", "a..b", ".a", "a.", "we ather", "a/b", "a.b.c.d.e.f.g.h.i", "ä", " a", "x" * 301])
def test_path_grammar(dataset, editor_api, path):
    response = editor_api.post(url(dataset), {"path": path, "type": "int"}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["detail"].startswith("path:")
    assert not MetadataField.objects.exists()


def test_deepest_allowed_path(dataset, editor_api):
    response = editor_api.post(url(dataset), {"path": "a.b.c.d.e.f.g-h.i_j", "type": "int"}, format="json")
    assert response.status_code == 201, response.content


def test_duplicate_path_is_rejected(dataset, editor_api):
    first = editor_api.post(url(dataset), {"path": "camera", "type": "categorical_string"}, format="json")
    assert first.status_code == 201
    response = editor_api.post(url(dataset), {"path": "camera", "type": "int"}, format="json")
    assert response.status_code == 400
    assert "already exists" in response.json()["detail"]
    assert MetadataField.objects.get().type == "categorical_string"


def test_patch_checks_type_against_stored_fallback_and_path_duplicates(dataset, editor_api):
    a = editor_api.post(url(dataset), {"path": "a", "type": "float", "fallback": 0.5}, format="json").json()
    editor_api.post(url(dataset), {"path": "b", "type": "int"}, format="json")
    response = editor_api.patch(url(dataset, a["id"]), {"type": "int"}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("fallback:")
    response = editor_api.patch(url(dataset, a["id"]), {"path": "b"}, format="json")
    assert response.status_code == 400
    assert response.json()["detail"].startswith("path:")
    response = editor_api.patch(url(dataset, a["id"]), {"type": "bogus"}, format="json")
    assert response.status_code == 400
    stored = MetadataField.objects.get(pk=a["id"])
    assert (stored.path, stored.type, stored.fallback) == ("a", "float", 0.5)
    # A type change together with a fitting fallback goes through.
    response = editor_api.patch(url(dataset, a["id"]), {"type": "int", "fallback": 1}, format="json")
    assert response.status_code == 200


def test_bad_bodies(dataset, editor_api):
    assert editor_api.post(url(dataset), "{not json", content_type="application/json").status_code == 400
    assert editor_api.post(url(dataset), {"type": "int"}, format="json").status_code == 400
    assert editor_api.post(url(dataset), {"path": "a", "type": "text"}, format="json").status_code == 400
    assert editor_api.post(url(dataset), [1, 2], format="json").status_code == 400
    assert not MetadataField.objects.exists()


def test_access(dataset, editor_api, viewer_api, outsider_api, anon_api):
    field = editor_api.post(url(dataset), {"path": "a", "type": "int", "fallback": 1}, format="json").json()
    body = {"path": "b", "type": "int"}
    assert viewer_api.post(url(dataset), body, format="json").status_code == 403
    assert viewer_api.patch(url(dataset, field["id"]), {"fallback": 2}, format="json").status_code == 403
    assert viewer_api.delete(url(dataset, field["id"])).status_code == 403
    for client, code in ((outsider_api, 404), (anon_api, 401)):
        assert client.get(url(dataset)).status_code == code
        assert client.post(url(dataset), body, format="json").status_code == code
        assert client.get(url(dataset, field["id"])).status_code == code
        assert client.patch(url(dataset, field["id"]), {"fallback": 2}, format="json").status_code == code
        assert client.delete(url(dataset, field["id"])).status_code == code
    stored = MetadataField.objects.get()
    assert (stored.path, stored.fallback) == ("a", 1)


def test_a_field_of_another_dataset_is_a_404(dataset, owner, owner_api):
    from curation.services import create_dataset

    other = create_dataset(owner, "other", "meta")
    field = owner_api.post(url(other), {"path": "a", "type": "int"}, format="json").json()
    assert owner_api.get(url(dataset, field["id"])).status_code == 404
    assert owner_api.delete(url(dataset, field["id"])).status_code == 404
    assert MetadataField.objects.filter(pk=field["id"]).exists()


def test_a_numeric_type_for_a_path_holding_text_is_refused_in_words(editor_api, dataset):
    """Issue 11: the API, not only the page, refuses typing a text field as a number; nothing is saved."""
    make_samples(dataset, 6, metadata=lambda i: {"weather": {"scenario": ["rainy", "sunny"][i % 2], "temp": i / 2}})
    url = f"/api/v1/datasets/{dataset.id}/configurator"
    for field_type in ("int", "float", "categorical_int"):
        r = editor_api.post(url, {"path": "weather.scenario", "type": field_type}, format="json")
        assert r.status_code == 400, r.content
        assert "holds text" in r.json()["errors"]["type"][0] and "categorical_string" in r.json()["errors"]["type"][0]
    assert not MetadataField.objects.filter(dataset=dataset).exists()
    # What fits is accepted: text as categorical, numbers as float, a path no sample has yet (metadata may follow).
    assert (
        editor_api.post(url, {"path": "weather.scenario", "type": "categorical_string"}, format="json").status_code
        == 201
    )
    assert editor_api.post(url, {"path": "weather.temp", "type": "float"}, format="json").status_code == 201
    assert editor_api.post(url, {"path": "later.value", "type": "int"}, format="json").status_code == 201
    # Changing a field's type to one that does not fit is refused the same way.
    field = MetadataField.objects.get(dataset=dataset, path="weather.scenario")
    r = editor_api.patch(f"{url}/{field.id}", {"type": "int"}, format="json")
    assert r.status_code == 400 and "holds text" in r.json()["errors"]["type"][0]
