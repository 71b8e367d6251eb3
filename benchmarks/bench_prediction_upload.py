"""A whole prediction task stored end to end: N samples x 10 classes, JSON lines, on PostgreSQL.

Times what the worker does with an upload (curation.predictions.process: parse and validate the stream, file
names to idx, scores, the columns to storage, one transaction replacing every sample's scores), against writing
the same float32 probabilities with numpy in the same run. Its own database (winnow_bench_predictions).

    .venv/bin/python benchmarks/bench_prediction_upload.py --n 1000000
"""

from __future__ import annotations

from _setup import django_environment, setup_database

django_environment("winnow_bench_predictions")

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


class Phases:
    """Seconds spent in each step of an upload, by wrapping the functions that do them (nested steps excluded)."""

    def __init__(self):
        import curation.columns
        import curation.filters
        from curation import predictions, storage
        from winnow.client import predictions as fmt

        self.seconds: dict[str, float] = {}
        self._stack: list[list[float]] = []
        wrap = [
            (predictions, "_parse", "parse and validate the JSON lines"),
            (predictions, "_lookup", "file names to idx"),
            (fmt, "check_boxes", "checks"),
            (fmt, "scores", "scores"),
            (fmt, "predicted_class", "scores"),
            (storage, "save_matrix", "columns to storage"),
            (predictions, "_write_scores", "metadata: one UPDATE of every sample's scores"),
            (predictions, "_configure_fields", "configure fields"),
            (curation.columns, "build", "metadata column store rebuild (a worker's job, eager here)"),
            (curation.filters, "build_sort_indexes", "sort indexes (a worker's job, eager here)"),
        ]
        for module, name, label in wrap:
            setattr(module, name, self._timed(getattr(module, name), label))

    def _timed(self, fn, label):
        def wrapper(*args, **kwargs):
            self._stack.append([time.perf_counter(), 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                start, nested = self._stack.pop()
                spent = time.perf_counter() - start
                self.seconds[label] = self.seconds.get(label, 0.0) + spent - nested
                if self._stack:
                    self._stack[-1][1] += spent

        return wrapper

    def take(self) -> dict[str, float]:
        out, self.seconds = self.seconds, {}
        return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--no-write", action="store_true", help="print only, leave BENCHMARKS.md alone")
    args = parser.parse_args()
    setup_database()
    from _report import write_section
    from django.contrib.auth import get_user_model

    from curation import predictions, storage
    from curation.models import Dataset, Sample
    from curation.services import create_dataset, delete_dataset

    n = args.n
    user, _ = get_user_model().objects.get_or_create(username="bench-predictions")
    for old in Dataset.objects.filter(owner=user):
        delete_dataset(old)
    ds = create_dataset(user, "bench predictions", "meta")
    t0 = time.perf_counter()
    for start in range(0, n, 20_000):
        Sample.objects.bulk_create(
            [Sample(dataset=ds, idx=i, file_name=f"img_{i:07d}.jpg") for i in range(start, min(n, start + 20_000))]
        )
    Dataset.objects.filter(pk=ds.pk).update(next_idx=n)
    print(f"{n} samples in {time.perf_counter() - t0:.0f} s")

    rng = np.random.default_rng(0)
    cats = [{"id": i, "name": f"c{i}"} for i in range(10)]
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / "first.jsonl", Path(tmp) / "second.jsonl"]
        for path in paths:  # the second upload's predictions differ: every sample's scores change
            with path.open("w") as out:
                out.write(json.dumps({"schema": {"task_type": "classification", "categories": cats}}) + "\n")
                for start in range(0, n, 100_000):
                    p = rng.dirichlet(np.ones(10), size=min(100_000, n - start)).round(5)
                    p[:, 0] = np.clip(1 - p[:, 1:].sum(axis=1), 0, 1)
                    for i, row in enumerate(p.tolist()):
                        t = int(np.argmax(row))
                        record = {"file_name": f"img_{start + i:07d}.jpg", "predictions": [
                            {"category_id": t, "score": row[t], "probabilities": row}]}  # fmt: skip
                        out.write(json.dumps(record, separators=(",", ":")) + "\n")
        size = paths[0].stat().st_size
        timings, phases = [], []
        timer = Phases()
        for path in paths:  # the second upload replaces the first
            timer.take()
            t0 = time.perf_counter()
            with path.open("rb") as handle:
                upload = predictions.receive(ds, "bench", handle, kind="jsonl", creator=user)
            status = predictions.process(upload.id)
            timings.append(time.perf_counter() - t0)
            phases.append(timer.take())
            assert status == "succeeded", upload.id
        t0 = time.perf_counter()
        np.save(Path(tmp) / "p.npy", rng.dirichlet(np.ones(10), size=n).astype(np.float32))
        numpy_s = time.perf_counter() - t0
    stored = Sample.objects.filter(dataset=ds, metadata__predictions__bench__isnull=False).count()
    assert stored == n, stored
    storage.delete_prefix(ds.storage_prefix)
    body = (
        "## Prediction upload end to end (bench_prediction_upload.py)\n\n"
        f"{n:,} samples x 10 classes, {size / 1e6:,.0f} MB of JSON lines, PostgreSQL: stored by "
        "`curation.predictions.process` (stream parse and checks, file names to idx by COPY and a join, scores, "
        "columns to storage, one transaction rewriting every sample's scores).\n\n"
        "| step | seconds | samples/s |\n|---|---|---|\n"
        f"| first upload (with the sort indexes of the two fields it configures, eager here) | {timings[0]:.1f} | {n / timings[0]:,.0f} |\n"
        f"| second upload (replaces the first, every score changed) | {timings[1]:.1f} | {n / timings[1]:,.0f} |\n"
        f"| numpy: write a float32 matrix of the same shape | {numpy_s:.2f} | {n / numpy_s:,.0f} |\n"
        "\nWhere the time goes (seconds):\n\n"
        "| step | first upload | second upload |\n|---|---:|---:|\n"
        + "".join(
            f"| {label} | {phases[0].get(label, 0):.1f} | {phases[1].get(label, 0):.1f} |\n"
            for label in dict.fromkeys([*phases[0], *phases[1]])
        )
        + "| the rest (the body to storage and read back, progress, the transaction) | "
        + " | ".join(f"{t - sum(p.values()):.1f}" for t, p in zip(timings, phases, strict=True))
        + " |\n"
        + f"\nLoad average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (the 2 cores are shared).\n"
    )
    print(body)
    if not args.no_write:
        write_section("prediction-upload", body)


if __name__ == "__main__":
    main()
