"""Celery tasks for sampling runs: thin wrappers, the logic is in sampling.services. Tasks take ids only."""

from __future__ import annotations

import functools
import logging

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings
from django.db import InterfaceError, OperationalError

from sampling import services
from winnow.celery import sweep_while_up

log = logging.getLogger(__name__)

# Database errors that pass (a restart, a dropped connection). Raised out of a task, they would ack
# its message with the run still "running" and nothing left to pick it up; so the task is retried.
TRANSIENT = (OperationalError, InterfaceError)
# In-process (eager) mode retries at once, so it gets a couple of tries, not a loop.
EAGER_TRANSIENT_RETRIES = 2


def _retry_transient(task, exc: Exception):
    """Retry with backoff; at least the heartbeat staleness, so a claim the failed attempt held can be taken over."""
    eager = bool(task.request.is_eager)
    # Below the visibility timeout too: a message waiting longer than that is delivered a second time.
    ceiling = min(900, settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"] // 2)
    countdown = min(settings.WINNOW_RUN_STALE_SECONDS * 2 ** min(task.request.retries, 6), ceiling)
    return task.retry(exc=exc, countdown=countdown, max_retries=EAGER_TRANSIENT_RETRIES if eager else None)


@shared_task(bind=True, name="sampling.run_sampling", max_retries=None)
def run_sampling(self, run_id: str) -> str:
    """Claim and execute a run. Acknowledged late (settings), so a killed worker's run is delivered again."""
    try:
        outcome = services.execute_run(run_id, eager=bool(self.request.is_eager))
    except TRANSIENT as exc:
        raise _retry_transient(self, exc) from exc
    if outcome == services.BUSY and not self.request.is_eager:
        # Another attempt holds the run and its heartbeat is fresh: come back once it would be stale.
        raise self.retry(countdown=settings.WINNOW_RUN_STALE_SECONDS)
    return outcome


@shared_task(bind=True, name="sampling.reduce_shard", max_retries=None)
def reduce_shard(self, run_id: str, claim: str, shard: int, n_shards: int) -> dict | None:
    """Round one of a sharded coreset: greedy k-center on one shard, the picks as a JSON list of idx."""
    try:
        return services.reduce_shard(run_id, claim, shard, n_shards, eager=bool(self.request.is_eager))
    except TRANSIENT as exc:
        raise _retry_transient(self, exc) from exc


@shared_task(bind=True, name="sampling.merge_shards", max_retries=None)
def merge_shards(self, results: list, run_id: str, claim: str) -> str:
    """Round two: greedy k-center over the shards' picks, then every candidate's score."""
    try:
        return services.merge_shards(results, run_id, claim, eager=bool(self.request.is_eager))
    except TRANSIENT as exc:
        raise _retry_transient(self, exc) from exc


@shared_task(name="sampling.resume_abandoned_runs")
def resume_abandoned_runs(include_lost_queued: bool = True) -> list[str]:
    """Send every abandoned run out again, and every run the broker never took; the claim lets exactly one
    attempt take each (a duplicate finds it busy or done)."""
    run_ids = services.abandoned_runs(include_lost_queued=include_lost_queued)
    for run_id in run_ids:
        services.mark_sent(run_id, run_sampling.delay(run_id).id)
    return run_ids + [run.id for run in services.unsent_runs() if run.id not in run_ids and services.send_run(run)]


@worker_ready.connect
def _resume_on_worker_start(sender=None, **_kwargs):
    # A worker that starts is often the replacement of one that died: pick up what it left at once,
    # rather than after the broker's visibility timeout; then keep sweeping while it lives.
    resume_abandoned_runs.delay()
    interval = max(2.0, settings.WINNOW_RUN_STALE_SECONDS / 2)
    # Runs whose worker died (heartbeat stale) and runs created while the broker was down go out again, so neither
    # waits for the broker's visibility timeout or a worker restart.
    sweep_while_up(
        "winnow-run-sweeper",
        interval,
        functools.partial(resume_abandoned_runs, include_lost_queued=False),
        what="sweeping abandoned sampling runs",
    )
