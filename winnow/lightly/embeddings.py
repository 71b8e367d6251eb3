"""`/v1/datasets/<ds>/embeddings`: list (newest first), signed CSV upload and download, the 2D trigger.

`writeCSVUrl?name=` reserves an embedding id and answers a signed PUT URL for it; the PUT validates
the CSV exactly as Winnow's own upload does (curation.embeddings) and stores it under that id, which
the client keeps as its `embedding_id`. Nothing is stored before the PUT, so an embedding listed here
is always processed. The PUT URL works once; `readCSVUrl` answers a signed GET URL for the CSV.
"""

from __future__ import annotations

import re

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError
from django.http import Http404, JsonResponse, StreamingHttpResponse
from django.urls import reverse

from curation import embeddings, signing
from curation.access import get_dataset
from curation.models import Dataset, Embedding, Role, new_public_id
from winnow.lightly.base import ApiError, LightlyView, json_string, ms, no_content, not_found

PROJECTION_METHODS = ("PCA", "TSNE", "UMAP")


def embedding_data(embedding: Embedding) -> dict:
    """Lightly's DatasetEmbeddingData: a stored embedding is always processed (the CSV was validated)."""
    return {"id": embedding.id, "name": embedding.name, "isProcessed": True, "createdAt": ms(embedding.created_at)}


def dataset_embedding(dataset: Dataset, embedding_id: str) -> Embedding:
    embedding = Embedding.objects.filter(dataset=dataset, pk=embedding_id).first()
    if embedding is None:
        raise not_found("EMBEDDING_UNKNOWN", f"No embedding with id {embedding_id!r} in this dataset.")
    return embedding


def store_csv(dataset: Dataset, name: str, data, creator, embedding_id: str, size: int | None = None) -> Embedding:
    """curation.embeddings.create_from_csv, stored under the id that writeCSVUrl gave the client.

    `data` is bytes or a binary stream (the request itself): the CSV is parsed as it arrives, in the streaming
    parser Winnow's own upload uses, so memory holds the matrix once whatever the CSV's size.
    """
    return embeddings.create_from_csv(dataset, name, data, creator=creator, embedding_id=embedding_id, size=size)


class EmbeddingListView(LightlyView):
    def get(self, request, dataset_id: str):
        dataset = self.dataset(request, dataset_id)
        # Newest first: the client takes [0] as the latest and the first prefix match as "the" embedding.
        rows = Embedding.objects.filter(dataset=dataset).order_by("-created_at", "-id")
        return JsonResponse([embedding_data(e) for e in rows], safe=False)


class WriteCsvUrlView(LightlyView):
    def get(self, request, dataset_id: str):
        dataset = self.dataset(request, dataset_id, need=Role.EDITOR)
        try:
            name = embeddings.clean_name(dataset, request.GET.get("name"))
        except embeddings.EmbeddingError as exc:
            code = "EMBEDDING_NAME_EXISTS" if "already has" in str(exc) else "BAD_REQUEST"
            raise self.invalid(f"name {exc}", code) from None
        embedding_id = new_public_id()
        path = reverse("lightly-embedding-csv", args=[dataset.id, embedding_id])
        url = signing.sign(request, "PUT", path, {"name": name}, signing.CSV_TTL, request.user)
        return JsonResponse({"signedWriteUrl": url, "embeddingId": embedding_id})


class ReadCsvUrlView(LightlyView):
    def get(self, request, dataset_id: str, embedding_id: str):
        dataset = self.dataset(request, dataset_id)
        embedding = dataset_embedding(dataset, embedding_id)
        path = reverse("lightly-embedding-csv", args=[dataset.id, embedding.id])
        return json_string(signing.sign(request, "GET", path, {}, signing.CSV_TTL, request.user))


class EmbeddingCsvView(LightlyView):
    """The signed URLs themselves: PUT stores the CSV (once), GET streams it back. No token here."""

    token_required = False
    retried_methods = ("PUT",)

    def _dataset(self, user, dataset_id: str, need: str) -> Dataset:
        try:
            return get_dataset(user, dataset_id, need=need)
        except (Http404, PermissionDenied):  # the signer lost access since
            raise ApiError(403, "FORBIDDEN", "The user who asked for this URL may no longer do this.") from None

    def put(self, request, dataset_id: str, embedding_id: str):
        user, params = signing.verify(request)
        dataset = self._dataset(user, dataset_id, Role.EDITOR)
        if Embedding.objects.filter(pk=embedding_id).exists() or not signing.claim_once(request, embedding_id):
            raise ApiError(403, "FORBIDDEN", "This upload URL was already used; ask for a new one (writeCSVUrl).")
        written = False
        try:
            try:
                length = int(request.META.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if not length:
                raise self.invalid("The CSV is empty.", "EMBEDDING_INVALID")
            if length > settings.WINNOW_MAX_EMBEDDING_FILE_BYTES:
                # The body streams into the matrix (the CSV is never held), so the bound is the one on embedding
                # files, not WINNOW_MAX_REQUEST_BYTES: Lightly's client sends the whole CSV in this one PUT.
                raise ApiError(
                    413,
                    "PAYLOAD_TOO_LARGE",
                    f"The CSV is {length} bytes, more than this server accepts for an embedding file "
                    f"({settings.WINNOW_MAX_EMBEDDING_FILE_BYTES}, WINNOW_MAX_EMBEDDING_FILE_BYTES).",
                )
            store_csv(dataset, params.get("name", ""), request, user, embedding_id, length)
            written = True
        except embeddings.EmbeddingError as exc:
            raise self.invalid(f"{exc.field}: {exc}", "EMBEDDING_INVALID") from None
        except IntegrityError:
            raise ApiError(403, "FORBIDDEN", "This upload URL was already used; ask for a new one.") from None
        finally:
            if not written:
                signing.release(embedding_id)
        return JsonResponse({"id": embedding_id})

    def get(self, request, dataset_id: str, embedding_id: str):
        user, _params = signing.verify(request)
        dataset = self._dataset(user, dataset_id, Role.VIEWER)
        embedding = dataset_embedding(dataset, embedding_id)
        response = StreamingHttpResponse(embeddings.csv_chunks(embedding), content_type="text/csv; charset=utf-8")
        filename = re.sub(r"[^A-Za-z0-9._-]+", "_", embedding.name).strip("._") or "embedding"
        response["Content-Disposition"] = f'attachment; filename="{filename}.csv"'
        # The client copies the raw body to disk: it must never be compressed (GZipMiddleware skips this).
        response["Content-Encoding"] = "identity"
        response["Cache-Control"] = "no-store"
        return response


class Trigger2dView(LightlyView):
    def post(self, request, dataset_id: str, embedding_id: str):
        """Winnow computes the map's 2D layout when the embedding is stored; this only checks the request."""
        dataset = self.dataset(request, dataset_id, need=Role.EDITOR)
        dataset_embedding(dataset, embedding_id)
        method = self.json_body(request).get("dimensionalityReductionMethod")
        if method not in PROJECTION_METHODS:
            raise self.invalid(f"dimensionalityReductionMethod must be one of {', '.join(PROJECTION_METHODS)}")
        return no_content()


class EmbeddingDetailView(LightlyView):
    def delete(self, request, dataset_id: str, embedding_id: str):
        dataset = self.dataset(request, dataset_id, need=Role.EDITOR)
        embeddings.delete_embedding(dataset_embedding(dataset, embedding_id))
        return no_content()
