"""REST API: samples of a dataset — register (JSON, `meta` datasets), upload (multipart), list, get.

JSON registration is for `meta` datasets, whose pixels never reach the server; a `full` or
`thumbnails` dataset takes its samples as image uploads (multipart): the view reads the form, curation.ingest
stores the files.

The list is cursor-paginated (keyset on idx, or on (metadata value, idx) when sorted by a path) and
filtered by `tag`, `file_name` (substring), and metadata conditions given as repeated
`where=path:op:value` parameters and/or `conditions=<JSON list of {path, op, value}>` (see
curation.filters for the grammar).
"""

from __future__ import annotations

import base64
import binascii
import json
from decimal import Decimal

from django.conf import settings
from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ParseError, ValidationError
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.views import APIView

from curation import columns, filters, ingest, services
from curation.access import get_dataset
from curation.models import Role, Sample
from winnow import query, safejson
from winnow.parsers import MultiPartParser, too_large

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
LIST_PARAMS = {"tag", "file_name", "where", "conditions", "sort", "limit", "cursor", "count", "format"}


class LenientJSONParser(JSONParser):
    """Parses NaN and Infinity, so that the validation can name the entry and key holding one.

    When the body is strict JSON (no NaN or Infinity), its text is kept as `request.json_text`:
    registration hands it to PostgreSQL as it is instead of serialising the entries again.
    """

    strict = False

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        request = parser_context.get("request")
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        raw = stream.read(limit + 1)
        if len(raw) > limit:
            raise too_large(limit)
        encoding = parser_context.get("encoding") or settings.DEFAULT_CHARSET
        # A plainly valid registration is decoded and checked in one C pass, its metadata left as text for
        # PostgreSQL; anything else takes the full path below, whose errors name the entry at fault.
        fast = services.parse_registration(raw) if encoding.lower() in ("utf-8", "utf8") else None
        if fast is not None:
            data = {"samples": fast.samples, "overwrite": fast.overwrite}
            if request is not None:
                request.json_text, request.parsed_body = raw.decode(), data
            return data
        try:
            text = raw.decode(encoding)
        except UnicodeDecodeError as exc:
            raise ParseError(f"JSON parse error - the body is not UTF-8 text: {exc}") from None
        constants = []

        def constant(name: str) -> float:
            constants.append(name)
            return float(name)

        try:
            data = json.loads(text, parse_constant=constant)
            safejson.check(data, text=False)  # the registration names the entry holding a bad string
        except RecursionError:
            raise ParseError("JSON parse error - the body is nested too deeply") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        if request is not None:
            request.parsed_body = data
            if not constants:
                request.json_text = text
        return data


class SampleSerializer(serializers.ModelSerializer):
    thumbnail_url = serializers.SerializerMethodField()
    image_url = serializers.SerializerMethodField()

    class Meta:
        model = Sample
        fields = [
            "id",
            "idx",
            "file_name",
            "width",
            "height",
            "size_bytes",
            "format",
            "sha256",
            "metadata",
            "created_at",
            "thumbnail_url",
            "image_url",
        ]
        read_only_fields = fields

    def get_thumbnail_url(self, sample) -> str | None:
        # A URL only where pixels are kept: never for `meta` samples.
        return f"{self.context['base']}{sample.id}/thumbnail" if sample.thumbnail_key else None

    def get_image_url(self, sample) -> str | None:
        return f"{self.context['base']}{sample.id}/image" if sample.original_key else None


def _serializer_context(request, dataset) -> dict:
    return {"base": request.build_absolute_uri(f"/api/v1/datasets/{dataset.id}/samples/")}


# --- cursor pagination ----------------------------------------------------------------------------------


def _encode_cursor(sort: filters.Sort, direction: str, sample) -> str:
    data = {"s": sort.text, "d": direction, "i": sample.idx}
    if sort.path is not None:
        data["k"] = sample.sort_key
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(text: str, sort: filters.Sort) -> dict:
    bad = ValidationError({"cursor": ["is not a cursor this list gave out; follow the `next` or `previous` link"]})
    try:
        data = safejson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad from None
    if (
        not isinstance(data, dict)
        or data.get("d") not in ("n", "p")
        or not isinstance(data.get("i"), int)
        or isinstance(data.get("i"), bool)
        or not (data.get("k") is None or isinstance(data.get("k"), str))
    ):
        raise bad
    if data.get("s") != sort.text:
        raise ValidationError({"cursor": [f"was made for sort={data.get('s')!r}, not sort={sort.text!r}"]})
    if data.get("k") is not None:
        try:  # the key goes back to the database as JSON: refuse anything else before it gets there
            safejson.loads(data["k"])
        except ValueError:
            raise bad from None
    return data


def _link(request, cursor: str | None) -> str | None:
    if cursor is None:
        return None
    query = request.query_params.copy()
    query["cursor"] = cursor
    return request.build_absolute_uri(f"{request.path}?{query.urlencode()}")


def _page(request, qs, sort: filters.Sort, limit: int, found=None) -> tuple[list, str | None, str | None]:
    """One page of `qs` in `sort` order from the request's cursor: (samples, next link, previous link).

    `found` (a curation.columns.Match of the same filter) names the page by idx when the order is idx's or a
    field's the columns order (columns.sorted_page), or a superset of it (columns.sort_candidates), so PostgreSQL
    reads those rows by index instead of scanning for the first matches."""
    cursor = request.query_params.get("cursor")
    position = _decode_cursor(cursor, sort) if cursor else None
    backwards = bool(position and position["d"] == "p")
    if found is not None and sort.path is None:
        after = position["i"] if position else None
        qs = qs.filter(idx__in=found.first(limit + 1, after=after, descending=sort.descending != backwards))
    elif found is not None:
        walk = {"descending": sort.descending, "position": position, "backwards": backwards, "k": limit + 1}
        # Sorted by a field: the columns name the page in order (columns.sorted_page: categories, and numbers their
        # floats order exactly, ties and all), or else a small superset of it (columns.sort_candidates: numbers).
        page = columns.sorted_page(found, sort.path, sort.fallback, **walk)
        if page is not None:
            rows = _rows_in_order(found.dataset_id, page, sort)
            found = qs = None
        else:
            candidates = columns.sort_candidates(found, sort.path, sort.fallback, **walk)
            if candidates is not None:
                rows = _ordered_candidates(found.dataset_id, candidates, sort, position, backwards, limit + 1)
                found = qs = None
    if qs is not None:
        if position:
            qs = sort.after(qs, position.get("k"), position["i"], reverse=backwards)
        if sort.path is not None:
            qs = qs.annotate(sort_key=sort.key_text())
        # One row more than the page tells whether another page follows, without a count.
        rows = list(qs.order_by(*sort.ordering(reverse=backwards))[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
        next_cursor = _encode_cursor(sort, "n", rows[-1]) if rows else None
        previous_cursor = _encode_cursor(sort, "p", rows[0]) if rows and more else None
    else:
        next_cursor = _encode_cursor(sort, "n", rows[-1]) if rows and more else None
        previous_cursor = _encode_cursor(sort, "p", rows[0]) if rows and position else None
    return rows, _link(request, next_cursor), _link(request, previous_cursor)


def _rows_in_order(dataset_id: str, page: list[int], sort: filters.Sort) -> list:
    """The samples of `page` (idx, in order), with the sort key their cursor carries."""
    rows = Sample.objects.filter(dataset_id=dataset_id, idx__in=page).annotate(sort_key=sort.key_text())
    by_idx = {s.idx: s for s in rows}
    return [by_idx[idx] for idx in page]


def _ordered_candidates(dataset_id: str, candidates: list[int], sort: filters.Sort, position, backwards: bool, k: int):
    """The first `k` of the candidate samples strictly after the cursor in `sort` order (reversed when walking
    backwards), ordered here rather than by PostgreSQL: with an ORDER BY and a LIMIT it may walk the whole sort index
    looking for a few idx. Every sort value is a JSON number (or missing), and Decimal orders the numbers' text
    exactly as jsonb does; missing values come last, ties by idx ascending, as Sort.ordering."""

    def order(key, idx):
        missing = key is None or key == "null"
        value = Decimal(0) if missing else Decimal(key)
        return (missing, -value if sort.descending else value, idx)

    rows = Sample.objects.filter(dataset_id=dataset_id, idx__in=candidates).annotate(sort_key=sort.key_text())
    keyed = sorted(((order(key, idx), idx) for idx, key in rows.values_list("idx", "sort_key")), reverse=backwards)
    if position:
        start = order(position.get("k"), position["i"])
        keyed = [(key, idx) for key, idx in keyed if (key < start if backwards else key > start)]
    chosen = [idx for _key, idx in keyed[:k]]
    by_idx = {s.idx: s for s in rows.filter(idx__in=chosen)}
    return [by_idx[idx] for idx in chosen]


# --- query parameters -------------------------------------------------------------------------------------


def _conditions(request) -> list[filters.Condition]:
    where = request.query_params.getlist("where")
    conditions = filters.parse_conditions(where, field="where") if where else []
    raw = request.query_params.get("conditions")
    if raw:
        try:
            parsed = safejson.loads(raw, "conditions")
        except ValueError as exc:
            raise ValidationError({"conditions": [f"is not valid JSON: {exc}"]}) from None
        conditions += filters.parse_conditions(parsed, field="conditions")
    if len(conditions) > filters.MAX_CONDITIONS:
        message = f"at most {filters.MAX_CONDITIONS} conditions in all (got {len(conditions)})"
        raise ValidationError({"where": [message]})
    return conditions


LIST_PARAMETERS = [
    OpenApiParameter("tag", str, description="Only samples in this tag (tag id)."),
    OpenApiParameter("file_name", str, description="Only samples whose file name contains this (any case)."),
    OpenApiParameter(
        "where",
        str,
        many=True,
        description="A metadata condition `path:op:value`. "
        "op: eq, ne, lt, lte, gt, gte, in, exists; and for text: contains (case-sensitive substring), "
        "icontains (substring in any case), ieq (equal in any case), iin (one of a JSON list of strings, in any "
        "case). The value is JSON when it parses, else text; contains, icontains and ieq take the text as "
        'typed (`name:icontains:12` looks for "12"). Text operations match string values only. '
        "A bad value is a 400 naming the condition. Repeatable.",
    ),
    OpenApiParameter(
        "conditions",
        str,
        description='A JSON list of {"path", "op", "value"} conditions (the ops of `where`; '
        "contains/icontains/ieq take a string value, iin a list of strings).",
    ),
    OpenApiParameter("sort", str, description="idx (default), -idx, a metadata path, or -path; missing values last."),
    query.integer_parameter("limit", "Page size", 1, MAX_LIMIT, DEFAULT_LIMIT),
    OpenApiParameter("cursor", str, description="From a `next` or `previous` link."),
    query.flag_parameter("count", "Also count every matching sample (slower)"),
]

SamplePage = inline_serializer(
    "SamplePage",
    {
        "results": SampleSerializer(many=True),
        "next": serializers.URLField(allow_null=True),
        "previous": serializers.URLField(allow_null=True),
        "count": serializers.IntegerField(required=False),
    },
)

RegisterRequest = inline_serializer(
    "SampleRegistration",
    {
        "samples": inline_serializer(
            "SampleEntry",
            {
                "file_name": serializers.CharField(),
                "width": serializers.IntegerField(required=False, allow_null=True),
                "height": serializers.IntegerField(required=False, allow_null=True),
                "size_bytes": serializers.IntegerField(required=False, allow_null=True),
                "metadata": serializers.DictField(required=False),
            },
            many=True,
        ),
        "overwrite": serializers.BooleanField(
            required=False,
            default=False,
            help_text="Replace width, height, size_bytes and metadata of file names already present (id and idx "
            "stay); else they are skipped.",
        ),
    },
)

RegisterResponse = inline_serializer(
    "SampleRegistrationResult",
    {
        "created": serializers.IntegerField(),
        "replaced": serializers.IntegerField(help_text="Samples already present and replaced (overwrite=true)."),
        "skipped": serializers.ListField(child=serializers.CharField(), help_text="File names already present."),
        "ids": serializers.ListField(
            child=serializers.CharField(), help_text="Sample ids in the order of the entries."
        ),
    },
)


# --- the multipart upload's form (curation.ingest stores what it carries) ---------------------------------------


def _upload_form(form) -> dict:
    """The multipart upload's fields besides `files`, as store_images' keyword arguments.

    `file_names`: optional JSON list of relative paths aligned with `files`. Without it each file keeps the
    name its part carries, which browsers and HTTP clients reduce to the base name, so a client uploading a
    folder tree sends `file_names`. `metadata`: optional JSON object, file name -> that sample's custom
    metadata. `overwrite`: optional boolean (default false). `embed`: optional boolean (default true).
    """
    return {
        "file_names": _json_field(form, "file_names", list),
        "metadata": _json_field(form, "metadata", dict) or {},
        "overwrite": query.flag(form, "overwrite", False),
        "embed": query.flag(form, "embed", True),
    }


def _json_field(form, name: str, kind: type):
    value = form.get(name)
    if value is None or value == "":
        return None
    if hasattr(value, "read"):  # sent as a file part rather than a plain field
        value = value.read().decode("utf-8", errors="replace")
    try:
        parsed = safejson.loads(value, name, text=False)  # each file's name is judged on its own
    except (TypeError, ValueError) as exc:
        raise ValidationError({name: [f"is not valid JSON: {exc}"]}) from None
    if not isinstance(parsed, kind):
        expected = "a JSON list" if kind is list else "a JSON object"
        raise ValidationError({name: [f"must be {expected}"]})
    return parsed


class SampleList(APIView):
    parser_classes = [LenientJSONParser, MultiPartParser]

    @extend_schema(
        operation_id="samples_list",
        parameters=LIST_PARAMETERS,
        responses={200: SamplePage},
        summary="List, filter and sort samples",
    )
    def get(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id)
        unknown = sorted(set(request.query_params) - LIST_PARAMS)
        if unknown:
            known = ", ".join(sorted(LIST_PARAMS - {"format"}))
            raise ValidationError({unknown[0]: [f"unknown parameter; use {known}"]})
        params = request.query_params
        limit, count = query.integer(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT), query.flag(params, "count")
        file_name = request.query_params.get("file_name") or None
        if file_name and len(file_name) > filters.MAX_FILE_NAME_FILTER:
            raise ValidationError({"file_name": [f"at most {filters.MAX_FILE_NAME_FILTER} characters"]})
        sort = filters.parse_sort(dataset, request.query_params.get("sort"))
        where = {
            "tag": request.query_params.get("tag") or None,
            "file_name": file_name,
            "conditions": _conditions(request),
        }
        qs = filters.select_samples(dataset, **where)
        # Conditions on configured fields, or a sort by one: the metadata column store finds the matches (and
        # counts them) and orders them.
        store = columns.fresh_store(dataset) if (where["conditions"] or sort.path) and not file_name else None
        found = columns.match(dataset, store, **where, sql=False) if store is not None else None
        rows, next_link, previous_link = _page(request, qs, sort, limit, found)
        body = {
            "results": SampleSerializer(rows, many=True, context=_serializer_context(request, dataset)).data,
            "next": next_link,
            "previous": previous_link,
        }
        if count:
            body["count"] = qs.count() if found is None else found.count()
        return Response(body)

    def finalize_response(self, request, response, *args, **kwargs):
        # A DRF request and its parser context refer to each other, so the body would live until the cyclic GC
        # runs, which a decoded registration (few Python objects) seldom triggers: web memory grew with N.
        body = getattr(request, "parsed_body", None)
        if isinstance(body, dict):
            body.clear()
        request.json_text = request.parsed_body = None
        return super().finalize_response(request, response, *args, **kwargs)

    @extend_schema(
        operation_id="samples_create",
        request={"application/json": RegisterRequest, "multipart/form-data": OpenApiTypes.OBJECT},
        responses={201: RegisterResponse, 200: RegisterResponse},
        summary="Register samples without pixels (JSON, meta datasets) or upload images (multipart)",
    )
    def post(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.EDITOR)
        if (request.content_type or "").startswith("multipart/"):
            ingest.check_takes_images(dataset)  # before the body is read
            outcome = ingest.store_images(
                dataset, request.FILES.getlist("files"), creator=request.user, **_upload_form(request.data)
            )
            return Response(outcome.as_dict(), status=status.HTTP_201_CREATED if outcome.stored else status.HTTP_200_OK)
        if dataset.has_pixels:
            raise ValidationError(
                {
                    "upload_mode": [
                        f"this dataset keeps pixels ({dataset.upload_mode}): upload the images as multipart/form-data; "
                        "JSON registration without pixels is for meta datasets"
                    ]
                }
            )
        body = request.data
        if not isinstance(body, dict) or "samples" not in body:
            raise ValidationError({"samples": ['is required: send {"samples": [{"file_name": ...}, ...]}']})
        unknown = sorted(set(body) - {"samples", "overwrite"})
        if unknown:
            raise ValidationError({unknown[0]: ["unknown field; the body has samples and overwrite"]})
        overwrite = body.get("overwrite", False)
        if not isinstance(overwrite, bool):
            raise ValidationError({"overwrite": [f"must be true or false, not {overwrite!r}"]})
        entries = body["samples"]
        if isinstance(entries, list) and not entries:
            raise ValidationError({"samples": ["is empty; give at least one sample"]})
        limit = settings.WINNOW_MAX_SAMPLES_PER_REQUEST
        if isinstance(entries, list) and len(entries) > limit:
            raise ValidationError({"samples": [f"{len(entries)} entries; at most {limit} per request"]})
        try:
            result = services.register_samples(
                dataset,
                entries,
                overwrite=overwrite,
                creator=request.user,
                source_json=getattr(request, "json_text", None),
            )
        except services.InvalidEntries as exc:
            raise ValidationError({"samples": exc.errors}) from None
        if result.replaced:
            columns.metadata_changed(dataset.pk)
        elif result.created:
            columns.samples_added(dataset.pk)
        return Response(
            {"created": result.created, "replaced": result.replaced, "skipped": result.skipped, "ids": result.ids},
            status=status.HTTP_201_CREATED if result.created or result.replaced else status.HTTP_200_OK,
        )


class SampleDetail(APIView):
    @extend_schema(operation_id="sample_retrieve", responses={200: SampleSerializer}, summary="One sample")
    def get(self, request, dataset_id: str, sample_id: str):
        dataset = get_dataset(request.user, dataset_id)
        sample = get_object_or_404(Sample, dataset=dataset, pk=sample_id)
        return Response(SampleSerializer(sample, context=_serializer_context(request, dataset)).data)


urlpatterns = [
    path("datasets/<str:dataset_id>/samples", SampleList.as_view(), name="sample-list"),
    path("datasets/<str:dataset_id>/samples/<str:sample_id>", SampleDetail.as_view(), name="sample-detail"),
]
