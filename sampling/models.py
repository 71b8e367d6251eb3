"""Sampling runs and the importance score each run gives its candidate samples."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from curation.models import Dataset, Embedding, PublicIdField, Sample, Tag


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


FINISHED = {RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED}


class SamplingRun(models.Model):
    id = PublicIdField()
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="sampling_runs")
    name = models.CharField(max_length=200)
    embedding = models.ForeignKey(Embedding, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs")
    strategy = models.CharField(max_length=32)
    # The full strategy list and its parameters as requested (validated before the run is queued).
    parameters = models.JSONField(default=dict, blank=True)
    n_samples = models.PositiveIntegerField(null=True, blank=True)
    min_distance = models.FloatField(null=True, blank=True)
    input_tag = models.ForeignKey(Tag, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    preselected_tag = models.ForeignKey(Tag, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    query_tag = models.ForeignKey(Tag, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    cancel_requested = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    # Token of the attempt holding the run: its writes depend on it, so a stale attempt cannot clobber a newer one.
    claim = models.CharField(max_length=32, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    task_id = models.CharField(max_length=64, blank=True, default="")
    score_count = models.PositiveIntegerField(default=0)
    # What the finished run reports beyond its scores: covering radius, shards, picks.
    summary = models.JSONField(default=dict, blank=True)
    creator = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"


class ImportanceScore(models.Model):
    """One row per candidate sample of a run; rank 1 is the most important."""

    # A 1,000,000-row COPY pays for every index and per-row check (benchmarks/bench_scores.py), so the
    # table has one index, (run, rank), filled in rank order: it serves run lookups, cursor pages and
    # top-k. Neither FK is a database constraint, whose per-row trigger would double the write:
    # - run: write_scores inserts while holding the run row (its UPDATE locks it), and a deferred
    #   trigger (migration 0002, PostgreSQL) refuses to delete a run that still has scores at commit;
    # - sample: the writer takes the ids from the dataset's samples, which only go with their dataset
    #   (whose runs take their scores along).
    run = models.ForeignKey(
        SamplingRun, on_delete=models.CASCADE, related_name="scores", db_index=False, db_constraint=False
    )
    sample = models.ForeignKey(
        Sample, on_delete=models.DO_NOTHING, related_name="+", db_index=False, db_constraint=False
    )
    rank = models.PositiveIntegerField()
    score = models.FloatField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "rank"], name="score_unique_rank")]
