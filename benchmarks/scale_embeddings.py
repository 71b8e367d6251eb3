"""Embedding upload at scale: a Lightly CSV (or a .npy plus file names) through the client against gunicorn.

Functions for benchmarks/bench_scale.py; each returns a dict of numbers.

    register_meta_samples(dsn, dataset_id, n)      n samples `s/<idx>.jpg` by one INSERT ... SELECT generate_series
    write_csv(path, n, d) / write_npy(dir, n, d)   the upload files (file order = a shuffled idx order)
    upload(base_url, token, dataset_id, source, ..., web_pids=, worker_pids=)
                                                   seconds and peak RSS (VmRSS polled every 50 ms) of the
                                                   gunicorn workers and the Celery worker during the upload
    numpy_reference(path, d)                       the same-run floor: numpy parsing the same CSV (np.loadtxt)

Run it (gunicorn and a worker must be up with the same DATABASE_URL):
    python benchmarks/scale_embeddings.py --base-url http://127.0.0.1:8124 --token wnw_... \
        --dsn postgres://postgres@127.0.0.1:5432/winnow_emb_bench --n 1000000 --d 64 --web-pids 1,2 --worker-pids 3
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np

CSV_BLOCK_ROWS = 20_000


def register_meta_samples(dsn: str, dataset_id: str, n: int) -> float:
    """Insert n metadata-only samples (idx 0..n-1, file name `s/<idx>.jpg`) in one statement; return seconds."""
    import psycopg2

    start = time.perf_counter()
    with psycopg2.connect(dsn) as conn, conn.cursor() as cursor:
        cursor.execute(
            "INSERT INTO curation_sample (id, dataset_id, idx, file_name, format, sha256, original_key, "
            "thumbnail_key, metadata, created_at) "
            "SELECT substr(md5(%s || g::text), 1, 24), %s, g, 's/' || lpad(g::text, 8, '0') || '.jpg', '', '', '', "
            "'', '{}'::jsonb, now() FROM generate_series(0, %s - 1) AS g",
            [dataset_id, dataset_id, n],
        )
        cursor.execute("UPDATE curation_dataset SET next_idx = %s WHERE id = %s", [n, dataset_id])
    return time.perf_counter() - start


def file_names(order: np.ndarray) -> list[str]:
    return [f"s/{i:08d}.jpg" for i in order.tolist()]


def shuffled(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(n)


def matrix_rows(idx: np.ndarray, d: int) -> np.ndarray:
    """The vector of each idx (deterministic, so the stored matrix can be checked)."""
    rng = np.random.default_rng(12345)
    base = rng.normal(size=(1, d)).astype(np.float32)
    return (np.sin(idx[:, None].astype(np.float32) * 0.001 + np.arange(d, dtype=np.float32)) + base).astype(np.float32)


def write_csv(path: str | Path, n: int, d: int, seed: int = 0, names=file_names) -> int:
    """Lightly's CSV, rows in a shuffled idx order (`names`: idx array -> file names); returns its size in bytes."""
    order = shuffled(n, seed)
    row_format = "%s," + ",".join(["%.8g"] * d) + ",%d\n"
    with open(path, "w", newline="") as handle:
        handle.write("filenames," + ",".join(f"embedding_{i}" for i in range(d)) + ",labels\n")
        for start in range(0, n, CSV_BLOCK_ROWS):
            idx = order[start : start + CSV_BLOCK_ROWS]
            X = matrix_rows(idx, d)
            handle.write(
                "".join(
                    row_format % (name, *row, label)
                    for name, row, label in zip(names(idx), X.tolist(), (idx % 10).tolist())
                )
            )
    return Path(path).stat().st_size


def write_npy(folder: str | Path, n: int, d: int, seed: int = 0, names=file_names) -> tuple[Path, Path]:
    """(matrix.npy, names.txt) in a shuffled idx order."""
    folder = Path(folder)
    order = shuffled(n, seed)
    matrix = np.lib.format.open_memmap(folder / "matrix.npy", mode="w+", dtype=np.float32, shape=(n, d))
    for start in range(0, n, 100_000):
        matrix[start : start + 100_000] = matrix_rows(order[start : start + 100_000], d)
    matrix.flush()
    del matrix
    with open(folder / "names.txt", "w") as handle:
        for start in range(0, n, 100_000):
            handle.write("\n".join(names(order[start : start + 100_000])) + "\n")
    return folder / "matrix.npy", folder / "names.txt"


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakRss:
    """Poll VmRSS of some processes in a thread; `peak` maps pid -> the highest value seen."""

    def __init__(self, pids, interval: float = 0.05):
        self.pids, self.interval = list(pids), interval
        self.peak = {pid: rss_bytes(pid) for pid in self.pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], rss_bytes(pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def max_mb(self) -> float:
        return round(max(self.peak.values(), default=0) / 2**20, 1)


def children(pid: int) -> list[int]:
    """The child processes of a gunicorn master or a Celery main process."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(p) for p in handle.read().split()]
    except OSError:
        return []


def upload(
    base_url: str,
    token: str,
    dataset_id: str,
    source,
    name: str = "bench",
    *,
    file_names_path=None,
    web_pids=(),
    worker_pids=(),
    chunked: bool | None = None,
) -> dict:
    """Upload through the client (chunked above 32 MiB); seconds, peak RSS of web and worker processes."""
    from winnow.client import Client

    web_before = {pid: rss_bytes(pid) for pid in web_pids}
    with PeakRss(web_pids) as web, PeakRss(worker_pids) as worker, Client(token=token, server=base_url) as client:
        start = time.perf_counter()
        embedding = client.upload_embeddings(
            source, name, dataset_id, file_names=file_names_path, chunked=chunked, progress=False, timeout=3600
        )
        seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 2),
        "embedding": embedding["id"],
        "dimension": embedding["dimension"],
        "web_peak_rss_mb": web.max_mb(),
        "worker_peak_rss_mb": worker.max_mb(),
        "web_rss_before_mb": round(max(web_before.values(), default=0) / 2**20, 1),
        "web_rss_after_mb": round(max((rss_bytes(p) for p in web_pids), default=0) / 2**20, 1),
    }


def wait_projection(
    base_url: str, token: str, dataset_id: str, embedding_id: str, worker_pids=(), timeout: float = 600
) -> dict:
    """Seconds until the PCA layout is ready, and the worker's peak RSS meanwhile."""
    from winnow.client import Client

    with PeakRss(worker_pids) as worker, Client(token=token, server=base_url) as client:
        start = time.perf_counter()
        while time.perf_counter() - start < timeout:
            state = client._json("GET", f"datasets/{dataset_id}/embeddings/{embedding_id}")["projection_status"]
            if state in ("partial", "ready", "failed"):
                break
            time.sleep(0.25)
        seconds = time.perf_counter() - start
    return {
        "projection_seconds": round(seconds, 2),
        "projection_status": state,
        "projection_worker_peak_rss_mb": worker.max_mb(),
    }


def numpy_reference(path: str | Path, d: int) -> dict:
    """numpy parsing the same CSV into float32 (no names, no storage): the floor for the parse."""
    start = time.perf_counter()
    X = np.loadtxt(path, delimiter=",", skiprows=1, usecols=range(1, d + 1), dtype=np.float32)
    return {"numpy_loadtxt_seconds": round(time.perf_counter() - start, 2), "rows": int(X.shape[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--web-pids", default="", help="gunicorn master pid (its workers are polled)")
    parser.add_argument("--worker-pids", default="", help="celery main pid (it and its children are polled)")
    parser.add_argument("--folder", default="/tmp/winnow-bench-embeddings")
    parser.add_argument("--kinds", default="csv,npy")
    parser.add_argument("--reference", action="store_true")
    args = parser.parse_args()
    from winnow.client import Client

    web = [c for p in args.web_pids.split(",") if p for c in children(int(p))]
    workers = [q for p in args.worker_pids.split(",") if p for q in (int(p), *children(int(p)))]
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    with Client(token=args.token, server=args.base_url) as client:
        dataset_id = client.create_dataset(f"emb-bench-{args.n}", upload_mode="meta")
    result = {
        "n": args.n,
        "d": args.d,
        "register_seconds": round(register_meta_samples(args.dsn, dataset_id, args.n), 2),
    }
    csv_path = folder / f"emb_{args.n}_{args.d}.csv"
    if "csv" in args.kinds:
        if not csv_path.exists():
            write_csv(csv_path, args.n, args.d)
        result["csv_mib"] = round(csv_path.stat().st_size / 2**20, 1)
        result["csv"] = upload(
            args.base_url, args.token, dataset_id, csv_path, "csv", web_pids=web, worker_pids=workers
        )
        result["csv"].update(
            wait_projection(args.base_url, args.token, dataset_id, result["csv"]["embedding"], workers)
        )
    if "npy" in args.kinds:
        matrix, names = write_npy(folder, args.n, args.d)
        result["npy"] = upload(
            args.base_url,
            args.token,
            dataset_id,
            matrix,
            "npy",
            file_names_path=names,
            web_pids=web,
            worker_pids=workers,
        )
    result["matrix_mib"] = round(args.n * args.d * 4 / 2**20, 1)
    if args.reference and csv_path.exists():
        result["reference"] = numpy_reference(csv_path, args.d)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
