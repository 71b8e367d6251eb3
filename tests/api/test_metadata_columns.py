"""The metadata column store (curation.columns): histograms, filter counts and colour columns read from typed
per-field columns give exactly what the SQL path gives, and a stale or missing store falls back to SQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from curation import bitmask, columns, tagging
from curation.api.analytics import _histograms_from_columns, histograms
from curation.errors import DomainError
from curation.filters import parse_filter, select_samples
from curation.models import Dataset, FieldType, MetadataColumns, MetadataField
from curation.services import add_samples, delete_dataset

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif("connection.vendor != 'postgresql'", reason="the column store is PostgreSQL's"),
]

N = 240


def _meta(i: int) -> dict:
    """Numbers, missing paths, JSON nulls, values of the wrong type, a few categories, nested paths."""
    m: dict = {}
    if i % 13 == 0:
        m["t"] = "hot"
    elif i % 11 == 0:
        m["t"] = None
    elif i % 17 == 0:
        m["t"] = [1, 2]
    elif i % 5 != 0:
        m["t"] = (i % 29) * 1.25 - 7.5
    if i % 7:
        m["cam"] = {"id": i % 9}
    weather = ["rain", "sun", "fog", "snow"][i % 4]
    if i % 19 == 0:
        m["w"] = 3  # a number among strings
    elif i % 23 == 0:
        m["w"] = None
    elif i % 6:
        m["w"] = weather
    if i % 3:
        m["flag"] = i % 2 == 0
    m["score"] = i % 31
    return m


@pytest.fixture
def rich(dataset):
    add_samples(dataset, [{"file_name": f"img/{i:04d}.jpg", "metadata": _meta(i)} for i in range(N)])
    dataset.refresh_from_db()
    for path, kind, fallback in [
        ("t", FieldType.FLOAT, None),
        ("cam.id", FieldType.INT, 0),
        ("w", FieldType.CATEGORICAL_STRING, "sun"),
        ("flag", FieldType.BOOLEAN, None),
        ("score", FieldType.CATEGORICAL_INT, 30),
    ]:
        MetadataField.objects.create(dataset=dataset, path=path, type=kind, fallback=fallback)
    return dataset


def _fresh(dataset) -> columns.Store:
    columns.build(dataset.pk)
    store = columns.fresh_store(dataset, queue=False)
    assert store is not None
    return store


FILTERS = [
    None,
    {"conditions": []},
    {"conditions": [{"path": "t", "op": "gt", "value": 2}]},
    {"conditions": [{"path": "t", "op": "lte", "value": 0}, {"path": "cam.id", "op": "lt", "value": 4}]},
    {"conditions": [{"path": "t", "op": "eq", "value": 5}]},
    {"conditions": [{"path": "t", "op": "ne", "value": 5}]},
    {"conditions": [{"path": "t", "op": "eq", "value": "hot"}]},  # a string on a mixed numeric path: SQL
    {"conditions": [{"path": "t", "op": "exists", "value": False}]},
    {"conditions": [{"path": "t", "op": "in", "value": [5, -7.5, 10]}]},
    {"conditions": [{"path": "cam.id", "op": "eq", "value": 0}]},  # the fallback matches: missing ones too
    {"conditions": [{"path": "cam.id", "op": "ne", "value": 0}]},
    {"conditions": [{"path": "cam.id", "op": "gte", "value": "a"}]},
    {"conditions": [{"path": "w", "op": "eq", "value": "rain"}]},
    {"conditions": [{"path": "w", "op": "eq", "value": "sun"}]},  # the fallback
    {"conditions": [{"path": "w", "op": "in", "value": ["fog", 3, True]}]},
    {"conditions": [{"path": "w", "op": "gt", "value": "g"}]},
    {"conditions": [{"path": "w", "op": "ne", "value": "fog"}]},
    {"conditions": [{"path": "flag", "op": "eq", "value": True}]},
    {"conditions": [{"path": "flag", "op": "exists", "value": True}, {"path": "score", "op": "lt", "value": 10}]},
    {"conditions": [{"path": "unconfigured", "op": "exists", "value": False}]},  # not a column: SQL part
    {"file_name": "01", "conditions": [{"path": "w", "op": "eq", "value": "rain"}]},
    # Text operations: on the categories' codes for a categorical field; none of them matches a number.
    {"conditions": [{"path": "w", "op": "contains", "value": "n"}]},
    {"conditions": [{"path": "w", "op": "icontains", "value": "RA"}]},
    {"conditions": [{"path": "w", "op": "ieq", "value": "SUN"}]},  # the fallback matches: missing ones too
    {"conditions": [{"path": "w", "op": "iin", "value": ["Fog", "SNOW"]}]},
    {"conditions": [{"path": "cam.id", "op": "icontains", "value": "1"}]},  # numeric, numbers only: none
    {"conditions": [{"path": "t", "op": "icontains", "value": "HO"}]},  # a string on a mixed numeric path: SQL
]


@pytest.mark.parametrize("filter_obj", FILTERS, ids=lambda f: json.dumps(f)[:60])
@pytest.mark.parametrize("bins", [24, 3])
def test_histograms_from_columns_equal_the_sql_path(rich, filter_obj, bins):
    store = _fresh(rich)
    expected = histograms(rich, filter_obj, bins, use_columns=False)
    got = _histograms_from_columns(rich, store, parse_filter(filter_obj) if filter_obj else None, bins)
    assert got == expected
    assert histograms(rich, filter_obj, bins) == expected  # the API's entry point reads the columns


def test_tag_filters_equal_the_sql_path(rich, owner):
    store = _fresh(rich)
    scattered = tagging.create_tag(
        rich, "odd", list(range(1, N, 2)), origin="selection", origin_detail={}, creator=owner
    )
    short = tagging.create_tag(rich, "short", [0, 1, 2, 9], origin="selection", origin_detail={}, creator=owner)
    for tag in (scattered, short):
        for conditions in ([], [{"path": "w", "op": "eq", "value": "rain"}]):
            filter_obj = {"tag": tag.id, "conditions": conditions}
            expected = histograms(rich, filter_obj, 10, use_columns=False)
            assert _histograms_from_columns(rich, store, parse_filter(filter_obj), 10) == expected
            parsed = parse_filter(filter_obj)
            found = columns.match(rich, store, **parsed)
            assert found.count() == select_samples(rich, **parsed).count()


@pytest.mark.parametrize("filter_obj", [f for f in FILTERS if f and f.get("conditions")], ids=str)
def test_counts_from_columns_equal_sql(rich, filter_obj):
    _fresh(rich)
    parsed = parse_filter(filter_obj)
    counted = columns.count(rich, **parsed)
    if counted is None:  # a file name, an unconfigured path or a string against a mixed numeric path
        assert parsed["file_name"] or any(c.path in ("unconfigured", "t") for c in parsed["conditions"])
    else:
        assert counted == select_samples(rich, **parsed).count()


def test_sample_list_count_reads_the_columns(rich, owner_api):
    _fresh(rich)
    url = f"/api/v1/datasets/{rich.id}/samples"
    params = {"where": ["w:eq:rain", "cam.id:lt:4"], "count": "true", "limit": 5}
    body = owner_api.get(url, params).json()
    parsed = parse_filter({"conditions": ["w:eq:rain", "cam.id:lt:4"]})
    assert body["count"] == select_samples(rich, **parsed).count() > 0
    assert [r["file_name"] for r in body["results"]] == [
        s.file_name for s in select_samples(rich, **parsed).order_by("idx")[:5]
    ]


@pytest.mark.parametrize("path", ["t", "cam.id", "w", "flag", "score"])
def test_binary_colour_column_from_columns_is_byte_identical(rich, owner_api, path):
    url = f"/api/v1/datasets/{rich.id}/metadata/column"
    before = owner_api.get(url, {"path": path, "encoding": "binary"})
    assert before.status_code == 200
    _fresh(rich)
    after = owner_api.get(url, {"path": path, "encoding": "binary"})
    assert after.status_code == 200 and after.streaming  # the column store's streamed response
    assert b"".join(after.streaming_content) == before.content
    assert int(after["Content-Length"]) == len(before.content)


def test_many_categories_fold_into_other_as_in_sql(dataset, owner_api):
    add_samples(dataset, [{"file_name": f"{i}.jpg", "metadata": {"k": f"v{i % 30}"}} for i in range(90)])
    MetadataField.objects.create(dataset=dataset, path="k", type=FieldType.CATEGORICAL_STRING)
    url = f"/api/v1/datasets/{dataset.id}/metadata/column"
    before = owner_api.get(url, {"path": "k", "encoding": "binary"}).content
    _fresh(dataset)
    after = owner_api.get(url, {"path": "k", "encoding": "binary"})
    assert b"".join(after.streaming_content) == before


def test_new_samples_make_the_store_stale_and_sql_answers(rich):
    _fresh(rich)
    add_samples(rich, [{"file_name": "late.jpg", "metadata": {"w": "rain", "t": 100.0}}])
    assert columns.fresh_store(rich, queue=False) is None
    got = histograms(rich, {"conditions": ["w:eq:rain"]}, 8)
    assert got["total"] == N + 1
    assert got == histograms(rich, {"conditions": ["w:eq:rain"]}, 8, use_columns=False)
    assert columns.count(rich, conditions=parse_filter({"conditions": ["w:eq:rain"]})["conditions"]) is None
    # A stale store asks for a rebuild once, however many requests see it.
    assert MetadataColumns.objects.get(pk=rich.pk).status == "queued"
    assert columns.request_build(rich.pk) is False
    store = _fresh(rich)
    assert store.size == N + 1
    assert histograms(rich, {"conditions": ["w:eq:rain"]}, 8) == histograms(
        rich, {"conditions": ["w:eq:rain"]}, 8, use_columns=False
    )


def test_metadata_upload_bumps_the_version(rich, owner_api):
    _fresh(rich)
    version = Dataset.objects.get(pk=rich.pk).metadata_version
    doc = {"images": [{"file_name": "img/0001.jpg", "id": 1}], "metadata": [{"image_id": 1, "w": "hail", "t": 1e6}]}
    response = owner_api.post(f"/api/v1/datasets/{rich.id}/metadata", doc, format="json")
    assert response.status_code == 200, response.content
    assert Dataset.objects.get(pk=rich.pk).metadata_version == version + 1
    assert columns.fresh_store(rich, queue=False) is None
    _fresh(rich)
    got = histograms(rich, None, 12)
    assert got == histograms(rich, None, 12, use_columns=False)
    w = next(f for f in got["fields"] if f["path"] == "w")
    assert {"value": "hail", "count": 1, "matched": 0} in w["values"]


def test_overwriting_registration_bumps_the_version(dataset, owner_api):
    dataset.upload_mode = "meta"
    dataset.save()
    url = f"/api/v1/datasets/{dataset.id}/samples"
    owner_api.post(url, {"samples": [{"file_name": "a.jpg", "metadata": {"w": "x"}}]}, format="json")
    MetadataField.objects.create(dataset=dataset, path="w", type=FieldType.CATEGORICAL_STRING)
    _fresh(dataset)
    body = {"samples": [{"file_name": "a.jpg", "metadata": {"w": "y"}}], "overwrite": True}
    assert owner_api.post(url, body, format="json").json()["replaced"] == 1
    assert columns.fresh_store(dataset, queue=False) is None
    _fresh(dataset)
    assert histograms(dataset, None, 4)["fields"][0]["values"] == [{"value": "y", "count": 1, "matched": 0}]


def test_a_field_type_change_or_new_field_needs_a_rebuild(rich):
    _fresh(rich)
    MetadataField.objects.filter(dataset=rich, path="score").update(type=FieldType.INT)
    assert columns.fresh_store(rich, queue=False) is None
    _fresh(rich)
    assert histograms(rich, None, 5) == histograms(rich, None, 5, use_columns=False)
    MetadataField.objects.create(dataset=rich, path="new", type=FieldType.FLOAT)
    assert columns.fresh_store(rich, queue=False) is None


def test_missing_numbers_and_a_field_without_numbers(dataset):
    add_samples(dataset, [{"file_name": f"{i}.jpg", "metadata": {"s": "x"} if i % 2 else {}} for i in range(10)])
    MetadataField.objects.create(dataset=dataset, path="s", type=FieldType.FLOAT)
    MetadataField.objects.create(dataset=dataset, path="none", type=FieldType.INT, fallback=4)
    store = _fresh(dataset)
    for filter_obj in (None, {"conditions": ["s:exists"]}, {"conditions": ["none:eq:4"]}):
        expected = histograms(dataset, filter_obj, 6, use_columns=False)
        assert _histograms_from_columns(dataset, store, parse_filter(filter_obj) if filter_obj else None, 6) == expected


def test_too_many_categories_leave_the_field_to_sql(rich, monkeypatch):
    monkeypatch.setattr(columns, "MAX_CATEGORIES", 3)
    store = _fresh(rich)
    assert not store.usable(["w"]) and store.usable(["t", "cam.id"])
    assert "skipped" in store.fields["w"]
    assert _histograms_from_columns(rich, store, None, 10) is None
    assert histograms(rich, None, 10) == histograms(rich, None, 10, use_columns=False)
    # Fresh (no rebuild asked for), though the field has no column.
    assert MetadataColumns.objects.get(pk=rich.pk).status == "idle"


def test_status_endpoint_and_rebuild(rich, owner_api, viewer_api, outsider_api):
    url = f"/api/v1/datasets/{rich.id}/metadata/columns"
    assert outsider_api.get(url).status_code == 404
    assert viewer_api.post(url).status_code == 403
    assert owner_api.get(url).json()["fresh"] is False
    assert owner_api.post(url).status_code == 202
    columns.build(rich.pk)
    body = owner_api.get(url).json()
    assert body["fresh"] is True and body["size"] == N
    assert all(f["column"] for f in body["fields"].values())


def test_rebuild_replaces_files_and_deleting_the_dataset_removes_them(rich, django_capture_on_commit_callbacks):
    columns.build(rich.pk)
    folder = Path(settings.MEDIA_ROOT) / "datasets" / rich.id / "columns"
    first = {p.name for p in folder.iterdir()}
    assert len(first) == 1
    columns.build(rich.pk)
    second = {p.name for p in folder.iterdir()}
    assert len(second) == 1 and second != first
    with django_capture_on_commit_callbacks(execute=True):
        delete_dataset(rich)
    assert not folder.exists()


def test_management_command_builds(rich, capsys):
    call_command("build_metadata_columns", "--dataset", rich.id)
    assert rich.id in capsys.readouterr().out
    assert columns.fresh_store(rich, queue=False) is not None


def _walk(api, url, params, key="next"):
    names, link = [], None
    while True:
        response = api.get(link) if link else api.get(url, params)
        assert response.status_code == 200, response.content
        body = response.json()
        names.append([r["file_name"] for r in body["results"]])
        assert len(names) <= 1000, "the links go round in circles"
        link = body[key]
        if not link:
            return names, body


@pytest.mark.parametrize("sort", ["idx", "-idx"])
def test_pages_found_through_the_columns_equal_the_sql_pages(rich, owner_api, sort, monkeypatch):
    url = f"/api/v1/datasets/{rich.id}/samples"
    params = {"where": ['w:in:["rain","fog"]', "cam.id:lt:6"], "limit": 7, "sort": sort, "count": "true"}
    monkeypatch.setattr(columns, "BLOCK", 64)  # several blocks, so pages cross block edges
    sql_pages, sql_last = _walk(owner_api, url, params)  # no store yet: SQL
    _fresh(rich)
    column_pages, last = _walk(owner_api, url, params)
    assert column_pages == sql_pages and len(sql_pages) > 3
    assert last["count"] == sql_last["count"] == sum(len(p) for p in sql_pages)
    # And back from the last page through the `previous` links.
    back, _ = _walk(owner_api, last["previous"], None, key="previous")
    assert back == list(reversed(sql_pages[:-1]))


def test_removing_the_last_field_drops_the_store(rich, owner_api, django_capture_on_commit_callbacks):
    columns.build(rich.pk)
    folder = Path(settings.MEDIA_ROOT) / "datasets" / rich.id / "columns"
    assert folder.exists()
    with django_capture_on_commit_callbacks(execute=True):
        for field in MetadataField.objects.filter(dataset=rich):
            url = f"/api/v1/datasets/{rich.id}/configurator/{field.pk}"
            assert owner_api.delete(url).status_code == 204
    assert not MetadataColumns.objects.filter(pk=rich.pk).exists()
    assert not folder.exists()


@pytest.mark.parametrize("filter_obj", [f for f in FILTERS if f and f.get("conditions")], ids=str)
def test_filter_masks_from_columns_equal_sql(rich, filter_obj):
    parsed = parse_filter(filter_obj)
    from_sql = columns.filter_mask(rich, **parsed)  # no store yet: SQL
    _fresh(rich)
    assert columns.fresh_store(rich, queue=False) is not None
    from_columns = columns.filter_mask(rich, **parsed)
    expected = sorted(select_samples(rich, **parsed).values_list("idx", flat=True))
    assert bitmask.to_indices(from_columns).tolist() == bitmask.to_indices(from_sql).tolist() == expected


def _spy(monkeypatch, module, name: str) -> list:
    """Record the calls of module.name (still calling it), to show which path answered."""
    calls: list = []
    real = getattr(module, name)

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


def _tag_or_error(dataset, name: str, filter_obj, **kwargs):
    try:
        tag = tagging.tag_from_filter(dataset, name, filter_obj, **kwargs)
    except DomainError as exc:
        return exc.errors
    return bytes(tag.bitmask), tag.count, tag.parent_id


@pytest.mark.parametrize("filter_obj", [f for f in FILTERS if f and f.get("conditions")], ids=str)
def test_tags_from_a_filter_through_the_columns_equal_the_sql_path(rich, filter_obj, monkeypatch):
    monkeypatch.setattr(columns, "BLOCK", 64)  # several blocks, each packed into whole bytes
    expected = _tag_or_error(rich, "by sql", filter_obj)  # no store yet: SQL
    _fresh(rich)
    calls = _spy(monkeypatch, columns, "match")
    assert _tag_or_error(rich, "by columns", filter_obj) == expected
    assert calls  # the columns answered


def test_a_tag_from_a_filter_with_a_tag_and_exclusions_through_the_columns(rich, monkeypatch):
    monkeypatch.setattr(columns, "BLOCK", 64)
    parent = tagging.create_tag(rich, "most", list(range(3, N - 5)), origin="selection", origin_detail={})
    excluded = list(rich.samples.filter(idx__in=[4, 40, 41, 200]).values_list("id", flat=True))
    filter_obj = {"tag": parent.id, "conditions": [{"path": "w", "op": "in", "value": ["rain", "fog"]}]}
    expected = _tag_or_error(rich, "by sql", filter_obj, exclude_sample_ids=excluded)
    _fresh(rich)
    calls = _spy(monkeypatch, columns, "match")
    got = _tag_or_error(rich, "by columns", filter_obj, exclude_sample_ids=excluded)
    assert got == expected and calls
    assert got[2] == parent.id and got[1] > 0


def test_a_stale_store_leaves_a_tag_from_a_filter_to_sql(rich, monkeypatch):
    _fresh(rich)
    add_samples(rich, [{"file_name": "late.jpg", "metadata": {"w": "rain"}}])  # the store is stale now
    calls = _spy(monkeypatch, columns, "match")
    tag = tagging.tag_from_filter(rich, "late", {"conditions": [{"path": "w", "op": "eq", "value": "rain"}]})
    assert not calls
    assert rich.next_idx - 1 in set(tag.indices().tolist())


@pytest.mark.parametrize("path", ["t", "cam.id", "w", "flag", "score"])
def test_json_colour_column_from_columns_equals_the_sql_path(rich, owner_api, path, monkeypatch):
    url = f"/api/v1/datasets/{rich.id}/metadata/column"
    before = owner_api.get(url, {"path": path})
    assert before.status_code == 200
    _fresh(rich)
    monkeypatch.setattr(columns, "BLOCK", 64)
    numeric = _spy(monkeypatch, columns, "numeric_value_blocks")
    categorical = _spy(monkeypatch, columns, "category_column_blocks")
    after = owner_api.get(url, {"path": path})
    assert after.status_code == 200 and (numeric or categorical)  # read from the columns
    assert after.json() == before.json()
    assert after.content == before.content


# Numbers of `u`: ties, numbers that round to one float64 (only SQL tells them apart), negatives, missing, null.
U_VALUES = ["0.1", "0.10000000000000000001", "0.1000000000000000001", "-2.5", "7", "1e-7", "0.1", "3.25", None, "null"]


@pytest.mark.parametrize("sort", ["cam.id", "-cam.id", "u", "-u", "t"])
def test_pages_sorted_by_a_numeric_field_through_the_columns_equal_the_sql_pages(rich, owner_api, sort, monkeypatch):
    with connection.cursor() as cursor:
        for i in range(N):
            value = U_VALUES[(i * 7) % len(U_VALUES)]
            if value is not None:
                cursor.execute(
                    "UPDATE curation_sample SET metadata = jsonb_set(metadata, '{u}', %s::jsonb) "
                    "WHERE dataset_id = %s AND idx = %s",
                    [value, rich.pk, i],
                )
    MetadataField.objects.create(dataset=rich, path="u", type=FieldType.FLOAT)
    url = f"/api/v1/datasets/{rich.id}/samples"
    params = {"where": ['w:in:["rain","fog","snow"]', "flag:exists:true"], "limit": 4, "sort": sort, "count": "true"}
    monkeypatch.setattr(columns, "BLOCK", 64)
    sql_pages, sql_last = _walk(owner_api, url, params)  # no store yet: SQL
    sql_back, _ = _walk(owner_api, sql_last["previous"], None, key="previous")
    _fresh(rich)
    answers = _answers(monkeypatch, "sorted_page", "sort_candidates")
    column_pages, last = _walk(owner_api, url, params)
    assert column_pages == sql_pages and len(sql_pages) > 3
    assert last["count"] == sql_last["count"] == sum(len(p) for p in sql_pages)
    back, _ = _walk(owner_api, last["previous"], None, key="previous")
    assert back == sql_back == list(reversed(sql_pages[:-1]))
    if sort == "t":  # strings and lists among its numbers: the columns cannot order it
        assert answers and all(a is None for _name, a in answers)
    else:  # every page ordered by the columns; numbers one float holds (u) only through the candidates
        answered = [name for name, a in answers if a is not None]
        assert len(answered) == len(column_pages) + len(back)
        assert set(answered) == {"sort_candidates" if sort.lstrip("-") == "u" else "sorted_page"}


def _answers(monkeypatch, *names: str) -> list:
    """Record (name, result) of each call of columns.<name> (still calling it), to show which path answered."""
    answers: list = []
    for name in names:
        real = getattr(columns, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            answers.append((_name, _real(*args, **kwargs)))
            return answers[-1][1]

        monkeypatch.setattr(columns, name, spy)
    return answers


# Strings whose order is the database collation's (case, accents, digits, punctuation), ties, missing and null.
NAMES = [
    '"Zebra"',
    '"apple"',
    '"Äpfel"',
    '"éclair"',
    '"b"',
    '"B"',
    '"10"',
    '"9"',
    '"a b"',
    '"ab"',
    '"apple"',
    None,
    "null",
]
FEW_VALUE_SORTS = ["w", "-w", "flag", "-flag", "score", "-score", "cam.id", "-cam.id", "name", "-name", "u", "-u"]


@pytest.mark.parametrize("sort", FEW_VALUE_SORTS)
@pytest.mark.parametrize("where", ["none", "conditions", "tag"])
def test_pages_sorted_by_categories_or_few_numbers_through_the_columns_equal_the_sql_pages(
    rich, owner_api, sort, where, monkeypatch
):
    """Categorical fields (ranked in jsonb order, fallbacks and missing values included) and numeric fields with
    many ties (cam.id: 9 values and a fallback) page from the columns exactly as SQL pages, in both directions."""
    with connection.cursor() as cursor:
        for i in range(N):
            for path, values in (("name", NAMES), ("u", ["2.5", "-1", "7", "0", "1e-7", None, "7.0"])):
                value = values[(i * 5) % len(values)]
                if value is not None:
                    cursor.execute(
                        "UPDATE curation_sample SET metadata = jsonb_set(metadata, %s, %s::jsonb) "
                        "WHERE dataset_id = %s AND idx = %s",
                        [[path], value, rich.pk, i],
                    )
    MetadataField.objects.create(dataset=rich, path="name", type=FieldType.CATEGORICAL_STRING)
    MetadataField.objects.create(dataset=rich, path="u", type=FieldType.FLOAT, fallback=2.5)
    params = {"limit": 9, "sort": sort, "count": "true"}
    if where == "conditions":
        params["where"] = ['w:in:["rain","fog","snow"]', "score:lt:25"]
    elif where == "tag":
        params["tag"] = tagging.create_tag(rich, "odd", list(range(1, N, 2)), origin="selection", origin_detail={}).id
    url = f"/api/v1/datasets/{rich.id}/samples"
    monkeypatch.setattr(columns, "BLOCK", 64)
    sql_pages, sql_last = _walk(owner_api, url, params)  # no store yet: SQL
    sql_back, _ = _walk(owner_api, sql_last["previous"], None, key="previous")
    _fresh(rich)
    answers = _answers(monkeypatch, "sorted_page")
    column_pages, last = _walk(owner_api, url, params)
    assert column_pages == sql_pages and len(sql_pages) > 3
    assert last["count"] == sql_last["count"] == sum(len(p) for p in sql_pages)
    back, _ = _walk(owner_api, last["previous"], None, key="previous")
    assert back == sql_back == list(reversed(sql_pages[:-1]))
    assert len(answers) == len(column_pages) + len(back) and all(a is not None for _n, a in answers)


def test_a_sort_on_a_stale_store_pages_through_sql(rich, owner_api, monkeypatch):
    _fresh(rich)
    add_samples(rich, [{"file_name": "late.jpg", "metadata": {"w": "aaa", "cam": {"id": 0}}}])
    answers = _answers(monkeypatch, "sorted_page", "sort_candidates")
    url = f"/api/v1/datasets/{rich.id}/samples"
    for sort in ("w", "cam.id"):
        pages, _ = _walk(owner_api, url, {"sort": sort, "limit": 50})
        names = [n for page in pages for n in page]
        assert len(names) == N + 1 and len(set(names)) == N + 1
    assert names.index("late.jpg") < names.index("img/0001.jpg")  # cam.id 0 (late) before 1; ties by idx
    assert pages[0][0] == "img/0000.jpg" and not answers
    first = owner_api.get(url, {"sort": "w", "limit": 1}).json()["results"][0]["file_name"]
    assert first == "late.jpg"


def test_a_store_built_before_numbers_were_checked_for_rounding_is_rebuilt(rich):
    _fresh(rich)
    row = MetadataColumns.objects.get(pk=rich.pk)
    assert row.fields["t"]["inexact"] == 0 and "inexact" not in row.fields["w"]
    row.fields["t"].pop("inexact")
    row.save()
    assert columns.fresh_store(rich, queue=False) is None
    assert _fresh(rich).fields["t"]["inexact"] == 0
