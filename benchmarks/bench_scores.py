"""Writing a sampling run's 1,000,000 importance scores to PostgreSQL.

Measured in one run, on the same 1,000,000 (sample id, score) pairs of one dataset:
- ours: `sampling.services.write_scores`, the worker's own code path: one transaction that marks
  the run succeeded, deletes its old scores and streams the new rows with `COPY ... (FORMAT binary)`
  (the stream built by numpy in one pass);
- ours, rerun: the same call again on the same run, so it also deletes the previous 1,000,000 rows;
- reference: a plain `ImportanceScore.objects.bulk_create(rows, batch_size=10_000)` in one transaction.
Also reported: reading the idx -> sample id map the worker needs (one `values_list` query).

Uses a database of its own (created if missing, tables by `migrate`), never the app's:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/winnow_bench_scores .venv/bin/python benchmarks/bench_scores.py [--n 1000000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _setup import django_environment, setup_database

django_environment("winnow_bench_scores")

import numpy as np  # noqa: E402
from _report import write_section  # noqa: E402

DATASET_NAME = "bench-scores"


def bench_dataset(n: int):
    """A dataset with n samples (made once, kept in the benchmark database for later runs)."""
    from django.contrib.auth import get_user_model

    from curation.models import Dataset, Sample
    from curation.services import create_dataset

    user, _ = get_user_model().objects.get_or_create(username="bench")
    dataset = Dataset.objects.filter(name=f"{DATASET_NAME}-{n}").first()
    if dataset is not None and Sample.objects.filter(dataset=dataset).count() == n:
        return dataset
    if dataset is not None:
        dataset.delete()
    dataset = create_dataset(user, f"{DATASET_NAME}-{n}", "meta")
    step = 20_000
    for start in range(0, n, step):
        Sample.objects.bulk_create(
            Sample(dataset=dataset, idx=i, file_name=f"img/{i:07d}.jpg") for i in range(start, min(n, start + step))
        )
    dataset.next_idx = n
    dataset.save(update_fields=["next_idx"])
    return dataset


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="number of scores (default 1,000,000)")
    parser.add_argument("--no-report", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()

    load = os.getloadavg()[0]
    setup_database()
    from django.db import connection, transaction

    from sampling import services
    from sampling.models import ImportanceScore, SamplingRun

    n = args.n
    print(f"preparing a dataset of {n:,} samples ...", flush=True)
    dataset = bench_dataset(n)
    SamplingRun.objects.filter(dataset=dataset).delete()

    ids_seconds = timed(lambda: services._sample_idx(dataset.id))
    pairs_start = time.perf_counter()
    pairs = list(dataset.samples.order_by("idx").values_list("idx", "id"))
    map_seconds = time.perf_counter() - pairs_start
    ids = np.array([p[1] for p in pairs], dtype=object)
    scores = np.random.default_rng(0).random(n)
    order = np.argsort(-scores, kind="stable")

    def new_run(name: str) -> SamplingRun:
        return SamplingRun.objects.create(dataset=dataset, name=name, strategy="random")

    run = new_run("copy")
    copy_seconds = timed(lambda: services.write_scores(run.id, None, ids, scores, order))
    assert ImportanceScore.objects.filter(run=run).count() == n
    rerun_seconds = timed(lambda: services.write_scores(run.id, None, ids, scores, order))
    assert ImportanceScore.objects.filter(run=run).count() == n
    print(f"COPY: {copy_seconds:.2f} s, rerun (delete + COPY): {rerun_seconds:.2f} s", flush=True)

    reference = new_run("bulk_create")

    def bulk_create():
        ranked_ids, ranked_scores = ids[order].tolist(), scores[order].tolist()
        with transaction.atomic():
            ImportanceScore.objects.bulk_create(
                (
                    ImportanceScore(run_id=reference.id, sample_id=sid, rank=rank, score=score)
                    for rank, (sid, score) in enumerate(zip(ranked_ids, ranked_scores), 1)
                ),
                batch_size=10_000,
            )

    bulk_seconds = timed(bulk_create)
    assert ImportanceScore.objects.filter(run=reference).count() == n
    print(f"bulk_create: {bulk_seconds:.2f} s", flush=True)
    SamplingRun.objects.filter(dataset=dataset).delete()

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        server = cursor.fetchone()[0]
    goal = "met" if copy_seconds < 10 and rerun_seconds < 10 else "NOT met"
    body = f"""## Writing {n:,} importance scores to PostgreSQL (`benchmarks/bench_scores.py`)

One run's scores for a dataset of {n:,} samples, written the way the worker writes them, against a plain
`bulk_create` of the same rows in the same run. Goal: under 10 s for 1,000,000 scores ({goal}).
Load average when it started: {load:.1f} (the machine is shared; times are wall-clock).

| what | seconds | vs bulk_create |
|---|---:|---:|
| ours: `write_scores` (one transaction: status + delete + binary `COPY`) | {copy_seconds:.2f} | {bulk_seconds / copy_seconds:.1f}x faster |
| ours, rerun (also deletes the previous {n:,} rows) | {rerun_seconds:.2f} | {bulk_seconds / rerun_seconds:.1f}x faster |
| reference: `bulk_create(batch_size=10_000)` in one transaction | {bulk_seconds:.2f} | 1.0x |

Reading the worker's idx -> sample id map (one `values_list("idx", "id")` query): {map_seconds:.2f} s
(idx alone: {ids_seconds:.2f} s). PostgreSQL {server}. The scores table has one index, unique (run, rank),
filled in rank order; the foreign keys are not checked row by row (see `ImportanceScore` in
sampling/models.py: with a per-row check on the run FK the same write took about twice as long).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/winnow_bench_scores .venv/bin/python benchmarks/bench_scores.py
"""
    print(body)
    if not args.no_report:
        write_section("bench_scores", body)


if __name__ == "__main__":
    main()
