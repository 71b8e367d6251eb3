"""Helpers for benchmarks/bench_scale.py: processes started in their own group and ended with it, peak RSS
sampled from /proc, timing, a small HTTP session (its database: _setup.py). No Django: the benchmark talks
HTTP to gunicorn and a Celery worker like any client."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

import requests

from winnow import waiting

ROOT = Path(__file__).resolve().parent.parent
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- processes ---------------------------------------------------------------------------------------------------


def start(command: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start a process in a new session (its own process group), output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            list(command), cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen | None, grace: float = 10.0) -> None:
    """End a process started by `start` and everything in its group: TERM, then KILL after `grace` seconds."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
    except ProcessLookupError:
        pass


def descendants(pid: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """`pid` and every process below it (from /proc/*/stat parent links, or a map from _children_map)."""
    children = _children_map() if children is None else children
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(parent, []).append(int(entry))
    return children


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):
        return 0


class PeakRss:
    """Samples the resident memory of process trees every `interval` seconds in a thread.

    `peaks()` gives, per named tree, the largest single process and the largest total seen since the last
    `reset()`: a web request or a task runs in one process, so the largest single process is its cost.
    """

    def __init__(self, roots: dict[str, int], interval: float = 0.1):
        self.roots, self.interval = roots, interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.reset()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        with self._lock:
            self._peak = dict.fromkeys(self.roots, (0, 0))

    def _run(self) -> None:
        # The process trees are read from /proc once a second, the sizes every tick: a full /proc walk per tick
        # and root cost the measured processes a noticeable share of a 2-core machine.
        tick, trees = 0, {}
        while not self._stop.wait(self.interval):
            if tick % 10 == 0:
                children = _children_map()
                trees = {name: descendants(root, children) for name, root in self.roots.items()}
            tick += 1
            for name, pids in trees.items():
                sizes = [rss_bytes(pid) for pid in pids]
                with self._lock:
                    single, total = self._peak[name]
                    self._peak[name] = (max(single, max(sizes, default=0)), max(total, sum(sizes)))

    def peaks(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {name: {"process": single, "total": total} for name, (single, total) in self._peak.items()}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# --- timing and HTTP ---------------------------------------------------------------------------------------------


@contextmanager
def timed():
    """`with timed() as t: ...` then t() is the elapsed seconds (read inside or after the block)."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def best_of(fn: Callable[[], object], repeat: int = 3) -> tuple[float, object]:
    """The fastest of `repeat` calls (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def session(token: str, pool: int = 8) -> requests.Session:
    http = requests.Session()
    http.headers["Authorization"] = f"Token {token}"
    adapter = requests.adapters.HTTPAdapter(pool_connections=pool, pool_maxsize=pool)
    http.mount("http://", adapter)
    return http


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    """Until `url` answers at all (any status: the health check says 503 while the broker is still down)."""
    try:
        waiting.wait_for_http(url, process, timeout=timeout, statuses=range(100, 600))
    except waiting.NotAnswering as exc:
        if exc.exited:
            raise RuntimeError(f"{process.args[0]} exited with {process.returncode} before answering {url}") from None
        raise RuntimeError(f"{url} did not answer within {timeout} s") from None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of one process so far (0 once it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds used so far by the process trees under `roots` and by the processes whose command line holds
    `marker` (PostgreSQL backends show their database's name there); a process that ended keeps its last count.
    CPU time, unlike wall time, hardly moves when other work shares the machine."""

    def __init__(self, roots: Sequence[int], marker: str | None = None):
        self.roots, self.marker = list(roots), marker
        self._seen: dict[int, float] = {}

    def _pids(self) -> list[int]:
        children = _children_map()
        pids = [pid for root in self.roots for pid in descendants(root, children)]
        if self.marker:
            for entry in os.listdir("/proc"):
                if entry.isdigit():
                    try:
                        if self.marker in Path(f"/proc/{entry}/cmdline").read_text():
                            pids.append(int(entry))
                    except OSError:
                        continue
        return pids

    def __call__(self) -> float:
        for pid in self._pids():
            self._seen[pid] = max(self._seen.get(pid, 0.0), cpu_seconds(pid))
        return sum(self._seen.values())


def wait_until_idle(roots: Sequence[int], timeout: float = 90, busy: float = 0.1) -> float:
    """Wait until the process trees under `roots` use less than `busy` of a core over a second (a worker that is
    still importing would otherwise take CPU from the first measurement); returns the seconds waited."""
    began = deadline = time.monotonic()
    deadline += timeout
    while time.monotonic() < deadline:
        children = _children_map()
        pids = [pid for root in roots for pid in descendants(root, children)]
        before = sum(cpu_seconds(pid) for pid in pids)
        time.sleep(1.0)
        if sum(cpu_seconds(pid) for pid in pids) - before < busy:
            break
    return time.monotonic() - began


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:,.0f} MiB"
