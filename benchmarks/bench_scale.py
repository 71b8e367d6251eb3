"""Winnow at scale, through HTTP: gunicorn (winnow/gunicorn.conf.py) and one real Celery worker on PostgreSQL.

    .venv/bin/python benchmarks/bench_scale.py --n 1000000 [--n-large 10000000] [--sections registration,...]

Creates a fresh database (postgres://postgres@127.0.0.1:5432/winnow_scale_bench), migrates, starts the web and a
worker (Redis db 7), creates a user and a token, then runs the sections in order against one `meta` dataset, each
timed through HTTP with the web's and the worker's peak RSS sampled from /proc. With --n-large, the sections the
issue names for 10M (registration, embedding upload, a coreset run, histograms) run again on a second dataset.
Writes the "Scale" section of benchmarks/BENCHMARKS.md: what, N, measured, same-run reference, ratio, target.
Generated files go under var/bench/scale/; every process started here is ended on exit.

Each section is one function (base_url, token, dataset_id, n, ctx) -> list of rows, listed in SECTIONS: the
fallbacks below use today's API directly; swap in the benchmarks/scale_*.py helpers' functions there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section
from scale_common import (
    ROOT,
    PeakRss,
    best_of,
    connect,
    fresh_database,
    mib,
    session,
    start,
    stop,
    timed,
    wait_for_http,
)

DATABASE_URL = "postgres://postgres@127.0.0.1:5432/winnow_scale_bench"
BROKER_URL = "redis://127.0.0.1:6379/7"
WORK = ROOT / "var" / "bench" / "scale"
PYTHON = sys.executable
SCENARIOS = np.array(["sunny", "cloudy", "rainy", "foggy", "snowy", "night"])
DIM = 64


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
    seed: int = 0
    state: dict = field(default_factory=dict)  # what one section leaves for the next (embedding id, tag id)


def _ratio(measured: float, reference: float) -> str:
    return f"{measured / reference:.1f}x" if reference > 0 else "-"


def _check(response, *expected: int):
    if response.status_code not in (expected or (200,)):
        raise RuntimeError(
            f"{response.request.method} {response.url}: HTTP {response.status_code} {response.text[:300]}"
        )
    return response


def _peak(ctx: Context, name: str) -> int:
    return ctx.rss.peaks()[name]["process"]


def synthetic_metadata(start: int, stop: int, seed: int) -> list[dict]:
    rng = np.random.default_rng([seed, start])
    count = stop - start
    scenario = SCENARIOS[rng.choice(len(SCENARIOS), size=count, p=[0.5, 0.25, 0.1, 0.07, 0.05, 0.03])]
    temperature = rng.normal(15, 10, size=count).round(1)
    pedestrians = rng.poisson(3, size=count)
    return [
        {
            "weather": {"scenario": str(scenario[i]), "temperature": float(temperature[i])},
            "number_of_pedestrians": int(pedestrians[i]),
        }
        for i in range(count)
    ]


# --- sections: fallbacks on today's API ----------------------------------------------------------------------------


def registration(base_url: str, token: str, dataset_id: str, n: int, ctx: Context) -> list[Row]:
    """JSON batches of 500 with metadata, 4 in parallel; the rate in the first and the last 10%."""
    http, batch = ctx.http, 500
    url = f"{base_url}/api/v1/datasets/{dataset_id}/samples"
    starts = list(range(0, n, batch))
    done_at: list[tuple[int, float]] = []
    failures: list[str] = []

    def send(lo: int):
        hi = min(n, lo + batch)
        samples = [
            {"file_name": f"frames/{i:08d}.jpg", "width": 640, "height": 480, "metadata": meta}
            for i, meta in zip(range(lo, hi), synthetic_metadata(lo, hi, ctx.seed), strict=True)
        ]
        for attempt in range(3):
            response = http.post(url, json={"samples": samples}, timeout=600)
            if response.status_code in (200, 201):
                done_at.append((hi - lo, time.perf_counter()))
                return
            if attempt == 2:
                failures.append(f"HTTP {response.status_code}: {response.text[:120]}")
            time.sleep(1)

    ctx.rss.reset()
    with timed() as elapsed, ThreadPoolExecutor(4) as pool:
        begin = time.perf_counter()
        list(pool.map(send, starts))
    seconds = elapsed()
    if failures:
        print(f"registration: {len(failures)} batches failed, e.g. {failures[0]}")
    done_at.sort(key=lambda item: item[1])
    times = np.array([t for _, t in done_at]) - begin
    counts = np.cumsum([c for c, _ in done_at])
    tenth = max(1, len(times) // 10)
    first_rate = counts[tenth - 1] / times[tenth - 1]
    last_rate = (counts[-1] - counts[-tenth - 1]) / (times[-1] - times[-tenth - 1]) if len(times) > tenth else 0
    reference = _copy_reference(n, ctx.seed)
    rate = n / seconds
    return [
        Row(
            "registration, JSON batches of 500 x 4 threads (samples/s)",
            n,
            f"{rate:,.0f}/s",
            f"{reference:,.0f}/s (COPY)",
            _ratio(reference, rate) + " slower",
            ">= 20,000/s",
        ),
        Row("registration rate, first 10% / last 10%", n, f"{first_rate:,.0f} / {last_rate:,.0f}", target="flat"),
        Row(
            "registration: failed batches / web peak RSS", n, f"{len(failures)} / {mib(_peak(ctx, 'web'))}", target="0"
        ),
    ]


def _copy_reference(n: int, seed: int) -> float:
    """Samples/s of a raw COPY of the same rows (file name, size, metadata JSON) into an unlogged table."""
    import io

    conn = connect(DATABASE_URL)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "CREATE UNLOGGED TABLE IF NOT EXISTS bench_copy (idx bigint, file_name text, width int, "
                "height int, metadata jsonb)"
            )
            cur.execute("TRUNCATE bench_copy")
            start_time = time.perf_counter()
            for lo in range(0, n, 100_000):
                hi = min(n, lo + 100_000)
                buffer = io.StringIO()
                for i, meta in zip(range(lo, hi), synthetic_metadata(lo, hi, seed), strict=True):
                    buffer.write(f"{i}\tframes/{i:08d}.jpg\t640\t480\t{json.dumps(meta)}\n")
                buffer.seek(0)
                cur.copy_expert("COPY bench_copy FROM STDIN", buffer)
            conn.commit()
            seconds = time.perf_counter() - start_time
            cur.execute("DROP TABLE bench_copy")
        conn.commit()
    finally:
        conn.close()
    return n / seconds


def embeddings_upload(base_url: str, token: str, dataset_id: str, n: int, ctx: Context) -> list[Row]:
    """A Lightly CSV of n x 64 float32 values posted as one multipart file; reference: numpy parsing it."""
    path = WORK / f"embeddings-{n}.csv"
    matrix_bytes = n * DIM * 4
    if not path.exists():
        rng = np.random.default_rng(ctx.seed)
        with path.open("w") as out:
            out.write("filenames," + ",".join(f"embedding_{j}" for j in range(DIM)) + ",labels\n")
            for lo in range(0, n, 50_000):
                hi = min(n, lo + 50_000)
                block = rng.normal(size=(hi - lo, DIM)).astype(np.float32)
                lines = [
                    f"frames/{i:08d}.jpg," + ",".join(f"{v:.6g}" for v in row) + ",0"
                    for i, row in zip(range(lo, hi), block.tolist(), strict=True)
                ]
                out.write("\n".join(lines) + "\n")
    ctx.rss.reset()
    with timed() as elapsed, path.open("rb") as handle:
        response = ctx.http.post(
            f"{base_url}/api/v1/datasets/{dataset_id}/embeddings",
            data={"name": "default"},
            files={"file": (path.name, handle, "text/csv")},
            timeout=3600,
        )
    seconds = elapsed()
    _check(response, 200, 201, 202)
    ctx.state["embedding"] = response.json()["id"]
    web_peak = _peak(ctx, "web")
    # The upload queues the 2D projection for the map on the worker: wait for it, so the runs start on an idle worker.
    ctx.rss.reset()
    with timed() as projection:
        url = f"{base_url}/api/v1/datasets/{dataset_id}/embeddings/{ctx.state['embedding']}"
        deadline = time.monotonic() + 1800
        while (state := _check(ctx.http.get(url)).json()["projection_status"]) not in ("ready", "failed"):
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
    worker_peak = _peak(ctx, "worker")
    with timed() as parse:
        np.loadtxt(path, delimiter=",", skiprows=1, usecols=range(1, DIM + 1), dtype=np.float32)
    budget = 1.5 * matrix_bytes + 300 * 2**20
    return [
        Row(
            f"embeddings CSV upload ({mib(path.stat().st_size)})",
            n,
            f"{seconds:.1f} s",
            f"{parse():.1f} s (numpy loadtxt)",
            _ratio(seconds, parse()),
            "< 30 s at 1M",
        ),
        Row(
            "embeddings upload: web peak RSS",
            n,
            mib(web_peak),
            f"{mib(matrix_bytes)} matrix",
            f"{web_peak / matrix_bytes:.1f}x",
            f"< {mib(budget)}",
        ),
        Row(f"2D projection for the map after the upload (worker): {state}", n, f"{projection():.1f} s"),
        Row(
            "2D projection: worker peak RSS",
            n,
            mib(worker_peak),
            f"{mib(matrix_bytes)} matrix",
            f"{worker_peak / matrix_bytes:.1f}x",
            f"< {mib(budget)}",
        ),
    ]


def analytics(base_url: str, token: str, dataset_id: str, n: int, ctx: Context) -> list[Row]:
    """Histograms (with and without a filter), sort by a field, filters with counts, the map's colour column,
    a lasso over every point, dataset list and detail."""
    http, api = ctx.http, f"{base_url}/api/v1/datasets/{dataset_id}"
    for path, kind, fallback in [
        ("weather.temperature", "float", 15),
        ("weather.scenario", "categorical_string", "unknown"),
        ("number_of_pedestrians", "integer", 0),
    ]:
        response = http.post(f"{api}/configurator", json={"path": path, "type": kind, "fallback": fallback})
        _check(response, 200, 201, 400)  # 400: configured on an earlier run of this section
    rainy = {"conditions": [{"path": "weather.scenario", "op": "eq", "value": "rainy"}]}

    def get(url, **params):
        return lambda: _check(http.get(url, params=params, timeout=600))

    rows = []
    reference = _scan_reference(dataset_id)
    cases = [
        ("Analyze histograms", get(f"{api}/metadata/histograms"), "< 1.5 s", reference),
        (
            "Analyze histograms with a filter",
            get(f"{api}/metadata/histograms", filter=json.dumps(rainy)),
            "< 2.5 s",
            reference,
        ),
        (
            "sample list sorted by a metadata field (a page)",
            get(f"{api}/samples", sort="weather.temperature", limit=100),
            "< 0.3 s",
            None,
        ),
        (
            "filter with count (rainy and > 20 degrees)",
            get(
                f"{api}/samples",
                limit=100,
                count="true",
                where=["weather.scenario:eq:rainy", "weather.temperature:gt:20"],
            ),
            "< 1 s",
            None,
        ),
        ("map colour column (numeric)", get(f"{api}/metadata/column", path="weather.temperature"), "< 1 s", None),
        ("dataset list", get(f"{base_url}/api/v1/datasets"), "-", None),
        ("dataset detail", get(api), "-", None),
    ]
    for what, call, target, ref in cases:
        ctx.rss.reset()
        seconds, _ = best_of(call, repeat=3)
        rows.append(
            Row(
                what,
                n,
                f"{seconds:.2f} s",
                f"{ref:.2f} s (one SQL scan)" if ref else "-",
                _ratio(seconds, ref) if ref else "-",
                target,
            )
        )
    ctx.rss.reset()
    with timed() as lasso:
        response = http.post(
            f"{base_url}/api/v1/datasets/{dataset_id}/map/samples",
            json={"idx": list(range(n)), "fields": "id"},
            timeout=600,
        )
    outcome = f"{lasso():.2f} s" if response.status_code == 200 else f"refused (HTTP {response.status_code})"
    rows.append(Row("lasso over every point (ids)", n, outcome, target="works for any N"))
    return rows


def _scan_reference(dataset_id: str) -> float:
    """Seconds of one SQL pass computing min, max and a 20-bin histogram of a field over the dataset."""
    conn = connect(DATABASE_URL)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM curation_dataset WHERE id = %s", [dataset_id])
            start_time = time.perf_counter()
            cur.execute(
                "WITH v AS (SELECT (metadata->'weather'->>'temperature')::float AS t FROM curation_sample "
                "WHERE dataset_id = %s), r AS (SELECT min(t) lo, max(t) hi FROM v) "
                "SELECT width_bucket(t, lo, hi + 1e-9, 20), count(*) FROM v, r GROUP BY 1",
                [dataset_id],
            )
            cur.fetchall()
            return time.perf_counter() - start_time
    finally:
        conn.close()


def sampling(
    base_url: str, token: str, dataset_id: str, n: int, ctx: Context, *, strategies=("coreset", "typicality", "random")
) -> list[Row]:
    """Sampling runs through the API and the worker; coreset against a one-matvec-per-pick numpy floor."""
    http, api = ctx.http, f"{base_url}/api/v1/datasets/{dataset_id}"
    rows = []
    matrix_bytes = n * DIM * 4
    for strategy in strategies:
        # Typicality clusters into as many clusters as picks: 100 keeps it a clustering of N, not of N x picks.
        picks = 100 if strategy == "typicality" else 1000
        ctx.rss.reset()
        with timed() as elapsed:
            response = _check(
                http.post(
                    f"{api}/sampling-runs",
                    json={
                        "name": f"{strategy}-{n}-{time.time():.0f}",
                        "embedding": ctx.state["embedding"],
                        "strategy": strategy,
                        "n_samples": picks,
                    },
                ),
                200,
                201,
                202,
            )
            run_id = response.json()["id"]
            while True:
                run = _check(http.get(f"{api}/sampling-runs/{run_id}")).json()
                if run["status"] in ("succeeded", "failed", "cancelled"):
                    break
                time.sleep(0.5)
        seconds = elapsed()
        if run["status"] != "succeeded":
            rows.append(Row(f"{strategy} run, {picks} picks", n, f"{run['status']}: {run.get('error')}"))
            continue
        ctx.state[f"run_{strategy}"] = run_id
        worker_peak = _peak(ctx, "worker")
        reference, ref_text = None, "-"
        if strategy == "coreset":
            reference = _kcenter_floor(n, picks, ctx.seed)
            ref_text = f"{reference:.1f} s (numpy k-center)"
        target = {"typicality": "< 40 s at 1M", "coreset": "-"}.get(strategy, "-")
        rows.append(
            Row(
                f"{strategy} run, {picks} picks (queued to scores written)",
                n,
                f"{seconds:.1f} s",
                ref_text,
                _ratio(seconds, reference) if reference else "-",
                target,
            )
        )
        rows.append(
            Row(
                f"{strategy} run: worker peak RSS",
                n,
                mib(worker_peak),
                f"{mib(matrix_bytes)} matrix",
                f"{worker_peak / matrix_bytes:.1f}x",
                f"< {mib(1.5 * matrix_bytes + 300 * 2**20)}",
            )
        )
    return rows


def _kcenter_floor(n: int, picks: int, seed: int) -> float:
    """Greedy k-center over the same matrix with one matrix-vector product per pick (the floor)."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, DIM), dtype=np.float32)
    for lo in range(0, n, 50_000):  # the rows the CSV holds (same generator, same blocks)
        hi = min(n, lo + 50_000)
        x[lo:hi] = rng.normal(size=(hi - lo, DIM)).astype(np.float32)
    sq = np.einsum("ij,ij->i", x, x)
    start_time = time.perf_counter()
    dist = np.full(n, np.inf, dtype=np.float32)
    pick = 0
    for _ in range(picks):
        d = sq - 2.0 * (x @ x[pick]) + sq[pick]
        np.minimum(dist, d, out=dist)
        pick = int(dist.argmax())
    return time.perf_counter() - start_time


def export(base_url: str, token: str, dataset_id: str, n: int, ctx: Context) -> list[Row]:
    """A tag of the first 100,000 samples (random run's top k) exported as CSV."""
    http, api = ctx.http, f"{base_url}/api/v1/datasets/{dataset_id}"
    run_id = ctx.state.get("run_random")
    if run_id is None:
        return [Row("export of a 100k tag (CSV)", n, "skipped: no random run")]
    size = min(100_000, n)
    # n_samples of the random run is 1000; its ranks past that still order every candidate.
    response = _check(
        http.post(f"{api}/tags", json={"name": f"export-{time.time():.0f}", "sampling_run": run_id, "top_k": size}),
        200,
        201,
    )
    tag = response.json()
    ctx.rss.reset()

    def download():
        return len(_check(http.get(f"{api}/tags/{tag['id']}/export", params={"format": "csv"}, timeout=600)).content)

    seconds, length = best_of(download, repeat=2)
    return [
        Row(f"export of a {tag['count']:,}-sample tag (CSV, {mib(length)})", n, f"{seconds:.2f} s", target="< 3 s"),
        Row("export: web peak RSS", n, mib(_peak(ctx, "web")), target="constant"),
    ]


# The sections in order; the lead swaps a fallback for the scale_*.py helper's function of the same shape.
SECTIONS = {
    "registration": registration,  # -> benchmarks/scale_registration.py
    "embeddings": embeddings_upload,  # -> benchmarks/scale_embeddings.py
    "analytics": analytics,  # -> benchmarks/scale_analytics.py
    "sampling": sampling,  # -> benchmarks/scale_workers.py
    "export": export,  # -> benchmarks/scale_analytics.py
}
# What runs again at --n-large (issue 9: registration, embedding upload, a coreset run, histograms).
LARGE = {
    "registration": registration,
    "embeddings": embeddings_upload,
    "sampling": lambda b, t, d, n, ctx: sampling(b, t, d, n, ctx, strategies=("coreset",)),
    "histograms": lambda b, t, d, n, ctx: [r for r in analytics(b, t, d, n, ctx) if "histograms" in r.what],
}


# --- the run ---------------------------------------------------------------------------------------------------


def environment(port: int) -> dict[str, str]:
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
    env = environment(args.port)
    fresh_database(DATABASE_URL)
    import redis

    redis.Redis.from_url(BROKER_URL).flushdb()
    manage = [PYTHON, "manage.py"]
    import subprocess

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
                "1",
                "--loglevel",
                "WARNING",
            ],
            env,
            WORK / "worker.log",
        )
        base_url = f"http://127.0.0.1:{args.port}"
        wait_for_http(f"{base_url}/api/v1/health", web)
        rss = PeakRss({"web": web.pid, "worker": worker.pid})
        http = session(token)
        ctx = Context(http=http, rss=rss)
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
    finally:
        if rss is not None:
            rss.close()
        stop(worker, grace=20)
        stop(web)
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
    args = parser.parse_args()
    rows = run(args)
    text = report(rows, args)
    print(text)
    if not args.no_report:
        write_section("scale", text)


if __name__ == "__main__":
    main()
