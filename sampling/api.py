"""REST API: sampling runs and their importance scores.

POST /datasets/<id>/sampling-runs                    editor+: check, create, queue -> 202
GET  /datasets/<id>/sampling-runs                    newest first
GET  /datasets/<id>/sampling-runs/<run_id>           status, progress, error, summary
POST /datasets/<id>/sampling-runs/<run_id>/cancel    editor+
GET  /datasets/<id>/sampling-runs/<run_id>/scores    cursor-paginated by rank
GET  /datasets/<id>/embeddings/<embedding_id>/distance-scale   percentiles for min_distance (sampling.scale)
"""

from __future__ import annotations

from django.db.models import F
from django.http import Http404
from django.urls import path
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination, PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import APIView

from curation import embeddings
from curation.access import get_dataset
from curation.models import Embedding, Role
from sampling import services
from sampling.models import ImportanceScore, RunStatus, SamplingRun
from sampling.samplers.strategies import MAX_STRATEGIES, NEEDS_N_SAMPLES, STRATEGIES
from sampling.scale import PERCENTILES, distance_scale
from winnow import query
from winnow.fields import StringField
from winnow.parsers import JSONParser


class SamplingRunCreateSerializer(serializers.Serializer):
    """A run request, checked once here: the fields' types and bounds, then the strategy grammar
    (sampling/samplers/strategies.py, through services.check_request: strategies and their parameters, how they
    combine, n_samples / min_distance where a strategy needs one). What needs the dataset (the embedding, tags,
    prediction tasks, metadata fields, n_samples against the candidates) is services.prepare_run's."""

    name = StringField(max_length=200)
    embedding = StringField(max_length=64, required=False, allow_null=True)
    strategy = StringField(
        max_length=32,
        required=False,
        allow_null=True,
        help_text=f"One strategy, one of {', '.join(STRATEGIES)}, with its parameters beside it; `auto` is the "
        "recommended choice of what to label first (needs embedding and n_samples).",
    )
    strategies = serializers.ListField(
        child=serializers.DictField(),
        required=False,
        allow_null=True,
        min_length=1,
        max_length=MAX_STRATEGIES,
        help_text='In place of `strategy`: strategy objects to combine, each `{"strategy": ..., <its parameters>}`.',
    )
    n_samples = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=1,
        help_text=f"How many samples to pick; required by {', '.join(NEEDS_N_SAMPLES)}; at most the candidates.",
    )
    min_distance = serializers.FloatField(
        required=False, allow_null=True, help_text="Greater than 0; diversity stops once no candidate is farther."
    )
    input_tag = StringField(max_length=64, required=False, allow_null=True)
    preselected_tag = StringField(max_length=64, required=False, allow_null=True)
    query_tag = StringField(max_length=64, required=False, allow_null=True)
    seed = serializers.IntegerField(required=False, default=0, min_value=0, max_value=2**32 - 1)
    shards = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=services.MAX_SHARDS)
    # Parameters of a single `strategy`, given next to it (with `strategies` they go inside each object).
    field = StringField(max_length=300, required=False, allow_null=True)
    operation = StringField(max_length=8, required=False, allow_null=True)
    value = serializers.JSONField(required=False, allow_null=True)
    target = serializers.JSONField(required=False, allow_null=True)
    metric = StringField(max_length=16, required=False, allow_null=True)
    strength = serializers.FloatField(required=False, allow_null=True)
    # Prediction strategies: coral's weight of uncertainty against diversity; a prediction task (and its score)
    # in place of `field` for uncertainty, coral and balance.
    weight = serializers.FloatField(required=False, allow_null=True)
    task = serializers.CharField(max_length=100, required=False, allow_null=True)
    score = serializers.CharField(max_length=100, required=False, allow_null=True)

    def validate(self, attrs):
        unknown = [key for key in self.initial_data if key not in self.fields]
        if unknown:
            raise ValidationError({unknown[0]: [f"unknown key; a run request takes {', '.join(self.fields)}"]})
        try:
            return services.check_request(attrs)
        except services.InvalidRun as exc:
            raise ValidationError({exc.field: [exc.message]}) from None


class SamplingRunSerializer(serializers.ModelSerializer):
    dataset = serializers.CharField(source="dataset_id")
    embedding = serializers.CharField(source="embedding_id", allow_null=True)
    input_tag = serializers.CharField(source="input_tag_id", allow_null=True)
    preselected_tag = serializers.CharField(source="preselected_tag_id", allow_null=True)
    query_tag = serializers.CharField(source="query_tag_id", allow_null=True)
    strategies = serializers.SerializerMethodField()
    creator = serializers.CharField(source="creator.username", default=None, allow_null=True)

    class Meta:
        model = SamplingRun
        fields = [
            "id",
            "name",
            "dataset",
            "embedding",
            "strategy",
            "strategies",
            "parameters",
            "n_samples",
            "min_distance",
            "input_tag",
            "preselected_tag",
            "query_tag",
            "status",
            "progress",
            "error",
            "cancel_requested",
            "attempts",
            "score_count",
            "summary",
            "creator",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields

    def get_strategies(self, run) -> list[dict]:
        return (run.parameters or {}).get("strategies", [])


class ImportanceScoreSerializer(serializers.Serializer):
    rank = serializers.IntegerField()
    score = serializers.FloatField()
    sample_id = serializers.CharField()
    file_name = serializers.CharField()
    idx = serializers.IntegerField()


class RunPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200

    def get_page_size(self, request):
        return query.integer(request.query_params, self.page_size_query_param, self.page_size, 1, self.max_page_size)


class ScorePagination(CursorPagination):
    """Keyset pagination on (run, rank), which is unique and indexed."""

    ordering = "rank"
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000

    def get_page_size(self, request):
        return query.integer(request.query_params, self.page_size_query_param, self.page_size, 1, self.max_page_size)


def _runs(dataset):
    return SamplingRun.objects.filter(dataset=dataset).select_related("creator")


def _run(dataset, run_id: str) -> SamplingRun:
    run = _runs(dataset).filter(pk=run_id).first()
    if run is None:
        raise NotFound("No sampling run with that id in this dataset.")
    return run


class RunListView(APIView):
    parser_classes = [JSONParser]

    @extend_schema(
        responses=inline_serializer(
            "SamplingRunPage",
            {
                "count": serializers.IntegerField(),
                "next": serializers.URLField(allow_null=True),
                "previous": serializers.URLField(allow_null=True),
                "results": SamplingRunSerializer(many=True),
            },
        ),
        parameters=[
            OpenApiParameter("page", int),
            query.integer_parameter(
                "page_size", "Runs per page", 1, RunPagination.max_page_size, RunPagination.page_size
            ),
        ],
        summary="Sampling runs of a dataset, newest first",
        operation_id="sampling_runs_list",
    )
    def get(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id)
        runs = _runs(dataset).order_by("-created_at", "-id")
        paginator = RunPagination()
        page = paginator.paginate_queryset(runs, request, view=self)
        return paginator.get_paginated_response(SamplingRunSerializer(page, many=True).data)

    @extend_schema(
        request=SamplingRunCreateSerializer,
        responses={202: SamplingRunSerializer},
        summary="Queue a sampling run",
        operation_id="sampling_runs_create",
    )
    def post(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.EDITOR)
        serializer = SamplingRunCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        run = services.create_run(dataset, serializer.validated_data, request.user)
        run.refresh_from_db()  # in-process mode has already run it
        return Response(SamplingRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class RunDetailView(APIView):
    @extend_schema(
        responses=SamplingRunSerializer,
        summary="A sampling run: status, progress 0-100, error",
        operation_id="sampling_runs_retrieve",
    )
    def get(self, request, dataset_id: str, run_id: str):
        dataset = get_dataset(request.user, dataset_id)
        return Response(SamplingRunSerializer(_run(dataset, run_id)).data)


class RunCancelView(APIView):
    @extend_schema(
        request=None,
        responses={200: SamplingRunSerializer, 409: dict},
        summary="Cancel a sampling run",
        operation_id="sampling_runs_cancel",
    )
    def post(self, request, dataset_id: str, run_id: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.EDITOR)
        run = _run(dataset, run_id)
        try:
            run = services.cancel_run(run)
        except services.RunFinished as exc:
            return Response({"detail": str(exc), "status": run.status}, status=status.HTTP_409_CONFLICT)
        return Response(SamplingRunSerializer(run).data)


class RunScoresView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("cursor", str),
            query.integer_parameter(
                "limit", "Scores per page", 1, ScorePagination.max_page_size, ScorePagination.page_size
            ),
        ],
        responses={
            200: inline_serializer(
                "ImportanceScorePage",
                {
                    "next": serializers.URLField(allow_null=True),
                    "previous": serializers.URLField(allow_null=True),
                    "results": ImportanceScoreSerializer(many=True),
                },
            ),
            409: dict,
        },
        summary="Importance scores of a run, by rank (1 = most important)",
        operation_id="sampling_runs_scores",
    )
    def get(self, request, dataset_id: str, run_id: str):
        dataset = get_dataset(request.user, dataset_id)
        run = _run(dataset, run_id)
        if run.status != RunStatus.SUCCEEDED:
            return Response(
                {"detail": f"the run has no scores: it is {run.status}", "status": run.status},
                status=status.HTTP_409_CONFLICT,
            )
        # Only the columns a row shows; the sample join is by primary key.
        scores = (
            ImportanceScore.objects.filter(run=run)
            .annotate(file_name=F("sample__file_name"), idx=F("sample__idx"))
            .values("rank", "score", "sample_id", "file_name", "idx")
        )
        paginator = ScorePagination()
        page = paginator.paginate_queryset(scores, request, view=self)
        return paginator.get_paginated_response(ImportanceScoreSerializer(page, many=True).data)


PCT = inline_serializer("DistancePercentiles", {f"p{p}": serializers.FloatField() for p in PERCENTILES})


class DistanceScale(APIView):
    @extend_schema(
        summary="Distance percentiles of an embedding (nearest neighbour and pairwise), from a sample of rows",
        responses={
            200: inline_serializer(
                "DistanceScale",
                {
                    "embedding": serializers.CharField(),
                    "metric": serializers.CharField(),
                    "sampled": serializers.IntegerField(),
                    "rows": serializers.IntegerField(),
                    "nearest_neighbour": PCT,
                    "pairwise": PCT,
                },
            )
        },
        operation_id="embedding_distance_scale",
    )
    def get(self, request, dataset_id: str, embedding_id: str):
        dataset = get_dataset(request.user, dataset_id)
        embedding = Embedding.objects.filter(dataset=dataset, pk=embedding_id).first()
        if embedding is None:
            raise Http404("No embedding with that id in this dataset.")
        matrix, covered, _labels = embeddings.load(embedding)
        body = distance_scale(matrix, covered)
        return Response({"embedding": embedding.pk, "metric": "euclidean", **body})


urlpatterns = [
    path("datasets/<str:dataset_id>/sampling-runs", RunListView.as_view(), name="sampling-runs"),
    path("datasets/<str:dataset_id>/sampling-runs/<str:run_id>", RunDetailView.as_view(), name="sampling-run"),
    path(
        "datasets/<str:dataset_id>/sampling-runs/<str:run_id>/cancel",
        RunCancelView.as_view(),
        name="sampling-run-cancel",
    ),
    path(
        "datasets/<str:dataset_id>/sampling-runs/<str:run_id>/scores",
        RunScoresView.as_view(),
        name="sampling-run-scores",
    ),
    path(
        "datasets/<str:dataset_id>/embeddings/<str:embedding_id>/distance-scale",
        DistanceScale.as_view(),
        name="embedding-distance-scale",
    ),
]
