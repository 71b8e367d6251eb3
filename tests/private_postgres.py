"""A PostgreSQL server of a test's own (initdb into a temporary folder, started on a free port), for fault tests
that stop, crash or starve the database: the shared server on 5432 is never touched.

Skips when PostgreSQL's server binaries are missing; under WINNOW_REQUIRE_SERVICES=1 (scripts/test, CI) a server
that exists but cannot start fails the test instead.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


def server_binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder (with initdb, pg_ctl and postgres), or None."""
    candidates = sorted(
        (Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for path in reversed(candidates):
        if all((path / name).exists() for name in ("initdb", "pg_ctl", "postgres")):
            return path
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivatePostgres:
    """One throw-away cluster. PostgreSQL refuses to run as root: then it runs as the `postgres` user."""

    def __init__(self, bin_dir: Path, settings: dict[str, str] | None = None):
        self.bin = bin_dir
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="winnow-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.dir),
            "fsync": "off",  # a process crash keeps what reached the OS; only the machine's crash would not
            "full_page_writes": "off",
            **(settings or {}),
        }
        self._user = None
        if os.geteuid() == 0:
            try:
                self._user = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no `postgres` user to run PostgreSQL as") from None
            os.chown(self.dir, self._user.pw_uid, self._user.pw_gid)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        user = self._user

        def demote() -> None:
            if user is not None:
                os.setgid(user.pw_gid)
                os.setuid(user.pw_uid)

        result = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            preexec_fn=demote,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.dir,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}): {result.stderr[-2000:]}\n{self.server_log()}")
        return result

    def server_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def init(self) -> PrivatePostgres:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        return self

    def start(self) -> None:
        options = " ".join(f"-c {key}={value}" for key, value in self.settings.items())
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """fast: sessions are ended and the server shuts down cleanly; immediate: as a crash (recovery at start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def url(self, dbname: str = "postgres") -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{dbname}"

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        return self._run("psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", dbname,
                         "-Atc", sql).stdout.strip()  # fmt: skip

    def destroy(self) -> None:
        if self.running():
            try:
                self.stop("immediate")
            except Exception:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


def start_private_postgres(settings: dict[str, str] | None = None) -> PrivatePostgres:
    """A started private server, or a skip (no binaries), or a failure (binaries there but the server won't start
    while WINNOW_REQUIRE_SERVICES=1)."""
    bin_dir = server_binaries()
    if bin_dir is None:
        pytest.skip("needs PostgreSQL's server binaries (initdb, pg_ctl) for a private server")
    server = None
    try:
        server = PrivatePostgres(bin_dir, settings).init()
        server.start()
    except Exception as exc:
        if server is not None:
            server.destroy()
        if os.environ.get("WINNOW_REQUIRE_SERVICES") == "1":
            pytest.fail(f"a private PostgreSQL server could not start: {exc}")
        pytest.skip(f"a private PostgreSQL server could not start: {exc}")
    return server


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)
