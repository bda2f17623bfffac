"""Adaptive design against the fixed log grid, on simulated studies with a known truth.

    .venv/bin/python bench/adaptive.py [--studies 400] [--grid-sizes 8] [--replicates 2] [--batch 1]
        [--baseline-evals B] [--policy design|oracle|random] [--target crossover|exponent|errorAtMax]

Each study draws a ground-truth law and a baseline it crosses inside [min, max] (the paper's
30k..3.5M), and one shared test set, from ``bench/fit_coverage.py``'s simulator: run-to-run sd
0.02 per cell (baseline evaluations too), test-set sd 0.01 shared by every cell, cell x patient sd
0.004. Then:

- the grid: ``--grid-sizes`` log-spaced sizes x ``--replicates`` cells (16 by default), fitted as
  the status does;
- the design: :func:`radscale.operator.design.choose` from ``initial`` (3) log-spaced sizes x
  replicates, ``--batch`` cells a round, drawn from the same simulator, up to as many cells as the
  grid. A baseline evaluation the design asks for counts as a cell, though it trains nothing.

(a) Cells at equal crossover CI: the fewest cells k at which the design's median relative CI width
(high/low - 1) over the studies is at most the grid's median width. Medians, because a study's
width is unbounded whenever a few draws never cross. (b) Coverage: the share of studies whose
design interval at k holds the true crossover. Also printed: the same per study (the design stops
as soon as its own width reaches that study's grid width, and counts the budget if it never does).
The last line is ``adaptive cells/grid cells = ... at equal crossover CI; coverage = ...``.

Controls: ``--baseline-evals B`` gives the grid and the design B baseline evaluations from the start
(counted for neither; the design may still add some up to 8, counted), which separates choosing sizes
from evaluating the baseline more often. ``--policy oracle`` puts every added cell at the candidate
nearest the true crossover; ``random`` at uniformly drawn candidates. ``--target`` compares another
target's interval (relative width) instead of the crossover's.
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

from fit_coverage import TestSet, Truth, covered, truth_for

from radscale.operator import design, fits
from radscale.spec import AdaptiveSpec

MIN, MAX = 30_000, 3_500_000  # the paper's range


class Study:
    """One simulated study: its truth, its test set, and the cells measured so far."""

    def __init__(self, rng: np.random.Generator, sizes: tuple[int, ...], replicates: int, baseline_evals: int = 0):
        self.truth: Truth = truth_for(sizes, rng)
        self.test = TestSet(rng)
        self.base = self.test.cells(self.truth.baseline, baseline_evals or replicates)
        self.points: dict[int, fits.Replicates] = {}

    def add(self, n: int) -> None:
        new = self.test.cells(float(self.truth.baseline if n == design.BASELINE else self.truth.law(n)), 1)
        old = self.base if n == design.BASELINE else self.points.get(n)
        merged = new if old is None else fits.Replicates(np.append(old.values, new.values),
                                                         np.vstack([old.draws, new.draws]))
        if n == design.BASELINE:
            self.base = merged
        else:
            self.points[n] = merged

    def curve(self) -> design.Curve:
        return design.Curve(self.points, self.base)


def run_design(study: Study, ad: AdaptiveSpec, replicates: int, batch: int, policy: str = "design",
               rng: np.random.Generator | None = None) -> list[design.Interval]:
    """Run a design to its stop; the target's interval after each cell count (index = cells)."""
    cells = list(design.initial_cells(ad, replicates))
    for n in cells:
        study.add(n)
    widths: list[design.Interval] = [design.Interval(None, None, None)] * len(cells)
    while True:
        rnd = design.choose(study.curve(), ad, cells, batch)
        widths.append(rnd.current)
        if rnd.stop:
            return widths
        picks = [c.size for c in rnd.choices]
        if policy == "oracle":  # the control: every cell where the truth crosses (nearest candidate)
            grid = np.asarray(design.candidates(ad), dtype=float)
            true_n = study.truth.crossover(tuple(grid), 10.0)
            true_n = float(np.clip(true_n, grid[0], grid[-1])) if math.isfinite(true_n) else grid[-1]
            picks = [int(grid[np.argmin(np.abs(np.log(grid / true_n)))]) for _ in picks]
        if policy == "random":  # the control: the same budget on uniformly drawn candidates
            picks = [int(rng.choice(design.candidates(ad))) for _ in picks]
        for n in picks:
            cells.append(n)
            study.add(n)
        widths.extend([widths[-1]] * (len(picks) - 1))


def simulate_design(seed: int, budget: int = 10, policy: str = "design", replicates: int = 2) -> float:
    """The crossover CI width one simulated study ends with after ``budget`` cells."""
    rng = np.random.default_rng(seed)
    sizes = tuple(int(n) for n in np.rint(np.geomspace(MIN, MAX, 8)))
    study = Study(rng, sizes, replicates)
    ad = AdaptiveSpec(min=MIN, max=MAX, max_cells=budget, relative_width=1e-6)
    return run_design(study, ad, replicates, 1, policy, rng)[-1].width


def true_value(truth: Truth, target: design.DesignTarget, crossover: float) -> float:
    """What the target's interval should hold: the crossover, the exponent b, or the error at max."""
    if target is design.DesignTarget.CROSSOVER:
        return crossover
    return truth.law.b if target is design.DesignTarget.EXPONENT else float(truth.law(MAX))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=400)
    ap.add_argument("--grid-sizes", type=int, default=8)
    ap.add_argument("--replicates", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--initial", type=int, default=3, help="adaptive.initial")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--baseline-evals", type=int, default=0,
                    help="baseline evaluations both start with, counted for neither (0: --replicates, counted)")
    ap.add_argument("--policy", choices=("design", "oracle", "random"), default="design")
    ap.add_argument("--target", choices=[t.value for t in design.DesignTarget], default="crossover")
    args = ap.parse_args()
    sizes = tuple(int(n) for n in np.rint(np.geomspace(MIN, MAX, args.grid_sizes)))
    budget = len(sizes) * args.replicates
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}; "
          f"{args.studies} studies, sizes {MIN:,}..{MAX:,}; grid {len(sizes)} sizes x {args.replicates} replicates "
          f"= {budget} cells; design initial {args.initial}, batch {args.batch}, policy {args.policy}, "
          f"target {args.target}, baseline evaluations {args.baseline_evals or args.replicates}")
    target = design.DesignTarget(args.target)
    rng = np.random.default_rng(args.seed)
    grid_w, grid_hit, truths = [], [], []
    runs: list[list[design.Interval]] = []
    per_study: list[int] = []
    started = time.perf_counter()
    for i in range(args.studies):
        study = Study(rng, sizes, args.replicates, args.baseline_evals)
        true_n = study.truth.crossover(sizes, 10.0)
        truths.append(true_value(study.truth, target, true_n))
        grid = fits.fit_curve(sizes, [study.test.cells(float(study.truth.law(n)), args.replicates) for n in sizes],
                              study.base, predict_at=float(MAX))
        bar = design.target_interval(grid, target)
        grid_w.append(bar.width)
        grid_hit.append(covered((bar.low, bar.high) if bar.low is not None else None, truths[-1]))
        ad = AdaptiveSpec(min=MIN, max=MAX, initial=args.initial, max_cells=budget, relative_width=1e-6,
                          target=target)
        ivs = run_design(study, ad, args.replicates, args.batch, args.policy, rng)
        runs.append(ivs)
        reach = next((k for k, iv in enumerate(ivs) if iv.width <= bar.width), None)
        if math.isfinite(bar.width):
            per_study.append(reach if reach is not None else budget)
        if (i + 1) % 100 == 0:
            print(f"  {i + 1:>4} studies, {time.perf_counter() - started:.0f} s", flush=True)
    grid_median = float(np.median(grid_w))
    scale = "high/low - 1" if target is design.DesignTarget.CROSSOVER else "(high - low) / value"
    print(f"grid: median {args.target} CI width {grid_median:.2f} ({scale}), coverage {np.mean(grid_hit):.3f}")
    print(f"{'cells':>5} {'median width':>13} {'coverage':>9}")
    at, cov_at = None, None
    for k in range(args.initial * args.replicates, budget + 1):
        ivs = [r[min(k, len(r) - 1)] for r in runs]
        med = float(np.median([iv.width for iv in ivs]))
        cov = float(np.mean([covered((iv.low, iv.high) if iv.low is not None else None, t)
                             for iv, t in zip(ivs, truths, strict=True)]))
        print(f"{k:>5} {med:>13.2f} {cov:>9.3f}")
        if at is None and med <= grid_median:
            at, cov_at = k, cov
    print(f"per study (grid CI bounded in {len(per_study)}/{args.studies}): cells to reach that study's grid width "
          f"median {np.median(per_study):.0f}, mean {np.mean(per_study):.2f} of {budget}")
    if at is None:
        print(f"adaptive cells/grid cells = >1 at equal {args.target} CI; coverage = {cov:.3f}")
    else:
        print(f"adaptive cells/grid cells = {at / budget:.2f} at equal {args.target} CI; coverage = {cov_at:.3f}")


if __name__ == "__main__":
    main()
