"""How long fitting one scaling curve takes: the operator refits every curve as results arrive.

    .venv/bin/python bench/fits.py [--curves 80] [--boot 1000]

80 curves = 10 encoders x 8 tasks, the largest grid the status is sized for.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

from radscale.operator import fits


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--curves", type=int, default=80)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--sizes", type=int, default=10)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    sizes = np.logspace(4, 6.5, args.sizes)
    times = []
    for i in range(args.curves):
        law = fits.PowerLaw(a=rng.uniform(1, 10), b=rng.uniform(0.2, 0.6), c=rng.uniform(0.02, 0.2))
        sd = 0.004
        y = law(sizes) + rng.normal(0, sd, len(sizes))
        t = time.perf_counter()
        fits.fit_power_law(sizes, y, sigmas=[sd] * len(sizes), baseline_error=float(law(2e4)),
                           baseline_sigma=sd, n_boot=args.boot, seed=i)
        times.append(time.perf_counter() - t)
    t = np.asarray(times)
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"{args.curves} curves x {args.sizes} sizes, {args.boot} bootstrap replicates each")
    print(f"per curve: median {np.median(t) * 1e3:.0f} ms, p95 {np.percentile(t, 95) * 1e3:.0f} ms; "
          f"all curves: {t.sum():.1f} s")


if __name__ == "__main__":
    main()
