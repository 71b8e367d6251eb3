"""Malformed requests of any shape get a 4xx JSON error, never a 500 (issue 14).

Each case here once answered 500: deep nesting (RecursionError), lone surrogates and NUL (PostgreSQL refuses
them), a list or object where a string belongs, numbers out of bigint range, too many query parameters.
The property tests at the end throw arbitrary JSON at the write routes.
"""

from __future__ import annotations

import json

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation.models import Sample, Tag
from tests.factories import make_samples
from winnow.accounts.models import ApiToken

pytestmark = pytest.mark.django_db

DEEP = "[" * 5000 + "]" * 5000
DEEP_OBJECT = '{"a":' * 3000 + "1" + "}" * 3000
SURROGATE = '"\\ud800"'  # a JSON string holding a lone surrogate
NUL = '"a\\u0000b"'


@pytest.fixture
def api(owner):
    _token, key = ApiToken.issue(owner, "malformed")
    client = Client(HTTP_AUTHORIZATION=f"Token {key}")
    client.key = key
    return client


@pytest.fixture
def ds(dataset):
    make_samples(dataset, 5, metadata=lambda i: {"weather": {"temperature": i}})
    return dataset


def _check(response, allowed=(400, 404, 409, 413, 415, 422)):
    assert response.status_code in allowed, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert body.get("detail") or body.get("error"), body


def _post(client, url, raw: str):
    return client.post(url, data=raw, content_type="application/json")


def _routes(ds):
    base = f"/api/v1/datasets/{ds.pk}"
    tag = Tag.objects.get(dataset=ds, name="initial-tag") if Tag.objects.filter(dataset=ds).exists() else None
    out = [
        "/api/v1/datasets",
        "/api/v1/tokens",
        f"{base}/members",
        f"{base}/samples",
        f"{base}/metadata",
        f"{base}/configurator",
        f"{base}/tags",
        f"{base}/sampling-runs",
        f"{base}/embeddings/uploads",
    ]
    if tag is not None:
        out.append(f"{base}/tags/{tag.pk}")
    return out


@pytest.mark.parametrize(
    "raw",
    [DEEP, DEEP_OBJECT, SURROGATE, NUL, '{"name": ' + SURROGATE + "}"],
    ids=["deep-list", "deep-object", "surrogate", "nul", "name-surrogate"],
)
def test_json_bodies_never_500(api, ds, raw):
    for url in _routes(ds):
        _check(_post(api, url, raw), allowed=(400, 403, 404, 409, 413, 415, 422))  # 403: tokens need a session
        _check(api.patch(f"/api/v1/datasets/{ds.pk}", data=raw, content_type="application/json"))


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x\ud800"},
        {"name": "x\x00y"},
        {"name": ["x"]},
        {"name": {"a": 1}},
        {"name": 5},
        {"name": "ok", "upload_mode": ["meta"]},
        {"name": "ok", "upload_mode": {"a": 1}},
    ],
)
def test_dataset_create_bad_values(api, body):
    _check(_post(api, "/api/v1/datasets", json.dumps(body)))


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "operation": [], "tags": ["a"]},
        {"name": "x", "operation": {}, "tags": ["a"]},
        {"name": "x", "operation": "union", "tags": [[], {}]},
        {"name": ["x"], "sample_ids": []},
        {"name": "x\ud800", "file_names": ["img_000000.jpg"]},
        {"name": "x\x00", "file_names": ["img_000000.jpg"]},
        {"name": "x", "file_names": ["img\x00.jpg"]},
        {"name": "x", "file_names": [["a"]]},
        {"name": "x", "sample_ids": [{"a": 1}]},
        {"name": "x", "sample_ids": ["\x00"]},
        {"name": "x", "parent": ["a"], "sample_ids": []},
        {"name": "x", "parent": "\x00", "sample_ids": []},
        {"name": "x", "filter": {"conditions": [{"path": "weather.temperature", "op": "eq", "value": "a\x00"}]}},
        {"name": "x", "filter": {"conditions": [{"path": "weather.temperature", "op": "eq", "value": "\ud800"}]}},
        {"name": "x", "filter": {"conditions": [{"path": ["a"], "op": "eq", "value": 1}]}},
        {"name": "x", "filter": {"conditions": [{"path": "a", "op": [], "value": 1}]}},
        {"name": "x", "filter": {"tag": ["a"]}},
        {"name": "x", "filter": {"file_name": ["a"]}},
        {"name": "x", "filter": {"file_name": "a\x00"}},
        {"name": "x", "filter": []},
        {"name": "x", "sampling_run": ["a"], "top_k": 1},
        {"name": "x", "sampling_run": "\x00", "top_k": 1},
    ],
)
def test_tag_create_bad_values(api, ds, body):
    _check(_post(api, f"/api/v1/datasets/{ds.pk}/tags", json.dumps(body)))
    assert not Tag.objects.filter(dataset=ds, name="x").exists()


@pytest.mark.parametrize(
    "body",
    [
        {"samples": [{"file_name": "a\x00.jpg"}]},
        {"samples": [{"file_name": "a\ud800.jpg"}]},
        {"samples": [{"file_name": ["a.jpg"]}]},
        {"samples": [{"file_name": "a.jpg", "metadata": {"k\x00": 1}}]},
        {"samples": [{"file_name": "a.jpg", "metadata": {"k": "v\x00"}}]},
        {"samples": [{"file_name": "a.jpg", "metadata": {"k\ud800": 1}}]},
        {"samples": [{"file_name": "a.jpg", "metadata": {"k": "\udfff"}}]},
        {"samples": [{"file_name": "a.jpg", "size_bytes": 2**63}]},
        {"samples": [{"file_name": "a.jpg", "width": 2**63}]},
    ],
)
def test_sample_registration_bad_values(api, ds, body):
    before = Sample.objects.filter(dataset=ds).count()
    _check(_post(api, f"/api/v1/datasets/{ds.pk}/samples", json.dumps(body)))
    assert Sample.objects.filter(dataset=ds).count() == before


def test_metadata_upload_bad_values(api, ds):
    url = f"/api/v1/datasets/{ds.pk}/metadata"
    for body in (
        {"images": [{"id": 0, "file_name": "img_000000.jpg"}], "metadata": [{"image_id": 0, "k\ud800": 1}]},
        {"images": [{"id": 0, "file_name": "img_000000.jpg"}], "metadata": [{"image_id": 0, "k": "\x00"}]},
    ):
        _check(_post(api, url, json.dumps(body)))


@pytest.mark.parametrize(
    "body",
    [
        {"path": "weather.temperature", "type": ["float"]},
        {"path": ["weather"], "type": "float"},
        {"path": 5, "type": "float"},
        {"path": "weather.temperature", "type": "float\ud800"},
        {"path": "weather.temperature", "type": "float", "display_name": ["x"]},
        {"path": "weather.temperature", "type": "float", "display_name": "x\x00"},
    ],
)
def test_configurator_bad_values(api, ds, body):
    _check(_post(api, f"/api/v1/datasets/{ds.pk}/configurator", json.dumps(body)))


@pytest.mark.parametrize("body", [{"name": 5}, {"name": ["a"]}, {"name": "a\x00"}, {"name": "\ud800"}])
def test_token_names(owner, body):
    session = Client()
    session.force_login(owner)
    _check(_post(session, "/api/v1/tokens", json.dumps(body)))


@pytest.mark.parametrize(
    "body",
    [
        {"name": 5, "strategy": "random", "n_samples": 2},
        {"name": ["a"], "strategy": "random", "n_samples": 2},
        {"name": "a", "strategy": ["random"], "n_samples": 2},
        {"name": "a\x00", "strategy": "random", "n_samples": 2},
        {"name": "a", "strategy": "random", "n_samples": 2**63},
        {"name": "a", "strategy": "random", "n_samples": 2, "input_tag": ["x"]},
        {"name": "a", "strategy": "random", "n_samples": 2, "embedding": {"x": 1}},
    ],
)
def test_sampling_run_bad_values(api, ds, body):
    _check(_post(api, f"/api/v1/datasets/{ds.pk}/sampling-runs", json.dumps(body)))


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("conditions=" + DEEP, id="conditions-deep"),
        "conditions=%5B%22a%00%22%5D",
        "where=weather.temperature:eq:a%00",
        "where=weather.temperature:eq:" + SURROGATE,
        'where=weather.temperature:eq:"\\ud800"',
        "where=a%00:eq:1",
        "file_name=a%00",
        "tag=%00",
        "sort=%00",
        "cursor=%00",
    ],
)
def test_sample_list_queries(api, ds, query):
    _check(api.get(f"/api/v1/datasets/{ds.pk}/samples?{query}"), allowed=(400, 404))


@pytest.mark.parametrize("sub", ["%00", "a%00b", "%ED%A0%80"])
def test_nul_and_surrogates_in_ids(api, ds, sub):
    for url in (
        f"/api/v1/datasets/{sub}",
        f"/api/v1/datasets/{ds.pk}/tags/{sub}",
        f"/api/v1/datasets/{ds.pk}/samples/{sub}",
        f"/api/v1/datasets/{ds.pk}/sampling-runs/{sub}",
        f"/api/v1/datasets/{ds.pk}/embeddings/{sub}",
        f"/api/v1/datasets/{ds.pk}/members/{sub}",
    ):
        _check(api.get(url), allowed=(400, 404, 405))


def test_too_many_query_parameters_get_json(api, ds):
    query = "&".join(f"p{i}=1" for i in range(1200))
    _check(api.get(f"/api/v1/datasets/{ds.pk}/samples?{query}"), allowed=(400,))


def test_oversized_json_gets_json_413(api, ds, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = json.dumps({"samples": [{"file_name": f"f{i}.jpg"} for i in range(2000)]})
    response = _post(api, f"/api/v1/datasets/{ds.pk}/samples", body)
    _check(response, allowed=(413,))
    assert Sample.objects.filter(dataset=ds).count() == 5


def test_multipart_fields(api, ds):
    from django.core.files.uploadedfile import SimpleUploadedFile

    url = f"/api/v1/datasets/{ds.pk}/samples"
    for field, value in (("file_names", DEEP), ("metadata", DEEP), ("file_names", "a\x00"), ("metadata", "{}\x00")):
        data = {"files": SimpleUploadedFile("a.jpg", b"not an image"), field: value}
        _check(api.post(url, data=data))


# --- /v1/ (Lightly's protocol) -------------------------------------------------------------------------


def _v1(client_key, method, path, raw=None):
    client = Client()
    sep = "&" if "?" in path else "?"
    url = f"/v1/{path}{sep}token={client_key}"
    if method == "get":
        return client.get(url)
    return getattr(client, method)(url, data=raw if raw is not None else "", content_type="application/json")


@pytest.fixture
def v1ds(owner):
    from curation.services import create_dataset

    dataset = create_dataset(owner, "lightly set", "meta")
    make_samples(dataset, 4)
    return dataset


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(DEEP, id="deep"),
        SURROGATE,
        json.dumps({"name": ["a"]}),
        json.dumps({"name": {"a": 1}}),
        json.dumps({"name": "abc\ud800"}),
        json.dumps({"name": "abc\x00"}),
        json.dumps({"name": "abc", "imgType": ["meta"]}),
    ],
)
def test_v1_dataset_create(api, raw):
    _check(_v1(api.key, "post", "datasets", raw))


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(DEEP, id="deep"),
        json.dumps({"fileName": "x.jpg", "metaData": 0}),
        json.dumps({"fileName": "x.jpg", "metaData": {"sizeInBytes": 2**63}}),
        json.dumps({"fileName": "x.jpg", "metaData": {"sizeInBytes": "12"}}),
        json.dumps({"fileName": ["x.jpg"]}),
        json.dumps({"fileName": "x\x00.jpg"}),
        json.dumps({"fileName": "x\ud800.jpg"}),
        json.dumps({"fileName": "x.jpg", "metaData": {"customMetaData": {"k": "\ud800"}}}),
        json.dumps({"fileName": "x.jpg", "customMetaData": {"k\x00": 1}}),
    ],
)
def test_v1_sample_create(api, v1ds, raw):
    before = Sample.objects.filter(dataset=v1ds).count()
    _check(_v1(api.key, "post", f"datasets/{v1ds.pk}/samples", raw))
    assert Sample.objects.filter(dataset=v1ds).count() == before


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(DEEP, id="deep"),
        json.dumps({"name": ["abc"], "prevTagId": "x", "bitMaskData": "0x1", "creator": "USER_PIP"}),
        json.dumps({"name": "abc", "prevTagId": ["x"], "bitMaskData": "0x1"}),
        json.dumps({"name": "abc", "prevTagId": "x", "bitMaskData": ["0x1"]}),
        json.dumps({"name": "abc\ud800", "prevTagId": "x", "bitMaskData": "0x1"}),
        json.dumps({"name": "abc", "prevTagId": "\x00", "bitMaskData": "0x1"}),
    ],
)
def test_v1_tag_create(api, v1ds, raw):
    _check(_v1(api.key, "post", f"datasets/{v1ds.pk}/tags", raw))


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(DEEP, id="deep"),
        json.dumps({"config": True}),
        json.dumps({"config": {"method": ["RANDOM"], "nSamples": 2}}),
        json.dumps({"newTagName": ["a"], "config": {"method": "RANDOM", "nSamples": 2}}),
        json.dumps({"newTagName": "abc", "config": {"method": "RANDOM", "nSamples": 2**63}}),
        json.dumps({"newTagName": "abc", "config": {"method": "RANDOM", "nSamples": "2"}}),
        json.dumps({"newTagName": "abc\ud800", "config": {"method": "RANDOM", "nSamples": 2}}),
        json.dumps({"newTagName": "abc", "preselectedTagId": ["a"], "config": {"method": "RANDOM", "nSamples": 2}}),
    ],
)
def test_v1_selection(api, v1ds, raw):
    _check(_v1(api.key, "post", f"datasets/{v1ds.pk}/embeddings/{'0' * 24}/sampling", raw))


@pytest.mark.parametrize("sub", ["%00", "a%00b", "%ED%A0%80"])
def test_v1_ids(api, v1ds, sub):
    for path in (
        f"datasets/{sub}",
        f"datasets/{v1ds.pk}/tags/{sub}",
        f"datasets/{v1ds.pk}/samples/{sub}",
        f"datasets/{v1ds.pk}/embeddings/{sub}",
        f"jobs/{sub}",
    ):
        _check(_v1(api.key, "get", path), allowed=(400, 404, 405))
    assert _v1(api.key, "get", f"datasets/query/name/{sub}").status_code in (200, 400, 404)
    _check(Client().get(f"/v1/datasets?token={sub}"), allowed=(400, 401))


def test_v1_too_many_query_parameters(api):
    query = "&".join(f"p{i}=1" for i in range(1200))
    _check(_v1(api.key, "get", f"datasets?{query}"), allowed=(400,))


# --- properties: any JSON value in any field -------------------------------------------------------------

text = st.text(alphabet=st.characters(codec=None, categories=None), max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70) | st.floats() | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)


def _objects(keys):
    return st.dictionaries(st.sampled_from(keys), json_values, max_size=len(keys))


ROUTE_KEYS = {
    "": ["name", "upload_mode"],
    "/tags": ["name", "parent", "sample_ids", "file_names", "bitmask", "filter", "operation", "tags", "top_k"],
    "/samples": ["samples", "on_conflict"],
    "/configurator": ["path", "type", "display_name", "fallback"],
    "/sampling-runs": ["name", "strategy", "n_samples", "embedding", "input_tag", "preselected_tag", "parameters"],
    "/members": ["username", "role"],
    "/embeddings/uploads": ["name", "kind", "size", "dimension", "n_rows"],
    "/metadata": ["images", "metadata", "type"],
}


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(route=st.sampled_from(sorted(ROUTE_KEYS)), data=st.data())
def test_any_json_in_any_field_is_a_4xx(api, ds, route, data):
    body = data.draw(_objects(ROUTE_KEYS[route]))
    base = "/api/v1/datasets" if route == "" else f"/api/v1/datasets/{ds.pk}{route}"
    raw = json.dumps(body, allow_nan=True)
    response = _post(api, base, raw)
    assert response.status_code < 500, (route, body, response.content[:300])
    if route == "" and response.status_code < 300:
        return
    if response.status_code >= 400:
        _check(response, allowed=tuple(range(400, 500)))


V1_KEYS = {
    "datasets": ["name", "imgType", "type"],
    "samples": ["fileName", "metaData", "customMetaData", "thumbName", "exif"],
    "tags": ["name", "prevTagId", "bitMaskData", "creator", "queryTagIds", "runId"],
    "sampling": ["newTagName", "config", "preselectedTagId", "queryTagId", "scoreType", "rowCount"],
}


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(route=st.sampled_from(sorted(V1_KEYS)), data=st.data())
def test_v1_any_json_in_any_field_is_a_4xx(api, v1ds, route, data):
    body = data.draw(_objects(V1_KEYS[route]))
    path = {
        "datasets": "datasets",
        "samples": f"datasets/{v1ds.pk}/samples",
        "tags": f"datasets/{v1ds.pk}/tags",
        "sampling": f"datasets/{v1ds.pk}/embeddings/{'0' * 24}/sampling",
    }[route]
    response = _v1(api.key, "post", path, json.dumps(body, allow_nan=True))
    assert response.status_code < 500, (route, body, response.content[:300])
