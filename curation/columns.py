"""The metadata column store: each configured field as a typed column over sample idx, for Analyze and Filter.

PostgreSQL stays the system of record. A worker derives, per configured field, one .npy column per dataset
(in storage, under `datasets/<id>/columns/<build>/`), and the web process memory-maps them and reads them in
fixed blocks of BLOCK samples, so a request's memory does not grow with the dataset:

- numeric fields (int, float): `values` float64 (the JSON number, NaN otherwise) and `state` int8
  (0 a number, 1 missing: absent or JSON null, 2 another JSON type); the manifest counts the values of another
  type (`odd`) and the numbers the float64 rounds (`inexact`, more than 15 significant digits);
- other fields (categorical, boolean): `codes` int32 into a list of the distinct values as PostgreSQL
  prints them (`"rain"`, `3`, `true`), -1 missing. A field with more than MAX_CATEGORIES distinct values
  gets no column (its histograms stay in SQL).

Values are stored without the configured fallback, which applies at read time with the SQL path's rules
(a missing value takes the fallback; a value of another type does not). The store is fresh while it was built
at the dataset's `metadata_version` (bumped by every write to existing samples' metadata) and `next_idx`
(moved by every registration) and covers every configured field with its type; otherwise callers take the
SQL path and a rebuild is queued (once, however many requests find it stale). PostgreSQL only: on SQLite
(the embedded demo) everything stays in SQL.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from functools import lru_cache

import numpy as np
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from curation import bitmask, storage
from curation.access import resolve_tag
from curation.filters import TEXT_OPS, Condition, condition_expression, fallbacks, select_samples
from curation.models import Dataset, FieldType, MetadataColumns, MetadataField, Sample
from winnow.celery import task

BLOCK = 1 << 20  # samples read at a time; a multiple of 8, so a block starts on a bitmask byte
MAX_CATEGORIES = 65_536
NUMERIC = {FieldType.INT, FieldType.FLOAT}
NUMBER, MISSING, OTHER = 0, 1, 2
# A build queued this long ago and not finished (its worker died, the broker lost it) may be queued again.
REQUEUE_AFTER = timedelta(minutes=10)
# Registration comes in many batches: a build it asks for waits this long, so a burst is read once.
REGISTRATION_DELAY_S = 30


def supported() -> bool:
    return connection.vendor == "postgresql"


# --- freshness and queueing ------------------------------------------------------------------------------


def request_build(dataset_id: str, *, countdown: float = 0) -> bool:
    """Queue a build of the dataset's columns after the commit, unless one is queued or running already."""
    if not supported():
        return False
    now = timezone.now()
    table = connection.ops.quote_name(MetadataColumns._meta.db_table)
    # One statement: the row is created queued, or claimed when idle (or queued long ago), or left alone.
    claimed = _packed(
        f"INSERT INTO {table} AS c (dataset_id, size, fields, status, queued_at, error) "
        "SELECT id, 0, '{}'::jsonb, 'queued', %s, '' FROM " + connection.ops.quote_name(Dataset._meta.db_table) + " "
        "WHERE id = %s ON CONFLICT (dataset_id) DO UPDATE SET status = 'queued', queued_at = EXCLUDED.queued_at "
        "WHERE c.status = 'idle' OR c.queued_at IS NULL OR c.queued_at < %s RETURNING 1",
        [now, dataset_id, now - REQUEUE_AFTER],
    )
    if claimed:
        transaction.on_commit(
            lambda: task("curation.build_metadata_columns").apply_async((dataset_id,), countdown=countdown or None),
            robust=True,
        )
    return bool(claimed)


def metadata_changed(dataset_id: str) -> None:
    """Existing samples' metadata changed: the store is stale from now on; queue its rebuild."""
    Dataset.objects.filter(pk=dataset_id).update(metadata_version=F("metadata_version") + 1)
    if (
        MetadataColumns.objects.filter(pk=dataset_id).exists()
        or MetadataField.objects.filter(dataset_id=dataset_id).exists()
    ):
        request_build(dataset_id)


def fields_changed(dataset_id: str) -> None:
    """A field was configured, changed or removed: build the columns the fields need, or drop the store when
    no field is left (a rebuild leaves a removed field's column out)."""
    if MetadataField.objects.filter(dataset_id=dataset_id).exists():
        request_build(dataset_id)
    elif supported():
        drop(dataset_id)


def drop(dataset_id: str) -> None:
    """Remove the dataset's column store: its row now, its files after the commit."""
    MetadataColumns.objects.filter(pk=dataset_id).delete()
    transaction.on_commit(lambda: storage.delete_prefix(storage.metadata_columns_prefix(dataset_id)), robust=True)


def samples_added(dataset_id: str) -> None:
    """New samples: the store is stale (next_idx moved); build once the burst of batches has passed."""
    if MetadataField.objects.filter(dataset_id=dataset_id).exists():
        request_build(dataset_id, countdown=REGISTRATION_DELAY_S)


@dataclass
class Store:
    """A fresh column store: where each field's columns are, and the dataset size they cover."""

    size: int
    fields: dict = field(default_factory=dict)
    _mapped: dict = field(default_factory=dict, repr=False)

    def array(self, key: str) -> np.ndarray:
        """The column as a read-only memory map (opened once per request)."""
        if key not in self._mapped:
            self._mapped[key] = storage.open_matrix(key)
        return self._mapped[key]

    def categories(self, path: str) -> list[str]:
        return _categories(self.fields[path]["categories_key"])

    def usable(self, paths) -> bool:
        """Whether every one of `paths` has a column."""
        return all(self.fields.get(p, {}).get("kind") for p in paths)


@lru_cache(maxsize=256)  # keys are unique per build, so a cached list is never out of date
def _categories(key: str) -> list[str]:
    return json.loads(storage.read_bytes(key))


def status(dataset: Dataset) -> dict:
    """What the store holds and whether it is fresh (for the API and the benchmark)."""
    row = MetadataColumns.objects.filter(pk=dataset.pk).first()
    configured = list(dataset.metadata_fields.values_list("path", "type"))
    fresh = _fresh(dataset, row, configured) is not None
    return {
        "supported": supported(),
        "fresh": fresh,
        "status": row.status if row else "none",
        "version": row.version if row else None,
        "dataset_version": dataset.metadata_version,
        "size": row.size if row else 0,
        "sample_count": dataset.next_idx,
        "built_at": row.built_at if row else None,
        "build_seconds": row.build_seconds if row else None,
        "error": row.error if row else "",
        "fields": {
            path: {"type": t, "column": bool(row and row.fields.get(path, {}).get("kind"))} for path, t in configured
        },
    }


def _fresh(dataset: Dataset, row, configured: list[tuple[str, str]]) -> Store | None:
    if row is None or row.version != dataset.metadata_version or row.size != dataset.next_idx:
        return None
    for path, field_type in configured:
        entry = row.fields.get(path)
        # An entry without a kind is a field the build gave no column (too many values): fresh, not usable.
        if not entry or entry.get("type") != field_type:
            return None
        if entry.get("kind") == "numeric" and "inexact" not in entry:
            return None  # built before numbers were checked for rounding: rebuilt once, sorts read it then
    return Store(size=row.size, fields={path: row.fields[path] for path, _t in configured})


def fresh_store(dataset: Dataset, *, queue: bool = True) -> Store | None:
    """The store when it is fresh for every configured field; else None (and, with `queue`, a rebuild is queued)."""
    if not supported():
        return None
    # The dataset as it is now (the caller's instance may predate a registration or an upload), and its store.
    row = (
        Dataset.objects.filter(pk=dataset.pk)
        .values("next_idx", "metadata_version", "columns__version", "columns__size", "columns__fields")
        .first()
    )
    if row is None:
        return None
    dataset.next_idx, dataset.metadata_version = row["next_idx"], row["metadata_version"]
    configured = list(dataset.metadata_fields.values_list("path", "type"))
    if not configured:
        return None
    built = None
    if row["columns__fields"] is not None:
        built = MetadataColumns(
            version=row["columns__version"], size=row["columns__size"], fields=row["columns__fields"]
        )
    store = _fresh(dataset, built, configured)
    if store is None and queue:
        request_build(dataset.pk)
    return store


# --- building (worker) -------------------------------------------------------------------------------------


def _packed(sql: str, params: list) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _range_sql(field: MetadataField) -> tuple[str, list]:
    """The field's JSON per sample of the dataset in an idx range (the unique (dataset, idx) index serves it)."""
    table = connection.ops.quote_name(Sample._meta.db_table)
    return (
        f"SELECT idx, metadata #> %s AS j FROM {table} WHERE dataset_id = %s AND idx >= %s AND idx < %s OFFSET 0",
        [field.path.split(".")],
    )


def _numeric_block(field: MetadataField, dataset_id: str, lo: int, hi: int, values, state, seen) -> tuple[int, int]:
    """Fill values, state and seen for [lo, hi); (values of another type, numbers the float64 rounds)."""
    inner, params = _range_sql(field)
    ((idx, nums, states, odd, inexact),) = _packed(
        "SELECT string_agg(int4send(idx::int), ''::bytea), "
        "string_agg(float8send(CASE WHEN jsonb_typeof(j) = 'number' THEN j::float8 ELSE 'NaN'::float8 END), "
        "''::bytea), "
        "string_agg(int2send((CASE WHEN jsonb_typeof(j) = 'number' THEN 0 "
        "WHEN j IS NULL OR j = 'null'::jsonb THEN 1 ELSE 2 END)::int2), ''::bytea), "
        "count(*) FILTER (WHERE jsonb_typeof(j) NOT IN ('number', 'null')), "
        # Numbers the float64 does not give back (more than 15 significant digits): ordering by the float is not exact.
        "count(*) FILTER (WHERE jsonb_typeof(j) = 'number' AND (j::float8)::numeric <> j::numeric) "
        f"FROM ({inner}) AS s",
        [*params, dataset_id, lo, hi],
    )
    if idx is None:
        return 0, 0
    at = np.frombuffer(bytes(idx), dtype=">i4").astype(np.int64) - lo
    values[at] = np.frombuffer(bytes(nums), dtype=">f8")
    state[at] = np.frombuffer(bytes(states), dtype=">i2").astype(np.int8)
    seen[at] = True
    return int(odd), int(inexact)


def _category_block(field: MetadataField, dataset_id: str, lo: int, hi: int, codes, seen, known: dict) -> bool:
    """Fill codes[lo:hi]; False when the field has more than MAX_CATEGORIES distinct values."""
    inner, params = _range_sql(field)
    rows = _packed(
        f"SELECT (NULLIF(j, 'null'::jsonb))::text AS k, string_agg(int4send(idx::int), ''::bytea) "
        f"FROM ({inner}) AS s GROUP BY k",
        [*params, dataset_id, lo, hi],
    )
    for key, packed in rows:
        at = np.frombuffer(bytes(packed), dtype=">i4").astype(np.int64) - lo
        seen[at] = True
        if key is None:
            continue
        code = known.setdefault(key, len(known))
        if len(known) > MAX_CATEGORIES:
            return False
        codes[at] = code
    return True


def _spooled(size: int, dtype, fill) -> tuple:
    path = storage.spool_path(".npy")
    array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(size,))
    array[:] = fill
    return path, array


def _build_field(field: MetadataField, dataset_id: str, size: int, folder: str, seen_all: np.ndarray) -> dict:
    """Write one field's columns to storage; return its manifest entry (no `kind` when it gets none)."""
    entry: dict = {"type": field.type, "field_id": field.pk}
    spooled = []
    try:
        if field.type in NUMERIC:
            vpath, values = _spooled(size, np.float64, np.nan)
            spath, state = _spooled(size, np.int8, MISSING)
            spooled += [vpath, spath]
            odd = inexact = 0
            for lo in range(0, size, BLOCK):
                hi = min(size, lo + BLOCK)
                seen = np.zeros(hi - lo, dtype=bool)
                block_odd, block_inexact = _numeric_block(field, dataset_id, lo, hi, values[lo:hi], state[lo:hi], seen)
                odd += block_odd
                inexact += block_inexact
                seen_all[lo:hi] &= seen
            values.flush()
            state.flush()
            del values, state
            entry.update(
                kind="numeric",
                odd=odd,
                inexact=inexact,
                values_key=storage.save_file(f"{folder}{field.pk}-values.npy", vpath),
                state_key=storage.save_file(f"{folder}{field.pk}-state.npy", spath),
            )
            return entry
        cpath, codes = _spooled(size, np.int32, -1)
        spooled.append(cpath)
        known: dict[str, int] = {}
        for lo in range(0, size, BLOCK):
            hi = min(size, lo + BLOCK)
            seen = np.zeros(hi - lo, dtype=bool)
            if not _category_block(field, dataset_id, lo, hi, codes[lo:hi], seen, known):
                entry["skipped"] = f"more than {MAX_CATEGORIES} distinct values"
                return entry
            seen_all[lo:hi] &= seen
        codes.flush()
        del codes
        categories = sorted(known, key=known.get)
        entry.update(
            kind="categorical",
            codes_key=storage.save_file(f"{folder}{field.pk}-codes.npy", cpath),
            categories_key=storage.save_bytes(f"{folder}{field.pk}-categories.json", json.dumps(categories).encode()),
        )
        return entry
    finally:
        for path in spooled:
            path.unlink(missing_ok=True)


def build(dataset_id: str) -> dict | None:
    """(Re)build the dataset's column store from its samples; returns what was recorded, None when not applicable.

    The version is read before the scans, so a write during the build leaves the store stale (rebuilt
    again) rather than wrongly fresh. A gap in idx (a registration not yet committed) shortens the size the
    store records, which keeps it stale until a later build sees every sample.
    """
    if not supported():
        return None
    current = Dataset.objects.filter(pk=dataset_id).values("next_idx", "metadata_version").first()
    if current is None:
        return None
    if not MetadataField.objects.filter(dataset_id=dataset_id).exists():
        drop(dataset_id)  # every field was removed while this build waited
        return None
    MetadataColumns.objects.get_or_create(dataset_id=dataset_id)
    MetadataColumns.objects.filter(pk=dataset_id).update(status="building", error="")
    started = time.perf_counter()
    size, version = current["next_idx"], current["metadata_version"]
    folder = f"{storage.metadata_columns_prefix(dataset_id)}{secrets.token_hex(6)}/"
    try:
        seen_all = np.ones(size, dtype=bool)
        built = {
            f.path: _build_field(f, dataset_id, size, folder, seen_all)
            for f in MetadataField.objects.filter(dataset_id=dataset_id).order_by("path")
        }
    except Exception as exc:
        # "failed" keeps queued_at: requests queue it again only after REQUEUE_AFTER, not each time.
        MetadataColumns.objects.filter(pk=dataset_id).update(status="failed", error=str(exc)[:2000])
        storage.delete_prefix(folder)
        raise
    gaps = np.flatnonzero(~seen_all)
    complete = int(gaps[0]) if gaps.size else size
    old = MetadataColumns.objects.filter(pk=dataset_id).values_list("fields", flat=True).first() or {}
    changed = MetadataColumns.objects.filter(pk=dataset_id).update(
        version=version,
        size=complete,
        fields=built,
        status="idle",
        queued_at=None,
        built_at=timezone.now(),
        build_seconds=time.perf_counter() - started,
    )
    # The previous build's files go (a reader that mapped them keeps its pages until it is done).
    previous = {_folder_of(entry) for entry in old.values()} - {folder, None}
    for prefix in previous:
        storage.delete_prefix(prefix)
    if not changed:  # the dataset went meanwhile
        storage.delete_prefix(folder)
        return None
    _again_if_stale(dataset_id)
    return {"version": version, "size": complete, "fields": sorted(built)}


def _again_if_stale(dataset_id: str) -> None:
    """Writes and field changes during a build found it queued or running and asked for nothing: ask now.
    New samples only: wait, as registration does, so a long registration is read every so often, not always."""
    dataset = Dataset.objects.filter(pk=dataset_id).first()
    row = MetadataColumns.objects.filter(pk=dataset_id).first()
    if dataset is None or row is None:
        return
    configured = list(dataset.metadata_fields.values_list("path", "type"))
    if configured and _fresh(dataset, row, configured) is None:
        only_new_samples = row.version == dataset.metadata_version and all(
            row.fields.get(p, {}).get("type") == t for p, t in configured
        )
        request_build(dataset_id, countdown=REGISTRATION_DELAY_S if only_new_samples else 0)


def _folder_of(entry: dict) -> str | None:
    key = entry.get("values_key") or entry.get("codes_key")
    return key.rsplit("/", 1)[0] + "/" if key else None


# --- reading: filters over the columns ----------------------------------------------------------------------


def _numeric_condition(cond: Condition, fallback, odd: int):
    """fn(values, state) -> bool mask for a condition on a numeric column, or None when the column cannot
    answer it exactly (a non-number compared with a path that holds values of other types)."""
    op, value = cond.op, cond.value

    def is_number(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if op == "exists":
        return (lambda v, s: s != MISSING) if value else (lambda v, s: s == MISSING)
    if op in TEXT_OPS:
        # Only strings match, and a numeric column keeps no text: exact only when the path holds no other type.
        if odd:
            return None
        base = lambda v, s: np.zeros(s.shape, dtype=bool)  # noqa: E731
    elif op in ("eq", "ne", "in"):
        items = value if op == "in" else [value]
        numbers = np.array([float(x) for x in items if is_number(x)], dtype=np.float64)
        if odd and len(numbers) < len(items):
            return None
        if op == "ne":
            # Present and not equal: a value of another type is never equal to a number.
            if numbers.size:
                base = lambda v, s: (s == OTHER) | ((s == NUMBER) & (v != numbers[0]))  # noqa: E731
            else:
                base = lambda v, s: s != MISSING  # noqa: E731
        else:
            base = lambda v, s: (s == NUMBER) & np.isin(v, numbers)  # noqa: E731
    else:
        if not is_number(value):
            if odd:
                return None
            base = lambda v, s: np.zeros(s.shape, dtype=bool)  # noqa: E731
        else:
            compare = {"lt": np.less, "lte": np.less_equal, "gt": np.greater, "gte": np.greater_equal}[op]
            bound = float(value)
            base = lambda v, s: (s == NUMBER) & compare(v, bound)  # noqa: E731  (NaN compares False)
    if fallback is not None and cond.matches(fallback):
        return lambda v, s: base(v, s) | (s == MISSING)
    return base


def _category_lut(cond: Condition, fallback, categories: list[str]) -> np.ndarray:
    """bool[len(categories) + 1]: whether each category (and, last, a missing value) satisfies the condition,
    decided by PostgreSQL with the very SQL the filter uses, over a one-field document per category."""
    segments = cond.path.split(".")
    head = "".join("{" + json.dumps(s) + ":" for s in segments)
    docs = [head + text + "}" * len(segments) for text in categories] + ["{}"]
    template, params = condition_expression(cond, fallback).postgresql
    rows = _packed(
        f"SELECT {template.replace('{col}', 'd.doc')} FROM "
        "(SELECT o, x::jsonb AS doc FROM unnest(%s::text[]) WITH ORDINALITY AS u(x, o)) AS d ORDER BY d.o",
        [*params, docs],
    )
    return np.array([bool(r[0]) for r in rows], dtype=bool)


class Match:
    """The samples a filter matches, block by block: a tag's bits, conditions on columns, and (for what the
    columns cannot answer) the idx set the SQL filter selects, as a bitmask."""

    def __init__(self, store: Store, dataset_id: str | None = None):
        self.store = store
        self.dataset_id = dataset_id
        self.masks: list[bytes] = []
        self.numeric: list[tuple] = []
        self.categorical: list[tuple] = []

    def block(self, lo: int, hi: int) -> np.ndarray:
        out = np.ones(hi - lo, dtype=bool)
        for mask in self.masks:
            out &= bitmask.to_bool(mask[lo // 8 : (hi + 7) // 8], hi - lo)
        for entry, fn in self.numeric:
            out &= fn(self.store.array(entry["values_key"])[lo:hi], self.store.array(entry["state_key"])[lo:hi])
        for entry, lut in self.categorical:
            codes = self.store.array(entry["codes_key"])[lo:hi]
            out &= lut[np.where(codes >= 0, codes, lut.size - 1)]
        return out

    def first(self, k: int, *, after: int | None = None, descending: bool = False) -> list[int]:
        """The first `k` matching idx in idx order (descending: from the top), strictly beyond `after`."""
        size = self.store.size
        found: list[int] = []
        if descending:
            top = size if after is None else max(0, min(size, after))
            starts = range((max(top, 1) - 1) // BLOCK * BLOCK, -1, -BLOCK)
        else:
            first_idx = 0 if after is None else after + 1
            starts = range(first_idx // BLOCK * BLOCK, size, BLOCK)
        for lo in starts:
            hi = min(size, lo + BLOCK)
            hits = np.flatnonzero(self.block(lo, hi)) + lo
            if descending:
                hits = hits[hits < top][::-1]
            else:
                hits = hits[hits >= first_idx]
            found += hits[: k - len(found)].tolist()
            if len(found) >= k:
                break
        return found

    def everything(self) -> bool:
        """Whether every sample matches (no tag, no condition): callers then skip the block masks."""
        return not (self.masks or self.numeric or self.categorical)

    def count(self) -> int:
        return sum(
            int(self.block(lo, min(self.store.size, lo + BLOCK)).sum()) for lo in range(0, self.store.size, BLOCK)
        )


def _sql_mask(dataset: Dataset, size: int, **where) -> bytes:
    """The idx set that select_samples picks, as a bitmask over 0..size-1 (one statement, no row per sample)."""
    sql, params = select_samples(dataset, **where).order_by().values("idx").query.sql_with_params()
    ((packed,),) = _packed(f"SELECT string_agg(int4send(idx::int), ''::bytea) FROM ({sql}) AS s", list(params))
    idx = np.frombuffer(bytes(packed or b""), dtype=">i4")
    bits = np.zeros(size, dtype=bool)
    bits[idx[idx < size]] = True
    return np.packbits(bits, bitorder="little").tobytes()


def match(dataset: Dataset, store: Store, *, tag=None, file_name=None, conditions=(), sql: bool = True) -> Match | None:
    """The filter as a Match over the store. What the columns cannot answer is asked of SQL once (as a bitmask),
    or, without `sql`, makes this return None (the caller then asks SQL for everything)."""
    out = Match(store, dataset.pk)
    if tag is not None:
        mask = bytes(resolve_tag(dataset, tag).bitmask)
        out.masks.append(mask + bytes(max(0, (store.size + 7) // 8 - len(mask))))
    conditions = list(conditions)
    known = fallbacks(dataset, [c.path for c in conditions])
    rest = []
    for cond in conditions:
        entry = store.fields.get(cond.path)
        if entry is None or not entry.get("kind"):
            rest.append(cond)
        elif entry["kind"] == "numeric":
            fn = _numeric_condition(cond, known.get(cond.path), entry["odd"])
            if fn is None:
                rest.append(cond)
            else:
                out.numeric.append((entry, fn))
        else:
            out.categorical.append((entry, _category_lut(cond, known.get(cond.path), store.categories(cond.path))))
    if file_name or rest:
        if not sql:
            return None
        out.masks.append(_sql_mask(dataset, store.size, file_name=file_name, conditions=rest))
    return out


def count(dataset: Dataset, *, tag=None, file_name=None, conditions=()) -> int | None:
    """How many samples match, read from the columns; None when they are stale or cannot answer (use SQL)."""
    if file_name or not conditions:
        return None  # a tag alone or a file name: SQL counts them without reading metadata
    store = fresh_store(dataset)
    if store is None:
        return None
    found = match(dataset, store, tag=tag, file_name=file_name, conditions=conditions, sql=False)
    return None if found is None else found.count()


# --- reading: histograms and colour columns ------------------------------------------------------------------


def _numeric_effective(values: np.ndarray, state: np.ndarray, fallback) -> np.ndarray:
    """The value a sample counts with: its number, the fallback when missing, NaN otherwise (as numeric_value)."""
    out = np.where(state == NUMBER, values, np.nan)
    if fallback is not None:
        out[state == MISSING] = fallback
    return out


def numeric_bounds(store: Store, path: str, fallback) -> tuple[float | None, float | None]:
    """min and max of the field's numbers, the fallback counted when some sample is missing."""
    entry = store.fields[path]
    lo = hi = None
    for start in range(0, store.size, BLOCK):
        end = min(store.size, start + BLOCK)
        v = _numeric_effective(
            store.array(entry["values_key"])[start:end], store.array(entry["state_key"])[start:end], fallback
        )
        v = v[~np.isnan(v)]
        if v.size:
            lo = float(v.min()) if lo is None else min(lo, float(v.min()))
            hi = float(v.max()) if hi is None else max(hi, float(v.max()))
    return lo, hi


def _category_codes(store: Store, path: str, fallback) -> tuple[list[str], int | None]:
    """The categories, with the fallback's text added when no sample has it; the fallback's code (or None)."""
    texts = list(store.categories(path))
    if fallback is None:
        return texts, None
    text = json.dumps(fallback)  # as category_key writes it
    try:
        return texts, texts.index(text)
    except ValueError:
        return [*texts, text], len(texts)


@dataclass
class Spec:
    """One field to count: a numeric one binned by `edges`, or a categorical one by value."""

    path: str
    fallback: object
    edges: np.ndarray | None = None


def grouped_counts(store: Store, specs: list[Spec], found: Match | None) -> tuple[list[dict], int]:
    """For each spec {bin or category text: (count, matched)}, None standing for the samples without a value,
    as the SQL path's GROUP BY gives them; and the matched count. One pass over the blocks: the filter is
    evaluated once per block for every field."""
    plans = []
    for spec in specs:
        entry = store.fields[spec.path]
        if entry["kind"] == "numeric":
            n = len(spec.edges) - 1
            plans.append(("numeric", entry, n, float(spec.edges[0]), float(spec.edges[1] - spec.edges[0]), None))
        else:
            texts, fallback_code = _category_codes(store, spec.path, spec.fallback)
            n = len(texts)
            plans.append(("categorical", entry, n, n if fallback_code is None else fallback_code, None, texts))
    counts = [np.zeros(p[2] + 1, dtype=np.int64) for p in plans]  # the last slot: no value
    hits = [np.zeros(p[2] + 1, dtype=np.int64) for p in plans]
    matched = 0
    for start in range(0, store.size, BLOCK):
        end = min(store.size, start + BLOCK)
        mask = None if found is None else found.block(start, end)
        if mask is not None:
            matched += int(mask.sum())
        for i, (kind, entry, n, a, width, _texts) in enumerate(plans):
            if kind == "numeric":
                v = _numeric_effective(
                    store.array(entry["values_key"])[start:end],
                    store.array(entry["state_key"])[start:end],
                    specs[i].fallback,
                )
                keys = np.full(v.shape, n, dtype=np.int64)
                ok = ~np.isnan(v)
                # floor((v - lo) / width) in float64, as PostgreSQL computes the bin in float8, then clamped.
                keys[ok] = np.clip(np.floor((v[ok] - a) / width), 0, n - 1).astype(np.int64)
            else:
                codes = np.asarray(store.array(entry["codes_key"])[start:end], dtype=np.int64)
                keys = np.where(codes >= 0, codes, a)
            counts[i] += np.bincount(keys, minlength=n + 1)
            if mask is not None:
                hits[i] += np.bincount(keys[mask], minlength=n + 1)
    out = []
    for (kind, _entry, n, _a, _w, texts), c, h in zip(plans, counts, hits):
        label = (lambda k: k) if kind == "numeric" else texts.__getitem__
        groups = {label(k): (int(c[k]), int(h[k])) for k in range(n) if c[k]}
        if c[n]:
            groups[None] = (int(c[n]), int(h[n]))
        out.append(groups)
    return out, (store.size if found is None else matched)


def categorical_groups(store: Store, path: str, fallback) -> dict:
    """{category text: count} over every sample, None for missing (the fallback counted as its value)."""
    (groups,), _n = grouped_counts(store, [Spec(path, fallback)], None)
    return {k: c for k, (c, _m) in groups.items()}


def numeric_value_blocks(store: Store, path: str, fallback):
    """The field as float64 per idx (its number, the fallback when missing, NaN otherwise), block by block."""
    entry = store.fields[path]
    for start in range(0, store.size, BLOCK):
        end = min(store.size, start + BLOCK)
        yield _numeric_effective(
            store.array(entry["values_key"])[start:end], store.array(entry["state_key"])[start:end], fallback
        )


def numeric_column_blocks(store: Store, path: str, fallback):
    """(min, max, blocks): the field as float32 per idx (NaN without a value), yielded block by block."""
    entry = store.fields[path]
    lo = hi = None

    def block(start: int) -> np.ndarray:
        end = min(store.size, start + BLOCK)
        v = _numeric_effective(
            store.array(entry["values_key"])[start:end], store.array(entry["state_key"])[start:end], fallback
        )
        with np.errstate(over="ignore"):  # past float32's range: inf, as the SQL path gives
            return v.astype(np.float32)

    for start in range(0, store.size, BLOCK):
        v = block(start)
        v = v[np.isfinite(v)]
        if v.size:
            lo = float(v.min()) if lo is None else min(lo, float(v.min()))
            hi = float(v.max()) if hi is None else max(hi, float(v.max()))
    return lo, hi, (block(start) for start in range(0, store.size, BLOCK))


def category_column_blocks(store: Store, path: str, fallback, keep: int):
    """(categories, blocks): int16 codes per idx of the `keep` most frequent values, the rest "other", -1 missing."""
    groups = categorical_groups(store, path, fallback)
    groups.pop(None, None)
    ranked = sorted(groups, key=lambda t: (-groups[t], t))
    kept = ranked[:keep]
    texts, fallback_code = _category_codes(store, path, fallback)
    lut = np.full(len(texts) + 1, -1, dtype=np.int16)  # the last slot: missing without a fallback
    position = {t: i for i, t in enumerate(texts)}
    for text in ranked[keep:]:
        lut[position[text]] = len(kept)
    for code, text in enumerate(kept):
        lut[position[text]] = code
    missing_code = len(texts) if fallback_code is None else fallback_code
    entry = store.fields[path]

    def block(start: int) -> np.ndarray:
        codes = np.asarray(store.array(entry["codes_key"])[start : min(store.size, start + BLOCK)], dtype=np.int64)
        return lut[np.where(codes >= 0, codes, missing_code)]

    categories = [json.loads(t) for t in kept] + (["other"] if len(ranked) > len(kept) else [])
    return categories, (block(start) for start in range(0, store.size, BLOCK))


# --- the samples a filter matches, as a bitmask ----------------------------------------------------------------


def filter_mask(dataset: Dataset, *, tag=None, file_name=None, conditions=()) -> bytes:
    """The samples the filter (select_samples' arguments) matches as a bitmask over idx (bit i of byte i/8, least
    significant first), for the map's highlight and for exports of a filter or a saved view. From the column store
    when it is fresh (what it cannot answer is one SQL statement), else one SQL statement; never a row per sample
    in Python on PostgreSQL."""
    conditions = list(conditions)
    store = fresh_store(dataset) if conditions else None
    if store is not None:
        found = match(dataset, store, tag=tag, file_name=file_name, conditions=conditions)
        bits = np.zeros(store.size, dtype=bool)
        for lo in range(0, store.size, BLOCK):
            hi = min(store.size, lo + BLOCK)
            bits[lo:hi] = found.block(lo, hi)
        return np.packbits(bits, bitorder="little").tobytes()
    size = Dataset.objects.filter(pk=dataset.pk).values_list("next_idx", flat=True).first() or 0
    if supported():
        return _sql_mask(dataset, size, tag=tag, file_name=file_name, conditions=conditions)
    indices = select_samples(dataset, tag=tag, file_name=file_name, conditions=conditions).values_list("idx", flat=True)
    return bitmask.from_indices(list(indices), size)


# --- sorting by a numeric field with a filter -----------------------------------------------------------------

MAX_SORT_CANDIDATES = 1_000


def sort_candidates(
    found: Match, path: str, fallback, *, descending: bool, position: dict | None, backwards: bool, k: int
) -> list[int] | None:
    """The idx of a superset of the next `k` matching samples in the order of a sort by the numeric field `path`
    (missing values last, ties by idx; walking backwards for a `previous` page), strictly after the cursor
    `position` ({"k": the value's JSON text, "i": idx}); None when the columns cannot tell (SQL answers then).

    The float64 column orders like the exact JSON numbers except between numbers that round to one float, so
    every row whose float ties the cursor's, or ties the last one taken, is taken too: SQL then orders the
    candidates exactly and keeps `k`. None for a field with values of another type, a fallback that is not a
    number, or more than MAX_SORT_CANDIDATES candidates (a field with few distinct values)."""
    entry = found.store.fields.get(path)
    if not entry or entry.get("kind") != "numeric" or entry.get("odd"):
        return None
    if fallback is not None and (isinstance(fallback, bool) or not isinstance(fallback, (int, float))):
        return None
    cursor_missing, cursor_value = False, None
    if position is not None:
        key = position.get("k")
        if key is None or key == "null":
            cursor_missing = True
        else:
            value = json.loads(key)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return None
            cursor_value = float(value)
    idx_parts, value_parts = [], []
    for lo in range(0, found.store.size, BLOCK):
        hi = min(found.store.size, lo + BLOCK)
        hits = np.flatnonzero(found.block(lo, hi))
        values = _numeric_effective(
            found.store.array(entry["values_key"])[lo:hi][hits],
            found.store.array(entry["state_key"])[lo:hi][hits],
            fallback,
        )
        idx_parts.append(hits + lo)
        value_parts.append(values)
    idx = np.concatenate(idx_parts) if idx_parts else np.zeros(0, dtype=np.int64)
    values = np.concatenate(value_parts) if value_parts else np.zeros(0)
    missing = np.isnan(values)
    # The walk's order, ascending: forward (present by value then missing, ties by idx), or its exact reverse.
    sign = -1.0 if backwards else 1.0
    walk_value = np.where(missing, 0.0, values) * (-1.0 if descending else 1.0) * sign
    walk_idx = idx * int(sign)
    groups = ["missing", "present"] if backwards else ["present", "missing"]
    if position is not None:
        groups = groups[groups.index("missing" if cursor_missing else "present") :]
    need, taken = k, []
    for group in groups:
        in_cursor_group = position is not None and group == ("missing" if cursor_missing else "present")
        if group == "missing":
            rows = np.flatnonzero(missing)
            if in_cursor_group:
                rows = rows[walk_idx[rows] > int(sign) * int(position["i"])]
            rows = rows[np.argsort(walk_idx[rows], kind="stable")][:need]
            taken.append(rows)
            need -= rows.size
        else:
            rows = np.flatnonzero(~missing)
            ties = 0
            if in_cursor_group:
                start = cursor_value * (-1.0 if descending else 1.0) * sign
                rows = rows[walk_value[rows] >= start]
                ties = int(np.count_nonzero(walk_value[rows] == start))
            want = need + ties
            if rows.size > want:
                last = np.partition(walk_value[rows], want - 1)[want - 1]
                rows = rows[walk_value[rows] <= last]
                need = 0
            else:
                need -= rows.size - ties
            taken.append(rows)
        if need <= 0 or sum(part.size for part in taken) > MAX_SORT_CANDIDATES:
            break
    chosen = np.concatenate(taken) if taken else np.zeros(0, dtype=np.int64)
    if chosen.size > MAX_SORT_CANDIDATES:
        return None
    return idx[chosen].tolist()


# --- sorting by any field, ties and all ---------------------------------------------------------------------

EXACT_DIGITS = 15  # a decimal of at most this many significant digits is the only one of them its float64 holds


def _exact_number(value) -> float | None:
    """`value` (a JSON number's text or a number) as the float64 that orders it exactly among the column's numbers
    (a field without `inexact` numbers), or None when its float64 may stand for several decimals."""
    try:
        number = Decimal(value if isinstance(value, str) else json.dumps(value))
    except (InvalidOperation, TypeError, ValueError):
        return None
    if not number.is_finite():
        return None
    if number and not (Decimal("1e-300") < abs(number) < Decimal("1e300")):
        return None
    if len(number.normalize().as_tuple().digits) > EXACT_DIGITS:
        return None
    return float(number)


def _category_ranks(categories: list[str], others: list[str]) -> list[int]:
    """The rank (dense, from 0) of each of the categories' JSON texts and then of `others` (JSON texts) in
    PostgreSQL's jsonb order, the very order of the SQL sort (strings in the database's collation)."""
    rows = _packed(
        "SELECT (dense_rank() OVER (ORDER BY u.x::jsonb))::int - 1 FROM unnest(%s::text[]) WITH ORDINALITY AS u(x, o) "
        "ORDER BY u.o",
        [[*categories, *others]],
    )
    return [r[0] for r in rows]


def _first_after(keys: np.ndarray, idx: np.ndarray | None, k: int, after) -> tuple:
    """The `k` smallest keys strictly after `after`, in order: (keys, idx). With `idx`, pairs (float key, idx), ties
    by idx; without, the keys are unique int64 (rank and idx in one). NaN is never a key."""
    if after is not None:
        if idx is None:
            keep = keys > after
        else:
            keep = (keys > after[0]) | ((keys == after[0]) & (idx > after[1]))
        keys = keys[keep]
        idx = None if idx is None else idx[keep]
    if keys.size > k:
        if idx is None:
            keys = np.partition(keys, k - 1)[:k]
        else:
            last = np.partition(keys, k - 1)[k - 1]
            below = np.flatnonzero(keys < last)
            tied = np.flatnonzero(keys == last)
            need = k - below.size
            if need < tied.size:
                tied = tied[np.argpartition(idx[tied], need - 1)[:need]]
            chosen = np.concatenate([below, tied])
            keys, idx = keys[chosen], idx[chosen]
    if idx is None:
        return np.sort(keys), None
    order = np.lexsort((idx, keys))
    return keys[order], idx[order]


def sorted_page(
    found: Match, path: str, fallback, *, descending: bool, position: dict | None, backwards: bool, k: int
) -> list[int] | None:
    """The idx of the next `k` matching samples in the order of a sort by the field `path` (Sort.ordering: the
    value, missing values last, ties by idx ascending; walking backwards for a `previous` page), strictly after the
    cursor `position` ({"k": the value's JSON text, "i": idx}); None when the columns cannot order the field
    exactly (SQL answers then). Any number of ties: every block's first `k` are kept, then the first `k` of those.

    A categorical field orders by its categories' ranks in jsonb order (asked of PostgreSQL once per request), rank
    and idx in one int64; a numeric one by its float64 values when no number has more than EXACT_DIGITS significant
    digits (then distinct numbers have distinct floats in the same order) and the field holds numbers only."""
    store = found.store
    entry = store.fields.get(path)
    if not entry or not entry.get("kind"):
        return None
    cursor_missing = position is not None and position.get("k") in (None, "null")
    numeric = entry["kind"] == "numeric"
    if numeric:
        if entry.get("odd") or entry.get("inexact", 1):
            return None  # values of another type, or numbers their floats cannot tell apart (or an older build)
        if fallback is not None and (isinstance(fallback, bool) or _exact_number(fallback) is None):
            return None
        cursor = None
        if position is not None and not cursor_missing:
            try:
                value = json.loads(position["k"])
            except ValueError:
                return None
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return None  # another JSON type in a cursor of a numbers-only field: SQL orders it
            cursor = _exact_number(position["k"])
            if cursor is None:
                return None
    else:
        texts = store.categories(path)
        extra = [json.dumps(fallback)] if fallback is not None else []
        if position is not None and not cursor_missing:
            extra.append(position["k"])
        ranks = np.asarray(_category_ranks(texts, extra), dtype=np.int64)
        top = int(ranks.max(initial=0)) + 1  # missing values (without a fallback) come after every rank
        if descending:
            ranks = (top - 1) - ranks
        cursor = int(ranks[-1]) if position is not None and not cursor_missing else None
        # Per code (and, last, a missing value): its rank, the fallback's when missing, else `top`; times the size,
        # so that adding the idx gives one int64 that orders by rank, then idx.
        lut = np.append(ranks[: len(texts)], ranks[len(texts)] if fallback is not None else top) * store.size
    # The walk's order as ascending keys: the value (negated when descending), missing last; walking backwards,
    # the exact reverse (negated).
    sign = -1.0 if descending else 1.0
    flip = -1 if backwards else 1
    after = None
    if position is not None:
        at = int(position["i"])
        if numeric:
            after = ((np.inf if cursor_missing else cursor * sign) * flip, at * flip)
        else:
            after = ((top if cursor_missing else cursor) * store.size + at) * flip
    everything = found.everything()
    kept_keys, kept_idx = [np.zeros(0, dtype=np.float64 if numeric else np.int64)], [np.zeros(0, dtype=np.int64)]
    for lo in range(0, store.size, BLOCK):
        hi = min(store.size, lo + BLOCK)
        hits = slice(None) if everything else np.flatnonzero(found.block(lo, hi))
        idx = np.arange(lo, hi, dtype=np.int64) if everything else hits + lo
        if numeric:
            values = _numeric_effective(
                store.array(entry["values_key"])[lo:hi][hits], store.array(entry["state_key"])[lo:hi][hits], fallback
            )
            keys = np.where(np.isnan(values), np.inf, values * sign)
            block_keys, block_idx = _first_after(keys * flip, idx * flip, k, after)
            kept_idx.append(block_idx)
        else:
            codes = store.array(entry["codes_key"])[lo:hi][hits]
            keys = lut.take(codes, mode="wrap") + idx  # a code of -1 (missing) takes the last slot
            block_keys, _none = _first_after(keys * flip, None, k, after)
        kept_keys.append(block_keys)
    if numeric:
        _keys, idx = _first_after(np.concatenate(kept_keys), np.concatenate(kept_idx), k, None)
        return (idx * flip).tolist()
    keys, _none = _first_after(np.concatenate(kept_keys), None, k, None)
    return ((keys * flip) % store.size).tolist()
