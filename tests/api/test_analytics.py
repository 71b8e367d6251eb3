"""The chart endpoints: histograms per configured field, per-idx colour columns, samples by idx."""

from __future__ import annotations

import json

import pytest

from curation import bitmask
from curation.models import MetadataField, Tag, TagOrigin
from curation.services import add_samples

pytestmark = pytest.mark.django_db

SCENARIOS = ["sunny"] * 5 + ["rainy"] * 3 + ["snowy"] * 1 + [None]


@pytest.fixture
def street(dataset):
    rows = []
    for i, scenario in enumerate(SCENARIOS):
        weather = {"temperature": float(i)} if i != 9 else {}
        if scenario is not None:
            weather["scenario"] = scenario
        rows.append({"file_name": f"img_{i:02d}.jpg", "metadata": {"weather": weather, "pedestrians": i % 3}})
    add_samples(dataset, rows)
    MetadataField.objects.create(
        dataset=dataset, path="weather.scenario", type="categorical_string", fallback="unknown"
    )
    MetadataField.objects.create(dataset=dataset, path="weather.temperature", type="float")
    MetadataField.objects.create(dataset=dataset, path="pedestrians", type="int")
    return dataset


def url(ds, rest):
    return f"/api/v1/datasets/{ds.id}/{rest}"


def by_path(body):
    return {f["path"]: f for f in body["fields"]}


def test_histograms_over_the_dataset_apply_fallbacks(viewer_api, street):
    r = viewer_api.get(url(street, "metadata/histograms"))
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["total"] == 10 and body["matched"] == 10
    fields = by_path(body)
    scenario = {v["value"]: v["count"] for v in fields["weather.scenario"]["values"]}
    assert scenario == {"sunny": 5, "rainy": 3, "snowy": 1, "unknown": 1}
    temperature = fields["weather.temperature"]
    assert temperature["kind"] == "numeric" and temperature["missing"] == 1
    assert temperature["min"] == 0.0 and temperature["max"] == 8.0 and sum(temperature["counts"]) == 9
    pedestrians = fields["pedestrians"]
    # Few integers: one bin per value.
    assert pedestrians["edges"] == [-0.5, 0.5, 1.5, 2.5] and pedestrians["counts"] == [4, 3, 3]


def test_histograms_count_the_samples_matching_a_filter(owner_api, street):
    flt = {"conditions": [{"path": "weather.scenario", "op": "eq", "value": "rainy"}]}
    r = owner_api.get(url(street, "metadata/histograms"), {"filter": json.dumps(flt)})
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["matched"] == 3
    scenario = {v["value"]: v["matched"] for v in by_path(body)["weather.scenario"]["values"]}
    assert scenario == {"sunny": 0, "rainy": 3, "snowy": 0, "unknown": 0}
    temperature = by_path(body)["weather.temperature"]
    assert sum(temperature["matched_counts"]) == 3 and sum(temperature["counts"]) == 9
    # The fallback stands in for a missing value in filters too.
    flt = {"conditions": [{"path": "weather.scenario", "op": "eq", "value": "unknown"}]}
    r = owner_api.get(url(street, "metadata/histograms"), {"filter": json.dumps(flt)})
    assert r.json()["matched"] == 1


@pytest.mark.parametrize(
    "params, field",
    [
        ({"filter": "{not json"}, "filter"),
        ({"filter": json.dumps({"conditions": [{"path": "a..b", "op": "eq", "value": 1}]})}, "filter"),
        ({"filter": json.dumps({"colour": "red"})}, "filter"),
        ({"bins": "many"}, "bins"),
        ({"bins": "0"}, "bins"),
    ],
)
def test_histograms_reject_bad_input_by_name(owner_api, street, params, field):
    r = owner_api.get(url(street, "metadata/histograms"), params)
    assert r.status_code == 400
    assert field in r.json()["detail"]


def test_column_of_a_categorical_field_and_of_a_tag(viewer_api, street):
    r = viewer_api.get(url(street, "metadata/column"), {"path": "weather.scenario"})
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["size"] == 10 and body["categories"] == ["sunny", "rainy", "snowy", "unknown"]
    names = [body["categories"][c] for c in body["codes"]]
    assert names == [s or "unknown" for s in SCENARIOS]
    tag = Tag.objects.create(
        dataset=street, name="two", bitmask=bitmask.from_indices([1, 7]), count=2, origin=TagOrigin.SELECTION
    )
    r = viewer_api.get(url(street, "metadata/column"), {"tag": tag.id})
    assert r.json()["codes"] == [0, 1, 0, 0, 0, 0, 0, 1, 0, 0]


def test_column_of_a_numeric_field(viewer_api, street):
    body = viewer_api.get(url(street, "metadata/column"), {"path": "weather.temperature"}).json()
    assert body["kind"] == "numeric"
    assert body["values"] == [float(i) for i in range(9)] + [None]


@pytest.mark.parametrize("params", [{}, {"path": "nope"}, {"tag": "0" * 24}, {"path": "pedestrians", "tag": "x"}])
def test_column_needs_one_known_field_or_tag(owner_api, street, params):
    assert owner_api.get(url(street, "metadata/column"), params).status_code == 400


def test_samples_by_idx(viewer_api, street):
    r = viewer_api.post(url(street, "map/samples"), {"idx": [3, 1, 3, 99], "limit": 5}, format="json")
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["count"] == 3
    assert [(s["idx"], s["file_name"]) for s in body["samples"]] == [(1, "img_01.jpg"), (3, "img_03.jpg")]
    assert body["samples"][0]["thumbnail_url"] is None  # a meta dataset keeps no pixels
    ids = viewer_api.post(url(street, "map/samples"), {"idx": [1, 3], "fields": "id"}, format="json").json()
    assert ids["ids"] == [s["id"] for s in body["samples"]]


@pytest.mark.parametrize("body", [{"idx": "1,2"}, {"idx": [1, "2"]}, {"idx": [True]}, {"idx": [1], "limit": -1}, {}])
def test_samples_by_idx_rejects_bad_input(owner_api, street, body):
    r = owner_api.post(url(street, "map/samples"), body, format="json")
    assert r.status_code == 400 and r.json()["detail"]


def test_malformed_json_body(owner_api, street):
    r = owner_api.post(url(street, "map/samples"), "{oops", content_type="application/json")
    assert r.status_code == 400


@pytest.mark.parametrize(
    "method, rest",
    [("get", "metadata/histograms"), ("get", "metadata/column?path=pedestrians"), ("post", "map/samples")],
)
def test_outsider_gets_404_and_anonymous_401(outsider_api, anon_api, street, method, rest):
    assert (
        getattr(outsider_api, method)(
            url(street, rest), {"idx": [0]} if method == "post" else None, format="json"
        ).status_code
        == 404
    )
    assert getattr(anon_api, method)(url(street, rest)).status_code == 401


def test_tags_of_a_sample(viewer_api, outsider_api, street):
    from curation.models import Sample

    Tag.objects.create(
        dataset=street, name="odd", bitmask=bitmask.from_indices([1, 3, 9]), count=3, origin=TagOrigin.SELECTION
    )
    s9 = Sample.objects.get(dataset=street, idx=9)
    r = viewer_api.get(url(street, f"samples/{s9.id}/tags"))
    assert r.status_code == 200
    assert sorted(t["name"] for t in r.json()) == ["initial-tag", "odd"]
    s2 = Sample.objects.get(dataset=street, idx=2)
    assert [t["name"] for t in viewer_api.get(url(street, f"samples/{s2.id}/tags")).json()] == ["initial-tag"]
    assert viewer_api.get(url(street, "samples/" + "0" * 24 + "/tags")).status_code == 404
    assert outsider_api.get(url(street, f"samples/{s9.id}/tags")).status_code == 404
