"""Image upload: a batch of image files becomes samples, each file landing or failing on its own.

`store_images` takes plain values: the uploaded files, their names (optional), per-file metadata, `overwrite`
(a file name already in the dataset is skipped unless it is true) and `embed` (false defers the built-in
embedder: a client uploading many batches sends true only with the last). The HTTP form that carries them
(`POST /api/v1/datasets/<id>/samples`, multipart) is read in curation.api.samples.

Order of work: check everything per file (name, size, decode, thumbnail), write the files to storage,
then create the rows in one transaction. If that transaction fails, the files just written are
deleted again: no rows without files and no orphan files. Files a replaced sample no longer uses
are deleted after the commit. When the database connection is lost at the commit (a restart, a crash), the
commit may have landed without its answer: the files are deleted only once the database says no row refers to
them, and kept (logged) while it cannot say, so a row never loses its file.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from curation import columns, services, storage
from curation.errors import DomainError
from curation.images import ImageRejected, process_image
from curation.models import Dataset, Sample, new_public_id
from winnow.celery import task
from winnow.dberrors import database_unavailable

log = logging.getLogger(__name__)

META_MODE_MESSAGE = (
    "this dataset keeps metadata only (meta): it takes no image files; "
    'register samples as JSON {"samples": [{"file_name": ...}]}'
)


@dataclass
class _Prepared:
    row: dict
    keys: list[str] = field(default_factory=list)
    original: object | None = None  # the uploaded file (on disk when large), written as it streams
    thumbnail: bytes = b""


@dataclass
class UploadOutcome:
    created: list[dict] = field(default_factory=list)
    replaced: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # file names, as the JSON registration reports them
    rejected: list[dict] = field(default_factory=list)

    @property
    def stored(self) -> bool:
        """Whether any sample was created or replaced."""
        return bool(self.created or self.replaced)

    def as_dict(self) -> dict:
        return {"created": self.created, "replaced": self.replaced, "skipped": self.skipped, "rejected": self.rejected}


def check_takes_images(dataset: Dataset) -> None:
    """Refuse image uploads to a dataset that keeps no pixels (`meta`): DomainError naming upload_mode.

    The API calls it before reading a multipart body, so a refused upload is not spooled first."""
    if not dataset.has_pixels:
        raise DomainError(META_MODE_MESSAGE, "upload_mode")


def store_images(
    dataset: Dataset,
    files: list,
    *,
    file_names: list | None = None,
    metadata: dict | None = None,
    overwrite: bool = False,
    embed: bool = True,
    creator=None,
) -> UploadOutcome:
    """Store a batch of uploaded images in `dataset` (already checked: the caller may edit it).

    `files` are Django UploadedFile objects (in memory, or on disk when large); `file_names`, when given, names them in
    order (relative paths; without it each file keeps its own name); `metadata` maps file names to custom
    metadata. Raises DomainError for a batch that cannot be read as a whole; a single bad file is rejected
    in the outcome while the rest lands.
    """
    check_takes_images(dataset)
    metadata = metadata or {}
    if not files:
        raise DomainError("no files in the request: send the images as `files` parts", "files")
    if len(files) > settings.WINNOW_MAX_SAMPLES_PER_REQUEST:
        limit = settings.WINNOW_MAX_SAMPLES_PER_REQUEST
        raise DomainError(f"{len(files)} files in one request; at most {limit} are allowed", "files")
    if file_names is not None:
        if len(file_names) != len(files):
            raise DomainError(f"has {len(file_names)} entries for {len(files)} files", "file_names")
        bad = next((i for i, name in enumerate(file_names) if not isinstance(name, str)), None)
        if bad is not None:
            raise DomainError(f"entry {bad} is not a string", "file_names")
    raw_names = file_names if file_names is not None else [upload.name or "" for upload in files]

    outcome = UploadOutcome()
    wanted: dict[str, int] = {}  # normalised name -> position in the batch
    for i, raw in enumerate(raw_names):
        try:
            name = services.validate_file_name(raw)
        except ValueError as exc:
            outcome.rejected.append({"file_name": raw, "reason": str(exc)})
            continue
        if name in wanted:
            outcome.rejected.append(
                {"file_name": raw, "reason": f"appears more than once in this upload (files {wanted[name]} and {i})"}
            )
            continue
        wanted[name] = i
    # Metadata for a file rejected by name goes with that file: the rest of the batch still lands.
    per_file_metadata = _metadata_by_name(metadata, set(wanted), {r["file_name"] for r in outcome.rejected})

    present = _present(dataset, list(wanted))
    prepared: list[_Prepared] = []
    for name, i in wanted.items():
        if name in present and not overwrite:
            # Resuming an interrupted upload: no need to decode what is already there.
            outcome.skipped.append(name)
            continue
        upload = files[i]
        try:
            prepared.append(_prepare(dataset, name, upload, per_file_metadata.get(name)))
        except ImageRejected as exc:
            outcome.rejected.append({"file_name": raw_names[i], "reason": str(exc)})

    if not prepared:  # everything skipped or rejected: nothing to write, no lock to take
        return outcome
    written = _write_files(prepared)
    try:
        with transaction.atomic():
            result = services.add_samples(dataset, [p.row for p in prepared], overwrite=overwrite, creator=creator)
            if result.replaced_old_keys:
                old_keys = list(result.replaced_old_keys)
                transaction.on_commit(lambda: storage.delete_keys(old_keys), robust=True)
            if embed and (result.created or result.replaced):
                _enqueue_embedding(dataset.pk)
            if result.replaced:
                columns.metadata_changed(dataset.pk)
            elif result.created:
                columns.samples_added(dataset.pk)
    except BaseException as exc:
        if database_unavailable(exc) and _rows_refer_to(dataset.pk, [p.row["thumbnail_key"] for p in prepared]):
            log.warning(
                "upload into %s: the database went away at the commit; keeping %d files", dataset.pk, len(written)
            )
        else:
            storage.delete_keys(written)
        raise

    if result.skipped:  # another upload added these names after our check: our copies are unused
        lost = set(result.skipped)
        storage.delete_keys(key for p in prepared if p.row["file_name"] in lost for key in p.keys)
        outcome.skipped.extend(result.skipped)
    outcome.created = [_summary(s) for s in result.created]
    outcome.replaced = [_summary(s) for s in result.replaced]
    return outcome


# After a lost connection, how long to wait for the database to say whether the batch's rows were committed.
LANDED_CHECK_SECONDS = 15.0


def _rows_refer_to(dataset_id: str, thumbnail_keys: list[str]) -> bool:
    """Whether committed samples use these (fresh, per-sample) keys; True while the database cannot tell."""
    if connection.in_atomic_block:  # an outer transaction: it cannot be asked apart from it
        return True
    deadline = time.monotonic() + LANDED_CHECK_SECONDS
    while True:
        try:
            connection.close()  # the broken one; the query opens a new connection
            return Sample.objects.filter(dataset_id=dataset_id, thumbnail_key__in=thumbnail_keys).exists()
        except Exception as exc:
            if not database_unavailable(exc) or time.monotonic() > deadline:
                log.warning("cannot tell whether %d samples landed in %s: keeping their files", len(thumbnail_keys),
                            dataset_id)  # fmt: skip
                return True
            time.sleep(0.5)


def _summary(sample: Sample) -> dict:
    return {"id": sample.id, "idx": sample.idx, "file_name": sample.file_name}


def _metadata_by_name(metadata: dict, names: set[str], rejected: set[str] = frozenset()) -> dict[str, dict]:
    """Per-file metadata keyed by normalised file name; every key must name a file of this upload.

    Keys equal to a name in `rejected` (files already refused by name) are dropped with their file.
    """
    out: dict[str, dict] = {}
    for raw, value in metadata.items():
        if raw in rejected:
            continue
        try:
            name = services.validate_file_name(raw)
        except ValueError as exc:
            raise DomainError(f"{raw!r}: {exc}", "metadata") from None
        if name not in names:
            raise DomainError(f"{raw!r} is not the name of a file in this upload", "metadata")
        try:
            out[name] = services.validate_metadata(value)
        except ValueError as exc:
            raise DomainError(f"{raw!r}: {exc}", "metadata") from None
    return out


def _present(dataset: Dataset, names: list[str]) -> set[str]:
    """The names already in the dataset."""
    found: set[str] = set()
    for start in range(0, len(names), 1000):
        chunk = names[start : start + 1000]
        found.update(Sample.objects.filter(dataset=dataset, file_name__in=chunk).values_list("file_name", flat=True))
    return found


def _prepare(dataset: Dataset, name: str, upload, metadata: dict | None) -> _Prepared:
    limit = settings.WINNOW_MAX_UPLOAD_BYTES
    if upload.size is not None and upload.size > limit:
        raise ImageRejected(f"the file is {upload.size} bytes; the limit is {limit} bytes")
    upload.seek(0)
    data = upload.read()
    if len(data) > limit:
        raise ImageRejected(f"the file is {len(data)} bytes; the limit is {limit} bytes")
    if not data:
        raise ImageRejected("the file is empty")
    image = process_image(data)
    sample_id = new_public_id()
    keep_original = dataset.stores_originals
    row = {
        "id": sample_id,
        "file_name": name,
        "width": image.width,
        "height": image.height,
        "size_bytes": len(data),
        "format": image.format,
        "sha256": hashlib.sha256(data).hexdigest(),
        "original_key": storage.original_key(dataset.pk, sample_id, image.extension) if keep_original else "",
        "thumbnail_key": storage.thumbnail_key(dataset.pk, sample_id),
    }
    if metadata is not None:
        row["metadata"] = metadata
    # The bytes go now; the original is streamed again from the upload when it is written.
    return _Prepared(row=row, original=upload if keep_original else None, thumbnail=image.thumbnail)


def _write_files(prepared: list[_Prepared]) -> list[str]:
    """Write originals and thumbnails; on any failure delete what was written and re-raise."""
    written: list[str] = []
    try:
        for p in prepared:
            if p.original is not None:
                # The upload's own file (on disk when large), not the upload: its content type is the client's claim.
                written.append(storage.save_new(p.row["original_key"], p.original.file))
                p.keys.append(p.row["original_key"])
                p.original = None
            written.append(storage.save_new(p.row["thumbnail_key"], p.thumbnail))
            p.keys.append(p.row["thumbnail_key"])
            p.thumbnail = b""
    except BaseException:
        storage.delete_keys(written)
        raise
    return written


def _enqueue_embedding(dataset_id: str) -> None:
    def enqueue() -> None:
        requested_at = timezone.now().isoformat()
        task("curation.embed_dataset").delay(dataset_id, requested_at=requested_at)

    # robust: with in-process tasks a failing embedder must not turn a stored upload into a 500.
    transaction.on_commit(enqueue, robust=True)
