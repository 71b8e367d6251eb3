"""Project-wide API pieces: the error format and the health endpoint."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.db import DataError, connection
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.exceptions import APIException, ParseError, ValidationError
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from curation.errors import DomainError
from winnow import guard, parsers, safejson
from winnow.dberrors import database_unavailable

log = logging.getLogger(__name__)


def exception_handler(exc, context):
    """DRF's handler, plus a top-level `detail` on validation errors so a client can print one message.

    Bad input that surfaces as a Python or database error rather than a DRF one is still bad input: a 4xx.
    A service's `DomainError` is a validation error of the field it names.
    """
    exc = _as_api_exception(exc)
    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, (dict, list)) and "detail" not in response.data:
        response.data = {"detail": _summarise(response.data), "errors": response.data}
    return response


class DatabaseUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "The database is unavailable (restarting or at its connection limit); try again shortly."
    default_code = "database_unavailable"
    wait = 5  # DRF's handler sends it as Retry-After


def _as_api_exception(exc):
    if database_unavailable(exc):
        log.warning("database unavailable: %s", str(exc).strip().splitlines()[0] if str(exc).strip() else exc)
        return DatabaseUnavailable()
    if isinstance(exc, DomainError):
        return ValidationError(exc.errors, code=exc.code)
    if isinstance(exc, safejson.UnsafeJSON):
        return ParseError(str(exc))
    if isinstance(exc, RecursionError):
        return ParseError("The request is nested too deeply.")
    if isinstance(exc, SuspiciousOperation):  # Django's request limits, read inside the view
        status_code, message, _code = guard._limit_message(exc)
        return parsers.PayloadTooLarge(message) if status_code == 413 else ParseError(message)
    if isinstance(exc, DataError):
        # A value the database cannot hold (a number past bigint, a NUL in text) that no check caught before.
        log.warning("database refused a request's value: %s", exc)
        return ParseError(f"A value in the request cannot be stored: {str(exc).splitlines()[0]}")
    return exc


def _summarise(errors, path: str = "") -> str:
    if isinstance(errors, dict):
        for key, value in errors.items():
            if key == "non_field_errors":  # a message about the request as a whole: no field to name
                return _summarise(value, path)
            return _summarise(value, f"{path}.{key}" if path else str(key))
    if isinstance(errors, list) and errors:
        if all(isinstance(item, str) for item in errors):
            return f"{path}: {errors[0]}" if path else str(errors[0])
        for i, item in enumerate(errors):
            if item:
                return _summarise(item, f"{path}[{i}]")
    return f"{path}: {errors}" if path else str(errors)


def broker_status() -> dict:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return {"ok": True, "mode": "in-process"}
    from winnow.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        workers = app.control.ping(timeout=1.0) or []
    except Exception as exc:  # any transport error means the broker is unreachable
        return {"ok": False, "mode": "broker", "error": str(exc)}
    return {"ok": True, "mode": "broker", "workers": len(workers)}


@extend_schema(responses={200: dict, 503: dict}, summary="Database and broker status")
@api_view(["GET"])
@authentication_classes([])
@permission_classes([AllowAny])
def health(request):
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        database = {"ok": True, "vendor": connection.vendor}
    except Exception as exc:
        database = {"ok": False, "vendor": connection.vendor, "error": str(exc)}
    broker = broker_status()
    ok = database["ok"] and broker["ok"]
    return Response(
        {"status": "ok" if ok else "degraded", "database": database, "broker": broker},
        status=status.HTTP_200_OK if ok else status.HTTP_503_SERVICE_UNAVAILABLE,
    )
