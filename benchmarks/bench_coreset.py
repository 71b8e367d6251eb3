"""Coreset speed: our greedy k-center vs a straightforward reference vs the BLAS floor.

On the same float32 data, k picks each:
- ours: `select(..., [{"strategy": "coreset"}])` end to end (validation, centered copy, picks,
  scores);
- reference: per pick `sklearn.metrics.pairwise_distances` of the new center against all points,
  then np.minimum, as in Google's active-learning kcenter_greedy.py;
- floor: one float32 matrix-vector product X @ v over the data per pick, nothing else.
Also the covering radius of the two-round sharded coreset (Malkomes et al. 2015) against one run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/bench_coreset.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import write_section  # noqa: E402
from sklearn.metrics import pairwise_distances  # noqa: E402

from sampling.samplers import SelectionInput, distributed_coreset, ranking, select  # noqa: E402
from sampling.samplers.kcenter import KCenter  # noqa: E402

# (N, d, k, data): "blobs" has the cluster structure of real embeddings; "gaussian" has none, the
# worst case for the pruning bound (every pick is then a full pass).
FULL = [(100_000, 128, 1000, "blobs"), (1_000_000, 64, 1000, "blobs"), (100_000, 128, 1000, "gaussian")]
QUICK = [(20_000, 128, 100, "blobs"), (100_000, 64, 100, "blobs"), (20_000, 128, 100, "gaussian")]
SHARDS = (4, 16)
REF_REPEAT = 2  # the reference is the slow one: best of 2, not of --repeat


def make_data(n: int, d: int, kind: str = "blobs", seed: int = 0) -> np.ndarray:
    """A mixture of 256 Gaussian blobs of uneven size and spread, or one Gaussian (float32)."""
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        return rng.normal(size=(n, d)).astype(np.float32)
    centers = rng.normal(size=(256, d)) * 4.0
    which = rng.choice(256, size=n, p=rng.dirichlet(np.full(256, 0.5)))
    spread = rng.uniform(0.5, 1.5, size=256)[which, None]
    X = centers[which] + spread * rng.normal(size=(n, d))
    return X.astype(np.float32)


def run_ours(X: np.ndarray, k: int) -> np.ndarray:
    n = len(X)
    inp = SelectionInput(embeddings=X, candidates=np.arange(n), preselected=np.zeros(0, dtype=np.int64), metadata={})
    scores = select(inp, [{"strategy": "coreset"}], n_samples=k, seed=0)
    return ranking(scores, np.arange(n))[:k]


def run_reference(X: np.ndarray, k: int) -> np.ndarray:
    """kcenter_greedy.py's loop: pairwise_distances to the new center, then np.minimum."""
    n = len(X)
    ind = int(np.random.default_rng(0).integers(n))
    picks, min_distances = [], None
    for _ in range(k):
        picks.append(ind)
        dist = pairwise_distances(X, X[[ind]], metric="euclidean")
        min_distances = dist if min_distances is None else np.minimum(min_distances, dist)
        ind = int(np.argmax(min_distances))
    return np.asarray(picks)


def run_floor(X: np.ndarray, k: int) -> None:
    buf = np.empty(len(X), dtype=np.float32)
    for t in range(k):
        np.matmul(X, X[(t * 7919) % len(X)], out=buf)


def radius(X: np.ndarray, centers: np.ndarray) -> float:
    return float(KCenter(X, np.arange(len(X)), np.asarray(centers)).final_distances().max())


def timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t, out


def blas_kernel() -> str:
    try:
        import threadpoolctl

        info = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
        return ", ".join(
            f"{i['internal_api']} {i.get('version')} {i.get('architecture')} x{i['num_threads']}" for i in info
        )
    except Exception as exc:  # only decorates the report
        return f"unknown ({exc})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run (no report)")
    parser.add_argument("--repeat", type=int, default=3, help="best of N for ours and the floor")
    parser.add_argument(
        "--threads", type=int, default=1, help="BLAS threads for all three variants (1: robust on a shared machine)"
    )
    parser.add_argument("--no-report", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    cases = QUICK if args.quick else FULL
    import threadpoolctl

    with threadpoolctl.threadpool_limits(limits=args.threads, user_api="blas"):
        speed_rows, shard_rows = measure(cases, args.repeat)
        kernel = blas_kernel()

    report(args, speed_rows, shard_rows, kernel)


def measure(cases, repeat):
    speed_rows, shard_rows = [], []
    for n, d, k, kind in cases:
        X = make_data(n, d, kind)
        run_floor(X, 5)  # warm up BLAS threads and pages
        t_floor, t_ours, t_refs, picks, ref_picks = [], [], [], None, None
        for rep in range(repeat):  # interleaved, so background load hits all three alike
            t_floor.append(timed(run_floor, X, k)[0])
            dt, picks = timed(run_ours, X, k)
            t_ours.append(dt)
            if rep < REF_REPEAT:
                dt, ref_picks = timed(run_reference, X, k)
                t_refs.append(dt)
        floor, ours, t_ref = min(t_floor), min(t_ours), min(t_refs)
        agree = int(np.argmin(np.append(picks == ref_picks, False)))
        r_single = radius(X, picks)
        r_ref = radius(X, ref_picks)
        speed_rows.append((n, d, k, kind, ours, t_ref, floor, agree, r_single, r_ref))
        print(
            f"N={n} d={d} k={k} {kind}: ours {ours:.2f}s  reference {t_ref:.2f}s  floor {floor:.2f}s  "
            f"speedup {t_ref / ours:.1f}x  vs floor {ours / floor:.2f}x  same picks: first {agree}/{k}  "
            f"radius {r_single:.3f} vs reference {r_ref:.3f}",
            flush=True,
        )
        for shards in SHARDS:
            dt, scores = timed(distributed_coreset, X, np.arange(n), np.zeros(0, dtype=np.int64), k, shards)
            r_shard = radius(X, ranking(scores, np.arange(n))[:k])
            shard_rows.append((n, d, k, kind, shards, r_single, r_shard, dt))
            print(
                f"  {shards} shards: radius {r_shard:.3f} vs single {r_single:.3f} "
                f"({r_shard / r_single:.3f}x), {dt:.1f}s sequential",
                flush=True,
            )
    return speed_rows, shard_rows


def report(args, speed_rows, shard_rows, kernel):
    cmd = (
        "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python benchmarks/bench_coreset.py"
        + (" --quick" if args.quick else "")
        + (f" --threads {args.threads}" if args.threads != 1 else "")
    )
    lines = [
        "## Coreset speed (greedy k-center)",
        "",
        f"Command: `{cmd}`",
        "",
        "Same float32 data for all three, k picks each: *blobs* is a mixture of 256 Gaussian blobs of "
        "uneven size and spread (cluster structure, as real embeddings have), *gaussian* a single Gaussian "
        "(no structure: the worst case for our pruning bound). *ours* is "
        '`select(..., [{"strategy": "coreset"}])` end to end (checks, centered copy, picks, scores); '
        "*reference* is the per-pick `sklearn.metrics.pairwise_distances` + `np.minimum` loop of Google's "
        "active-learning `kcenter_greedy.py`; *floor* is one float32 `X @ v` per pick and nothing else. "
        f"Best of {args.repeat} runs for ours and the floor and of {min(REF_REPEAT, args.repeat)} for the "
        "reference (the slow one), interleaved. "
        f"BLAS: {kernel} (threads limited to {args.threads} for all three variants with threadpoolctl: "
        "with other work on the 2 cores, multi-threaded BLAS calls stall on descheduled threads). The command unsets OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for all three "
        "variants alike (this machine pins an older kernel for safety; tests and CI keep it). The machine's "
        "2 cores are shared with other work, so seconds are noisy; the ratios come from the same run.",
        "",
        "| N | d | k | data | ours s | reference s | floor s | speedup vs reference | ours / floor "
        "| same picks as reference | covering radius ours / reference |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, d, k, kind, ours, ref, floor, agree, r_single, r_ref in speed_rows:
        same = f"all {k}" if agree == k else f"first {agree}"
        lines.append(
            f"| {n:,} | {d} | {k:,} | {kind} | {ours:.2f} | {ref:.2f} | {floor:.2f} | {ref / ours:.1f}x "
            f"| {ours / floor:.2f}x | {same} | {r_single:.3f} / {r_ref:.3f} |"
        )
    lines += [
        "",
        "Goals: at least 5x faster than the reference, within 1.5x of the floor. Where the picks part "
        "ways with the reference it is a float32 vs float64 near-tie; the covering radius shows the "
        "result is as good. *ours* can beat the floor: once the picks cover the data, the triangle "
        "inequality (a row whose nearest center a has d(a, c) >= 2 d(x, a) cannot get closer to the new "
        "center c) rules most rows out and only the rest are updated; the picks are the same.",
        "",
        "### Sharded (two-round) coreset",
        "",
        "Each shard (a strided split of the candidates) runs greedy k-center for k picks; greedy "
        "k-center over the union of the shards' picks gives the final k. Covering radius = largest "
        "distance from any sample to its nearest pick (lower is better); shards run one after the "
        "other here (on Celery they run in parallel).",
        "",
        "| N | d | k | data | shards | radius, one run | radius, sharded | ratio | sharded s (sequential) |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n, d, k, kind, shards, r_single, r_shard, dt in shard_rows:
        lines.append(
            f"| {n:,} | {d} | {k:,} | {kind} | {shards} | {r_single:.3f} | {r_shard:.3f} "
            f"| {r_shard / r_single:.3f} | {dt:.1f} |"
        )
    body = "\n".join(lines)
    print(body)
    if not (args.no_report or args.quick):
        write_section("bench_coreset", body)


if __name__ == "__main__":
    main()
