"""Celery tasks of the curation app: thin wrappers over curation.embeddings, taking ids only."""

from __future__ import annotations

import functools
import logging
import time

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from curation import columns, embedding_uploads, embeddings, filters, predictions, projection_child, similarity
from winnow.celery import sweep_while_up

log = logging.getLogger(__name__)


@shared_task(
    name="curation.compute_projection",
    soft_time_limit=settings.WINNOW_PROJECTION_TIME_LIMIT,  # the projection is then marked failed
    time_limit=settings.WINNOW_PROJECTION_TIME_LIMIT + 30,
)
def compute_projection(embedding_id: str) -> str | None:
    """The 2D layouts of an embedding for the map (PCA at once, t-SNE for small ones)."""
    if settings.WINNOW_PROJECTION_IN_CHILD:  # the embedded default: not in the web process, bounded
        return projection_child.run(embedding_id)
    return embeddings.compute_projection(embedding_id)


def resend_stale_projections(last_sent: dict[str, float]) -> list[str]:
    """Send the stale pending projections again, each at most once per time limit from this worker."""
    now = time.monotonic()
    due = [
        embedding_id
        for embedding_id in embeddings.stale_pending_projections()
        if now - last_sent.get(embedding_id, -1e18) > settings.WINNOW_PROJECTION_TIME_LIMIT + 60
    ]
    for embedding_id in due:
        embeddings.send_projection(embedding_id)
        last_sent[embedding_id] = now
    return due


@worker_ready.connect
def _sweep_projections_while_up(sender=None, **_kwargs):
    # A projection whose message was lost (broker down at upload) would stay "pending" forever otherwise.
    last_sent: dict[str, float] = {}
    sweep_while_up(
        "winnow-projection-sweeper",
        60.0,
        functools.partial(resend_stale_projections, last_sent),
        what="sweeping pending projections",
    )


@shared_task(name="curation.embed_dataset")
def embed_dataset(dataset_id: str, requested_at: str | None = None) -> str | None:
    """Run the built-in embedder over the dataset's thumbnails; store it as the embedding "default".

    `requested_at` (ISO time the upload committed) lets a run stand down when a later upload has
    queued its own.
    """
    return embeddings.embed_dataset(dataset_id, requested_at)


@shared_task(name="curation.sync_sort_indexes")
def sync_sort_indexes(dataset_id: str, field_id: int) -> list[str]:
    """Build (or, for a removed field, drop) the indexes that sort the sample list by a configured field."""
    built = filters.build_sort_indexes(field_id)
    if not built:
        filters.drop_sort_indexes(dataset_id, field_id)
    return built


@shared_task(name="curation.build_metadata_columns")
def build_metadata_columns(dataset_id: str) -> dict | None:
    """(Re)build the dataset's metadata column store (curation.columns) from its samples."""
    return columns.build(dataset_id)


@shared_task(bind=True, name="curation.process_embedding_upload", max_retries=None)
def process_embedding_upload(self, upload_id: str) -> str | None:
    """Parse and store a completed resumable embeddings upload (curation.embedding_uploads)."""
    outcome = embedding_uploads.process(upload_id)
    if outcome == embedding_uploads.BUSY and not self.request.is_eager:
        # Another worker holds it: look again later, and take over once it has gone silent (its worker died).
        raise self.retry(countdown=settings.WINNOW_RUN_STALE_SECONDS)
    return outcome


@shared_task(name="curation.run_similarity")
def run_similarity(run_id: str) -> str | None:
    """A similarity search or near-duplicate grouping too large for a request (curation.similarity)."""
    return similarity.execute(run_id)


@shared_task(name="curation.process_prediction_upload")
def process_prediction_upload(upload_id: str) -> str:
    """Parse, check and store a prediction task upload (curation.predictions)."""
    return predictions.process(upload_id)


@shared_task(name="curation.resume_prediction_uploads")
def resume_prediction_uploads() -> list[str]:
    """Send abandoned prediction uploads out again; the claim lets exactly one attempt take each."""
    upload_ids = predictions.abandoned_uploads()
    for upload_id in upload_ids:
        process_prediction_upload.delay(upload_id)
    return upload_ids


@worker_ready.connect
def _resume_uploads_on_worker_start(sender=None, **_kwargs):
    # A worker that starts often replaces one that died mid-upload.
    resume_prediction_uploads.delay()
