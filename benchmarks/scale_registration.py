"""Registration throughput: N synthetic `meta` samples through HTTP, and a same-run COPY reference.

    from scale_registration import register_through_http, copy_reference
    numbers = register_through_http("http://127.0.0.1:8123", token, dataset_id, 1_000_000)
    reference = copy_reference("postgres://postgres@127.0.0.1:5432/winnow_bench", 1_000_000)

`register_through_http` sends JSON batches with the Python client (`Client.register_samples`: batches
of 500, 4 in parallel) and returns the rate overall, over the first 10% and over the last 10% of
the samples. `copy_reference` COPYs the same rows into scratch tables: one bare, one shaped like
the sample table (same indexes), which is the floor a registration path can approach.

Run directly to do both against a server that is already up:
    python benchmarks/scale_registration.py --url http://127.0.0.1:8123 --token wnw_... -n 1000000 \
        --database-url postgres://postgres@127.0.0.1:5432/winnow_reg_bench
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import secrets
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SCENARIOS = ("sunny", "cloudy", "rain", "fog", "snow", "night-rain")


def synthetic_entries(n: int, start: int = 0, seed: int = 0) -> Iterator[dict]:
    """N registration entries with realistic metadata, generated one at a time (nothing held)."""
    rng = random.Random(seed)
    for i in range(start, start + n):
        yield {
            "file_name": f"cam{i % 50:02d}/{i // 50:07d}.jpg",
            "width": 1920,
            "height": 1080,
            "size_bytes": 200_000 + rng.randrange(400_000),
            "metadata": {
                "weather": {"scenario": SCENARIOS[rng.randrange(6)], "temperature": round(rng.uniform(-15, 38), 2)},
                "camera": {"id": i % 50},
                "night": rng.random() < 0.3,
            },
        }


class _Clock:
    """Records when each tenth of the samples was done (batches finish out of order: counts only)."""

    def __init__(self, n: int, cpu=None):
        self.n = n
        self.done = 0
        self.lock = threading.Lock()
        self.cpu = cpu  # a callable giving the server's CPU seconds so far, or None
        self.cpu_marks: dict[int, float] = {0: cpu()} if cpu else {}
        self.start = time.perf_counter()
        self.marks: dict[int, float] = {}  # tenth -> time its last sample was done

    def batch_done(self, size: int) -> None:
        with self.lock:
            self.done += size
            now = time.perf_counter()
            for tenth in range(1, 11):
                if tenth not in self.marks and self.done >= self.n * tenth / 10:
                    self.marks[tenth] = now
                    if self.cpu and tenth in (1, 9, 10):
                        self.cpu_marks[tenth] = self.cpu()

    def rates(self) -> dict:
        end = self.marks.get(10, time.perf_counter())
        tenth = self.n / 10
        rate = round(self.n / (end - self.start))

        def tenth_rate(span: float) -> int:
            # A tenth shorter than one batch ends with the batch before it: its own rate is not resolved.
            return round(tenth / span) if span > 0 else rate

        out = {
            "samples": self.n,
            "seconds": round(end - self.start, 2),
            "rate": rate,
            "rate_first_10pct": tenth_rate(self.marks[1] - self.start),
            "rate_last_10pct": tenth_rate(end - self.marks[9]),
        }
        if len(self.cpu_marks) == 4:  # server CPU microseconds a sample: overall, first 10%, last 10%
            marks = self.cpu_marks
            out["cpu_us"] = round((marks[10] - marks[0]) / self.n * 1e6, 1)
            out["cpu_us_first_10pct"] = round((marks[1] - marks[0]) / tenth * 1e6, 1)
            out["cpu_us_last_10pct"] = round((marks[10] - marks[9]) / tenth * 1e6, 1)
        return out


def register_through_http(
    base_url: str,
    token: str,
    dataset_id: str,
    n: int,
    *,
    batch_size: int = 500,
    workers: int = 4,
    start: int = 0,
    progress: bool = False,
    server_cpu=None,
) -> dict:
    """Register N synthetic samples with the client; rates overall, in the first 10% and in the last 10% (and the
    server's CPU time a sample over the same spans when `server_cpu`, a callable giving CPU seconds, is given)."""
    from winnow.client import Client

    clock = _Clock(n, server_cpu)
    with Client(token=token, server=base_url, dataset_id=dataset_id) as client:
        summary = client.register_samples(
            synthetic_entries(n, start),
            batch_size=batch_size,
            workers=workers,
            progress=progress,
            on_batch=lambda body, size: clock.batch_done(size),
        )
    return {
        **clock.rates(),
        "created": summary["created"],
        "skipped": summary["skipped"],
        "batch_size": batch_size,
        "workers": workers,
    }


def register_plain_posts(
    base_url: str, token: str, dataset_id: str, n: int, *, batch_size: int = 500, workers: int = 4, start: int = 0
) -> dict:
    """The same load with plain `requests` posts (no client helper): for servers older than register_samples."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    clock = _Clock(n)
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    url = f"{base_url.rstrip('/')}/api/v1/datasets/{dataset_id}/samples"
    entries = synthetic_entries(n, start)
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                batch = [entry for _, entry in zip(range(batch_size), entries)]
            if not batch:
                return
            response = session.post(url, json={"samples": batch}, timeout=600)
            response.raise_for_status()
            clock.batch_done(len(batch))

    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(worker) for _ in range(workers)]:
            future.result()
    return {**clock.rates(), "batch_size": batch_size, "workers": workers}


def _copy_rows(n: int, dataset_id: str) -> io.StringIO:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for i, entry in enumerate(synthetic_entries(n)):
        writer.writerow(
            [
                secrets.token_hex(12),
                dataset_id,
                i,
                entry["file_name"],
                entry["width"],
                entry["height"],
                entry["size_bytes"],
                "",
                "",
                "",
                "",
                json.dumps(entry["metadata"], separators=(",", ":")),
            ]
        )
    buffer.seek(0)
    return buffer


def copy_reference(database_url: str, n: int) -> dict:
    """Seconds and rows/s to COPY the same N rows into a bare scratch table and into one shaped like
    curation_sample (its indexes, GIN included). Row formatting is not timed; the tables are dropped."""
    import psycopg2

    columns = (
        "id, dataset_id, idx, file_name, width, height, size_bytes, format, sha256, original_key, "
        "thumbnail_key, metadata"
    )
    out = {"samples": n}
    connection = psycopg2.connect(database_url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM curation_dataset LIMIT 1")
            row = cursor.fetchone()
            dataset_id = row[0] if row else "0" * 24
        connection.commit()
        buffer = _copy_rows(n, dataset_id)
        for label, ddl in (
            ("copy_bare", "CREATE TABLE bench_reg_scratch AS SELECT * FROM curation_sample WITH NO DATA"),
            ("copy_indexed", "CREATE TABLE bench_reg_scratch (LIKE curation_sample INCLUDING ALL)"),
        ):
            with connection.cursor() as cursor:
                cursor.execute("DROP TABLE IF EXISTS bench_reg_scratch")
                cursor.execute(ddl)
                cursor.execute("ALTER TABLE bench_reg_scratch ALTER COLUMN created_at SET DEFAULT now()")
            connection.commit()
            buffer.seek(0)
            began = time.perf_counter()
            with connection.cursor() as cursor:
                cursor.copy_expert(
                    f"COPY bench_reg_scratch ({columns}) FROM STDIN WITH (FORMAT csv, FORCE_NOT_NULL (format, sha256, original_key, thumbnail_key))",
                    buffer,
                )
            connection.commit()
            seconds = time.perf_counter() - began
            out[f"{label}_seconds"] = round(seconds, 2)
            out[f"{label}_rate"] = round(n / seconds)
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS bench_reg_scratch")
        connection.commit()
    finally:
        connection.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--dataset", help="a meta dataset's id (default: create one)")
    parser.add_argument("-n", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--plain", action="store_true", help="plain requests posts instead of the client")
    parser.add_argument("--database-url", help="also run the COPY reference against this database")
    args = parser.parse_args()
    import requests

    dataset_id = args.dataset
    if not dataset_id:
        response = requests.post(
            f"{args.url}/api/v1/datasets",
            json={"name": f"reg-bench-{args.n}", "upload_mode": "meta"},
            headers={"Authorization": f"Token {args.token}"},
        )
        response.raise_for_status()
        dataset_id = response.json()["id"]
    run = register_plain_posts if args.plain else register_through_http
    result = {
        "dataset_id": dataset_id,
        **run(args.url, args.token, dataset_id, args.n, batch_size=args.batch_size, workers=args.workers),
    }
    print(json.dumps(result), flush=True)
    if args.database_url:
        print(json.dumps(copy_reference(args.database_url, args.n)), flush=True)


if __name__ == "__main__":
    main()
