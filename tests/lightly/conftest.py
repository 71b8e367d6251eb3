"""The real Lightly client (`lightly==1.5.26`, installed without torch) against a live Winnow server.

`LIGHTLY_SERVER_LOCATION` points the client at pytest-django's live server; `LIGHTLY_DID_VERSION_CHECK`
keeps `import lightly` from probing the version in a background thread.
"""

from __future__ import annotations

import os

import pytest

os.environ["LIGHTLY_DID_VERSION_CHECK"] = "True"

from tests.conftest import role_fixtures
from winnow.accounts.models import ApiToken

PROXY_VARIABLES = ("ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY", "all_proxy", "https_proxy", "http_proxy")


@pytest.fixture
def lightly_server(live_server, monkeypatch):
    """The live server's URL, set as the client's server location (no proxy between them)."""
    from django.db import connection

    # Server threads kept alive by HTTP keep-alive would otherwise hold database connections past the session.
    monkeypatch.setitem(connection.settings_dict, "CONN_MAX_AGE", 0)
    monkeypatch.setenv("LIGHTLY_SERVER_LOCATION", live_server.url)
    monkeypatch.setenv("NO_PROXY", "*")
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("LIGHTLY_TOKEN", raising=False)
    return live_server.url


@pytest.fixture
def lightly_client(lightly_server):
    """`lightly_client(user, dataset_id=None)`: an ApiWorkflowClient holding a fresh token of `user`."""
    from lightly.api import ApiWorkflowClient

    made = []

    def make(user, dataset_id: str | None = None) -> ApiWorkflowClient:
        _token, key = ApiToken.issue(user, "lightly client")
        client = ApiWorkflowClient(token=key)
        made.append(client)
        if dataset_id is not None:
            client.dataset_id = dataset_id  # the client checks that the dataset exists (GET /v1/datasets/<id>)
        return client

    yield make
    # Close the kept-alive connections, so the server threads end and release their database connections.
    for client in made:
        client.api_client.rest_client.pool_manager.clear()


def _v1_for(user):
    from django.test import Client

    from tests.lightly.helpers import V1

    _token, key = ApiToken.issue(user, "v1 test")
    # CSRF checks on, as in production: the /v1/ views must be exempt (the client sends no cookies).
    return V1(Client(enforce_csrf_checks=True), key)


# owner_v1, editor_v1, viewer_v1, outsider_v1: /v1/ clients holding a fresh token of that user.
role_fixtures("v1", _v1_for, globals())


@pytest.fixture
def anon_v1():
    from django.test import Client

    from tests.lightly.helpers import V1

    return V1(Client(enforce_csrf_checks=True), None)
