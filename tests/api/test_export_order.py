"""Exports of a saved view or of a filter come in the view's sort (the sample list's order: missing values last,
ties by idx); a tag's export and an unsorted export stay in idx order, byte for byte what they were."""

from __future__ import annotations

import csv
import io
import json

import pytest

from curation import tagging
from curation.models import MetadataField
from curation.services import add_samples

pytestmark = pytest.mark.django_db

SPEEDS = [3, None, 7, 3, 12.5, -1, 7, None, 3, 0, 12.5, 2]
ROADS = ["b", "a", None, "c", "a", "b", "c", "a", None, "c", "b", "a"]
FORMATS = ("filenames", "csv", "json", "label-studio")


@pytest.fixture
def data(dataset):
    samples = []
    for i, (speed, road) in enumerate(zip(SPEEDS, ROADS)):
        meta = {"n": i}
        if speed is not None:
            meta["speed"] = speed
        if road is not None:
            meta["road"] = road
        samples.append({"file_name": f"s{i:02d}.jpg", "metadata": meta})
    add_samples(dataset, samples)
    MetadataField.objects.create(dataset=dataset, path="speed", type="float")
    MetadataField.objects.create(dataset=dataset, path="road", type="categorical_string")
    return dataset


def expected(values, descending: bool, among=None) -> list[int]:
    """idx by value (asc or desc), ties by idx ascending, missing values last."""
    among = range(len(values)) if among is None else among
    present = sorted((i for i in among if values[i] is not None), key=lambda i: (values[i], i))
    if descending:
        present = sorted(present, key=lambda i: (-_rank(values, values[i]), i))
    return present + [i for i in among if values[i] is None]


def _rank(values, value) -> int:
    return sorted({v for v in values if v is not None}).index(value)


def _order(fmt: str, text: str) -> list[int]:
    """The idx of the export's samples, in the order written."""
    if fmt == "filenames":
        return [int(line[1:3]) for line in text.splitlines()]
    if fmt == "csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        return [int(row["idx"]) for row in rows]
    items = json.loads(text)
    return [item["idx"] if fmt == "json" else item["id"] for item in items]


def _body(response) -> str:
    assert response.status_code == 200, response.content
    return b"".join(response.streaming_content).decode()


SORTS = [
    ("speed", SPEEDS, False),
    ("-speed", SPEEDS, True),
    ("road", ROADS, False),
    ("-road", ROADS, True),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("sort, values, descending", SORTS)
def test_a_saved_view_exports_in_its_sort(editor_api, viewer_api, data, fmt, sort, values, descending, monkeypatch):
    monkeypatch.setattr(tagging, "EXPORT_BATCH", 5)  # several batches, so the order holds across them
    view = editor_api.post(f"/api/v1/datasets/{data.id}/views", {"name": "v", "sort": sort}, format="json").json()
    text = _body(viewer_api.get(f"/api/v1/datasets/{data.id}/views/{view['id']}/export", {"format": fmt}))
    assert _order(fmt, text) == expected(values, descending)


@pytest.mark.parametrize("sort, values, descending", SORTS)
def test_a_filter_exports_in_the_given_sort(viewer_api, data, sort, values, descending, monkeypatch):
    monkeypatch.setattr(tagging, "EXPORT_BATCH", 2)
    base = f"/api/v1/datasets/{data.id}/export"
    fast = {"conditions": [{"path": "n", "op": "gte", "value": 3}]}
    for fmt in FORMATS:
        text = _body(viewer_api.get(base, {"format": fmt, "filter": json.dumps(fast), "sort": sort}))
        assert _order(fmt, text) == expected(values, descending, among=range(3, 12)), (fmt, sort)
    everything = _body(viewer_api.get(base, {"format": "csv", "sort": "-idx"}))
    assert _order("csv", everything) == list(range(11, -1, -1))


def test_a_sorted_export_holds_the_same_samples_as_the_unsorted_one(viewer_api, data):
    """The sorted path writes each sample exactly as the idx-order writers do: only the order differs."""
    base = f"/api/v1/datasets/{data.id}/export"
    for fmt in FORMATS:
        plain = _body(viewer_api.get(base, {"format": fmt}))
        ordered = _body(viewer_api.get(base, {"format": fmt, "sort": "-speed"}))
        if fmt in ("json", "label-studio"):
            plain_items = [json.dumps(item, sort_keys=True) for item in json.loads(plain)]
            ordered_items = [json.dumps(item, sort_keys=True) for item in json.loads(ordered)]
        else:
            plain_items, ordered_items = plain.splitlines(), ordered.splitlines()
        assert sorted(plain_items) == sorted(ordered_items) and plain_items != ordered_items, fmt


def test_unsorted_exports_keep_their_bytes(viewer_api, editor_api, data, owner):
    """idx order (no sort, `idx`, a view without a sort) is the tag export's own walk: the same bytes as the export
    of a tag holding the same samples."""
    tag = tagging.create_tag(data, "all", list(range(12)), origin="selection", origin_detail={}, creator=owner)
    view = editor_api.post(f"/api/v1/datasets/{data.id}/views", {"name": "all"}, format="json").json()
    for fmt in FORMATS:
        of_tag = _body(viewer_api.get(f"/api/v1/datasets/{data.id}/tags/{tag.id}/export", {"format": fmt}))
        assert _order(fmt, of_tag) == list(range(12))
        for params in ({}, {"sort": "idx"}):
            assert _body(viewer_api.get(f"/api/v1/datasets/{data.id}/export", {"format": fmt, **params})) == of_tag
        assert _body(viewer_api.get(f"/api/v1/datasets/{data.id}/views/{view['id']}/export", {"format": fmt})) == of_tag


def test_a_bad_sort_is_named_and_exports_nothing(viewer_api, data):
    response = viewer_api.get(f"/api/v1/datasets/{data.id}/export", {"format": "csv", "sort": "bad path!"})
    assert response.status_code == 400 and response.json()["detail"].startswith("sort: 'bad path!'"), response.json()
