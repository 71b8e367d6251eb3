"""Query parameters, read one way by every endpoint of `/api/v1/`, and documented the way they are read.

- A flag (`flag`): true is `1`, `true`, `yes` or `on`; false is `0`, `false`, `no`, `off` or empty; any case,
  surrounding spaces ignored. Absent: the endpoint's default.
- A whole number (`integer`): decimal digits with an optional sign, within the endpoint's bounds. Absent or
  empty: the endpoint's default.

Anything else is a 400 naming the parameter, in the API's error shape. `flag_parameter` and
`integer_parameter` describe the same rules in the OpenAPI schema, so /api/schema/ says what is accepted.
(The `/v1/` Lightly adapter answers in Lightly's error format and keeps its own reader.)
"""

from __future__ import annotations

import re

from drf_spectacular.utils import OpenApiParameter
from rest_framework.exceptions import ValidationError

TRUE = frozenset({"1", "true", "yes", "on"})
FALSE = frozenset({"0", "false", "no", "off", ""})
_WHOLE = re.compile(r"[+-]?[0-9]{1,19}")  # 19 digits hold every bound an endpoint uses; more is never valid


def flag(params, name: str, default: bool = False) -> bool:
    """The flag `name` of a QueryDict (or any mapping); ValidationError for a value that is neither."""
    raw = params.get(name)
    if raw is None:
        return default
    text = str(raw).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    raise ValidationError({name: [f"must be true or false (1, yes, on / 0, no, off), not {raw!r}"]})


def integer(params, name: str, default: int | None, low: int, high: int) -> int | None:
    """The whole number `name`, between `low` and `high` (both included); ValidationError otherwise."""
    raw = params.get(name)
    if raw is None or not str(raw).strip():
        return default
    text = str(raw).strip()
    if not _WHOLE.fullmatch(text) or not low <= int(text) <= high:
        raise ValidationError({name: [f"must be a whole number from {low} to {high}, not {raw!r}"]})
    return int(text)


def flag_parameter(name: str, description: str, default: bool = False) -> OpenApiParameter:
    values = "1, true, yes, on / 0, false, no, off"
    return OpenApiParameter(name, bool, description=f"{description} ({values}; default {str(default).lower()}).")


def integer_parameter(name: str, description: str, low: int, high: int, default: int | None = None) -> OpenApiParameter:
    also = f", default {default}" if default is not None else ""
    return OpenApiParameter(
        name,
        {"type": "integer", "minimum": low, "maximum": high},
        description=f"{description} ({low} to {high}{also}).",
    )
