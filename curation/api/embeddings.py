"""REST API: embeddings of a dataset, in Lightly's CSV format, and their 2D projection for the map.

    POST   /datasets/<id>/embeddings                      editor+: multipart `file` + `name`, or a
                                                         `text/csv` body with `?name=` -> 201
    GET    /datasets/<id>/embeddings                      list
    GET    /datasets/<id>/embeddings/<emb_id>             one
    DELETE /datasets/<id>/embeddings/<emb_id>             editor+ -> 204, files deleted after commit
    GET    /datasets/<id>/embeddings/<emb_id>/csv         the same CSV format back
    GET    /datasets/<id>/embeddings/<emb_id>/projection  float32 little-endian (n x 2), row i = idx i,
                                                         NaN rows for idx without a sample; 202 while
                                                         computing, 409 if it failed
"""

from __future__ import annotations

import re

import numpy as np
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import BaseParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from curation import embeddings, storage
from curation.access import get_dataset
from curation.api.files import AnyAcceptNegotiation
from curation.embeddings import Status
from curation.models import Embedding, Role

METHODS = ("pca", "tsne")


class CsvParser(BaseParser):
    """A raw `text/csv` body, kept as bytes (the CSV is parsed and validated by curation.embeddings)."""

    media_type = "text/csv"

    def parse(self, stream, media_type=None, parser_context=None):
        return stream.read() if stream is not None else b""


class EmbeddingSerializer(serializers.ModelSerializer):
    dataset = serializers.CharField(source="dataset_id", read_only=True)
    creator = serializers.CharField(source="creator.username", default=None, read_only=True)
    projection_methods = serializers.SerializerMethodField()

    class Meta:
        model = Embedding
        fields = ["id", "dataset", "name", "dimension", "count", "source", "projection_status",
                  "projection_methods", "creator", "created_at"]
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
            "multipart/form-data": inline_serializer("EmbeddingUpload", {
                "name": serializers.CharField(), "file": serializers.FileField(),
            }),
            "text/csv": OpenApiTypes.BINARY,
        },
        parameters=[OpenApiParameter("name", str, description="The embedding's name (with a text/csv body)")],
        responses={201: EmbeddingSerializer},
        summary="Upload embeddings as Lightly's CSV (filenames,embedding_0,...,labels)",
    )
    def post(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.EDITOR)
        if (request.content_type or "").startswith("multipart/"):
            upload = request.FILES.get("file")
            if upload is None:
                raise ValidationError({"file": ["is required: the CSV as a `file` part"]})
            name = request.data.get("name")
            data = upload.read()
        else:
            data = request.data if isinstance(request.data, bytes) else b""
            name = request.query_params.get("name")
        if not data:
            raise ValidationError({"file": ["the CSV is empty"]})
        try:
            embedding = embeddings.create_from_csv(dataset, name, data, creator=request.user)
        except embeddings.EmbeddingError as exc:
            raise ValidationError({exc.field: [str(exc)]}) from None
        return Response(EmbeddingSerializer(embedding).data, status=status.HTTP_201_CREATED)


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
            202: inline_serializer("ProjectionPending", {"detail": serializers.CharField(),
                                                         "projection_status": serializers.CharField()}),
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
            return Response({"detail": "The projection of this embedding failed; upload it again to retry.",
                             "projection_status": state}, status=status.HTTP_409_CONFLICT)
        methods = available_methods(embedding)
        chosen = method or (methods[-1] if methods else None)
        if chosen not in methods:
            if state == Status.PENDING or (state == Status.PARTIAL and chosen == "tsne"):
                return Response({"detail": "The projection is being computed; try again shortly.",
                                 "projection_status": state}, status=status.HTTP_202_ACCEPTED)
            raise Http404(f"This embedding has no {chosen} layout: t-SNE is computed only for embeddings of "
                          "at most WINNOW_TSNE_MAX_POINTS samples.")
        try:
            layout = storage.load_matrix(embeddings.layout_key(embedding, chosen))
        except FileNotFoundError:
            raise Http404("The projection file is missing from storage.") from None
        response = HttpResponse(np.ascontiguousarray(layout, dtype="<f4").tobytes(),
                                content_type="application/octet-stream")
        response["X-Projection-Count"] = str(layout.shape[0])
        response["X-Projection-Method"] = chosen
        response["Cache-Control"] = "private, max-age=60"
        return response


urlpatterns = [
    path("datasets/<str:dataset_id>/embeddings", EmbeddingList.as_view(), name="embedding-list"),
    path("datasets/<str:dataset_id>/embeddings/<str:embedding_id>", EmbeddingDetail.as_view(),
         name="embedding-detail"),
    path("datasets/<str:dataset_id>/embeddings/<str:embedding_id>/csv", EmbeddingCsv.as_view(),
         name="embedding-csv"),
    path("datasets/<str:dataset_id>/embeddings/<str:embedding_id>/projection", EmbeddingProjection.as_view(),
         name="embedding-projection"),
]
