"""JSON that the rest of the server can trust: bounded nesting, no lone surrogates, no NUL.

PostgreSQL refuses NUL in text and JSONB and lone surrogates cannot be encoded as UTF-8, so either would
fail deep inside a service as a 500; deep nesting makes Python's parser (and any recursive walk after it)
raise RecursionError. All three are refused here, once, at the edge, as a ValueError naming the place.
Django-free: the DRF parser, the `/v1/` views and query-string parsers share it.
"""

from __future__ import annotations

import json
import re

# Deeper than any document Winnow reads (metadata paths are at most 8 deep; COCO-like JSON about 4).
MAX_DEPTH = 64
_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")


class UnsafeJSON(ValueError):
    """JSON (or text) the server refuses: too deep, a lone surrogate or a NUL character.

    `field` is the top-level key where it was found (None: the body itself), `reason` the rest of the message.
    """

    def __init__(self, message: str, field: str | None = None, reason: str | None = None):
        super().__init__(message)
        self.field, self.reason = field, reason or message


def bad_text(value: str) -> str | None:
    """Why a string cannot be stored (NUL or a lone surrogate), or None when it can."""
    found = _BAD_CHARS.search(value)
    if found is None:
        return None
    char = found.group()
    return "contains a NUL character" if char == "\x00" else f"contains a lone surrogate ({char!r})"


def check_text(value: str, where: str = "value") -> str:
    reason = bad_text(value)
    if reason:
        raise UnsafeJSON(f"{where} {reason}")
    return value


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def _refuse(where: str, trail: tuple, reason: str):
    """UnsafeJSON naming the place: `where.key[0].sub`, with the top-level key as its field."""
    field = trail[0] if trail and isinstance(trail[0], str) else None
    rest = trail[1:] if field is not None else trail
    inner = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in rest).lstrip(".")
    message = f"{where}{'.' + field if field else ''}{('.' if inner and not inner.startswith('[') else '') + inner}"
    raise UnsafeJSON(f"{message} {reason}", field, f"{inner + ' ' if inner else ''}{reason}".strip())


def check(value, where: str = "body", max_depth: int = MAX_DEPTH, text: bool = True):
    """Walk a parsed JSON value (iteratively: no recursion to exhaust) and refuse what `loads` refuses.

    text=False checks only the depth: for callers that check every string themselves, naming the row.
    """
    stack = [(value, (), 1)]
    while stack:
        item, trail, depth = stack.pop()
        if isinstance(item, str):
            reason = text and bad_text(item)
            if reason:
                _refuse(where, trail, reason)
        elif isinstance(item, (dict, list)):
            if depth > max_depth:
                _refuse(where, trail[:1], f"is nested more than {max_depth} levels deep")
            if isinstance(item, dict):
                for key, inner in item.items():
                    reason = text and isinstance(key, str) and bad_text(key)
                    if reason:
                        _refuse(where, trail, f"has a key that {reason}")
                    stack.append((inner, (*trail, key), depth + 1))
            else:
                stack.extend((inner, (*trail, i), depth + 1) for i, inner in enumerate(item))
    return value


def loads(source: str | bytes, where: str = "body", max_depth: int = MAX_DEPTH, text: bool = True):
    """`json.loads` refusing NaN and Infinity, then `check`. Raises ValueError."""
    try:
        value = json.loads(source, parse_constant=_no_constant)
    except RecursionError:
        raise UnsafeJSON(f"{where} is nested too deeply", None, "is nested too deeply") from None
    return check(value, where, max_depth, text)
