"""API tokens: hashed at rest, shown once, revocable, recorded when used, reaching only the owner's data."""

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from winnow.accounts.models import ApiToken, hash_token

pytestmark = pytest.mark.django_db


def _client(key):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_secret_is_stored_only_as_keyed_hash(owner):
    token, key = ApiToken.issue(owner, "laptop")
    stored = ApiToken.objects.get(pk=token.pk)
    assert key.startswith("wnw_" + stored.prefix)
    assert key not in (stored.key_hash, stored.prefix, stored.name)
    assert stored.key_hash == hash_token(key)


def test_token_authenticates_and_records_last_use(owner):
    token, key = ApiToken.issue(owner, "laptop")
    assert token.last_used_at is None
    response = _client(key).get("/api/v1/tokens")
    assert response.status_code == 200
    token.refresh_from_db()
    assert token.last_used_at is not None


@pytest.mark.parametrize("header", ["Token wnw_deadbeefnotarealtokenatall0000000", "Token ", "Token a b", "Bearer x"])
def test_bad_tokens_are_401(header, owner):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    assert client.get("/api/v1/tokens").status_code == 401


def test_tampered_secret_with_valid_prefix_is_rejected(owner):
    _token, key = ApiToken.issue(owner, "laptop")
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert _client(tampered).get("/api/v1/tokens").status_code == 401


def test_revoked_token_stops_working(owner):
    token, key = ApiToken.issue(owner, "laptop")
    client = _client(key)
    assert client.get("/api/v1/tokens").status_code == 200
    token.revoke()
    assert client.get("/api/v1/tokens").status_code == 401


def test_inactive_user_token_is_rejected(owner):
    _token, key = ApiToken.issue(owner, "laptop")
    owner.is_active = False
    owner.save()
    assert _client(key).get("/api/v1/tokens").status_code == 401


@pytest.fixture
def owner_session(owner):
    client = APIClient()
    client.force_login(owner)
    return client


def test_a_token_cannot_create_or_revoke_tokens(owner_api, owner):
    assert owner_api.post("/api/v1/tokens", {"name": "more"}, format="json").status_code == 403
    mine = ApiToken.objects.get(user=owner)
    response = owner_api.post(f"/api/v1/tokens/{mine.pk}/revoke")
    assert response.status_code == 403 and "signed-in session" in response.json()["detail"]
    assert ApiToken.objects.filter(user=owner).count() == 1 and ApiToken.objects.get(user=owner).is_active


def test_create_list_revoke_through_api(owner_api, owner_session, owner):
    created = owner_session.post("/api/v1/tokens", {"name": "ci"}, format="json")
    assert created.status_code == 201
    body = created.json()
    assert body["key"].startswith(body["prefix"])
    listed = owner_api.get("/api/v1/tokens").json()
    assert {t["name"] for t in listed} == {"test", "ci"}
    assert all("key" not in t and "key_hash" not in t for t in listed)
    revoked = owner_session.post(f"/api/v1/tokens/{body['id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["active"] is False
    assert _client(body["key"]).get("/api/v1/tokens").status_code == 401


def test_cannot_revoke_someone_elses_token(owner_session, outsider):
    theirs, key = ApiToken.issue(outsider, "theirs")
    assert owner_session.post(f"/api/v1/tokens/{theirs.pk}/revoke").status_code == 404
    assert _client(key).get("/api/v1/tokens").status_code == 200


def test_create_token_needs_a_name(owner_session):
    response = owner_session.post("/api/v1/tokens", {"name": ""}, format="json")
    assert response.status_code == 400
    assert "name" in response.json()["detail"]
    assert ApiToken.objects.count() == 0


def test_anonymous_cannot_list_tokens(anon_api):
    assert anon_api.get("/api/v1/tokens").status_code == 401


def test_createtoken_prints_token_as_last_line(capsys, django_user_model):
    call_command("createtoken", "alice", "--create-user", "--name", "ops")
    out = capsys.readouterr().out.strip().splitlines()
    key = out[-1]
    user = django_user_model.objects.get(username="alice")
    assert ApiToken.authenticate(key).user == user
    assert ApiToken.objects.get(user=user).name == "ops"


def test_createtoken_for_missing_user_without_flag_fails():
    with pytest.raises(CommandError, match="no user named 'ghost'"):
        call_command("createtoken", "ghost")
    assert ApiToken.objects.count() == 0
