"""The registration fast path (services.parse_registration) accepts only what the full checks accept, unchanged.

Whatever it lets through must give the rows the full path (json.loads + the per-entry checks) gives; whatever
needs a named error or normalising must fall back to the full path (None).
"""

import json

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curation import services

# No query here; the suite's teardown checks the test database, which only a database test creates.
pytestmark = pytest.mark.django_db


def full_path(body: bytes):
    return services._clean_entries(json.loads(body)["samples"], body.decode())


def assert_same_as_full_path(body: bytes) -> None:
    parsed = services.parse_registration(body)
    if parsed is None:
        return
    fast = services._clean_entries(parsed.samples, body.decode())
    full = full_path(body)  # raises InvalidEntries if the fast path let a bad entry through
    assert [row["file_name"] for row in fast] == [row["file_name"] for row in full]
    for a, b in zip(fast, full):
        assert (a["width"], a["height"], a["size_bytes"]) == (b["width"], b["height"], b["size_bytes"])
        assert (json.loads(bytes(a["metadata"])) or {}) == b["metadata"]
    assert parsed.overwrite == json.loads(body).get("overwrite", False)


def body(*entries, **extra) -> bytes:
    return json.dumps({"samples": list(entries), **extra}).encode()


def test_a_plain_body_is_decoded():
    data = body(
        {"file_name": "cam0/1.jpg", "width": 1920, "height": 1080, "size_bytes": 0, "metadata": {"a": {"b": [1, 2.5]}}},
        {"file_name": "cam0/2.jpg", "metadata": None},
        {"file_name": "é/ü 3.jpg"},
        overwrite=True,
    )
    parsed = services.parse_registration(data)
    assert parsed is not None and parsed.overwrite is True
    assert [entry.file_name for entry in parsed.samples] == ["cam0/1.jpg", "cam0/2.jpg", "é/ü 3.jpg"]
    assert_same_as_full_path(data)


@pytest.mark.parametrize(
    "data",
    [
        body({"file_name": "a\\b.jpg"}),  # normalised by the full path
        body({"file_name": "a\nb.jpg"}, {"file_name": "c.jpg"}),
        body({"file_name": "a.jpg"}, {"file_name": "a.jpg"}),
        body({"file_name": "/abs.jpg"}),
        body({"file_name": "C:x.jpg"}),
        body({"file_name": "a//b.jpg"}),
        body({"file_name": "a/../b.jpg"}),
        body({"file_name": " /b.jpg"}),
        body({"file_name": "x" * 1025}),
        body({"file_name": 5}),
        body({"file_name": "a.jpg", "width": 0}),
        body({"file_name": "a.jpg", "width": 1.0}),
        body({"file_name": "a.jpg", "height": True}),
        body({"file_name": "a.jpg", "size_bytes": -1}),
        body({"file_name": "a.jpg", "size_bytes": 2**63}),
        body({"file_name": "a.jpg", "colour": "red"}),
        body({"file_name": "a.jpg", "metadata": [1]}),
        body({"file_name": "a.jpg", "metadata": "text"}),
        body({"file_name": "a.jpg", "metadata": {"t": "\x00"}}),
        body({"file_name": "a.jpg", "metadata": {"t": "\ud800"}}),
        body({"file_name": "a.jpg", "metadata": {"big": "x" * 20_000}}),
        body({"file_name": "a.jpg", "metadata": {"n": float("inf")}}),
        b'{"samples": [{"file_name": "a.jpg", "metadata": {"n": 1e400}}]}',
        b'{"samples": [{"file_name": "a.jpg", "metadata": {"n": NaN}}]}',
        b'{"samples": [{"file_name": "a.jpg", "metadata": {"n": ' + b"9" * 310 + b"}}]}",
        body(
            {
                "file_name": "a.jpg",
                "metadata": {"d": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
            }
        ),
        body({"file_name": "a.jpg"}, overwrite="yes"),
        body({"file_name": "a.jpg"}, extra=1),
        b'{"samples": {"file_name": "a.jpg"}}',
        b"[]",
        b"not json",
    ],
)
def test_anything_needing_a_named_error_or_normalising_takes_the_full_path(data):
    assert services.parse_registration(data) is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
entries = st.fixed_dictionaries(
    {"file_name": st.text(min_size=1, max_size=30)},
    optional={
        "width": st.integers(-2, 2**32),
        "height": st.integers(1, 4000),
        "size_bytes": st.integers(-1, 2**64),
        "metadata": st.none() | st.dictionaries(st.text(max_size=8), json_values, max_size=5) | json_values,
    },
)


# Mostly plain entries, so that a good share of the batches does take the fast path.
plain_entries = st.fixed_dictionaries(
    {"file_name": st.from_regex(r"[a-zA-Z0-9 é_.:\\-]{1,6}(/[a-zA-Z0-9 é_.-]{1,6}){0,2}", fullmatch=True)},
    optional={
        "width": st.integers(0, 2**31),
        "height": st.integers(1, 4000),
        "size_bytes": st.integers(0, 2**63),
        "metadata": st.none() | st.dictionaries(st.text(max_size=8), json_values, max_size=5),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(entries, min_size=1, max_size=5) | st.lists(plain_entries, min_size=1, max_size=5), st.booleans())
def test_whatever_the_fast_path_accepts_the_full_path_accepts_the_same(samples, overwrite):
    try:
        data = json.dumps({"samples": samples, "overwrite": overwrite}, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate cannot be sent as UTF-8 at all
        data = json.dumps({"samples": samples, "overwrite": overwrite}).encode()
    assert_same_as_full_path(data)


def test_the_decoder_keeps_metadata_as_text():
    parsed = services.parse_registration(body({"file_name": "a.jpg", "metadata": {"x": 1}}))
    assert isinstance(parsed.samples[0].metadata, msgspec.Raw)
