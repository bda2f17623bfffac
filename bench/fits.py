"""How long fitting the scaling curves takes: the operator refits a curve whenever a cell of it lands.

    .venv/bin/python bench/fits.py [--curves 80] [--boot 1000] [--replicates 2] [--method varpro]

80 curves = 10 encoders x 8 tasks, the largest grid the status is sized for. Each curve is a
simulated study at the paper's 5 sizes plus a baseline, with replicates and shared test-set
draws (bench/fit_coverage.py's simulator), fitted and bootstrapped as the operator does.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.fit_coverage import PAPER_SIZES, simulate, truth_for
from radscale.operator import fits


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--curves", type=int, default=80)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--replicates", type=int, default=2)
    ap.add_argument("--method", choices=fits.METHODS, default="varpro")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    times = []
    for i in range(args.curves):
        points, base = simulate(truth_for(PAPER_SIZES, rng), PAPER_SIZES, args.replicates, rng, draws=args.boot)
        t = time.perf_counter()
        fits.fit_curve(PAPER_SIZES, points, base, method=args.method, n_boot=args.boot, seed=i)
        times.append(time.perf_counter() - t)
    t = np.asarray(times)
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"{args.curves} curves x {len(PAPER_SIZES)} sizes + baseline, {args.replicates} replicates, "
          f"{args.boot} bootstrap draws each, fit {args.method}")
    print(f"per curve: median {np.median(t) * 1e3:.0f} ms, p95 {np.percentile(t, 95) * 1e3:.0f} ms; "
          f"all curves: {t.sum():.3f} s")


if __name__ == "__main__":
    main()
