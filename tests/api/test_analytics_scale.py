"""The paths that make analytics scale: sort indexes per configured field, histograms read through them,
binary colour columns, selections as bitmasks of any size, streamed exports, datasets without counts."""

from __future__ import annotations

import base64
import csv
import io
import json
import struct

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from curation import bitmask, tagging
from curation.filters import build_sort_indexes, sort_index_names
from curation.models import Dataset, FieldType, MetadataField, Tag
from curation.services import add_samples, create_dataset

pytestmark = pytest.mark.django_db

postgres_only = pytest.mark.skipif("connection.vendor != 'postgresql'", reason="PostgreSQL indexes")


def url(ds, rest):
    return f"/api/v1/datasets/{ds.id}/{rest}"


def indexes_of(dataset) -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname FROM pg_indexes WHERE indexname LIKE %s", [f"sample_sort_{dataset.id}_%"])
        return {row[0] for row in cursor.fetchall()}


def walk(api, url_, key="next"):
    names = []
    while url_:
        response = api.get(url_)
        assert response.status_code == 200, response.content
        body = response.json()
        names += [row["file_name"] for row in body["results"]]
        url_ = body[key]
    return names


def _temperature(i: int):
    """Ties (i % 7), missing values (every 5th), a JSON null (every 11th), a string (every 13th)."""
    if i % 13 == 0:
        return {"weather": {"temperature": "hot"}}
    if i % 11 == 0:
        return {"weather": {"temperature": None}}
    if i % 5 == 0:
        return {}
    return {"weather": {"temperature": float(i % 7) - 2.5}}


@pytest.fixture
def weather(dataset):
    add_samples(dataset, [{"file_name": f"f{i:03d}.jpg", "metadata": _temperature(i)} for i in range(60)])
    return dataset


def _reference_order(descending: bool, fallback=None) -> list[str]:
    """jsonb order: strings < numbers; missing (absent or null) last, ties by idx ascending."""
    keyed, missing = [], []
    for i in range(60):
        value = _temperature(i).get("weather", {}).get("temperature")
        if value is None:
            value = fallback
        if value is None:
            missing.append(i)
        else:
            rank = (0, value, "") if isinstance(value, str) else (1, "", value)
            keyed.append((rank, i))
    # Stable sort by idx first, then by value: ties keep idx ascending in both directions.
    ordered = sorted(keyed, key=lambda kv: kv[1])
    ordered.sort(key=lambda kv: kv[0], reverse=descending)
    return [f"f{i:03d}.jpg" for _, i in ordered] + [f"f{i:03d}.jpg" for i in missing]


@postgres_only
@pytest.mark.parametrize("fallback", [None, 1.0])
def test_sort_with_indexes_pages_like_the_reference(weather, viewer_api, fallback):
    field = MetadataField.objects.create(
        dataset=weather, path="weather.temperature", type=FieldType.FLOAT, fallback=fallback
    )
    assert set(build_sort_indexes(field.pk)) == set(sort_index_names(weather.id, field.pk)) == indexes_of(weather)
    for descending in (False, True):
        sort = ("-" if descending else "") + "weather.temperature"
        expected = _reference_order(descending, fallback)
        forward = walk(viewer_api, url(weather, f"samples?sort={sort}&limit=7"))
        assert forward == expected
        # And back again from the last page through the previous links.
        last = viewer_api.get(url(weather, f"samples?sort={sort}&limit=7"))
        body = last.json()
        while body["next"]:
            body = viewer_api.get(body["next"]).json()
        back = walk(viewer_api, body["previous"], key="previous") if body["previous"] else []
        assert len(back) == len(expected) - len(body["results"])


@postgres_only
def test_the_sort_query_uses_the_index(weather):
    from curation import filters

    field = MetadataField.objects.create(dataset=weather, path="weather.temperature", type=FieldType.FLOAT, fallback=2)
    build_sort_indexes(field.pk)
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a 60-row table would be scanned anyway
        for text in ("weather.temperature", "-weather.temperature"):
            sort = filters.parse_sort(weather, text)
            qs = filters.select_samples(weather).annotate(sort_key=sort.key_text()).order_by(*sort.ordering())[:51]
            plan = qs.explain()
            assert sort_index_names(weather.id, field.pk)[text.startswith("-")] in plan, plan


@postgres_only
def test_configuring_a_field_builds_its_sort_indexes_and_removing_it_drops_them(
    weather, editor_api, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        created = editor_api.post(
            url(weather, "configurator"), {"path": "weather.temperature", "type": "float"}, format="json"
        )
    assert created.status_code == 201, created.content
    names = set(sort_index_names(weather.id, created.json()["id"]))
    assert indexes_of(weather) == names
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = %s", [sorted(names)[0]])
        assert "COALESCE" not in cursor.fetchone()[0]  # no fallback yet
    with django_capture_on_commit_callbacks(execute=True):
        editor_api.patch(url(weather, f"configurator/{created.json()['id']}"), {"fallback": 3.5}, format="json")
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexdef FROM pg_indexes WHERE indexname = ANY(%s)", [list(names)])
        assert all("'3.5'::jsonb" in row[0] for row in cursor.fetchall())  # rebuilt with the new fallback
    with django_capture_on_commit_callbacks(execute=True):
        gone = editor_api.delete(url(weather, f"configurator/{created.json()['id']}"))
    assert gone.status_code == 204
    assert indexes_of(weather) == set()


@postgres_only
def test_deleting_a_dataset_drops_its_sort_indexes(weather, owner_api, django_capture_on_commit_callbacks):
    field = MetadataField.objects.create(dataset=weather, path="weather.temperature", type=FieldType.FLOAT)
    build_sort_indexes(field.pk)
    assert indexes_of(weather) == set(sort_index_names(weather.id, field.pk))
    with django_capture_on_commit_callbacks(execute=True):
        assert owner_api.delete(f"/api/v1/datasets/{weather.id}").status_code == 204
    assert indexes_of(weather) == set()


@postgres_only
def test_sync_sort_indexes_builds_what_older_fields_lack(weather):
    field = MetadataField.objects.create(dataset=weather, path="weather.temperature", type=FieldType.FLOAT)
    assert indexes_of(weather) == set()  # configured without the API: no index yet
    out = io.StringIO()
    call_command("sync_sort_indexes", "--dataset", weather.id, stdout=out)
    assert indexes_of(weather) == set(sort_index_names(weather.id, field.pk))
    assert "weather.temperature" in out.getvalue()
    with pytest.raises(CommandError, match="no dataset"):
        call_command("sync_sort_indexes", "--dataset", "f" * 24)


def test_a_refused_field_builds_no_index(weather, editor_api, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        bad = editor_api.post(url(weather, "configurator"), {"path": "a..b", "type": "float"}, format="json")
    assert bad.status_code == 400 and not callbacks
    assert not MetadataField.objects.filter(dataset=weather).exists()


# --- histograms ---------------------------------------------------------------------------------------


def _numbers(dataset):
    rows = [{"file_name": f"n{i:02d}.jpg", "metadata": {"v": i % 10, "t": ["a", "b", "b"][i % 3]}} for i in range(29)]
    rows.append({"file_name": "none.jpg", "metadata": {"t": "a"}})
    add_samples(dataset, rows)
    MetadataField.objects.create(dataset=dataset, path="v", type=FieldType.INT, fallback=20)
    MetadataField.objects.create(dataset=dataset, path="t", type=FieldType.CATEGORICAL_STRING)


def test_histogram_counts_match_a_hand_computed_reference_with_and_without_a_filter(dataset, viewer_api):
    _numbers(dataset)
    body = viewer_api.get(url(dataset, "metadata/histograms"), {"bins": 3}).json()
    fields = {f["path"]: f for f in body["fields"]}
    v = fields["v"]
    # Values 0..9 (each 2-3 times) and the fallback 20 for none.jpg: bounds 0..20, 3 bins of width 20/3.
    assert (v["min"], v["max"], v["missing"]) == (0.0, 20.0, 0)
    assert v["counts"] == [21, 8, 1]  # [0, 6.67): 0..6 ; [6.67, 13.3): 7..9 ; the last: 20
    t = {row["value"]: row["count"] for row in fields["t"]["values"]}
    assert t == {"a": 11, "b": 19}
    flt = json.dumps({"conditions": [{"path": "t", "op": "eq", "value": "a"}]})
    body = viewer_api.get(url(dataset, "metadata/histograms"), {"bins": 3, "filter": flt}).json()
    fields = {f["path"]: f for f in body["fields"]}
    assert body["matched"] == 11 and body["total"] == 30
    # t == "a" at i % 3 == 0: v = 0,3,6,9,2,5,8,1,4,7 (i = 0..27), plus none.jpg with the fallback 20.
    assert fields["v"]["matched_counts"] == [7, 3, 1]
    assert {r["value"]: r["matched"] for r in fields["t"]["values"]} == {"a": 11, "b": 0}


@postgres_only
def test_histograms_read_through_the_sort_indexes_equal_the_scanned_ones(dataset, viewer_api):
    _numbers(dataset)
    flt = json.dumps({"conditions": [{"path": "v", "op": "gte", "value": 4}]})
    scanned = viewer_api.get(url(dataset, "metadata/histograms"), {"filter": flt}).json()
    for field in MetadataField.objects.filter(dataset=dataset):
        build_sort_indexes(field.pk)
    indexed = viewer_api.get(url(dataset, "metadata/histograms"), {"filter": flt}).json()
    assert indexed == scanned


def test_histograms_with_an_empty_tag_match_nothing(dataset, viewer_api):
    _numbers(dataset)
    empty = Tag.objects.create(dataset=dataset, name="empty", bitmask=b"", count=0, origin="selection")
    body = viewer_api.get(url(dataset, "metadata/histograms"), {"filter": json.dumps({"tag": empty.id})}).json()
    assert body["matched"] == 0 and body["total"] == 30
    assert all(sum(f.get("matched_counts", [])) == 0 for f in body["fields"])


# --- binary colour columns ----------------------------------------------------------------------------


def decode(raw: bytes):
    (length,) = struct.unpack("<I", raw[:4])
    legend = json.loads(raw[4 : 4 + length])
    dtype = {"float32": "<f4", "int16": "<i2"}[legend["dtype"]]
    data = np.frombuffer(raw[4 + length :], dtype=dtype)
    assert data.size == legend["size"] and length % 4 == 0
    return legend, data


def test_binary_columns_decode_to_the_json_ones(dataset, viewer_api):
    _numbers(dataset)
    for params in ({"path": "v"}, {"path": "t"}):
        as_json = viewer_api.get(url(dataset, "metadata/column"), params).json()
        response = viewer_api.get(url(dataset, "metadata/column"), {**params, "encoding": "binary"})
        assert response.status_code == 200 and response["Content-Type"] == "application/octet-stream"
        legend, data = decode(response.content)
        assert legend["kind"] == as_json["kind"] and legend["size"] == 30
        if legend["kind"] == "numeric":
            assert data.tolist() == as_json["values"]  # the fallback (20) included
            assert (legend["min"], legend["max"]) == (0.0, 20.0)
        else:
            assert data.tolist() == as_json["codes"] and legend["categories"] == as_json["categories"] == ["b", "a"]


def test_binary_numeric_column_marks_missing_values_nan(dataset, viewer_api):
    add_samples(
        dataset,
        [
            {"file_name": "a.jpg", "metadata": {"x": 1.5}},
            {"file_name": "b.jpg", "metadata": {}},
            {"file_name": "c.jpg", "metadata": {"x": "text"}},
            {"file_name": "d.jpg", "metadata": {"x": 1e300}},
        ],
    )
    MetadataField.objects.create(dataset=dataset, path="x", type=FieldType.FLOAT)
    legend, data = decode(viewer_api.get(url(dataset, "metadata/column"), {"path": "x", "encoding": "binary"}).content)
    assert data[0] == 1.5 and np.isnan(data[1]) and np.isnan(data[2]) and np.isinf(data[3])
    assert legend["min"] == 1.5


def test_binary_tag_column_and_bad_encoding(dataset, viewer_api):
    add_samples(dataset, [{"file_name": f"{i}.jpg"} for i in range(10)])
    tag = tagging.create_tag(dataset, "odd", [1, 3, 9], origin="selection", origin_detail={})
    legend, data = decode(
        viewer_api.get(url(dataset, "metadata/column"), {"tag": tag.id, "encoding": "binary"}).content
    )
    assert np.flatnonzero(data).tolist() == [1, 3, 9] and legend["categories"] == ["not in odd", "odd"]
    bad = viewer_api.get(url(dataset, "metadata/column"), {"tag": tag.id, "encoding": "xml"})
    assert bad.status_code == 400 and "encoding" in bad.json()["errors"]


def test_binary_column_is_404_for_an_outsider(dataset, outsider_api):
    add_samples(dataset, [{"file_name": "a.jpg"}])
    assert outsider_api.get(url(dataset, "metadata/column"), {"tag": "x", "encoding": "binary"}).status_code == 404


# --- selections as bitmasks ---------------------------------------------------------------------------


def b64(indices, size):
    return base64.b64encode(bitmask.from_indices(indices, size)[: (size + 7) // 8]).decode()


def test_lasso_mask_lists_samples_and_saves_a_tag(dataset, viewer_api, editor_api):
    add_samples(dataset, [{"file_name": f"{i:02d}.jpg"} for i in range(20)])
    mask = b64([2, 5, 19], 20)
    listed = viewer_api.post(url(dataset, "map/samples"), {"mask": mask, "limit": 2}, format="json").json()
    assert listed["count"] == 3 and [s["idx"] for s in listed["samples"]] == [2, 5]
    saved = editor_api.post(url(dataset, "tags"), {"name": "lasso", "bitmask": mask}, format="json")
    assert saved.status_code == 201, saved.content
    assert saved.json()["count"] == 3 and saved.json()["origin"] == "selection"
    assert Tag.objects.get(pk=saved.json()["id"]).indices().tolist() == [2, 5, 19]


@pytest.mark.parametrize(
    "mask, message",
    [
        ("not base64!", "base64"),
        (base64.b64encode(b"\x00\x00\x00\x01").decode(), "bytes"),  # 4 bytes for 20 samples (3 at most)
        (base64.b64encode(b"\x00\x00\x10").decode(), "past the last sample"),  # bit 20
        (12, "base64 string"),
    ],
)
def test_bad_masks_are_refused_and_store_nothing(dataset, editor_api, mask, message):
    add_samples(dataset, [{"file_name": f"{i:02d}.jpg"} for i in range(20)])
    before = Tag.objects.count()
    saved = editor_api.post(url(dataset, "tags"), {"name": "lasso", "bitmask": mask}, format="json")
    assert saved.status_code == 400 and message in json.dumps(saved.json())
    listed = editor_api.post(url(dataset, "map/samples"), {"mask": mask}, format="json")
    assert listed.status_code == 400 and "mask" in listed.json()["errors"]
    assert Tag.objects.count() == before


def test_an_empty_mask_saves_no_tag(dataset, editor_api):
    add_samples(dataset, [{"file_name": f"{i:02d}.jpg"} for i in range(20)])
    saved = editor_api.post(url(dataset, "tags"), {"name": "lasso", "bitmask": ""}, format="json")
    assert saved.status_code == 400 and "empty" in json.dumps(saved.json())


def test_a_viewer_cannot_save_a_lasso(dataset, viewer_api):
    add_samples(dataset, [{"file_name": "a.jpg"}])
    assert (
        viewer_api.post(url(dataset, "tags"), {"name": "x", "bitmask": b64([0], 1)}, format="json").status_code == 403
    )


@postgres_only
def test_a_lasso_over_150k_samples_is_listed_and_saved(dataset, viewer_api, editor_api):
    n = 150_000
    with connection.cursor() as cursor:  # registration is another part's: insert the rows directly
        cursor.execute(
            "INSERT INTO curation_sample (id, dataset_id, idx, file_name, format, sha256, original_key, thumbnail_key, "
            "metadata, created_at) SELECT 'e' || lpad(to_hex(i), 23, '0'), %s, i, 'f' || i || '.jpg', '', '', '', '', "
            "'{}'::jsonb, now() FROM generate_series(0, %s) AS i",
            [dataset.id, n - 1],
        )
    Dataset.objects.filter(pk=dataset.pk).update(next_idx=n)
    chosen = np.arange(0, n, 1)[np.arange(n) % 10 != 3]  # 135,000 samples: past the old 100,000 cap
    mask = b64(chosen, n)
    listed = viewer_api.post(url(dataset, "map/samples"), {"mask": mask, "limit": 60}, format="json").json()
    assert listed["count"] == chosen.size and len(listed["samples"]) == 60
    saved = editor_api.post(url(dataset, "tags"), {"name": "big lasso", "bitmask": mask}, format="json")
    assert saved.status_code == 201 and saved.json()["count"] == chosen.size


# --- exports ------------------------------------------------------------------------------------------


def test_exports_stream_in_blocks_with_every_row_once(dataset, viewer_api, monkeypatch):
    monkeypatch.setattr(tagging, "EXPORT_BLOCK_BYTES", 2048)
    rows = [{"file_name": f"dir/{i:05d}.jpg", "metadata": {"w": {"s": "x" * (i % 50)}, "k": i}} for i in range(3000)]
    add_samples(dataset, rows)
    MetadataField.objects.create(dataset=dataset, path="k", type=FieldType.INT)
    tag = tagging.create_tag(dataset, "every third", list(range(0, 3000, 3)), origin="selection", origin_detail={})
    for fmt in ("filenames", "csv", "json", "label-studio"):
        response = viewer_api.get(url(dataset, f"tags/{tag.id}/export"), {"format": fmt})
        assert response.status_code == 200 and response.streaming
        chunks = list(response.streaming_content)
        assert 1 < len(chunks) < 200  # blocks: neither one piece per row nor one whole body
        assert all(len(chunk) >= 2048 for chunk in chunks[:-1])
        body = b"".join(chunks).decode()
        if fmt == "filenames":
            assert body.splitlines() == [f"dir/{i:05d}.jpg" for i in range(0, 3000, 3)]
        elif fmt == "csv":
            table = list(csv.reader(io.StringIO(body)))
            assert table[0][-1] == "k" and [r[-1] for r in table[1:]] == [str(i) for i in range(0, 3000, 3)]
        else:
            items = json.loads(body)
            assert len(items) == 1000
            names = [it["file_name"] if fmt == "json" else it["data"]["file_name"] for it in items]
            assert names == [f"dir/{i:05d}.jpg" for i in range(0, 3000, 3)]


# --- dataset list ---------------------------------------------------------------------------------------


def test_dataset_list_takes_a_bounded_number_of_queries(owner, owner_api, django_assert_max_num_queries):
    for k in range(6):
        ds = create_dataset(owner, f"set {k}", "meta")
        add_samples(ds, [{"file_name": f"{i}.jpg"} for i in range(k + 1)])
        tagging.create_tag(ds, f"t{k}", [0], origin="selection", origin_detail={})
    with django_assert_max_num_queries(4):
        body = owner_api.get("/api/v1/datasets").json()
    counts = sorted((d["sample_count"], d["tag_count"]) for d in body)
    assert counts == [(k + 1, 2) for k in range(6)]  # initial-tag and t<k>
    detail = owner_api.get(f"/api/v1/datasets/{body[0]['id']}").json()
    assert detail["sample_count"] == body[0]["sample_count"]
