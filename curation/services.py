"""Dataset and sample logic shared by the REST API, the pages, the admin and the tasks."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.db import connection, transaction

from curation import storage, tagging
from curation.metadata import MAX_VALUE_DEPTH, bad_value
from curation.models import INITIAL_TAG, Dataset, Membership, Role, Sample, Tag, new_public_id

MAX_FILE_NAME_LENGTH = 1024
MAX_DATASET_NAME_LENGTH = 200
# One sample's metadata, serialised; more than this is a document, not metadata.
MAX_METADATA_BYTES = 64 * 1024
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


@transaction.atomic
def create_dataset(owner, name: str, upload_mode: str) -> Dataset:
    dataset = Dataset.objects.create(owner=owner, name=name, upload_mode=upload_mode)
    Membership.objects.create(dataset=dataset, user=owner, role=Role.OWNER)
    return dataset


def delete_dataset(dataset: Dataset) -> None:
    """Delete the dataset's rows, then its files (rows first: a failure leaves orphan files, never dangling rows)."""
    prefix = dataset.storage_prefix
    with transaction.atomic():
        dataset.delete()
    transaction.on_commit(lambda: storage.delete_prefix(prefix))


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
    if (isinstance(name, str) and len(name) <= MAX_FILE_NAME_LENGTH and _PLAIN_NAME.fullmatch(name)
            and not _ODD_SEGMENT.search(name) and not _DRIVE.match(name)):
        return name  # the common case, in three C-speed scans
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
    text = json.dumps(value, separators=(",", ":"))
    if len(text) > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is {len(text)} bytes as JSON; at most {MAX_METADATA_BYTES} are allowed per sample")
    if "\\ud" in text:  # astral characters are escaped as surrogate pairs: only a lone one is an error
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("metadata holds text that is not valid Unicode (a lone surrogate)") from None
    return value


def _metadata_text(value) -> str:
    """Metadata parsed from JSON as the compact JSON text to store, or ValueError as validate_metadata's.

    One json.dumps serves the checks (no NaN/Infinity, no NUL, depth, size) and the insert; anything
    unusual goes through validate_metadata for its message. Only for values parsed from JSON (string keys).
    """
    if type(value) is dict:
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (ValueError, TypeError, RecursionError):
            text = None
        if (text is not None and "\\u0000" not in text
                and text.count("{") + text.count("[") <= MAX_VALUE_DEPTH):
            if text.isascii():
                if len(text) <= MAX_METADATA_BYTES:
                    return text
            else:
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    pass
                else:
                    if len(json.dumps(value, separators=(",", ":"))) <= MAX_METADATA_BYTES:
                        return text
    return json.dumps(validate_metadata(value), ensure_ascii=False, separators=(",", ":"))


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
            sample = Sample(id=sample_id, dataset_id=dataset.pk, idx=inserted.start + offset,
                            file_name=row["file_name"], **values)
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
        chunk = names[start:start + 5000]
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


# Short keys for a row on its way to PostgreSQL: (row key, JSON key, SQL type).
_RECORD_KEYS = (("width", "w", "int"), ("height", "h", "int"), ("size_bytes", "s", "bigint"),
                ("format", "fmt", "varchar"), ("sha256", "sha", "varchar"), ("original_key", "ok", "varchar"),
                ("thumbnail_key", "tk", "varchar"))
_RECORD_TYPE = "o int, i varchar, f varchar, m jsonb, " + ", ".join(f"{key} {kind}" for _, key, kind in _RECORD_KEYS)


def _records(rows: list[dict], ids: list[str], metadata_texts: list[str] | None) -> str:
    """The rows as one JSON array for json_to_recordset (metadata spliced in as the JSON text it already is)."""
    parts = []
    dumps = json.dumps
    for pos, row in enumerate(rows):
        record = {"o": pos, "i": ids[pos], "f": row["file_name"]}
        for key, short, _ in _RECORD_KEYS:
            value = row.get(key)
            if value is not None:
                record[short] = value
        text = dumps(record, ensure_ascii=False, separators=(",", ":"))
        if metadata_texts is not None:
            meta = metadata_texts[pos]
        else:
            meta = row.get("metadata")
            meta = None if meta is None else dumps(meta, separators=(",", ":"))
        if meta is not None:
            text = f'{text[:-1]},"m":{meta}}}'
        parts.append(text)
    return "[" + ",".join(parts) + "]"


_INSERT_SQL = """
WITH j AS MATERIALIZED (
    SELECT j.*, present.id AS existing
    FROM json_to_recordset(%(rows)s::json) AS j({record_type})
    LEFT JOIN {sample} AS present ON present.dataset_id = %(dataset)s AND present.file_name = j.f
), fresh AS (
    SELECT j.*, row_number() OVER (ORDER BY j.o) - 1 AS rank FROM j WHERE j.existing IS NULL
), ins AS (
    INSERT INTO {sample} (id, dataset_id, idx, file_name, width, height, size_bytes, format, sha256,
                          original_key, thumbnail_key, metadata, created_at)
    SELECT i, %(dataset)s, %(start)s + rank, f, w, h, s, coalesce(fmt, ''), coalesce(sha, ''), coalesce(ok, ''),
           coalesce(tk, ''), coalesce(m, '{{}}'::jsonb), now()
    FROM fresh
    RETURNING 1
), bump AS (
    UPDATE {dataset} SET next_idx = next_idx + (SELECT count(*) FROM ins) WHERE id = %(dataset)s
    RETURNING next_idx
), tag AS (
    UPDATE {tag} SET count = (SELECT next_idx FROM bump) WHERE dataset_id = %(dataset)s AND name = %(initial)s
    RETURNING 1
)
SELECT (SELECT next_idx FROM bump), (SELECT count(*) FROM tag),
       ARRAY(SELECT o FROM j WHERE existing IS NOT NULL ORDER BY o),
       ARRAY(SELECT existing FROM j WHERE existing IS NOT NULL ORDER BY o)
"""


def _insert_new(dataset: Dataset, rows: list[dict], ids: list[str], metadata_texts: list[str] | None,
                creator) -> _Inserted:
    """Insert the rows whose file name the dataset does not hold yet, numbered with the next dense idx values.

    Call inside a transaction. `rows` hold normalised, checked values; `ids` the new samples' ids. On
    PostgreSQL the dataset's row lock is taken only here and held to the commit: one statement inserts,
    moves next_idx and sets initial-tag's count. A failure rolls the whole transaction back, so no idx
    is ever skipped.
    """
    if connection.vendor != "postgresql":
        return _insert_new_orm(dataset, rows, ids, creator)
    payload = _records(rows, ids, metadata_texts)  # built before the lock
    sql = _INSERT_SQL.format(record_type=_RECORD_TYPE, sample=Sample._meta.db_table,
                             dataset=Dataset._meta.db_table, tag=Tag._meta.db_table)
    with connection.cursor() as cursor:
        # The lock orders parallel batches of one dataset; the next statement's snapshot sees the
        # samples every earlier holder committed.
        cursor.execute(f"SELECT next_idx FROM {Dataset._meta.db_table} WHERE id = %s FOR UPDATE", [dataset.pk])
        (start,) = cursor.fetchone()
        cursor.execute(sql, {"rows": payload, "dataset": dataset.pk, "start": start, "initial": INITIAL_TAG})
        next_idx, tagged, positions, existing_ids = cursor.fetchone()
    if not tagged and next_idx > 0:
        tagging.create_initial_tag(dataset.pk, next_idx, creator)
    return _Inserted(start=start, next_idx=next_idx, existing=dict(zip(positions, existing_ids)))


def _insert_new_orm(dataset: Dataset, rows: list[dict], ids: list[str], creator) -> _Inserted:
    """_insert_new for SQLite (the embedded default), through the ORM; SQLite runs one writer at a time."""
    locked = Dataset.objects.select_for_update().only("id", "next_idx").get(pk=dataset.pk)
    names = [row["file_name"] for row in rows]
    present: dict[str, str] = {}
    for start in range(0, len(names), 500):
        chunk = names[start:start + 500]
        present.update(Sample.objects.filter(dataset_id=dataset.pk, file_name__in=chunk).values_list("file_name", "id"))
    existing, created = {}, []
    for pos, row in enumerate(rows):
        if row["file_name"] in present:
            existing[pos] = present[row["file_name"]]
            continue
        values = {key: row[key] for key in SAMPLE_FIELDS if row.get(key) is not None}
        created.append(Sample(id=ids[pos], dataset_id=dataset.pk, idx=locked.next_idx + len(created),
                              file_name=row["file_name"], **values))
    next_idx = locked.next_idx + len(created)
    if created:
        Sample.objects.bulk_create(created, batch_size=500)
        Dataset.objects.filter(pk=dataset.pk).update(next_idx=next_idx)
        tagging.set_initial_tag_count(dataset.pk, next_idx, creator)
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


def _clean_entries(entries) -> tuple[list[dict], list[str]]:
    """(rows, metadata as JSON text) from JSON entries; InvalidEntries naming each bad entry."""
    if not isinstance(entries, list):
        raise InvalidEntries([f"samples must be a list of objects, not {_json_kind(entries)}"])
    rows, texts, errors, first_seen = [], [], [], {}
    for i, entry in enumerate(entries):
        if len(errors) >= MAX_REPORTED_ERRORS:
            break
        if not isinstance(entry, dict):
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
            row = {
                "file_name": name,
                "width": _int_or_none(entry, "width", 1, _MAX_INT),
                "height": _int_or_none(entry, "height", 1, _MAX_INT),
                "size_bytes": _int_or_none(entry, "size_bytes", 0, _MAX_BIGINT),
            }
            meta = entry.get("metadata")
            text = "{}" if meta is None else _metadata_text(meta)
        except ValueError as exc:
            label = f"entry {i}" + (f" (file_name {raw_name[:200]!r})" if isinstance(raw_name, str) else "")
            errors.append(f"{label}: {exc}")
            continue
        first_seen[name] = i
        rows.append(row)
        texts.append(text)
    if errors:
        raise InvalidEntries(errors)
    return rows, texts


def clean_sample_entries(entries) -> list[dict]:
    """Rows for add_samples from JSON entries {file_name, width?, height?, size_bytes?, metadata?}.

    Checks every entry before returning; raises InvalidEntries naming each bad entry by index and file name.
    """
    rows, texts = _clean_entries(entries)
    for row, text in zip(rows, texts):
        row["metadata"] = json.loads(text)
    return rows


@dataclass
class Registration:
    created: int = 0
    replaced: int = 0
    skipped: list[str] = field(default_factory=list)  # file names already present (overwrite=False)
    ids: list[str] = field(default_factory=list)  # the sample id of every entry, in the entries' order


_REPLACE_SQL = """
UPDATE {sample} AS sample
SET width = j.w, height = j.h, size_bytes = j.s, metadata = coalesce(j.m, '{{}}'::jsonb)
FROM json_to_recordset(%(rows)s::json) AS j({record_type})
WHERE sample.dataset_id = %(dataset)s AND sample.file_name = j.f AND j.o = ANY(%(positions)s)
"""


def register_samples(dataset: Dataset, entries, *, overwrite: bool = False, creator=None) -> Registration:
    """Register JSON entries {file_name, width?, height?, size_bytes?, metadata?} (as parsed from JSON).

    Every entry is checked first (InvalidEntries names each bad one; nothing is written then). A file
    name already in the dataset is skipped, or with `overwrite` has its width, height, size and
    metadata replaced in place (id and idx stay). Work is O(len(entries)), whatever the dataset's size.
    """
    rows, texts = _clean_entries(entries)
    ids = [new_public_id() for _ in rows]
    result = Registration()
    with transaction.atomic():
        inserted = _insert_new(dataset, rows, ids, texts, creator)
        positions = sorted(inserted.existing)
        if positions and overwrite:
            _replace_registered(dataset, rows, ids, texts, positions)
            result.replaced = len(positions)
        elif positions:
            result.skipped = [rows[pos]["file_name"] for pos in positions]
    for pos, sample_id in inserted.existing.items():
        ids[pos] = sample_id
    result.ids = ids
    result.created = len(rows) - len(positions)
    dataset.next_idx = inserted.next_idx
    return result


def _replace_registered(dataset: Dataset, rows: list[dict], ids: list[str], texts: list[str],
                        positions: list[int]) -> None:
    if connection.vendor == "postgresql":
        sql = _REPLACE_SQL.format(sample=Sample._meta.db_table, record_type=_RECORD_TYPE)
        with connection.cursor() as cursor:
            cursor.execute(sql, {"rows": _records(rows, ids, texts), "dataset": dataset.pk, "positions": positions})
        return
    samples = _existing_by_name(dataset, [rows[pos]["file_name"] for pos in positions])
    changed = []
    for pos in positions:
        sample = samples[rows[pos]["file_name"]]
        for key in ("width", "height", "size_bytes"):
            setattr(sample, key, rows[pos][key])
        sample.metadata = json.loads(texts[pos])
        changed.append(sample)
    Sample.objects.bulk_update(changed, ["width", "height", "size_bytes", "metadata"], batch_size=500)
