"""Shared fixtures: users with each role, API clients authenticated by real tokens, datasets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from celery._state import _set_task_join_will_block
from rest_framework.test import APIClient

from curation.models import Membership, Role
from curation.services import create_dataset
from winnow.accounts.models import ApiToken

ROOT = Path(__file__).resolve().parent.parent


def _client_for(user) -> APIClient:
    _token, key = ApiToken.issue(user, "test")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    client.token_key = key
    return client


@pytest.fixture(autouse=True)
def _fast_password_hasher(settings):
    # The fixtures create several users per test; the real hasher would dominate the suite's time.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("olivia", password="pw-olivia-123")


@pytest.fixture
def editor(django_user_model):
    return django_user_model.objects.create_user("ed", password="pw-ed-123456")


@pytest.fixture
def viewer(django_user_model):
    return django_user_model.objects.create_user("vera", password="pw-vera-12345")


@pytest.fixture
def outsider(django_user_model):
    return django_user_model.objects.create_user("oscar", password="pw-oscar-1234")


@pytest.fixture
def dataset(owner, editor, viewer):
    """A `meta` dataset owned by `owner`, with `editor` and `viewer` as members."""
    ds = create_dataset(owner, "street scenes", "meta")
    Membership.objects.create(dataset=ds, user=editor, role=Role.EDITOR)
    Membership.objects.create(dataset=ds, user=viewer, role=Role.VIEWER)
    return ds


ROLE_USERS = ("owner", "editor", "viewer", "outsider")


def role_fixtures(suffix: str, make, namespace: dict) -> None:
    """Define fixtures `owner_<suffix>`, `editor_<suffix>`, `viewer_<suffix>`, `outsider_<suffix>` in
    `namespace` (a conftest's globals()), each returning `make(<that user>)`."""
    for user_fixture in ROLE_USERS:

        def fixture(request, _user_fixture=user_fixture):
            return make(request.getfixturevalue(_user_fixture))

        name = f"{user_fixture}_{suffix}"
        fixture.__name__ = name
        namespace[name] = pytest.fixture(fixture, name=name)


# owner_api, editor_api, viewer_api, outsider_api: DRF clients authenticated by a fresh token of that user.
role_fixtures("api", _client_for, globals())


@pytest.fixture
def anon_api():
    return APIClient()


@pytest.fixture(autouse=True)
def _projection_in_process(settings):
    """Tests compute map projections in the test process (tests/api/test_projection_child.py runs the child)."""
    settings.WINNOW_PROJECTION_IN_CHILD = False


@pytest.fixture(autouse=True)
def _media_root(tmp_path, settings):
    """Each test writes files into its own folder (local storage), so tests cannot see each other's files."""
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": tmp_path / "media"},
        },
    }
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture(scope="session", autouse=True)
def _stray_db_sessions_ended(django_db_setup, django_db_blocker):
    """At the end, end the database sessions other threads and processes still hold, so the test database can
    be dropped: a live-server thread serving a kept-alive connection keeps its session until that connection
    closes, which may be after the last test. Autouse, so it is torn down after every other session fixture.
    """
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    others = "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        for _ in range(20):
            cursor.execute(f"SELECT count(*) {others}")
            if cursor.fetchone()[0] == 0:
                return
            time.sleep(0.1)
        cursor.execute(f"SELECT pg_terminate_backend(pid) {others}")


# --- real services -----------------------------------------------------------------------------


def pytest_sessionstart(session):
    """Under `scripts/test` (and so in CI) the suite must run on PostgreSQL and Redis, never SQLite."""
    if os.environ.get("WINNOW_REQUIRE_SERVICES") != "1":
        return
    from django.conf import settings as dj_settings

    engine = dj_settings.DATABASES["default"]["ENGINE"]
    if "postgresql" not in engine:
        pytest.exit(f"WINNOW_REQUIRE_SERVICES=1 but the database engine is {engine}", returncode=3)
    if not dj_settings.CELERY_BROKER_URL:
        pytest.exit("WINNOW_REQUIRE_SERVICES=1 but CELERY_BROKER_URL is not set", returncode=3)


@pytest.fixture(autouse=True)
def _eager_tasks(request):
    """Tasks run in-process unless the test is marked `worker` (then a real worker takes them)."""
    from winnow.celery import app

    eager = request.node.get_closest_marker("worker") is None
    previous = app.conf.task_always_eager
    app.conf.task_always_eager = eager
    # An eager apply() sets Celery's process-wide "a join would block" flag and restores the value it found;
    # two live-server threads applying tasks at once can leave it set (each restores what the other set),
    # and a later test's result.get() from the test process would be refused. Each test starts with it clear.
    _set_task_join_will_block(False)
    yield
    app.conf.task_always_eager = previous


class WorkerProcess:
    def __init__(self, env: dict, queue: str, concurrency: int):
        self.env, self.queue, self.concurrency = env, queue, concurrency
        # A node name of its own: with two workers on one queue, readiness must be this worker's reply.
        self.node = f"{queue}-{uuid.uuid4().hex[:6]}"
        self.log_path = Path(tempfile.mkstemp(prefix="winnow-worker-", suffix=".log")[1])
        self.proc: subprocess.Popen | None = None

    def start(self) -> WorkerProcess:
        from winnow.celery import app

        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "winnow",
                "worker",
                "-Q",
                self.queue,
                "-c",
                str(self.concurrency),
                "-n",
                f"{self.node}@%h",
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited at start:\n{self.log()}")
            replies = app.control.ping(timeout=0.5) or []
            if any(name.startswith(f"{self.node}@") for reply in replies for name in reply):
                return self
        raise RuntimeError(f"celery worker did not answer within 60 s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def kill(self, sig=signal.SIGKILL) -> None:
        """Kill the worker and its pool children at once, as a crash or an OOM kill would."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture(scope="session")
def worker_env(django_db_setup, django_db_blocker):
    """Environment for a worker process that uses the test database and a queue of this session's own."""
    from django.conf import settings as dj_settings

    from winnow.celery import app

    if not dj_settings.CELERY_BROKER_URL:
        pytest.skip("needs CELERY_BROKER_URL (a Redis broker); scripts/test sets it")
    db = dj_settings.DATABASES["default"]
    if "postgresql" not in db["ENGINE"]:
        pytest.skip("worker tests need PostgreSQL: the worker is another process")
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    url = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    queue = f"test-{uuid.uuid4().hex[:8]}"
    app.conf.task_default_queue = queue
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "WINNOW_QUEUE": queue,
        "SECRET_KEY": dj_settings.SECRET_KEY,
        "CELERY_BROKER_URL": dj_settings.CELERY_BROKER_URL,
    }
    return env, queue


@pytest.fixture(scope="session")
def celery_worker(worker_env):
    """One real Celery worker process for the whole session (tests using it need transaction=True)."""
    env, queue = worker_env
    worker = WorkerProcess(env, queue, concurrency=2).start()
    yield worker
    worker.stop()


@pytest.fixture
def fresh_worker(worker_env):
    """A worker of this test's own, for tests that kill it."""
    from winnow.celery import app

    env, session_queue = worker_env
    # A queue of its own, so the session's worker cannot take this test's tasks.
    queue = f"test-{uuid.uuid4().hex[:8]}"
    app.conf.task_default_queue = queue
    env = {**env, "WINNOW_QUEUE": queue}
    workers: list[WorkerProcess] = []

    def start(concurrency: int = 1, **env_overrides: str) -> WorkerProcess:
        # env_overrides: settings for this worker only, e.g. WINNOW_VISIBILITY_TIMEOUT="10".
        workers.append(WorkerProcess({**env, **env_overrides}, queue, concurrency).start())
        return workers[-1]

    yield start
    for worker in workers:
        worker.stop()
    app.conf.task_default_queue = session_queue
