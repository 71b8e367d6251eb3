"""REST API for the pages' charts: per-field histograms and category counts, and per-sample columns
for colouring the embedding map. Everything is aggregated in SQL or read from bitmasks; no view
walks samples one by one in Python.

- `GET /api/v1/datasets/{id}/metadata/histograms?filter=<json>&bins=<n>`: for each configured
  field, its distribution over the whole dataset and over the samples matching the filter (the
  same `{"tag", "file_name", "conditions"}` object that creates a tag from a filter). Configured
  fallbacks stand in for missing values.
- `GET /api/v1/datasets/{id}/metadata/column?path=<p>` or `?tag=<id>`: one value per sample idx
  (0..next_idx-1), to colour the embedding map; `&encoding=binary` sends it as application/octet-stream
  (a small JSON legend, then float32 values or int16 codes), a few MB at a million samples.
- `GET /api/v1/datasets/{id}/samples/{sample_id}/tags`: the tags holding a sample (the sample view).
- `POST /api/v1/datasets/{id}/map/samples` `{"idx": [...], "limit": n}` or `{"mask": "<base64 bitmask>"}`:
  the samples at those idx (id, idx, file_name, thumbnail_url), for hover and lasso selections of any size.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
from django.db import connection
from django.db.models import Case, FloatField, IntegerField, JSONField, Q, TextField, Value, When
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from curation import bitmask, columns
from curation.access import get_dataset
from curation.api.tags import decode_selection
from curation.filters import MetadataSQL, _lite_path, indexed_numeric_bounds, parse_filter, sample_filter
from curation.models import FieldType, MetadataField, Role, Sample, Tag
from winnow import query, safejson

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


def _bucket(value: MetadataSQL, edges: np.ndarray) -> MetadataSQL:
    """The bin number of a numeric value, NULL when the value is; clamped into the edges by the caller
    (PostgreSQL's GREATEST would turn a NULL into a bin)."""
    lo, width = float(edges[0]), float(edges[1] - edges[0])
    inner_pg, inner_lite = value.postgresql, value.sqlite
    pg = (f"floor(({inner_pg[0]} - %s) / %s)::int", [*inner_pg[1], lo, width])
    # SQLite's CAST truncates toward zero: a value a rounding error below lo still lands in bin 0.
    lite = (f"CAST(({inner_lite[0]} - %s) / %s AS INTEGER)", [*inner_lite[1], lo, width])
    return MetadataSQL(pg, lite, IntegerField())


# OFFSET 0 keeps PostgreSQL from pulling the subquery up into the aggregate: each per-row expression
# (several JSONB path lookups) is then computed once per row, not once per aggregate that uses it.
_FENCE = " OFFSET 0"


def _totals_and_bounds(everything, numeric: list, match_q) -> dict:
    """One scan: the sample count, the matched count, and MIN / MAX / COUNT of each numeric expression."""
    annotations = {f"v{i}": value for i, value in enumerate(numeric)}
    annotations["m"] = _matched_flag(match_q)
    inner = everything.order_by().annotate(**annotations).values(*annotations)
    sql, params = inner.query.sql_with_params()
    if connection.vendor == "postgresql":
        sql += _FENCE
    columns = ["COUNT(*)", "SUM(m)"] + [f"MIN(v{i}), MAX(v{i}), COUNT(v{i})" for i in range(len(numeric))]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {', '.join(columns)} FROM ({sql}) AS s", params)
        row = cursor.fetchone()
    out = {"total": int(row[0]), "matched": int(row[1] or 0)}
    for i in range(len(numeric)):
        lo, hi, n = row[2 + 3 * i : 5 + 3 * i]
        out[i] = {"lo": None if lo is None else float(lo), "hi": None if hi is None else float(hi), "n": int(n)}
    return out


def _matched_flag(match_q):
    if match_q is None:
        return Value(0, output_field=IntegerField())
    return Case(When(match_q, then=Value(1)), default=Value(0), output_field=IntegerField())


def _grouped_counts(everything, columns: list, match_q) -> list[dict]:
    """For each column expression: {value: (count, matched count)} over `everything`.

    PostgreSQL: one statement and one scan for all columns (GROUP BY GROUPING SETS); SQLite: one
    GROUP BY per column. The matched count is a FILTER over the same rows, never a second scan.
    """
    out: list[dict] = [{} for _ in columns]
    if not columns:
        return out
    names = [f"c{i}" for i in range(len(columns))]
    annotations = dict(zip(names, columns))
    annotations["m"] = _matched_flag(match_q)
    inner = everything.order_by().annotate(**annotations).values(*names, "m")
    sql, params = inner.query.sql_with_params()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            sql += _FENCE
            flags = ", ".join(f"GROUPING({n})" for n in names)
            sets = ", ".join(f"({n})" for n in names)
            cursor.execute(
                f"SELECT {flags}, {', '.join(names)}, COUNT(*), SUM(m) FROM ({sql}) AS s GROUP BY GROUPING SETS ({sets})",
                params,
            )
            k = len(names)
            for row in cursor.fetchall():
                i = row[:k].index(0)  # the one column this row is grouped by
                out[i][row[k + i]] = (int(row[2 * k]), int(row[2 * k + 1] or 0))
        else:
            for i, n in enumerate(names):
                cursor.execute(f"SELECT {n}, COUNT(*), SUM(m) FROM ({sql}) AS s GROUP BY {n}", params)
                for value, count, matched in cursor.fetchall():
                    out[i][value] = (int(count), int(matched or 0))
    return out


def _numeric_summary(field: MetadataField, stats: dict, groups: dict | None, edges, missing: int) -> dict:
    out = {"kind": "numeric", "missing": missing}
    if edges is None:
        return {**out, "min": None, "max": None, "edges": [], "counts": [], "matched_counts": [], "matched_missing": 0}
    n = len(edges) - 1
    counts, matched = [0] * n, [0] * n
    for b, (c, m) in groups.items():
        if b is not None:
            b = min(max(int(b), 0), n - 1)
            counts[b] += c
            matched[b] += m
    return {
        **out,
        "min": stats["lo"],
        "max": stats["hi"],
        "edges": [float(e) for e in edges],
        "counts": counts,
        "matched_counts": matched,
    }


def _categorical_summary(groups: dict) -> dict:
    counts = {k: c for k, (c, _m) in groups.items()}
    matched_counts = {k: m for k, (_c, m) in groups.items()}
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


def _json_at(field: MetadataField) -> MetadataSQL:
    """The JSON at the field's path (PostgreSQL), extracted once per row for the typed views below."""
    return MetadataSQL(("({col} #> %s)", [field.path.split(".")]), ("NULL", []), JSONField())


def _numeric_pg(field: MetadataField, j: str) -> tuple[str, list]:
    """numeric_value over the extracted JSON column `j` (PostgreSQL): one path lookup instead of three."""
    return (
        f"(CASE WHEN jsonb_typeof({j}) = 'number' THEN ({j})::float8 "
        f"WHEN {j} IS NULL OR {j} = 'null'::jsonb THEN %s::float8 END)",
        [_float_or_none(field.fallback)],
    )


def _typed_pg(field: MetadataField, j: str, edges) -> tuple[str, list]:
    """numeric_value / its bin, or category_key, written over the extracted JSON column `j` (PostgreSQL)."""
    if field.type in NUMERIC:
        value, params = _numeric_pg(field, j)
        lo, width = float(edges[0]), float(edges[1] - edges[0])
        return f"floor(({value} - %s) / %s)::int", [*params, lo, width]
    fallback = None if field.fallback is None else json.dumps(field.fallback)
    return f"COALESCE((NULLIF({j}, 'null'::jsonb))::text, %s)", [fallback]


def _grouped_counts_pg(everything, binned: list[tuple[MetadataField, object]], match_q) -> tuple[list[dict], int, int]:
    """One scan for every field: {value: (count, matched)} per field, the total and the matched count.

    Each field's JSON is extracted once per row in a fenced subquery; GROUPING SETS hash every field's
    bins or categories (and the grand total) in the same pass.
    """
    annotations = {f"j{i}": _json_at(field) for i, (field, _edges) in enumerate(binned)}
    annotations["m"] = _matched_flag(match_q)
    sql, params = everything.order_by().annotate(**annotations).values(*annotations).query.sql_with_params()
    exprs, expr_params = [], []
    for i, (field, edges) in enumerate(binned):
        text, p = _typed_pg(field, f"j{i}", edges)
        exprs.append(f"{text} AS c{i}")
        expr_params += p
    names = [f"c{i}" for i in range(len(binned))]
    flags = "".join(f"GROUPING({n}), " for n in names)
    sets = "".join(f"({n}), " for n in names)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {flags}{''.join(n + ', ' for n in names)}COUNT(*), SUM(m) "
            f"FROM (SELECT {''.join(e + ', ' for e in exprs)}m FROM ({sql}{_FENCE}) AS a) AS b "
            f"GROUP BY GROUPING SETS ({sets}())",
            [*expr_params, *params],
        )
        rows = cursor.fetchall()
    k = len(names)
    out: list[dict] = [{} for _ in names]
    total = matched = 0
    for row in rows:
        count, hits = int(row[2 * k]), int(row[2 * k + 1] or 0)
        if 0 not in row[:k]:  # the grand-total set
            total, matched = count, hits
            continue
        i = row[:k].index(0)
        out[i][row[k + i]] = (count, hits)
    return out, total, matched


def _histograms_from_columns(dataset, store: columns.Store, parsed: dict | None, bins: int) -> dict | None:
    """histograms() read from the metadata column store, or None when a field has no column there."""
    fields = list(dataset.metadata_fields.order_by("path"))
    if not store.usable(f.path for f in fields):
        return None
    found = None if parsed is None else columns.match(dataset, store, **parsed)
    specs, summaries = [], {}
    for f in fields:
        if f.type in NUMERIC:
            fallback = _float_or_none(f.fallback)
            lo, hi = columns.numeric_bounds(store, f.path, fallback)
            if lo is None:  # no numbers at all: every sample is missing
                summaries[f.path] = _numeric_summary(f, {"lo": None, "hi": None}, {}, None, store.size)
                continue
            edges = _bin_edges(lo, hi, bins, f.type == FieldType.INT)
            specs.append(columns.Spec(f.path, fallback, edges))
            summaries[f.path] = (lo, hi, edges)
        else:
            specs.append(columns.Spec(f.path, f.fallback))
    groups, matched = columns.grouped_counts(store, specs, found)
    by_path = {spec.path: g for spec, g in zip(specs, groups)}
    out = []
    for f in fields:
        if f.type in NUMERIC:
            summary = summaries[f.path]
            if isinstance(summary, tuple):
                lo, hi, edges = summary
                group = by_path[f.path]
                summary = _numeric_summary(f, {"lo": lo, "hi": hi}, group, edges, group.get(None, (0, 0))[0])
        else:
            summary = _categorical_summary(by_path[f.path])
        out.append(
            {
                "path": f.path,
                "display_name": f.display_name or f.path,
                "type": f.type,
                "fallback": f.fallback,
                **summary,
            }
        )
    return {"total": store.size, "matched": matched, "fields": out}


def histograms(dataset, filter_obj: dict | None, bins: int, *, use_columns: bool = True) -> dict:
    """Every configured field's distribution over the dataset and over the filter's matches.

    From the metadata column store when it is fresh (curation.columns); else, as below, in SQL.

    PostgreSQL: numeric bounds from the fields' sort indexes (two index probes each; a scan when an
    index is missing), then one scan that counts every field's bins and categories, matched beside
    all. SQLite: the bounds in one scan, then one GROUP BY per field.
    """
    parsed = parse_filter(filter_obj) if filter_obj else None
    store = columns.fresh_store(dataset) if use_columns else None
    if store is not None:
        from_columns = _histograms_from_columns(dataset, store, parsed, bins)
        if from_columns is not None:
            return from_columns
    everything = Sample.objects.filter(dataset=dataset).order_by()
    match_q = None
    if parsed is not None:
        match_q = sample_filter(dataset, **parsed)
        if match_q is None:  # an empty tag: nothing matches
            match_q = Q(idx__lt=0)  # never true (idx >= 0), and compiles where an empty IN would not
        elif not match_q:  # a filter without a condition matches everything (an empty Q is no CASE WHEN)
            match_q = Q(idx__gte=0)
    fields = list(dataset.metadata_fields.order_by("path"))
    numeric = [f for f in fields if f.type in NUMERIC]
    postgres = connection.vendor == "postgresql"
    bounds = {f.path: indexed_numeric_bounds(f) for f in numeric} if postgres else {}
    unknown = [f for f in numeric if bounds.get(f.path) is None]
    stats = (
        _totals_and_bounds(everything, [numeric_value(f) for f in unknown], match_q)
        if unknown or not postgres
        else None
    )
    for i, f in enumerate(unknown):
        bounds[f.path] = (stats[i]["lo"], stats[i]["hi"])
    binned, edges_of = [], {}
    for f in fields:
        if f.type in NUMERIC:
            lo, hi = bounds[f.path]
            if lo is None:
                continue  # no numbers at all: nothing to bin, every sample is missing
            edges_of[f.path] = _bin_edges(lo, hi, bins, f.type == FieldType.INT)
        binned.append((f, edges_of.get(f.path)))
    if postgres:
        groups, total, matched = _grouped_counts_pg(everything, binned, match_q)
    else:
        exprs = [_bucket(numeric_value(f), e) if f.type in NUMERIC else category_key(f) for f, e in binned]
        groups = _grouped_counts(everything, exprs, match_q)
        total, matched = stats["total"], stats["matched"]
    column_of = {f.path: i for i, (f, _e) in enumerate(binned)}
    out = []
    for f in fields:
        if f.type in NUMERIC:
            column = column_of.get(f.path)
            group = groups[column] if column is not None else {}
            missing = group.get(None, (0, 0))[0] if column is not None else total
            lo, hi = bounds[f.path]
            summary = _numeric_summary(f, {"lo": lo, "hi": hi}, group, edges_of.get(f.path), missing)
        else:
            summary = _categorical_summary(groups[column_of[f.path]])
        out.append(
            {
                "path": f.path,
                "display_name": f.display_name or f.path,
                "type": f.type,
                "fallback": f.fallback,
                **summary,
            }
        )
    return {"total": total, "matched": total if match_q is None else matched, "fields": out}


def _filter_param(request) -> dict | None:
    raw = request.query_params.get("filter")
    if not raw:
        return None
    try:
        obj = safejson.loads(raw, "filter")
    except safejson.UnsafeJSON as exc:
        raise ValidationError({"filter": [str(exc)]}) from None
    except ValueError:
        raise ValidationError({"filter": ['must be a JSON object such as {"conditions": [...]}']}) from None
    return obj


FIELD_SUMMARY = inline_serializer(
    "FieldDistribution",
    {
        "path": serializers.CharField(),
        "display_name": serializers.CharField(),
        "type": serializers.CharField(),
        "fallback": serializers.JSONField(),
        "kind": serializers.ChoiceField(choices=["numeric", "categorical"]),
    },
)


class Histograms(APIView):
    @extend_schema(
        summary="Distribution of each configured field, over the dataset and over the samples matching a filter",
        parameters=[
            OpenApiParameter(
                "filter", str, description='JSON: {"tag", "file_name", "conditions": [{path, op, value}]}'
            ),
            query.integer_parameter("bins", "Bins per numeric histogram", 1, MAX_BINS, DEFAULT_BINS),
        ],
        responses={
            200: inline_serializer(
                "Histograms",
                {
                    "total": serializers.IntegerField(),
                    "matched": serializers.IntegerField(),
                    "fields": serializers.ListField(child=FIELD_SUMMARY),
                },
            )
        },
    )
    def get(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id)
        bins = query.integer(request.query_params, "bins", DEFAULT_BINS, 1, MAX_BINS)
        return Response(histograms(dataset, _filter_param(request), bins))


def _numeric_column(dataset, field: MetadataField, size: int) -> np.ndarray:
    """float32[size]: the field's value at each idx, NaN where missing. One aggregate, no row per sample."""
    values = np.full(size, np.nan, dtype=np.float32)
    rows = Sample.objects.filter(dataset=dataset, idx__lt=size).order_by()
    if connection.vendor == "postgresql":
        sql, params = rows.annotate(_j=_json_at(field)).values("idx", "_j").query.sql_with_params()
        value, value_params = _numeric_pg(field, "_j")
        with connection.cursor() as cursor:
            # float8send, because a float4 cast would raise on values past float32's range (numpy gives inf).
            cursor.execute(
                "SELECT string_agg(int4send(idx::int), ''::bytea), "
                f"string_agg(float8send(COALESCE({value}, 'NaN'::float8)), ''::bytea) FROM ({sql}{_FENCE}) AS s",
                [*value_params, *params],
            )
            idx_bytes, value_bytes = cursor.fetchone()
        if idx_bytes:
            idx = np.frombuffer(bytes(idx_bytes), dtype=">i4")
            with np.errstate(over="ignore"):  # past float32's range: inf, as the legend's min/max skip
                values[idx] = np.frombuffer(bytes(value_bytes), dtype=">f8")
        return values
    with np.errstate(over="ignore"):
        for idx, value in rows.annotate(_v=numeric_value(field)).values_list("idx", "_v").iterator(chunk_size=10_000):
            if value is not None:
                values[idx] = value
    return values


def _category_column(dataset, field: MetadataField, size: int) -> tuple[np.ndarray, list]:
    """int16[size] codes (-1 missing) of the MAX_COLUMN_CATEGORIES most frequent values, the rest "other"."""
    rows = Sample.objects.filter(dataset=dataset, idx__lt=size).order_by().annotate(_k=category_key(field))
    members: dict[str, np.ndarray] = {}
    if connection.vendor == "postgresql":
        sql, params = rows.values("idx", "_k").query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT _k, string_agg(int4send(idx::int), ''::bytea) FROM ({sql}) AS s "
                "WHERE _k IS NOT NULL GROUP BY _k",
                params,
            )
            for key, packed in cursor.fetchall():
                members[key] = np.frombuffer(bytes(packed), dtype=">i4")
    else:
        lists: dict[str, list] = {}
        for idx, key in rows.values_list("idx", "_k").iterator(chunk_size=10_000):
            if key is not None:
                lists.setdefault(key, []).append(idx)
        members = {k: np.asarray(v, dtype=np.int64) for k, v in lists.items()}
    ranked = sorted(members, key=lambda k: (-members[k].size, k))
    kept = ranked[:MAX_COLUMN_CATEGORIES]
    codes = np.full(size, -1, dtype=np.int16)
    other = len(kept)
    for key in ranked[MAX_COLUMN_CATEGORIES:]:
        codes[members[key]] = other
    for code, key in enumerate(kept):
        codes[members[key]] = code
    categories = [json.loads(k) for k in kept] + (["other"] if len(ranked) > len(kept) else [])
    return codes, categories


def column_binary(legend: dict, data: np.ndarray) -> bytes:
    """The binary column: uint32 LE length of a JSON legend, the legend (space-padded to 4 bytes), the data LE.

    The legend says {"kind", "size", "dtype": "float32" | "int16", "categories"?, "min"?, "max"?}.
    """
    head = json.dumps({**legend, "dtype": data.dtype.name}, allow_nan=False).encode()
    head += b" " * (-len(head) % 4)
    return len(head).to_bytes(4, "little") + head + data.astype(data.dtype.newbyteorder("<"), copy=False).tobytes()


class Column(APIView):
    @extend_schema(
        summary="One value per sample idx of a configured field (or 0/1 membership of a tag or of a filter's "
        "matches), for the embedding map",
        parameters=[
            OpenApiParameter("path", str, description="A configured field: its value per sample."),
            OpenApiParameter("tag", str, description="A tag id: 1 for its samples, 0 for the rest."),
            OpenApiParameter(
                "filter",
                str,
                description='JSON {"tag", "file_name", "conditions"} as Explore applies it: 1 for the samples it '
                "matches, 0 for the rest (the map highlights them). The legend adds `matched`, their count.",
            ),
            OpenApiParameter(
                "encoding",
                str,
                enum=["json", "binary"],
                description=(
                    "binary: application/octet-stream, a uint32 little-endian length, a JSON legend of that many "
                    "bytes ({kind, size, dtype, categories | min, max}), then `size` little-endian float32 "
                    "(numeric; NaN = no value) or int16 codes (categorical and tag; -1 = no value)"
                ),
            ),
        ],
        responses={200: dict},
    )
    def get(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id)
        size = dataset.next_idx
        tag_id, field_path = request.query_params.get("tag"), request.query_params.get("path")
        encoding = request.query_params.get("encoding") or "json"
        if encoding not in ("json", "binary"):
            raise ValidationError({"encoding": [f"{encoding!r} is not json or binary"]})
        filter_obj = _filter_param(request)
        if bool(tag_id) + bool(field_path) + (filter_obj is not None) != 1:
            raise ValidationError({"path": ["give exactly one of path (a configured field), tag or filter"]})
        if filter_obj is not None:
            mask = columns.filter_mask(dataset, **parse_filter(filter_obj))
            codes = bitmask.to_bool(mask, size).astype(np.int16)
            legend = {
                "kind": "categorical",
                "size": size,
                "categories": ["not matching", "matching"],
                "matched": int(codes.sum()),
            }
            if encoding == "binary":
                return HttpResponse(column_binary(legend, codes), content_type="application/octet-stream")
            return Response({**legend, "codes": codes.tolist()})
        if tag_id:
            tag = Tag.objects.filter(dataset=dataset, pk=tag_id).only("id", "name", "bitmask").first()
            if tag is None:
                raise ValidationError({"tag": [f"no tag with id {tag_id!r} in this dataset"]})
            codes = bitmask.to_bool(bytes(tag.bitmask), size).astype(np.int16)
            legend = {"kind": "categorical", "size": size, "categories": [f"not in {tag.name}", tag.name]}
            if encoding == "binary":
                return HttpResponse(column_binary(legend, codes), content_type="application/octet-stream")
            return Response({**legend, "codes": codes.tolist()})
        field = dataset.metadata_fields.filter(path=field_path).first()
        if field is None:
            raise ValidationError({"path": [f"{field_path!r} is not a configured field of this dataset"]})
        store = columns.fresh_store(dataset)
        if store is not None and store.usable([field.path]):
            return _column_from_store(store, field) if encoding == "binary" else _json_column_from_store(store, field)
        if field.type in NUMERIC:
            if encoding == "json":
                return Response({"kind": "numeric", "size": size, "values": _json_numbers(dataset, field, size)})
            values = _numeric_column(dataset, field, size)
            finite = values[np.isfinite(values)]
            legend = {
                "kind": "numeric",
                "size": size,
                "min": float(finite.min()) if finite.size else None,
                "max": float(finite.max()) if finite.size else None,
            }
            return HttpResponse(column_binary(legend, values), content_type="application/octet-stream")
        codes, categories = _category_column(dataset, field, size)
        legend = {"kind": "categorical", "size": size, "categories": categories}
        if encoding == "binary":
            return HttpResponse(column_binary(legend, codes), content_type="application/octet-stream")
        return Response({**legend, "codes": codes.tolist()})


def _column_from_store(store: columns.Store, field: MetadataField) -> StreamingHttpResponse:
    """The binary colour column read from the column store and streamed block by block (the same bytes as the
    SQL path's), so the web process holds one block, not the whole column."""
    if field.type in NUMERIC:
        lo, hi, blocks = columns.numeric_column_blocks(store, field.path, _float_or_none(field.fallback))
        legend = {"kind": "numeric", "size": store.size, "min": lo, "max": hi, "dtype": "float32"}
        itemsize = 4
    else:
        categories, blocks = columns.category_column_blocks(store, field.path, field.fallback, MAX_COLUMN_CATEGORIES)
        legend = {"kind": "categorical", "size": store.size, "categories": categories, "dtype": "int16"}
        itemsize = 2
    head = column_binary(legend, np.zeros(0, dtype=np.float32 if itemsize == 4 else np.int16))
    little = np.dtype("<f4") if itemsize == 4 else np.dtype("<i2")
    response = StreamingHttpResponse(
        itertools.chain([head], (b.astype(little, copy=False).tobytes() for b in blocks)),
        content_type="application/octet-stream",
    )
    response["Content-Length"] = str(len(head) + store.size * itemsize)
    return response


def _json_column_from_store(store: columns.Store, field: MetadataField) -> Response:
    """The JSON colour column read from the column store: what the SQL path answers (float64 numbers, None
    without a value; or the categorical codes), without a query per sample."""
    if field.type in NUMERIC:
        values: list = []
        for block in columns.numeric_value_blocks(store, field.path, _float_or_none(field.fallback)):
            values += [None if v != v else v for v in block.tolist()]  # NaN: no value
        return Response({"kind": "numeric", "size": store.size, "values": values})
    categories, blocks = columns.category_column_blocks(store, field.path, field.fallback, MAX_COLUMN_CATEGORIES)
    codes: list = []
    for block in blocks:
        codes += block.tolist()
    return Response({"kind": "categorical", "size": store.size, "categories": categories, "codes": codes})


def _json_numbers(dataset, field: MetadataField, size: int) -> list:
    """The JSON column keeps exact float64 values (the binary one is float32); for small datasets and old clients."""
    values: list = [None] * size
    rows = Sample.objects.filter(dataset=dataset, idx__lt=size).order_by().annotate(_v=numeric_value(field))
    for idx, value in rows.values_list("idx", "_v").iterator(chunk_size=10_000):
        values[idx] = value
    return values


def sample_urls(dataset, sample_id: str, has_thumbnail: bool, has_original: bool) -> dict:
    """The permission-checked pixel URLs of a sample, as the samples API gives them (None without pixels)."""
    prefix = f"/api/v1/datasets/{dataset.id}/samples/{sample_id}"
    return {
        "thumbnail_url": f"{prefix}/thumbnail" if has_thumbnail else None,
        "image_url": f"{prefix}/image" if has_original else None,
    }


class ColumnStore(APIView):
    @extend_schema(
        summary="The metadata column store behind histograms, filter counts and colour columns: fresh or not",
        responses={200: dict},
    )
    def get(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id)
        return Response(columns.status(dataset))

    @extend_schema(summary="Queue a rebuild of the metadata column store (202)", request=None, responses={202: dict})
    def post(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.EDITOR)
        if not columns.supported():
            raise ValidationError(
                {"dataset": ["the metadata column store needs PostgreSQL; this server uses SQL only"]}
            )
        queued = columns.request_build(dataset.pk)
        return Response({"queued": queued}, status=202)


class SamplesByIdx(APIView):
    @extend_schema(
        summary="The samples at the given idx values (for the embedding map's hover and lasso)",
        request=inline_serializer(
            "ByIdx",
            {
                "idx": serializers.ListField(child=serializers.IntegerField(), required=False),
                "mask": serializers.CharField(
                    required=False,
                    help_text=("base64 bitmask over idx (bit i, least significant first), for selections of any size"),
                ),
                "limit": serializers.IntegerField(required=False),
                "fields": serializers.CharField(required=False),
            },
        ),
        responses={200: dict},
    )
    def post(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id)
        body = request.data if isinstance(request.data, dict) else {}
        if ("idx" in body) == ("mask" in body):
            raise ValidationError({"idx": ["give exactly one of idx (a list) or mask (a base64 bitmask over idx)"]})
        if "mask" in body:
            # A lasso of any size: the selection travels as a bitmask, and only `limit` rows are read.
            mask = decode_selection(dataset, body["mask"], "mask")
            indices = bitmask.to_indices(mask)
            limit = body.get("limit", MAX_BY_IDX)
            if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_BY_IDX:
                raise ValidationError({"limit": [f"must be an integer from 0 to {MAX_BY_IDX}"]})
            return self._respond(dataset, body, indices[:limit].tolist(), int(indices.size), limit)
        indices = body.get("idx")
        if not isinstance(indices, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in indices):
            raise ValidationError({"idx": ["must be a list of integers"]})
        if len(indices) > MAX_BY_IDX:
            raise ValidationError({"idx": [f"at most {MAX_BY_IDX} values; send a larger selection as mask"]})
        limit = body.get("limit", len(indices))
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise ValidationError({"limit": ["must be a non-negative integer"]})
        wanted = sorted(set(indices))
        return self._respond(dataset, body, wanted[:limit], len(wanted), limit)

    def _respond(self, dataset, body, wanted: list[int], count: int, limit: int):
        rows = Sample.objects.filter(dataset=dataset, idx__in=wanted).order_by("idx")
        if body.get("fields") == "id":
            return Response({"count": count, "ids": list(rows.values_list("id", flat=True))})
        keep_pixels = dataset.has_pixels
        samples = [
            {
                "id": sid,
                "idx": idx,
                "file_name": name,
                **sample_urls(dataset, sid, keep_pixels and bool(thumb), keep_pixels and bool(orig)),
            }
            for sid, idx, name, thumb, orig in rows[:limit].values_list(
                "id", "idx", "file_name", "thumbnail_key", "original_key"
            )
        ]
        return Response({"count": count, "samples": samples})


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
    path("datasets/<str:dataset_id>/metadata/columns", ColumnStore.as_view(), name="metadata-column-store"),
    path("datasets/<str:dataset_id>/map/samples", SamplesByIdx.as_view(), name="map-samples"),
]
