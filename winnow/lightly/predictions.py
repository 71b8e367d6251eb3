"""Lightly's predictions and active-learning scores on `/v1/`: task schemas, one sample's predictions, a tag's scores.

- `POST .../predictions/tasks` (create_or_update_prediction_task_schema): `{name, type, categories}`; type
  CLASSIFICATION or OBJECT_DETECTION.
- `POST .../predictions/samples/<sample>` (create_or_update_prediction): a list of singletons `{type, taskName,
  categoryId, score, probabilities | bbox}`, replacing that sample's predictions of each task named.
- `POST .../tags/<tag>/scores` (upload_scores): `{scoreType, scores}`, one score per sample of the tag in
  mapping order; stored at `predictions._scores.<scoreType>` for ACTIVE_LEARNING and CORAL selections.
The checks are Winnow's own (curation.predictions, winnow.client.predictions); this module only translates.
"""

from __future__ import annotations

import json

from django.http import JsonResponse

from curation import predictions as services
from curation.metadata import path_error
from curation.models import PredictionTask, Role, Sample
from winnow.client import predictions as fmt
from winnow.lightly.base import LightlyView, not_found
from winnow.lightly.tags import any_tag

TASK_TYPES = {"CLASSIFICATION": fmt.CLASSIFICATION, "OBJECT_DETECTION": fmt.DETECTION}
# The client serialises singletons with the model's field names (snake_case) or their aliases (camelCase).
SINGLETON_KEYS = {"categoryId": "category_id", "category_id": "category_id", "score": "score",
                  "probabilities": "probabilities", "bbox": "bbox"}  # fmt: skip


def _body(view: LightlyView, request):
    def constant(name):
        raise ValueError(f"{name} is not a JSON number")

    try:
        return json.loads(request.body or b"null", parse_constant=constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise view.invalid(f"The body is not valid JSON: {exc}", "MALFORMED_REQUEST") from None


class PredictionTaskSchemaView(LightlyView):
    def post(self, request, dataset_id: str):
        dataset = self.dataset(request, dataset_id, need=Role.EDITOR)
        body = self.json_body(request)
        task_type = TASK_TYPES.get(body.get("type"))
        if task_type is None:
            raise self.invalid(f"type {body.get('type')!r} is not supported: use {' or '.join(TASK_TYPES)}")
        try:
            schema = fmt.parse_schema({"task_type": task_type, "categories": body.get("categories")}, body.get("name"))
        except fmt.PredictionError as exc:
            raise self.invalid(str(exc)) from None
        task = services.set_schema(dataset, schema, request.user)
        return JsonResponse({"id": task.id}, status=201)


class SamplePredictionsView(LightlyView):
    def post(self, request, dataset_id: str, sample_id: str):
        dataset = self.dataset(request, dataset_id, need=Role.EDITOR)
        sample = Sample.objects.filter(dataset=dataset, pk=sample_id).only("id", "file_name", "width", "height").first()
        if sample is None:
            raise not_found("SAMPLE_UNKNOWN", f"No sample with id {sample_id!r} in this dataset.")
        body = _body(self, request)
        if not isinstance(body, list):
            raise self.invalid("The body must be a list of prediction singletons.", "MALFORMED_REQUEST")
        by_task: dict[str, list] = {}
        for i, item in enumerate(body):
            name = item.get("taskName", item.get("task_name")) if isinstance(item, dict) else None
            if not isinstance(name, str):
                raise self.invalid(f"[{i}].taskName: required")
            by_task.setdefault(name, []).append({SINGLETON_KEYS[k]: v for k, v in item.items() if k in SINGLETON_KEYS})
        tasks = {t.name: t for t in PredictionTask.objects.filter(dataset=dataset, name__in=list(by_task))}
        for name in by_task:
            if name not in tasks:
                raise self.invalid(f"taskName {name!r}: no prediction task schema of that name; create it first")
        try:
            for name, singletons in by_task.items():
                services.set_sample_predictions(tasks[name], sample, singletons)
        except fmt.PredictionError as exc:
            raise self.invalid(str(exc)) from None
        return JsonResponse({"id": sample.id}, status=201)


class TagScoresView(LightlyView):
    def post(self, request, dataset_id: str, tag_id: str):
        dataset = self.dataset(request, dataset_id, need=Role.EDITOR)
        tag = any_tag(self, dataset, tag_id, "tagId")
        body = self.json_body(request)
        score_type, scores = body.get("scoreType"), body.get("scores")
        if not isinstance(score_type, str) or path_error(score_type) or "." in score_type:
            raise self.invalid(f"scoreType {score_type!r} must be letters, digits, '_' or '-'")
        if not isinstance(scores, list) or not scores:
            raise self.invalid("scores must be a non-empty list of numbers")
        try:
            services.upload_tag_scores(dataset, tag.indices(), score_type, scores)
        except services.PredictionsInvalid as exc:
            raise self.invalid(exc.message) from None
        return JsonResponse({"id": tag.id}, status=201)
