"""Adaptive design against the fixed log grid, on simulated studies with a known truth.

    .venv/bin/python bench/adaptive.py [--studies 100] [--grid-sizes 8] [--replicates 2] [--batch 1]

Each study draws a ground-truth law and a baseline it crosses inside [min, max], and a shared test
set, from ``bench/fit_coverage.py``'s simulator (run-to-run sd 0.02, test-set sd 0.01, cell x
patient sd 0.004). Then:

- the grid: ``--grid-sizes`` log-spaced sizes x ``--replicates`` cells, fitted as the status
  does; its crossover CI's relative width is the bar;
- the design: :func:`radscale.operator.design.choose` with ``relativeWidth`` set to that bar, from
  ``initial`` (3) log-spaced sizes x replicates, one round of ``--batch`` cells at a time drawn from
  the same simulator, until it stops (the bar reached, or as many cells as the grid spent).

Printed per study row set: the cells the design needed (a design that stops on its budget counts
the whole budget), and whether each final 95% interval covers the true crossover. The last line is
``adaptive cells/grid cells = ... at equal crossover CI; coverage = ...``.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fit_coverage import TestSet, covered, truth_for

from radscale.operator import design, fits
from radscale.spec import AdaptiveSpec

MIN, MAX = 30_000, 3_500_000  # the paper's range


def run_design(truth, test: TestSet, ad: AdaptiveSpec, replicates: int, batch: int,
               base: fits.Replicates) -> tuple[int, design.Round, str]:
    """Run one design to its stop; returns (cells used, last round, stop reason)."""
    cells = list(design.initial_cells(ad, replicates))
    points: dict[int, fits.Replicates] = {}

    def add(n: int) -> None:
        new = test.cells(float(truth.law(n)), 1)
        old = points.get(n)
        points[n] = new if old is None else fits.Replicates(np.append(old.values, new.values),
                                                            np.vstack([old.draws, new.draws]))

    for n in cells:
        add(n)
    while True:
        rnd = design.choose(design.Curve(points, base), ad, cells, batch)
        if rnd.stop:
            return len(cells), rnd, rnd.stop
        for c in rnd.choices:
            cells.append(c.size)
            if c.size == design.BASELINE:  # one more evaluation of the init weights
                new = test.cells(truth.baseline, 1)
                base = fits.Replicates(np.append(base.values, new.values), np.vstack([base.draws, new.draws]))
            else:
                add(c.size)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=100)
    ap.add_argument("--grid-sizes", type=int, default=8)
    ap.add_argument("--replicates", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--initial", type=int, default=3, help="adaptive.initial")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline-replicates", type=int, default=None,
                    help="evaluations of the init weights in both arms (default: --replicates)")
    args = ap.parse_args()
    sizes = tuple(int(n) for n in np.rint(np.geomspace(MIN, MAX, args.grid_sizes)))
    grid_cells = len(sizes) * args.replicates
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}; "
          f"{args.studies} studies, sizes {MIN:,}..{MAX:,}, grid {len(sizes)} sizes x {args.replicates} "
          f"replicates = {grid_cells} cells, design batch {args.batch}")
    rng = np.random.default_rng(args.seed)
    used: list[int] = []
    hit_design = hit_grid = reached = unbounded = 0
    started = time.perf_counter()
    for i in range(args.studies):
        truth = truth_for(sizes, rng)
        true_n = truth.crossover(sizes, 10.0)
        test = TestSet(rng)
        base = test.cells(truth.baseline, args.baseline_replicates or args.replicates)
        grid = fits.fit_curve(sizes, [test.cells(float(truth.law(n)), args.replicates) for n in sizes], base)
        bar = design.target_interval(grid, design.DesignTarget.CROSSOVER)
        if not math.isfinite(bar.width) or bar.width > 10.0:
            unbounded += 1  # the grid pins no crossover (some draws never cross): no width to reach
            continue
        hit_grid += covered(grid.crossover.ci95, true_n)
        ad = AdaptiveSpec(min=MIN, max=MAX, initial=args.initial, max_cells=grid_cells, relative_width=max(bar.width, 1e-6))
        n_cells, last, stop = run_design(truth, test, ad, args.replicates, args.batch, base)
        used.append(n_cells)
        reached += stop == design.Stop.TARGET_REACHED
        iv = last.current
        hit_design += covered((iv.low, iv.high) if iv.low is not None else None, true_n)
        if (i + 1) % 25 == 0:
            print(f"  {i + 1:>4} studies: mean cells {np.mean(used):.2f}/{grid_cells}, {time.perf_counter() - started:.0f} s",
                  flush=True)
    k = len(used)
    ratio = float(np.mean(used)) / grid_cells
    print(f"grid CI unbounded (some draws never cross) in {unbounded}/{args.studies} studies: left out, no width to reach")
    print(f"of the other {k}: design reached the grid's CI width in {reached}; cells median {np.median(used):.0f}, "
          f"mean {np.mean(used):.2f} of {grid_cells} (a design that ran out of budget counts all {grid_cells})")
    print(f"coverage of the true crossover: design {hit_design / k:.3f}, grid {hit_grid / k:.3f}")
    print(f"adaptive cells/grid cells = {ratio:.2f} at equal crossover CI; coverage = {hit_design / k:.3f}")


if __name__ == "__main__":
    main()
