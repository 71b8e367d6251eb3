"""curation.tagging.export_tag is a service: a tag and plain values in, an Export (body, content type, file name)
out; the API view turns it into the streamed download (tests/api/test_tags.py covers that path)."""

from __future__ import annotations

import json

import pytest

from curation import tagging
from curation.errors import DomainError
from curation.models import TagOrigin
from tests.factories import make_samples

pytestmark = pytest.mark.django_db


@pytest.fixture
def tag(dataset, owner):
    make_samples(dataset, 3, lambda i: {"n": i})
    return tagging.create_tag(dataset, "my pick", [0, 2], origin=TagOrigin.SELECTION, origin_detail={}, creator=owner)


@pytest.mark.parametrize(
    ("fmt", "content_type", "filename"),
    [
        ("filenames", "text/plain; charset=utf-8", "my_pick.txt"),
        ("csv", "text/csv; charset=utf-8", "my_pick.csv"),
        ("json", "application/json", "my_pick.json"),
        ("label-studio", "application/json", "my_pick-label-studio.json"),
    ],
)
def test_each_format_has_its_writer_content_type_and_file_name(dataset, tag, fmt, content_type, filename):
    export = tagging.export_tag(dataset, tag, fmt, base_url="https://winnow.example")
    assert (export.content_type, export.filename) == (content_type, filename)
    text = "".join(export.body)
    if fmt == "filenames":
        assert text.split() == ["img_000000.jpg", "img_000002.jpg"]
    elif fmt == "csv":
        assert len(text.strip().splitlines()) == 3  # the header and the two samples
    else:
        assert len(json.loads(text)) == 2


def test_an_unknown_format_is_refused_naming_the_accepted_ones(dataset, tag):
    with pytest.raises(DomainError, match="filenames, csv, json, label-studio"):
        tagging.export_tag(dataset, tag, "xml")
