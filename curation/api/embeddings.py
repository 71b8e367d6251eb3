"""REST API: embeddings of a dataset, in Lightly's CSV format, and their 2D projection for the map.

POST   /datasets/<id>/embeddings                      editor+: multipart `file` + `name`, or a
                                                     `text/csv` body with `?name=` -> 201; or
                                                     multipart `matrix` (float32 .npy) + `names`
                                                     (one a line, or a JSON list) [+ `labels` .npy]
POST   /datasets/<id>/embeddings/uploads              editor+: resumable upload session
                                                     {kind: csv|npy, name, size | sizes} -> 201
GET    /datasets/<id>/embeddings/uploads/<up_id>      its status, progress, committed bytes per part
PUT    /datasets/<id>/embeddings/uploads/<up_id>/<part>  a chunk (raw body) at `Content-Range:
                                                     bytes a-b/total` or `?offset=a` -> 200; 409 and
                                                     the committed offset when a is not it
POST   /datasets/<id>/embeddings/uploads/<up_id>/complete  -> 202; a worker parses and stores it
DELETE /datasets/<id>/embeddings/uploads/<up_id>      abandon: the chunks go
GET    /datasets/<id>/embeddings                      list
GET    /datasets/<id>/embeddings/<emb_id>             one
DELETE /datasets/<id>/embeddings/<emb_id>             editor+ -> 204, files deleted after commit
GET    /datasets/<id>/embeddings/<emb_id>/csv         the same CSV format back
GET    /datasets/<id>/embeddings/<emb_id>/projection  float32 little-endian (n x 2), row i = idx i,
                                                     NaN rows for idx without a sample; 202 while
                                                     computing, 409 if it failed
"""

from __future__ import annotations

import io
import re

import numpy as np
from django.conf import settings
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import BaseParser
from rest_framework.response import Response
from rest_framework.views import APIView

from curation import embedding_uploads, embeddings, storage
from curation.access import get_dataset
from curation.api.files import AnyAcceptNegotiation
from curation.embeddings import Status
from curation.models import Embedding, EmbeddingUpload, Role
from winnow.fields import StringField
from winnow.parsers import MultiPartParser, PayloadTooLarge

METHODS = ("pca", "tsne")


class CsvParser(BaseParser):
    """A raw `text/csv` body, kept as bytes (the CSV is parsed and validated by curation.embeddings)."""

    media_type = "text/csv"

    def parse(self, stream, media_type=None, parser_context=None):
        return stream if stream is not None else io.BytesIO()  # read as a stream by the view


class EmbeddingSerializer(serializers.ModelSerializer):
    dataset = serializers.CharField(source="dataset_id", read_only=True)
    creator = serializers.CharField(source="creator.username", default=None, read_only=True)
    projection_methods = serializers.SerializerMethodField()

    class Meta:
        model = Embedding
        fields = [
            "id",
            "dataset",
            "name",
            "dimension",
            "count",
            "source",
            "model",
            "projection_status",
            "projection_methods",
            "creator",
            "created_at",
        ]
        read_only_fields = fields
        extra_kwargs = {"count": {"help_text": "Rows of the matrix: the samples with idx below it."}}

    def get_projection_methods(self, embedding) -> list[str]:
        return available_methods(embedding)


def available_methods(embedding: Embedding) -> list[str]:
    if embedding.projection_status not in (Status.PARTIAL, Status.READY) or not embedding.projection_key:
        return []
    best = embeddings.layout_method(embedding.projection_key)
    return ["pca"] if best == "pca" else ["pca", best]


def _embedding(dataset, embedding_id: str) -> Embedding:
    embedding = Embedding.objects.select_related("creator").filter(dataset=dataset, pk=embedding_id).first()
    if embedding is None:
        raise Http404("No embedding with that id in this dataset.")
    return embedding


class EmbeddingList(APIView):
    parser_classes = [MultiPartParser, CsvParser]

    @extend_schema(responses={200: EmbeddingSerializer(many=True)}, summary="List the dataset's embeddings")
    def get(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id)
        rows = Embedding.objects.filter(dataset=dataset).select_related("creator").order_by("created_at", "id")
        return Response(EmbeddingSerializer(rows, many=True).data)

    @extend_schema(
        request={
            "multipart/form-data": inline_serializer(
                "EmbeddingUpload",
                {
                    "name": serializers.CharField(),
                    "file": serializers.FileField(),
                },
            ),
            "text/csv": OpenApiTypes.BINARY,
        },
        parameters=[OpenApiParameter("name", str, description="The embedding's name (with a text/csv body)")],
        responses={201: EmbeddingSerializer},
        summary="Upload embeddings as Lightly's CSV (filenames,embedding_0,...,labels)",
    )
    def post(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.EDITOR)
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if _content_length(request) > limit:  # Django counts only form fields against it, never files
            raise PayloadTooLarge(
                f"The upload is larger than {limit} bytes (WINNOW_MAX_REQUEST_BYTES): send it in chunks "
                "(POST .../embeddings/uploads; the client and CLI do so for files over 32 MiB)."
            )
        try:
            if (request.content_type or "").startswith("multipart/"):
                name = request.data.get("name")
                if "matrix" in request.FILES or "names" in request.FILES:
                    embedding = self._npy(dataset, name, request)
                else:
                    upload = request.FILES.get("file")
                    if upload is None:
                        raise ValidationError({"file": ["is required: the CSV as a `file` part"]})
                    if not upload.size:
                        raise ValidationError({"file": ["the CSV is empty"]})
                    embedding = embeddings.create_from_csv(dataset, name, upload, creator=request.user)
            else:
                if not _content_length(request):
                    raise ValidationError({"file": ["the CSV is empty"]})
                stream = request.data if hasattr(request.data, "read") else io.BytesIO()
                embedding = embeddings.create_from_csv(
                    dataset, request.query_params.get("name"), stream, creator=request.user
                )
        except embeddings.EmbeddingError as exc:
            raise ValidationError({exc.field: [str(exc)]}) from None
        return Response(EmbeddingSerializer(embedding).data, status=status.HTTP_201_CREATED)

    def _npy(self, dataset, name, request):
        matrix, names = request.FILES.get("matrix"), request.FILES.get("names")
        for field, part in (("matrix", matrix), ("names", names)):
            if part is None or not part.size:
                raise ValidationError({field: [f"is required with a binary upload: the {field} file"]})
        return embeddings.create_from_npy(
            dataset, name, matrix, names, request.FILES.get("labels"), creator=request.user
        )


class UploadSerializer(serializers.ModelSerializer):
    dataset = serializers.CharField(source="dataset_id", read_only=True)
    embedding = serializers.CharField(source="embedding_id", read_only=True, default=None)

    class Meta:
        model = EmbeddingUpload
        fields = [
            "id",
            "dataset",
            "name",
            "kind",
            "sizes",
            "received",
            "status",
            "progress",
            "error",
            "error_field",
            "embedding",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class UploadCreateSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=list(embedding_uploads.PARTS))
    name = StringField(max_length=embeddings.MAX_NAME_LENGTH)
    size = serializers.IntegerField(required=False, min_value=1, help_text="Total bytes of a CSV (kind csv)")
    sizes = serializers.DictField(
        child=serializers.IntegerField(min_value=1),
        required=False,
        help_text="Total bytes per part: file (csv); matrix, names, labels (npy)",
    )


def _content_length(request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0


def _upload(dataset, upload_id: str) -> EmbeddingUpload:
    upload = EmbeddingUpload.objects.filter(dataset=dataset, pk=upload_id).first()
    if upload is None:
        raise Http404("No embeddings upload with that id in this dataset.")
    return upload


def _domain_error(exc: embeddings.EmbeddingError):
    return ValidationError({exc.field: [str(exc)]})


class UploadList(APIView):
    @extend_schema(
        request=UploadCreateSerializer,
        responses={201: UploadSerializer},
        operation_id="embedding_uploads_start",
        summary="Start a resumable embeddings upload (CSV, or a .npy matrix plus file names)",
    )
    def post(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.EDITOR)
        body = UploadCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        sizes = dict(body.validated_data.get("sizes") or {})
        if "size" in body.validated_data:
            sizes.setdefault("file" if body.validated_data["kind"] == "csv" else "matrix", body.validated_data["size"])
        try:
            upload = embedding_uploads.create_upload(
                dataset, body.validated_data["name"], body.validated_data["kind"], sizes, creator=request.user
            )
        except embeddings.EmbeddingError as exc:
            raise _domain_error(exc) from None
        return Response(UploadSerializer(upload).data, status=status.HTTP_201_CREATED)


class UploadDetail(APIView):
    @extend_schema(responses={200: UploadSerializer}, summary="An upload: committed bytes per part, status, progress")
    def get(self, request, dataset_id: str, upload_id: str):
        dataset = get_dataset(request.user, dataset_id)
        return Response(UploadSerializer(_upload(dataset, upload_id)).data)

    @extend_schema(responses={204: None}, summary="Abandon an upload; its chunks are deleted")
    def delete(self, request, dataset_id: str, upload_id: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.EDITOR)
        upload = _upload(dataset, upload_id)
        if upload.status in (embedding_uploads.Upload.QUEUED, embedding_uploads.Upload.PROCESSING):
            raise ValidationError({"status": [f"the upload is {upload.status}; wait for it to finish"]})
        embedding_uploads.delete_upload(upload)
        return Response(status=status.HTTP_204_NO_CONTENT)


CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)\Z")


class RawParser(BaseParser):
    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return stream


class UploadChunk(APIView):
    parser_classes = [RawParser]

    @extend_schema(
        request={"application/octet-stream": OpenApiTypes.BINARY},
        parameters=[OpenApiParameter("offset", int, description="Where the chunk starts (or a Content-Range header)")],
        responses={
            200: UploadSerializer,
            409: OpenApiResponse(description="Not at the committed offset; the body's `offset` says where to continue"),
        },
        summary="Send a chunk of a part at its committed offset",
    )
    def put(self, request, dataset_id: str, upload_id: str, part: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.EDITOR)
        upload = _upload(dataset, upload_id)
        offset, expected = self._offset(request)
        limit = embedding_uploads.chunk_max_bytes()
        if _content_length(request) > limit:
            raise ValidationError({"body": [f"a chunk may be at most {limit} bytes"]})
        data = request.stream.read(limit + 1) if request.stream is not None else b""
        if len(data) > limit:
            raise ValidationError({"body": [f"a chunk may be at most {limit} bytes"]})
        if expected is not None and expected != len(data):
            raise ValidationError({"body": [f"Content-Range announces {expected} bytes, the body has {len(data)}"]})
        try:
            upload = embedding_uploads.add_chunk(upload.pk, part, offset, data)
        except embedding_uploads.OffsetMismatch as exc:
            return Response({"detail": str(exc), "offset": exc.offset}, status=status.HTTP_409_CONFLICT)
        except embeddings.EmbeddingError as exc:
            raise _domain_error(exc) from None
        return Response(UploadSerializer(upload).data)

    post = put

    @staticmethod
    def _offset(request) -> tuple[int, int | None]:
        header = request.headers.get("Content-Range")
        if header:
            match = CONTENT_RANGE.match(header.strip())
            if not match or int(match[2]) < int(match[1]):
                raise ValidationError({"Content-Range": ["must be `bytes <first>-<last>/<total>`"]})
            return int(match[1]), int(match[2]) - int(match[1]) + 1
        raw = request.query_params.get("offset")
        if raw is None or not (raw.isascii() and raw.isdigit()):
            raise ValidationError({"offset": ["is required: ?offset=<bytes> or a Content-Range header"]})
        return int(raw), None


class UploadComplete(APIView):
    @extend_schema(
        request=None,
        responses={202: UploadSerializer},
        summary="Every part is sent: a worker parses and stores the embedding (poll the upload)",
    )
    def post(self, request, dataset_id: str, upload_id: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.EDITOR)
        upload = _upload(dataset, upload_id)
        try:
            upload = embedding_uploads.complete(upload.pk)
        except embeddings.EmbeddingError as exc:
            raise _domain_error(exc) from None
        upload.refresh_from_db()
        return Response(UploadSerializer(upload).data, status=status.HTTP_202_ACCEPTED)


class EmbeddingDetail(APIView):
    @extend_schema(responses={200: EmbeddingSerializer}, summary="One embedding")
    def get(self, request, dataset_id: str, embedding_id: str):
        dataset = get_dataset(request.user, dataset_id)
        return Response(EmbeddingSerializer(_embedding(dataset, embedding_id)).data)

    @extend_schema(responses={204: None}, summary="Delete an embedding and its files")
    def delete(self, request, dataset_id: str, embedding_id: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.EDITOR)
        embeddings.delete_embedding(_embedding(dataset, embedding_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class EmbeddingCsv(APIView):
    content_negotiation_class = AnyAcceptNegotiation

    @extend_schema(
        responses={(200, "text/csv"): OpenApiResponse(OpenApiTypes.BINARY)},
        summary="Download the embedding as Lightly's CSV",
    )
    def get(self, request, dataset_id: str, embedding_id: str):
        dataset = get_dataset(request.user, dataset_id)
        embedding = _embedding(dataset, embedding_id)
        response = StreamingHttpResponse(embeddings.csv_chunks(embedding), content_type="text/csv; charset=utf-8")
        filename = re.sub(r"[^A-Za-z0-9._-]+", "_", embedding.name).strip("._") or "embedding"
        response["Content-Disposition"] = f'attachment; filename="{filename}.csv"'
        return response


class EmbeddingProjection(APIView):
    content_negotiation_class = AnyAcceptNegotiation

    @extend_schema(
        parameters=[OpenApiParameter("method", str, enum=METHODS, description="Default: the best layout available")],
        responses={
            (200, "application/octet-stream"): OpenApiResponse(
                OpenApiTypes.BINARY,
                description="float32 little-endian, n x 2 row-major; row i = idx i; NaN where no sample. "
                "Headers X-Projection-Count (n) and X-Projection-Method.",
            ),
            202: inline_serializer(
                "ProjectionPending", {"detail": serializers.CharField(), "projection_status": serializers.CharField()}
            ),
            409: OpenApiResponse(description="The projection failed"),
        },
        summary="The 2D projection for the embedding map, as compact binary",
    )
    def get(self, request, dataset_id: str, embedding_id: str):
        dataset = get_dataset(request.user, dataset_id)
        embedding = _embedding(dataset, embedding_id)
        method = request.query_params.get("method") or None
        if method is not None and method not in METHODS:
            raise ValidationError({"method": [f"must be one of {', '.join(METHODS)}"]})
        state = embedding.projection_status
        if state == Status.FAILED:
            return Response(
                {
                    "detail": "The projection of this embedding failed; upload it again to retry.",
                    "projection_status": state,
                },
                status=status.HTTP_409_CONFLICT,
            )
        methods = available_methods(embedding)
        chosen = method or (methods[-1] if methods else None)
        if chosen not in methods:
            if state == Status.PENDING or (state == Status.PARTIAL and chosen == "tsne"):
                return Response(
                    {"detail": "The projection is being computed; try again shortly.", "projection_status": state},
                    status=status.HTTP_202_ACCEPTED,
                )
            raise Http404(
                f"This embedding has no {chosen} layout: t-SNE is computed only for embeddings of "
                "at most WINNOW_TSNE_MAX_POINTS samples."
            )
        try:
            layout = storage.load_matrix(embeddings.layout_key(embedding, chosen))
        except FileNotFoundError:
            raise Http404("The projection file is missing from storage.") from None
        response = HttpResponse(
            np.ascontiguousarray(layout, dtype="<f4").tobytes(), content_type="application/octet-stream"
        )
        response["X-Projection-Count"] = str(layout.shape[0])
        response["X-Projection-Method"] = chosen
        response["Cache-Control"] = "private, max-age=60"
        return response


urlpatterns = [
    path("datasets/<str:dataset_id>/embeddings/uploads", UploadList.as_view(), name="embedding-upload-list"),
    path(
        "datasets/<str:dataset_id>/embeddings/uploads/<str:upload_id>",
        UploadDetail.as_view(),
        name="embedding-upload-detail",
    ),
    path(
        "datasets/<str:dataset_id>/embeddings/uploads/<str:upload_id>/complete",
        UploadComplete.as_view(),
        name="embedding-upload-complete",
    ),
    path(
        "datasets/<str:dataset_id>/embeddings/uploads/<str:upload_id>/<str:part>",
        UploadChunk.as_view(),
        name="embedding-upload-chunk",
    ),
    path("datasets/<str:dataset_id>/embeddings", EmbeddingList.as_view(), name="embedding-list"),
    path("datasets/<str:dataset_id>/embeddings/<str:embedding_id>", EmbeddingDetail.as_view(), name="embedding-detail"),
    path("datasets/<str:dataset_id>/embeddings/<str:embedding_id>/csv", EmbeddingCsv.as_view(), name="embedding-csv"),
    path(
        "datasets/<str:dataset_id>/embeddings/<str:embedding_id>/projection",
        EmbeddingProjection.as_view(),
        name="embedding-projection",
    ),
]
