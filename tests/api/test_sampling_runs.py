"""Sampling runs through the REST API: queue, validate, execute (in-process), cancel, page through scores."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest
from django.db import IntegrityError, OperationalError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from curation import bitmask, storage
from curation.models import Embedding, MetadataField, Sample, Tag
from curation.services import create_dataset, delete_dataset
from sampling import services
from sampling.models import ImportanceScore, RunStatus, SamplingRun
from sampling.samplers import SelectionInput, distributed_coreset, ranking, select
from sampling.tasks import resume_abandoned_runs, run_sampling

pytestmark = pytest.mark.django_db

N = 60
WEATHER = ["sunny", "rain", "fog"]


def add_samples(dataset, n: int = N) -> list[Sample]:
    samples = [
        Sample(
            dataset=dataset,
            idx=i,
            file_name=f"img_{i:03d}.jpg",
            metadata={"weather": WEATHER[i % 3], "car": {"speed": float(i % 17)}},
        )
        for i in range(n)
    ]
    Sample.objects.bulk_create(samples)
    dataset.next_idx = n
    dataset.save(update_fields=["next_idx"])
    return samples


def add_embedding(dataset, X: np.ndarray, name: str = "emb") -> Embedding:
    key = storage.save_matrix(f"{dataset.storage_prefix}embeddings/{name}.npy", X.astype(np.float32))
    return Embedding.objects.create(dataset=dataset, name=name, dimension=X.shape[1], count=len(X), matrix_key=key)


def add_tag(dataset, name: str, indices) -> Tag:
    indices = list(indices)
    return Tag.objects.create(
        dataset=dataset, name=name, bitmask=bitmask.from_indices(indices), count=len(indices), origin="selection"
    )


def blobs(n: int = N, d: int = 6, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(scale=8.0, size=(5, d))
    return (centers[np.arange(n) % 5] + rng.normal(size=(n, d))).astype(np.float32)


@pytest.fixture
def data(dataset):
    add_samples(dataset)
    X = blobs()
    emb = add_embedding(dataset, X)
    return {
        "X": X,
        "embedding": emb,
        "input": add_tag(dataset, "first-50", range(50)),
        "labeled": add_tag(dataset, "labeled", range(5)),
        "query": add_tag(dataset, "query", [7, 12]),
    }


@pytest.fixture
def other(outsider):
    """A dataset of another user, with an embedding and a tag."""
    ds = create_dataset(outsider, "elsewhere", "meta")
    add_samples(ds, 10)
    return {"dataset": ds, "embedding": add_embedding(ds, blobs(10)), "tag": add_tag(ds, "theirs", range(5))}


def runs_url(ds) -> str:
    return f"/api/v1/datasets/{ds.id}/sampling-runs"


def run_url(ds, run_id) -> str:
    return f"{runs_url(ds)}/{run_id}"


def coreset_request(data, **extra) -> dict:
    body = {
        "name": "coreset 20",
        "embedding": data["embedding"].id,
        "strategy": "coreset",
        "n_samples": 20,
        "input_tag": data["input"].id,
        "preselected_tag": data["labeled"].id,
        "seed": 3,
    }
    body.update(extra)
    return body


def post_and_run(client, ds, body, capture):
    """POST a run and execute what it queued on commit (in-process, as the embedded default does)."""
    with capture(execute=True):
        response = client.post(runs_url(ds), body, format="json")
    return response


def all_scores(client, ds, run_id, limit=7) -> list[dict]:
    rows, url = [], f"{run_url(ds, run_id)}/scores?limit={limit}"
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.content
        page = response.json()
        assert len(page["results"]) <= limit
        rows += page["results"]
        url = page["next"]
    return rows


# ---- the happy path -----------------------------------------------------------------------------


def test_coreset_run_scores_every_candidate_by_rank(editor_api, dataset, data, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as queued:
        response = editor_api.post(runs_url(dataset), coreset_request(data), format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "queued" and body["progress"] == 0
    assert len(queued) == 1  # enqueued only once the run row is committed

    queued[0]()  # the worker's turn (in-process)
    run = editor_api.get(run_url(dataset, body["id"])).json()
    assert run["status"] == "succeeded", run
    assert run["progress"] == 100 and run["error"] == "" and run["attempts"] == 1
    assert run["score_count"] == 45  # idx 0..49 minus the 5 preselected
    assert run["started_at"] and run["finished_at"]
    assert run["parameters"]["strategies"] == [{"strategy": "coreset"}]

    rows = all_scores(editor_api, dataset, body["id"])
    assert [r["rank"] for r in rows] == list(range(1, 46))
    assert sorted(r["idx"] for r in rows) == list(range(5, 50))
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    by_idx = {s.idx: s for s in Sample.objects.filter(dataset=dataset)}
    assert all(r["sample_id"] == by_idx[r["idx"]].id and r["file_name"] == by_idx[r["idx"]].file_name for r in rows)

    # The ranking is the sampler's own: the top 20 are the greedy coreset of size 20.
    expected = select(
        SelectionInput(data["X"], np.arange(50), np.arange(5), {}), [{"strategy": "coreset"}], n_samples=20, seed=3
    )
    eff = np.arange(5, 50)
    assert [r["idx"] for r in rows] == eff[ranking(expected, eff)].tolist()
    assert run["summary"]["covering_radius"] == pytest.approx(rows[20]["score"])


def test_auto_run_is_the_samplers_auto_ranking(editor_api, dataset, data, django_capture_on_commit_callbacks):
    response = post_and_run(
        editor_api,
        dataset,
        coreset_request(data, strategy="auto", name="auto 10", n_samples=10),
        django_capture_on_commit_callbacks,
    )
    assert response.status_code == 202, response.content
    run = editor_api.get(run_url(dataset, response.json()["id"])).json()
    assert run["status"] == "succeeded", run
    assert run["strategy"] == "auto" and run["parameters"]["strategies"] == [{"strategy": "auto"}]
    rows = all_scores(editor_api, dataset, run["id"], limit=100)
    expected = select(
        SelectionInput(data["X"], np.arange(50), np.arange(5), {}), [{"strategy": "auto"}], n_samples=10, seed=3
    )
    eff = np.arange(5, 50)
    assert [r["idx"] for r in rows] == eff[ranking(expected, eff)].tolist()
    assert all(r["score"] > 1.0 for r in rows[:10]) and all(r["score"] <= 1.0 for r in rows[10:])  # the 10 picks


def test_slider_tag_holds_exactly_the_top_k(editor_api, dataset, data, django_capture_on_commit_callbacks):
    run_id = post_and_run(
        editor_api, dataset, coreset_request(data, n_samples=30), django_capture_on_commit_callbacks
    ).json()["id"]
    top = [r["idx"] for r in all_scores(editor_api, dataset, run_id, limit=100)[:20]]

    response = editor_api.post(
        f"/api/v1/datasets/{dataset.id}/tags",
        {"name": "label-next", "sampling_run": run_id, "top_k": 20},
        format="json",
    )
    assert response.status_code == 201, response.content
    tag = Tag.objects.get(dataset=dataset, name="label-next")
    assert tag.indices().tolist() == sorted(top)


def test_list_is_newest_first_and_viewer_can_read(
    editor_api, viewer_api, dataset, data, django_capture_on_commit_callbacks
):
    first = post_and_run(editor_api, dataset, coreset_request(data, name="one"), django_capture_on_commit_callbacks)
    second = post_and_run(
        editor_api, dataset, {"name": "two", "strategy": "random", "n_samples": 5}, django_capture_on_commit_callbacks
    )
    listing = viewer_api.get(runs_url(dataset))
    assert listing.status_code == 200
    assert [r["id"] for r in listing.json()["results"]] == [second.json()["id"], first.json()["id"]]
    assert viewer_api.get(run_url(dataset, first.json()["id"])).json()["status"] == "succeeded"
    scores = viewer_api.get(f"{run_url(dataset, second.json()['id'])}/scores")
    assert scores.status_code == 200 and len(scores.json()["results"]) == N  # random scores every sample


def test_combined_metadata_strategies_without_embedding(editor_api, dataset, data, django_capture_on_commit_callbacks):
    MetadataField.objects.create(dataset=dataset, path="car.speed", type="float")
    body = {
        "name": "fast in the sun",
        "strategies": [
            {"strategy": "threshold", "field": "weather", "operation": "eq", "value": "sunny"},
            {"strategy": "weights", "field": "car.speed"},
        ],
    }
    run_id = post_and_run(editor_api, dataset, body, django_capture_on_commit_callbacks).json()["id"]
    run = editor_api.get(run_url(dataset, run_id)).json()
    assert run["status"] == "succeeded", run["error"]
    rows = all_scores(editor_api, dataset, run_id, limit=100)
    sunny = [r for r in rows if r["idx"] % 3 == 0]
    assert {r["idx"] for r in rows[: len(sunny)]} == {r["idx"] for r in sunny}  # passing samples first
    speeds = [float(r["idx"] % 17) for r in rows[: len(sunny)]]
    assert speeds == sorted(speeds, reverse=True)


def test_similarity_run_puts_the_query_neighbourhood_first(
    editor_api, dataset, data, django_capture_on_commit_callbacks
):
    body = {
        "name": "like these",
        "embedding": data["embedding"].id,
        "strategy": "similarity",
        "metric": "euclidean",
        "query_tag": data["query"].id,
        "n_samples": 10,
    }
    run_id = post_and_run(editor_api, dataset, body, django_capture_on_commit_callbacks).json()["id"]
    rows = all_scores(editor_api, dataset, run_id, limit=100)
    # Samples 7 and 12 sit in blobs 2 and 2 (idx % 5): their blob-mates rank first.
    assert all(r["idx"] % 5 == 2 for r in rows[:8])


def test_diversity_picks_until_nothing_is_farther_than_min_distance(
    editor_api, dataset, data, django_capture_on_commit_callbacks
):
    body = {"name": "diverse", "embedding": data["embedding"].id, "strategy": "diversity", "min_distance": 6.0}
    run_id = post_and_run(editor_api, dataset, body, django_capture_on_commit_callbacks).json()["id"]
    rows = all_scores(editor_api, dataset, run_id, limit=100)
    picks = [r for r in rows if r["score"] > 6.0]
    assert len(rows) == N and len(picks) >= 5
    assert len({r["idx"] % 5 for r in rows[:5]}) == 5  # one pick in each of the five blobs first


def test_sharded_coreset_matches_two_round_k_center(editor_api, dataset, data, django_capture_on_commit_callbacks):
    run_id = post_and_run(
        editor_api, dataset, coreset_request(data, shards=3), django_capture_on_commit_callbacks
    ).json()["id"]
    run = editor_api.get(run_url(dataset, run_id)).json()
    assert run["status"] == "succeeded", run["error"]
    assert run["summary"]["mode"] == "sharded" and run["summary"]["shards"] == 3
    rows = all_scores(editor_api, dataset, run_id, limit=100)
    eff = np.arange(5, 50)
    expected = distributed_coreset(data["X"], np.arange(50), np.arange(5), 20, 3, seed=3)
    assert [r["idx"] for r in rows[:20]] == eff[ranking(expected, eff)][:20].tolist()
    assert sorted(r["idx"] for r in rows) == eff.tolist()


def test_automatic_sharding_above_the_threshold(
    editor_api, dataset, data, settings, django_capture_on_commit_callbacks
):
    settings.WINNOW_SHARD_THRESHOLD = 40
    settings.WINNOW_SAMPLING_SHARDS = 2
    run_id = post_and_run(editor_api, dataset, coreset_request(data), django_capture_on_commit_callbacks).json()["id"]
    summary = SamplingRun.objects.get(pk=run_id).summary
    assert summary["mode"] == "sharded" and summary["shards"] == 2  # 45 candidates > 40


# ---- validation: a 400 naming the field, and nothing queued ------------------------------------


def bad_requests():
    return {
        "unknown embedding": ("embedding", lambda d, o: {"embedding": "f" * 24}),
        "embedding of another dataset": ("embedding", lambda d, o: {"embedding": o["embedding"].id}),
        "missing embedding": ("embedding", lambda d, o: {"embedding": None}),
        "n_samples zero": ("n_samples", lambda d, o: {"n_samples": 0}),
        "n_samples above candidates": ("n_samples", lambda d, o: {"n_samples": 46}),
        "n_samples not a number": ("n_samples", lambda d, o: {"n_samples": "many"}),
        "n_samples fractional": ("n_samples", lambda d, o: {"n_samples": 2.5}),
        "n_samples missing": ("n_samples", lambda d, o: {"n_samples": None}),
        "unknown strategy": ("strategy", lambda d, o: {"strategy": "magic"}),
        "no strategy": ("strategy", lambda d, o: {"strategy": None}),
        "strategy and strategies": ("strategies", lambda d, o: {"strategies": [{"strategy": "random"}]}),
        "strategies not a list": ("strategies", lambda d, o: {"strategy": None, "strategies": "coreset"}),
        "strategy entry not an object": ("strategies", lambda d, o: {"strategy": None, "strategies": ["coreset"]}),
        "strategy name not a string": (
            "strategies[0].strategy",
            lambda d, o: {"strategy": None, "strategies": [{"strategy": ["coreset"]}]},
        ),
        "two coresets": (
            "strategies",
            lambda d, o: {
                "strategy": None,
                "strategies": [{"strategy": "coreset"}, {"strategy": "diversity", "min_distance": 1}],
            },
        ),
        "unknown parameter": (
            "strategies[0].radius",
            lambda d, o: {"strategy": None, "strategies": [{"strategy": "coreset", "radius": 3}]},
        ),
        "weights without field": (
            "strategies[1].field",
            lambda d, o: {"strategy": None, "strategies": [{"strategy": "coreset"}, {"strategy": "weights"}]},
        ),
        "field no sample has": ("field", lambda d, o: {"strategy": "weights", "field": "car.colour"}),
        "field path malformed": ("field", lambda d, o: {"strategy": "weights", "field": "car..speed"}),
        "threshold without operation": (
            "operation",
            lambda d, o: {"strategy": "threshold", "field": "car.speed", "value": 3},
        ),
        "threshold bad operation": (
            "operation",
            lambda d, o: {"strategy": "threshold", "field": "car.speed", "operation": "~", "value": 3},
        ),
        "threshold text value for gt": (
            "value",
            lambda d, o: {"strategy": "threshold", "field": "car.speed", "operation": "gt", "value": "fast"},
        ),
        "balance bad target": ("target", lambda d, o: {"strategy": "balance", "field": "weather", "target": [1]}),
        "diversity without min_distance": ("min_distance", lambda d, o: {"strategy": "diversity"}),
        "negative min_distance": ("min_distance", lambda d, o: {"strategy": "diversity", "min_distance": -1}),
        "min_distance for coreset": ("min_distance", lambda d, o: {"min_distance": 0.5}),
        "similarity without query": ("query_tag", lambda d, o: {"strategy": "similarity"}),
        "query tag without similarity": ("query_tag", lambda d, o: {"query_tag": d["query"].id}),
        "input tag of another dataset": ("input_tag", lambda d, o: {"input_tag": o["tag"].id}),
        "unknown preselected tag": ("preselected_tag", lambda d, o: {"preselected_tag": "0" * 24}),
        "input tag all preselected": ("input_tag", lambda d, o: {"input_tag": d["labeled"].id}),
        "shards for random": ("shards", lambda d, o: {"strategy": "random", "shards": 2}),
        "shards out of range": ("shards", lambda d, o: {"shards": 0}),
        "seed negative": ("seed", lambda d, o: {"seed": -1}),
        "name missing": ("name", lambda d, o: {"name": None}),
        "name too long": ("name", lambda d, o: {"name": "x" * 201}),
        "misspelt key": ("n_sample", lambda d, o: {"n_sample": 5}),
        "auto without n_samples": ("n_samples", lambda d, o: {"strategy": "auto", "n_samples": None}),
        "auto without embedding": ("embedding", lambda d, o: {"strategy": "auto", "embedding": None}),
        "auto with coreset": (
            "strategies",
            lambda d, o: {"strategy": None, "strategies": [{"strategy": "auto"}, {"strategy": "coreset"}]},
        ),
        "auto with a strength": ("strength", lambda d, o: {"strategy": "auto", "strength": 2}),
    }


@pytest.mark.parametrize("case", list(bad_requests()))
def test_bad_request_names_the_field_and_queues_nothing(
    case, editor_api, dataset, data, other, django_capture_on_commit_callbacks
):
    field, change = bad_requests()[case]
    body = {k: v for k, v in {**coreset_request(data), **change(data, other)}.items() if v is not None}
    with django_capture_on_commit_callbacks() as queued:
        response = editor_api.post(runs_url(dataset), body, format="json")
    assert response.status_code == 400, response.content
    errors = response.json()
    assert field in errors["errors"], errors
    assert errors["detail"].startswith(field)
    assert not queued and not SamplingRun.objects.exists()


@pytest.mark.parametrize("payload", ["{not json", "[1, 2]", '"coreset"', '{"name": "x", "n_samples": NaN}'])
def test_malformed_body_is_rejected(payload, editor_api, dataset, data, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as queued:
        response = editor_api.post(runs_url(dataset), payload, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["detail"]
    assert not queued and not SamplingRun.objects.exists()


# ---- access --------------------------------------------------------------------------------------


def test_outsider_sees_no_runs(outsider_api, editor_api, dataset, data, django_capture_on_commit_callbacks):
    run_id = post_and_run(editor_api, dataset, coreset_request(data), django_capture_on_commit_callbacks).json()["id"]
    for url in (runs_url(dataset), run_url(dataset, run_id), f"{run_url(dataset, run_id)}/scores"):
        assert outsider_api.get(url).status_code == 404
    assert outsider_api.post(runs_url(dataset), coreset_request(data), format="json").status_code == 404
    assert outsider_api.post(f"{run_url(dataset, run_id)}/cancel").status_code == 404
    assert SamplingRun.objects.count() == 1


def test_a_run_of_another_dataset_is_not_found(
    editor_api, dataset, data, outsider_api, other, django_capture_on_commit_callbacks
):
    theirs = post_and_run(
        outsider_api, other["dataset"], {"name": "r", "strategy": "random"}, django_capture_on_commit_callbacks
    ).json()["id"]
    assert editor_api.get(run_url(dataset, theirs)).status_code == 404
    assert editor_api.get(f"{run_url(dataset, theirs)}/scores").status_code == 404


def test_viewer_cannot_create_or_cancel(viewer_api, dataset, data, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as queued:
        response = viewer_api.post(runs_url(dataset), coreset_request(data), format="json")
    assert response.status_code == 403
    assert not queued and not SamplingRun.objects.exists()
    run = SamplingRun.objects.create(
        dataset=dataset, name="queued", strategy="random", parameters={"strategies": [{"strategy": "random"}]}
    )
    assert viewer_api.post(f"{run_url(dataset, run.id)}/cancel").status_code == 403
    assert SamplingRun.objects.get(pk=run.id).status == "queued"


def test_anonymous_is_401(anon_api, dataset, data):
    assert anon_api.get(runs_url(dataset)).status_code == 401
    assert anon_api.post(runs_url(dataset), coreset_request(data), format="json").status_code == 401
    assert not SamplingRun.objects.exists()


# ---- cancel --------------------------------------------------------------------------------------


def test_cancel_a_queued_run_at_once(editor_api, dataset, data, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as queued:
        run_id = editor_api.post(runs_url(dataset), coreset_request(data), format="json").json()["id"]
    response = editor_api.post(f"{run_url(dataset, run_id)}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled" and response.json()["finished_at"]
    queued[0]()  # the task arrives after all: it finds the run cancelled and does nothing
    run = SamplingRun.objects.get(pk=run_id)
    assert run.status == "cancelled" and run.attempts == 0
    assert not ImportanceScore.objects.filter(run=run).exists()
    assert editor_api.get(f"{run_url(dataset, run_id)}/scores").status_code == 409


def test_cancel_a_running_run_stops_the_worker_at_its_next_poll(
    editor_api, dataset, data, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks():
        run_id = editor_api.post(runs_url(dataset), coreset_request(data), format="json").json()["id"]
    outcome, token = services.claim_run(run_id)  # a worker took it
    assert outcome == services.CLAIMED
    response = editor_api.post(f"{run_url(dataset, run_id)}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "running" and response.json()["cancel_requested"] is True

    assert services.run_claimed(run_id, token, eager=True) == RunStatus.CANCELLED
    run = SamplingRun.objects.get(pk=run_id)
    assert run.status == "cancelled" and run.finished_at is not None
    assert not ImportanceScore.objects.filter(run=run).exists()


def test_cancel_an_abandoned_run_at_once(editor_api, dataset, data, settings):
    stale = timezone.now() - timedelta(seconds=settings.WINNOW_RUN_STALE_SECONDS + 5)
    run = SamplingRun.objects.create(
        dataset=dataset,
        name="orphan",
        strategy="random",
        status=RunStatus.RUNNING,
        heartbeat_at=stale,
        attempts=1,
        parameters={"strategies": [{"strategy": "random"}]},
    )
    response = editor_api.post(f"{run_url(dataset, run.id)}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"


def test_cancel_a_finished_run_is_409(editor_api, dataset, data, django_capture_on_commit_callbacks):
    run_id = post_and_run(editor_api, dataset, coreset_request(data), django_capture_on_commit_callbacks).json()["id"]
    response = editor_api.post(f"{run_url(dataset, run_id)}/cancel")
    assert response.status_code == 409
    assert "succeeded" in response.json()["detail"]
    assert SamplingRun.objects.get(pk=run_id).status == "succeeded"


def test_cancel_unknown_run_is_404(editor_api, dataset, data):
    assert editor_api.post(f"{run_url(dataset, 'a' * 24)}/cancel").status_code == 404


# ---- failures, retries, claims --------------------------------------------------------------------


def test_bad_embedding_values_fail_with_the_samplers_message(
    editor_api, dataset, data, django_capture_on_commit_callbacks
):
    X = blobs()
    X[17, 2] = np.nan
    emb = add_embedding(dataset, X, "broken")
    run_id = post_and_run(
        editor_api, dataset, coreset_request(data, embedding=emb.id), django_capture_on_commit_callbacks
    ).json()["id"]
    run = editor_api.get(run_url(dataset, run_id)).json()
    assert run["status"] == "failed"
    assert "NaN" in run["error"] and run["error"].startswith("embeddings:")
    assert run["score_count"] == 0 and not ImportanceScore.objects.filter(run_id=run_id).exists()


def test_unexpected_error_is_recorded_readably(
    editor_api, dataset, data, monkeypatch, django_capture_on_commit_callbacks
):
    def broken(key):
        raise OSError("the bucket is unreachable")

    monkeypatch.setattr(storage, "open_matrix", broken)
    run_id = post_and_run(editor_api, dataset, coreset_request(data), django_capture_on_commit_callbacks).json()["id"]
    run = editor_api.get(run_url(dataset, run_id)).json()
    assert run["status"] == "failed"
    assert run["error"] == "Unexpected error: OSError: the bucket is unreachable"


def test_deleted_input_tag_fails_the_run_instead_of_widening_it(
    editor_api, dataset, data, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as queued:
        run_id = editor_api.post(runs_url(dataset), coreset_request(data), format="json").json()["id"]
    data["input"].delete()
    queued[0]()
    run = SamplingRun.objects.get(pk=run_id)
    assert run.status == "failed" and run.error.startswith("input_tag:")


def stale_run(dataset, data, settings, attempts: int) -> SamplingRun:
    return SamplingRun.objects.create(
        dataset=dataset,
        name="left running",
        strategy="coreset",
        embedding=data["embedding"],
        n_samples=10,
        parameters={"strategies": [{"strategy": "coreset"}], "seed": 0},
        status=RunStatus.RUNNING,
        attempts=attempts,
        claim="dead-worker",
        started_at=timezone.now(),
        heartbeat_at=timezone.now() - timedelta(seconds=settings.WINNOW_RUN_STALE_SECONDS + 5),
    )


def test_a_run_left_running_by_a_dead_worker_is_reclaimed(dataset, data, settings):
    run = stale_run(dataset, data, settings, attempts=1)
    assert run_sampling.delay(run.id).get() == RunStatus.SUCCEEDED
    run.refresh_from_db()
    assert run.status == "succeeded" and run.attempts == 2 and run.score_count == N


def test_abandoned_runs_are_sent_out_again(dataset, data, settings):
    dead = stale_run(dataset, data, settings, attempts=1)
    SamplingRun.objects.filter(pk=dead.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=3 * settings.WINNOW_RUN_STALE_SECONDS)
    )
    live = SamplingRun.objects.create(
        dataset=dataset,
        name="live",
        strategy="random",
        parameters={"strategies": [{"strategy": "random"}]},
        status=RunStatus.RUNNING,
        attempts=1,
        claim="live-worker",
        heartbeat_at=timezone.now(),
    )
    fresh = SamplingRun.objects.create(dataset=dataset, name="just queued", strategy="random")
    lost = SamplingRun.objects.create(
        dataset=dataset,
        name="lost message",
        strategy="coreset",
        embedding=data["embedding"],
        n_samples=5,
        parameters={"strategies": [{"strategy": "coreset"}], "seed": 0},
    )
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    SamplingRun.objects.filter(pk=lost.pk).update(created_at=timezone.now() - timedelta(seconds=visibility + 5))

    assert sorted(resume_abandoned_runs.delay().get()) == sorted([dead.id, lost.id])
    for run in (dead, live, fresh, lost):
        run.refresh_from_db()
    assert dead.status == "succeeded" and dead.score_count == N
    assert lost.status == "succeeded" and lost.score_count == N
    assert (live.status, live.claim) == ("running", "live-worker") and fresh.status == "queued"


def test_a_run_interrupted_too_often_fails_readably(dataset, data, settings):
    run = stale_run(dataset, data, settings, attempts=settings.WINNOW_RUN_MAX_ATTEMPTS)
    run_sampling.delay(run.id).get()
    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error.startswith(f"Stopped after {settings.WINNOW_RUN_MAX_ATTEMPTS} attempts")
    assert not ImportanceScore.objects.filter(run=run).exists()


def test_a_live_attempt_keeps_its_run(dataset, data):
    run = SamplingRun.objects.create(
        dataset=dataset,
        name="busy",
        strategy="random",
        parameters={"strategies": [{"strategy": "random"}]},
        status=RunStatus.RUNNING,
        attempts=1,
        claim="live-worker",
        heartbeat_at=timezone.now(),
    )
    assert services.claim_run(run.id) == (services.BUSY, None)
    run.refresh_from_db()
    assert run.claim == "live-worker" and run.attempts == 1


def test_writing_scores_again_replaces_them(dataset, data):
    run = SamplingRun.objects.create(dataset=dataset, name="rerun", strategy="random")
    ids = np.array(
        list(Sample.objects.filter(dataset=dataset).order_by("idx").values_list("id", flat=True)), dtype=object
    )
    services.write_scores(run.id, None, ids, np.linspace(0, 1, N))
    services.write_scores(run.id, None, ids[:10], np.arange(10.0))
    rows = list(ImportanceScore.objects.filter(run=run).order_by("rank").values_list("rank", "sample_id", "score"))
    assert rows == [(r, ids[10 - r], float(10 - r)) for r in range(1, 11)]
    assert SamplingRun.objects.get(pk=run.pk).score_count == 10


def test_a_run_cannot_be_deleted_from_under_its_scores(dataset, data):
    run = SamplingRun.objects.create(dataset=dataset, name="kept", strategy="random")
    ids = np.array(list(Sample.objects.filter(dataset=dataset).values_list("id", flat=True)), dtype=object)
    services.write_scores(run.id, None, ids, np.zeros(N))
    with (
        pytest.raises(IntegrityError, match="still has importance scores"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("DELETE FROM sampling_samplingrun WHERE id = %s", [run.id])
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # what COMMIT would check
    assert ImportanceScore.objects.filter(run=run).count() == N

    with transaction.atomic():
        delete_dataset(dataset)  # the ORM removes the scores first, so the check passes
        with connection.cursor() as cursor:
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    assert not SamplingRun.objects.exists() and not ImportanceScore.objects.exists()


def test_scores_of_samples_with_other_ids_take_the_text_copy_path(dataset):
    Sample.objects.bulk_create(
        [Sample(dataset=dataset, id=f"legacy-{i}", idx=i, file_name=f"{i}.png") for i in range(12)]
    )
    run = SamplingRun.objects.create(dataset=dataset, name="legacy", strategy="random")
    ids = np.array([f"legacy-{i}" for i in range(12)], dtype=object)
    services.write_scores(run.id, None, ids, np.arange(12.0))
    assert list(ImportanceScore.objects.filter(run=run).order_by("rank").values_list("sample_id", flat=True)) == [
        f"legacy-{i}" for i in reversed(range(12))
    ]


def test_bulk_insert_path_writes_the_same_rows(dataset, data):
    run = SamplingRun.objects.create(dataset=dataset, name="sqlite path", strategy="random")
    ids = np.array(
        list(Sample.objects.filter(dataset=dataset).order_by("idx").values_list("id", flat=True)), dtype=object
    )
    services._bulk_scores(run.id, ids, np.linspace(1, 0, N))
    assert (
        list(ImportanceScore.objects.filter(run=run).order_by("rank").values_list("sample_id", flat=True))
        == ids.tolist()
    )


# ---- scores paging ---------------------------------------------------------------------------------


def test_scores_paging_rejects_a_bad_limit_and_cursor(editor_api, dataset, data, django_capture_on_commit_callbacks):
    run_id = post_and_run(editor_api, dataset, coreset_request(data), django_capture_on_commit_callbacks).json()["id"]
    url = f"{run_url(dataset, run_id)}/scores"
    for limit in ("0", "1001", "ten"):
        response = editor_api.get(f"{url}?limit={limit}")
        assert response.status_code == 400 and response.json()["detail"].startswith("limit")
    assert editor_api.get(f"{url}?cursor=garbage").status_code == 404
    page = editor_api.get(f"{url}?limit=1000").json()
    assert len(page["results"]) == 45 and page["next"] is None


def test_scores_of_an_unfinished_run_are_409(editor_api, dataset, data, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks():
        run_id = editor_api.post(runs_url(dataset), coreset_request(data), format="json").json()["id"]
    response = editor_api.get(f"{run_url(dataset, run_id)}/scores")
    assert response.status_code == 409 and "queued" in response.json()["detail"]


def test_run_detail_of_unknown_id_is_404(editor_api, dataset):
    assert editor_api.get(run_url(dataset, "b" * 24)).status_code == 404


def test_request_is_recorded_in_parameters(editor_api, dataset, data, django_capture_on_commit_callbacks):
    body = {
        "name": "balanced",
        "strategies": [
            {"strategy": "balance", "field": "weather", "target": {"sunny": 0.5, "rain": 0.5}},
            {"strategy": "coreset", "strength": 2},
        ],
        "embedding": data["embedding"].id,
        "n_samples": 12,
        "seed": 9,
    }
    response = post_and_run(editor_api, dataset, body, django_capture_on_commit_callbacks)
    run = editor_api.get(run_url(dataset, response.json()["id"])).json()
    assert run["status"] == "succeeded", run["error"]
    assert run["strategy"] == "balance+coreset"
    assert run["strategies"] == body["strategies"]
    assert run["parameters"]["seed"] == 9 and run["n_samples"] == 12
    top = [r["idx"] for r in all_scores(editor_api, dataset, run["id"], limit=100)[:12]]
    assert sorted(WEATHER[i % 3] for i in top) == ["rain"] * 6 + ["sunny"] * 6
    assert json.dumps(run)  # plain JSON all the way down


# ---- review fixes: what a run does when something goes wrong around it ---------------------------


def test_scores_with_nan_fail_the_run_and_write_nothing(
    editor_api, dataset, data, monkeypatch, django_capture_on_commit_callbacks
):
    real_select = services.select

    def with_nan(*args, **kwargs):
        scores = real_select(*args, **kwargs)
        scores[3] = np.nan
        return scores

    monkeypatch.setattr(services, "select", with_nan)
    run_id = post_and_run(editor_api, dataset, coreset_request(data), django_capture_on_commit_callbacks).json()["id"]
    run = editor_api.get(run_url(dataset, run_id)).json()
    assert run["status"] == "failed" and run["error"].startswith("scores: 1 of 45 are NaN or infinite")
    assert run["score_count"] == 0 and not ImportanceScore.objects.filter(run_id=run_id).exists()
    assert editor_api.get(f"{run_url(dataset, run_id)}/scores").status_code == 409


def test_writing_non_finite_scores_is_refused_before_anything_changes(dataset, data):
    run = SamplingRun.objects.create(dataset=dataset, name="inf", strategy="random")
    ids = np.array(
        list(Sample.objects.filter(dataset=dataset).order_by("idx").values_list("id", flat=True)), dtype=object
    )
    services.write_scores(run.id, None, ids, np.linspace(0, 1, N))
    with pytest.raises(services.SamplerError, match="NaN or infinite"):
        services.write_scores(run.id, None, ids, np.r_[np.inf, np.zeros(N - 1)])
    assert ImportanceScore.objects.filter(run=run).count() == N  # the earlier scores are untouched


def test_a_database_error_outside_the_run_is_retried_not_left_queued(dataset, data, monkeypatch):
    run = SamplingRun.objects.create(
        dataset=dataset,
        name="blip",
        strategy="coreset",
        embedding=data["embedding"],
        n_samples=10,
        parameters={"strategies": [{"strategy": "coreset"}], "seed": 0},
    )
    real_claim, calls = services.claim_run, []

    def flaky_claim(run_id):
        calls.append(run_id)
        if len(calls) == 1:
            raise OperationalError("server closed the connection unexpectedly")
        return real_claim(run_id)

    monkeypatch.setattr(services, "claim_run", flaky_claim)
    # throw=False: a retry of an eagerly applied task runs at once (propagating would stop it)
    assert run_sampling.apply(args=[run.id], throw=False).get() == RunStatus.SUCCEEDED
    run.refresh_from_db()
    assert len(calls) == 2 and run.status == "succeeded" and run.score_count == N


def test_a_shard_delivered_twice_does_not_push_progress_past_its_span(dataset, data):
    run = SamplingRun.objects.create(
        dataset=dataset,
        name="sharded",
        strategy="coreset",
        embedding=data["embedding"],
        n_samples=10,
        parameters={"strategies": [{"strategy": "coreset"}], "seed": 0, "shards": 2},
    )
    outcome, token = services.claim_run(run.id)
    assert outcome == services.CLAIMED
    for _ in range(3):  # shard 0 once, then twice more as if its worker had been killed after it finished
        assert services.reduce_shard(run.id, token, 0, 2, eager=True)["shard"] == 0
    run.refresh_from_db()
    assert run.progress == services.SHARD_SPAN[1] and run.status == "running"


@pytest.mark.django_db(transaction=True)
def test_a_failed_heartbeat_does_not_end_the_heartbeats(dataset, settings, monkeypatch):
    import time

    settings.WINNOW_RUN_STALE_SECONDS = 2  # a beat every 0.5 s
    long_ago = timezone.now() - timedelta(hours=1)
    run = SamplingRun.objects.create(
        dataset=dataset,
        name="beating",
        strategy="random",
        status=RunStatus.RUNNING,
        claim="mine",
        heartbeat_at=long_ago,
    )
    real_mine, beats = services.Attempt._mine, []

    def flaky_mine(self):
        beats.append(1)
        if len(beats) == 1:
            raise OperationalError("connection reset")
        return real_mine(self)

    monkeypatch.setattr(services.Attempt, "_mine", flaky_mine)
    with services.Attempt(run.id, "mine", heartbeat=True):
        deadline = time.monotonic() + 30
        while SamplingRun.objects.get(pk=run.pk).heartbeat_at == long_ago and time.monotonic() < deadline:
            time.sleep(0.1)
    assert len(beats) >= 2
    assert SamplingRun.objects.get(pk=run.pk).heartbeat_at > long_ago


def idx_walk(dataset, rows, input_tag, pre_tag) -> tuple[np.ndarray, np.ndarray]:
    """(candidates, preselected) from every sample's idx: what a run scored before it read next_idx and the bits."""
    existing = np.array(sorted(Sample.objects.filter(dataset=dataset).values_list("idx", flat=True)), dtype=np.int64)
    if rows is not None:
        existing = existing[existing < rows]
    cand = existing if input_tag is None else np.intersect1d(existing, input_tag.indices())
    pre = np.zeros(0, dtype=np.int64) if pre_tag is None else np.intersect1d(existing, pre_tag.indices())
    return cand, pre


@pytest.mark.parametrize("input_name", [None, "input"])
@pytest.mark.parametrize("pre_name", [None, "labeled"])
@pytest.mark.parametrize("rows", [None, 40, N + 5])
def test_the_candidate_count_reads_no_sample_row_and_equals_the_idx_walk(dataset, data, input_name, pre_name, rows):
    """A run request counts its candidates from next_idx and the tags' bits (at 10M, reading every sample's idx in
    the request took minutes); the count is what walking the samples' idx gives."""
    input_tag, pre_tag = data.get(input_name), data.get(pre_name)
    cand, pre = idx_walk(dataset, rows, input_tag, pre_tag)
    expected = len(np.setdiff1d(cand, pre, assume_unique=True))
    with CaptureQueriesContext(connection) as queries:
        got = services._candidate_count(dataset.id, rows, input_tag, pre_tag)
    assert got == expected
    assert not [q["sql"] for q in queries.captured_queries if '"curation_sample"' in q["sql"]]
