"""A real Celery worker process takes a task from Redis and its result lands in PostgreSQL."""

import uuid

import pytest

from winnow.accounts.models import WorkerHeartbeat
from winnow.celery import ping

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_task_result_lands_in_postgres(celery_worker):
    marker = uuid.uuid4().hex
    result = ping.delay(marker)
    assert result.get(timeout=30) == marker
    assert WorkerHeartbeat.objects.filter(marker=marker).exists()


def test_health_reports_broker_and_worker(celery_worker, anon_api):
    response = anon_api.get("/api/v1/health")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["database"] == {"ok": True, "vendor": "postgresql"}
    assert body["broker"]["ok"] is True and body["broker"]["mode"] == "broker"
    assert body["broker"]["workers"] >= 1
