"""Turn cell results into the status's curves, fits and best encoder. Pure (reading result.json is
the handlers' job). Only each task's headline metric goes into the status, so it stays bounded
whatever the grid; every metric stays in the cells' result.json files and the results artifact.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

from radscale.cells import CellResult
from radscale.operator import api, fits

N_BOOT = 1000


def curves(spec: api.ScalingStudySpec, cells: Sequence[api.CellStatus],
           results: Mapping[str, CellResult]) -> api.Curves:
    """task -> headline metric -> encoder -> [[size, value, ciLow, ciHigh], ...] sorted by size."""
    out: api.Curves = {}
    for cs in cells:
        res = results.get(cs.name)
        if res is None:
            continue
        for task in spec.evaluation.tasks:
            tr = res.evaluate.get(task.name)
            if tr is None or task.headline_metric not in tr.metrics:
                continue
            mv = tr.metrics[task.headline_metric]
            point = [float(cs.size), mv.value, mv.ci_low if mv.ci_low is not None else mv.value,
                     mv.ci_high if mv.ci_high is not None else mv.value]
            out.setdefault(task.name, {}).setdefault(task.headline_metric, {}).setdefault(cs.encoder, []).append(point)
    for by_metric in out.values():
        for by_encoder in by_metric.values():
            for pts in by_encoder.values():
                pts.sort(key=lambda p: p[0])
    return out


@functools.lru_cache(maxsize=4096)
def _fit(metric: str, points: tuple[tuple[float, ...], ...]) -> fits.Fit | None:
    """The fit of one curve. Deterministic (seeded bootstrap), so cached by the curve's points: an
    operator pass refits only the curves whose results changed."""
    base = next((p for p in points if p[0] == 0), None)
    grid = [p for p in points if p[0] > 0]
    if len({p[0] for p in grid}) < fits.MIN_SIZES:
        return None
    try:
        return fits.fit_power_law(
            [p[0] for p in grid], [fits.to_error(metric, p[1]) for p in grid],
            sigmas=[fits.sigma_from_ci(p[2], p[3]) or None for p in grid],
            baseline_error=fits.to_error(metric, base[1]) if base else None,
            baseline_sigma=fits.sigma_from_ci(base[2], base[3]) if base else None, n_boot=N_BOOT)
    except fits.FitError:
        return None


def fit_curves(data: api.Curves) -> list[api.FitStatus]:
    """A power law per encoder x task x headline metric with >= 3 pretrained sizes."""
    out = []
    for task, by_metric in sorted(data.items()):
        for metric, by_encoder in sorted(by_metric.items()):
            for encoder, pts in sorted(by_encoder.items()):
                f = _fit(metric, tuple(tuple(p) for p in pts))
                if f is None:
                    continue
                out.append(api.FitStatus(
                    encoder=encoder, task=task, metric=metric, a=f.law.a, b=f.law.b, c=f.law.c, r2=f.r2,
                    ci95={k: api.Interval(low=lo, high=hi) for k, (lo, hi) in f.ci95.items()},
                    crossover_size=f.crossover,
                    crossover_ci95=api.Interval(low=f.crossover_ci95[0], high=f.crossover_ci95[1])
                    if f.crossover_ci95 else None))
    return out


def best_encoder(data: api.Curves) -> str | None:
    """Lowest mean error over tasks at the largest size that every encoder has reached."""
    per_encoder: dict[str, dict[str, dict[float, float]]] = {}
    for task, by_metric in data.items():
        for metric, by_encoder in by_metric.items():
            for encoder, pts in by_encoder.items():
                per_encoder.setdefault(encoder, {})[task] = {p[0]: fits.to_error(metric, p[1]) for p in pts}
    if not per_encoder:
        return None
    common = set.intersection(*({s for t in tasks.values() for s in t} for tasks in per_encoder.values()))
    common.discard(0.0)
    if not common:
        return None
    size = max(common)
    scores = {e: sum(t[size] for t in tasks.values() if size in t) / len(tasks) for e, tasks in per_encoder.items()}
    return min(scores, key=scores.__getitem__)


def summarise(spec: api.ScalingStudySpec, cells: Sequence[api.CellStatus],
              results: Mapping[str, CellResult]) -> tuple[api.Curves, list[api.FitStatus], str | None]:
    data = curves(spec, cells, results)
    return data, fit_curves(data), best_encoder(data)
