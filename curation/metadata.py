"""Custom metadata: the Lightly-style upload, dot paths, field proposals and the configurator rules.

Upload format (Lightly's COCO-like custom metadata):
    {"images": [{"file_name": "a/b.jpg", "id": 1}, ...],
     "metadata": [{"image_id": 1, "weather": {"temperature": 21.5}, ...}, ...]}
"""

from __future__ import annotations

import json
import re
from collections import Counter

from django.db import connection, transaction

from curation.errors import DomainError
from curation.models import Dataset, FieldType, Sample
from winnow.client.formats import MetadataErrors, validate_custom_metadata
from winnow.values import is_finite_number

SEGMENT = re.compile(r"^[A-Za-z0-9_-]+$")
MAX_PATH_DEPTH = 8
MAX_PATH_LENGTH = 300
WRITE_BATCH = 5000
LOOKUP_BATCH = 5000
PROPOSAL_SAMPLE_SIZE = 5000
CATEGORICAL_INT_MAX_DISTINCT = 20
DISTINCT_REPORT_MAX = 50
EXAMPLES = 5


# --- dot paths -----------------------------------------------------------------------------------


def path_error(path) -> str | None:
    """Why `path` is not a valid dot path (segments [A-Za-z0-9_-]+, depth <= 8), or None."""
    if not isinstance(path, str) or not path:
        return "must be a non-empty string"
    if len(path) > MAX_PATH_LENGTH:
        return f"must be at most {MAX_PATH_LENGTH} characters"
    segments = path.split(".")
    if len(segments) > MAX_PATH_DEPTH:
        return f"has {len(segments)} segments; at most {MAX_PATH_DEPTH} are allowed"
    for segment in segments:
        if not SEGMENT.match(segment):
            return f"segment {segment!r} must be letters, digits, '_' or '-' (segments are separated by '.')"
    return None


def get_path(metadata, path: str):
    """The value at a dot path, or raise KeyError."""
    value = metadata
    for segment in path.split("."):
        if not isinstance(value, dict) or segment not in value:
            raise KeyError(path)
        value = value[segment]
    return value


def flatten(metadata: dict, prefix: str = "", depth: int = 0):
    """Yield (dot path, leaf value) for every leaf; lists are leaves, keys outside the path grammar are skipped."""
    for key, value in metadata.items():
        if not isinstance(key, str) or not SEGMENT.match(key):
            continue
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and value and depth + 1 < MAX_PATH_DEPTH:
            yield from flatten(value, path, depth + 1)
        elif not isinstance(value, dict):
            yield path, value


# --- value checks ----------------------------------------------------------------------------------


def fallback_error(field_type: str, value) -> str | None:
    """Why `value` is not a fallback for a field of `field_type`, or None. Booleans are not numbers."""
    if value is None:
        return None
    if field_type in (FieldType.INT, FieldType.CATEGORICAL_INT):
        ok = isinstance(value, int) and not isinstance(value, bool)
        return None if ok else f"{value!r} is not an integer, as a {field_type} field needs"
    if field_type == FieldType.FLOAT:
        ok = is_finite_number(value)
        return None if ok else f"{value!r} is not a finite number, as a float field needs"
    if field_type == FieldType.CATEGORICAL_STRING:
        if isinstance(value, str) and "\x00" not in value:
            return None
        return f"{value!r} is not a string (without NUL characters), as a categorical_string field needs"
    if field_type == FieldType.BOOLEAN:
        return None if isinstance(value, bool) else f"{value!r} is not true or false, as a boolean field needs"
    return f"unknown type {field_type!r}"


# --- upload ----------------------------------------------------------------------------------------


def _validate_upload(payload) -> tuple[dict, list[tuple[str, dict]]]:
    """The document checked by the parser the client shares (winnow.client.formats), its problems as a 400."""
    try:
        return validate_custom_metadata(payload)
    except MetadataErrors as exc:
        raise DomainError(str(exc), errors=exc.errors) from None


def _sample_ids_by_name(dataset: Dataset, names: list[str]) -> dict[str, str]:
    """{file name: sample id} for the names that exist in the dataset, a bounded IN list per query."""
    found: dict[str, str] = {}
    for start in range(0, len(names), LOOKUP_BATCH):
        chunk = names[start : start + LOOKUP_BATCH]
        found.update(Sample.objects.filter(dataset=dataset, file_name__in=chunk).values_list("file_name", "id"))
    return found


def _write_metadata(dataset: Dataset, rows: list[tuple[str, dict]]) -> None:
    """Replace the metadata of the given sample ids in batches: one UPDATE per batch, never one per row."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            for start in range(0, len(rows), WRITE_BATCH):
                batch = rows[start : start + WRITE_BATCH]
                cursor.execute(
                    # Keep the scores of prediction tasks (predictions.<task>): they are not the uploader's metadata.
                    f"UPDATE {Sample._meta.db_table} AS s SET metadata = CASE WHEN s.metadata ? 'predictions' "
                    "THEN v.metadata || jsonb_build_object('predictions', s.metadata -> 'predictions') "
                    "ELSE v.metadata END "
                    "FROM (SELECT unnest(%s::text[]) AS id, unnest(%s::text[])::jsonb AS metadata) AS v "
                    "WHERE s.id = v.id AND s.dataset_id = %s",
                    [[sid for sid, _ in batch], [json.dumps(meta, allow_nan=False) for _, meta in batch], dataset.id],
                )
    else:
        kept = dict(
            Sample.objects.filter(id__in=[sid for sid, _ in rows], metadata__has_key="predictions").values_list(
                "id", "metadata__predictions"
            )
        )
        samples = [
            Sample(id=sid, metadata={**meta, **({"predictions": kept[sid]} if sid in kept else {})})
            for sid, meta in rows
        ]
        Sample.objects.bulk_update(samples, ["metadata"], batch_size=500)


def samples_without_metadata(dataset: Dataset, examples: int = 10) -> dict | None:
    """A warning naming the samples whose metadata is empty, or None when every sample has some."""
    empty = Sample.objects.filter(dataset=dataset, metadata={})
    count = empty.count()
    if not count:
        return None
    names = list(empty.order_by("idx").values_list("file_name", flat=True)[:examples])
    return {
        "code": "samples_without_metadata",
        "message": f"{count} sample(s) of the dataset have no metadata",
        "count": count,
        "examples": names,
    }


def upload_metadata(dataset: Dataset, payload) -> dict:
    """Validate a whole Lightly-style metadata document, then write it in one transaction.

    Each listed sample's metadata is REPLACED by its entry minus `image_id` (as Lightly does), not
    merged. Samples not listed keep what they had. Anything invalid raises a DomainError naming
    the entry, and nothing is written. Returns {"updated": n, "warnings": [...]}.
    """
    _id_to_name, entries = _validate_upload(payload)
    names = [name for name, _ in entries]
    # Images listed without metadata must exist too: the whole document describes this dataset.
    listed = list(_id_to_name.values())
    ids = _sample_ids_by_name(dataset, listed)
    missing = [name for name in listed if name not in ids]
    if missing:
        shown = ", ".join(repr(n) for n in missing[:10])
        more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        message = f"{len(missing)} file name(s) are not samples of this dataset: {shown}{more}"
        raise DomainError(message, "images")
    with transaction.atomic():
        _write_metadata(dataset, [(ids[name], meta) for name, meta in entries])
    warning = samples_without_metadata(dataset)
    return {"updated": len(names), "warnings": [warning] if warning else []}


# --- proposals for the configurator ---------------------------------------------------------------


def _kind(value) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return None  # lists and nulls are not fields the configurator can type


class _PathStats:
    __slots__ = ("present", "kinds", "distinct", "examples")

    def __init__(self):
        self.present = 0
        self.kinds: Counter = Counter()
        self.distinct: set = set()  # at most DISTINCT_REPORT_MAX + 1 values: enough to say "many"
        self.examples: list = []

    def add(self, value, kind: str) -> None:
        self.present += 1
        self.kinds[kind] += 1
        key = (kind, value)  # keeps 1 and True apart
        if key not in self.distinct:
            if len(self.examples) < EXAMPLES:
                self.examples.append(value)
            if len(self.distinct) <= DISTINCT_REPORT_MAX:
                self.distinct.add(key)

    @property
    def overflow(self) -> bool:
        return len(self.distinct) > DISTINCT_REPORT_MAX

    def proposed_type(self) -> tuple[str, bool]:
        kinds = set(self.kinds)
        mixed = len(kinds) > 1
        if kinds <= {"int", "float"} and "float" in kinds:
            return FieldType.FLOAT, False
        dominant = self.kinds.most_common(1)[0][0]
        if dominant == "boolean":
            return FieldType.BOOLEAN, mixed
        if dominant == "string":
            return FieldType.CATEGORICAL_STRING, mixed
        if dominant == "float":
            return FieldType.FLOAT, mixed
        n_distinct = len(self.distinct)
        few = not self.overflow and n_distinct <= CATEGORICAL_INT_MAX_DISTINCT and n_distinct < self.present
        return (FieldType.CATEGORICAL_INT if few else FieldType.INT), mixed


def _sampled_metadata(dataset: Dataset, limit: int) -> tuple[list, int, bool]:
    """Metadata of at most `limit` samples spread evenly over idx; the sample count; whether it sampled."""
    total = Sample.objects.filter(dataset=dataset).count()
    rows = Sample.objects.filter(dataset=dataset)
    sampled = total > limit
    if sampled:
        # Every step-th idx: an indexed lookup that reads `limit` rows however large the dataset is.
        step = -(-dataset.next_idx // limit)
        rows = rows.filter(idx__in=list(range(0, dataset.next_idx, step)))
    return list(rows.order_by("idx").values_list("metadata", flat=True)), total, sampled


NUMERIC_TYPES = (FieldType.INT, FieldType.FLOAT, FieldType.CATEGORICAL_INT)


def type_mismatch(dataset: Dataset, path: str, field_type: str, *, limit: int = PROPOSAL_SAMPLE_SIZE) -> str | None:
    """Why `field_type` cannot fit `path`, judged on the same spread-out sample of rows as the proposals: a
    numeric type for a path whose present values are all text (or all booleans); None when it may fit, or no
    sampled row has the path yet (metadata may come later)."""
    if field_type not in NUMERIC_TYPES:
        return None
    metadata, _total, _sampled = _sampled_metadata(dataset, limit)
    kinds, example = set(), None
    for meta in metadata:
        try:
            value = get_path(meta, path)
        except KeyError:
            continue
        kind = _kind(value)
        if kind is not None:
            kinds.add(kind)
            example = value if example is None else example
    if not kinds or kinds & {"int", "float"}:
        return None
    proposed = FieldType.BOOLEAN if kinds == {"boolean"} else FieldType.CATEGORICAL_STRING
    return f"{path!r} holds {'text' if 'string' in kinds else 'true/false'} (e.g. {example!r}), not numbers: type it {proposed}"


def propose_fields(dataset: Dataset, *, limit: int = PROPOSAL_SAMPLE_SIZE) -> dict:
    """Every leaf dot path found in the (sampled) metadata with a proposed type, examples and coverage."""
    metadata, total, sampled = _sampled_metadata(dataset, limit)
    stats: dict[str, _PathStats] = {}
    for meta in metadata:
        if not isinstance(meta, dict):
            continue
        for path, value in flatten(meta):
            kind = _kind(value)
            if kind is None:
                continue
            stats.setdefault(path, _PathStats()).add(value, kind)
    configured = dict(dataset.metadata_fields.values_list("path", "id"))
    fields = []
    for path in sorted(stats):
        item = stats[path]
        field_type, mixed = item.proposed_type()
        fields.append(
            {
                "path": path,
                "type": field_type,
                "examples": item.examples,
                "coverage": round(item.present / len(metadata), 4) if metadata else 0.0,
                "distinct_values": None if item.overflow else len(item.distinct),
                "mixed_types": mixed,
                "value_types": dict(item.kinds),
                "configured_field": configured.get(path),
            }
        )
    return {"sampled": sampled, "samples_read": len(metadata), "total_samples": total, "fields": fields}
