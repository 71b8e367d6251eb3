"""The Celery app. Workers start with `celery -A winnow worker`.

BLAS and OpenMP threads are set on purpose: each of a worker's N pool processes gets
WINNOW_BLAS_THREADS threads (default: the machine's cores // N, at least 1), so N processes
doing matrix work at once do not start N x cores threads that fight over the cores.
"""

import ctypes
import ctypes.util
import logging
import os
import threading
import time
from collections.abc import Callable

from celery import Celery
from celery.signals import task_postrun, worker_init, worker_process_init
from django.db import close_old_connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "winnow.settings")

log = logging.getLogger(__name__)

app = Celery("winnow")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The thread-pool environment variables the BLAS and OpenMP libraries read when they load.
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")
_blas_threads = None  # decided in the worker's main process, applied in each pool process


def blas_threads_for(concurrency: int, configured: int = 0, cores: int | None = None) -> int:
    """Threads per pool process: the configured number, else the cores shared out over the pool."""
    if configured > 0:
        return configured
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, concurrency))


def apply_blas_threads(threads: int) -> None:
    """Limit the thread pools loaded now (threadpoolctl) and, through the environment, those loaded later."""
    from threadpoolctl import threadpool_limits

    for name in THREAD_ENV:
        os.environ[name] = str(threads)
    threadpool_limits(limits=threads)


@worker_init.connect
def _decide_blas_threads(sender=None, **_kwargs):
    global _blas_threads
    from django.conf import settings

    concurrency = getattr(sender, "concurrency", None) or 1
    _blas_threads = blas_threads_for(int(concurrency), settings.WINNOW_BLAS_THREADS)
    apply_blas_threads(_blas_threads)  # the main process too (and a solo or threads pool runs in it)


@worker_process_init.connect
def _apply_blas_threads(**_kwargs):
    if _blas_threads is not None:
        apply_blas_threads(_blas_threads)


@app.task(name="winnow.ping")
def ping(marker: str) -> str:
    """Round-trip check used by the health endpoint's broker probe and the worker test."""
    from winnow.accounts.models import WorkerHeartbeat

    WorkerHeartbeat.objects.update_or_create(marker=marker, defaults={})
    return marker


@app.task(name="winnow.thread_pools")
def thread_pools() -> list[dict]:
    """The BLAS / OpenMP thread pools of the pool process that runs this (threadpoolctl), for operators and tests."""
    import numpy  # noqa: F401  (its BLAS is the one that matters)
    from threadpoolctl import threadpool_info

    return [
        {"user_api": p["user_api"], "internal_api": p["internal_api"], "num_threads": p["num_threads"]}
        for p in threadpool_info()
    ]


def _libc_malloc_trim():
    """glibc's malloc_trim, or None on another C library."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


_malloc_trim = _libc_malloc_trim()


@task_postrun.connect
def _give_memory_back(**_kwargs):
    """A pool process runs one large task after another (a 10M-row upload, then a coreset). glibc keeps the heap
    a finished task freed and raises its mmap threshold after large frees, so without this each process would stay
    at the size of the largest task it ever ran, and the next task's peak would stand on top of it."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def task(name: str):
    """The registered task called `name`. Services enqueue through it, so a service module never imports the
    tasks module that wraps it (tasks import services, never the reverse)."""
    if name not in app.tasks:
        # The tasks modules load when a worker starts; elsewhere (web, shell) on first use, as the worker would.
        app.loader.import_default_modules()
    return app.tasks[name]


def sweep_while_up(name: str, interval: float, sweep: Callable[[], object], *, what: str) -> threading.Thread:
    """Call `sweep` every `interval` seconds in a daemon thread called `name`, for as long as the worker lives.

    A failing sweep (the broker or database is away) is logged as "`what` failed" and tried again next time;
    the thread's database connection is closed after each sweep, so a dropped one is not reused.
    """

    def forever() -> None:
        while True:
            time.sleep(interval)
            try:
                sweep()
            except Exception:
                log.warning("%s failed", what, exc_info=True)
            finally:
                close_old_connections()

    thread = threading.Thread(target=forever, name=name, daemon=True)
    thread.start()
    return thread
