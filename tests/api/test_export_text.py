"""Tag exports on PostgreSQL take the metadata's jsonb text from the database wherever it already is what the
export writes (curation.tagging: _pg_csv_rows, _pg_json_list); every byte must equal the reference path, which
decodes each sample's metadata and formats it in Python (SQLite's path, and what the exports wrote before)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation import signing, tagging
from curation.models import MetadataField, Sample, TagOrigin
from curation.services import create_dataset
from tests.factories import make_samples

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the text path is PostgreSQL's"),
]

FORMATS = ("csv", "json", "label-studio", "filenames")

# Values whose text PostgreSQL and Python print differently, or that a CSV or JSON writer must escape.
ODD = [
    0.00001,
    -1e-07,
    1.5e20,
    1e16,
    9999999999999998.0,
    123456789012345.6,
    0.30000000000000004,
    0.1,
    100.0,
    -0.0,
    0.0,
    33.67,
    -12.85,
    2**70,
    -5,
    0,
    True,
    False,
    None,
    "",
    "plain",
    'quote " and, comma',
    "line\nbreak",
    "cr\rhere",
    "tab\tin",
    "=SUM(A1)",
    "+1",
    "-2",
    "@x",
    "\tlead",
    "\rlead",
    "back\\slash",
    "é unicode ✓",
    "emoji 😀",
    "del\x7fchar",
    "ctrl\x01\x1f",
    "1.50",
    ': 1.50, "',
    '{"image": 1}',
    [1, 2.5, "x"],
    [],
    {},
    {"nested": {"deep": [0.00001, "a,b"]}, "n": 1e-05},
]


def _meta(i: int) -> dict | list | str | int | None:
    value = ODD[i % len(ODD)]
    other = ODD[(i * 7 + 3) % len(ODD)]
    meta: dict = {"v": value, "w": {"x": other, "y": i}, "s": f"sample {i}"}
    if i % 5 == 0:
        meta["image"] = "mine"  # label-studio's own key, spread then overridden
    if i % 6 == 0:
        meta["file_name"] = value
    if i % 4 == 0:
        del meta["w"]
    if i % 9 == 0:
        meta["w"] = [other]  # a path that walks into a list: no value
    return meta


def _both(dataset, tag, fmt, monkeypatch, user=None) -> tuple[bytes, bytes]:
    """(the PostgreSQL text path's bytes, the reference path's bytes) of one export."""
    fast = "".join(tagging.export_tag(dataset, tag, fmt, user=user).body).encode()
    with monkeypatch.context() as patch:
        patch.setattr(tagging, "_text_from_postgres", lambda: False)
        reference = "".join(tagging.export_tag(dataset, tag, fmt, user=user).body).encode()
    return fast, reference


@pytest.fixture
def odd(dataset):
    n = 3 * len(ODD)
    make_samples(dataset, n, _meta)
    # Metadata that is not an object at all, and samples without a size.
    Sample.objects.filter(dataset=dataset, idx=1).update(metadata=[1, 0.00001])
    Sample.objects.filter(dataset=dataset, idx=2).update(metadata="just text")
    with connection.cursor() as cursor:  # JSON null (the ORM would write SQL NULL)
        cursor.execute(
            "UPDATE curation_sample SET metadata = 'null'::jsonb WHERE dataset_id = %s AND idx = 3", [dataset.pk]
        )
    Sample.objects.filter(dataset=dataset, idx=4).update(metadata={})
    Sample.objects.filter(dataset=dataset, idx__in=[5, 8]).update(width=None, height=None)
    Sample.objects.filter(dataset=dataset, idx=6).update(file_name="=evil,name\n.jpg")
    return dataset


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("configured", [False, True])
def test_text_path_is_byte_identical_to_the_reference(odd, owner, fmt, configured, monkeypatch):
    if configured:  # else the CSV has a column per path found, w.x among them
        for path in ("v", "w.x", "w.y", "w", "s", "image", "missing.path"):
            MetadataField.objects.create(dataset=odd, path=path, type="categorical_string")
    n = odd.samples.count()
    tag = tagging.create_tag(odd, "odd", range(0, n, 1), origin=TagOrigin.SELECTION, origin_detail={})
    fast, reference = _both(odd, tag, fmt, monkeypatch)
    assert fast == reference
    if fmt in ("json", "label-studio"):
        assert len(json.loads(fast)) == n


@pytest.mark.parametrize("mode", ["full", "thumbnails"])
@pytest.mark.parametrize("fmt", ["json", "label-studio"])
def test_signed_links_are_written_as_the_reference_writes_them(owner, fmt, mode, monkeypatch):
    ds = create_dataset(owner, "pics", mode)
    make_samples(ds, 30, _meta)
    tag = tagging.create_tag(ds, "some", range(0, 30, 3), origin=TagOrigin.SELECTION, origin_detail={})
    monkeypatch.setattr(signing, "time", SimpleNamespace(time=lambda: 1_900_000_000))  # one expiry for both runs
    fast, reference = _both(ds, tag, fmt, monkeypatch, user=owner)
    assert fast == reference and b"/signed?" in fast


def test_batches_and_sparse_tags(dataset, monkeypatch):
    monkeypatch.setattr(tagging, "EXPORT_BATCH", 7)
    make_samples(dataset, 100, _meta)
    tag = tagging.create_tag(dataset, "sparse", [0, 1, 9, 10, 63, 64, 65, 99], origin="selection", origin_detail={})
    for fmt in FORMATS:
        fast, reference = _both(dataset, tag, fmt, monkeypatch)
        assert fast == reference


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text("abi._", max_size=4), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(
        st.dictionaries(st.sampled_from(["a", "b", "image", "c"]), JSON_VALUES, max_size=4), min_size=1, max_size=6
    )
)
def test_any_metadata_exports_as_the_reference_does(dataset, monkeypatch, values):
    Sample.objects.filter(dataset=dataset).delete()
    dataset.tags.all().delete()
    first = dataset.next_idx
    make_samples(dataset, len(values), lambda i: values[i - first])
    tag = tagging.create_tag(dataset, "any", range(first, first + len(values)), origin="selection", origin_detail={})
    for fmt in ("csv", "json", "label-studio"):
        fast, reference = _both(dataset, tag, fmt, monkeypatch)
        assert fast == reference
