"""Checks on plain values shared by the API, the services, the samplers and the client; imports no Django."""

from __future__ import annotations

import json
import math
import numbers

# Deeper JSON than this is almost surely a mistake and slows every walk over it.
MAX_VALUE_DEPTH = 32
# One sample's metadata, serialised; more than this is a document, not metadata.
MAX_METADATA_BYTES = 64 * 1024


def is_finite_number(value) -> bool:
    """A real number JSON and PostgreSQL can hold: not a bool, not NaN or infinite, not too large for a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float range
        return False


def bad_value(value, where: str = "", depth: int = 0) -> str | None:
    """Where and why a JSON value is not storable (NaN, Infinity, too deep, odd types), or None."""
    if depth > MAX_VALUE_DEPTH:
        return f"{where or 'value'}: nested deeper than {MAX_VALUE_DEPTH} levels"
    if isinstance(value, str):
        # PostgreSQL's jsonb cannot hold U+0000.
        return f"{where or 'value'}: text contains a NUL character (\\u0000)" if "\x00" in value else None
    if value is None or isinstance(value, (bool, int)):
        return None
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return f"{where or 'value'}: {value} is not a finite number (NaN and Infinity are not allowed)"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or "\x00" in key:
                return f"{where or 'value'}: key {key!r} is not a string without NUL characters"
            problem = bad_value(item, f"{where}.{key}" if where else key, depth + 1)
            if problem:
                return problem
        return None
    if isinstance(value, list):
        for i, item in enumerate(value):
            problem = bad_value(item, f"{where}[{i}]", depth + 1)
            if problem:
                return problem
        return None
    return f"{where or 'value'}: {type(value).__name__} is not a JSON value"


def size_error(values: dict) -> str | None:
    """The per-sample cap that every path storing metadata applies (registration, metadata upload), or None."""
    size = len(json.dumps(values, separators=(",", ":")))
    if size > MAX_METADATA_BYTES:
        return f"metadata is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are allowed per sample"
    return None
