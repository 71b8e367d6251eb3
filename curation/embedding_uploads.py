"""Resumable embedding uploads: a session, its parts sent in chunks, then a worker parses and stores them.

Chunks are stored as objects of their own under `datasets/<dataset>/uploads/<session>/<part>/<offset>`
in the configured storage (a local folder or the S3 bucket), because S3 objects cannot be appended
to and the worker that parses them may run on another machine. A chunk is accepted only at the
part's committed offset, under a row lock, so a retried or duplicated chunk never doubles data.
Processing reads the chunks back in order as one stream (curation.embeddings parses streams), then
deletes them, whatever the outcome. Sessions still receiving after WINNOW_EMBEDDING_UPLOAD_HOURS
(default 24) are deleted with their chunks by `expire_uploads` (run on each new session and by an
admin action).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from curation import embeddings, storage
from curation.embeddings import EmbeddingError
from curation.models import Dataset, EmbeddingUpload
from winnow.celery import task

log = logging.getLogger(__name__)

PARTS = {"csv": ("file",), "npy": ("matrix", "names", "labels")}
REQUIRED = {"csv": ("file",), "npy": ("matrix", "names")}
MAX_PART_BYTES = 1 << 40


class Upload:
    """EmbeddingUpload.status values."""

    RECEIVING = "receiving"
    QUEUED = "queued"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


def chunk_max_bytes() -> int:
    return int(getattr(settings, "WINNOW_EMBEDDING_CHUNK_MAX_BYTES", 64 << 20))


def expiry() -> timedelta:
    return timedelta(hours=float(getattr(settings, "WINNOW_EMBEDDING_UPLOAD_HOURS", 24)))


def create_upload(dataset: Dataset, name, kind, sizes, creator=None) -> EmbeddingUpload:
    """A new session; `sizes` maps each part to its total bytes. EmbeddingError names the field at fault."""
    expire_uploads()
    name = embeddings.clean_name(dataset, name)
    if kind not in PARTS:
        raise EmbeddingError(f"must be one of {', '.join(PARTS)}", "kind")
    if not isinstance(sizes, dict) or not sizes:
        raise EmbeddingError("is required: {part: total bytes}", "sizes")
    for part, size in sizes.items():
        if part not in PARTS[kind]:
            raise EmbeddingError(f"{part!r} is not a part of a {kind} upload ({', '.join(PARTS[kind])})", "sizes")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_PART_BYTES:
            raise EmbeddingError(f"{part}: must be a positive number of bytes", "sizes")
        if size > settings.WINNOW_MAX_EMBEDDING_FILE_BYTES:
            raise EmbeddingError(
                f"{part}: {size} bytes is more than this server accepts ({settings.WINNOW_MAX_EMBEDDING_FILE_BYTES}, "
                "WINNOW_MAX_EMBEDDING_FILE_BYTES)",
                "sizes",
            )
    for part in REQUIRED[kind]:
        if part not in sizes:
            raise EmbeddingError(f"a {kind} upload needs the part {part!r}", "sizes")
    return EmbeddingUpload.objects.create(
        dataset=dataset,
        name=name,
        kind=kind,
        sizes=sizes,
        received=dict.fromkeys(sizes, 0),
        chunks={p: [] for p in sizes},
        creator=creator,
    )


class OffsetMismatch(Exception):
    """The chunk does not start at the committed offset (the client resumes from `offset`)."""

    def __init__(self, offset: int):
        super().__init__(f"the part continues at byte {offset}")
        self.offset = offset


def chunk_key(upload: EmbeddingUpload, part: str, offset: int) -> str:
    return storage.embedding_upload_chunk_key(upload.prefix, part, offset)


def add_chunk(upload_id: str, part: str, offset: int, data: bytes) -> EmbeddingUpload:
    """Store `data` as the part's bytes from `offset` on; only the committed offset is accepted."""
    with transaction.atomic():
        upload = EmbeddingUpload.objects.select_for_update().get(pk=upload_id)
        if upload.status != Upload.RECEIVING:
            raise EmbeddingError(f"this upload is {upload.status}; it takes no more chunks", "status")
        if part not in upload.sizes:
            raise EmbeddingError(f"this upload has no part {part!r} (it has {', '.join(upload.sizes)})", "part")
        committed = int(upload.received.get(part, 0))
        if offset != committed:
            raise OffsetMismatch(committed)
        if not data:
            raise EmbeddingError("the chunk is empty", "body")
        if offset + len(data) > upload.sizes[part]:
            raise EmbeddingError(
                f"the chunk ends at byte {offset + len(data)}, past the part's size {upload.sizes[part]}", "body"
            )
        key = storage.save_bytes(chunk_key(upload, part, offset), data)
        try:
            upload.received[part] = offset + len(data)
            upload.chunks[part] = [*upload.chunks.get(part, []), offset]
            upload.save(update_fields=["received", "chunks", "updated_at"])
        except BaseException:
            storage.delete_keys([key])
            raise
    return upload


def complete(upload_id: str) -> EmbeddingUpload:
    """Every part is in: queue the processing (after the commit). Completing twice is harmless."""
    with transaction.atomic():
        upload = EmbeddingUpload.objects.select_for_update().get(pk=upload_id)
        if upload.status != Upload.RECEIVING:
            return upload
        short = [
            f"{p} has {upload.received.get(p, 0)} of {size} bytes"
            for p, size in upload.sizes.items()
            if upload.received.get(p, 0) != size
        ]
        if short:
            raise EmbeddingError(f"the upload is not complete: {'; '.join(short)}", "status")
        upload.status = Upload.QUEUED
        upload.save(update_fields=["status", "updated_at"])
        transaction.on_commit(lambda: _enqueue(upload.pk), robust=True)
    return upload


def _enqueue(upload_id: str) -> None:
    task("curation.process_embedding_upload").delay(upload_id)


class _Chunks:
    """The part's chunks read back in order as one binary stream."""

    def __init__(self, upload: EmbeddingUpload, part: str):
        self.keys = [chunk_key(upload, part, offset) for offset in upload.chunks.get(part, [])]
        self.handle = None

    def read(self, n: int = -1) -> bytes:
        while True:
            if self.handle is None:
                if not self.keys:
                    return b""
                self.handle = storage.open_file(self.keys.pop(0))
            data = self.handle.read(n)
            if data:
                return data
            self.handle.close()
            self.handle = None

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


# Processing reports progress every 2% of the file; one that has said nothing for this long died with its worker.
STALE_AFTER_RUN_STALENESS = 10
BUSY = "busy"


def _stale_before():
    return timezone.now() - timedelta(seconds=settings.WINNOW_RUN_STALE_SECONDS * STALE_AFTER_RUN_STALENESS)


def process(upload_id: str) -> str | None:
    """Parse and store a completed upload (on a worker); returns the final status. The chunks go either way.

    A queued upload is claimed; so is one whose processing went silent (its worker died: the broker hands the
    task out again). BUSY: another worker is processing it and reported progress lately (the task retries).
    """
    now = timezone.now()
    claimable = Q(status=Upload.QUEUED) | Q(status=Upload.PROCESSING, updated_at__lt=_stale_before())
    if not EmbeddingUpload.objects.filter(claimable, pk=upload_id).update(
        status=Upload.PROCESSING, progress=0.0, updated_at=now
    ):
        if EmbeddingUpload.objects.filter(pk=upload_id, status=Upload.PROCESSING).exists():
            return BUSY
        return None  # finished, or not complete
    upload = EmbeddingUpload.objects.select_related("dataset", "creator").get(pk=upload_id)
    last = [0.0]

    def progress(fraction: float) -> None:
        if fraction - last[0] >= 0.02:
            last[0] = fraction
            EmbeddingUpload.objects.filter(pk=upload_id).update(
                progress=round(fraction * 0.95, 3), updated_at=timezone.now()
            )

    streams = {part: _Chunks(upload, part) for part in upload.sizes}
    try:
        if upload.kind == "csv":
            embedding = embeddings.create_from_csv(
                upload.dataset,
                upload.name,
                streams["file"],
                creator=upload.creator,
                progress=progress,
                size=upload.sizes["file"],
            )
        else:
            embedding = embeddings.create_from_npy(
                upload.dataset,
                upload.name,
                streams["matrix"],
                streams["names"],
                streams.get("labels"),
                creator=upload.creator,
                progress=progress,
                size=upload.sizes["matrix"],
            )
    except EmbeddingError as exc:
        EmbeddingUpload.objects.filter(pk=upload_id).update(
            status=Upload.FAILED, error=str(exc), error_field=exc.field, updated_at=timezone.now()
        )
        return Upload.FAILED
    except Exception:
        log.exception("embedding upload %s failed", upload_id)
        EmbeddingUpload.objects.filter(pk=upload_id).update(
            status=Upload.FAILED,
            error="the server failed to process the upload; see the worker log",
            updated_at=timezone.now(),
        )
        raise
    finally:
        for stream in streams.values():
            stream.close()
        discard_chunks(upload)
    EmbeddingUpload.objects.filter(pk=upload_id).update(
        status=Upload.SUCCEEDED, progress=1.0, embedding=embedding, updated_at=timezone.now()
    )
    return Upload.SUCCEEDED


def discard_chunks(upload: EmbeddingUpload) -> None:
    storage.delete_keys(
        chunk_key(upload, part, offset) for part, offsets in upload.chunks.items() for offset in offsets
    )
    storage.delete_prefix(upload.prefix)


def delete_upload(upload: EmbeddingUpload) -> None:
    discard_chunks(upload)
    upload.delete()


def expire_uploads() -> int:
    """Delete sessions that stopped receiving chunks longer ago than the expiry, with their chunks."""
    stale = EmbeddingUpload.objects.filter(status=Upload.RECEIVING, updated_at__lt=timezone.now() - expiry())
    count = 0
    for upload in stale[:100]:
        delete_upload(upload)
        count += 1
    return count
