"""Winnow at scale, through HTTP: gunicorn (winnow/gunicorn.conf.py) and one real Celery worker on PostgreSQL.

    .venv/bin/python benchmarks/bench_scale.py --n 1000000 [--n-large 10000000] [--sections registration,...]

Creates a fresh database (postgres://postgres@127.0.0.1:5432/winnow_scale_bench), migrates, starts the web and a
worker (Redis db 7), creates a user and a token, then runs the sections in order against one `meta` dataset, each
timed through HTTP with the web's and the worker's peak RSS sampled from /proc. With --n-large, the sections the
issue names for 10M (registration, embedding upload, a coreset run, histograms) run again on a second dataset.
Writes the "Scale" section of benchmarks/BENCHMARKS.md: what, N, measured, same-run reference, ratio, target.
Generated files go under var/bench/scale/; every process started here is ended on exit.

Each section is one function (base_url, token, dataset_id, n, ctx) -> list of rows, listed in SECTIONS, built on
the helpers in benchmarks/scale_registration.py, scale_embeddings.py, scale_analytics.py and scale_workers.py.
The worker's concurrency and BLAS threads are explicit (--worker-concurrency 1, --blas-threads 2 by default).
Generated files, logs and the database are removed on exit unless --keep.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import scale_analytics
import scale_embeddings
import scale_registration
import scale_workers
from _report import write_section
from _setup import connect, drop_database, fresh_database
from scale_common import (
    ROOT,
    CpuMeter,
    PeakRss,
    descendants,
    mib,
    rss_bytes,
    session,
    start,
    stop,
    timed,
    wait_for_http,
    wait_until_idle,
)

from winnow.client.api import META_BATCH_ROWS

# Two runs side by side (say, in two checkouts) each name their own database, broker db and work folder.
DATABASE_URL = os.environ.get("WINNOW_SCALE_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/winnow_scale_bench")
BROKER_URL = os.environ.get("WINNOW_SCALE_BROKER_URL", "redis://127.0.0.1:6379/7")
WORK = ROOT / "var" / "bench" / "scale"
PYTHON = sys.executable
DIM = 64
EXPORT_FORMATS = ("csv", "filenames", "json", "label-studio")


@dataclass
class Row:
    what: str
    n: int
    measured: str
    reference: str = "-"
    ratio: str = "-"
    target: str = "-"


@dataclass
class Context:
    http: object
    rss: PeakRss
    web_pid: int  # gunicorn's master
    worker_pid: int  # the Celery worker's main process
    state: dict = field(default_factory=dict)  # what one section leaves for the next (the embedding id)

    def pids(self) -> tuple[list[int], list[int]]:
        """The gunicorn workers, and the Celery main process with its pool processes."""
        return (
            scale_embeddings.children(self.web_pid),
            [self.worker_pid, *scale_embeddings.children(self.worker_pid)],
        )


def _ratio(measured: float, reference: float) -> str:
    return f"{measured / reference:.1f}x" if reference > 0 else "-"


def _check(response, *expected: int):
    if response.status_code not in (expected or (200,)):
        raise RuntimeError(
            f"{response.request.method} {response.url}: HTTP {response.status_code} {response.text[:300]}"
        )
    return response


def _peak(ctx: Context, name: str) -> int:
    """The largest single process of the tree since the last reset; its RSS now when a request ended before the
    sampler's first tick."""
    peak = ctx.rss.peaks()[name]["process"]
    return peak or max(rss_bytes(pid) for pid in descendants(ctx.rss.roots[name]))


# --- sections: the benchmarks/scale_*.py helpers ------------------------------------------------------------------


def registration_names(idx: np.ndarray) -> list[str]:
    """The file names scale_registration.synthetic_entries gives sample i, so the embedding files match them."""
    return [f"cam{i % 50:02d}/{i // 50:07d}.jpg" for i in idx.tolist()]


def _rss_rows(what: str, n: int, peak: float, matrix_bytes: int) -> Row:
    """A peak RSS line with the matrix size and the issue's limit (1.5 x matrix + 300 MB) next to it."""
    limit = 1.5 * matrix_bytes + 300 * 2**20
    return Row(
        what,
        n,
        mib(peak),
        f"matrix {mib(matrix_bytes)}",
        f"{peak / matrix_bytes:.1f}x matrix",
        f"< {mib(limit)} (1.5 x matrix + 300 MiB){'' if peak < limit else ' MISSED'}",
    )


def registration(base_url: str, token: str, dataset_id: str, n: int, ctx: Context) -> list[Row]:
    """The client's register_samples (its default batches, 4 in parallel) against a raw COPY of the same rows."""
    ctx.rss.reset()
    # The web's and PostgreSQL's CPU a sample: unlike the rate, it hardly moves when other work shares the machine.
    server_cpu = CpuMeter([ctx.web_pid], marker=f" {DATABASE_URL.rsplit('/', 1)[-1]} ")
    got = scale_registration.register_through_http(
        base_url, token, dataset_id, n, batch_size=META_BATCH_ROWS, workers=4, server_cpu=server_cpu
    )
    web_peak = _peak(ctx, "web")
    copy = scale_registration.copy_reference(DATABASE_URL, n)
    reference = copy["copy_indexed_rate"]
    return [
        Row(
            f"registration, client JSON batches of {META_BATCH_ROWS:,} x 4 workers (samples/s)",
            n,
            f"{got['rate']:,}/s ({got['seconds']:.1f} s)",
            f"{reference:,}/s (COPY into a table shaped like curation_sample; bare {copy['copy_bare_rate']:,}/s)",
            f"{reference / got['rate']:.1f}x slower",
            ">= 20,000/s at 1M",
        ),
        Row(
            "registration rate, first 10% / last 10%",
            n,
            f"{got['rate_first_10pct']:,}/s / {got['rate_last_10pct']:,}/s",
            "-",
            f"last/first {got['rate_last_10pct'] / got['rate_first_10pct']:.2f}",
            "flat",
        ),
        Row(
            "registration: server CPU a sample (web + PostgreSQL backends), first 10% / last 10%",
            n,
            f"{got['cpu_us_first_10pct']:.0f} us / {got['cpu_us_last_10pct']:.0f} us (overall {got['cpu_us']:.0f} us)",
            "-",
            f"last/first {got['cpu_us_last_10pct'] / got['cpu_us_first_10pct']:.2f}",
            "flat (no O(N) work a batch)",
        ),
        Row(
            "registration: created / skipped, web peak RSS",
            n,
            f"{got['created']:,} / {got['skipped']:,}, {mib(web_peak)}",
            target=f"{n:,} / 0",
        ),
    ]


def embeddings(base_url: str, token: str, dataset_id: str, n: int, ctx: Context, *, npy: bool = True) -> list[Row]:
    """A Lightly CSV (chunked, through the client), then the same matrix as .npy + names; numpy parse reference."""
    matrix_bytes = n * DIM * 4
    csv_path = WORK / f"embeddings-{n}.csv"
    size = scale_embeddings.write_csv(csv_path, n, DIM, names=registration_names)
    web, worker = ctx.pids()
    got = scale_embeddings.upload(
        base_url, token, dataset_id, csv_path, "csv", web_pids=web, worker_pids=worker, chunked=True
    )
    ctx.state["embedding"] = got["embedding"]
    projection = scale_embeddings.wait_projection(base_url, token, dataset_id, got["embedding"], worker, 3600)
    final = _wait_projection_done(base_url, dataset_id, got["embedding"], ctx)
    parse = scale_embeddings.numpy_reference(csv_path, DIM)["numpy_loadtxt_seconds"]
    csv_path.unlink()
    worker_peak = max(got["worker_peak_rss_mb"], projection["projection_worker_peak_rss_mb"]) * 2**20
    rows = [
        Row(
            f"embeddings CSV upload, chunked ({mib(size)}, d={DIM})",
            n,
            f"{got['seconds']:.1f} s",
            f"{parse:.1f} s (numpy loadtxt of the same CSV)",
            _ratio(got["seconds"], parse),
            "< 30 s at 1M",
        ),
        _rss_rows("embeddings CSV upload: web peak RSS", n, got["web_peak_rss_mb"] * 2**20, matrix_bytes),
        _rss_rows("embeddings CSV upload + 2D projection: worker peak RSS", n, worker_peak, matrix_bytes),
        Row(
            f"2D projection after the upload (worker): PCA layout, then {final}",
            n,
            f"{projection['projection_seconds']:.1f} s",
        ),
    ]
    if npy:
        folder = WORK / f"npy-{n}"
        folder.mkdir(parents=True, exist_ok=True)
        matrix, names = scale_embeddings.write_npy(folder, n, DIM, names=registration_names)
        got = scale_embeddings.upload(
            base_url, token, dataset_id, matrix, "npy", file_names_path=names, web_pids=web, worker_pids=worker
        )
        _wait_projection_done(base_url, dataset_id, got["embedding"], ctx)
        shutil.rmtree(folder)
        rows += [
            Row(f"embeddings .npy upload + names ({mib(matrix_bytes)})", n, f"{got['seconds']:.1f} s"),
            _rss_rows("embeddings .npy upload: web peak RSS", n, got["web_peak_rss_mb"] * 2**20, matrix_bytes),
        ]
    return rows


def _wait_projection_done(base_url: str, dataset_id: str, embedding_id: str, ctx: Context) -> str:
    """Wait until the worker has finished the embedding's layouts (t-SNE too, below its size limit), so the next
    section starts on an idle worker; the final status."""
    url = f"{base_url}/api/v1/datasets/{dataset_id}/embeddings/{embedding_id}"
    deadline = time.monotonic() + 3600
    while (state := _check(ctx.http.get(url)).json()["projection_status"]) not in ("ready", "failed"):
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return state


FIELDS = [  # the configured fields: (path, type, fallback); sorting by weather.temperature needs its sort index
    ("weather.temperature", "float", 0),
    ("weather.scenario", "categorical_string", "unknown"),
    ("camera.id", "int", 0),
]
RAIN = {
    "conditions": [
        {"path": "weather.scenario", "op": "eq", "value": "rain"},
        {"path": "weather.temperature", "op": "gt", "value": 15},
    ]
}


def wait_column_store(base_url: str, dataset_id: str, ctx: Context, timeout: float = 3600) -> dict:
    """Wait until the worker's curation.build_metadata_columns has built a fresh column store; its status."""
    url = f"{base_url}/api/v1/datasets/{dataset_id}/metadata/columns"
    with timed() as elapsed:
        while True:
            body = _check(ctx.http.get(url)).json()
            if body["fresh"]:
                return {**body, "waited_s": elapsed()}
            if elapsed() > timeout or body["status"] == "failed":
                raise RuntimeError(f"metadata column store not fresh ({elapsed():.0f} s): {body}")
            if body["status"] == "idle":  # stale and nothing queued (a build ended before the last write)
                _check(ctx.http.post(url), 202)
            time.sleep(0.5)


def column_store_row(base_url: str, dataset_id: str, n: int, ctx: Context) -> Row:
    got = wait_column_store(base_url, dataset_id, ctx)
    return Row(
        f"metadata column store of {len(got['fields'])} fields built (worker task, after the sort indexes)",
        n,
        f"{got['build_seconds']:.1f} s",
        target="-",
    )


def configure_fields(base_url: str, dataset_id: str, ctx: Context, timeout: float = 3600) -> float:
    """Configure FIELDS and wait for the worker's curation.sync_sort_indexes to build their sort indexes."""
    api = f"{base_url}/api/v1/datasets/{dataset_id}"
    existing = {f["path"]: f["id"] for f in _check(ctx.http.get(f"{api}/configurator")).json()}
    ids = []
    for path, kind, fallback in FIELDS:
        if path in existing:
            ids.append(existing[path])
            continue
        body = {"path": path, "type": kind, "fallback": fallback}
        ids.append(_check(ctx.http.post(f"{api}/configurator", json=body), 201).json()["id"])
    wanted = {f"sample_sort_{dataset_id}_{i}_{end}" for i in ids for end in "ad"}
    conn = connect(DATABASE_URL)
    conn.autocommit = True
    try:
        with timed() as elapsed, conn.cursor() as cur:
            while True:
                cur.execute("SELECT indexname FROM pg_indexes WHERE indexname = ANY(%s)", [sorted(wanted)])
                if {row[0] for row in cur.fetchall()} >= wanted:
                    return elapsed()
                if elapsed() > timeout:
                    raise RuntimeError(f"sort indexes {sorted(wanted)} not built within {timeout} s")
                time.sleep(0.5)
    finally:
        conn.close()


def histograms(base_url: str, token: str, dataset_id: str, n: int, ctx: Context) -> list[Row]:
    """Analyze histograms without and with a filter, against the raw SQL aggregates over the same rows."""
    sql = scale_analytics.sql_references(DATABASE_URL, dataset_id)
    floor = sql["group_by_category_s"] + sql["min_max_number_s"]
    rows = []
    for what, filter_obj, target in [
        ("Analyze histograms", None, "< 1.5 s at 1M"),
        ("Analyze histograms with a filter (rain and > 15)", RAIN, "< 2.5 s at 1M"),
    ]:
        got = scale_analytics.histograms(base_url, token, dataset_id, filter_obj)
        rows.append(
            Row(
                f"{what} ({got['fields']} fields, {got['matched']:,} matched)",
                n,
                f"{got['seconds']:.2f} s",
                f"{floor:.2f} s (SQL GROUP BY category + MIN/MAX number)",
                _ratio(got["seconds"], floor),
                target,
            )
        )
    return rows


def analytics(base_url: str, token: str, dataset_id: str, n: int, ctx: Context) -> list[Row]:
    """Sorted pages, filtered counts, binary colour columns, lasso + save by bitmask, exports of a 100k tag,
    dataset list and detail; histograms after the fields are configured."""
    a = scale_analytics
    index_s = configure_fields(base_url, dataset_id, ctx)
    sql = a.sql_references(DATABASE_URL, dataset_id)
    rows = [Row("sort indexes of 3 configured fields built (worker task)", n, f"{index_s:.1f} s")]
    rows.append(column_store_row(base_url, dataset_id, n, ctx))
    rows += histograms(base_url, token, dataset_id, n, ctx)
    for sort in ("weather.temperature", "-weather.temperature", "camera.id"):
        got = a.sorted_pages(base_url, token, dataset_id, sort)
        rows.append(
            Row(
                f"sample list sorted by {sort}: first page / next pages (50 a page)",
                n,
                f"{got['first_page_s']:.3f} s / {got['next_page_s_max']:.3f} s",
                target="< 0.3 s",
            )
        )
    got = a.filtered_count(base_url, token, dataset_id, ["weather.scenario:eq:rain", "camera.id:lt:10"])
    rows.append(
        Row(
            f"filter with count (rain and camera < 10: {got['count']:,})",
            n,
            f"{got['seconds']:.2f} s",
            f"{sql['count_s']:.2f} s (SQL COUNT of the dataset)",
            _ratio(got["seconds"], sql["count_s"]),
            "< 1 s",
        )
    )
    for what, path, ref in [
        ("numeric", "weather.temperature", sql["min_max_number_s"]),
        ("categorical", "weather.scenario", sql["group_by_category_s"]),
    ]:
        got = a.colour_column(base_url, token, dataset_id, path=path)
        rows.append(
            Row(
                f"map colour column, {what} ({path}, binary, {mib(got['bytes'])})",
                n,
                f"{got['seconds']:.2f} s",
                f"{ref:.2f} s (SQL scan of the field)",
                _ratio(got["seconds"], ref),
                "< 1 s",
            )
        )
    selected = min(300_000, n)
    ctx.rss.reset()
    got = a.lasso_save(base_url, token, dataset_id, n, selected, f"lasso-{time.time():.0f}")
    rows.append(
        Row(
            f"lasso of {selected:,} points: grid page / saved as a tag ({got['count']:,})",
            n,
            f"{got['grid_s']:.2f} s / {got['save_s']:.2f} s",
            target="works for any N",
        )
    )
    tag_size = min(100_000, n)
    bits = np.zeros(n, dtype=bool)
    bits[:tag_size] = True
    mask = base64.b64encode(np.packbits(bits, bitorder="little").tobytes()).decode()
    tag = _check(
        ctx.http.post(f"{base_url}/api/v1/datasets/{dataset_id}/tags", json={"name": "export-100k", "bitmask": mask}),
        201,
    ).json()
    got = a.colour_column(base_url, token, dataset_id, tag=tag["id"])
    rows.append(Row("map colour column, a tag (binary)", n, f"{got['seconds']:.2f} s", target="< 1 s"))
    for fmt in EXPORT_FORMATS:
        ctx.rss.reset()
        got = a.export(base_url, token, dataset_id, tag["id"], fmt)
        rows.append(
            Row(
                f"export of a {tag['count']:,}-sample tag, {fmt} ({mib(got['bytes'])}); web peak RSS",
                n,
                f"{got['seconds']:.2f} s; {mib(_peak(ctx, 'web'))}",
                target="< 3 s (CSV), constant memory",
            )
        )
    got = a.dataset_list_detail(base_url, token, dataset_id)
    rows.append(
        Row(
            f"dataset list / detail ({got['sample_count']:,} samples)",
            n,
            f"{got['list_s']:.3f} s / {got['detail_s']:.3f} s",
            f"{sql['count_s']:.3f} s (SQL COUNT)",
            f"{_ratio(got['list_s'], sql['count_s'])} / {_ratio(got['detail_s'], sql['count_s'])}",
        )
    )
    return rows


def sampling(
    base_url: str,
    token: str,
    dataset_id: str,
    n: int,
    ctx: Context,
    *,
    strategies=("random", "coreset", "typicality"),
) -> list[Row]:
    """Runs through the API and the worker (wall time, worker CPU and peak RSS); references on the same rows:
    the numpy k-center floor for coreset, scikit-learn's KMeans for typicality's clustering."""
    w = scale_workers
    matrix_bytes = n * DIM * 4
    x = np.empty((n, DIM), dtype=np.float32)  # the uploaded rows (in idx order), built in blocks
    for lo in range(0, n, 1_000_000):
        x[lo : lo + 1_000_000] = scale_embeddings.matrix_rows(np.arange(lo, min(n, lo + 1_000_000)), DIM)
    rows = []
    for strategy in strategies:
        body = {"name": f"{strategy}-{n}", "embedding": ctx.state["embedding"], **w.STRATEGY_BODIES[strategy]}
        got = w.run_via_http(base_url, token, dataset_id, body, ctx.worker_pid, timeout_s=3600)
        if got["status"] != "succeeded":
            rows.append(Row(f"{strategy} run", n, f"{got['status']}: {got['error']}"))
            continue
        picks = body.get("n_samples")
        reference, target = "-", "-"
        ratio = "-"
        if strategy == "coreset":
            floor = w.kcenter_floor(x, picks)["kcenter_floor_s"]
            reference, ratio = f"{floor:.1f} s (numpy k-center, one matvec a pick)", _ratio(got["wall_s"], floor)
            target = "within 1.5x of the floor"
        elif strategy == "typicality":
            # k-means++ seeding of 1000 centres costs more than the Lloyd iterations: random seeding keeps the
            # reference to what typicality replaces, full-batch Lloyd over every row.
            kmeans = w.kmeans_reference(x, picks, max_iter=20, init="random")["full_kmeans_s"]
            reference = f"{kmeans:.1f} s (sklearn KMeans k={picks}, all rows, random init, 20 iterations)"
            ratio = _ratio(got["wall_s"], kmeans)
            target = "< 40 s at 1M"
        rows.append(
            Row(
                f"{strategy} run{f', k={picks}' if picks else ''} (request to scores written; "
                f"worker CPU {got['worker_cpu_s']:.1f} s)",
                n,
                f"{got['wall_s']:.1f} s",
                reference,
                ratio,
                target,
            )
        )
        rows.append(_rss_rows(f"{strategy} run: worker peak RSS", n, got["peak_rss_mib"] * 2**20, matrix_bytes))
    return rows


SECTIONS = {
    "registration": registration,  # benchmarks/scale_registration.py
    "embeddings": embeddings,  # benchmarks/scale_embeddings.py
    "analytics": analytics,  # benchmarks/scale_analytics.py
    "sampling": sampling,  # benchmarks/scale_workers.py
}
# What runs again at --n-large (issue 9: registration, embedding upload, a coreset run, histograms).
LARGE = {
    "registration": registration,
    "embeddings": lambda b, t, d, n, ctx: embeddings(b, t, d, n, ctx, npy=False),
    "sampling": lambda b, t, d, n, ctx: sampling(b, t, d, n, ctx, strategies=("coreset",)),
    "histograms": lambda b, t, d, n, ctx: [
        Row("sort indexes of 3 configured fields built (worker task)", n, f"{configure_fields(b, d, ctx):.1f} s"),
        column_store_row(b, d, n, ctx),
        *histograms(b, t, d, n, ctx),
    ],
}


# --- the run ---------------------------------------------------------------------------------------------------


def environment(port: int, blas_threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE"}}
    env.update(
        {
            "DATABASE_URL": DATABASE_URL,
            "CELERY_BROKER_URL": BROKER_URL,
            "SECRET_KEY": "winnow-scale-benchmark",
            "WINNOW_VAR_DIR": str(WORK / "var"),
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DEBUG": "0",
            "WINNOW_BIND": f"127.0.0.1:{port}",
            "WEB_CONCURRENCY": os.environ.get("WEB_CONCURRENCY", "2"),
            "GUNICORN_THREADS": os.environ.get("GUNICORN_THREADS", "4"),
            "GUNICORN_TIMEOUT": "600",
            "GUNICORN_ACCESS_LOG": "",
            "WINNOW_MAX_REQUEST_BYTES": str(4 * 2**30),
            "LOG_LEVEL": "WARNING",
            # The worker's BLAS/OpenMP threads, on purpose (winnow/celery.py applies them in each pool process).
            "WINNOW_BLAS_THREADS": str(blas_threads),
        }
    )
    return env


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(args) -> list[Row]:
    WORK.mkdir(parents=True, exist_ok=True)
    args.port = args.port or _free_port()
    env = environment(args.port, args.blas_threads)
    fresh_database(DATABASE_URL)
    import redis

    redis.Redis.from_url(BROKER_URL).flushdb()
    manage = [PYTHON, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    token = (
        subprocess.run(
            [*manage, "createtoken", "bench", "--create-user", "--name", "bench"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    web = worker = rss = None
    rows: list[Row] = []
    try:
        web = start(
            [PYTHON, "-m", "gunicorn", "-c", "winnow/gunicorn.conf.py", "winnow.wsgi:application"],
            env,
            WORK / "web.log",
        )
        worker = start(
            [
                PYTHON,
                "-m",
                "celery",
                "-A",
                "winnow",
                "worker",
                "-Q",
                env.get("WINNOW_QUEUE", "winnow"),
                "--concurrency",
                str(args.worker_concurrency),
                "--loglevel",
                "WARNING",
            ],
            env,
            WORK / "worker.log",
        )
        base_url = f"http://127.0.0.1:{args.port}"
        wait_for_http(f"{base_url}/api/v1/health", web)
        # The Celery worker may still be importing when the web answers: the first section would share the CPU.
        print(f"web and worker idle after {wait_until_idle([web.pid, worker.pid]):.0f} s", flush=True)
        rss = PeakRss({"web": web.pid, "worker": worker.pid})
        http = session(token)
        ctx = Context(http=http, rss=rss, web_pid=web.pid, worker_pid=worker.pid)
        print(
            f"gunicorn {env['WEB_CONCURRENCY']} workers x {env['GUNICORN_THREADS']} threads; Celery worker "
            f"concurrency {args.worker_concurrency}, BLAS threads {args.blas_threads} a pool process",
            flush=True,
        )
        plans = [(args.n, SECTIONS)] + ([(args.n_large, LARGE)] if args.n_large else [])
        for n, sections in plans:
            dataset = _check(
                http.post(f"{base_url}/api/v1/datasets", json={"name": f"scale-{n}", "upload_mode": "meta"}), 201
            ).json()
            ctx.state = {}
            for name, section in sections.items():
                if args.sections and name not in args.sections:
                    continue
                print(f"--- {name} at {n:,}", flush=True)
                start_time = time.perf_counter()
                new_rows = section(base_url, token, dataset["id"], n, ctx)
                for row in new_rows:
                    print(
                        f"  {row.what}: {row.measured} (ref {row.reference}, {row.ratio}; target {row.target})",
                        flush=True,
                    )
                print(f"  ({time.perf_counter() - start_time:.0f} s)", flush=True)
                rows.extend(new_rows)
    except BaseException:
        for log in ("web.log", "worker.log"):
            if (WORK / log).exists():
                print(f"--- tail of {WORK / log}:\n" + "\n".join((WORK / log).read_text().splitlines()[-30:]))
        raise
    finally:
        if rss is not None:
            rss.close()
        stop(worker, grace=20)
        stop(web)
        if not args.keep:  # generated files, stored matrices, logs; the database and the broker's db 7
            shutil.rmtree(WORK, ignore_errors=True)
            if WORK.parent.is_dir() and not any(WORK.parent.iterdir()):
                WORK.parent.rmdir()  # var/bench, when nothing else is in it
            redis.Redis.from_url(BROKER_URL).flushdb()
            drop_database(DATABASE_URL)
    return rows


def report(rows: list[Row], args) -> str:
    lines = [
        "## Scale: Winnow through HTTP at 1M (10M) samples",
        "",
        f"`benchmarks/bench_scale.py --n {args.n}{f' --n-large {args.n_large}' if args.n_large else ''}`: gunicorn "
        "(winnow/gunicorn.conf.py) and one Celery worker on PostgreSQL, a `meta` dataset with metadata, "
        f"d={DIM} embeddings. Peak RSS is the largest single process, sampled from /proc every 0.1 s. "
        "Reference: the same work without Winnow, measured in the same run.",
        "",
        "| what | N | measured | same-run reference | ratio | target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    lines += [f"| {r.what} | {r.n:,} | {r.measured} | {r.reference} | {r.ratio} | {r.target} |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--n-large", type=int, default=0, help="also run the 10M sections at this N (0: skip)")
    parser.add_argument(
        "--sections",
        type=lambda s: set(s.split(",")),
        default=None,
        help=f"comma-separated subset of {', '.join(SECTIONS)} (and histograms for --n-large)",
    )
    parser.add_argument("--port", type=int, default=0, help="gunicorn's port (0: a free one)")
    parser.add_argument("--no-report", action="store_true", help="print the table, leave BENCHMARKS.md alone")
    parser.add_argument("--worker-concurrency", type=int, default=1, help="the Celery worker's pool processes")
    parser.add_argument(
        "--blas-threads", type=int, default=2, help="BLAS/OpenMP threads per worker pool process (WINNOW_BLAS_THREADS)"
    )
    parser.add_argument("--keep", action="store_true", help="keep var/bench/scale/ and the database afterwards")
    args = parser.parse_args()
    rows = run(args)
    text = report(rows, args)
    print(text)
    if not args.no_report:
        write_section("scale", text)


if __name__ == "__main__":
    main()
