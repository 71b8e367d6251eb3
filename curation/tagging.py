"""Tags: create them (from ids, file names, a filter, arithmetic, a sampling run), delete them, export them.

A tag is an immutable bitmask over sample idx. Tag names are printable text of 1-200 characters,
without control characters or surrounding spaces, unique in their dataset (case-sensitive). Lightly's
client accepts a narrower set (letters, digits and ` .:;=@_-`), so names meant for Lightly tooling
should keep to that. `initial-tag` (the first upload) cannot be deleted: other tags, runs and
Lightly clients rely on it as the dataset's root.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import TextField
from django.db.models.expressions import RawSQL
from django.urls import reverse

from curation import bitmask, columns, signing
from curation.access import resolve_tag
from curation.errors import DomainError
from curation.filters import Sort, parse_filter, select_samples
from curation.metadata import flatten, get_path
from curation.models import INITIAL_TAG, Dataset, Sample, Tag, TagOrigin
from curation.predictions import label_studio_predictions
from winnow.values import bad_value

NAME_MAX = 200
LOOKUP_BATCH = 5000
EXPORT_BATCH = 5000
EXPORT_BLOCK_BYTES = 64 * 1024
MAX_OPERANDS = 16
MAX_CSV_METADATA_COLUMNS = 500
OPERATIONS = {"union": bitmask.union, "intersection": bitmask.intersection, "difference": bitmask.difference}


def _unknown(kind: str, values: list) -> str:
    shown = ", ".join(repr(v) for v in values[:10])
    more = f" and {len(values) - 10} more" if len(values) > 10 else ""
    return f"{len(values)} unknown {kind}: {shown}{more}"


# --- names -----------------------------------------------------------------------------------------


def name_error(name) -> str | None:
    if not isinstance(name, str):
        return "must be a string"
    if not name.strip():
        return "must not be empty"
    if len(name) > NAME_MAX:
        return f"must be at most {NAME_MAX} characters"
    if name != name.strip():
        return "must not start or end with spaces"
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        return "must not contain control characters"
    return None


def check_name(dataset: Dataset, name) -> str:
    """The name if it is valid and free in the dataset, else a DomainError on `name`."""
    problem = name_error(name)
    if problem:
        raise DomainError(f"tag name {problem}", "name")
    if Tag.objects.filter(dataset=dataset, name=name).exists():
        raise DomainError(f"a tag named {name!r} already exists in this dataset", "name")
    return name


# --- creating --------------------------------------------------------------------------------------


def _to_mask(indices_or_mask) -> bytes:
    if isinstance(indices_or_mask, (bytes, bytearray, memoryview)):
        return bytes(indices_or_mask)
    array = np.asarray(indices_or_mask)
    if array.dtype == bool:
        return np.packbits(array, bitorder="little").tobytes()
    return bitmask.from_indices(array.astype(np.int64, copy=False))


def create_tag(
    dataset: Dataset,
    name: str,
    indices_or_mask,
    *,
    origin: str,
    origin_detail: dict,
    parent: Tag | None = None,
    creator=None,
) -> Tag:
    """Save a tag over sample idx values (an iterable of ints, a bool array or a bitmask's bytes).

    Raises a DomainError for a bad or taken name, a parent of another dataset, or an empty tag.
    """
    check_name(dataset, name)
    problem = bad_value(origin_detail)
    if problem:
        raise DomainError(f"cannot record how the tag was made: {problem}")
    if parent is not None and parent.dataset_id != dataset.id:
        raise DomainError(f"no tag with id {parent.pk!r} in this dataset", "parent")
    mask = _to_mask(indices_or_mask)
    count = bitmask.count(mask)
    if count == 0:
        raise DomainError("the tag would be empty: no sample matches")
    try:
        with transaction.atomic():
            return Tag.objects.create(
                dataset=dataset,
                name=name,
                bitmask=mask,
                count=count,
                origin=origin,
                origin_detail=origin_detail,
                parent=parent,
                creator=creator,
            )
    except IntegrityError:  # another request took the name between the check and the insert
        raise DomainError(f"a tag named {name!r} already exists in this dataset", "name") from None


def _string_list(values, field: str) -> list[str]:
    if not isinstance(values, list) or not values:
        raise DomainError("must be a non-empty list of strings", field)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise DomainError(f"item {i} must be a string, not {value!r}", field)
    return list(dict.fromkeys(values))  # duplicates name the same sample once


def _idx_by(dataset: Dataset, field: str, values: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for start in range(0, len(values), LOOKUP_BATCH):
        chunk = values[start : start + LOOKUP_BATCH]
        lookup = {f"{field}__in": chunk}
        found.update(Sample.objects.filter(dataset=dataset, **lookup).values_list(field, "idx"))
    return found


def _tag_from_lookup(dataset: Dataset, name: str, values, field: str, key: str, what: str, parent, creator) -> Tag:
    """The samples named by `values` of the sample field `field` (sent as `key`); every one must exist."""
    check_name(dataset, name)
    values = _string_list(values, key)
    found = _idx_by(dataset, field, values)
    missing = [v for v in values if v not in found]
    if missing:
        raise DomainError(_unknown(what, missing), key)
    return create_tag(
        dataset,
        name,
        list(found.values()),
        origin=TagOrigin.SELECTION,
        origin_detail={"method": key, "count": len(values)},
        parent=parent,
        creator=creator,
    )


def tag_from_sample_ids(dataset: Dataset, name: str, sample_ids, *, parent: Tag | None = None, creator=None) -> Tag:
    return _tag_from_lookup(dataset, name, sample_ids, "id", "sample_ids", "sample id(s)", parent, creator)


def tag_from_file_names(dataset: Dataset, name: str, file_names, *, parent: Tag | None = None, creator=None) -> Tag:
    return _tag_from_lookup(dataset, name, file_names, "file_name", "file_names", "file name(s)", parent, creator)


MAX_EXCLUDED = 100_000


def _excluded_idx(dataset: Dataset, sample_ids) -> np.ndarray:
    """The idx of `exclude_sample_ids` (samples a curator deselected after "select all in filter")."""
    if not isinstance(sample_ids, list) or not all(isinstance(x, str) for x in sample_ids):
        raise DomainError("must be a list of sample ids", "exclude_sample_ids")
    if len(sample_ids) > MAX_EXCLUDED:
        raise DomainError(f"at most {MAX_EXCLUDED} sample ids", "exclude_sample_ids")
    wanted = set(sample_ids)
    found = dict(Sample.objects.filter(dataset=dataset, pk__in=wanted).values_list("pk", "idx"))
    unknown = sorted(wanted - found.keys())
    if unknown:
        raise DomainError(f"no sample with id {unknown[0]!r} in this dataset", "exclude_sample_ids")
    return np.fromiter(found.values(), dtype=np.int64, count=len(found))


def tag_from_filter(
    dataset: Dataset,
    name: str,
    filter_obj,
    *,
    parent: Tag | None = None,
    creator=None,
    exclude_sample_ids=None,
) -> Tag:
    """The samples matching a metadata filter (see curation.filters), less `exclude_sample_ids`; the parent
    defaults to the filter's tag."""
    check_name(dataset, name)
    if not isinstance(filter_obj, dict):
        raise DomainError("must be an object with 'tag', 'file_name' and/or 'conditions'", "filter")
    excluded = _excluded_idx(dataset, exclude_sample_ids) if exclude_sample_ids is not None else None
    try:
        parsed = parse_filter(filter_obj)
        filter_tag = parsed.get("tag")
        if isinstance(filter_tag, str):
            filter_tag = resolve_tag(dataset, filter_tag, "filter.tag")
            parsed["tag"] = filter_tag
        selected = _filter_mask(dataset, parsed)
    except DomainError as exc:
        # curation.filters already names its errors "filter..."; anything else gets that prefix.
        if all(str(key).startswith("filter") for key in exc.errors):
            raise
        raise DomainError.within("filter", exc) from None
    if excluded is not None and len(excluded):
        selected = bitmask.difference(selected, bitmask.from_indices(excluded)).rstrip(b"\0")
    if parent is None and isinstance(filter_tag, Tag):
        parent = filter_tag
    return create_tag(
        dataset,
        name,
        selected,
        origin=TagOrigin.FILTER,
        origin_detail={"filter": filter_obj},
        parent=parent,
        creator=creator,
    )


def _filter_mask(dataset: Dataset, parsed: dict) -> bytes:
    """The samples a parsed filter selects, as a bitmask without trailing zero bytes: read from the metadata
    column store when it is fresh and the filter has conditions (what the columns cannot answer is asked of SQL
    once), else from SQL."""
    store = columns.fresh_store(dataset) if parsed.get("conditions") else None
    if store is not None:
        found = columns.match(dataset, store, **parsed)
        blocks = (found.block(lo, min(store.size, lo + columns.BLOCK)) for lo in range(0, store.size, columns.BLOCK))
        # BLOCK is a multiple of 8: each block packs into whole bytes of the mask.
        return b"".join(np.packbits(bits, bitorder="little").tobytes() for bits in blocks).rstrip(b"\0")
    indices = np.fromiter(select_samples(dataset, **parsed).values_list("idx", flat=True), dtype=np.int64)
    return bitmask.from_indices(indices) if indices.size else b""


def tag_from_operation(
    dataset: Dataset, name: str, operation, tag_ids, *, parent: Tag | None = None, creator=None
) -> Tag:
    """Union, intersection or difference of 2-16 tags, applied left to right; parent defaults to the first."""
    check_name(dataset, name)
    if not isinstance(operation, str) or operation not in OPERATIONS:
        raise DomainError(f"{operation!r} is not one of: {', '.join(OPERATIONS)}", "operation")
    if not isinstance(tag_ids, list) or not 2 <= len(tag_ids) <= MAX_OPERANDS:
        raise DomainError(f"must be a list of 2 to {MAX_OPERANDS} tag ids", "tags")
    tags = [resolve_tag(dataset, tag_id, "tags") for tag_id in tag_ids]
    mask = bytes(tags[0].bitmask)
    for tag in tags[1:]:
        mask = OPERATIONS[operation](mask, bytes(tag.bitmask))
    return create_tag(
        dataset,
        name,
        mask,
        origin=TagOrigin.ARITHMETIC,
        origin_detail={"operation": operation, "tags": [t.pk for t in tags], "tag_names": [t.name for t in tags]},
        parent=parent or tags[0],
        creator=creator,
    )


# --- initial-tag -----------------------------------------------------------------------------------


def create_initial_tag(dataset_id: str, size: int, creator=None) -> Tag:
    """`initial-tag` over idx 0..size-1, made by a dataset's first registration (under its row lock)."""
    return Tag.objects.create(
        dataset_id=dataset_id,
        name=INITIAL_TAG,
        bitmask=bitmask.ones(size),
        count=size,
        origin=TagOrigin.UPLOAD,
        origin_detail={},
        creator=creator,
    )


def set_initial_tag_count(dataset_id: str, size: int, creator=None) -> None:
    """Registration moved next_idx to `size`: initial-tag (every sample) now counts `size` samples.

    O(1): the stored bits are not rewritten; Tag.from_db gives initial-tag every sample's bits when it
    is loaded. Call under the dataset's row lock, after the samples are inserted.
    """
    if not Tag.objects.filter(dataset_id=dataset_id, name=INITIAL_TAG).update(count=size):
        create_initial_tag(dataset_id, size, creator)


def delete_tag(tag: Tag) -> None:
    if tag.name == INITIAL_TAG:
        raise DomainError(f"{INITIAL_TAG} holds the dataset's first upload and cannot be deleted", "tag")
    tag.delete()


def sample_ids_of(dataset: Dataset, tag: Tag) -> list[str]:
    """The public ids of the tag's samples, in idx order."""
    return [row[0] for row in _tag_rows(dataset, tag, ("id",))]


# --- export ----------------------------------------------------------------------------------------


def _tag_rows(dataset: Dataset, tag: Tag, fields: tuple, sort: Sort | None = None):
    """The tag's samples as value tuples in idx order (or `sort`'s): one bounded query per batch, no model instances.

    PostgreSQL reads each batch as an idx range tested against that range's bytes of the bitmask: a
    walk along the (dataset, idx) index, about twice as fast as probing it once per idx of an IN list.
    """
    if connection.vendor == "postgresql":
        columns = [Sample._meta.get_field(name).column for name in fields]
        converters = [
            _json_value if Sample._meta.get_field(name).get_internal_type() == "JSONField" else None for name in fields
        ]
        for batch in _pg_tag_batches(dataset, tag, [connection.ops.quote_name(c) for c in columns], [], sort):
            if any(converters):
                batch = [tuple(v if c is None else c(v) for c, v in zip(converters, row)) for row in batch]
            yield from batch
        return
    if sort is not None:
        for batch in _sorted_idx_batches(dataset, tag, sort):
            rows = dict(_by_first(Sample.objects.filter(dataset=dataset, idx__in=batch).values_list("idx", *fields)))
            yield from (rows[idx] for idx in batch)
        return
    mask = bytes(tag.bitmask)
    indices = bitmask.to_indices(mask)
    for start in range(0, len(indices), EXPORT_BATCH):
        chunk = indices[start : start + EXPORT_BATCH]
        rows = Sample.objects.filter(dataset=dataset, idx__in=chunk.tolist()).order_by("idx")
        yield from rows.values_list(*fields)


def _json_value(text):
    """A jsonb column's value as the ORM gives it (the raw cursor hands jsonb over as its text)."""
    return None if text is None else json.loads(text)


def _by_first(rows):
    return ((row[0], row[1:]) for row in rows)


def _sorted_idx_batches(dataset: Dataset, tag: Tag, sort: Sort):
    """The tag's idx in `sort`'s order (the sample list's: missing values last, ties by idx), EXPORT_BATCH at a time
    (SQLite's path; on PostgreSQL _pg_tag_batches reads whole rows from the same ORDER BY).

    One ORDER BY read through _cursor_batches."""
    qs = select_samples(dataset, tag=tag).order_by(*sort.ordering()).values_list("idx")
    for batch in _cursor_batches(qs):
        yield [row[0] for row in batch]


def _cursor_batches(qs):
    """The rows of the values_list `qs`, EXPORT_BATCH at a time, read through one chunked cursor (server-side on
    PostgreSQL) in a read transaction: the process holds one batch whatever the size."""
    sql, params = qs.query.sql_with_params()
    with transaction.atomic(), connection.chunked_cursor() as cursor:
        cursor.execute(sql, params)
        while batch := cursor.fetchmany(EXPORT_BATCH):
            yield batch


def _pg_tag_batches(dataset: Dataset, tag: Tag, select: list[str], params: list, sort: Sort | None = None):
    """PostgreSQL: the tag's samples in idx order (or `sort`'s) as lists of raw row tuples, one bounded query per
    batch of EXPORT_BATCH samples. `select` holds SQL expressions over the sample table's columns (with `params` for
    their %s); jsonb comes back as its text. Each batch reads an idx range tested against that range's bytes
    of the bitmask: a walk along the (dataset, idx) index, about twice as fast as probing it once per idx.
    Sorted, the rows come from one ORDER BY through a server-side cursor, as _sorted_idx_batches reads idx."""
    if sort is not None:
        columns, rest = {}, list(params)
        for i, expression in enumerate(select):
            count = expression.count("%s")
            columns[f"export_{i}"] = RawSQL(expression, rest[:count], output_field=TextField())
            rest = rest[count:]
        qs = select_samples(dataset, tag=tag).order_by(*sort.ordering()).annotate(**columns).values_list(*columns)
        yield from _cursor_batches(qs)
        return
    table = connection.ops.quote_name(Sample._meta.db_table)
    mask = bytes(tag.bitmask)
    indices = bitmask.to_indices(mask)
    sql = (
        f"SELECT {', '.join(select)} FROM {table} "
        "WHERE dataset_id = %s AND idx >= %s AND idx <= %s AND get_bit(%s::bytea, idx - %s) = 1 ORDER BY idx"
    )
    for start in range(0, len(indices), EXPORT_BATCH):
        first, last = int(indices[start]) // 8 * 8, int(indices[min(len(indices), start + EXPORT_BATCH) - 1])
        with connection.cursor() as cursor:
            cursor.execute(sql, [*params, dataset.pk, first, last, mask[first // 8 : last // 8 + 1], first])
            yield cursor.fetchall()


def _safe_filename(name: str) -> str:
    return (re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "tag")[:100]


# A text cell starting with one of these is a formula to a spreadsheet: OWASP's CSV-injection advice is to
# prefix it with a single quote. Numbers are written as they are (-3.5 is a number, not a formula).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _text_cell(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return _text_cell(json.dumps(value, separators=(",", ":")))
    if isinstance(value, str):
        return _text_cell(value)
    return str(value)


class _Echo:
    """csv.writer target that hands each formatted line back instead of buffering it."""

    def write(self, value):
        return value


BASE_COLUMNS = ("file_name", "sample_id", "idx", "width", "height")


def _csv_paths(dataset: Dataset, tag: Tag) -> list[str]:
    """Metadata columns: the configured fields, else every leaf path in the tag's metadata (capped)."""
    configured = list(dataset.metadata_fields.order_by("path").values_list("path", flat=True))
    if configured:
        return configured
    paths: set[str] = set()
    for (meta,) in _tag_rows(dataset, tag, ("metadata",)):
        if isinstance(meta, dict):
            paths.update(path for path, _ in flatten(meta))
    return sorted(paths)[:MAX_CSV_METADATA_COLUMNS]


def _export_csv(dataset: Dataset, tag: Tag, _base: str, _user, sort: Sort | None):
    paths = _csv_paths(dataset, tag)
    writer = csv.writer(_Echo())
    yield writer.writerow([*BASE_COLUMNS, *(_text_cell(f"metadata.{p}" if p in BASE_COLUMNS else p) for p in paths)])
    yield from (_pg_csv_rows if _text_from_postgres() else _decoded_csv_rows)(dataset, tag, paths, sort)


def _text_from_postgres() -> bool:
    """Whether exports take PostgreSQL's text of the metadata as far as it is already the export's (else each
    sample's metadata is decoded and formatted in Python: SQLite, and the reference the tests compare with)."""
    return connection.vendor == "postgresql"


def _decoded_csv_rows(dataset: Dataset, tag: Tag, paths: list[str], sort: Sort | None):
    """The CSV's sample lines from each sample's decoded metadata (SQLite; the reference _pg_csv_rows keeps to)."""
    writer = csv.writer(_Echo())
    for file_name, sample_id, idx, width, height, meta in _tag_rows(
        dataset, tag, ("file_name", "id", "idx", "width", "height", "metadata"), sort
    ):
        cells = [_text_cell(file_name), sample_id, idx, _cell(width), _cell(height)]
        for path in paths:
            try:
                cells.append(_cell(get_path(meta, path)))
            except KeyError:
                cells.append("")
        yield writer.writerow(cells)


def _json_text_cell(text: str | None) -> str:
    """_cell of the value PostgreSQL prints as the jsonb text `text` (None: no value at the path).

    What the ORM path does (json.loads, then _cell) without decoding more than it must: a string without
    escapes is its text between the quotes; an integer prints as PostgreSQL prints it; a number with a
    fraction goes through float as json.loads would; objects and arrays are decoded and re-encoded."""
    if text is None:
        return ""
    first = text[0]
    if first == '"':
        value = json.loads(text) if "\\" in text else text[1:-1]
        return "'" + value if value.startswith(FORMULA_STARTS) else value
    if first == "n":
        return ""
    if first == "t":
        return "true"
    if first == "f":
        return "false"
    if first == "{" or first == "[":
        return _text_cell(json.dumps(json.loads(text), separators=(",", ":")))
    if "." in text or "e" in text or "E" in text:
        return repr(float(text))
    return str(int(text))


def _pg_csv_rows(dataset: Dataset, tag: Tag, paths: list[str], sort: Sort | None):
    """The CSV's sample lines, a batch at a time: PostgreSQL extracts each path's jsonb (as get_path walks it: into
    objects only), so no sample's whole metadata is decoded in Python."""
    select, params = ["file_name", "id", "idx", "width", "height"], []
    for path in paths:
        segments = path.split(".")
        select.append("(metadata" + " -> %s" * len(segments) + ")::text")
        params += segments
    cell = _json_text_cell
    for batch in _pg_tag_batches(dataset, tag, select, params, sort):
        out = io.StringIO()
        csv.writer(out).writerows(
            [
                _text_cell(row[0]),
                row[1],
                row[2],
                "" if row[3] is None else row[3],
                "" if row[4] is None else row[4],
                *map(cell, row[5:]),
            ]
            for row in batch
        )
        yield out.getvalue()


def _export_filenames(dataset: Dataset, tag: Tag, _base: str, _user, sort: Sort | None):
    for (file_name,) in _tag_rows(dataset, tag, ("file_name",), sort):
        yield file_name + "\n"


def _json_list(items):
    yield "["
    first = True
    for item in items:
        yield ("\n" if first else ",\n") + json.dumps(item, allow_nan=False)
        first = False
    yield "\n]\n"


def _image_url(dataset: Dataset, base: str, user):
    """sample id, file name -> where an export points at the sample's pixels.

    A signed link that works without a token for WINNOW_EXPORT_URL_SECONDS (Label Studio cannot send
    one) to the original (`full`) or the thumbnail (`thumbnails`); `meta` datasets keep no pixels,
    so None. The path is reversed once: an export signs one link per sample.
    """
    kind = dataset.pixel_kind
    if kind is None:
        return lambda sample_id, file_name: None
    head, tail = reverse(f"sample-{kind}-signed", args=[dataset.id, "-"]).rsplit("/-/", 1)
    ttl = settings.WINNOW_EXPORT_URL_SECONDS
    return lambda sample_id, file_name: base + signing.sign_path("GET", f"{head}/{sample_id}/{tail}", {}, ttl, user)


def _export_json(dataset: Dataset, tag: Tag, base: str, user, sort: Sort | None):
    url = _image_url(dataset, base, user)
    if _text_from_postgres():
        return _pg_json_list(dataset, tag, _json_item_text(url), sort)
    rows = _tag_rows(dataset, tag, ("id", "idx", "file_name", "width", "height", "metadata"), sort)
    return _json_list(
        {
            "id": sid,
            "idx": idx,
            "file_name": name,
            "width": w,
            "height": h,
            "image_url": url(sid, name),
            "metadata": meta,
        }
        for sid, idx, name, w, h, meta in rows
    )


def _export_label_studio(dataset: Dataset, tag: Tag, base: str, user, sort: Sort | None):
    url = _image_url(dataset, base, user)
    # Each prediction task's output for the sample, as pre-annotations (curation.predictions).
    predictions = label_studio_predictions(dataset)
    if _text_from_postgres() and not dataset.prediction_tasks.filter(is_labels=False).exists():
        return _pg_json_list(dataset, tag, _label_studio_item_text(url, predictions), sort)
    rows = _tag_rows(dataset, tag, ("id", "idx", "file_name", "width", "height", "metadata"), sort)
    return _json_list(_label_studio_item(url, predictions, *row) for row in rows)


def _label_studio_item(url, predictions, sid, idx, name, w, h, meta) -> dict:
    # Metadata keys are spread into `data`; `image`, `file_name` and `sample_id` win over same-named keys.
    # A `meta` dataset keeps no pixels: its task points at the file name, for a Label Studio storage to resolve.
    return {
        "id": idx,
        "data": {
            **(meta if isinstance(meta, dict) else {}),
            "image": url(sid, name) or name,
            "file_name": name,
            "sample_id": sid,
        },
        "predictions": predictions(idx, w, h, meta),
    }


# --- export: JSON text straight from PostgreSQL's ----------------------------------------------------------
#
# The JSON exports are what json.dumps(item, allow_nan=False) writes for each sample. Decoding every sample's
# metadata and encoding it again is most of their cost, so on PostgreSQL the metadata's jsonb text is used as it
# is wherever it is already exactly what json.dumps would write (see _dumped_metadata), and the item around it
# is written piece by piece with json's own string encoder.

_dumps = json.JSONEncoder(allow_nan=False).encode  # json.dumps(value, allow_nan=False), the encoder made once
_quoted = json.encoder.encode_basestring_ascii  # json.dumps of a str
# A number with a fraction in PostgreSQL's jsonb text (it never prints exponents).
_FRACTION = re.compile(r"-?[0-9]+\.[0-9]+")


def _dumped_metadata(text: str) -> str:
    """json.dumps(json.loads(text), allow_nan=False) for PostgreSQL's jsonb text, mostly without decoding it.

    jsonb prints `{"k": v, ...}` with json.dumps' separators and the keys in the order json.loads keeps. The
    text is json.dumps' own unless a string holds an escape, a non-ASCII character or DEL (json.dumps escapes
    those differently or not at all), or a number with a fraction prints otherwise in Python (0.00001, 1.50).
    Without backslashes no quote is escaped, so a fraction is inside a string exactly when an odd number of
    quotes precede it; a fraction inside a string does not matter."""
    if text.isascii() and "\\" not in text and "\x7f" not in text:
        for found in _FRACTION.finditer(text):
            number = found.group()
            if repr(float(number)) != number and text.count('"', 0, found.start()) % 2 == 0:
                break
        else:
            return text
    return _dumps(json.loads(text))


def _number_or_null(value) -> str:
    return "null" if value is None else str(int(value))


def _json_item_text(url):
    """(id, idx, file_name, width, height, metadata text) -> the json export's item, as json.dumps writes it."""

    def item(sid, idx, name, w, h, meta):
        link = url(sid, name)
        return (
            f'{{"id": {_quoted(sid)}, "idx": {int(idx)}, "file_name": {_quoted(name)}, '
            f'"width": {_number_or_null(w)}, "height": {_number_or_null(h)}, '
            f'"image_url": {"null" if link is None else _quoted(link)}, "metadata": {_dumped_metadata(meta)}}}'
        )

    return item


_LABEL_STUDIO_KEYS = ('"image": ', '"file_name": ', '"sample_id": ')


def _label_studio_item_text(url, predictions):
    """The label-studio export's item as json.dumps writes it, for a dataset without prediction tasks (so its
    `predictions` are empty). Metadata that is not an object, or that may hold one of the keys `data` sets
    itself, takes the dict path (its keys keep their place when overridden)."""

    def item(sid, idx, name, w, h, meta):
        if meta[0] != "{" or any(key in meta for key in _LABEL_STUDIO_KEYS):
            return _dumps(_label_studio_item(url, predictions, sid, idx, name, w, h, json.loads(meta)))
        body = _dumped_metadata(meta)[1:-1]
        link = url(sid, name) or name
        own = f'"image": {_quoted(link)}, "file_name": {_quoted(name)}, "sample_id": {_quoted(sid)}'
        return f'{{"id": {int(idx)}, "data": {{{body + ", " if body else ""}{own}}}, "predictions": []}}'

    return item


def _pg_json_list(dataset: Dataset, tag: Tag, item, sort: Sort | None):
    """_json_list of the tag's samples, each written by `item(id, idx, file_name, width, height, metadata text)`."""
    yield "["
    separator = "\n"
    for batch in _pg_tag_batches(
        dataset, tag, ["id", "idx", "file_name", "width", "height", "metadata::text"], [], sort
    ):
        if batch:
            yield separator + ",\n".join([item(*row) for row in batch])
            separator = ",\n"
    yield "\n]\n"


def _in_blocks(pieces):
    """The exporters' pieces (one per row, or one per database batch) as blocks of EXPORT_BLOCK_BYTES characters
    (the last may be shorter), so a large export is a few hundred writes to the socket instead of one per sample,
    and no write holds more than a block; memory stays one batch."""
    size, block, length = EXPORT_BLOCK_BYTES, [], 0
    for piece in pieces:
        block.append(piece)
        length += len(piece)
        if length >= size:
            text = "".join(block)
            whole = len(text) - len(text) % size
            for start in range(0, whole, size):
                yield text[start : start + size]
            rest = text[whole:]
            block, length = ([rest], len(rest)) if rest else ([], 0)
    if block:
        yield "".join(block)


@dataclass(frozen=True)
class Export:
    """A tag's samples as a download: the text in blocks, its content type and a file name."""

    body: Iterator[str]
    content_type: str
    filename: str


# format -> (writer(dataset, tag, base URL, user, sort or None), content type, file name after the tag's name).
EXPORTS = {
    "filenames": (_export_filenames, "text/plain; charset=utf-8", ".txt"),
    "csv": (_export_csv, "text/csv; charset=utf-8", ".csv"),
    "json": (_export_json, "application/json", ".json"),
    "label-studio": (_export_label_studio, "application/json", "-label-studio.json"),
}
EXPORT_FORMATS = tuple(EXPORTS)


def check_export_format(fmt) -> str:
    """`fmt` if it is one of EXPORT_FORMATS, else a DomainError on `format` (checked before any work is done)."""
    if fmt not in EXPORTS:
        raise DomainError(f"unknown format {fmt!r}; accepted: {', '.join(EXPORT_FORMATS)}", "format")
    return fmt


def export_tag(
    dataset: Dataset, tag: Tag, fmt: str, *, base_url: str | None = None, user=None, sort: Sort | None = None
) -> Export:
    """The tag's samples as a download, streamed in idx order, or in `sort`'s (the sample list's order: missing
    values last, ties by idx) for an export of a saved view or a filter.

    filenames: text, one file name per line. csv: file_name,sample_id,idx,width,height, then one
    column per configured metadata field (else per metadata path found); a missing value is an
    empty cell, the configured fallback is not applied; a text cell starting with = + - @ tab or CR gets a
    leading ' (OWASP's CSV-injection advice), numbers stay as they are. json: a list of samples with their metadata
    and `image_url`. label-studio: a task list whose `data.image` is that URL (the file name for `meta`
    datasets, which keep no pixels). The URLs start with `base_url` (default: settings.SITE_URL) and are signed
    for `user`: they open without a token until WINNOW_EXPORT_URL_SECONDS pass or the user leaves the dataset.
    An unknown format is a DomainError on `format`.
    """
    check_export_format(fmt)
    base = base_url if base_url is not None else settings.SITE_URL
    if fmt in ("json", "label-studio") and dataset.has_pixels and user is None:
        raise ValueError("export_tag needs the user who signs the image links")
    write, content_type, suffix = EXPORTS[fmt]
    body = write(dataset, tag, base, user, sort)
    return Export(_in_blocks(body), content_type, f"{_safe_filename(tag.name)}{suffix}")
