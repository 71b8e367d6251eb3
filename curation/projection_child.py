"""The map projection in a process of its own, bounded in time and memory, for the embedded default.

With a broker, a Celery worker computes the projection (its soft time limit stops it). Without one (the embedded
default: tasks run in-process), it would run inside the web process, with no limit: a wide embedding could hold a
request thread for minutes and the server's memory with it. There `run(embedding_id)` starts
`python -m django compute_projection <id>` instead, on the same database and files, waits at most
WINNOW_PROJECTION_TIME_LIMIT seconds (then kills it) and caps its address space at
WINNOW_PROJECTION_MEMORY_BYTES; a projection that does not finish within both is marked failed (a PCA layout
already saved stands, as when t-SNE fails on a worker).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from django.conf import settings
from django.core.files.storage import FileSystemStorage, storages
from django.db import connection

from curation.embeddings import Status
from curation.models import Embedding

log = logging.getLogger(__name__)

# The child's command line, before the embedding id (curation/management/commands/compute_projection.py).
COMMAND = [sys.executable, "-m", "django", "compute_projection"]


def _child_env() -> dict:
    """This process's environment, pointed at the database and files this process uses (they may differ from the
    environment's, e.g. under tests), with one BLAS thread: the child must not take every core from the web."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "winnow.settings")}
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
        env["DATABASE_URL"] = f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    files = storages["default"]
    if isinstance(files, FileSystemStorage):
        env["WINNOW_MEDIA_ROOT"] = str(files.location)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[name] = "1"
    return env


def run(embedding_id: str) -> str | None:
    """Compute the projection in a bounded child process; the final status (None: the embedding is gone)."""
    limit = settings.WINNOW_PROJECTION_TIME_LIMIT
    try:
        done = subprocess.run(
            [*COMMAND, embedding_id],
            env=_child_env(),
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=limit,
        )
        problem = None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["no output"])[-1]
        if done.returncode < 0:
            problem = f"killed by signal {-done.returncode} ({problem})"
    except subprocess.TimeoutExpired:  # subprocess.run has killed it
        problem = f"stopped after WINNOW_PROJECTION_TIME_LIMIT={limit} s"
    if problem is None:
        return done.stdout.strip().splitlines()[-1] if done.stdout.strip() else None
    log.warning("map projection of embedding %s failed in its process: %s", embedding_id, problem)
    # The child may have saved the PCA layout before it stopped (partial): that layout stands.
    Embedding.objects.filter(pk=embedding_id, projection_status=Status.PARTIAL).update(projection_status=Status.READY)
    Embedding.objects.filter(pk=embedding_id, projection_status=Status.PENDING).update(projection_status=Status.FAILED)
    status = Embedding.objects.filter(pk=embedding_id).values_list("projection_status", flat=True).first()
    return status
