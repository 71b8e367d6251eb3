"""gunicorn settings for Winnow's web process: `gunicorn -c winnow/gunicorn.conf.py winnow.wsgi:application`.

Every value comes from the environment through winnow.env's strict readers (a bad value stops the start and names
the variable); the README's settings table lists them. At start, the database's max_connections is checked
against workers x threads plus what the Celery workers and operators hold (WINNOW_DB_OTHER_CONNECTIONS), so a
burst of clients queues in gunicorn instead of failing with PostgreSQL's "too many clients already".
"""

from __future__ import annotations

import os

from winnow.env import env_bool, env_int, env_str

bind = env_str("WINNOW_BIND", "0.0.0.0:8000")
# Threads: a slow client (an upload, a long export) holds a thread, not a whole process; every thread may hold
# one database connection (CONN_MAX_AGE), which is what the start-up check counts.
worker_class = env_str("GUNICORN_WORKER_CLASS", "gthread")
workers = env_int("WEB_CONCURRENCY", 3, minimum=1)
threads = env_int("GUNICORN_THREADS", 4, minimum=1)
# Large files go up in chunks, so no single request needs long; exports stream. A worker silent for this long
# is killed and replaced.
timeout = env_int("GUNICORN_TIMEOUT", 120, minimum=10)
graceful_timeout = env_int("GUNICORN_GRACEFUL_TIMEOUT", 30, minimum=1)
keepalive = env_int("GUNICORN_KEEPALIVE", 5, minimum=0)
# Recycle each worker after about this many requests (0: never), jittered so they do not all restart at once:
# bounds the growth of a leaking or fragmenting process (numpy buffers, parsers) over weeks.
max_requests = env_int("GUNICORN_MAX_REQUESTS", 2000, minimum=0)
max_requests_jitter = env_int("GUNICORN_MAX_REQUESTS_JITTER", max(1, max_requests // 10), minimum=0)
# The proxy in front may set X-Forwarded-For/-Proto; trust only its address ("*" on a private compose network).
forwarded_allow_ips = env_str("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
accesslog = env_str("GUNICORN_ACCESS_LOG", "-") or None
# No query string and no referer: Lightly's client sends its token as ?token=, and signed links carry their
# signature there (the path alone says what was asked for).
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s "%(a)s" %(L)s'
errorlog = "-"
loglevel = env_str("LOG_LEVEL", "info").lower()
# The workers' heartbeat files on tmpfs, so a slow container disk cannot make a healthy worker look dead.
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"
_check_connections = env_bool("WINNOW_DB_CHECK_CONNECTIONS", True)
_other_connections = env_int("WINNOW_DB_OTHER_CONNECTIONS", 10, minimum=0)


def connection_budget_error(workers: int, threads: int, others: int, max_connections: int, reserved: int) -> str | None:
    """Why workers x threads + others would not fit in the database's connections, or None when they fit."""
    needed = workers * threads + others
    available = max_connections - reserved
    if needed <= available:
        return None
    return (
        f"WEB_CONCURRENCY={workers} x GUNICORN_THREADS={threads} + WINNOW_DB_OTHER_CONNECTIONS={others} = {needed} "
        f"database connections, but PostgreSQL allows {available} (max_connections={max_connections} - "
        f"superuser_reserved_connections={reserved}): lower the workers or threads, or raise max_connections"
    )


def _database_limits() -> tuple[int, int] | None:
    """(max_connections, superuser_reserved_connections) of DATABASE_URL's PostgreSQL server, or None."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        return None
    import dj_database_url
    import psycopg2

    cfg = dj_database_url.parse(url)
    conn = psycopg2.connect(
        dbname=cfg["NAME"],
        user=cfg["USER"],
        password=cfg["PASSWORD"] or None,
        host=cfg["HOST"] or None,
        port=cfg["PORT"] or None,
        connect_timeout=10,
    )
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT current_setting('max_connections')::int, current_setting('superuser_reserved_connections')::int"
            )
            return cur.fetchone()
    finally:
        conn.close()


def on_starting(server) -> None:
    if not _check_connections:
        return
    try:
        limits = _database_limits()
    except Exception as exc:  # the database may still be starting: the app will say so on its first request
        server.log.warning("could not check the database's max_connections: %s", exc)
        return
    if limits is None:
        return
    error = connection_budget_error(server.cfg.workers, server.cfg.threads, _other_connections, *limits)
    if error:
        raise SystemExit(f"winnow: {error}")
