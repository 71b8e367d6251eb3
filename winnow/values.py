"""Checks on plain values shared by the API, the services and the samplers; imports no Django."""

from __future__ import annotations

import math
import numbers


def is_finite_number(value) -> bool:
    """A real number JSON and PostgreSQL can hold: not a bool, not NaN or infinite, not too large for a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float range
        return False
