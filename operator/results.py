"""Turn cell results into the status's curves, fits and best encoder per task. Pure (reading
result.json is the handlers' job). Only each task's headline metric goes into the status, so it
stays bounded whatever the grid or the number of replicates: a curve's point is the mean over
replicates with a 95% CI; every metric, draw and per-example score stays in the artifact store.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence

import numpy as np

from radscale.cells import CellResult
from radscale.operator import api, fits

N_BOOT = 1000


# one cell: full-test value, its shared test-set draws, and its test-set sd (from its CI) for results without draws
Point = tuple[float, tuple[float, ...] | None, float | None]
Gathered = dict[tuple[str, str, str], dict[int, list[Point]]]  # (task, metric, encoder) -> size -> cells


def gather(spec: api.ScalingStudySpec, cells: Sequence[api.CellStatus],
           results: Mapping[str, CellResult]) -> Gathered:
    """Each task's headline metric of every cell with a result, grouped by curve and size (size 0 is
    the baseline); replicates of one size are the list's entries, in replicate order."""
    out: Gathered = {}
    for cs in sorted(cells, key=lambda c: (c.encoder, c.size, c.replicate)):
        res = results.get(cs.name)
        if res is None:
            continue
        for task in spec.evaluation.tasks:
            tr = res.evaluate.get(task.name)
            metric = task.headline_metric
            if tr is None or metric not in tr.metrics:
                continue
            draws = tr.draws.get(metric)
            mv = tr.metrics[metric]
            point = (mv.value, tuple(math.nan if d is None else float(d) for d in draws) if draws else None,
                     fits.sigma_from_ci(mv.ci_low, mv.ci_high))
            out.setdefault((task.name, metric, cs.encoder), {}).setdefault(cs.size, []).append(point)
    return out


def replicates(metric: str, cells: Sequence[Point]) -> fits.Replicates:
    """One size's cells on the error scale."""
    values = [fits.to_error(metric, v) for v, _, _ in cells]
    draws = None if any(d is None for _, d, _ in cells) else [fits.to_error(metric, np.asarray(d)) for _, d, _ in cells]
    return fits.Replicates.of(values, draws, [s for _, _, s in cells])


@functools.lru_cache(maxsize=4096)
def _analyse(metric: str, by_size: tuple[tuple[int, tuple[Point, ...]], ...], method: str, min_r2: float,
             max_extrapolation: float) -> tuple[list[list[float]], fits.Fit | None]:
    """One curve: its points [[size, mean, ciLow, ciHigh]] on the metric's scale (CIs from the same
    bootstrap as the fit: replicates and the shared test set) and its fit (None below 3 sizes).
    Deterministic (seeded), so cached by the curve's cells: a pass refits only curves that changed."""
    sizes = [n for n, _ in by_size]
    reps = [replicates(metric, cells) for _, cells in by_size]
    boot = fits.resample(reps, N_BOOT, np.random.default_rng(0))
    means = np.array([r.mean for r in reps])
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
    points = []
    for n, m, a, b in zip(sizes, means, lo, hi, strict=True):
        v, x, y = (float(fits.from_error(metric, e)) for e in (m, a, b))
        points.append([float(n), v, min(x, y), max(x, y)])
    grid = [(n, r) for n, r in zip(sizes, reps, strict=True) if n > 0]
    base = next((r for n, r in zip(sizes, reps, strict=True) if n == 0), None)
    if len(grid) < fits.MIN_SIZES:
        return points, None
    try:
        fit = fits.fit_curve([n for n, _ in grid], [r for _, r in grid], base, method=method, min_r2=min_r2,
                             max_extrapolation=max_extrapolation, n_boot=N_BOOT)
    except fits.FitError:
        return points, None
    return points, fit


def _fit_status(task: str, metric: str, encoder: str, f: fits.Fit) -> api.FitStatus:
    cross = f.crossover
    law = f.law
    return api.FitStatus(
        encoder=encoder, task=task, metric=metric, fitted=law is not None, lack_of_fit=f.lack_of_fit,
        method=f.method, a=law.a if law else None, b=law.b if law else None, c=law.c if law else None,
        ci95={k: api.Interval(low=lo, high=hi) for k, (lo, hi) in f.ci95.items()}, r2=f.r2,
        replicates=f.replicates, draws=f.n_boot,
        crossover=api.Crossover(
            outcome=api.CrossoverOutcome(cross.outcome.value), size=cross.size,
            ci95=api.Interval(low=cross.ci95[0], high=cross.ci95[1]) if cross.ci95 else None,
            share=cross.share, extrapolated=cross.extrapolated))


def analyse(spec: api.ScalingStudySpec, cells: Sequence[api.CellStatus],
            results: Mapping[str, CellResult]) -> tuple[api.Curves, list[api.FitStatus]]:
    """The status's curves (task -> metric -> encoder -> points) and a fit per curve with >= 3 sizes."""
    curves: api.Curves = {}
    out: list[api.FitStatus] = []
    an = spec.analysis
    for (task, metric, encoder), by_size in sorted(gather(spec, cells, results).items()):
        key = tuple((n, tuple(pts)) for n, pts in sorted(by_size.items()))
        points, fit = _analyse(metric, key, an.fit, an.min_r2, an.max_extrapolation)
        curves.setdefault(task, {}).setdefault(metric, {})[encoder] = points
        if fit is not None:
            out.append(_fit_status(task, metric, encoder, fit))
    return curves, out


def best_per_task(data: api.Curves) -> list[api.BestEncoder]:
    """Per task: the encoder with the lowest error at the largest size every encoder has reached;
    a tie with each encoder whose 95% CI overlaps the best one's."""
    out = []
    for task, by_metric in sorted(data.items()):
        for metric, by_encoder in sorted(by_metric.items()):
            at = {e: {int(p[0]): p for p in pts if p[0] > 0} for e, pts in by_encoder.items()}
            common = set.intersection(*(set(v) for v in at.values())) if at else set()
            if len(at) < 2 or not common:
                continue
            size = max(common)
            # error-scale (value, low, high) so that lower is better for every metric
            err = {e: sorted(fits.to_error(metric, x) for x in v[size][1:4]) for e, v in at.items()}
            best = min(err, key=lambda e: err[e][1])
            tied = sorted(e for e in err if e != best and err[e][0] <= err[best][2])
            out.append(api.BestEncoder(task=task, metric=metric, size=size, encoder=None if tied else best,
                                       tied=[best, *tied] if tied else []))
    return out


def best_overall(per_task: Sequence[api.BestEncoder]) -> str | None:
    """The encoder best (untied) on the most tasks; 'tie' when two share the most; None without wins."""
    wins: dict[str, int] = {}
    for b in per_task:
        if b.encoder:
            wins[b.encoder] = wins.get(b.encoder, 0) + 1
    if not wins:
        return "tie" if per_task else None
    top = max(wins.values())
    leaders = [e for e, w in wins.items() if w == top]
    return leaders[0] if len(leaders) == 1 else "tie"


def summarise(spec: api.ScalingStudySpec, cells: Sequence[api.CellStatus],
              results: Mapping[str, CellResult]) -> tuple[api.Curves, list[api.FitStatus], list[api.BestEncoder]]:
    data, fitted = analyse(spec, cells, results)
    return data, fitted, best_per_task(data)


def _size(n: float) -> str:
    return f"{n:,.0f}"


def crossover_text(c: api.Crossover) -> str:
    """The crossover as a claim: never a number below the smallest measured size, extrapolation
    flagged, an unbounded upper limit as such."""
    ci = ""
    if c.ci95 is not None and c.ci95.high == c.ci95.low:  # every plausible draw agrees: say how many
        ci = f" ({c.share.get(c.outcome.value, 0):.0%} of draws)"
    elif c.ci95 is not None:
        ci = f" [{_size(c.ci95.low)}, {'unbounded' if c.ci95.high is None else _size(c.ci95.high)}]"
    if c.outcome is api.CrossoverOutcome.MEASURED:
        return f"{_size(c.size)}{ci}"
    if c.outcome is api.CrossoverOutcome.BELOW_SMALLEST:
        return f"≤ {_size(c.size)} (smallest size){ci}"
    if c.outcome is api.CrossoverOutcome.EXTRAPOLATED:
        return f"{_size(c.size)} EXTRAPOLATED{ci}"
    if c.outcome is api.CrossoverOutcome.NOT_REACHED:
        return f"not reached{ci}"
    return "no baseline"
