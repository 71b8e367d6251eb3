"""Fault tests against a PostgreSQL server of their own (tests/private_postgres.py): one migrated cluster for the
session, with a user and a token, that the tests may starve, stop, restart or crash."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.private_postgres import PrivatePostgres, free_port, start_private_postgres
from winnow.waiting import NotAnswering, wait_for_http

# Left out of the served processes' environment: they talk to the private server, tasks run in-process.
NOT_INHERITED = {
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "WINNOW_REQUIRE_SERVICES",
    "AWS_STORAGE_BUCKET_NAME",
    "WINNOW_MAX_CONCURRENT_REQUESTS",
    "WEB_CONCURRENCY",
    "GUNICORN_THREADS",
}


@dataclass
class PrivateWinnow:
    pg: PrivatePostgres
    env: dict
    token: str
    var: Path

    def server_env(self, **overrides) -> dict:
        return {**self.env, **overrides}


@pytest.fixture(scope="session")
def private_winnow():
    pg = start_private_postgres({"max_connections": "40", "superuser_reserved_connections": "0"})
    var = Path(tempfile.mkdtemp(prefix="winnow-faults-"))
    try:
        pg.psql("CREATE DATABASE winnow")
        env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
        env.update(
            DATABASE_URL=pg.url("winnow"),
            DJANGO_SETTINGS_MODULE="winnow.settings",
            SECRET_KEY="winnow-fault-tests",
            DEBUG="0",
            WINNOW_VAR_DIR=str(var),
            WINNOW_MEDIA_ROOT=str(var / "media"),
            WINNOW_DB_CHECK_CONNECTIONS="true",
        )
        manage = [sys.executable, "manage.py"]
        subprocess.run([*manage, "migrate", "--noinput"], cwd=ROOT, env=env, check=True, capture_output=True)
        made = subprocess.run(
            [*manage, "createtoken", "faults", "--create-user"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        yield PrivateWinnow(pg=pg, env=env, token=made.stdout.strip().splitlines()[-1], var=var)
    finally:
        pg.destroy()
        shutil.rmtree(var, ignore_errors=True)


@dataclass
class ServedWinnow:
    proc: subprocess.Popen
    base: str
    log_path: Path
    pids: list = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


def serve(kind: str, env: dict, log_dir: Path) -> ServedWinnow:
    """Start Winnow the way it is served: `runserver` (the demo) or gunicorn with winnow/gunicorn.conf.py."""
    port = free_port()
    if kind == "runserver":
        argv = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
    elif kind == "gunicorn":
        env = {"GUNICORN_ACCESS_LOG": "", **env, "WINNOW_BIND": f"127.0.0.1:{port}"}
        argv = [sys.executable, "-m", "gunicorn", "-c", "winnow/gunicorn.conf.py", "winnow.wsgi:application"]
    else:
        raise ValueError(kind)
    log_path = log_dir / f"{kind}.log"
    log = log_path.open("ab")
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    served = ServedWinnow(proc, f"http://127.0.0.1:{port}", log_path)
    try:  # 503: up, with a dependency down (what some of these tests arrange)
        wait_for_http(f"{served.base}/api/v1/health", proc, timeout=90, statuses=(200, 503), request_timeout=5)
    except NotAnswering as exc:
        if exc.exited:
            raise AssertionError(f"{kind} exited at start:\n{served.log()}") from None
        served.stop()
        raise AssertionError(f"{kind} did not answer within 90 s:\n{served.log()}") from None
    return served
