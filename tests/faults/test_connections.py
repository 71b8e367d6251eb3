"""Connections that cannot run out (issue 14): runserver with a kept connection per thread left one idle
PostgreSQL session per client connection, and 32 clients opening a connection per request got "too many clients"
500s. Here 32 such clients hit each way Winnow is served, against a private PostgreSQL with few connections; every
request must succeed, the server's sessions must stay within its bound, and none may be left behind."""

from __future__ import annotations

import threading
from collections import Counter

import psycopg2
import pytest
import requests

from tests.faults.conftest import serve
from tests.private_postgres import wait_until

CLIENTS = 32
REQUESTS_PER_CLIENT = 6
# Below 32 clients, above what each serving mode may hold: an unbounded server runs out.
MAX_CONNECTIONS = 16


class SessionCounter:
    """Samples the served database's client sessions (from the `postgres` database, so not counting itself)."""

    def __init__(self, pg):
        self.conn = psycopg2.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname="postgres")
        self.conn.autocommit = True
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def count(self) -> int:
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'winnow' AND backend_type = 'client backend'"
            )
            return cur.fetchone()[0]

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.count())
            self._stop.wait(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)


def burst(base: str, token: str) -> Counter:
    """CLIENTS threads, each sending REQUESTS_PER_CLIENT authenticated list requests on a new connection each."""
    statuses: Counter = Counter()
    lock = threading.Lock()
    start = threading.Barrier(CLIENTS)

    def client() -> None:
        start.wait()
        for _ in range(REQUESTS_PER_CLIENT):
            try:
                response = requests.get(
                    f"{base}/api/v1/datasets",
                    headers={"Authorization": f"Token {token}", "Connection": "close"},
                    timeout=120,
                )
                outcome = response.status_code
            except requests.RequestException as exc:
                outcome = type(exc).__name__
            with lock:
                statuses[outcome] += 1

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return statuses


@pytest.fixture
def starved(private_winnow):
    """The private server restarted with MAX_CONNECTIONS (none reserved), back to its default afterwards."""
    pg = private_winnow.pg
    previous = pg.settings["max_connections"]
    pg.stop()
    pg.settings["max_connections"] = str(MAX_CONNECTIONS)
    pg.start()
    yield private_winnow
    pg.stop()
    pg.settings["max_connections"] = previous
    pg.start()


@pytest.mark.parametrize(
    "kind, env, bound, kept",
    [
        # The demo and the embedded default: at most WINNOW_MAX_CONCURRENT_REQUESTS (8) requests at once, each
        # connection closed when its request ends.
        ("runserver", {}, 8, 0),
        # The Dockerfile and compose: workers x threads, each thread keeping its connection (CONN_MAX_AGE) for
        # the next request; the start-up check counts them against max_connections.
        ("gunicorn", {"WEB_CONCURRENCY": "2", "GUNICORN_THREADS": "3", "WINNOW_DB_OTHER_CONNECTIONS": "8"}, 6, 6),
    ],
)
def test_a_burst_of_clients_never_runs_the_database_out_of_connections(starved, tmp_path, kind, env, bound, kept):
    server = serve(kind, starved.server_env(**env), tmp_path)
    try:
        with SessionCounter(starved.pg) as sessions:
            statuses = burst(server.base, starved.token)
        assert statuses == Counter({200: CLIENTS * REQUESTS_PER_CLIENT}), f"{statuses}\n{server.log()}"
        assert 0 < sessions.peak <= bound
        # Nothing idle piles up beyond what the server may keep: runserver keeps none.
        wait_until(lambda: sessions.count() <= kept, timeout=30, what=f"at most {kept} sessions left")
        assert requests.get(f"{server.base}/api/v1/health", timeout=30).status_code == 200
    finally:
        server.stop()
