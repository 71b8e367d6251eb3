"""Tags: create them (from ids, file names, a filter, arithmetic, a sampling run), delete them, export them.

A tag is an immutable bitmask over sample idx. Tag names are printable text of 1-200 characters,
without control characters or surrounding spaces, unique in their dataset (case-sensitive). Lightly's
client accepts a narrower set (letters, digits and ` .:;=@_-`), so names meant for Lightly tooling
should keep to that. `initial-tag` (the first upload) cannot be deleted: other tags, runs and
Lightly clients rely on it as the dataset's root.
"""

from __future__ import annotations

import csv
import json
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import BooleanField, F, Func
from django.urls import reverse
from rest_framework.exceptions import ValidationError

from curation import bitmask, signing
from curation.access import resolve_tag
from curation.errors import DomainError
from curation.filters import parse_filter, select_samples
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
    """The name if it is valid and free in the dataset, else a ValidationError on `name`."""
    problem = name_error(name)
    if problem:
        raise ValidationError({"name": [f"tag name {problem}"]})
    if Tag.objects.filter(dataset=dataset, name=name).exists():
        raise ValidationError({"name": [f"a tag named {name!r} already exists in this dataset"]})
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

    Raises a ValidationError for a bad or taken name, a parent of another dataset, or an empty tag.
    """
    check_name(dataset, name)
    problem = bad_value(origin_detail)
    if problem:
        raise ValidationError({"non_field_errors": [f"cannot record how the tag was made: {problem}"]})
    if parent is not None and parent.dataset_id != dataset.id:
        raise ValidationError({"parent": [f"no tag with id {parent.pk!r} in this dataset"]})
    mask = _to_mask(indices_or_mask)
    count = bitmask.count(mask)
    if count == 0:
        raise ValidationError({"non_field_errors": ["the tag would be empty: no sample matches"]})
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
        raise ValidationError({"name": [f"a tag named {name!r} already exists in this dataset"]}) from None


def _string_list(values, field: str) -> list[str]:
    if not isinstance(values, list) or not values:
        raise ValidationError({field: ["must be a non-empty list of strings"]})
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise ValidationError({field: [f"item {i} must be a string, not {value!r}"]})
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
        raise ValidationError({key: [_unknown(what, missing)]})
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
        raise ValidationError({"exclude_sample_ids": ["must be a list of sample ids"]})
    if len(sample_ids) > MAX_EXCLUDED:
        raise ValidationError({"exclude_sample_ids": [f"at most {MAX_EXCLUDED} sample ids"]})
    wanted = set(sample_ids)
    found = dict(Sample.objects.filter(dataset=dataset, pk__in=wanted).values_list("pk", "idx"))
    unknown = sorted(wanted - found.keys())
    if unknown:
        raise ValidationError({"exclude_sample_ids": [f"no sample with id {unknown[0]!r} in this dataset"]})
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
        raise ValidationError({"filter": ["must be an object with 'tag', 'file_name' and/or 'conditions'"]})
    excluded = _excluded_idx(dataset, exclude_sample_ids) if exclude_sample_ids is not None else None
    try:
        parsed = parse_filter(filter_obj)
        filter_tag = parsed.get("tag")
        if isinstance(filter_tag, str):
            filter_tag = resolve_tag(dataset, filter_tag, "filter.tag")
            parsed["tag"] = filter_tag
        indices = list(select_samples(dataset, **parsed).values_list("idx", flat=True))
    except ValidationError as exc:
        # curation.filters already names its errors "filter..."; anything else gets that prefix.
        if isinstance(exc.detail, dict) and all(str(key).startswith("filter") for key in exc.detail):
            raise
        raise ValidationError({"filter": exc.detail}) from None
    if excluded is not None and len(excluded):
        indices = np.setdiff1d(np.asarray(indices, dtype=np.int64), excluded).tolist()
    if parent is None and isinstance(filter_tag, Tag):
        parent = filter_tag
    return create_tag(
        dataset,
        name,
        indices,
        origin=TagOrigin.FILTER,
        origin_detail={"filter": filter_obj},
        parent=parent,
        creator=creator,
    )


def tag_from_operation(
    dataset: Dataset, name: str, operation, tag_ids, *, parent: Tag | None = None, creator=None
) -> Tag:
    """Union, intersection or difference of 2-16 tags, applied left to right; parent defaults to the first."""
    check_name(dataset, name)
    if not isinstance(operation, str) or operation not in OPERATIONS:
        raise ValidationError({"operation": [f"{operation!r} is not one of: {', '.join(OPERATIONS)}"]})
    if not isinstance(tag_ids, list) or not 2 <= len(tag_ids) <= MAX_OPERANDS:
        raise ValidationError({"tags": [f"must be a list of 2 to {MAX_OPERANDS} tag ids"]})
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
        raise ValidationError({"tag": [f"{INITIAL_TAG} holds the dataset's first upload and cannot be deleted"]})
    tag.delete()


def sample_ids_of(dataset: Dataset, tag: Tag) -> list[str]:
    """The public ids of the tag's samples, in idx order."""
    return [row[0] for row in _tag_rows(dataset, tag, ("id",))]


# --- export ----------------------------------------------------------------------------------------


class _InMaskSlice(Func):
    """PostgreSQL: idx is set in a slice of a tag's bitmask that starts at idx `first` (a multiple of 8)."""

    output_field = BooleanField()

    def __init__(self, mask_slice: bytes, first: int):
        super().__init__(F("idx"))
        self.mask_slice, self.first = mask_slice, first

    def as_sql(self, compiler, connection, **extra):
        col, params = compiler.compile(self.source_expressions[0])
        return f"(get_bit(%s::bytea, {col} - %s) = 1)", (*params, self.mask_slice, self.first)


def _tag_rows(dataset: Dataset, tag: Tag, fields: tuple):
    """The tag's samples as value tuples in idx order: one bounded query per batch, no model instances.

    PostgreSQL reads each batch as an idx range tested against that range's bytes of the bitmask: a
    walk along the (dataset, idx) index, about twice as fast as probing it once per idx of an IN list.
    """
    mask = bytes(tag.bitmask)
    indices = bitmask.to_indices(mask)
    postgres = connection.vendor == "postgresql"
    for start in range(0, len(indices), EXPORT_BATCH):
        chunk = indices[start : start + EXPORT_BATCH]
        rows = Sample.objects.filter(dataset=dataset).order_by("idx")
        if postgres:
            first, last = int(chunk[0]) // 8 * 8, int(chunk[-1])
            rows = rows.filter(idx__gte=first, idx__lte=last).filter(
                _InMaskSlice(mask[first // 8 : last // 8 + 1], first)
            )
        else:
            rows = rows.filter(idx__in=chunk.tolist())
        yield from rows.values_list(*fields)


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


def _export_csv(dataset: Dataset, tag: Tag, _base: str, _user):
    paths = _csv_paths(dataset, tag)
    writer = csv.writer(_Echo())
    yield writer.writerow([*BASE_COLUMNS, *(_text_cell(f"metadata.{p}" if p in BASE_COLUMNS else p) for p in paths)])
    for file_name, sample_id, idx, width, height, meta in _tag_rows(
        dataset, tag, ("file_name", "id", "idx", "width", "height", "metadata")
    ):
        cells = [_text_cell(file_name), sample_id, idx, _cell(width), _cell(height)]
        for path in paths:
            try:
                cells.append(_cell(get_path(meta, path)))
            except KeyError:
                cells.append("")
        yield writer.writerow(cells)


def _export_filenames(dataset: Dataset, tag: Tag, _base: str, _user):
    for (file_name,) in _tag_rows(dataset, tag, ("file_name",)):
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


def _export_json(dataset: Dataset, tag: Tag, base: str, user):
    url = _image_url(dataset, base, user)
    rows = _tag_rows(dataset, tag, ("id", "idx", "file_name", "width", "height", "metadata"))
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


def _export_label_studio(dataset: Dataset, tag: Tag, base: str, user):
    url = _image_url(dataset, base, user)
    rows = _tag_rows(dataset, tag, ("id", "idx", "file_name", "width", "height", "metadata"))
    # Each prediction task's output for the sample, as pre-annotations (curation.predictions).
    predictions = label_studio_predictions(dataset)
    # Metadata keys are spread into `data`; `image`, `file_name` and `sample_id` win over same-named keys.
    # A `meta` dataset keeps no pixels: its task points at the file name, for a Label Studio storage to resolve.
    return _json_list(
        {
            "id": idx,
            "data": {
                **(meta if isinstance(meta, dict) else {}),
                "image": url(sid, name) or name,
                "file_name": name,
                "sample_id": sid,
            },
            "predictions": predictions(idx, w, h, meta),
        }
        for sid, idx, name, w, h, meta in rows
    )


def _in_blocks(pieces):
    """Join the exporters' small pieces (one per row) into blocks of about EXPORT_BLOCK_BYTES characters, so a large
    export is a few hundred writes to the socket instead of one per sample; memory stays one block."""
    size, block, length = EXPORT_BLOCK_BYTES, [], 0
    for piece in pieces:
        block.append(piece)
        length += len(piece)
        if length >= size:
            yield "".join(block)
            block, length = [], 0
    if block:
        yield "".join(block)


@dataclass(frozen=True)
class Export:
    """A tag's samples as a download: the text in blocks, its content type and a file name."""

    body: Iterator[str]
    content_type: str
    filename: str


# format -> (writer(dataset, tag, base URL, user), content type, file name after the tag's name).
EXPORTS = {
    "filenames": (_export_filenames, "text/plain; charset=utf-8", ".txt"),
    "csv": (_export_csv, "text/csv; charset=utf-8", ".csv"),
    "json": (_export_json, "application/json", ".json"),
    "label-studio": (_export_label_studio, "application/json", "-label-studio.json"),
}
EXPORT_FORMATS = tuple(EXPORTS)


def export_tag(dataset: Dataset, tag: Tag, fmt: str, *, base_url: str | None = None, user=None) -> Export:
    """The tag's samples as a download, streamed in idx order.

    filenames: text, one file name per line. csv: file_name,sample_id,idx,width,height, then one
    column per configured metadata field (else per metadata path found); a missing value is an
    empty cell, the configured fallback is not applied; a text cell starting with = + - @ tab or CR gets a
    leading ' (OWASP's CSV-injection advice), numbers stay as they are. json: a list of samples with their metadata
    and `image_url`. label-studio: a task list whose `data.image` is that URL (the file name for `meta`
    datasets, which keep no pixels). The URLs start with `base_url` (default: settings.SITE_URL) and are signed
    for `user`: they open without a token until WINNOW_EXPORT_URL_SECONDS pass or the user leaves the dataset.
    An unknown format is a DomainError on `format`.
    """
    if fmt not in EXPORTS:
        raise DomainError(f"unknown format {fmt!r}; accepted: {', '.join(EXPORT_FORMATS)}", "format")
    base = base_url if base_url is not None else settings.SITE_URL
    if fmt in ("json", "label-studio") and dataset.has_pixels and user is None:
        raise ValueError("export_tag needs the user who signs the image links")
    write, content_type, suffix = EXPORTS[fmt]
    body = write(dataset, tag, base, user)
    return Export(_in_blocks(body), content_type, f"{_safe_filename(tag.name)}{suffix}")
