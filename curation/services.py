"""Dataset and sample logic shared by the REST API, the pages, the admin and the tasks."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field

from django.contrib.auth import get_user_model
from django.db import transaction

from curation import bitmask, storage
from curation.models import Dataset, Membership, Role, Sample, Tag, TagOrigin
from curation.tagging import INITIAL_TAG

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

def validate_file_name(name: str) -> str:
    """The normalised relative path of a sample (forward slashes), or ValueError(reason).

    A backslash counts as a path separator (Windows clients send `a\\b.jpg`) and becomes `/`. Rejected:
    empty names, absolute paths (`/x`, `C:\\x`, `\\\\server\\x`), `.` and `..` segments, empty segments
    (`a//b`, a trailing `/`), control characters and names longer than 1024 characters.
    """
    if not isinstance(name, str):
        raise ValueError("file name must be a string")
    if not name.strip():
        raise ValueError("file name is empty")
    if len(name) > MAX_FILE_NAME_LENGTH:
        raise ValueError(f"file name is longer than {MAX_FILE_NAME_LENGTH} characters ({len(name)})")
    bad = next((ch for ch in name if unicodedata.category(ch) == "Cc"), None)
    if bad is not None:
        raise ValueError(f"file name contains the control character {bad!r}")
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
    from curation.metadata import bad_value

    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"metadata must be a JSON object, not {_json_kind(value)}")
    problem = bad_value(value)
    if problem:
        raise ValueError(f"metadata.{problem}")
    size = len(json.dumps(value, separators=(",", ":")))
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are allowed per sample")
    return value


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


def add_samples(dataset: Dataset, rows: list[dict], *, overwrite: bool = False, creator=None) -> AddResult:
    """Add samples to `dataset` in one transaction; a file name already present is skipped (or replaced).

    Each row holds Sample field values already validated by the caller: `file_name` (required), and
    optionally `id`, `width`, `height`, `size_bytes`, `format`, `sha256`, `original_key`,
    `thumbnail_key`, `metadata`. New samples get the next dense idx values (never reused) and join the
    tag `initial-tag`, which holds every sample. ValueError when a file name is invalid or
    appears twice in `rows`: nothing is written then.
    """
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

    result = AddResult()
    with transaction.atomic():
        # The row lock serialises uploads into one dataset: idx allocation and the "already present"
        # check below cannot race with another upload.
        locked = Dataset.objects.select_for_update().only("id", "next_idx").get(pk=dataset.pk)
        existing = _existing_by_name(locked, names)
        start = locked.next_idx
        new_rows, updates = [], []
        for name, row in zip(names, rows):
            old = existing.get(name)
            if old is None:
                new_rows.append((name, row))
            elif overwrite:
                updates.append((old, row))
            else:
                result.skipped.append(name)
                result.skipped_ids.append(old.id)

        created = []
        for offset, (name, row) in enumerate(new_rows):
            values = {key: row[key] for key in SAMPLE_FIELDS if key in row and row[key] is not None}
            if row.get("id"):
                values["id"] = row["id"]
            created.append(Sample(dataset_id=locked.pk, idx=start + offset, file_name=name, **values))
        if created:
            Sample.objects.bulk_create(created, batch_size=2000)
            Dataset.objects.filter(pk=locked.pk).update(next_idx=start + len(created))
            dataset.next_idx = start + len(created)
        result.created = created

        # Rows grouped by the fields they set: bulk_update writes only those, never a field left unloaded.
        by_fields: dict[tuple, list[Sample]] = {}
        for old, row in updates:
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

        if created:
            result.initial_tag = _extend_initial_tag(locked, start, len(created), creator)
    return result


def _extend_initial_tag(dataset: Dataset, start: int, added: int, creator) -> Tag:
    """`initial-tag` holds every sample, as Lightly's does: new samples (idx start..start+added-1) join it.

    The one tag that is not a frozen snapshot: a client that uploads in many batches, and Lightly's
    client (which derives its bitmasks from it), both need it to cover the whole dataset.
    """
    new = bitmask.from_indices(range(start, start + added))
    tag = Tag.objects.select_for_update().filter(dataset_id=dataset.pk, name=INITIAL_TAG).first()
    if tag is None:
        # Samples from before the tag existed (idx < start) belong in it too.
        earlier = Sample.objects.filter(dataset_id=dataset.pk, idx__lt=start).values_list("idx", flat=True)
        mask = bitmask.union(bitmask.from_indices(list(earlier)), new)
        return Tag.objects.create(
            dataset_id=dataset.pk, name=INITIAL_TAG, bitmask=mask, count=bitmask.count(mask),
            origin=TagOrigin.UPLOAD, origin_detail={}, creator=creator,
        )
    tag.bitmask = bitmask.union(bytes(tag.bitmask), new)
    tag.count = bitmask.count(tag.bitmask)
    tag.save(update_fields=["bitmask", "count"])
    return tag


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


# --- JSON registration (samples without pixels) ----------------------------------------------------------

ENTRY_FIELDS = ("file_name", "width", "height", "size_bytes", "metadata")
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
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{key} must be an integer, not {_json_kind(value)}")
    if not low <= value <= high:
        raise ValueError(f"{key} must be between {low} and {high} (got {value})")
    return value


def clean_sample_entries(entries) -> list[dict]:
    """Rows for add_samples from JSON entries {file_name, width?, height?, size_bytes?, metadata?}.

    Checks every entry before returning; raises InvalidEntries naming each bad entry by index and file name.
    """
    if not isinstance(entries, list):
        raise InvalidEntries([f"samples must be a list of objects, not {_json_kind(entries)}"])
    rows, errors, first_seen = [], [], {}
    for i, entry in enumerate(entries):
        if len(errors) >= MAX_REPORTED_ERRORS:
            break
        if not isinstance(entry, dict):
            errors.append(f"entry {i}: must be an object with file_name, not {_json_kind(entry)}")
            continue
        raw_name = entry.get("file_name")
        label = f"entry {i}" + (f" (file_name {raw_name[:200]!r})" if isinstance(raw_name, str) else "")
        try:
            unknown = sorted(set(entry) - set(ENTRY_FIELDS))
            if unknown:
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
                "metadata": validate_metadata(entry.get("metadata")),
            }
        except ValueError as exc:
            errors.append(f"{label}: {exc}")
            continue
        first_seen[name] = i
        rows.append(row)
    if errors:
        raise InvalidEntries(errors)
    return rows
