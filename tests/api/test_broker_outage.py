"""A run created while the broker is down (issue 14): the request answers at once, the run is kept queued and
says it is not sent, and the sweeper sends it once the broker is back. The second test stops and starts a
Redis server of its own (another port; the shared one is never touched)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import timedelta

import numpy as np
import pytest
from django.db import connection
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError

from curation import storage
from curation.models import Embedding
from sampling import services
from sampling.models import RunStatus, SamplingRun
from sampling.tasks import resume_abandoned_runs
from tests.conftest import ROOT
from tests.factories import make_samples
from winnow.celery import task

N = 40


@pytest.fixture
def embedded(dataset):
    make_samples(dataset, N)
    X = np.random.default_rng(0).normal(size=(N, 4)).astype(np.float32)
    key = storage.save_matrix(f"{dataset.storage_prefix}embeddings/e.npy", X)
    return Embedding.objects.create(dataset=dataset, name="e", dimension=4, count=N, matrix_key=key)


def _body(embedding):
    return {"name": "during outage", "embedding": embedding.id, "strategy": "coreset", "n_samples": 5}


@pytest.mark.django_db
def test_a_run_created_during_an_outage_is_visible_and_sent_when_the_broker_is_back(
    editor_api, dataset, embedded, monkeypatch, django_capture_on_commit_callbacks
):
    run_task = task("sampling.run_sampling")

    def refuse(*args, **kwargs):
        raise BrokerError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(run_task, "apply_async", refuse)
    with django_capture_on_commit_callbacks(execute=True):
        response = editor_api.post(f"/api/v1/datasets/{dataset.id}/sampling-runs", _body(embedded), format="json")
    assert response.status_code == 202, response.content
    run_id = response.json()["id"]
    shown = editor_api.get(f"/api/v1/datasets/{dataset.id}/sampling-runs/{run_id}").json()
    assert shown["status"] == "queued" and shown["error"] == services.NOT_SENT
    assert resume_abandoned_runs() == []  # the broker is still away (and the run is too new)

    monkeypatch.undo()  # the broker is back
    SamplingRun.objects.filter(pk=run_id).update(created_at=timezone.now() - timedelta(seconds=30))
    assert resume_abandoned_runs(include_lost_queued=False) == [run_id]
    run = SamplingRun.objects.get(pk=run_id)
    assert run.status == RunStatus.SUCCEEDED and run.error == "" and run.task_id and run.score_count == N
    assert resume_abandoned_runs(include_lost_queued=False) == []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


SCRIPT = """
import json, sys, time, django
django.setup()
from django.db import transaction
from sampling import services
from sampling.models import SamplingRun
from sampling.tasks import resume_abandoned_runs
if sys.argv[1] == "create":
    from curation.models import Dataset
    from django.contrib.auth import get_user_model
    dataset = Dataset.objects.get(pk=sys.argv[2])
    user = get_user_model().objects.get(pk=dataset.owner_id)
    start = time.monotonic()
    run = services.create_run(dataset, json.loads(sys.argv[3]), user)
    print(json.dumps({"id": run.id, "seconds": time.monotonic() - start}))
else:
    SamplingRun.objects.filter(pk=sys.argv[2]).update(created_at=SamplingRun.objects.get(pk=sys.argv[2]).created_at
        - __import__("datetime").timedelta(seconds=30))
    print(json.dumps(resume_abandoned_runs(include_lost_queued=False)))
"""


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
def test_redis_stopped_then_started(dataset, embedded, tmp_path):
    port = _free_port()
    broker = f"redis://127.0.0.1:{port}/0"
    env = {
        **os.environ,
        "CELERY_BROKER_URL": broker,
        "CELERY_RESULT_BACKEND": broker,
        "DATABASE_URL": "postgres://{USER}@{HOST}:{PORT}/{NAME}".format(**connection.settings_dict),
        "DJANGO_SETTINGS_MODULE": "winnow.settings",
        "WINNOW_MEDIA_ROOT": str(tmp_path / "media"),
    }

    def run(*args):
        result = subprocess.run(
            [sys.executable, "-c", SCRIPT, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    created = run("create", dataset.id, json.dumps(_body(embedded)))  # nothing listens on the port: Redis is down
    print(f"create_run with the broker down returned after {created['seconds']:.2f} s")
    run_row = SamplingRun.objects.get(pk=created["id"])
    assert run_row.status == RunStatus.QUEUED and run_row.task_id == "" and run_row.error == services.NOT_SENT

    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True).stdout.strip():
                break
            time.sleep(0.1)
        assert run("sweep", created["id"]) == [created["id"]]
        queued = subprocess.run(
            ["redis-cli", "-p", str(port), "llen", os.environ.get("WINNOW_QUEUE", "winnow")],
            capture_output=True,
            text=True,
        )
        assert queued.stdout.strip() == "1"  # the message waits for a worker on this broker
        run_row.refresh_from_db()
        assert run_row.task_id and run_row.error == "" and run_row.status == RunStatus.QUEUED
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.django_db
def test_a_projection_left_pending_is_sent_again(embedded, settings, monkeypatch):
    """An embedding stored while the broker was down kept its map projection "pending" forever."""
    from curation import embeddings
    from curation.tasks import resend_stale_projections

    Embedding.objects.filter(pk=embedded.pk).update(projection_status="pending")
    last_sent: dict[str, float] = {}
    assert resend_stale_projections(last_sent) == []  # too new: an attempt may still be under way
    Embedding.objects.filter(pk=embedded.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.WINNOW_PROJECTION_TIME_LIMIT + 61)
    )
    sent = []
    monkeypatch.setattr(embeddings, "_enqueue_projection", sent.append)
    assert resend_stale_projections(last_sent) == [embedded.id] and sent == [embedded.id]
    assert resend_stale_projections(last_sent) == []  # not again from this worker before another time limit
