"""Dataset and sample logic shared by the REST API, the pages, the admin and the tasks."""

from __future__ import annotations

import json
import re
import secrets
import time
import unicodedata
from dataclasses import dataclass, field
from typing import Annotated

import msgspec
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import Value
from django.db.models.functions import Lower
from django.http import Http404
from django.utils import timezone

from curation import filters, storage, tagging
from curation.errors import DomainError
from curation.models import INITIAL_TAG, Dataset, Membership, Role, Sample, Tag, UploadMode, new_public_id
from winnow.values import MAX_METADATA_BYTES, MAX_VALUE_DEPTH, bad_value, size_error

MAX_FILE_NAME_LENGTH = 1024
MAX_DATASET_NAME_LENGTH = 200
# Fields of a sample that an upload may set; id, idx and file_name are handled apart.
SAMPLE_FIELDS = ("width", "height", "size_bytes", "format", "sha256", "original_key", "thumbnail_key", "metadata")
_DRIVE = re.compile(r"^[A-Za-z]:")


# --- datasets and members ---------------------------------------------------------------------------


def clean_dataset_name(name) -> str:
    """The stripped name, or ValueError: a name is a non-empty string of at most 200 characters."""
    if not isinstance(name, str):
        raise ValueError("must be a string")
    name = name.strip()
    if not name:
        raise ValueError("must not be empty")
    if len(name) > MAX_DATASET_NAME_LENGTH:
        raise ValueError(f"must be at most {MAX_DATASET_NAME_LENGTH} characters (got {len(name)})")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise ValueError("must not contain control characters")
    return name


class DatasetNameTaken(ValueError):
    """The owner already has a dataset of that name (in any case)."""

    def __init__(self, owner, name: str):
        super().__init__(f"{owner.username} already has a dataset named {name!r}; choose another name")


def dataset_name_taken(owner, name: str, *, exclude: Dataset | None = None) -> bool:
    """Whether `owner` has a dataset named `name` in any case (the test the unique constraint makes, by lower())."""
    taken = Dataset.objects.annotate(_key=Lower("name")).filter(owner=owner, _key=Lower(Value(name)))
    if exclude is not None:
        taken = taken.exclude(pk=exclude.pk)
    return taken.exists()


def create_dataset(owner, name: str, upload_mode: str) -> Dataset:
    """A new dataset with `owner` as its owner; DatasetNameTaken when the owner has one of that name (in any case),
    also when two creates race (the database's unique constraint decides); DomainError for an unknown mode.
    `name` is already clean (clean_dataset_name)."""
    if upload_mode not in UploadMode.values:
        raise DomainError(f"{upload_mode!r} is not one of {', '.join(UploadMode.values)}", "upload_mode")
    if dataset_name_taken(owner, name):
        raise DatasetNameTaken(owner, name)
    try:
        with transaction.atomic():
            dataset = Dataset.objects.create(owner=owner, name=name, upload_mode=upload_mode)
            Membership.objects.create(dataset=dataset, user=owner, role=Role.OWNER)
    except IntegrityError:
        if dataset_name_taken(owner, name):
            raise DatasetNameTaken(owner, name) from None
        raise
    return dataset


def rename_dataset(dataset: Dataset, name: str) -> None:
    """Rename; DatasetNameTaken when the owner has another dataset of that name (in any case)."""
    if dataset_name_taken(dataset.owner, name, exclude=dataset):
        raise DatasetNameTaken(dataset.owner, name)
    try:
        with transaction.atomic():
            Dataset.objects.filter(pk=dataset.pk).update(name=name, updated_at=timezone.now())
    except IntegrityError:
        raise DatasetNameTaken(dataset.owner, name) from None


def delete_dataset(dataset: Dataset) -> None:
    """Delete the dataset's rows, then its files (rows first: a failure leaves orphan files, never dangling rows)."""
    prefix, dataset_id = dataset.storage_prefix, dataset.pk
    field_ids = list(dataset.metadata_fields.values_list("pk", flat=True))
    with transaction.atomic():
        dataset.delete()
    transaction.on_commit(lambda: storage.delete_prefix(prefix))
    # The fields' partial sort indexes name the dataset; with its rows gone they only slow every insert.
    for field_id in field_ids:
        transaction.on_commit(lambda field_id=field_id: filters.drop_sort_indexes(dataset_id, field_id))


def _keep_an_owner(dataset: Dataset, leaving_user_id: int) -> None:
    """Refuse to leave the dataset without an owner; hand `Dataset.owner` on if its holder stops being owner."""
    others = (
        Membership.objects.filter(dataset=dataset, role=Role.OWNER)
        .exclude(user_id=leaving_user_id)
        .order_by("created_at", "id")
        .values_list("user_id", flat=True)
    )
    successor = others.first()
    if successor is None:
        raise ValueError("a dataset keeps at least one owner: add another owner first")
    if dataset.owner_id == leaving_user_id:
        Dataset.objects.filter(pk=dataset.pk).update(owner_id=successor)
        dataset.owner_id = successor


class UnknownUser(ValueError):
    pass


def set_member(dataset: Dataset, username: str, role: str) -> tuple[Membership, bool]:
    """Add `username` with `role`, or change the role of a member; return (membership, created).

    ValueError for an unknown user or for demoting the last owner.
    """
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise UnknownUser(f"no user named {username!r}")
    with transaction.atomic():
        Dataset.objects.select_for_update().filter(pk=dataset.pk).first()  # serialise member changes
        membership = Membership.objects.filter(dataset=dataset, user=user).first()
        if membership is None:
            return Membership.objects.create(dataset=dataset, user=user, role=role), True
        if membership.role == Role.OWNER and role != Role.OWNER:
            _keep_an_owner(dataset, user.pk)
        membership.role = role
        membership.save(update_fields=["role"])
        return membership, False


def remove_member(dataset: Dataset, membership: Membership) -> None:
    """Remove a member; ValueError if they are the last owner."""
    with transaction.atomic():
        Dataset.objects.select_for_update().filter(pk=dataset.pk).first()
        # The role as it is now, under the lock: a promotion since `membership` was read counts.
        role = Membership.objects.filter(pk=membership.pk).values_list("role", flat=True).first()
        if role is None:  # removed meanwhile
            return
        if role == Role.OWNER:
            _keep_an_owner(dataset, membership.user_id)
        membership.delete()


# --- ingestion -----------------------------------------------------------------------------------------
#
# Registration is built for many parallel batches into one dataset: every row is checked and serialised
# before any lock is taken; the dataset's row lock is held only for one INSERT ... SELECT that numbers the
# new rows (idx = next_idx + their rank) and the bump of next_idx, until the commit. Nothing in a batch
# costs O(N): `initial-tag` (every sample) only has its count set, its bits are all ones over next_idx.

# Names that need no further look: no control character (Unicode Cc is exactly these), no lone surrogate,
# no backslash, non-empty segments; `.`/`..`/blank segments and drive letters are checked apart.
_PLAIN_NAME = re.compile(r"[^\x00-\x1f\x7f-\x9f\ud800-\udfff\\/]+(?:/[^\x00-\x1f\x7f-\x9f\ud800-\udfff\\/]+)*")
_ODD_SEGMENT = re.compile(r"(?:^|/)(?:\.{1,2}|\s+)(?:/|$)")


def validate_file_name(name: str) -> str:
    """The normalised relative path of a sample (forward slashes), or ValueError(reason).

    A backslash counts as a path separator (Windows clients send `a\\b.jpg`) and becomes `/`. Rejected:
    empty names, absolute paths (`/x`, `C:\\x`, `\\\\server\\x`), `.` and `..` segments, empty segments
    (`a//b`, a trailing `/`), control characters, text that is not valid Unicode and names longer than
    1024 characters.
    """
    if (
        isinstance(name, str)
        and len(name) <= MAX_FILE_NAME_LENGTH
        and _PLAIN_NAME.fullmatch(name)
        and not _ODD_SEGMENT.search(name)
        and not _DRIVE.match(name)
    ):
        return name  # the common case, in three C-speed scans
    return _validate_file_name_fully(name)


def _validate_file_name_fully(name) -> str:
    if not isinstance(name, str):
        raise ValueError("file name must be a string")
    if not name.strip():
        raise ValueError("file name is empty")
    if len(name) > MAX_FILE_NAME_LENGTH:
        raise ValueError(f"file name is longer than {MAX_FILE_NAME_LENGTH} characters ({len(name)})")
    bad = next((ch for ch in name if unicodedata.category(ch) == "Cc"), None)
    if bad is not None:
        raise ValueError(f"file name contains the control character {bad!r}")
    if any("\ud800" <= ch <= "\udfff" for ch in name):
        raise ValueError("file name is not valid Unicode text (it holds a lone surrogate)")
    normal = name.replace("\\", "/")
    if normal.startswith("/") or _DRIVE.match(normal):
        raise ValueError("file name is an absolute path; give a path relative to the dataset's root")
    for segment in normal.split("/"):
        if segment == "":
            raise ValueError("file name has an empty path segment ('//' or a trailing '/')")
        if segment in (".", ".."):
            raise ValueError(f"file name has a {segment!r} segment; only plain relative paths are allowed")
        if not segment.strip():
            raise ValueError("file name has a path segment of only spaces")
    return normal


def validate_metadata(value) -> dict:
    """The metadata object itself, or ValueError naming the key at fault (NaN, Infinity, odd types, too big)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"metadata must be a JSON object, not {_json_kind(value)}")
    problem = bad_value(value)
    if problem:
        raise ValueError(f"metadata.{problem}")
    too_big = size_error(value)
    if too_big:
        raise ValueError(too_big)
    text = json.dumps(value, separators=(",", ":"))
    if "\\ud" in text:  # astral characters are escaped as surrogate pairs: only a lone one is an error
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("metadata holds text that is not valid Unicode (a lone surrogate)") from None
    return value


def _metadata_plainly_fine(value) -> bool:
    """True when metadata parsed from strict JSON certainly passes validate_metadata; False: ask it.

    The caller has ruled out NaN, Infinity, NUL, lone surrogates and numbers that overflow on the JSON
    text. What is left is depth and size, bounded from the value's repr (one C call): no JSON form is
    more than 12 characters per repr character, and no value is nested deeper than its brackets count.
    """
    if type(value) is not dict:
        return False
    text = repr(value)
    return 12 * len(text) <= MAX_METADATA_BYTES and text.count("{") + text.count("[") <= MAX_VALUE_DEPTH


def _json_kind(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


@dataclass
class AddResult:
    created: list[Sample] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # file names already present (overwrite=False)
    replaced: list[Sample] = field(default_factory=list)  # existing rows updated in place (overwrite=True)
    # Storage keys the replaced rows held before and no longer use: the caller deletes these files
    # after the commit. A key that the new row reuses is not listed.
    replaced_old_keys: list[str] = field(default_factory=list)
    skipped_ids: list[str] = field(default_factory=list)  # the ids of the skipped samples, same order
    initial_tag: Tag | None = None


def _check_rows(rows: list[dict]) -> list[str]:
    """The rows' normalised file names; ValueError for a bad name, a name twice, or an unknown field."""
    names = [validate_file_name(row.get("file_name")) for row in rows]
    seen: dict[str, int] = {}
    twice = []
    for i, name in enumerate(names):
        if name in seen:
            twice.append(f"{name!r} (entries {seen[name]} and {i})")
        seen.setdefault(name, i)
    if twice:
        raise ValueError("file names appear more than once in the batch: " + ", ".join(twice[:10]))
    unknown = {key for row in rows for key in row} - {"file_name", "id", *SAMPLE_FIELDS}
    if unknown:
        raise ValueError(f"unknown sample fields: {', '.join(sorted(unknown))}")
    return names


def add_samples(dataset: Dataset, rows: list[dict], *, overwrite: bool = False, creator=None) -> AddResult:
    """Add samples to `dataset` in one transaction; a file name already present is skipped (or replaced).

    Each row holds Sample field values already validated by the caller: `file_name` (required), and
    optionally `id`, `width`, `height`, `size_bytes`, `format`, `sha256`, `original_key`,
    `thumbnail_key`, `metadata`. New samples get the next dense idx values (never reused) and join the
    tag `initial-tag`, which holds every sample. ValueError when a file name is invalid or
    appears twice in `rows`: nothing is written then. Parallel calls into one dataset wait for each
    other only while the new rows are inserted (see _insert_new).
    """
    names = _check_rows(rows)
    rows = [{**row, "file_name": name} for name, row in zip(names, rows)]
    result = AddResult()
    with transaction.atomic():
        present = _existing_by_name(dataset, names) if overwrite else {}
        if present:
            _replace([(present[row["file_name"]], row) for row in rows if row["file_name"] in present], result)
        todo = [row for row in rows if row["file_name"] not in present]
        if not todo:
            return result
        ids = [row.get("id") or new_public_id() for row in todo]
        inserted = _insert_new(dataset, todo, ids, None, creator)
        lost = [todo[pos] for pos in inserted.existing]  # registered by a parallel upload meanwhile
        if lost and overwrite:
            now_present = _existing_by_name(dataset, [row["file_name"] for row in lost])
            _replace([(now_present[row["file_name"]], row) for row in lost], result)
        elif lost:
            result.skipped = [row["file_name"] for row in lost]
            result.skipped_ids = list(inserted.existing.values())
        offset = 0
        for pos, (row, sample_id) in enumerate(zip(todo, ids)):
            if pos in inserted.existing:
                continue
            values = {key: row[key] for key in SAMPLE_FIELDS if row.get(key) is not None}
            sample = Sample(
                id=sample_id, dataset_id=dataset.pk, idx=inserted.start + offset, file_name=row["file_name"], **values
            )
            sample._state.adding, sample._state.db = False, "default"
            result.created.append(sample)
            offset += 1
        dataset.next_idx = inserted.next_idx
        if result.created:
            result.initial_tag = Tag.objects.filter(dataset_id=dataset.pk, name=INITIAL_TAG).first()
    return result


def _replace(pairs: list[tuple[Sample, dict]], result: AddResult) -> None:
    """Update existing samples in place with the fields each row sets (overwrite=True)."""
    # Rows grouped by the fields they set: bulk_update writes only those, never a field left unloaded.
    by_fields: dict[tuple, list[Sample]] = {}
    for old, row in pairs:
        for key in ("original_key", "thumbnail_key"):
            old_key = getattr(old, key)
            if old_key and row.get(key, old_key) != old_key:
                result.replaced_old_keys.append(old_key)
        fields = tuple(key for key in SAMPLE_FIELDS if key in row)
        for key in fields:
            setattr(old, key, _NOT_NULL.get(key) if row[key] is None else row[key])
        by_fields.setdefault(fields, []).append(old)
        result.replaced.append(old)
    for fields, samples in by_fields.items():
        if fields:
            Sample.objects.bulk_update(samples, list(fields), batch_size=2000)


# Model fields that take "" or {} rather than NULL when a row says None.
_NOT_NULL = {"format": "", "sha256": "", "original_key": "", "thumbnail_key": "", "metadata": {}}


def _existing_by_name(dataset: Dataset, names: list[str]) -> dict[str, Sample]:
    """The dataset's samples among `names`, by file name (in chunks: one IN list per 5,000 names)."""
    found: dict[str, Sample] = {}
    for start in range(0, len(names), 5000):
        chunk = names[start : start + 5000]
        # Only what skipping and replacing need: never the metadata of thousands of rows.
        rows = Sample.objects.filter(dataset_id=dataset.pk, file_name__in=chunk).only(
            "id", "idx", "file_name", "original_key", "thumbnail_key"
        )
        for sample in rows:
            found[sample.file_name] = sample
    return found


@dataclass
class _Inserted:
    start: int  # idx of the first new sample
    next_idx: int  # the dataset's next_idx after the insert
    existing: dict[int, str]  # position in the rows -> id of the sample already holding that file name


# A per-connection temporary table that holds one batch, typed and checked against the dataset's file
# names, before the dataset's lock is taken. Emptied at every commit. The dataset's samples among the
# batch's names are read in one scan (p), never in a lookup per entry: while the table is small the
# planner serves `dataset_id = ...` from the (dataset_id, idx) index, and a per-entry lookup planned so
# walked the whole dataset once per entry, over rows that parallel batches kept adding while it ran (the
# first batch of 1M took 145 s).
_STAGE_SQL = """
CREATE TEMPORARY TABLE IF NOT EXISTS winnow_sample_stage (
    o int PRIMARY KEY, id varchar(24) NOT NULL, file_name varchar(1024) NOT NULL, width int, height int,
    size_bytes bigint, format varchar(16) NOT NULL, sha256 varchar(64) NOT NULL, original_key varchar(1200) NOT NULL,
    thumbnail_key varchar(1200) NOT NULL, metadata jsonb NOT NULL, existing varchar(24)
) ON COMMIT DELETE ROWS;
DELETE FROM winnow_sample_stage;
WITH e AS MATERIALIZED (
    SELECT v, o, replace(v->>'file_name', '\\', '/') AS name
    FROM jsonb_array_elements(%(body)s::jsonb -> 'samples') WITH ORDINALITY AS a(v, o)
), p AS MATERIALIZED (
    SELECT id, file_name FROM {sample}
    WHERE dataset_id = %(dataset)s AND file_name = ANY(ARRAY(SELECT name FROM e))
)
INSERT INTO winnow_sample_stage
SELECT e.o - 1, (string_to_array(%(ids)s, chr(31)))[e.o], e.name, (e.v->>'width')::int, (e.v->>'height')::int,
       (e.v->>'size_bytes')::bigint, coalesce(e.v->>'format', ''), coalesce(e.v->>'sha256', ''),
       coalesce(e.v->>'original_key', ''), coalesce(e.v->>'thumbnail_key', ''),
       CASE jsonb_typeof(e.v->'metadata') WHEN 'object' THEN e.v->'metadata' ELSE '{{}}'::jsonb END, p.id
FROM e LEFT JOIN p ON p.file_name = e.name;
"""

# Under the dataset's row lock, held to the commit: the names staged as new go in with idx = next_idx +
# their rank, next_idx moves on and initial-tag's count follows, in one statement. {recheck} marks names
# that a parallel batch registered since they were staged (only after a conflict: see _insert_new), and
# {replace} overwrites the samples already present with the staged values (overwrite=True).
_INSERT_SQL = """
SELECT 1 FROM {dataset} WHERE id = %(dataset)s FOR UPDATE;
{recheck}
{replace}
WITH base AS (
    SELECT next_idx FROM {dataset} WHERE id = %(dataset)s
), ins AS (
    INSERT INTO {sample} (id, dataset_id, idx, file_name, width, height, size_bytes, format, sha256, original_key,
                          thumbnail_key, metadata, created_at)
    SELECT st.id, %(dataset)s, base.next_idx + row_number() OVER (ORDER BY st.o) - 1, st.file_name, st.width,
           st.height, st.size_bytes, st.format, st.sha256, st.original_key, st.thumbnail_key, st.metadata, now()
    FROM winnow_sample_stage AS st, base
    WHERE st.existing IS NULL
    RETURNING 1
), bump AS (
    UPDATE {dataset} SET next_idx = next_idx + (SELECT count(*) FROM ins) WHERE id = %(dataset)s
    RETURNING next_idx
), tag AS (
    UPDATE {tag} SET count = (SELECT next_idx FROM bump) WHERE dataset_id = %(dataset)s AND name = %(initial)s
    RETURNING 1
)
SELECT (SELECT next_idx FROM base), (SELECT next_idx FROM bump), (SELECT count(*) FROM tag),
       ARRAY(SELECT o FROM winnow_sample_stage WHERE existing IS NOT NULL ORDER BY o),
       ARRAY(SELECT existing FROM winnow_sample_stage WHERE existing IS NOT NULL ORDER BY o);
"""
_RECHECK_SQL = """
UPDATE winnow_sample_stage AS st SET existing = p.id
FROM (SELECT id, file_name FROM {sample} WHERE dataset_id = %(dataset)s
      AND file_name = ANY(ARRAY(SELECT file_name FROM winnow_sample_stage WHERE existing IS NULL))) AS p
WHERE st.existing IS NULL AND p.file_name = st.file_name;
"""
# JSON registration with overwrite: what an entry gives replaces the sample's size and metadata.
_REPLACE_SQL = """
UPDATE {sample} AS p SET width = st.width, height = st.height, size_bytes = st.size_bytes, metadata = st.metadata
FROM winnow_sample_stage AS st WHERE p.id = st.existing;
"""


def _sql(template: str, **parts: str) -> str:
    return template.format(
        sample=Sample._meta.db_table, dataset=Dataset._meta.db_table, tag=Tag._meta.db_table, **parts
    )


def _insert_new(
    dataset: Dataset,
    rows: list[dict],
    ids: list[str],
    source_json: str | None,
    creator,
    *,
    replace_existing: bool = False,
) -> _Inserted:
    """Insert the rows whose file name the dataset does not hold yet, numbered with the next dense idx values.

    `rows` hold normalised, checked values; `ids` the new samples' ids. `source_json`, when given, is JSON
    text whose `samples` are the rows (file names may still hold backslashes), handed to PostgreSQL as
    it is instead of serialising the rows again. `replace_existing` overwrites the width, height, size
    and metadata of samples already present (JSON registration with overwrite).

    On PostgreSQL the batch is staged and compared with the dataset's file names first; then the
    dataset's row lock is taken and held to the commit for one statement that inserts, moves next_idx
    and sets initial-tag's count. A failure rolls it all back, so no idx is ever skipped. The samples'
    dataset_id has no database foreign key (its check cost a lookup per row): rows go in only joined to
    the locked dataset row, so a dataset deleted meanwhile gets none (Http404).
    """
    if connection.vendor != "postgresql":
        with transaction.atomic():
            return _insert_new_orm(dataset, rows, ids, creator, replace_existing)
    if source_json is None:
        source_json = json.dumps({"samples": rows}, separators=(",", ":"))
    params = {"body": source_json, "ids": "\x1f".join(ids), "dataset": dataset.pk, "initial": INITIAL_TAG}
    replace = _sql(_REPLACE_SQL) if replace_existing else ""
    for recheck in ("", _sql(_RECHECK_SQL)):
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(_sql(_STAGE_SQL), params)
                cursor.execute(_sql(_INSERT_SQL, recheck=recheck, replace=replace), params)
                start, next_idx, tagged, positions, existing_ids = cursor.fetchone()
                if start is None:  # deleted meanwhile: nothing was inserted (no row to join, no row to lock)
                    raise Http404("No dataset with that id.")
                if not tagged and next_idx > 0:
                    tagging.create_initial_tag(dataset.pk, next_idx, creator)
                return _Inserted(start=start, next_idx=next_idx, existing=dict(zip(positions, existing_ids)))
        except IntegrityError as exc:
            # A parallel batch registered one of these names between staging and the lock: look again
            # under the lock this time (rare, so the common path does not look twice).
            cause = getattr(exc.__cause__, "diag", None)
            if recheck or cause is None or cause.constraint_name != "sample_unique_file_name":
                raise
    raise AssertionError("unreachable")


def _insert_new_orm(dataset: Dataset, rows: list[dict], ids: list[str], creator, replace_existing: bool) -> _Inserted:
    """_insert_new for SQLite (the embedded default), through the ORM; SQLite runs one writer at a time."""
    locked = Dataset.objects.select_for_update().only("id", "next_idx").get(pk=dataset.pk)
    names = [row["file_name"] for row in rows]
    present: dict[str, str] = {}
    for start in range(0, len(names), 500):
        chunk = names[start : start + 500]
        present.update(Sample.objects.filter(dataset_id=dataset.pk, file_name__in=chunk).values_list("file_name", "id"))
    existing, created = {}, []
    for pos, row in enumerate(rows):
        if row["file_name"] in present:
            existing[pos] = present[row["file_name"]]
            continue
        values = {key: row[key] for key in SAMPLE_FIELDS if row.get(key) is not None}
        created.append(
            Sample(
                id=ids[pos],
                dataset_id=dataset.pk,
                idx=locked.next_idx + len(created),
                file_name=row["file_name"],
                **values,
            )
        )
    next_idx = locked.next_idx + len(created)
    if created:
        Sample.objects.bulk_create(created, batch_size=500)
        Dataset.objects.filter(pk=dataset.pk).update(next_idx=next_idx)
        tagging.set_initial_tag_count(dataset.pk, next_idx, creator)
    if existing and replace_existing:
        samples = Sample.objects.filter(pk__in=list(existing.values())).only("id")
        by_id = {sample.id: sample for sample in samples}
        for pos, sample_id in existing.items():
            sample = by_id[sample_id]
            for key in ("width", "height", "size_bytes", "metadata"):
                setattr(sample, key, rows[pos].get(key) if key != "metadata" else rows[pos].get(key) or {})
        Sample.objects.bulk_update(by_id.values(), ["width", "height", "size_bytes", "metadata"], batch_size=500)
    return _Inserted(start=locked.next_idx, next_idx=next_idx, existing=existing)


# --- JSON registration (samples without pixels) ----------------------------------------------------------

ENTRY_FIELDS = ("file_name", "width", "height", "size_bytes", "metadata")
_ENTRY_FIELD_SET = frozenset(ENTRY_FIELDS)
MAX_REPORTED_ERRORS = 50
_MAX_INT = 2**31 - 1
_MAX_BIGINT = 2**63 - 1


class InvalidEntries(ValueError):
    """Some entries of a batch are invalid; `errors` holds one message per problem, naming the entry."""

    def __init__(self, errors: list[str]):
        super().__init__(errors[0])
        self.errors = errors


def _int_or_none(entry: dict, key: str, low: int, high: int):
    value = entry.get(key)
    if value is None:
        return None
    if type(value) is not int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"{key} must be an integer, not {_json_kind(value)}")
    if not low <= value <= high:
        raise ValueError(f"{key} must be between {low} and {high} (got {value})")
    return value


# In JSON text that strict parsing accepts: escapes a value must not hold (NUL) or PostgreSQL refuses
# alone (a surrogate half), and numbers that may overflow to infinity. Any of them sends every entry's
# metadata through validate_metadata.
_RISKY_JSON = re.compile(r"\\u(?:0000|[dD][89a-fA-F])|[\d.][eE][+-]?\d{3}|\d{300}")


# --- the fast path: a registration body decoded and checked in C, for PostgreSQL -------------------------------


class RegistrationEntry(msgspec.Struct, forbid_unknown_fields=True):
    """One entry as decoded by parse_registration; `metadata` stays JSON text, which PostgreSQL reads."""

    file_name: str
    width: Annotated[int, msgspec.Meta(ge=1, le=_MAX_INT)] | None = None
    height: Annotated[int, msgspec.Meta(ge=1, le=_MAX_INT)] | None = None
    size_bytes: Annotated[int, msgspec.Meta(ge=0, le=_MAX_BIGINT)] | None = None
    metadata: msgspec.Raw = msgspec.Raw(b"null")


class RegistrationBody(msgspec.Struct, forbid_unknown_fields=True):
    samples: list[RegistrationEntry]
    overwrite: bool = False


_REGISTRATION_DECODER = msgspec.json.Decoder(RegistrationBody)
# For _risky_numbers: digits become 0, e/E become e, signs become +, everything else a space.
_NUMBER_SHAPE = bytes(
    ord("0") if chr(c).isdigit() and c < 128 else ord("e") if c in b"eE" else ord("+") if c in b"+-" else 32
    for c in range(256)
)
_RISKY_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_PLAIN_NAMES = re.compile(rf"{_PLAIN_NAME.pattern}(?:\n{_PLAIN_NAME.pattern})*")
_ODD_NAMES = re.compile(_ODD_SEGMENT.pattern + "|" + _DRIVE.pattern, re.MULTILINE)
# Raw metadata at most this long is within MAX_METADATA_BYTES once re-serialised: no JSON value grows more
# than 6 times (a 4-digit exponent like 1e15 written out, a UTF-8 character escaped as \uXXXX).
_PLAIN_METADATA_BYTES = MAX_METADATA_BYTES // 6


def _risky_numbers(body: bytes) -> bool:
    """True when the body may hold a number that becomes Infinity in Python (a 3-digit exponent, 300 digits)."""
    shape = body.translate(_NUMBER_SHAPE)
    return b"e000" in shape or b"e+000" in shape or b"0" * 300 in shape


def parse_registration(body: bytes) -> RegistrationBody | None:
    """A registration body whose every entry is plainly valid, decoded and checked without per-entry objects
    for metadata; None when anything needs the full checks (which name the entry at fault) or off PostgreSQL.

    Plainly valid: the shape {samples: [{file_name, width?, height?, size_bytes?, metadata?}], overwrite?} with
    integers in range, file names that need no normalising and appear once, metadata an object (or null) small
    and shallow enough to pass validate_metadata whatever it holds, and no escape or number PostgreSQL or
    Python would refuse. The body's text then goes to PostgreSQL as it is (register_samples' source_json).
    """
    if connection.vendor != "postgresql" or (b"\\u" in body and _RISKY_ESCAPE.search(body)) or _risky_numbers(body):
        return None
    try:
        parsed = _REGISTRATION_DECODER.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    entries = parsed.samples
    names = [entry.file_name for entry in entries]
    if not names:
        return parsed
    joined = "\n".join(names)
    if (
        len(set(names)) != len(names)
        or joined.count("\n") != len(names) - 1  # else a name holds a newline, which the joined checks miss
        or max(map(len, names)) > MAX_FILE_NAME_LENGTH
        or not _PLAIN_NAMES.fullmatch(joined)
        or _ODD_NAMES.search(joined)
    ):
        return None
    for entry in entries:
        meta = bytes(entry.metadata)
        if meta != b"null" and not (
            meta[:1] == b"{"
            and len(meta) <= _PLAIN_METADATA_BYTES
            and meta.count(b"{") + meta.count(b"[") <= MAX_VALUE_DEPTH
        ):
            return None
    return parsed


def _plain_rows(entries: list[RegistrationEntry]) -> list[dict]:
    """Rows for _insert_new from entries parse_registration passed; metadata stays JSON text (bytes)."""
    return [
        {
            "file_name": entry.file_name,
            "width": entry.width,
            "height": entry.height,
            "size_bytes": entry.size_bytes,
            "metadata": entry.metadata,
        }
        for entry in entries
    ]


def _clean_entries(entries, source_json: str | None = None) -> list[dict]:
    """Rows for _insert_new from JSON entries; InvalidEntries naming each bad entry.

    With `source_json` (the strict JSON text the entries were parsed from, without NaN or Infinity),
    metadata is checked by one walk (_metadata_fits); without it, by validate_metadata. Entries from
    parse_registration are already checked (their source_json is required).
    """
    if isinstance(entries, list) and entries and type(entries[0]) is RegistrationEntry:
        if source_json is None:
            raise AssertionError("entries from parse_registration go with the body's text (source_json)")
        return _plain_rows(entries)
    if not isinstance(entries, list):
        raise InvalidEntries([f"samples must be a list of objects, not {_json_kind(entries)}"])
    quick = source_json is not None and not _RISKY_JSON.search(source_json)
    rows, errors, first_seen = [], [], {}
    for i, entry in enumerate(entries):
        if len(errors) >= MAX_REPORTED_ERRORS:
            break
        if type(entry) is not dict:
            errors.append(f"entry {i}: must be an object with file_name, not {_json_kind(entry)}")
            continue
        raw_name = entry.get("file_name")
        try:
            if not _ENTRY_FIELD_SET.issuperset(entry):
                unknown = sorted(set(entry) - _ENTRY_FIELD_SET)
                raise ValueError(f"unknown field {unknown[0]!r}; an entry has {', '.join(ENTRY_FIELDS)}")
            if raw_name is None:
                raise ValueError("file_name is required")
            name = validate_file_name(raw_name)
            if name in first_seen:
                raise ValueError(f"the same file name as entry {first_seen[name]}")
            meta = entry.get("metadata")
            if meta is not None and not (quick and _metadata_plainly_fine(meta)):
                meta = validate_metadata(meta)
            row = {
                "file_name": name,
                "width": _int_or_none(entry, "width", 1, _MAX_INT),
                "height": _int_or_none(entry, "height", 1, _MAX_INT),
                "size_bytes": _int_or_none(entry, "size_bytes", 0, _MAX_BIGINT),
                "metadata": meta if meta is not None else {},
            }
        except ValueError as exc:
            label = f"entry {i}" + (f" (file_name {raw_name[:200]!r})" if isinstance(raw_name, str) else "")
            errors.append(f"{label}: {exc}")
            continue
        first_seen[name] = i
        rows.append(row)
    if errors:
        raise InvalidEntries(errors)
    return rows


def clean_sample_entries(entries) -> list[dict]:
    """Rows for add_samples from JSON entries {file_name, width?, height?, size_bytes?, metadata?}.

    Checks every entry before returning; raises InvalidEntries naming each bad entry by index and file name.
    """
    return _clean_entries(entries)


@dataclass
class Registration:
    created: int = 0
    replaced: int = 0
    skipped: list[str] = field(default_factory=list)  # file names already present (overwrite=False)
    ids: list[str] = field(default_factory=list)  # the sample id of every entry, in the entries' order


def register_samples(
    dataset: Dataset, entries, *, overwrite: bool = False, creator=None, source_json: str | None = None
) -> Registration:
    """Register JSON entries {file_name, width?, height?, size_bytes?, metadata?} in one transaction.

    Every entry is checked first (InvalidEntries names each bad one; nothing is written then). A file
    name already in the dataset is skipped, or with `overwrite` has its width, height, size and
    metadata replaced in place (id and idx stay). `source_json` is the strict JSON text (no NaN or
    Infinity) the entries were parsed from, an object whose `samples` they are: PostgreSQL reads the
    values from it, so they are not serialised again. Work is O(len(entries)), whatever the dataset's size.
    """
    rows = _clean_entries(entries, source_json)
    if source_json is not None and len(rows) != len(entries):
        raise AssertionError("source_json must be the text the entries were parsed from")
    ids = _new_ids(len(rows))
    inserted = _insert_new(dataset, rows, ids, source_json, creator, replace_existing=overwrite)
    for pos, sample_id in inserted.existing.items():
        ids[pos] = sample_id
    dataset.next_idx = inserted.next_idx
    positions = sorted(inserted.existing)
    return Registration(
        created=len(rows) - len(positions),
        replaced=len(positions) if overwrite else 0,
        skipped=[] if overwrite else [rows[pos]["file_name"] for pos in positions],
        ids=ids,
    )


def _new_ids(n: int) -> list[str]:
    """n new sample ids: 24 hex characters, the seconds since 1970 then 64 random bits, as MongoDB's.

    The time first keeps a registration's primary-key inserts at the right edge of the index instead
    of at random pages all over it (which gets slower as the dataset grows).
    """
    head = f"{int(time.time()) & 0xFFFFFFFF:08x}"
    text = secrets.token_hex(8 * n)
    return [head + text[i : i + 16] for i in range(0, 16 * n, 16)]
