"""Server-side `selection()`: `POST .../embeddings/<emb>/sampling` queues a sampling run; `/v1/jobs/<id>` polls it.

RANDOM and CORESET map to Winnow's random and coreset strategies; CORESET with a `minDistance` above 0 to
diversity (greedy k-center that also stops once no candidate is farther than minDistance from the selection). `nSamples` counts the preselected
samples too (as Lightly's does): the run picks `nSamples - |preselected|` new samples, and the new
tag holds the preselected samples plus the run's top picks. A value in (0, 1) is a fraction of the
candidates (the query tag's samples, else every sample); -1 means all candidates.

The job id is the run's id. When a poll first finds the run succeeded, the tag `newTagName` is made
from its top K (curation.tagging) and its id becomes the job's `result.data`; its parent is the
preselected tag, else `initial-tag`, as in Lightly. The run's `parameters.lightly` records that it
came from here and which tag it produced (or why none could be made).
"""

from __future__ import annotations

import secrets

from django.db import transaction
from django.db.models import Q
from django.http import JsonResponse

from curation import bitmask, predictions, tagging
from curation.errors import DomainError
from curation.models import Role, Tag, TagOrigin
from sampling import services as sampling
from sampling import tagging as sampling_tags
from sampling.models import ImportanceScore, RunStatus, SamplingRun
from winnow.client.predictions import PREFIX, UPLOADED_SCORES
from winnow.lightly.base import ApiError, LightlyView, first_message, ms, not_found, tag_name_ok
from winnow.lightly.embeddings import dataset_embedding
from winnow.lightly.positions import Positions
from winnow.lightly.tags import any_tag
from winnow.values import is_finite_number

STRATEGIES = {"RANDOM": "random", "CORESET": "coreset", "ACTIVE_LEARNING": "uncertainty", "CORAL": "coral"}
JOB_STATES = {
    RunStatus.QUEUED: "WAITING",
    RunStatus.RUNNING: "RUNNING",
    RunStatus.SUCCEEDED: "FINISHED",
    RunStatus.FAILED: "FAILED",
    RunStatus.CANCELLED: "FAILED",
}
POLL_SECONDS = 1


def _number(view: LightlyView, value, field: str) -> float | None:
    if value is None:
        return None
    if not is_finite_number(value):
        raise view.invalid(f"{field} must be a number, not {value!r}")
    return float(value)


class SamplingView(LightlyView):
    def post(self, request, dataset_id: str, embedding_id: str):
        dataset = self.dataset(request, dataset_id, need=Role.EDITOR)
        embedding = dataset_embedding(dataset, embedding_id)
        body = self.json_body(request)
        name = body.get("newTagName")
        if not isinstance(name, str) or not tag_name_ok(name):
            raise self.invalid(
                "newTagName must be at least 3 characters: a letter or digit, then letters, "
                "digits, space or . : ; = @ _ -"
            )
        try:
            tagging.check_name(dataset, name)
        except DomainError as exc:
            raise self.invalid(first_message(exc.errors), "TAG_NAME_EXISTS") from None
        method = body.get("method")
        if method not in STRATEGIES:
            raise self.invalid(
                f"method {method!r} is not supported here: use RANDOM, CORESET, ACTIVE_LEARNING or CORAL "
                "(Winnow's own sampling runs offer more strategies)."
            )
        config = body.get("config") if isinstance(body.get("config"), dict) else {}
        stop = config.get("stoppingCondition") if isinstance(config.get("stoppingCondition"), dict) else {}
        n_samples = _number(self, stop.get("nSamples"), "config.stoppingCondition.nSamples")
        min_distance = _number(self, stop.get("minDistance"), "config.stoppingCondition.minDistance")
        if min_distance is not None and min_distance <= 0:
            min_distance = None  # Lightly's "no minimum" is -1
        if min_distance is not None and method != "CORESET":
            raise self.invalid("config.stoppingCondition.minDistance applies to CORESET only (use -1 with RANDOM)")
        query = (
            any_tag(self, dataset, body["queryTagId"], "queryTagId", "TAG_QUERYTAG_NOT_IN_DATASET")
            if body.get("queryTagId")
            else None
        )
        preselected = (
            any_tag(self, dataset, body["preselectedTagId"], "preselectedTagId", "TAG_PRESELECTEDTAG_NOT_IN_DATASET")
            if body.get("preselectedTagId")
            else None
        )

        # Candidates as the run will see them: in the query tag, with an embedding row, not preselected.
        rows = int(embedding.count)
        pool = (
            bitmask.to_bool(bytes(query.bitmask), rows)
            if query
            else bitmask.to_bool(bitmask.from_indices(Positions(dataset).idx), rows)
        )
        fresh = pool & ~bitmask.to_bool(bytes(preselected.bitmask), rows) if preselected else pool
        available = int(fresh.sum())
        already = preselected.count if preselected else 0
        if n_samples is None or n_samples == -1:
            wanted = already + available
        elif 0 < n_samples < 1:
            wanted = max(1, round(n_samples * int(pool.sum())))
        elif n_samples >= 1:
            wanted = int(n_samples)
        else:
            raise self.invalid("config.stoppingCondition.nSamples must be -1, a fraction in (0, 1) or a count >= 1")
        new = min(wanted - already, available)
        if new < 1:
            raise self.invalid(
                f"nothing to select: {already} samples are preselected, {available} other candidates "
                f"remain, and nSamples asks for {wanted} in total"
            )

        # CORESET with a minimum distance is Winnow's diversity strategy: greedy k-center that also stops
        # once no candidate lies farther than min_distance from the selected set.
        strategy = {"strategy": "diversity" if min_distance is not None else STRATEGIES[method]}
        if method in ("ACTIVE_LEARNING", "CORAL"):
            strategy["field"] = scores_field(self, dataset, body.get("scoreType"))
        request_data = {
            "name": name,
            "embedding": embedding.id,
            "strategies": [strategy],
            "n_samples": new,
            "seed": secrets.randbelow(2**31),
            "input_tag": query.id if query else None,
            "preselected_tag": preselected.id if preselected else None,
        }
        if min_distance is not None:
            request_data["min_distance"] = min_distance
        with transaction.atomic():  # the run is enqueued when this commits, so the marker is there first
            try:
                run = sampling.create_run(dataset, request_data, request.user)
            except sampling.InvalidRun as exc:
                raise self.invalid(f"{exc.field}: {exc.message}") from None
            marker = {"new_tag_name": name, "n_samples": wanted, "result_tag": None}
            SamplingRun.objects.filter(pk=run.pk).update(parameters={**run.parameters, "lightly": marker})
        return JsonResponse({"jobId": run.id})


def scores_field(view: LightlyView, dataset, score_type) -> str:
    """The metadata field of the active-learning scores a selection uses: `scoreType` if given, else the one
    uploaded (or `uncertainty_margin` among several, Lightly's default)."""
    uploaded = predictions.uploaded_score_types(dataset)
    if score_type is None:
        if len(uploaded) == 1:
            score_type = uploaded[0]
        elif "uncertainty_margin" in uploaded:
            score_type = "uncertainty_margin"
        else:
            have = ", ".join(uploaded) or "none"
            raise view.invalid(f"scoreType: name the active-learning scores to use (uploaded: {have})")
    if score_type not in uploaded:
        raise view.invalid(f"scoreType {score_type!r}: no such scores were uploaded (upload_scores) to this dataset")
    return f"{PREFIX}.{UPLOADED_SCORES}.{score_type}"


def _result_tag(run: SamplingRun) -> Tag:
    """The tag of a succeeded selection: its top K, plus the preselected samples."""
    dataset = run.dataset
    parent = run.preselected_tag or Tag.objects.filter(dataset=dataset, name=tagging.INITIAL_TAG).first()
    if run.preselected_tag is None and run.min_distance is None:
        return sampling_tags.tag_from_run(dataset, run, run.n_samples, run.name, run.creator, parent=parent)
    picked = ImportanceScore.objects.filter(run=run, rank__lte=run.n_samples)
    if run.min_distance is not None:
        # A diversity run's picks score their distance when picked, above min_distance; after its stop the
        # ranks are not picks. The seeded first pick (nothing preselected) is a pick whatever its score.
        first = Q(rank=1) if run.preselected_tag is None else Q(pk__in=[])
        picked = picked.filter(Q(score__gt=run.min_distance) | first)
    mask = bitmask.from_indices(list(picked.values_list("sample__idx", flat=True)))
    if run.preselected_tag is not None:
        mask = bitmask.union(mask, bytes(run.preselected_tag.bitmask))
    return tagging.create_tag(
        dataset,
        run.name,
        mask,
        origin=TagOrigin.SAMPLING,
        origin_detail={
            "sampling_run": run.pk,
            "run_name": run.name,
            "strategy": run.strategy,
            "top_k": run.n_samples,
            "preselected_tag": run.preselected_tag_id,
            "min_distance": run.min_distance,
        },
        parent=parent,
        creator=run.creator,
    )


def finish_selection(run_id: str) -> tuple[SamplingRun, dict]:
    """Make the result tag of a succeeded run once (the row lock serialises concurrent polls)."""
    with transaction.atomic():
        run = (
            SamplingRun.objects.select_for_update(of=("self",))
            .select_related("dataset", "preselected_tag", "creator")
            .get(pk=run_id)
        )
        marker = dict(run.parameters.get("lightly") or {})
        if marker.get("result_tag") or marker.get("error"):
            return run, marker
        try:
            marker["result_tag"] = _result_tag(run).id
        except DomainError as exc:
            marker["error"] = f"the run succeeded but its tag could not be made: {first_message(exc.errors)}"
        SamplingRun.objects.filter(pk=run.pk).update(parameters={**run.parameters, "lightly": marker})
    return run, marker


def job_status(run: SamplingRun, marker: dict) -> dict:
    """Lightly's JobStatusData for a selection run."""
    moments = [m for m in (run.created_at, run.started_at, run.finished_at) if m is not None]
    data = {
        "id": run.id,
        "datasetId": run.dataset_id,
        "status": JOB_STATES.get(run.status, "UNKNOWN"),
        "meta": {"total": 100, "processed": int(run.progress)},
        "waitTimeTillNextPoll": POLL_SECONDS,
        "createdAt": ms(run.created_at),
        "lastModifiedAt": ms(max(moments)),
    }
    if run.finished_at is not None:
        data["finishedAt"] = ms(run.finished_at)
    if run.status == RunStatus.SUCCEEDED:
        if marker.get("result_tag"):
            data["result"] = {"type": "SAMPLING", "data": marker["result_tag"]}
        else:
            data["status"], data["error"] = "FAILED", marker.get("error") or "the run produced no tag"
    elif run.status in (RunStatus.FAILED, RunStatus.CANCELLED):
        data["error"] = run.error or f"the sampling run was {run.status}"
    return data


class JobView(LightlyView):
    def get(self, request, job_id: str):
        run = SamplingRun.objects.filter(pk=job_id, parameters__has_key="lightly").first()
        if run is None:
            raise not_found("JOB_UNKNOWN", f"No job with id {job_id!r}.")
        try:
            self.dataset(request, run.dataset_id)
        except ApiError as exc:
            raise not_found("JOB_UNKNOWN", f"No job with id {job_id!r}.") from exc
        marker = run.parameters.get("lightly") or {}
        if run.status == RunStatus.SUCCEEDED:
            run, marker = finish_selection(run.pk)
        return JsonResponse(job_status(run, marker))
