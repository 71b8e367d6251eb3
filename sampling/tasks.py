"""Celery tasks for sampling runs: thin wrappers, the logic is in sampling.services. Tasks take ids only."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from sampling import services


@shared_task(bind=True, name="sampling.run_sampling", max_retries=None)
def run_sampling(self, run_id: str) -> str:
    """Claim and execute a run. Acknowledged late (settings), so a killed worker's run is delivered again."""
    outcome = services.execute_run(run_id, eager=bool(self.request.is_eager))
    if outcome == services.BUSY and not self.request.is_eager:
        # Another attempt holds the run and its heartbeat is fresh: come back once it would be stale.
        raise self.retry(countdown=settings.WINNOW_RUN_STALE_SECONDS)
    return outcome


@shared_task(bind=True, name="sampling.reduce_shard")
def reduce_shard(self, run_id: str, claim: str, shard: int, n_shards: int) -> dict | None:
    """Round one of a sharded coreset: greedy k-center on one shard, the picks as a JSON list of idx."""
    return services.reduce_shard(run_id, claim, shard, n_shards, eager=bool(self.request.is_eager))


@shared_task(bind=True, name="sampling.merge_shards")
def merge_shards(self, results: list, run_id: str, claim: str) -> str:
    """Round two: greedy k-center over the shards' picks, then every candidate's score."""
    return services.merge_shards(results, run_id, claim, eager=bool(self.request.is_eager))
