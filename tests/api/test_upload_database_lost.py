"""An image upload whose database connection is lost (a PostgreSQL restart or crash, issue 14): before the commit
nothing stays behind; at the commit, when the rows may have landed without the answer, the files stay with them.
Either way the client gets a 503 to retry, and the retry skips what landed. (The live fault test with a real
restart is tests/faults/test_postgres_restart.py.)"""

from __future__ import annotations

import psycopg2
import pytest
from django.db import OperationalError, connection

from curation import services
from curation.models import Sample
from tests.api.test_upload import full_dataset, jpeg, stored_files, upload  # noqa: F401 (fixture)


def _lost() -> OperationalError:
    cause = psycopg2.OperationalError("server closed the connection unexpectedly")
    error = OperationalError(str(cause))
    error.__cause__ = cause
    return error


FILES = [("a.jpg", jpeg(1)), ("b.jpg", jpeg(2))]


@pytest.mark.django_db(transaction=True)
def test_lost_before_the_commit_leaves_nothing(editor_api, full_dataset, settings, monkeypatch):
    real = services.add_samples

    def add_then_lose(*args, **kwargs):
        real(*args, **kwargs)
        raise _lost()

    monkeypatch.setattr(services, "add_samples", add_then_lose)
    response = upload(editor_api, full_dataset, FILES)
    assert response.status_code == 503 and response["Retry-After"] == "5", response.content
    assert not Sample.objects.filter(dataset=full_dataset).exists()
    assert stored_files(settings.MEDIA_ROOT) == []

    monkeypatch.undo()
    assert upload(editor_api, full_dataset, FILES).status_code == 201
    assert Sample.objects.filter(dataset=full_dataset).count() == 2


@pytest.mark.django_db(transaction=True)
def test_lost_answer_after_a_landed_commit_keeps_the_files(editor_api, full_dataset, settings, monkeypatch):
    real_add, real_commit = services.add_samples, connection.commit
    armed = []

    def add_and_arm(*args, **kwargs):
        result = real_add(*args, **kwargs)
        armed.append(True)
        return result

    def commit_then_lose_the_answer():
        real_commit()
        if armed:
            armed.clear()
            raise _lost()

    monkeypatch.setattr(services, "add_samples", add_and_arm)
    monkeypatch.setattr(connection, "commit", commit_then_lose_the_answer)
    response = upload(editor_api, full_dataset, FILES)
    assert response.status_code == 503, response.content
    rows = list(Sample.objects.filter(dataset=full_dataset))
    assert sorted(s.file_name for s in rows) == ["a.jpg", "b.jpg"]
    keys = sorted(k for s in rows for k in (s.original_key, s.thumbnail_key))
    assert stored_files(settings.MEDIA_ROOT) == keys  # every row has its files, and no file is without a row

    retried = upload(editor_api, full_dataset, FILES)  # the client's retry
    assert retried.status_code == 200 and sorted(retried.json()["skipped"]) == ["a.jpg", "b.jpg"]
