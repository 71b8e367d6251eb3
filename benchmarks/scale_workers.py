"""Sampling runs at scale on a real Celery worker: run seconds and the worker's peak memory, with references.

Pieces for benchmarks/bench_scale.py (each returns a dict of numbers):

- `make_dataset(n, d)`: a `meta` dataset of n samples and a random float32 (n, d) embedding, set up
  directly in PostgreSQL (INSERT ... SELECT generate_series) in seconds; returns ids and an API token.
- `run_via_http(base_url, token, dataset_id, body, worker_pid)`: starts a run through the REST API,
  polls it to the end and samples the RSS of the worker's pool processes (/proc/<pid>/status) meanwhile.
- `kcenter_floor(X, k)` and `kmeans_reference(X, n_clusters)`: the same-run references (one
  matvec per greedy pick in plain numpy; scikit-learn's full KMeans for typicality's clustering).

    # a worker:  DATABASE_URL=... SECRET_KEY=x CELERY_BROKER_URL=redis://127.0.0.1:6379/6 \
    #            .venv/bin/celery -A winnow worker -c 1
    # a server:  same env, .venv/bin/python manage.py runserver 127.0.0.1:8765 --noreload
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/winnow_worker_bench SECRET_KEY=x \
        .venv/bin/python benchmarks/scale_workers.py --samples 1000000 --url http://127.0.0.1:8765 \
        --worker-pid <celery main pid> [--strategies coreset,random,typicality]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

STRATEGY_BODIES = {
    "random": {"strategy": "random"},
    "coreset": {"strategy": "coreset", "n_samples": 1000},
    "coreset-sharded": {"strategy": "coreset", "n_samples": 1000, "shards": 4},
    "diversity": {"strategy": "diversity", "min_distance": 9.0, "n_samples": 1000},
    "typicality": {"strategy": "typicality", "n_samples": 1000},
    "similarity": {"strategy": "similarity", "query_tag": "<query>"},
}


# ---- measuring a worker --------------------------------------------------------------------------


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class RssSampler:
    """Polls the RSS of a worker's pool processes (the children of the main process) in a thread,
    and counts their CPU seconds (on a shared machine, CPU time says more than wall time)."""

    def __init__(self, worker_pid: int, every_s: float = 0.05):
        self.worker_pid, self.every_s = worker_pid, every_s
        self.peak_kb, self.baseline_kb = 0, 0
        self._cpu0: dict[int, float] = {}
        self._cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    @property
    def cpu_s(self) -> float:
        return sum(self._cpu[p] - self._cpu0.get(p, 0.0) for p in self._cpu)

    def __enter__(self):
        pids = _children(self.worker_pid)
        self.baseline_kb = max((_rss_kb(p) for p in pids), default=0)
        self._cpu0 = {p: _cpu_s(p) for p in pids}
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        for pid in _children(self.worker_pid):
            self._cpu[pid] = _cpu_s(pid)

    def _poll(self) -> None:
        while not self._stop.is_set():
            for pid in _children(self.worker_pid):
                self.peak_kb = max(self.peak_kb, _rss_kb(pid))
                self._cpu[pid] = _cpu_s(pid)
            time.sleep(self.every_s)


def _api(base_url: str, token: str, method: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"{base_url.rstrip('/')}/api/v1/{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read() or b"{}")


def run_via_http(
    base_url: str, token: str, dataset_id: str, body: dict, worker_pid: int, timeout_s: float = 600
) -> dict:
    """Start one run, wait for it; seconds (request to finished, and the run's own started->finished)
    and the peak RSS of the worker's pool processes while it ran, in MiB."""
    with RssSampler(worker_pid) as rss:
        t0 = time.perf_counter()
        run = _api(base_url, token, "POST", f"datasets/{dataset_id}/sampling-runs", body)
        while run["status"] not in ("succeeded", "failed", "cancelled"):
            if time.perf_counter() - t0 > timeout_s:
                _api(base_url, token, "POST", f"datasets/{dataset_id}/sampling-runs/{run['id']}/cancel", {})
                raise TimeoutError(f"run {run['id']} took over {timeout_s}s")
            time.sleep(0.2)
            run = _api(base_url, token, "GET", f"datasets/{dataset_id}/sampling-runs/{run['id']}")
        wall = time.perf_counter() - t0
    from datetime import datetime

    started, finished = (datetime.fromisoformat(run[k].replace("Z", "+00:00")) for k in ("started_at", "finished_at"))
    return {
        "status": run["status"],
        "error": run["error"],
        "wall_s": wall,
        # finished_at is stamped when the score rows start to be written: run_s leaves their COPY out
        "run_s": (finished - started).total_seconds(),
        "worker_cpu_s": rss.cpu_s,
        "peak_rss_mib": rss.peak_kb / 1024,
        "idle_rss_mib": rss.baseline_kb / 1024,
        "scores": run["score_count"],
    }


# ---- same-run references -------------------------------------------------------------------------


def kcenter_floor(X: np.ndarray, k: int, seed: int = 0) -> dict:
    """The numpy floor of greedy k-center: one matvec and one minimum per pick, nothing else."""
    t0 = time.perf_counter()
    Xc = np.ascontiguousarray(X, dtype=np.float32)
    sq = np.einsum("ij,ij->i", Xc, Xc)
    j = int(np.random.default_rng(seed).integers(len(Xc)))
    d2 = np.full(len(Xc), np.inf, dtype=np.float32)
    for _ in range(k):
        c = Xc[j]
        np.minimum(d2, sq - 2.0 * (Xc @ c) + c @ c, out=d2)
        j = int(np.argmax(d2))
    return {"kcenter_floor_s": time.perf_counter() - t0}


def kmeans_reference(
    X: np.ndarray, n_clusters: int, seed: int = 0, max_iter: int = 100, init: str = "k-means++"
) -> dict:
    """scikit-learn's full KMeans (one init, Lloyd) over every row: what typicality's clustering replaces."""
    from sklearn.cluster import KMeans

    t0 = time.perf_counter()
    KMeans(n_clusters=n_clusters, n_init=1, random_state=seed, max_iter=max_iter, init=init).fit(X)
    return {"full_kmeans_s": time.perf_counter() - t0}


# ---- a dataset at scale --------------------------------------------------------------------------


def make_dataset(n: int, d: int = 64, seed: int = 0, query: int = 100) -> dict:
    """A `meta` dataset of n samples (ids md5-derived, 24 hex), an initial tag, a random float32 (n, d)
    embedding and a query tag of `query` samples. Needs Django set up on PostgreSQL."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from curation import bitmask, storage
    from curation.embeddings import matrix_key
    from curation.models import Embedding, Tag, TagOrigin
    from curation.services import create_dataset, delete_dataset
    from winnow.accounts.models import ApiToken

    t0 = time.perf_counter()
    user, _ = get_user_model().objects.get_or_create(username="bench-workers")
    for old in user.owned_datasets.all():
        delete_dataset(old)
    dataset = create_dataset(user, f"workers-{n}", "meta")
    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO curation_sample (id, dataset_id, idx, file_name, width, height, size_bytes, format, "
            "sha256, original_key, thumbnail_key, metadata, created_at) "
            "SELECT substr(md5(%s || i::text), 1, 24), %s, i, 'frames/' || lpad(i::text, 8, '0') || '.jpg', "
            "NULL, NULL, NULL, '', '', '', '', '{}'::jsonb, now() FROM generate_series(0, %s - 1) AS i",
            [dataset.pk, dataset.pk, n],
        )
        cur.execute("ANALYZE curation_sample")
    dataset.next_idx = n
    dataset.save(update_fields=["next_idx"])
    Tag.objects.create(
        dataset=dataset,
        name="initial-tag",
        bitmask=bitmask.from_indices(np.arange(n), size=n),
        count=n,
        origin=TagOrigin.UPLOAD,
    )
    rng = np.random.default_rng(seed)
    q = np.sort(rng.choice(n, query, replace=False))
    qtag = Tag.objects.create(
        dataset=dataset, name="query", bitmask=bitmask.from_indices(q, size=n), count=query, origin=TagOrigin.SELECTION
    )
    emb = Embedding(dataset=dataset, name="random", dimension=d, count=n, matrix_key="")
    emb.save()
    emb.matrix_key = matrix_key(dataset.pk, emb.pk)
    X = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 1 << 18):
        X[s : s + (1 << 18)] = rng.standard_normal((min(1 << 18, n - s), d), dtype=np.float32)
    storage.save_matrix(emb.matrix_key, X)
    del X
    emb.save(update_fields=["matrix_key"])
    _token, key = ApiToken.issue(user, "bench-workers")
    return {
        "dataset": dataset.pk,
        "embedding": emb.pk,
        "query_tag": qtag.pk,
        "token": key,
        "setup_s": time.perf_counter() - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--url", default="http://127.0.0.1:8765")
    parser.add_argument("--worker-pid", type=int, required=True)
    parser.add_argument("--strategies", default=",".join(STRATEGY_BODIES))
    parser.add_argument("--reuse", help="JSON from an earlier --setup-only (skip the set-up)")
    parser.add_argument("--setup-only", action="store_true")
    parser.add_argument("--references", action="store_true", help="also time the numpy floors")
    args = parser.parse_args()
    from _setup import django_environment, setup_database

    django_environment("winnow_worker_bench")
    setup_database()
    info = json.loads(args.reuse) if args.reuse else make_dataset(args.samples, args.dim)
    print(json.dumps(info), flush=True)
    if args.setup_only:
        return
    for name in args.strategies.split(","):
        body = {"name": f"bench {name}", "embedding": info["embedding"], **STRATEGY_BODIES[name]}
        if "query_tag" in body:
            body["query_tag"] = info["query_tag"]
        result = run_via_http(args.url, info["token"], info["dataset"], body, args.worker_pid)
        print(
            json.dumps(
                {"strategy": name, **{k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}}
            ),
            flush=True,
        )
    if args.references:
        from curation import storage
        from curation.models import Embedding

        X = storage.load_matrix(Embedding.objects.get(pk=info["embedding"]).matrix_key)
        print(json.dumps({**kcenter_floor(X, 1000), **kmeans_reference(X[:200_000], 1000, max_iter=20)}))


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "winnow.settings")
    main()
