"""REST API: prediction tasks (Lightly's prediction format), uploaded a whole task at a time."""

from __future__ import annotations

import io
import re

from django.conf import settings
from django.http import Http404
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import BaseParser
from rest_framework.response import Response
from rest_framework.views import APIView

from curation import predictions as services
from curation.access import get_dataset
from curation.models import PredictionTask, PredictionUpload, Role, Sample
from winnow import query

JSON_LINES = ("application/x-ndjson", "application/jsonl", "application/x-jsonlines")


class RawBody(BaseParser):
    """Declares the body types; the view reads the body itself, as a stream (never whole in memory)."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return None


class PredictionTaskSerializer(serializers.ModelSerializer):
    class Meta:
        model = PredictionTask
        fields = ["id", "name", "type", "categories", "is_labels", "count", "object_count", "created_at", "updated_at"]


class PredictionUploadSerializer(serializers.ModelSerializer):
    class Meta:
        model = PredictionUpload
        fields = [
            "id",
            "task_name",
            "kind",
            "size",
            "status",
            "progress",
            "error",
            "result",
            "created_at",
            "updated_at",
        ]


class PredictionTaskList(APIView):
    @extend_schema(summary="Prediction tasks of the dataset", responses={200: PredictionTaskSerializer(many=True)})
    def get(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id)
        return Response(PredictionTaskSerializer(dataset.prediction_tasks.all(), many=True).data)


class PredictionTaskDetail(APIView):
    parser_classes = [RawBody]

    def _task(self, request, dataset_id: str, name: str, need: str) -> PredictionTask:
        dataset = get_dataset(request.user, dataset_id, need=need)
        task = dataset.prediction_tasks.filter(name=name).first()
        if task is None:
            raise Http404("No prediction task of that name in this dataset.")
        return task

    @extend_schema(summary="A prediction task", responses={200: PredictionTaskSerializer})
    def get(self, request, dataset_id: str, name: str):
        return Response(PredictionTaskSerializer(self._task(request, dataset_id, name, Role.VIEWER)).data)

    @extend_schema(
        summary="Upload a whole prediction task, replacing the previous upload of it",
        description=(
            "Body: JSON `{schema: {task_type, categories: [{id, name}]}, is_labels, predictions: [{file_name, "
            "predictions: [{category_id, score, probabilities | bbox}]}]}`, or JSON lines "
            "(`Content-Type: application/x-ndjson`): a first line `{schema, is_labels}`, then one sample per line. "
            "Small bodies are stored at once (200); larger ones by a worker (202 and the upload to poll). "
            "Anything invalid is refused naming the file and field, and nothing is stored."
        ),
        request={"application/json": OpenApiTypes.OBJECT, "application/x-ndjson": OpenApiTypes.BINARY},
        parameters=[query.flag_parameter("background", "Store the upload by a worker even when it is small")],
        responses={200: PredictionUploadSerializer, 202: PredictionUploadSerializer},
    )
    def put(self, request, dataset_id: str, name: str):
        dataset = get_dataset(request.user, dataset_id, need=Role.EDITOR)
        content_type = (request.content_type or "").split(";")[0].strip().lower()
        if content_type in JSON_LINES:
            kind = "jsonl"
        elif content_type == "application/json":
            kind = "json"
        else:
            raise ValidationError({"body": [f"Content-Type must be application/json or {JSON_LINES[0]}"]})
        # DRF's stream is the raw body (None when empty); the view never parses it into request.data.
        stream = request.stream if request.stream is not None else io.BytesIO()
        upload = services.receive(dataset, name, stream, kind=kind, creator=request.user)
        inline = upload.size <= settings.WINNOW_PREDICTIONS_INLINE_BYTES and not query.flag(
            request.query_params, "background"
        )
        if not inline:
            services.enqueue(upload)
            return Response(PredictionUploadSerializer(upload).data, status=status.HTTP_202_ACCEPTED)
        services.process(upload.id)
        upload.refresh_from_db()
        if upload.status != "succeeded":
            raise ValidationError({"predictions": [upload.error]})
        return Response(PredictionUploadSerializer(upload).data)

    @extend_schema(summary="Remove a prediction task and its scores", responses={204: None})
    def delete(self, request, dataset_id: str, name: str):
        services.delete_task(self._task(request, dataset_id, name, Role.EDITOR))
        return Response(status=status.HTTP_204_NO_CONTENT)


class PredictionUploadDetail(APIView):
    @extend_schema(summary="Status and progress of a prediction upload", responses={200: PredictionUploadSerializer})
    def get(self, request, dataset_id: str, upload_id: str):
        dataset = get_dataset(request.user, dataset_id)
        upload = dataset.prediction_uploads.filter(pk=upload_id).first()
        if upload is None:
            raise Http404("No prediction upload with that id in this dataset.")
        return Response(PredictionUploadSerializer(upload).data)


class SamplePredictions(APIView):
    @extend_schema(
        summary="One sample's predictions per task (Lightly singletons), with the task's categories",
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request, dataset_id: str, sample_id: str):
        dataset = get_dataset(request.user, dataset_id)
        sample = Sample.objects.filter(dataset=dataset, pk=sample_id).only("idx", "width", "height", "metadata").first()
        if sample is None:
            raise Http404("No sample with that id in this dataset.")
        tasks = []
        for task in dataset.prediction_tasks.all():
            preds = services.sample_predictions(task, sample.idx, sample.metadata)
            if preds is not None:
                tasks.append(
                    {
                        "name": task.name,
                        "type": task.type,
                        "is_labels": task.is_labels,
                        "categories": task.categories,
                        "predictions": preds,
                    }
                )
        return Response({"sample": sample_id, "width": sample.width, "height": sample.height, "tasks": tasks})


MAX_BOX_SAMPLES = 500  # a few pages of Explore's tiles per request
SAMPLE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


class SampleBoxes(APIView):
    @extend_schema(
        summary="Detection boxes of many samples at once (for drawing them over thumbnails)",
        description=(
            "`?sample_ids=a,b,c` (at most 500). Returns the dataset's object-detection tasks with their categories, "
            "and per sample id the boxes of each task that has predictions for it, as Lightly singletons "
            "(`category_id`, `score`, `bbox` [x, y, w, h] in image pixels) with the image's width and height."
        ),
        parameters=[OpenApiParameter("sample_ids", str, description="Sample ids, comma-separated")],
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request, dataset_id: str):
        dataset = get_dataset(request.user, dataset_id)
        ids = [i for i in request.query_params.get("sample_ids", "").split(",") if i]
        if len(ids) > MAX_BOX_SAMPLES:
            raise ValidationError({"sample_ids": [f"at most {MAX_BOX_SAMPLES} sample ids (got {len(ids)})"]})
        ids = [i for i in ids if SAMPLE_ID.fullmatch(i)]  # anything else names no sample (and never reaches SQL)
        tasks = list(dataset.prediction_tasks.filter(type="object-detection"))
        out: dict[str, dict] = {}
        if tasks and ids:
            readers = [services.TaskReader(t) for t in tasks]
            # Only what drawing needs: the metadata holds boxes sent one sample at a time.
            rows = Sample.objects.filter(dataset=dataset, pk__in=ids).only("id", "idx", "width", "height", "metadata")
            for sample in rows:
                boxes = {}
                for reader in readers:
                    preds = reader.get(sample.idx, sample.metadata)
                    if preds:
                        boxes[reader.task.name] = preds
                if boxes:
                    out[sample.id] = {"width": sample.width, "height": sample.height, "boxes": boxes}
        described = [{"name": t.name, "is_labels": t.is_labels, "categories": t.categories} for t in tasks]
        return Response({"tasks": described, "samples": out})


urlpatterns = [
    path("datasets/<str:dataset_id>/prediction-boxes", SampleBoxes.as_view(), name="prediction-boxes"),
    path("datasets/<str:dataset_id>/predictions", PredictionTaskList.as_view(), name="prediction-tasks"),
    path(
        "datasets/<str:dataset_id>/predictions/uploads/<str:upload_id>",
        PredictionUploadDetail.as_view(),
        name="prediction-upload",
    ),
    path("datasets/<str:dataset_id>/predictions/<str:name>", PredictionTaskDetail.as_view(), name="prediction-task"),
    path(
        "datasets/<str:dataset_id>/samples/<str:sample_id>/predictions",
        SamplePredictions.as_view(),
        name="sample-predictions",
    ),
]
