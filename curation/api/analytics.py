"""REST API for the pages' charts: per-field histograms and category counts, and per-sample columns
for colouring the embedding map. Everything is aggregated in SQL or read from bitmasks; no view
walks samples one by one in Python.

- `GET /api/v1/datasets/{id}/metadata/histograms?filter=<json>&bins=<n>`: for each configured
  field, its distribution over the whole dataset and over the samples matching the filter (the
  same `{"tag", "file_name", "conditions"}` object that creates a tag from a filter). Configured
  fallbacks stand in for missing values.
- `GET /api/v1/datasets/{id}/metadata/column?path=<p>` or `?tag=<id>`: one value per sample idx
  (0..next_idx-1), to colour the embedding map.
- `GET /api/v1/datasets/{id}/samples/{sample_id}/tags`: the tags holding a sample (the sample view).
- `POST /api/v1/datasets/{id}/map/samples` `{"idx": [...], "limit": n}`: the samples at those idx
  (id, idx, file_name, thumbnail_url), for hover, lasso selections and their tags.
"""

from __future__ import annotations

import json
import math

import numpy as np
from django.http import Http404
from django.db.models import Count, FloatField, Max, Min, TextField
from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from curation import bitmask
from curation.access import get_dataset
from curation.filters import MetadataSQL, _lite_path, parse_filter, select_samples
from curation.models import FieldType, MetadataField, Sample, Tag, UploadMode

DEFAULT_BINS = 24
MAX_BINS = 200
# A categorical chart shows the most frequent values; the rest are summed as "other".
MAX_CATEGORIES = 40
# The map's colour column holds one code per sample; more categories than this are folded into "other".
MAX_COLUMN_CATEGORIES = 20
MAX_BY_IDX = 100_000
NUMERIC = {FieldType.INT, FieldType.FLOAT}


def _float_or_none(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def numeric_value(field: MetadataField) -> MetadataSQL:
    """The field as a float: a JSON number at the path, else the fallback when the path is missing or null.

    A value of another JSON type (a string at a numeric path) is NULL: it is neither counted nor replaced.
    """
    segments, lp = field.path.split("."), _lite_path(field.path.split("."))
    fallback = _float_or_none(field.fallback)
    pg = (
        "(CASE WHEN jsonb_typeof({col} #> %s) = 'number' THEN ({col} #>> %s)::float8 "
        "WHEN COALESCE(jsonb_typeof({col} #> %s), 'null') = 'null' THEN %s::float8 END)",
        [segments, segments, segments, fallback],
    )
    lite = (
        "(CASE WHEN json_type({col}, %s) IN ('integer', 'real') THEN CAST(json_extract({col}, %s) AS REAL) "
        "WHEN COALESCE(json_type({col}, %s), 'null') = 'null' THEN CAST(%s AS REAL) END)",
        [lp, lp, lp, fallback],
    )
    return MetadataSQL(pg, lite, FloatField())


def category_key(field: MetadataField) -> MetadataSQL:
    """The field's value as JSON text ("rainy", 3, true), the fallback's JSON text when missing, else NULL."""
    segments, lp = field.path.split("."), _lite_path(field.path.split("."))
    fallback = None if field.fallback is None else json.dumps(field.fallback)
    pg = ("COALESCE((NULLIF({col} #> %s, 'null'::jsonb))::text, %s)", [segments, fallback])
    lite = (
        "COALESCE(CASE json_type({col}, %s) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
        "WHEN 'null' THEN NULL WHEN 'text' THEN json_quote(json_extract({col}, %s)) "
        "ELSE CAST(json_extract({col}, %s) AS TEXT) END, %s)",
        [lp, lp, lp, fallback],
    )
    return MetadataSQL(pg, lite, TextField())


def _bin_edges(lo: float, hi: float, bins: int, integer: bool) -> np.ndarray:
    if integer and hi - lo + 1 <= bins:
        # Few integer values: one bin per value, centred on it.
        return np.arange(lo - 0.5, hi + 1.5, 1.0)
    if hi == lo:
        return np.array([lo - 0.5, hi + 0.5])
    return np.linspace(lo, hi, bins + 1)


def _bucket_counts(qs, value: MetadataSQL, edges: np.ndarray) -> list[int]:
    """Counts per bin, in SQL: one GROUP BY over the bin number."""
    n = len(edges) - 1
    lo, width = float(edges[0]), float(edges[1] - edges[0])
    inner_pg, inner_lite = value.postgresql, value.sqlite
    pg = (
        f"LEAST(GREATEST(floor(({inner_pg[0]} - %s) / %s)::int, 0), %s)",
        [*inner_pg[1], lo, width, n - 1],
    )
    # SQLite's CAST truncates toward zero; values below lo are clamped by the MAX below anyway.
    lite = (
        f"MIN(MAX(CAST(({inner_lite[0]} - %s) / %s AS INTEGER), 0), %s)",
        [*inner_lite[1], lo, width, n - 1],
    )
    bucket = MetadataSQL(pg, lite, FloatField())
    counts = [0] * n
    rows = qs.annotate(_v=value).filter(_v__isnull=False).annotate(_b=bucket).order_by().values("_b")
    for row in rows.annotate(_n=Count("pk")):
        counts[int(row["_b"])] += row["_n"]
    return counts


def _numeric(field: MetadataField, everything, matched, bins: int) -> dict:
    value = numeric_value(field)
    stats = everything.annotate(_v=value).aggregate(lo=Min("_v"), hi=Max("_v"), n=Count("_v"))
    out = {"kind": "numeric", "missing": everything.count() - stats["n"]}
    if stats["n"] == 0:
        return {**out, "min": None, "max": None, "edges": [], "counts": [], "matched_counts": [], "matched_missing": 0}
    edges = _bin_edges(stats["lo"], stats["hi"], bins, field.type == FieldType.INT)
    counts = _bucket_counts(everything, value, edges)
    matched_counts = counts if matched is None else _bucket_counts(matched, value, edges)
    return {
        **out, "min": stats["lo"], "max": stats["hi"], "edges": [float(e) for e in edges],
        "counts": counts, "matched_counts": matched_counts,
    }


def _category_counts(qs, key: MetadataSQL) -> dict[str, int]:
    rows = qs.annotate(_k=key).order_by().values("_k").annotate(_n=Count("pk"))
    return {row["_k"]: row["_n"] for row in rows}


def _categorical(field: MetadataField, everything, matched) -> dict:
    key = category_key(field)
    counts = _category_counts(everything, key)
    matched_counts = counts if matched is None else _category_counts(matched, key)
    missing = counts.pop(None, 0)
    matched_counts.pop(None, None)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    shown, rest = ranked[:MAX_CATEGORIES], ranked[MAX_CATEGORIES:]
    return {
        "kind": "categorical",
        "values": [
            {"value": json.loads(text), "count": n, "matched": matched_counts.get(text, 0)} for text, n in shown
        ],
        "other": sum(n for _, n in rest),
        "other_matched": sum(matched_counts.get(text, 0) for text, _ in rest),
        "missing": missing,
    }


def _filter_param(request) -> dict | None:
    raw = request.query_params.get("filter")
    if not raw:
        return None
    try:
        obj = json.loads(raw)
    except ValueError:
        raise ValidationError({"filter": ["must be a JSON object such as {\"conditions\": [...]}"]}) from None
    return obj


def _int_param(request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError({name: [f"must be an integer, not {raw!r}"]}) from None
    if not lo <= value <= hi:
        raise ValidationError({name: [f"must be between {lo} and {hi}"]})
    return value


FIELD_SUMMARY = inline_serializer(
    "FieldDistribution",
    {
        "path": serializers.CharField(), "display_name": serializers.CharField(), "type": serializers.CharField(),
        "fallback": serializers.JSONField(), "kind": serializers.ChoiceField(choices=["numeric", "categorical"]),
    },
)


class Histograms(APIView):
    @extend_schema(
        summary="Distribution of each configured field, over the dataset and over the samples matching a filter",
        parameters=[
            OpenApiParameter("filter", str, description='JSON: {"tag", "file_name", "conditions": [{path, op, value}]}'),
            OpenApiParameter("bins", int, description=f"bins per numeric histogram (1-{MAX_BINS}, default {DEFAULT_BINS})"),
        ],
        responses={200: inline_serializer("Histograms", {
            "total": serializers.IntegerField(), "matched": serializers.IntegerField(),
            "fields": serializers.ListField(child=FIELD_SUMMARY),
        })},
    )
    def get(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id)
        bins = _int_param(request, "bins", DEFAULT_BINS, 1, MAX_BINS)
        filter_obj = _filter_param(request)
        everything = Sample.objects.filter(dataset=dataset)
        matched = None
        if filter_obj:
            matched = select_samples(dataset, **parse_filter(filter_obj))
        total = everything.count()
        fields = []
        for field in dataset.metadata_fields.order_by("path"):
            summary = (_numeric(field, everything, matched, bins) if field.type in NUMERIC
                       else _categorical(field, everything, matched))
            fields.append({"path": field.path, "display_name": field.display_name or field.path,
                           "type": field.type, "fallback": field.fallback, **summary})
        return Response({"total": total, "matched": total if matched is None else matched.count(), "fields": fields})


class Column(APIView):
    @extend_schema(
        summary="One value per sample idx of a configured field (or 0/1 membership of a tag), for the embedding map",
        parameters=[OpenApiParameter("path", str), OpenApiParameter("tag", str)],
        responses={200: dict},
    )
    def get(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id)
        size = dataset.next_idx
        tag_id, field_path = request.query_params.get("tag"), request.query_params.get("path")
        if bool(tag_id) == bool(field_path):
            raise ValidationError({"path": ["give exactly one of path (a configured field) or tag"]})
        if tag_id:
            tag = Tag.objects.filter(dataset=dataset, pk=tag_id).only("id", "name", "bitmask").first()
            if tag is None:
                raise ValidationError({"tag": [f"no tag with id {tag_id!r} in this dataset"]})
            codes = bitmask.to_bool(bytes(tag.bitmask), size).astype(np.int8)
            return Response({"kind": "categorical", "size": size, "categories": [f"not in {tag.name}", tag.name],
                             "codes": codes.tolist()})
        field = dataset.metadata_fields.filter(path=field_path).first()
        if field is None:
            raise ValidationError({"path": [f"{field_path!r} is not a configured field of this dataset"]})
        rows = Sample.objects.filter(dataset=dataset).order_by()
        if field.type in NUMERIC:
            values: list = [None] * size
            for idx, value in rows.annotate(_v=numeric_value(field)).values_list("idx", "_v").iterator(chunk_size=10_000):
                if idx < size:
                    values[idx] = value
            return Response({"kind": "numeric", "size": size, "values": values})
        pairs = list(rows.annotate(_k=category_key(field)).values_list("idx", "_k").iterator(chunk_size=10_000))
        frequency: dict[str, int] = {}
        for _idx, key in pairs:
            if key is not None:
                frequency[key] = frequency.get(key, 0) + 1
        ranked = sorted(frequency, key=lambda k: (-frequency[k], k))
        kept = ranked[:MAX_COLUMN_CATEGORIES]
        code_of = {key: i for i, key in enumerate(kept)}
        other = len(kept) if len(ranked) > len(kept) else None
        codes = np.full(size, -1, dtype=np.int16)
        for idx, key in pairs:
            if key is not None and idx < size:
                codes[idx] = code_of.get(key, other if other is not None else -1)
        categories = [json.loads(k) for k in kept] + (["other"] if other is not None else [])
        return Response({"kind": "categorical", "size": size, "categories": categories, "codes": codes.tolist()})


def sample_urls(dataset, sample_id: str, has_thumbnail: bool, has_original: bool) -> dict:
    """The permission-checked pixel URLs of a sample, as the samples API gives them (None without pixels)."""
    prefix = f"/api/v1/datasets/{dataset.id}/samples/{sample_id}"
    return {
        "thumbnail_url": f"{prefix}/thumbnail" if has_thumbnail else None,
        "image_url": f"{prefix}/image" if has_original else None,
    }


class SamplesByIdx(APIView):
    @extend_schema(
        summary="The samples at the given idx values (for the embedding map's hover and lasso)",
        request=inline_serializer("ByIdx", {"idx": serializers.ListField(child=serializers.IntegerField()),
                                            "limit": serializers.IntegerField(required=False),
                                            "fields": serializers.CharField(required=False)}),
        responses={200: dict},
    )
    def post(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id)
        body = request.data if isinstance(request.data, dict) else {}
        indices = body.get("idx")
        if not isinstance(indices, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in indices):
            raise ValidationError({"idx": ["must be a list of integers"]})
        if len(indices) > MAX_BY_IDX:
            raise ValidationError({"idx": [f"at most {MAX_BY_IDX} values"]})
        limit = body.get("limit", len(indices))
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValidationError({"limit": ["must be a non-negative integer"]})
        ids_only = body.get("fields") == "id"
        wanted = sorted(set(indices))
        rows = Sample.objects.filter(dataset=dataset, idx__in=wanted).order_by("idx")
        if ids_only:
            return Response({"count": len(wanted), "ids": list(rows.values_list("id", flat=True))})
        keep_pixels = dataset.upload_mode != UploadMode.META
        samples = [
            {"id": sid, "idx": idx, "file_name": name,
             **sample_urls(dataset, sid, keep_pixels and bool(thumb), keep_pixels and bool(orig))}
            for sid, idx, name, thumb, orig in rows[:limit].values_list(
                "id", "idx", "file_name", "thumbnail_key", "original_key")
        ]
        return Response({"count": len(wanted), "samples": samples})


class SampleTags(APIView):
    @extend_schema(summary="The tags a sample is in", responses={200: dict})
    def get(self, request, dataset_id: str, sample_id: str):
        dataset = get_dataset(request.user, dataset_id)
        idx = Sample.objects.filter(dataset=dataset, pk=sample_id).values_list("idx", flat=True).first()
        if idx is None:
            raise Http404("No sample with that id in this dataset.")
        byte, bit = divmod(idx, 8)
        found = []
        # One pass over the dataset's bitmasks: each is next_idx / 8 bytes.
        # Model instances, not values_list: initial-tag's bits are materialised on load (Tag.from_db).
        for tag in Tag.objects.filter(dataset=dataset).only("id", "name", "count", "bitmask"):
            mask = bytes(tag.bitmask)
            if byte < len(mask) and mask[byte] >> bit & 1:
                found.append({"id": tag.id, "name": tag.name, "count": tag.count})
        return Response(found)


urlpatterns = [
    path("datasets/<str:dataset_id>/samples/<str:sample_id>/tags", SampleTags.as_view(), name="sample-tags"),
    path("datasets/<str:dataset_id>/metadata/histograms", Histograms.as_view(), name="metadata-histograms"),
    path("datasets/<str:dataset_id>/metadata/column", Column.as_view(), name="metadata-column"),
    path("datasets/<str:dataset_id>/map/samples", SamplesByIdx.as_view(), name="map-samples"),
]
