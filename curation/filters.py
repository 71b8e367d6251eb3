"""Sample filters and sorts: a bounded grammar over custom metadata, turned into SQL.

A condition is `path op value`, with `path` a dot path into the sample's metadata (segments
[A-Za-z0-9_-]+, at most 8 deep) and `op` one of eq, ne, lt, lte, gt, gte, in, exists, contains, icontains,
ieq, iin:

- eq / ne / in compare JSON scalars by type: 9 equals 9.0, but never "9" or true;
- contains (case-sensitive) and icontains (any case) take a non-empty string and match string values that
  contain it; ieq and iin take a string (a list of strings) and match string values equal to one of them in
  any case. Case is folded with lower() (Python's str.lower, PostgreSQL's lower(); on SQLite, whose lower()
  folds ASCII only, the same Python function is registered). Numbers and booleans never match these;
- lt / lte / gt / gte take a number (compared as numbers) or a string (compared as strings) and only
  match values of that kind: a string never matches `gt 5`;
- exists true|false asks whether the sample has a (non-null) value at the path.

A sample without a value at the path (the path is absent or null) matches only `exists false`, unless
the dataset's configurator gives the path a fallback: then the fallback stands in for the missing
value (for every op but exists). Conditions combine with AND.

On PostgreSQL every condition is SQL over JSONB (`eq` uses `@>`, which the GIN index on metadata
serves); on SQLite (the embedded default) the same semantics are written with JSON1 functions.
Nothing here loads samples one by one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import NotSupportedError, connection
from django.db.models import BooleanField, F, Func, JSONField, Q, QuerySet, TextField
from django.db.models.expressions import OrderBy

from curation import bitmask
from curation.access import resolve_tag
from curation.errors import DomainError
from curation.metadata import path_error
from curation.models import Dataset, MetadataField, Sample, Tag
from winnow import safejson
from winnow.values import is_finite_number

OPS = ("eq", "ne", "lt", "lte", "gt", "gte", "in", "exists", "contains", "icontains", "ieq", "iin")
# Operations on text: they match only string values.
TEXT_OPS = ("contains", "icontains", "ieq", "iin")
COMPARISONS = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
MAX_CONDITIONS = 20
MAX_IN_VALUES = 1000
MAX_FILE_NAME_FILTER = 1024
MAX_TEXT_VALUE = 1024
# A tag with at most this many samples filters by an IN list; a larger one by its bitmask in SQL.
SMALL_TAG = 1000
# A tag made of at most this many runs of consecutive idx filters by idx ranges.
FEW_RUNS = 64


# --- the grammar -------------------------------------------------------------------------------------


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_scalar(value) -> bool:
    return isinstance(value, (str, bool)) or is_finite_number(value)


def _same(a, b) -> bool:
    """JSON equality by type: numbers by value (9 == 9.0), booleans never equal numbers."""
    if _is_number(a) and _is_number(b):
        return a == b
    return type(a) is type(b) and a == b


@dataclass(frozen=True)
class Condition:
    path: str
    op: str
    value: Any

    @property
    def segments(self) -> list[str]:
        return self.path.split(".")

    def matches(self, value) -> bool:
        """Whether a present (non-null) value satisfies the condition, with the SQL's semantics."""
        if self.op == "exists":
            return self.value is True
        if self.op == "eq":
            return _same(value, self.value)
        if self.op == "ne":
            return not _same(value, self.value)
        if self.op == "in":
            return any(_same(value, item) for item in self.value)
        if self.op in TEXT_OPS:
            if not isinstance(value, str):
                return False
            if self.op == "contains":
                return self.value in value
            if self.op == "icontains":
                return self.value.lower() in value.lower()
            items = self.value if self.op == "iin" else [self.value]
            return value.lower() in {item.lower() for item in items}
        if _is_number(self.value):
            if not _is_number(value):
                return False
        elif not isinstance(value, str):
            return False
        return {
            "lt": value < self.value,
            "lte": value <= self.value,
            "gt": value > self.value,
            "gte": value >= self.value,
        }[self.op]

    def as_dict(self) -> dict:
        return {"path": self.path, "op": self.op, "value": self.value}


def _loads(text: str):
    """A `where` value: JSON when it parses as JSON, else the text itself."""
    try:
        return safejson.loads(text, "a where value")
    except safejson.UnsafeJSON:
        raise
    except ValueError:
        return text


def no_json_constant(name):
    raise ValueError(f"{name} is not allowed")


@dataclass(frozen=True)
class _ListValue:
    """What the value of a list op (in, iin) holds: `example` of the list, `items` as counted, each one `fits`."""

    example: str
    items: str
    fits: Callable[[Any], bool]
    kind: str  # what an item must be


LIST_OPS = {
    "in": _ListValue('a JSON list, such as [1, 2] or ["a", "b"]', "values", _is_scalar, "a string, number or boolean"),
    "iin": _ListValue(
        'a JSON list of strings, such as ["a", "b"]', "strings", lambda v: isinstance(v, str), "a string"
    ),
}


def _check_list(spec: _ListValue, value, about: str, where: str) -> None:
    """A JSON list of 1..MAX_IN_VALUES items, each one fitting `spec`."""
    if not isinstance(value, list):
        raise DomainError(f"{about}: value must be {spec.example}", where)
    if not value or len(value) > MAX_IN_VALUES:
        raise DomainError(f"{about}: the list must have 1 to {MAX_IN_VALUES} {spec.items} (got {len(value)})", where)
    bad = [v for v in value if not spec.fits(v)]
    if bad:
        raise DomainError(f"{about}: {bad[0]!r} is not {spec.kind}", where)


def _one_condition(item, where: str) -> Condition:
    if isinstance(item, str):
        parts = item.split(":", 2)
        if len(parts) < 2:
            raise DomainError(f"{item!r} is not of the form path:op:value", where)
        path, op = parts[0], parts[1]
        if len(parts) == 2:
            if op != "exists":
                raise DomainError(f"{item!r} has no value; write path:{op}:value", where)
            value = True
        elif op in ("contains", "icontains", "ieq"):
            # Text as typed (`name:contains:12` looks for "12"); a JSON string is unquoted.
            parsed = _loads(parts[2])
            value = parsed if isinstance(parsed, str) else parts[2]
        else:
            value = _loads(parts[2])
    elif isinstance(item, dict):
        unknown = set(item) - {"path", "op", "value"}
        if unknown:
            raise DomainError(f"unknown keys {sorted(unknown)}; a condition has path, op and value", where)
        path, op = item.get("path"), item.get("op")
        value = item.get("value", True if op == "exists" else None)
    else:
        raise DomainError("a condition is an object {path, op, value} or a string path:op:value", where)

    problem = path_error(path)
    if problem:
        raise DomainError(f"path {path!r} {problem}", where)
    if op not in OPS:
        raise DomainError(f"op {op!r} (path {path!r}) is not one of {', '.join(OPS)}", where)
    about = f"{path} {op}"
    if op == "exists":
        if not isinstance(value, bool):
            raise DomainError(f"{about}: value must be true or false", where)
    elif op in LIST_OPS:
        _check_list(LIST_OPS[op], value, about, where)
    elif op in ("contains", "icontains", "ieq"):
        if not isinstance(value, str) or (not value and op != "ieq"):
            kind = "a non-empty string" if op != "ieq" else "a string"
            quote = 'write it in quotes, such as "12", to match text' if _is_number(value) else ""
            raise DomainError(f"{about}: value must be {kind}, not {value!r}{'; ' + quote if quote else ''}", where)
        if len(value) > MAX_TEXT_VALUE:
            raise DomainError(f"{about}: the text must be at most {MAX_TEXT_VALUE} characters", where)
    elif op in COMPARISONS:
        if not (isinstance(value, str) or is_finite_number(value)):
            raise DomainError(f"{about}: value must be a number or a string, not {value!r}", where)
    elif not _is_scalar(value):
        hint = "; use exists to ask for a missing value" if value is None else ""
        raise DomainError(f"{about}: value must be a string, number or boolean, not {value!r}{hint}", where)
    return Condition(path=path, op=op, value=value)


def parse_conditions(raw, *, field: str = "conditions") -> list[Condition]:
    """Conditions from a list of {"path", "op", "value"} objects or of "path:op:value" strings.

    A string's value is JSON when it parses as JSON (so `9` is a number and `"9"` a string), else the
    text itself; `in` takes a JSON list; `path:exists` alone means exists true. Raises a
    DomainError naming the condition's index, path and op.
    """
    if raw is None:
        return []
    if isinstance(raw, (str, dict)):
        raw = [raw]
    if not isinstance(raw, (list, tuple)):
        raise DomainError("must be a list of conditions", field)
    if len(raw) > MAX_CONDITIONS:
        raise DomainError(f"at most {MAX_CONDITIONS} conditions are allowed (got {len(raw)})", field)
    return [_one_condition(item, f"{field}[{i}]") for i, item in enumerate(raw)]


def parse_filter(obj) -> dict:
    """A JSON filter object {"tag"?, "file_name"?, "conditions"?} as keyword arguments of select_samples."""
    if obj is None:
        obj = {}
    if not isinstance(obj, dict):
        raise DomainError("must be an object with tag, file_name and/or conditions", "filter")
    unknown = set(obj) - {"tag", "file_name", "conditions"}
    if unknown:
        raise DomainError(f"unknown keys {sorted(unknown)}; a filter has tag, file_name, conditions", "filter")
    tag = obj.get("tag")
    if tag is not None and not isinstance(tag, str):
        raise DomainError("must be a tag id (a string)", "filter.tag")
    file_name = obj.get("file_name")
    if file_name is not None and (not isinstance(file_name, str) or len(file_name) > MAX_FILE_NAME_FILTER):
        raise DomainError(f"must be a string of at most {MAX_FILE_NAME_FILTER} characters", "filter.file_name")
    return {
        "tag": tag or None,
        "file_name": file_name or None,
        "conditions": parse_conditions(obj.get("conditions"), field="filter.conditions"),
    }


# --- SQL ---------------------------------------------------------------------------------------------


class MetadataSQL(Func):
    """A piece of SQL over Sample.metadata, written once per database; `{col}` stands for the column."""

    def __init__(self, postgresql: tuple[str, list], sqlite: tuple[str, list], output_field):
        super().__init__(F("metadata"), output_field=output_field)
        self.postgresql, self.sqlite = postgresql, sqlite

    def as_sql(self, compiler, connection, **extra):
        col, col_params = compiler.compile(self.source_expressions[0])
        if col_params:  # a plain column never has parameters; the templates below rely on it
            raise NotSupportedError("metadata must be a plain column")
        if connection.vendor == "postgresql":
            template, params = self.postgresql
        elif connection.vendor == "sqlite":
            template, params = self.sqlite
        else:
            raise NotSupportedError(f"metadata filters support PostgreSQL and SQLite, not {connection.vendor}")
        return template.replace("{col}", col), tuple(params)


def _nested(segments: list[str], value) -> str:
    doc = value
    for segment in reversed(segments):
        doc = {segment: doc}
    return json.dumps(doc)


# SQLite's own lower() folds ASCII only: curation.apps registers Python's str.lower under this name.
LITE_LOWER = "winnow_lower"


def lite_lower(text):
    return text.lower() if isinstance(text, str) else text


def _lite_path(segments: list[str]) -> str:
    return "$" + "".join(f'."{s}"' for s in segments)


def _lite_typed(value) -> tuple[str, list]:
    """SQLite: the json_type test that a value has the same JSON kind as `value` (booleans: the value too)."""
    if isinstance(value, bool):
        return "json_type({col}, %s) = %s", ["true" if value else "false"]
    if _is_number(value):
        return "json_type({col}, %s) IN ('integer', 'real')", []
    return "json_type({col}, %s) = 'text'", []


def _pg_has_value(p) -> tuple[str, list]:
    return "COALESCE(jsonb_typeof({col} #> %s), 'null') <> 'null'", [p]


def _lite_has_value(p) -> tuple[str, list]:
    return "COALESCE(json_type({col}, %s), 'null') <> 'null'", [p]


def _lite_equal(p, value) -> tuple[str, list]:
    sql, params = _lite_typed(value)
    if isinstance(value, bool):
        return f"({sql})", [p, *params]
    return f"({sql} AND json_extract({{col}}, %s) = %s)", [p, *params, p, value]


def _condition_sql(cond: Condition) -> tuple[tuple[str, list], tuple[str, list]]:
    """(PostgreSQL, SQLite) SQL of one condition over samples that have a value at the path."""
    pp, lp = cond.segments, _lite_path(cond.segments)
    op, value = cond.op, cond.value
    if op == "exists":
        pg, lite = _pg_has_value(pp), _lite_has_value(lp)
        if not value:
            pg, lite = (f"NOT ({pg[0]})", pg[1]), (f"NOT ({lite[0]})", lite[1])
        return pg, lite
    if op == "eq":
        # Containment, so the GIN (jsonb_path_ops) index on metadata answers it.
        return ("({col} @> %s::jsonb)", [_nested(pp, value)]), _lite_equal(lp, value)
    if op == "ne":
        has_pg, has_lite = _pg_has_value(pp), _lite_has_value(lp)
        eq_lite = _lite_equal(lp, value)
        return (
            (f"({has_pg[0]} AND NOT ({{col}} @> %s::jsonb))", [*has_pg[1], _nested(pp, value)]),
            (f"({has_lite[0]} AND NOT {eq_lite[0]})", [*has_lite[1], *eq_lite[1]]),
        )
    if op in TEXT_OPS:
        # #>> gives the string's text; the typeof test keeps numbers and booleans out.
        is_text_pg, is_text_lite = "jsonb_typeof({col} #> %s) = 'string'", "json_type({col}, %s) = 'text'"
        if op == "contains":  # strpos/instr, so % and _ in the value are plain characters
            return (
                (f"({is_text_pg} AND strpos({{col}} #>> %s, %s) > 0)", [pp, pp, value]),
                (f"({is_text_lite} AND instr(json_extract({{col}}, %s), %s) > 0)", [lp, lp, value]),
            )
        if op == "icontains":
            return (
                (f"({is_text_pg} AND strpos(lower({{col}} #>> %s), lower(%s)) > 0)", [pp, pp, value]),
                (
                    f"({is_text_lite} AND instr({LITE_LOWER}(json_extract({{col}}, %s)), {LITE_LOWER}(%s)) > 0)",
                    [lp, lp, value],
                ),
            )
        items = value if op == "iin" else [value]
        lowered = sorted({item.lower() for item in items})
        marks = ", ".join(["%s"] * len(lowered))
        return (
            (
                f"({is_text_pg} AND lower({{col}} #>> %s) = ANY(ARRAY(SELECT lower(x) FROM unnest(%s::text[]) AS x)))",
                [pp, pp, lowered],
            ),
            (f"({is_text_lite} AND {LITE_LOWER}(json_extract({{col}}, %s)) IN ({marks}))", [lp, lp, *lowered]),
        )
    if op == "in":
        pg = ("(({col} #> %s) = ANY(%s::jsonb[]))", [pp, [json.dumps(v) for v in value]])
        parts = [_lite_equal(lp, v) for v in value]
        lite = ("(" + " OR ".join(sql for sql, _ in parts) + ")", [x for _, params in parts for x in params])
        return pg, lite
    cmp = COMPARISONS[op]
    kind_pg = "number" if _is_number(value) else "string"
    kind_lite = "IN ('integer', 'real')" if _is_number(value) else "= 'text'"
    # Comparing jsonb with jsonb: no cast that could fail, numbers by value, strings by collation.
    pg = (
        f"(jsonb_typeof({{col}} #> %s) = '{kind_pg}' AND ({{col}} #> %s) {cmp} %s::jsonb)",
        [pp, pp, json.dumps(value)],
    )
    lite = (f"(json_type({{col}}, %s) {kind_lite} AND json_extract({{col}}, %s) {cmp} %s)", [lp, lp, value])
    return pg, lite


def condition_expression(cond: Condition, fallback=None) -> MetadataSQL:
    """A boolean expression for `cond`; a fallback that satisfies it also admits samples lacking the path."""
    pg, lite = _condition_sql(cond)
    if cond.op != "exists" and fallback is not None and cond.matches(fallback):
        has_pg, has_lite = _pg_has_value(cond.segments), _lite_has_value(_lite_path(cond.segments))
        pg = (f"({pg[0]} OR NOT ({has_pg[0]}))", [*pg[1], *has_pg[1]])
        lite = (f"({lite[0]} OR NOT ({has_lite[0]}))", [*lite[1], *has_lite[1]])
    return MetadataSQL(pg, lite, BooleanField())


def fallbacks(dataset: Dataset, paths) -> dict[str, Any]:
    """The configured fallback of each of `paths` that has one."""
    rows = MetadataField.objects.filter(dataset=dataset, path__in=set(paths), fallback__isnull=False)
    return {path: value for path, value in rows.values_list("path", "fallback") if value is not None}


class _IdxInBitmask(Func):
    """PostgreSQL: idx is set in a tag's bitmask (bit i of byte i/8, least significant first, as get_bit reads)."""

    output_field = BooleanField()

    def __init__(self, mask: bytes):
        super().__init__(F("idx"))
        self.mask = mask

    def as_sql(self, compiler, connection, **extra):
        col, params = compiler.compile(self.source_expressions[0])
        if connection.vendor == "postgresql":
            # CASE, so get_bit never sees an idx past the mask's end (that would raise).
            sql = f"(CASE WHEN {col} < %s THEN get_bit(%s::bytea, {col}) = 1 ELSE false END)"
            return sql, (*params, len(self.mask) * 8, self.mask)
        # SQLite has no get_bit: the idx values go inline (they are ints we made, never user text),
        # because a bound parameter per idx would pass SQLite's variable limit.
        indices = ",".join(str(int(i)) for i in bitmask.to_indices(self.mask))
        return f"({col} IN ({indices or 'NULL'}))", params


def _tag_filter(tag: Tag) -> Q | _IdxInBitmask | None:
    mask = bytes(tag.bitmask)
    indices = bitmask.to_indices(mask)
    if indices.size == 0:
        return None
    if indices.size <= SMALL_TAG:
        return Q(idx__in=[int(i) for i in indices])
    breaks = np.flatnonzero(np.diff(indices) != 1)
    if breaks.size + 1 <= FEW_RUNS:
        starts = np.concatenate([[indices[0]], indices[breaks + 1]])
        ends = np.concatenate([indices[breaks], [indices[-1]]])
        q = Q()
        for start, end in zip(starts, ends):
            q |= Q(idx__gte=int(start), idx__lte=int(end))
        return q
    return _IdxInBitmask(mask)


def sample_filter(dataset: Dataset, *, tag=None, file_name: str | None = None, conditions=()) -> Q | None:
    """The WHERE of select_samples as one Q over the dataset's samples (None: nothing can match),
    so that a statement can count matches beside everything (`Count(..., filter=q)`) in one scan."""
    q = Q()
    if tag is not None:
        where = _tag_filter(resolve_tag(dataset, tag))
        if where is None:
            return None
        q &= where if isinstance(where, Q) else Q(where)
    if file_name:
        q &= Q(file_name__icontains=file_name)
    conditions = list(conditions)
    if conditions:
        known = fallbacks(dataset, [c.path for c in conditions])
        for cond in conditions:
            q &= Q(condition_expression(cond, known.get(cond.path)))
    return q


def select_samples(dataset: Dataset, *, tag=None, file_name: str | None = None, conditions=()) -> QuerySet:
    """The dataset's samples in `tag` (a Tag or its id), whose file name contains `file_name`
    (case-insensitive) and that satisfy every condition (configured fallbacks applied). Unordered."""
    qs = Sample.objects.filter(dataset=dataset)
    q = sample_filter(dataset, tag=tag, file_name=file_name, conditions=conditions)
    return qs.none() if q is None else qs.filter(q)


# --- sorting ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sort:
    """Order by idx, or by a metadata path (missing values last, ties by idx ascending)."""

    text: str
    path: str | None
    descending: bool
    fallback: Any = None

    def value(self) -> MetadataSQL:
        """The sort value: the JSON at the path (null counts as missing), else the fallback."""
        pp, lp = self.path.split("."), _lite_path(self.path.split("."))
        if self.fallback is None:
            pg = ("NULLIF({col} #> %s, 'null'::jsonb)", [pp])
            lite = ("json_extract({col}, %s)", [lp])
        else:
            pg = ("COALESCE(NULLIF({col} #> %s, 'null'::jsonb), %s::jsonb)", [pp, json.dumps(self.fallback)])
            lite = ("COALESCE(json_extract({col}, %s), json_extract(%s, '$'))", [lp, json.dumps(self.fallback)])
        return MetadataSQL(pg, lite, JSONField())

    def key_text(self) -> MetadataSQL:
        """The sort value as exact JSON text, for a cursor (NULL or 'null' when missing)."""
        value = self.value()
        return MetadataSQL(
            (f"({value.postgresql[0]})::text", value.postgresql[1]),
            (f"json_quote({value.sqlite[0]})", value.sqlite[1]),
            TextField(),
        )

    def _compare(self, op: str, key: str) -> MetadataSQL:
        value = self.value()
        return MetadataSQL(
            (f"({value.postgresql[0]}) {op} %s::jsonb", [*value.postgresql[1], key]),
            (f"({value.sqlite[0]}) {op} json_extract(%s, '$')", [*value.sqlite[1], key]),
            BooleanField(),
        )

    def _is_missing(self, missing: bool) -> MetadataSQL:
        value = self.value()
        test = "IS NULL" if missing else "IS NOT NULL"
        return MetadataSQL(
            (f"({value.postgresql[0]}) {test}", value.postgresql[1]),
            (f"({value.sqlite[0]}) {test}", value.sqlite[1]),
            BooleanField(),
        )

    def ordering(self, *, reverse: bool = False) -> list:
        if self.path is None:
            return ["-idx" if self.descending != reverse else "idx"]
        descending = self.descending != reverse
        # Missing values come last; walking backwards (a `previous` page) they come first.
        value = OrderBy(
            self.value(),
            descending=descending,
            nulls_last=None if reverse else True,
            nulls_first=True if reverse else None,
        )
        return [value, "-idx" if reverse else "idx"]

    def after(self, qs: QuerySet, key: str | None, idx: int, *, reverse: bool = False) -> QuerySet:
        """Rows strictly after (key, idx) in this order, or strictly before it when `reverse`."""
        if self.path is None:
            return qs.filter(idx__lt=idx) if self.descending != reverse else qs.filter(idx__gt=idx)
        idx_q = Q(idx__lt=idx) if reverse else Q(idx__gt=idx)
        missing = key is None or key == "null"
        if not reverse:
            if missing:  # already among the missing values, which come last
                return qs.filter(Q(self._is_missing(True)) & idx_q)
            beyond = "<" if self.descending else ">"
            return qs.filter(
                Q(self._compare(beyond, key)) | (Q(self._compare("=", key)) & idx_q) | Q(self._is_missing(True))
            )
        if missing:
            return qs.filter(Q(self._is_missing(False)) | (Q(self._is_missing(True)) & idx_q))
        before = ">" if self.descending else "<"
        return qs.filter(Q(self._compare(before, key)) | (Q(self._compare("=", key)) & idx_q))


def parse_sort(dataset: Dataset, text: str | None) -> Sort:
    """`idx`, `-idx`, a metadata dot path or `-path`; raises a DomainError naming `sort`."""
    text = (text or "idx").strip()
    descending = text.startswith("-")
    path = text[1:] if descending else text
    if path == "idx":
        return Sort(text=text, path=None, descending=descending)
    problem = path_error(path)
    if problem:
        raise DomainError(f"{text!r}: give idx, -idx, a metadata path or -path; the path {problem}", "sort")
    return Sort(text=text, path=path, descending=descending, fallback=fallbacks(dataset, [path]).get(path))


# --- sort indexes ---------------------------------------------------------------------------------


def sort_index_names(dataset_id: str, field_id: int) -> tuple[str, str]:
    """The two partial indexes behind sorting by a configured field: ascending and descending."""
    return f"sample_sort_{dataset_id}_{field_id}_a", f"sample_sort_{dataset_id}_{field_id}_d"


def _sort_expression(field) -> str:
    """The exact SQL that curation.filters.Sort orders by for this field, with its parameters inlined,
    so the planner matches the index expression to the query's."""
    template, params = (
        Sort(text=field.path, path=field.path, descending=False, fallback=field.fallback).value().postgresql
    )
    with connection.cursor() as cursor:
        return cursor.cursor.mogrify(template.replace("{col}", '"metadata"'), params).decode()


def _quoted(name: str) -> str:
    return connection.ops.quote_name(name)


def drop_sort_indexes(dataset_id: str, field_id: int) -> None:
    """Drop a field's sort indexes if they exist (PostgreSQL; nothing to do on SQLite)."""
    if connection.vendor != "postgresql":
        return
    concurrently = "" if connection.in_atomic_block else "CONCURRENTLY "
    with connection.cursor() as cursor:
        if connection.in_atomic_block:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for name in sort_index_names(dataset_id, field_id):
            cursor.execute(f"DROP INDEX {concurrently}IF EXISTS {_quoted(name)}")


def build_sort_indexes(field_id: int) -> list[str]:
    """(Re)build the partial expression indexes that let the sample list sort by a configured field
    page by page: (value ASC NULLS LAST, idx) and (value DESC NULLS LAST, idx) over the field's dataset.

    Idempotent: drops what exists first, so a changed path or fallback gets a matching index. Outside a
    transaction the indexes are built CONCURRENTLY (sample registration goes on meanwhile).
    Returns the names built; nothing on SQLite, where the sort scans (correct, slower).
    """
    if connection.vendor != "postgresql":
        return []
    field = MetadataField.objects.filter(pk=field_id).first()
    if field is None:
        return []
    drop_sort_indexes(field.dataset_id, field.pk)
    expression = _sort_expression(field)
    table = _quoted(Sample._meta.db_table)
    concurrently = "" if connection.in_atomic_block else "CONCURRENTLY "
    ascending, descending = sort_index_names(field.dataset_id, field.pk)
    with connection.cursor() as cursor:
        if connection.in_atomic_block:
            # Inside a transaction (tests, eager tasks) deferred FK checks would block CREATE INDEX.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        where = cursor.cursor.mogrify("dataset_id = %s", [field.dataset_id]).decode()
        for name, direction in ((ascending, "ASC"), (descending, "DESC")):
            cursor.execute(
                f"CREATE INDEX {concurrently}IF NOT EXISTS {_quoted(name)} ON {table} "
                f"(({expression}) {direction} NULLS LAST, idx) WHERE {where}"
            )
    return [ascending, descending]


def indexed_numeric_bounds(field) -> tuple[float | None, float | None] | None:
    """(min, max) of the field's numbers (fallback included) read from its sort indexes in two index
    lookups, or None when the indexes are not there (SQLite, or still being built): scan instead."""
    if connection.vendor != "postgresql":
        return None
    names = list(sort_index_names(field.dataset_id, field.pk))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname = ANY(%s) AND i.indisvalid AND i.indisready",
            [names],
        )
        if cursor.fetchone()[0] != len(names):
            return None
        expression = _sort_expression(field)
        # jsonb orders strings < numbers < booleans: the ends of the numbers are one index probe away.
        bounds = []
        for direction in ("ASC", "DESC"):
            cursor.execute(
                f"SELECT ({expression})::float8 FROM {_quoted(Sample._meta.db_table)} "
                f"WHERE dataset_id = %s AND jsonb_typeof({expression}) = 'number' "
                f"ORDER BY ({expression}) {direction} NULLS LAST LIMIT 1",
                [field.dataset_id],
            )
            row = cursor.fetchone()
            bounds.append(None if row is None else float(row[0]))
    return bounds[0], bounds[1]
