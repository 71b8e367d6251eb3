"""GET query strings of the list, filter and page routes, fuzzed (issue 14, beyond schemathesis' schema-shaped
values): any bytes, percent-encoded (NUL, lone surrogates, broken UTF-8), JSON of any shape, huge and odd numbers
(Unicode digits, signs, floats), repeated and unknown parameters. The answer is a 2xx, or a 4xx JSON error, never
a 500."""

from __future__ import annotations

import json
from urllib.parse import quote, quote_from_bytes

import numpy as np
import pytest
from django.test import Client
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from curation import embeddings, services
from curation.models import SimilarityRun, Tag
from winnow.accounts.models import ApiToken

pytestmark = pytest.mark.django_db

N = 12


@pytest.fixture
def api(owner):
    _token, key = ApiToken.issue(owner, "fuzz")
    return Client(HTTP_AUTHORIZATION=f"Token {key}")


@pytest.fixture
def routes(dataset, settings):
    """Each GET route with query parameters, and the parameters it reads."""
    settings.WINNOW_TSNE_MAX_POINTS = 0
    names = [f"img_{i:06d}.jpg" for i in range(N)]
    weather = [{"weather": {"temperature": i, "kind": "sun" if i % 2 else "rain"}} for i in range(N)]
    services.add_samples(dataset, [{"file_name": name, "metadata": m} for name, m in zip(names, weather)])
    matrix = np.random.default_rng(0).normal(size=(N, 4)).astype(np.float32)
    lines = ["filenames,embedding_0,embedding_1,embedding_2,embedding_3,labels"]
    lines += [",".join([name, *(repr(float(v)) for v in row), "0"]) for name, row in zip(names, matrix)]
    embedding = embeddings.create_from_csv(dataset, "e", ("\n".join(lines) + "\n").encode())
    embeddings.compute_projection(embedding.pk)
    tag = Tag.objects.get(dataset=dataset, name="initial-tag")
    run = SimilarityRun.objects.create(dataset=dataset, embedding=embedding, kind="search", params={})
    base = f"/api/v1/datasets/{dataset.pk}"
    return {
        "/api/v1/datasets": ["limit", "cursor", "page", "name"],
        f"{base}/samples": ["tag", "file_name", "where", "conditions", "sort", "limit", "cursor", "count"],
        f"{base}/metadata/histograms": ["filter", "bins"],
        f"{base}/metadata/column": ["tag", "path", "encoding"],
        f"{base}/map/samples": ["idx", "embedding", "limit"],
        f"{base}/tags": ["include", "limit"],
        f"{base}/tags/{tag.pk}/export": ["format", "expires"],
        f"{base}/export": ["format", "filter", "sort", "name"],
        f"{base}/embeddings/{embedding.pk}/projection": ["method"],
        f"{base}/similarity/runs": ["kind"],
        f"{base}/similarity/runs/{run.pk}/results": ["offset", "limit"],
        f"{base}/sampling-runs": ["page_size", "cursor"],
        f"{base}/views": ["limit"],
        f"{base}/predictions": ["limit"],
    }


FIELDS = ["weather.temperature", "weather.kind", "idx", "file_name", "metadata.weather.kind", "-idx", "x" * 300]
odd_numbers = st.sampled_from(
    ["0", "-1", "1e9", "1.5", "nan", "inf", "²", "٣", "１", "+5", " 7 ", "0x10", str(2**63), str(-(2**70)), "00"]
)
json_text = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["conditions", "path", "op", "value", "field", "tag", "and", "or"]) | st.text(max_size=4),
            inner,
            max_size=3,
        )
    ),  # fmt: skip
    max_leaves=8,
).map(lambda v: json.dumps(v, allow_nan=True))
values = (
    st.binary(max_size=24).map(lambda b: quote_from_bytes(b, safe=""))
    | st.text(max_size=16).map(lambda t: quote(t, safe="", errors="surrogatepass"))
    | odd_numbers.map(lambda t: quote(t, safe=""))
    | json_text.map(lambda t: quote(t, safe="", errors="surrogatepass"))
    | st.sampled_from(FIELDS).map(lambda t: quote(t, safe=""))
)


def _query(draw_names, data) -> str:
    pairs = data.draw(
        st.lists(st.tuples(st.sampled_from(draw_names) | st.text(max_size=5), values), max_size=5), label="query"
    )
    return "&".join(f"{quote(name, safe='', errors='surrogatepass')}={value}" for name, value in pairs)


def _check(response, route, query):
    assert response.status_code < 500, (route, query, response.content[:300])
    if response.status_code >= 400 and response.status_code != 404:
        assert response["Content-Type"].startswith("application/json"), (route, query, response["Content-Type"])
        body = response.json()
        assert body.get("detail") or body.get("error"), (route, query, body)


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_query_string_on_any_list_route_is_never_a_500(api, routes, data):
    route = data.draw(st.sampled_from(sorted(routes)), label="route")
    query = _query(routes[route], data)
    _check(api.get(f"{route}?{query}"), route, query)


@example(query="offset=%C2%B2")  # "²" passes str.isdigit() but not int()
@example(query="limit=%C2%B2")
@example(query="offset=%D9%A3&limit=%EF%BC%91")  # Arabic-Indic three, fullwidth one
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
@given(query=st.just(""))
def test_unicode_digits_in_similarity_pages(api, routes, query):
    route = next(r for r in routes if r.endswith("/results"))
    _check(api.get(f"{route}?{query}"), route, query)


@pytest.mark.parametrize("offset", ["%C2%B2", "%D9%A3", "-1", "1.0", ""])
def test_odd_chunk_offsets_are_a_400(api, dataset, offset):
    """A chunk's ?offset= of a Unicode digit ("²" passes str.isdigit() but not int()) was a 500."""
    base = f"/api/v1/datasets/{dataset.pk}/embeddings/uploads"
    upload = api.post(base, data=json.dumps({"name": "u", "kind": "csv", "size": 10}), content_type="application/json")
    assert upload.status_code == 201, upload.content
    url = f"{base}/{upload.json()['id']}/file?offset={offset}"
    response = api.put(url, data=b"abc", content_type="application/octet-stream")
    assert response.status_code == 400, response.content
    _check(response, url, offset)
