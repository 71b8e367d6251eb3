"""The Celery app. Workers start with `celery -A winnow worker`."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "winnow.settings")

app = Celery("winnow")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.task(name="winnow.ping")
def ping(marker: str) -> str:
    """Round-trip check used by the health endpoint's broker probe and the worker test."""
    from winnow.accounts.models import WorkerHeartbeat

    WorkerHeartbeat.objects.update_or_create(marker=marker, defaults={})
    return marker
