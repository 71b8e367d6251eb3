"""Celery tasks of the curation app: thin wrappers over curation.embeddings, taking ids only."""

from __future__ import annotations

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from curation import embedding_uploads, embeddings, filters, predictions


@shared_task(name="curation.compute_projection")
def compute_projection(embedding_id: str) -> str | None:
    """The 2D layouts of an embedding for the map (PCA at once, t-SNE for small ones)."""
    return embeddings.compute_projection(embedding_id)


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


@shared_task(bind=True, name="curation.process_embedding_upload", max_retries=None)
def process_embedding_upload(self, upload_id: str) -> str | None:
    """Parse and store a completed resumable embeddings upload (curation.embedding_uploads)."""
    outcome = embedding_uploads.process(upload_id)
    if outcome == embedding_uploads.BUSY and not self.request.is_eager:
        # Another worker holds it: look again later, and take over once it has gone silent (its worker died).
        raise self.retry(countdown=settings.WINNOW_RUN_STALE_SECONDS)
    return outcome


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
