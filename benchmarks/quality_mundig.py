"""Lightly's selection engine (`lightly-mundig`) on a cached feature matrix, run inside its own venv.

bench_quality.py calls this in a subprocess with the benchmark venv's Python (lightly-mundig is never a
dependency of Winnow):

    var/bench/mundig-venv/bin/python benchmarks/quality_mundig.py X.npy OUT.npz K [--time]

Writes three pick orders of length K to OUT.npz: `diversity` (diversifying strategy alone),
`typicality` (weighting by Lightly's typicality alone) and `diversity_typicality` (both, strength 1,
the combination LightlyStudio offers), and the seconds each took.
"""

from __future__ import annotations

import sys
import time

import lightly_mundig as mundig
import numpy as np

K_NN = 20


def run(X: np.ndarray, k: int) -> dict[str, np.ndarray]:
    emb = X.astype(np.float32).tolist()
    out = {}
    t0 = time.perf_counter()
    typ = [float(v) for v in mundig.Typicality(emb).calculate_typicality(K_NN)]
    t_typ = time.perf_counter() - t0
    for name, div, weight in (
        ("diversity", True, False),
        ("typicality", False, True),
        ("diversity_typicality", True, True),
    ):
        t0 = time.perf_counter()
        sel = mundig.Selection()
        if div:
            sel.add_diversifying_strategy(emb, 1.0)
        if weight:
            sel.add_weighting_strategy(typ, 1.0)
        out[name] = np.asarray(sel.run_selection([], len(emb), k), dtype=np.int64)
        out[name + "_s"] = np.float64(time.perf_counter() - t0 + (t_typ if weight else 0.0))
    return out


def main() -> None:
    X = np.load(sys.argv[1])
    np.savez(sys.argv[2], **run(X, int(sys.argv[3])))


if __name__ == "__main__":
    main()
