"""Setting up a benchmark's Django environment: its own PostgreSQL database (created if missing), migrated.

The one place benchmarks create, drop and connect to their PostgreSQL databases (`ensure_database`,
`fresh_database`, `drop_database`, `connect`).

from _setup import django_environment, setup_database
django_environment("winnow_bench_scores")   # before importing anything that touches settings
...
setup_database()                            # create the database if missing, django.setup(), migrate
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def django_environment(database: str | None, **defaults: str) -> None:
    """Put the repository on sys.path and set the environment defaults a benchmark runs with.

    `database` names the benchmark's own PostgreSQL database (used unless DATABASE_URL is set);
    None leaves DATABASE_URL alone (for a benchmark that makes a throwaway test database).
    """
    for path in (ROOT, ROOT / "benchmarks"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    if database is not None:
        os.environ.setdefault("DATABASE_URL", f"postgres://postgres@127.0.0.1:5432/{database}")
    os.environ.setdefault("SECRET_KEY", "winnow-benchmark-secret-not-for-production")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "winnow.settings")
    os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost")
    for name, value in defaults.items():
        os.environ.setdefault(name, value)


def _parse(url: str) -> dict:
    import dj_database_url

    cfg = dj_database_url.parse(url)
    if "postgresql" not in cfg["ENGINE"]:
        sys.exit(f"DATABASE_URL must point at PostgreSQL, not {cfg['ENGINE']}")
    return cfg


def connect(url: str, dbname: str | None = None):
    """A psycopg2 connection to the database named by `url` (or to `dbname` on the same server)."""
    import psycopg2

    cfg = _parse(url)
    return psycopg2.connect(
        dbname=dbname or cfg["NAME"],
        user=cfg["USER"],
        password=cfg["PASSWORD"] or None,
        host=cfg["HOST"] or "127.0.0.1",
        port=cfg["PORT"] or 5432,
    )


@contextmanager
def _server(url: str):
    """(cursor on the server's `postgres` db in autocommit, the name of `url`'s database)."""
    conn = connect(url, dbname="postgres")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur, _parse(url)["NAME"]
    finally:
        conn.close()


def ensure_database(url: str) -> None:
    """Create the benchmark's database if it does not exist."""
    with _server(url) as (cur, name):
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{name}"')


def drop_database(url: str) -> None:
    """Drop the PostgreSQL database named by `url`, closing its connections."""
    with _server(url) as (cur, name):
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fresh_database(url: str) -> None:
    """Drop and create the PostgreSQL database named by `url`."""
    with _server(url) as (cur, name):
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute(f'CREATE DATABASE "{name}"')


def setup_database() -> None:
    """Create DATABASE_URL's database if missing, set Django up and migrate it."""
    ensure_database(os.environ["DATABASE_URL"])
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
