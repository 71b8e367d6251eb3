"""DRF parsers that refuse, as a 4xx, what would otherwise fail deep in a view as a 500.

JSON: larger than DATA_UPLOAD_MAX_MEMORY_SIZE (413; DRF reads the body itself and never checks Django's
limit), nested too deeply, holding a lone surrogate or a NUL (400, `winnow.safejson`). Forms and multipart:
field values with NUL or a lone surrogate (400).
"""

from __future__ import annotations

from django.conf import settings
from rest_framework import parsers, status
from rest_framework.exceptions import APIException, ParseError, ValidationError

from winnow import safejson


class PayloadTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


def too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than {limit} bytes (WINNOW_MAX_REQUEST_BYTES).")


def refusal(exc: safejson.UnsafeJSON):
    """The 400 for JSON that safejson refused, keyed by the top-level field like a serializer's error."""
    if exc.field is not None:
        return ValidationError({exc.field: [exc.reason]})
    return ParseError(f"JSON parse error - {exc}")


class JSONParser(parsers.JSONParser):
    # False: strings are checked by the view, which names the entry at fault (sample registration, metadata).
    check_text = True

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read(limit + 1) if limit is not None else stream.read()
        if limit is not None and len(raw) > limit:
            raise too_large(limit)
        encoding = parsers.get_encoding(parser_context or {})
        try:
            return safejson.loads(raw.decode(encoding), text=self.check_text)
        except safejson.UnsafeJSON as exc:
            raise refusal(exc) from None
        except ValueError as exc:  # also UnicodeDecodeError
            raise ParseError(f"JSON parse error - {exc}") from None


class TextJSONParser(JSONParser):
    """Depth and size only: for views whose validation checks every string and names the entry at fault."""

    check_text = False


def _check_fields(data) -> None:
    """Plain form fields. File names are the upload's to judge: it rejects one file and keeps the others."""
    for key, values in data.lists():
        reason = safejson.bad_text(key)
        if reason:
            raise ParseError(f"A form field name {reason}.")
        for value in values:
            reason = safejson.bad_text(value)
            if reason:
                raise ValidationError({key: [reason]})


class MultiPartParser(parsers.MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None):
        result = super().parse(stream, media_type, parser_context)
        _check_fields(result.data)
        return result


class FormParser(parsers.FormParser):
    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        _check_fields(data)
        return data
