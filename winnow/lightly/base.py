"""What every `/v1/` view shares: token authentication, Lightly's error bodies, names, paging, timestamps."""

from __future__ import annotations

import re
from datetime import datetime

from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.db import DataError
from django.http import Http404, HttpResponse, JsonResponse
from django.utils.decorators import classonlymethod
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from rest_framework.exceptions import ValidationError

from curation.access import get_dataset
from curation.errors import DomainError
from curation.models import Dataset, Role
from winnow import safejson
from winnow.accounts.models import ApiToken

# Lightly's client validates these on responses too; one bad name in a list fails the whole call.
DATASET_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9 _-]+")
TAG_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9 .:;=@_-]+")
MAX_PAGE_SIZE = 100_000
CLIENT_VERSION = "1.5.26"


class ApiError(Exception):
    """An error answered as Lightly's `{"code", "error"}` body."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> JsonResponse:
        return JsonResponse({"code": self.code, "error": self.message}, status=self.status)


def not_found(code: str, message: str) -> ApiError:
    return ApiError(404, code, message)


def dataset_name_ok(name: str) -> bool:
    return len(name) >= 3 and bool(DATASET_NAME.fullmatch(name))


def tag_name_ok(name: str) -> bool:
    return len(name) >= 3 and bool(TAG_NAME.fullmatch(name))


def ms(moment: datetime | None) -> int | None:
    """Lightly's timestamps: integer unix milliseconds."""
    return None if moment is None else int(moment.timestamp() * 1000)


def json_string(text: str) -> JsonResponse:
    """A `str` endpoint: a JSON string, which the client decodes (raw text that parses as JSON gets mangled)."""
    return JsonResponse(text, safe=False)


def no_content() -> HttpResponse:
    return HttpResponse(status=204)


def authenticate(request):
    """The user of the `?token=` query parameter (Lightly's client sends no Authorization header)."""
    key = request.GET.get("token", "")
    if not key:
        raise ApiError(401, "UNAUTHORIZED", "No token: add ?token=<your Winnow API token> (LIGHTLY_TOKEN).")
    token = ApiToken.authenticate(key.strip())
    if token is None:
        raise ApiError(401, "UNAUTHORIZED", "Invalid or revoked API token.")
    return token.user


def first_message(detail) -> str:
    """One readable line from a DRF ValidationError's detail or a DomainError's errors: `field: message`."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            inner = first_message(value)
            return inner if key == "non_field_errors" else f"{key}: {inner}"
    if isinstance(detail, list) and detail:
        return first_message(detail[0])
    return str(detail)


class LightlyView(View):
    """A CSRF-exempt view answering Lightly's error format; `request.user` comes from `?token=` only.

    Session cookies are never used here: with CSRF checks off, a cookie would let any web page write.
    """

    # Methods the client retries on 400 (paginated GETs, the sample PUT): bad input there is a 422.
    retried_methods: tuple[str, ...] = ()
    token_required = True
    invalid_status = 400

    @classonlymethod
    def as_view(cls, **initkwargs):
        return csrf_exempt(super().as_view(**initkwargs))

    def dispatch(self, request, *args, **kwargs):
        self.invalid_status = 422 if request.method in self.retried_methods else 400
        try:
            if self.token_required:
                request.user = authenticate(request)
            return super().dispatch(request, *args, **kwargs)
        except ApiError as exc:
            return exc.response()
        except ValidationError as exc:
            return ApiError(self.invalid_status, "BAD_REQUEST", first_message(exc.detail)).response()
        except DomainError as exc:  # a service's refusal that no adapter check caught first
            return ApiError(self.invalid_status, "BAD_REQUEST", first_message(exc.errors)).response()
        except RequestDataTooBig:
            return ApiError(413, "PAYLOAD_TOO_LARGE", "The request body is too large.").response()
        except SuspiciousOperation as exc:  # Django's other request limits (too many parameters)
            return ApiError(400, "BAD_REQUEST", str(exc) or "Bad request.").response()
        except RecursionError:
            return ApiError(400, "MALFORMED_REQUEST", "The request is nested too deeply.").response()
        except DataError as exc:  # a value the database cannot hold that no check caught first
            message = f"A value in the request cannot be stored: {str(exc).splitlines()[0]}"
            return ApiError(self.invalid_status, "BAD_REQUEST", message).response()
        except Http404 as exc:
            return not_found("NOT_FOUND", str(exc) or "Not found.").response()
        except PermissionDenied as exc:
            return ApiError(403, "FORBIDDEN", str(exc) or "Not allowed.").response()

    def http_method_not_allowed(self, request, *args, **kwargs):
        return ApiError(405, "NOT_IMPLEMENTED", f"{request.method} is not supported here.").response()

    def invalid(self, message: str, code: str = "BAD_REQUEST") -> ApiError:
        return ApiError(self.invalid_status, code, message)

    # --- request pieces -------------------------------------------------------------------------------

    def dataset(self, request, dataset_id: str, need: str = Role.VIEWER) -> Dataset:
        """The caller's dataset: 404 for non-members and for names the client cannot read, 403 for a low role."""
        try:
            dataset = get_dataset(request.user, dataset_id, need=need)
        except Http404:
            raise not_found("DATASET_UNKNOWN", f"No dataset with id {dataset_id!r}.") from None
        except PermissionDenied as exc:
            raise ApiError(403, "FORBIDDEN", str(exc)) from None
        if not dataset_name_ok(dataset.name):
            raise not_found(
                "DATASET_UNKNOWN",
                f"The dataset's name {dataset.name!r} is not valid for the Lightly client (letters, digits, "
                "space, '_' and '-', at least 3 characters); rename it in Winnow to use it through /v1/.",
            )
        return dataset

    def json_body(self, request) -> dict:
        """The JSON object of the body; NaN and Infinity are refused (JSON has no such numbers)."""

        try:
            body = safejson.loads(request.body or b"null")
        except ValueError as exc:  # also UnicodeDecodeError and safejson's refusals
            raise self.invalid(f"The body is not valid JSON: {exc}", "MALFORMED_REQUEST") from None
        if not isinstance(body, dict):
            raise self.invalid("The body must be a JSON object.", "MALFORMED_REQUEST")
        return body

    def flag(self, request, name: str, default: bool = False) -> bool:
        """A query boolean; the client sends `True`/`False` capitalised."""
        raw = request.GET.get(name)
        if raw is None or raw == "":
            return default
        value = raw.strip().lower()
        if value not in ("true", "false"):
            raise self.invalid(f"{name} must be true or false, not {raw!r}")
        return value == "true"

    def page(self, request) -> tuple[int, int | None]:
        """(pageOffset, pageSize): an item offset and an item count (None: everything from the offset)."""
        offset = self._int_param(request, "pageOffset", 0, 0, None)
        size = self._int_param(request, "pageSize", None, 1, MAX_PAGE_SIZE)
        return offset, size

    def _int_param(self, request, name: str, default, low: int, high: int | None):
        raw = request.GET.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise self.invalid(f"{name} must be an integer, not {raw!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise self.invalid(f"{name} must be {bound} (got {value})")
        return value


def paged(items: list, offset: int, size: int | None) -> list:
    return items[offset:] if size is None else items[offset : offset + size]


class Versions(LightlyView):
    """`GET /v1/versions/pip/latest|minimum`: the client version this adapter is tested with."""

    token_required = False

    def get(self, request):
        return json_string(CLIENT_VERSION)


class NotImplementedRoute(LightlyView):
    """Any other `/v1/` path: a JSON 404 in Lightly's format (also for a trailing slash: no redirects here)."""

    token_required = False

    def dispatch(self, request, *args, **kwargs):
        return not_found(
            "NOT_FOUND",
            f"{request.method} {request.path} is not part of Winnow's Lightly-compatible API "
            "(features of the Lightly Worker and of datasources are not available).",
        ).response()
