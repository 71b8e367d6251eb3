"""REST API: "more like this" searches and near-duplicate groups (curation.similarity).

POST /datasets/<id>/similarity/search         a search: JSON {embedding, sample | tag | samples [+ mode] | vector, k,
                                              metric, input_tag, exclude_query}, or multipart with an `image` file ->
                                              201 with the finished run when small, else 202 (poll the run)
POST /datasets/<id>/similarity/duplicates     editor+: {embedding, threshold (omit: suggested), metric,
                                              input_tag} -> 202
GET  /datasets/<id>/similarity/runs           the dataset's runs, newest first (at most 100)
GET  /datasets/<id>/similarity/runs/<run_id>  status, progress (0..1), error, summary
GET  /datasets/<id>/similarity/runs/<run_id>/results?offset=&limit=  ranked results (search) or groups
POST /datasets/<id>/similarity/runs/<run_id>/tag  editor+: {name, top_k} (search) or {name, keep: first|largest,
                                              mode: keepers|deduplicated|duplicates} (duplicates) -> 201 the tag
"""

from __future__ import annotations

import json

from django.http import Http404
from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.views import APIView

from curation import knn, similarity
from curation.access import get_dataset
from curation.api.analytics import sample_urls
from curation.api.tags import TagSerializer
from curation.models import Embedding, Role, SimilarityRun
from winnow import query

MAX_PAGE = 1000
MAX_GROUPS = 200
MAX_OFFSET = 10**9


class RunSerializer(serializers.ModelSerializer):
    dataset = serializers.CharField(source="dataset_id", read_only=True)
    embedding = serializers.CharField(source="embedding_id", read_only=True)

    class Meta:
        model = SimilarityRun
        fields = [
            "id",
            "dataset",
            "embedding",
            "kind",
            "params",
            "status",
            "progress",
            "error",
            "summary",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class SearchSerializer(serializers.Serializer):
    embedding = serializers.CharField(required=False, help_text="Embedding id or name (default: 'default')")
    sample = serializers.CharField(required=False, help_text="Query: a sample id")
    tag = serializers.CharField(required=False, help_text="Query: a tag id")
    samples = serializers.ListField(
        child=serializers.CharField(max_length=64),
        required=False,
        allow_empty=False,
        max_length=similarity.MAX_EACH_MEMBERS,
        help_text="Query: sample ids (an unsaved selection), searched like a tag",
    )
    mode = serializers.ChoiceField(
        choices=similarity.QUERY_MODES,
        default="centroid",
        help_text="With a tag or samples: their centroid, or each member",
    )
    vector = serializers.ListField(child=serializers.FloatField(), required=False, help_text="Query: a vector")
    image = serializers.FileField(required=False, help_text="Query: an image file (multipart), embedded on the server")
    k = serializers.IntegerField(min_value=1, max_value=similarity.MAX_K, default=similarity.DEFAULT_K)
    metric = serializers.ChoiceField(choices=knn.METRICS, default="euclidean")
    input_tag = serializers.CharField(required=False, help_text="Search only this tag's samples")
    exclude_query = serializers.BooleanField(default=True, help_text="Leave the query samples out of the results")


class DuplicatesSerializer(serializers.Serializer):
    embedding = serializers.CharField(required=False, help_text="Embedding id or name (default: 'default')")
    threshold = serializers.FloatField(
        required=False, allow_null=True, min_value=0, help_text="Distance within which two samples are duplicates"
    )
    metric = serializers.ChoiceField(choices=knn.METRICS, default="euclidean")
    input_tag = serializers.CharField(required=False, help_text="Look only among this tag's samples")


class TagBodySerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    top_k = serializers.IntegerField(required=False, min_value=1, help_text="Search: the first top_k results")
    keep = serializers.ChoiceField(choices=similarity.KEEP_RULES, default="first", help_text="Duplicates")
    mode = serializers.ChoiceField(choices=similarity.TAG_MODES, default="keepers", help_text="Duplicates")


def _embedding(dataset, value: str | None) -> Embedding:
    value = value or "default"
    found = (
        Embedding.objects.filter(dataset=dataset, pk=value).first()
        or Embedding.objects.filter(dataset=dataset, name=value).first()
    )
    if found is None:
        raise ValidationError({"embedding": [f"no embedding with id or name {value!r} in this dataset"]})
    return found


def _run(dataset, run_id: str) -> SimilarityRun:
    run = SimilarityRun.objects.filter(dataset=dataset, pk=run_id).select_related("dataset", "embedding").first()
    if run is None:
        raise Http404("No similarity run with that id in this dataset.")
    return run


def _add_urls(dataset, row: dict) -> None:
    """The sample's thumbnail URL (the samples API's, permission-checked), where pixels are kept."""
    has = row.pop("has_thumbnail", False)
    row["thumbnail_url"] = sample_urls(dataset, row["sample_id"], has, False)["thumbnail_url"] if has else None


class Search(APIView):
    parser_classes = [JSONParser, MultiPartParser]

    @extend_schema(
        request=SearchSerializer,
        responses={201: RunSerializer, 202: RunSerializer},
        summary="More like this: rank samples by distance to a sample, a tag, a vector or an image",
    )
    def post(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id)
        data = request.data
        if (request.content_type or "").startswith("multipart/") and "vector" in data:
            data = data.copy()  # a multipart vector arrives as one JSON text
            try:
                data.setlist("vector", json.loads(data["vector"]))
            except (ValueError, TypeError):
                raise ValidationError({"vector": ["must be a JSON list of numbers"]}) from None
        body = SearchSerializer(data=data)
        body.is_valid(raise_exception=True)
        v = body.validated_data
        embedding = _embedding(dataset, v.get("embedding"))
        image = v.get("image")
        query = similarity.resolve_query(
            dataset,
            embedding,
            sample=v.get("sample"),
            tag=v.get("tag"),
            samples=v.get("samples"),
            mode=v["mode"],
            vector=v.get("vector"),
            image=image.read(similarity.MAX_IMAGE_BYTES + 1) if image is not None else None,
            image_name=image.name if image is not None else "",
        )
        run = similarity.create_search(
            dataset,
            embedding,
            query,
            k=v["k"],
            metric=v["metric"],
            input_tag=v.get("input_tag"),
            exclude_query=v["exclude_query"],
            creator=request.user,
        )
        done = run.status in (similarity.SUCCEEDED, similarity.FAILED)
        return Response(RunSerializer(run).data, status=status.HTTP_201_CREATED if done else status.HTTP_202_ACCEPTED)


class Duplicates(APIView):
    @extend_schema(
        request=DuplicatesSerializer,
        responses={202: RunSerializer},
        summary="Group exact (same sha256) and near duplicates (within a distance threshold)",
    )
    def post(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.EDITOR)
        body = DuplicatesSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        v = body.validated_data
        run = similarity.create_duplicates(
            dataset,
            _embedding(dataset, v.get("embedding")),
            threshold=v.get("threshold"),
            metric=v["metric"],
            input_tag=v.get("input_tag"),
            creator=request.user,
        )
        run.refresh_from_db()
        return Response(RunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class RunList(APIView):
    @extend_schema(responses={200: RunSerializer(many=True)}, summary="The dataset's similarity runs, newest first")
    def get(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id)
        kind = request.query_params.get("kind")
        rows = SimilarityRun.objects.filter(dataset=dataset)
        if kind:
            rows = rows.filter(kind=kind)
        return Response(RunSerializer(rows.order_by("-created_at")[:100], many=True).data)  # a short list


class RunDetail(APIView):
    @extend_schema(responses={200: RunSerializer}, summary="A similarity run: status, progress, summary")
    def get(self, request, dataset_id: str, run_id: str):
        dataset = get_dataset(request.user, dataset_id)
        return Response(RunSerializer(_run(dataset, run_id)).data)


class RunResults(APIView):
    @extend_schema(
        responses={200: None},
        parameters=[
            query.integer_parameter("offset", "Results (search) or groups (duplicates) to skip", 0, MAX_OFFSET, 0),
            query.integer_parameter(
                "limit",
                f"Page size: search results (default 100), or groups (at most {MAX_GROUPS}, default 20)",
                1,
                MAX_PAGE,
            ),
        ],
        summary="A finished run's ranked results (search) or groups (duplicates)",
    )
    def get(self, request, dataset_id: str, run_id: str):
        dataset = get_dataset(request.user, dataset_id)
        run = _run(dataset, run_id)
        params = request.query_params
        offset = query.integer(params, "offset", 0, 0, MAX_OFFSET)
        try:
            if run.kind == similarity.SEARCH:
                page = similarity.search_page(run, offset, query.integer(params, "limit", 100, 1, MAX_PAGE))
            else:
                page = similarity.groups_page(run, offset, query.integer(params, "limit", 20, 1, MAX_GROUPS))
        except similarity.SimilarityError as exc:
            return Response({"detail": str(exc), "status": run.status}, status=status.HTTP_409_CONFLICT)
        for row in page["results"]:
            for sample in row["members"] if run.kind == similarity.DUPLICATES else [row]:
                _add_urls(dataset, sample)
        return Response(page)


class RunTag(APIView):
    @extend_schema(request=TagBodySerializer, responses={201: TagSerializer}, summary="Save a run's result as a tag")
    def post(self, request, dataset_id: str, run_id: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.EDITOR)
        run = _run(dataset, run_id)
        body = TagBodySerializer(data=request.data)
        body.is_valid(raise_exception=True)
        v = body.validated_data
        tag = similarity.tag_from_run(
            run, v["name"], top_k=v.get("top_k"), keep=v["keep"], mode=v["mode"], creator=request.user
        )
        return Response(TagSerializer(tag).data, status=status.HTTP_201_CREATED)


DS = "datasets/<str:dataset_id>/similarity"
urlpatterns = [
    path(f"{DS}/search", Search.as_view(), name="similarity-search"),
    path(f"{DS}/duplicates", Duplicates.as_view(), name="similarity-duplicates"),
    path(f"{DS}/runs", RunList.as_view(), name="similarity-run-list"),
    path(f"{DS}/runs/<str:run_id>", RunDetail.as_view(), name="similarity-run"),
    path(f"{DS}/runs/<str:run_id>/results", RunResults.as_view(), name="similarity-run-results"),
    path(f"{DS}/runs/<str:run_id>/tag", RunTag.as_view(), name="similarity-run-tag"),
]
