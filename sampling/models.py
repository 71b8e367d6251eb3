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
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    cancel_requested = models.BooleanField(default=False)
    attempts = models.PositiveSmallIntegerField(default=0)
    task_id = models.CharField(max_length=64, blank=True, default="")
    score_count = models.PositiveIntegerField(default=0)
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

    run = models.ForeignKey(SamplingRun, on_delete=models.CASCADE, related_name="scores")
    sample = models.ForeignKey(Sample, on_delete=models.CASCADE, related_name="+")
    rank = models.PositiveIntegerField()
    score = models.FloatField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "rank"], name="score_unique_rank"),
            models.UniqueConstraint(fields=["run", "sample"], name="score_unique_sample"),
        ]
