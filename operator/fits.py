"""Scaling-law fits: ``err(N) = a * N^(-b) + c`` with bootstrap CIs and the baseline crossover.

Pure (numpy/scipy, no I/O). Score metrics (AUROC, Dice, BLEU, ...) are fitted as errors,
``1 - score``, so every curve falls with N. ``c`` is the irreducible error, ``b`` the exponent.

Uncertainty is a parametric bootstrap: each replicate redraws every point from its own
standard error (taken from the point's 95% CI, as the evaluation's test-set bootstrap reports
it) or, where points carry no CI, resamples the fit's residuals. Each replicate is refitted;
the 2.5/97.5 percentiles give the CIs of a, b, c and of the crossover size: the smallest N at
which the fitted curve beats the encoder's own baseline (its init weights, evaluated as N = 0).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

MIN_SIZES = 3
HIGHER_IS_BETTER = frozenset({"auroc", "auprc", "dice", "cldice", "bleu4", "rougeL", "clinicalF1", "accuracy"})
Z95 = 1.959963984540054


class FitError(ValueError):
    """The points cannot support a fit (too few sizes, non-finite values)."""


def to_error(metric: str, value: float) -> float:
    """Error to fit: 1 - score for scores, the value itself for losses."""
    return 1.0 - value if metric in HIGHER_IS_BETTER else value


def sigma_from_ci(low: float | None, high: float | None) -> float | None:
    """Standard error from a symmetric-ish 95% interval."""
    if low is None or high is None or not math.isfinite(low) or not math.isfinite(high):
        return None
    return abs(high - low) / (2 * Z95)


@dataclasses.dataclass(frozen=True)
class PowerLaw:
    a: float
    b: float
    c: float

    def __call__(self, n: np.ndarray | float) -> np.ndarray | float:
        return self.a * np.power(n, -self.b) + self.c

    def crossover(self, baseline_error: float) -> float | None:
        """Smallest N with err(N) < baseline_error; None if the curve never gets there."""
        if baseline_error <= self.c or self.a <= 0 or self.b <= 0:
            return None
        return float((self.a / (baseline_error - self.c)) ** (1.0 / self.b))


@dataclasses.dataclass(frozen=True)
class Fit:
    law: PowerLaw
    r2: float
    ci95: dict[str, tuple[float, float]]
    crossover: float | None
    # (low, high); high None means some replicates never cross (unbounded above).
    crossover_ci95: tuple[float, float | None] | None
    n_boot: int


def _model(x: np.ndarray, amp: float, b: float, c: float) -> np.ndarray:
    return amp * np.power(x, -b) + c


def _fit_once(
    x: np.ndarray, y: np.ndarray, start: tuple[float, float, float] | None = None
) -> tuple[float, float, float] | None:
    """Least squares in scaled sizes; several starts (or one warm start), best SSE wins."""
    hi_c = max(float(np.max(y)), 1e-12)
    c0 = 0.5 * max(float(np.min(y)), 0.0)
    starts = [start] if start else [(max(float(np.max(y)) - c0, 1e-6), b0, c0) for b0 in (0.1, 0.3, 0.6, 1.0, 2.0)]
    best, best_sse = None, math.inf
    for p0 in starts:
        p0 = (p0[0], p0[1], min(max(p0[2], 0.0), hi_c * 0.999))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                params, _ = curve_fit(_model, x, y, p0=p0, bounds=([0.0, 0.0, 0.0], [np.inf, 5.0, hi_c]),
                                      maxfev=20000)
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((_model(x, *params) - y) ** 2))
        if sse < best_sse:
            best, best_sse = tuple(float(p) for p in params), sse
    return best


def fit_power_law(
    sizes: Sequence[float],
    errors: Sequence[float],
    *,
    sigmas: Sequence[float | None] | None = None,
    baseline_error: float | None = None,
    baseline_sigma: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> Fit:
    """Fit err(N) = a N^-b + c to (size, error) points; see the module doc for the CIs."""
    n = np.asarray(sizes, dtype=float)
    y = np.asarray(errors, dtype=float)
    if n.shape != y.shape:
        raise FitError(f"{len(n)} sizes but {len(y)} values")
    if len(set(n.tolist())) < MIN_SIZES:
        raise FitError(f"a scaling law needs at least {MIN_SIZES} distinct data sizes, got {len(set(n.tolist()))}; "
                       "add sizes to the study")
    if not (np.all(np.isfinite(n)) and np.all(np.isfinite(y))) or np.any(n <= 0):
        raise FitError("sizes must be positive and values finite")

    scale = float(np.exp(np.mean(np.log(n))))  # fit in N / geometric-mean(N) for conditioning
    x = n / scale
    params = _fit_once(x, y)
    if params is None:
        raise FitError("least squares did not converge for any starting point")
    amp, b, c = params
    law = PowerLaw(a=amp * scale**b, b=b, c=c)
    fitted = _model(x, *params)
    ss_res = float(np.sum((y - fitted) ** 2))
    ss_tot = float(np.sum((y - np.mean(y)) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    crossover = law.crossover(baseline_error) if baseline_error is not None else None

    # Per-point noise: the points' own CIs where known, else the residual scale.
    dof = len(y) - 3
    resid_sd = math.sqrt(ss_res / dof) if dof > 0 else 0.0
    sd = np.array([s if s is not None else resid_sd for s in (sigmas or [None] * len(y))], dtype=float)
    if not np.any(sd > 0):
        # No CIs and no degrees of freedom: nothing to resample; report the fit without intervals.
        return Fit(law, r2, {}, crossover, None, 0)

    rng = np.random.default_rng(seed)
    draws, crosses = [], []
    for _ in range(n_boot):
        y_star = fitted + rng.normal(0.0, 1.0, size=len(y)) * sd
        p_star = _fit_once(x, y_star, start=params) or _fit_once(x, y_star)
        if p_star is None:
            continue
        law_star = PowerLaw(p_star[0] * scale ** p_star[1], p_star[1], p_star[2])
        draws.append((law_star.a, law_star.b, law_star.c))
        if baseline_error is not None:
            e0 = baseline_error + (rng.normal() * baseline_sigma if baseline_sigma else 0.0)
            cross = law_star.crossover(e0)
            crosses.append(math.inf if cross is None else cross)
    arr = np.asarray(draws)
    ci = {k: (float(np.percentile(arr[:, i], 2.5)), float(np.percentile(arr[:, i], 97.5)))
          for i, k in enumerate("abc")}
    cross_ci = None
    if crosses:
        lo, hi = np.percentile(np.asarray(crosses), [2.5, 97.5])
        cross_ci = (float(lo), float(hi) if math.isfinite(hi) else None) if math.isfinite(lo) else None
    return Fit(law, r2, ci, crossover, cross_ci, len(draws))
