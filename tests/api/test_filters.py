"""Sample filters: tag, file name, metadata conditions (each op, fallbacks), sorting by a metadata path."""

import json

import pytest

from curation import bitmask
from curation.errors import DomainError
from curation.filters import parse_conditions, parse_filter, select_samples
from curation.models import FieldType, MetadataField, Sample, Tag, TagOrigin
from curation.services import add_samples

pytestmark = pytest.mark.django_db

# file name -> metadata; idx follows this order.
ROWS = {
    "cam0/a.jpg": {"weather": {"temperature": 9, "scenario": "rain"}, "n": 3},
    "cam0/b.jpg": {"weather": {"temperature": 10, "scenario": "sun"}, "n": 0},
    "cam1/c.jpg": {"weather": {"temperature": "hot"}, "n": 7},
    "cam1/d.jpg": {"weather": {"temperature": 25.5, "scenario": "snow"}, "flag": True},
    "cam2/e.jpg": {},
    "cam2/f.jpg": {"weather": {"temperature": None}, "n": 1},
    "CAM3/g.jpg": {"weather": {"temperature": 5, "scenario": "rain"}, "n": "9", "flag": 1},
}


@pytest.fixture
def filled(dataset):
    add_samples(dataset, [{"file_name": name, "metadata": meta} for name, meta in ROWS.items()])
    return dataset


def names(response):
    assert response.status_code == 200, response.content
    return [row["file_name"] for row in response.json()["results"]]


def listing(api, dataset, **params):
    return api.get(f"/api/v1/datasets/{dataset.id}/samples", params)


def where(api, dataset, *conditions, **params):
    return names(api.get(f"/api/v1/datasets/{dataset.id}/samples", {"where": list(conditions), **params}))


@pytest.mark.parametrize(
    "condition, expected",
    [
        ("weather.temperature:gt:5", ["cam0/a.jpg", "cam0/b.jpg", "cam1/d.jpg"]),
        ("weather.temperature:gte:9", ["cam0/a.jpg", "cam0/b.jpg", "cam1/d.jpg"]),
        ("weather.temperature:lt:10", ["cam0/a.jpg", "CAM3/g.jpg"]),  # 9 < 10 as numbers, not as text
        ("weather.temperature:lte:9.0", ["cam0/a.jpg", "CAM3/g.jpg"]),
        ("weather.temperature:eq:9", ["cam0/a.jpg"]),
        ("weather.temperature:eq:25.5", ["cam1/d.jpg"]),
        ("weather.temperature:eq:hot", ["cam1/c.jpg"]),
        ("weather.scenario:eq:rain", ["cam0/a.jpg", "CAM3/g.jpg"]),
        ("weather.scenario:ne:rain", ["cam0/b.jpg", "cam1/d.jpg"]),  # samples without a scenario do not match
        ('weather.scenario:in:["rain", "snow"]', ["cam0/a.jpg", "cam1/d.jpg", "CAM3/g.jpg"]),
        ("n:in:[0, 7]", ["cam0/b.jpg", "cam1/c.jpg"]),
        ("weather.scenario:gte:s", ["cam0/b.jpg", "cam1/d.jpg"]),  # strings compare as strings
        ("weather.scenario:exists:true", ["cam0/a.jpg", "cam0/b.jpg", "cam1/d.jpg", "CAM3/g.jpg"]),
        ("weather.scenario:exists", ["cam0/a.jpg", "cam0/b.jpg", "cam1/d.jpg", "CAM3/g.jpg"]),
        ("weather.temperature:exists:false", ["cam2/e.jpg", "cam2/f.jpg"]),  # null counts as missing
        ("flag:eq:true", ["cam1/d.jpg"]),  # a boolean never equals the number 1
        ("flag:eq:1", ["CAM3/g.jpg"]),
        ("n:eq:9", []),  # the string "9" is not the number 9
        ('n:eq:"9"', ["CAM3/g.jpg"]),
        ("n:gt:5", ["cam1/c.jpg"]),  # the string "9" never matches a numeric comparison
        ("weather:exists:true", ["cam0/a.jpg", "cam0/b.jpg", "cam1/c.jpg", "cam1/d.jpg", "cam2/f.jpg", "CAM3/g.jpg"]),
        ("missing.path:eq:1", []),
        # Text: contains is case-sensitive, icontains/ieq/iin are not; numbers and booleans never match.
        ("weather.scenario:contains:ai", ["cam0/a.jpg", "CAM3/g.jpg"]),
        ("weather.scenario:contains:AI", []),
        ("weather.scenario:icontains:AI", ["cam0/a.jpg", "CAM3/g.jpg"]),
        ("weather.scenario:icontains:n", ["cam0/a.jpg", "cam0/b.jpg", "cam1/d.jpg", "CAM3/g.jpg"]),
        ("weather.scenario:ieq:RAIN", ["cam0/a.jpg", "CAM3/g.jpg"]),
        ("weather.scenario:ieq:rai", []),
        ('weather.scenario:iin:["SUN", "Snow"]', ["cam0/b.jpg", "cam1/d.jpg"]),
        ("weather.temperature:icontains:O", ["cam1/c.jpg"]),  # only the string "hot"; 10 is not text
        ("weather.temperature:contains:1", []),
        ("n:contains:9", ["CAM3/g.jpg"]),  # the text "9", typed bare, is text for contains
        ('n:ieq:"9"', ["CAM3/g.jpg"]),
        ("flag:icontains:true", []),
        ("weather.scenario:contains:%", []),  # no LIKE wildcards
        ("weather.scenario:contains:_", []),
    ],
)
def test_each_operator(filled, viewer_api, condition, expected):
    assert where(viewer_api, filled, condition) == expected


def test_a_string_value_never_matches_a_numeric_comparison(filled, viewer_api):
    for op in ("gt", "gte", "lt", "lte"):
        assert "cam1/c.jpg" not in where(viewer_api, filled, f"weather.temperature:{op}:5")


def test_conditions_combine_with_and_and_json_form_equals_where_form(filled, viewer_api):
    by_where = where(viewer_api, filled, "weather.temperature:gt:4", "weather.scenario:eq:rain")
    conditions = json.dumps(
        [
            {"path": "weather.temperature", "op": "gt", "value": 4},
            {"path": "weather.scenario", "op": "eq", "value": "rain"},
        ]
    )
    by_json = names(listing(viewer_api, filled, conditions=conditions))
    assert by_where == by_json == ["cam0/a.jpg", "CAM3/g.jpg"]
    mixed = names(
        viewer_api.get(f"/api/v1/datasets/{filled.id}/samples", {"where": "n:lt:5", "conditions": conditions})
    )
    assert mixed == ["cam0/a.jpg"]


def test_fallback_stands_in_for_missing_values(filled, viewer_api):
    MetadataField.objects.create(dataset=filled, path="weather.temperature", type=FieldType.FLOAT, fallback=0)
    # The fallback 0 satisfies lt 5: samples lacking the value (absent or null) join in.
    assert where(viewer_api, filled, "weather.temperature:lt:5") == ["cam2/e.jpg", "cam2/f.jpg"]
    assert where(viewer_api, filled, "weather.temperature:eq:0") == ["cam2/e.jpg", "cam2/f.jpg"]
    # ... and does not satisfy gt 5: they stay out.
    assert where(viewer_api, filled, "weather.temperature:gt:5") == ["cam0/a.jpg", "cam0/b.jpg", "cam1/d.jpg"]
    assert "cam2/e.jpg" in where(viewer_api, filled, "weather.temperature:ne:9")
    # exists asks about the data itself, fallback or not.
    assert where(viewer_api, filled, "weather.temperature:exists:false") == ["cam2/e.jpg", "cam2/f.jpg"]


def test_categorical_fallback_with_in(filled, viewer_api):
    MetadataField.objects.create(
        dataset=filled, path="weather.scenario", type=FieldType.CATEGORICAL_STRING, fallback="unknown"
    )
    assert where(viewer_api, filled, 'weather.scenario:in:["unknown", "sun"]') == [
        "cam0/b.jpg",
        "cam1/c.jpg",
        "cam2/e.jpg",
        "cam2/f.jpg",
    ]


def test_file_name_substring_ignores_case(filled, viewer_api):
    assert names(listing(viewer_api, filled, file_name="cam3")) == ["CAM3/g.jpg"]
    assert names(listing(viewer_api, filled, file_name="CAM0/")) == ["cam0/a.jpg", "cam0/b.jpg"]
    assert names(listing(viewer_api, filled, file_name="%")) == []  # no LIKE wildcards leak through


def make_tag(dataset, name, indices):
    mask = bitmask.from_indices(indices)
    return Tag.objects.create(dataset=dataset, name=name, bitmask=mask, count=len(indices), origin=TagOrigin.SELECTION)


def test_tag_filter_and_tag_with_conditions(filled, viewer_api):
    tag = make_tag(filled, "picked", [0, 2, 6])
    assert names(listing(viewer_api, filled, tag=tag.id)) == ["cam0/a.jpg", "cam1/c.jpg", "CAM3/g.jpg"]
    assert where(viewer_api, filled, "weather.scenario:eq:rain", tag=tag.id) == ["cam0/a.jpg", "CAM3/g.jpg"]
    empty = make_tag(filled, "empty", [])
    assert names(listing(viewer_api, filled, tag=empty.id)) == []


def test_unknown_tag_is_a_400(filled, viewer_api, owner, django_user_model):
    response = listing(viewer_api, filled, tag="f" * 24)
    assert response.status_code == 400
    assert "tag" in response.json()["detail"]


def test_large_tags_filter_in_sql_by_ranges_and_by_bitmask(dataset, viewer_api):
    add_samples(dataset, [{"file_name": f"img_{i:05d}.jpg"} for i in range(2600)])
    every_third = list(range(0, 2600, 3))  # 867 samples: an IN list
    every_other = list(range(1, 2600, 2))  # 1300 samples in 1300 runs: the bitmask in SQL
    block = list(range(100, 1600)) + list(range(2000, 2500))  # 2000 samples in 2 runs: idx ranges
    for name, indices in [("third", every_third), ("odd", every_other), ("block", block)]:
        tag = make_tag(dataset, name, indices)
        qs = select_samples(dataset, tag=tag.id)
        assert sorted(qs.values_list("idx", flat=True)) == indices
    # Through the API, paging over the bitmask-filtered tag sees each of its samples once.
    tag = Tag.objects.get(dataset=dataset, name="odd")
    seen, url = [], f"/api/v1/datasets/{dataset.id}/samples?tag={tag.id}&limit=1000"
    while url:
        body = viewer_api.get(url).json()
        seen += [row["idx"] for row in body["results"]]
        url = body["next"]
    assert seen == every_other


def walk(api, url, key="next"):
    pages = []
    while url:
        response = api.get(url)
        assert response.status_code == 200, response.content
        body = response.json()
        pages.append([row["file_name"] for row in body["results"]])
        url = body[key]
    return pages


def test_sort_by_metadata_path_pages_through_everything_once(filled, viewer_api):
    first = f"/api/v1/datasets/{filled.id}/samples?sort=weather.temperature&limit=2"
    pages = walk(viewer_api, first)
    flat = [name for page in pages for name in page]
    # jsonb order: strings before numbers; numbers by value; missing values (absent, null) last, by idx.
    assert flat == ["cam1/c.jpg", "CAM3/g.jpg", "cam0/a.jpg", "cam0/b.jpg", "cam1/d.jpg", "cam2/e.jpg", "cam2/f.jpg"]
    assert [len(page) for page in pages] == [2, 2, 2, 1]

    descending = walk(viewer_api, f"/api/v1/datasets/{filled.id}/samples?sort=-weather.temperature&limit=3")
    flat = [name for page in descending for name in page]
    assert flat == ["cam1/d.jpg", "cam0/b.jpg", "cam0/a.jpg", "CAM3/g.jpg", "cam1/c.jpg", "cam2/e.jpg", "cam2/f.jpg"]


def test_previous_links_walk_back_through_the_same_pages(filled, viewer_api):
    url = f"/api/v1/datasets/{filled.id}/samples?sort=-weather.temperature&limit=2"
    forward = []
    while url:
        body = viewer_api.get(url).json()
        forward.append(([r["file_name"] for r in body["results"]], body["previous"]))
        url = body["next"]
    assert forward[0][1] is None
    # Going back from the last page gives the earlier pages in the same order.
    back = walk(viewer_api, forward[-1][1], key="previous")
    assert back == [page for page, _ in forward[:-1]][::-1]


def test_sort_with_ties_pages_by_idx(dataset, viewer_api):
    add_samples(dataset, [{"file_name": f"s{i:02d}.jpg", "metadata": {"group": i % 3}} for i in range(30)])
    pages = walk(viewer_api, f"/api/v1/datasets/{dataset.id}/samples?sort=group&limit=4")
    flat = [name for page in pages for name in page]
    expected = [f"s{i:02d}.jpg" for g in range(3) for i in range(30) if i % 3 == g]
    assert flat == expected


def test_sort_uses_the_fallback(filled, viewer_api):
    MetadataField.objects.create(dataset=filled, path="weather.temperature", type=FieldType.FLOAT, fallback=7)
    pages = walk(viewer_api, f"/api/v1/datasets/{filled.id}/samples?sort=weather.temperature&limit=3")
    flat = [name for page in pages for name in page]
    assert flat == ["cam1/c.jpg", "CAM3/g.jpg", "cam2/e.jpg", "cam2/f.jpg", "cam0/a.jpg", "cam0/b.jpg", "cam1/d.jpg"]


def test_sort_by_idx_descending(filled, viewer_api):
    pages = walk(viewer_api, f"/api/v1/datasets/{filled.id}/samples?sort=-idx&limit=3")
    assert [n for page in pages for n in page] == list(ROWS)[::-1]


@pytest.mark.parametrize(
    "params, field",
    [
        ({"where": "weather.temperature:between:3"}, "where[0]"),
        ({"where": "weather..temperature:eq:3"}, "where[0]"),
        ({"where": "a b:eq:3"}, "where[0]"),
        ({"where": "justapath"}, "where[0]"),
        ({"where": "x:eq"}, "where[0]"),
        ({"where": "x:in:5"}, "where[0]"),
        ({"where": "x:gt:true"}, "where[0]"),
        ({"where": "x:eq:null"}, "where[0]"),
        ({"where": "x:eq:[1]"}, "where[0]"),
        ({"where": "x:exists:maybe"}, "where[0]"),
        ({"where": ".".join(["a"] * 9) + ":eq:1"}, "where[0]"),
        ({"where": ["x:eq:1"] * 21}, "where"),
        ({"conditions": "[{"}, "conditions"),
        ({"conditions": '{"path": "x"}'}, "conditions[0]"),
        ({"conditions": '[{"path": "x", "op": "eq", "value": 1, "extra": 2}]'}, "conditions[0]"),
        ({"conditions": '[{"path": "x", "op": "in", "value": [NaN]}]'}, "conditions"),
        ({"conditions": json.dumps([{"path": "x", "op": "in", "value": list(range(1001))}])}, "conditions[0]"),
        ({"sort": "weather temperature"}, "sort"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"count": "maybe"}, "count"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"filter": "x"}, "filter"),
    ],
)
def test_bad_list_parameters_are_400_naming_them(filled, viewer_api, params, field):
    response = listing(viewer_api, filled, **params)
    assert response.status_code == 400, response.content
    assert response.json()["detail"].startswith(field), response.json()


def test_a_cursor_from_another_sort_is_refused(filled, viewer_api):
    body = listing(viewer_api, filled, sort="weather.temperature", limit=2).json()
    cursor = body["next"].split("cursor=")[1]
    response = listing(viewer_api, filled, sort="idx", cursor=cursor)
    assert response.status_code == 400
    assert "sort" in response.json()["detail"]


def test_parse_conditions_accepts_both_forms_and_names_the_bad_one():
    conditions = parse_conditions(["a.b:gte:3", {"path": "c", "op": "exists", "value": False}, "d:eq:text"])
    assert [(c.path, c.op, c.value) for c in conditions] == [
        ("a.b", "gte", 3),
        ("c", "exists", False),
        ("d", "eq", "text"),
    ]
    with pytest.raises(DomainError) as error:
        parse_conditions(["a:eq:1", {"path": "b", "op": "like", "value": 1}])
    assert "conditions[1]" in error.value.errors and "like" in str(error.value.errors)


def test_parse_filter_feeds_select_samples(filled):
    tag = make_tag(filled, "some", [0, 1, 3, 6])
    spec = parse_filter(
        {"tag": tag.id, "file_name": "cam", "conditions": [{"path": "weather.temperature", "op": "gt", "value": 5}]}
    )
    assert sorted(select_samples(filled, **spec).values_list("file_name", flat=True)) == [
        "cam0/a.jpg",
        "cam0/b.jpg",
        "cam1/d.jpg",
    ]
    for bad in ([1], {"tags": "x"}, {"tag": 5}, {"conditions": "x:zz:1"}):
        with pytest.raises(DomainError):
            parse_filter(bad)


def test_listing_and_counting_take_a_fixed_number_of_queries(dataset, viewer_api, django_assert_max_num_queries):
    add_samples(dataset, [{"file_name": f"{i}.jpg", "metadata": {"v": i}} for i in range(300)])
    MetadataField.objects.create(dataset=dataset, path="v", type=FieldType.INT, fallback=0)
    # 10: the count first asks whether the metadata column store is fresh (and, as it is not, queues a build).
    with django_assert_max_num_queries(10):
        response = listing(viewer_api, dataset, where="v:gte:10", sort="-v", limit=250, count="true")
    body = response.json()
    assert len(body["results"]) == 250 and body["count"] == 290
    assert body["results"][0]["metadata"] == {"v": 299}


def test_outsider_and_anonymous_cannot_list(filled, outsider_api, anon_api):
    assert listing(outsider_api, filled).status_code == 404
    assert listing(anon_api, filled).status_code == 401
    assert Sample.objects.filter(dataset=filled).count() == len(ROWS)


def test_text_operations_in_the_json_form_and_unicode_case(dataset, viewer_api):
    add_samples(
        dataset,
        [
            {"file_name": "a.jpg", "metadata": {"place": "Straße Ölberg", "note": "50% off_site"}},
            {"file_name": "b.jpg", "metadata": {"place": "ÖLBERG", "note": "500 offsite"}},
            {"file_name": "c.jpg", "metadata": {"place": 12}},
        ],
    )
    conditions = json.dumps([{"path": "place", "op": "icontains", "value": "ölberg"}])
    assert names(listing(viewer_api, dataset, conditions=conditions)) == ["a.jpg", "b.jpg"]
    assert where(viewer_api, dataset, "place:ieq:öLBERG") == ["b.jpg"]
    assert where(viewer_api, dataset, "note:contains:0% off_") == ["a.jpg"]
    assert where(viewer_api, dataset, "place:contains:12") == []  # the number 12 is not text


def test_text_operation_with_a_fallback(filled, viewer_api):
    MetadataField.objects.create(
        dataset=filled, path="weather.scenario", type=FieldType.CATEGORICAL_STRING, fallback="Unknown"
    )
    assert where(viewer_api, filled, "weather.scenario:icontains:UNK") == ["cam1/c.jpg", "cam2/e.jpg", "cam2/f.jpg"]
    assert where(viewer_api, filled, "weather.scenario:contains:unk") == []


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            {"path": "a", "op": "contains", "value": 12},
            'a contains: value must be a non-empty string, not 12; write it in quotes, such as "12"',
        ),
        ({"path": "a", "op": "icontains", "value": ""}, "a icontains: value must be a non-empty string"),
        ("a:icontains:", "a icontains: value must be a non-empty string"),
        ({"path": "a", "op": "ieq", "value": True}, "a ieq: value must be a string, not True"),
        ("a:iin:rain", 'a iin: value must be a JSON list of strings, such as ["a", "b"]'),
        ('a:iin:["rain", 3]', "a iin: 3 is not a string"),
        ("a:iin:[]", "a iin: the list must have 1 to 1000 strings (got 0)"),
        ({"path": "a", "op": "iin", "value": ["x"] * 1001}, "a iin: the list must have 1 to 1000 strings (got 1001)"),
        ("a:in:5", 'a in: value must be a JSON list, such as [1, 2] or ["a", "b"]'),
        ("a:in:[1, [2]]", "a in: [2] is not a string, number or boolean"),
        ("a:in:[1, null]", "a in: None is not a string, number or boolean"),
        ("a:in:[]", "a in: the list must have 1 to 1000 values (got 0)"),
        ({"path": "a", "op": "in", "value": [1] * 1001}, "a in: the list must have 1 to 1000 values (got 1001)"),
        ("a:icontains:" + "x" * 1025, "a icontains: the text must be at most 1024 characters"),
        ("a:like:x", "op 'like' (path 'a') is not one of eq, ne, lt, lte, gt, gte, in, exists, contains, icontains"),
    ],
)
def test_bad_text_conditions_are_named(raw, message):
    with pytest.raises(DomainError) as caught:
        parse_conditions([raw])
    assert message in str(caught.value.errors["conditions[0]"][0])


def test_a_bad_text_condition_is_a_400_through_the_api(filled, viewer_api):
    response = listing(viewer_api, filled, where="weather.scenario:iin:rain")
    assert response.status_code == 400
    assert "weather.scenario iin: value must be a JSON list of strings" in response.content.decode()


def test_schema_documents_the_text_operations(viewer_api):
    schema = viewer_api.get("/api/schema/", {"format": "json"}).json()
    params = schema["paths"]["/api/v1/datasets/{dataset_id}/samples"]["get"]["parameters"]
    where_doc = next(p for p in params if p["name"] == "where")["description"]
    for op in ("contains", "icontains", "ieq", "iin"):
        assert op in where_doc


def test_the_colour_column_of_a_filter_marks_its_matches(filled, viewer_api):
    url = f"/api/v1/datasets/{filled.id}/metadata/column"
    body = viewer_api.get(url, {"filter": json.dumps({"conditions": ["weather.scenario:icontains:RAI"]})}).json()
    assert body["categories"] == ["not matching", "matching"]
    assert body["codes"] == [1, 0, 0, 0, 0, 0, 1] and body["matched"] == 2
    tag = make_tag(filled, "two", [0, 1])
    body = viewer_api.get(url, {"filter": json.dumps({"tag": tag.id, "file_name": "cam0"})}).json()
    assert body["codes"] == [1, 1, 0, 0, 0, 0, 0]
    binary = viewer_api.get(url, {"filter": json.dumps({"conditions": ["n:gt:2"]}), "encoding": "binary"})
    head = int.from_bytes(binary.content[:4], "little")
    legend = json.loads(binary.content[4 : 4 + head])
    assert legend["matched"] == 2 and legend["dtype"] == "int16"
    bad = viewer_api.get(url, {"filter": json.dumps({"conditions": ["n:iin:[1]"]})})
    assert bad.status_code == 400 and "n iin: 1 is not a string" in bad.content.decode()
    both = viewer_api.get(url, {"filter": "{}", "path": "n"})
    assert both.status_code == 400 and "exactly one of path" in both.content.decode()
