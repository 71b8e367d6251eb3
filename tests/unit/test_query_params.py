"""winnow.query: the one reader of query parameters (flags and whole numbers) for /api/v1/."""

from __future__ import annotations

import pytest
from rest_framework.exceptions import ValidationError

from winnow import query


@pytest.mark.parametrize("raw", ["1", "true", "TRUE", " yes ", "on", "On"])
def test_flag_true(raw):
    assert query.flag({"count": raw}, "count") is True


@pytest.mark.parametrize("raw", ["0", "false", "No", "off", "", "  "])
def test_flag_false(raw):
    assert query.flag({"count": raw}, "count", default=True) is False


@pytest.mark.parametrize("raw", ["2", "yes please", "nope", "t"])
def test_flag_refuses_anything_else_naming_the_parameter(raw):
    with pytest.raises(ValidationError) as caught:
        query.flag({"count": raw}, "count")
    assert list(caught.value.detail) == ["count"]


def test_absent_values_take_the_default():
    assert query.flag({}, "count", default=True) is True
    assert query.integer({}, "limit", 100, 1, 1000) == 100
    assert query.integer({"limit": " "}, "limit", 100, 1, 1000) == 100


@pytest.mark.parametrize(("raw", "value"), [("1", 1), ("1000", 1000), (" 7 ", 7), ("+3", 3), ("007", 7)])
def test_integer_within_bounds(raw, value):
    assert query.integer({"limit": raw}, "limit", 100, 1, 1000) == value


@pytest.mark.parametrize("raw", ["0", "1001", "-1", "ten", "1.5", "1e3", "9" * 5000, "0x10"])
def test_integer_refuses_out_of_bounds_and_garbage(raw):
    with pytest.raises(ValidationError) as caught:
        query.integer({"limit": raw}, "limit", 100, 1, 1000)
    assert "limit" in caught.value.detail and "from 1 to 1000" in str(caught.value.detail["limit"][0])


def test_the_schema_parameters_say_the_same():
    parameter = query.integer_parameter("limit", "Page size", 1, 1000, 100)
    assert parameter.type == {"type": "integer", "minimum": 1, "maximum": 1000}
    assert "default 100" in parameter.description
    assert "on" in query.flag_parameter("count", "Count").description
