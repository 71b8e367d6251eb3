"""Sampling runs on real Celery worker processes (Redis broker, PostgreSQL): progress, a killed worker, scale-out."""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pytest
from django.db import connection, transaction
from django.utils import timezone

from curation import bitmask, storage
from curation.models import Embedding, Sample, Tag
from sampling.models import ImportanceScore, SamplingRun
from sampling.samplers import SelectionInput, distributed_coreset, ranking, select

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

FINISHED = {"succeeded", "failed", "cancelled"}
N, D = 50_000, 64
# A run long enough to watch, cancel and kill: about this many seconds of picks on this machine now.
RUN_SECONDS = 8.0


@pytest.fixture(autouse=True)
def _media_root(dataset):
    """Worker processes read the embedding files: use the configured storage they share, not a per-test folder."""
    yield
    storage.delete_prefix(dataset.storage_prefix)


def make_dataset(dataset, n: int = N, d: int = D, seed: int = 0) -> np.ndarray:
    Sample.objects.bulk_create(
        (Sample(dataset=dataset, idx=i, file_name=f"frame_{i:06d}.jpg") for i in range(n)), batch_size=5000
    )
    dataset.next_idx = n
    dataset.save(update_fields=["next_idx"])
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=4.0, size=(40, d))
    X = (centers[rng.integers(40, size=n)] + rng.normal(size=(n, d))).astype(np.float32)
    key = storage.save_matrix(f"{dataset.storage_prefix}embeddings/big.npy", X)
    Embedding.objects.create(dataset=dataset, name="big", dimension=d, count=n, matrix_key=key)
    return X


def picks_for(X: np.ndarray, seconds: float = RUN_SECONDS) -> int:
    """n_samples for a coreset over X that keeps a worker busy for about `seconds` (timed here, now)."""
    inp = SelectionInput(X, np.arange(len(X)), np.zeros(0, dtype=np.int64), {})

    def took(k: int) -> float:
        start = time.perf_counter()
        select(inp, [{"strategy": "coreset"}], n_samples=k)
        return time.perf_counter() - start

    per_pick = max(took(800) - took(200), 1e-3) / 600  # the difference leaves out the set-up
    return int(min(len(X), max(2_000, seconds / per_pick)))


def add_tag(dataset, name: str, indices) -> Tag:
    indices = np.asarray(indices)
    return Tag.objects.create(
        dataset=dataset, name=name, bitmask=bitmask.from_indices(indices), count=len(indices), origin="selection"
    )


def start_run(client, dataset, n_samples: int, **body) -> str:
    embedding = Embedding.objects.get(dataset=dataset)
    request = {"name": "coreset", "embedding": embedding.id, "strategy": "coreset", "n_samples": n_samples, **body}
    response = client.post(f"/api/v1/datasets/{dataset.id}/sampling-runs", request, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["status"] in ("queued", "running")
    return response.json()["id"]


def watch(client, dataset, run_id, until, timeout: float = 600, workers=()) -> list[dict]:
    """Poll the run's status endpoint as a page would; return every state seen, the last one matching `until`."""
    seen, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get(f"/api/v1/datasets/{dataset.id}/sampling-runs/{run_id}")
        assert response.status_code == 200
        seen.append(response.json())
        if until(seen[-1]):
            return seen
        if seen[-1]["status"] in FINISHED:
            raise AssertionError(f"run {run_id} finished before reaching the state: {seen[-1]}")
        time.sleep(0.05)
    logs = "\n".join(w.log() for w in workers)
    raise AssertionError(f"run {run_id} never reached the state; last: {seen[-1]}\n{logs}")


def ranked_idx(run_id) -> list[int]:
    return list(ImportanceScore.objects.filter(run_id=run_id).order_by("rank").values_list("sample__idx", flat=True))


def test_a_run_reports_progress_and_its_top_k_becomes_a_tag(celery_worker, editor_api, dataset):
    X = make_dataset(dataset)
    run_id = start_run(editor_api, dataset, picks_for(X))
    seen = watch(editor_api, dataset, run_id, lambda r: r["status"] in FINISHED, workers=[celery_worker])
    final = seen[-1]
    assert final["status"] == "succeeded", final["error"]
    assert final["progress"] == 100 and final["score_count"] == N and final["attempts"] == 1
    statuses = [s["status"] for s in seen]
    assert statuses.index("running") < statuses.index("succeeded")
    assert "queued" not in statuses[statuses.index("running") :]
    progress = [s["progress"] for s in seen if s["status"] == "running"]
    assert any(0 < p < 100 for p in progress), progress
    assert progress == sorted(progress)

    # The slider: keep the top 20 as a tag.
    response = editor_api.post(
        f"/api/v1/datasets/{dataset.id}/tags",
        {"name": "label-next", "sampling_run": run_id, "top_k": 20},
        format="json",
    )
    assert response.status_code == 201, response.content
    tag = Tag.objects.get(dataset=dataset, name="label-next")
    page = editor_api.get(f"/api/v1/datasets/{dataset.id}/sampling-runs/{run_id}/scores?limit=20").json()
    assert [r["rank"] for r in page["results"]] == list(range(1, 21))
    assert tag.indices().tolist() == sorted(r["idx"] for r in page["results"])


def test_an_auto_run_on_a_worker_gives_the_samplers_ranking(celery_worker, editor_api, dataset):
    X = make_dataset(dataset, n=3000, d=16)
    run_id = start_run(editor_api, dataset, 40, strategy="auto", name="auto", seed=2)
    final = watch(editor_api, dataset, run_id, lambda r: r["status"] in FINISHED, workers=[celery_worker])[-1]
    assert final["status"] == "succeeded", final["error"]
    assert final["score_count"] == 3000 and final["strategy"] == "auto"
    expected = select(
        SelectionInput(X, np.arange(3000), np.zeros(0, dtype=np.int64), {}),
        [{"strategy": "auto"}],
        n_samples=40,
        seed=2,
    )
    assert ranked_idx(run_id) == ranking(expected, np.arange(3000)).tolist()


def test_cancelling_a_running_run_stops_its_worker(celery_worker, editor_api, dataset):
    X = make_dataset(dataset)
    run_id = start_run(editor_api, dataset, picks_for(X))
    watch(
        editor_api, dataset, run_id, lambda r: r["status"] == "running" and r["progress"] >= 5, workers=[celery_worker]
    )
    response = editor_api.post(f"/api/v1/datasets/{dataset.id}/sampling-runs/{run_id}/cancel")
    assert response.status_code == 200 and response.json()["cancel_requested"] is True
    final = watch(editor_api, dataset, run_id, lambda r: r["status"] in FINISHED, workers=[celery_worker])[-1]
    assert final["status"] == "cancelled" and final["finished_at"]
    assert final["score_count"] == 0 and not ImportanceScore.objects.filter(run_id=run_id).exists()


def test_a_worker_killed_mid_run_leaves_a_run_that_is_retried(fresh_worker, editor_api, dataset):
    X = make_dataset(dataset)
    # Short broker visibility timeout and heartbeat staleness, so the retry comes within the test's patience.
    env = {"WINNOW_VISIBILITY_TIMEOUT": "10", "WINNOW_RUN_STALE_SECONDS": "3"}
    first = fresh_worker(**env)
    run_id = start_run(editor_api, dataset, picks_for(X))
    watch(editor_api, dataset, run_id, lambda r: r["status"] == "running" and r["progress"] >= 5, workers=[first])
    first.kill()

    run = SamplingRun.objects.get(pk=run_id)
    assert run.status == "running" and run.attempts == 1
    assert not ImportanceScore.objects.filter(run_id=run_id).exists()

    # The broker hands the unacknowledged task out again once it is older than the visibility timeout.
    while timezone.now() < run.started_at + timedelta(seconds=11):
        time.sleep(0.2)
    second = fresh_worker(**env)
    final = watch(editor_api, dataset, run_id, lambda r: r["status"] in FINISHED, workers=[first, second])[-1]

    assert final["status"] == "succeeded", final["error"]
    assert final["attempts"] == 2 and final["score_count"] == N
    ranks = list(ImportanceScore.objects.filter(run_id=run_id).order_by("rank").values_list("rank", flat=True))
    assert ranks == list(range(1, N + 1))  # all the scores, once each


def blocked_shard_writes() -> int:
    """Backends of this database waiting on a lock in a shard's progress write (`progress + points`)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # inside a transaction the view is a snapshot otherwise
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE 'UPDATE%progress%+%'"
        )
        return cursor.fetchone()[0]


def test_scale_out_over_two_workers_gives_a_two_round_k_center(fresh_worker, editor_api, dataset):
    X = make_dataset(dataset)
    env = {"WINNOW_SHARD_THRESHOLD": "1000", "WINNOW_SAMPLING_SHARDS": "2"}
    workers = [fresh_worker(concurrency=1, **env), fresh_worker(concurrency=1, **env)]
    candidates, labeled, k = np.arange(0, N, 2), np.arange(1, 200, 2), 3000
    input_tag = add_tag(dataset, "even", candidates)
    pre_tag = add_tag(dataset, "labeled", labeled)
    run_id = start_run(editor_api, dataset, k, input_tag=input_tag.id, preselected_tag=pre_tag.id, seed=5)

    # Both shards on two processes at once, made certain rather than likely: once the shards are
    # dispatched (progress 5), hold the run row, so a shard that has done its work waits in its progress
    # write while still holding its worker. A concurrency-1 worker that acknowledges late and prefetches
    # one message takes nothing else meanwhile, so two shards waiting together are on two workers.
    deadline = time.monotonic() + 120
    while SamplingRun.objects.filter(pk=run_id, progress__gte=5).count() == 0:
        assert time.monotonic() < deadline, "the shards were never dispatched:\n" + workers[0].log()
        time.sleep(0.005)
    with transaction.atomic():
        held = SamplingRun.objects.select_for_update().get(pk=run_id)
        assert held.progress == 5, "a shard finished before the test held the run; give the shards more work"
        while blocked_shard_writes() < 2:
            assert time.monotonic() < deadline, "both shards never waited at once:\n" + "\n".join(
                w.log() for w in workers
            )
            time.sleep(0.05)
    final = watch(editor_api, dataset, run_id, lambda r: r["status"] in FINISHED, workers=workers)[-1]
    assert final["status"] == "succeeded", final["error"]
    summary = final["summary"]
    assert summary["mode"] == "sharded" and summary["shards"] == 2
    assert len(summary["workers"]) == 2  # each shard reduced by its own worker process (see above)
    assert final["score_count"] == len(candidates)  # the preselected are not candidates here (odd idx)

    # The top k is the two-round k-center (Malkomes et al. 2015) of the same shards.
    expected = distributed_coreset(X, candidates, labeled, k, 2, seed=5)
    top = ranked_idx(run_id)
    assert top[:k] == candidates[ranking(expected, candidates)][:k].tolist()
    assert sorted(top) == candidates.tolist()

    # The reported covering radius is the real one, within the 4x bound of one worker's greedy radius.
    C, Y = X[np.concatenate([labeled, top[:k]])].astype(np.float64), X[candidates].astype(np.float64)
    d2 = (Y * Y).sum(1)[:, None] - 2 * Y @ C.T + (C * C).sum(1)[None, :]
    radius = float(np.sqrt(max(d2.min(axis=1).max(), 0.0)))
    assert summary["covering_radius"] == pytest.approx(radius, rel=1e-3)
    single = select(SelectionInput(X, candidates, labeled, {}), [{"strategy": "coreset"}], n_samples=k, seed=5)
    single_radius = float(np.sort(single)[::-1][k])
    assert radius <= 4 * single_radius


def test_a_live_worker_takes_over_a_killed_workers_run_by_its_heartbeat(fresh_worker, editor_api, dataset):
    """Issue 14: the broker would hand the message out again only after its visibility timeout (an hour here);
    a worker that is already up takes the run over once its heartbeat is stale (its sweeper)."""
    X = make_dataset(dataset)
    env = {"WINNOW_VISIBILITY_TIMEOUT": "3600", "WINNOW_RUN_STALE_SECONDS": "3"}
    first = fresh_worker(**env)
    # Long enough that the second worker is up before the first is killed.
    run_id = start_run(editor_api, dataset, picks_for(X, seconds=4 * RUN_SECONDS))
    watch(editor_api, dataset, run_id, lambda r: r["status"] == "running", workers=[first])
    second = fresh_worker(**env)  # up and idle before the kill: no restart is needed for the takeover
    assert SamplingRun.objects.get(pk=run_id).status == "running"
    first.kill()
    final = watch(editor_api, dataset, run_id, lambda r: r["status"] in FINISHED, workers=[first, second])[-1]
    assert final["status"] == "succeeded", final["error"]
    assert final["attempts"] == 2 and final["score_count"] == N
    ranks = list(ImportanceScore.objects.filter(run_id=run_id).order_by("rank").values_list("rank", flat=True))
    assert ranks == list(range(1, N + 1))
