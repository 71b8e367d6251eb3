"""Requests refused before any view runs, and Django's own 400s in the API's JSON shape.

`RejectUnsafeRequests` answers 400 when the path or a query parameter holds a NUL or a lone surrogate
(PostgreSQL cannot compare such text: a lookup by `/api/v1/datasets/%00` was a 500). `bad_request` is the
project's handler400: Django raises its request limits (body larger than DATA_UPLOAD_MAX_MEMORY_SIZE, more than
DATA_UPLOAD_MAX_NUMBER_FIELDS query or form fields) outside any view, and answered them with a bare HTML page;
under /api/ and /v1/ the answer is now the API's JSON error (413 for a body too large).
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import JsonResponse
from django.views import defaults

from winnow import safejson

API_PREFIXES = ("/api/", "/v1/")


def error_response(request, status: int, message: str, code: str = "BAD_REQUEST"):
    """The error body of the surface the path belongs to: Lightly's `{code, error}` under /v1/, DRF's `detail`."""
    if request.path.startswith("/v1/"):
        return JsonResponse({"code": code, "error": message}, status=status)
    return JsonResponse({"detail": message}, status=status)


def _limit_message(exception) -> tuple[int, str, str]:
    if isinstance(exception, RequestDataTooBig):
        return 413, "The request body is too large (WINNOW_MAX_REQUEST_BYTES).", "PAYLOAD_TOO_LARGE"
    if isinstance(exception, TooManyFieldsSent):
        return 400, "Too many query or form parameters (WINNOW_MAX_QUERY_PARAMS).", "BAD_REQUEST"
    if isinstance(exception, TooManyFilesSent):
        return 400, "Too many files in one request (WINNOW_MAX_FILES_PER_REQUEST).", "BAD_REQUEST"
    return 400, str(exception) or "Bad request.", "BAD_REQUEST"


def bad_request(request, exception, template_name="400.html"):
    if request.path.startswith(API_PREFIXES):
        status, message, code = _limit_message(exception)
        return error_response(request, status, message, code)
    return defaults.bad_request(request, exception, template_name)


class RejectUnsafeRequests:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        problem = self._problem(request)
        if problem:
            return error_response(request, 400, problem)
        return self.get_response(request)

    @staticmethod
    def _problem(request) -> str | None:
        reason = safejson.bad_text(request.path)
        if reason:
            return f"The path {reason}."
        for key, values in request.GET.lists():  # TooManyFieldsSent here goes to bad_request
            for value in [key, *values]:
                reason = safejson.bad_text(value)
                if reason:
                    name = key if safejson.bad_text(key) is None else "a parameter name"
                    return f"Query parameter {name} {reason}."
        return None


class ContentSecurityPolicy:
    """Sets CONTENT_SECURITY_POLICY on every response that has none. The Swagger page runs an inline script."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        policy = settings.CONTENT_SECURITY_POLICY
        if policy and "Content-Security-Policy" not in response:
            if request.path.startswith("/api/docs/"):
                policy = policy.replace("script-src 'self'", "script-src 'self' 'unsafe-inline'")
            response["Content-Security-Policy"] = policy
        return response
