"""Datasets: create, list, get, rename, delete; members and roles."""

import re

import pytest
from django.core.files.storage import default_storage

from curation import storage
from curation.errors import DomainError
from curation.models import Dataset, Membership, Role, Sample, Tag
from curation.services import add_samples, create_dataset

pytestmark = pytest.mark.django_db

LIST = "/api/v1/datasets"


def detail(dataset, suffix=""):
    return f"/api/v1/datasets/{dataset.id}{suffix}"


# --- create ------------------------------------------------------------------------------------------


def test_create_returns_201_with_a_24_hex_id_and_the_caller_as_owner(owner_api, owner):
    response = owner_api.post(LIST, {"name": "  night drive  ", "upload_mode": "thumbnails"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert re.fullmatch(r"[0-9a-f]{24}", body["id"])
    assert body["name"] == "night drive"
    assert body["upload_mode"] == "thumbnails"
    assert body["owner"] == "olivia" and body["role"] == "owner"
    assert body["sample_count"] == 0 and body["tag_count"] == 0
    assert Membership.objects.get(dataset_id=body["id"]).user == owner


def test_create_defaults_to_full_mode(owner_api):
    response = owner_api.post(LIST, {"name": "plain"}, format="json")
    assert response.status_code == 201
    assert response.json()["upload_mode"] == "full"


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": 123}, "name"),
        ({"name": ["a"]}, "name"),
        ({"name": "ok\x00"}, "name"),
        ({"name": "ok", "upload_mode": "video"}, "upload_mode"),
        ({"name": "ok", "upload_mode": None}, "upload_mode"),
        (["name", "ok"], "body"),
    ],
)
def test_create_rejects_bad_input_and_writes_nothing(owner_api, body, field):
    response = owner_api.post(LIST, body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["detail"].startswith(field)
    assert Dataset.objects.count() == 0


def test_create_rejects_malformed_json(owner_api):
    response = owner_api.post(LIST, data='{"name": "x",', content_type="application/json")
    assert response.status_code == 400
    assert Dataset.objects.count() == 0


def test_anonymous_gets_401_everywhere(anon_api, dataset):
    assert anon_api.get(LIST).status_code == 401
    assert anon_api.post(LIST, {"name": "x"}, format="json").status_code == 401
    assert anon_api.get(detail(dataset)).status_code == 401
    assert anon_api.patch(detail(dataset), {"name": "x"}, format="json").status_code == 401
    assert anon_api.delete(detail(dataset)).status_code == 401
    assert anon_api.get(detail(dataset, "/members")).status_code == 401
    assert (
        anon_api.post(detail(dataset, "/members"), {"username": "oscar", "role": "viewer"}, format="json").status_code
        == 401
    )
    assert anon_api.delete(detail(dataset, "/members/vera")).status_code == 401
    assert Dataset.objects.filter(pk=dataset.pk, name="street scenes").exists()
    assert Membership.objects.filter(dataset=dataset).count() == 3


def test_a_bad_token_is_401(dataset):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token wn_not-a-real-token")
    assert client.get(LIST).status_code == 401


# --- list and get --------------------------------------------------------------------------------------


def test_list_shows_only_the_callers_datasets_with_counts_and_role(dataset, viewer_api, outsider_api, owner):
    add_samples(dataset, [{"file_name": f"{i}.jpg"} for i in range(5)])  # also makes initial-tag
    from curation.services import create_dataset

    create_dataset(owner, "private", "full")
    body = viewer_api.get(LIST).json()
    assert [d["name"] for d in body] == ["street scenes"]
    assert body[0]["role"] == "viewer" and body[0]["owner"] == "olivia"
    assert body[0]["sample_count"] == 5 and body[0]["tag_count"] == 1
    assert body[0]["upload_mode"] == "meta" and body[0]["created_at"]
    assert outsider_api.get(LIST).json() == []


def test_get_one_dataset(dataset, editor_api):
    response = editor_api.get(detail(dataset))
    assert response.status_code == 200
    assert response.json()["id"] == dataset.id and response.json()["role"] == "editor"


def test_outsider_and_unknown_ids_are_404(dataset, outsider_api, owner_api):
    for call in (outsider_api.get, outsider_api.delete):
        assert call(detail(dataset)).status_code == 404
    assert outsider_api.patch(detail(dataset), {"name": "mine"}, format="json").status_code == 404
    assert outsider_api.get(detail(dataset, "/members")).status_code == 404
    assert (
        outsider_api.post(
            detail(dataset, "/members"), {"username": "oscar", "role": "owner"}, format="json"
        ).status_code
        == 404
    )
    assert outsider_api.delete(detail(dataset, "/members/olivia")).status_code == 404
    assert owner_api.get("/api/v1/datasets/" + "0" * 24).status_code == 404
    assert owner_api.get("/api/v1/datasets/not-an-id").status_code == 404
    assert Dataset.objects.get(pk=dataset.pk).name == "street scenes"
    assert not Membership.objects.filter(dataset=dataset, user__username="oscar").exists()


# --- rename --------------------------------------------------------------------------------------------


def test_editor_renames(dataset, editor_api):
    response = editor_api.patch(detail(dataset), {"name": " city streets "}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["name"] == "city streets"
    assert Dataset.objects.get(pk=dataset.pk).name == "city streets"


def test_viewer_cannot_rename(dataset, viewer_api):
    response = viewer_api.patch(detail(dataset), {"name": "mine"}, format="json")
    assert response.status_code == 403
    assert Dataset.objects.get(pk=dataset.pk).name == "street scenes"


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "y" * 201}, "name"),
        ({"name": 7}, "name"),
        ({"name": "ok", "upload_mode": "full"}, "upload_mode"),
        ([1], "body"),
    ],
)
def test_rename_rejects_bad_input(dataset, owner_api, body, field):
    response = owner_api.patch(detail(dataset), body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["detail"].startswith(field)
    fresh = Dataset.objects.get(pk=dataset.pk)
    assert (fresh.name, fresh.upload_mode) == ("street scenes", "meta")


# --- delete --------------------------------------------------------------------------------------------


def test_owner_deletes_dataset_with_samples_tags_and_files(dataset, owner_api, django_capture_on_commit_callbacks):
    add_samples(dataset, [{"file_name": f"{i}.jpg"} for i in range(3)])
    key = storage.save_bytes(f"{dataset.storage_prefix}thumbnails/0.webp", b"pixels")
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_api.delete(detail(dataset))
    assert response.status_code == 204
    assert not Dataset.objects.filter(pk=dataset.pk).exists()
    assert not Sample.objects.filter(dataset_id=dataset.pk).exists()
    assert not Tag.objects.filter(dataset_id=dataset.pk).exists()
    assert not default_storage.exists(key)
    assert owner_api.get(detail(dataset)).status_code == 404


@pytest.mark.parametrize("client", ["editor_api", "viewer_api"])
def test_only_an_owner_deletes(dataset, client, request):
    response = request.getfixturevalue(client).delete(detail(dataset))
    assert response.status_code == 403
    assert Dataset.objects.filter(pk=dataset.pk).exists()


# --- members -------------------------------------------------------------------------------------------


def test_members_are_listed_for_any_member(dataset, viewer_api):
    response = viewer_api.get(detail(dataset, "/members"))
    assert response.status_code == 200
    assert {(m["username"], m["role"]) for m in response.json()} == {
        ("olivia", "owner"),
        ("ed", "editor"),
        ("vera", "viewer"),
    }


def test_owner_adds_a_member_who_then_sees_the_dataset(dataset, owner_api, outsider_api):
    response = owner_api.post(detail(dataset, "/members"), {"username": "oscar", "role": "viewer"}, format="json")
    assert response.status_code == 201, response.content
    assert response.json()["username"] == "oscar" and response.json()["role"] == "viewer"
    assert outsider_api.get(detail(dataset)).json()["role"] == "viewer"
    # Adding again changes the role.
    response = owner_api.post(detail(dataset, "/members"), {"username": "oscar", "role": "editor"}, format="json")
    assert response.status_code == 200
    assert Membership.objects.get(dataset=dataset, user__username="oscar").role == Role.EDITOR


@pytest.mark.parametrize(
    "body, field, text",
    [
        ({"username": "nobody", "role": "viewer"}, "username", "nobody"),
        ({"username": "", "role": "viewer"}, "username", "username"),
        ({"username": 5, "role": "viewer"}, "username", "username"),
        ({"username": "oscar", "role": "admin"}, "role", "admin"),
        ({"username": "oscar"}, "role", "role"),
        (["oscar"], "body", "object"),
    ],
)
def test_add_member_rejects_bad_input(dataset, owner_api, outsider, body, field, text):
    response = owner_api.post(detail(dataset, "/members"), body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["detail"].startswith(field) and text in response.json()["detail"]
    assert Membership.objects.filter(dataset=dataset).count() == 3


@pytest.mark.parametrize("client", ["editor_api", "viewer_api"])
def test_only_an_owner_manages_members(dataset, outsider, client, request):
    api = request.getfixturevalue(client)
    assert (
        api.post(detail(dataset, "/members"), {"username": "oscar", "role": "viewer"}, format="json").status_code == 403
    )
    assert api.delete(detail(dataset, "/members/vera")).status_code == 403
    assert Membership.objects.filter(dataset=dataset).count() == 3


def test_owner_removes_a_member_who_then_gets_404(dataset, owner_api, viewer_api):
    assert owner_api.delete(detail(dataset, "/members/vera")).status_code == 204
    assert viewer_api.get(detail(dataset)).status_code == 404
    assert owner_api.delete(detail(dataset, "/members/vera")).status_code == 404
    assert owner_api.delete(detail(dataset, "/members/nobody")).status_code == 404


def test_the_last_owner_can_be_neither_removed_nor_demoted(dataset, owner_api):
    response = owner_api.delete(detail(dataset, "/members/olivia"))
    assert response.status_code == 400
    assert "owner" in response.json()["detail"]
    response = owner_api.post(detail(dataset, "/members"), {"username": "olivia", "role": "editor"}, format="json")
    assert response.status_code == 400
    assert "owner" in response.json()["detail"]
    assert Membership.objects.get(dataset=dataset, user__username="olivia").role == Role.OWNER


def test_with_a_second_owner_the_first_can_leave_and_ownership_moves(dataset, owner_api, editor_api, editor):
    assert (
        owner_api.post(detail(dataset, "/members"), {"username": "ed", "role": "owner"}, format="json").status_code
        == 200
    )
    assert owner_api.delete(detail(dataset, "/members/olivia")).status_code == 204
    assert Dataset.objects.get(pk=dataset.pk).owner == editor
    body = editor_api.get(detail(dataset)).json()
    assert body["owner"] == "ed" and body["role"] == "owner"
    assert owner_api.get(detail(dataset)).status_code == 404


def test_removing_a_member_promoted_meanwhile_still_keeps_an_owner(dataset, owner, editor):
    """The role is read under the lock: a stale 'editor' row cannot remove the dataset's last owner."""
    from curation.services import remove_member

    stale = Membership.objects.get(dataset=dataset, user=editor)  # read as editor
    Membership.objects.filter(pk=stale.pk).update(role=Role.OWNER)  # promoted meanwhile ...
    Membership.objects.filter(dataset=dataset, user=owner).delete()  # ... and the other owner left
    Dataset.objects.filter(pk=dataset.pk).update(owner=editor)
    with pytest.raises(ValueError, match="owner"):
        remove_member(dataset, stale)
    assert Membership.objects.filter(dataset=dataset, role=Role.OWNER).count() == 1


def test_the_service_refuses_an_unknown_upload_mode(owner):
    with pytest.raises(DomainError) as caught:
        create_dataset(owner, "video set", "video")
    assert caught.value.field == "upload_mode" and "'video' is not one of full, thumbnails, meta" in str(caught.value)
    assert not Dataset.objects.exists()


def test_the_schema_documents_what_create_and_members_check(owner_api):
    schemas = owner_api.get("/api/schema/", {"format": "json"}).json()["components"]["schemas"]
    new = schemas["NewDatasetRequest"]
    assert new["required"] == ["name"]
    assert new["properties"]["name"]["maxLength"] == 200
    mode = new["properties"]["upload_mode"]
    enum = schemas[mode["allOf"][0]["$ref"].rsplit("/", 1)[-1]]["enum"] if "allOf" in mode else mode["enum"]
    assert enum == ["full", "thumbnails", "meta"]
    member = schemas["NewMemberRequest"]
    assert sorted(member["required"]) == ["role", "username"]


@pytest.mark.parametrize("body", [{"name": "  "}, {"name": 5}, {}])
def test_rename_checks_the_name_like_create(dataset, owner_api, body):
    response = owner_api.patch(detail(dataset), body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["detail"].startswith("name")
    assert Dataset.objects.get(pk=dataset.pk).name == dataset.name
