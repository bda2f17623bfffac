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
from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize_scalar

MIN_SIZES = 3
MAX_LOG_N = math.log(1e15)  # a crossover beyond 10^15 images is "never"
HIGHER_IS_BETTER = frozenset({"auroc", "auprc", "dice", "cldice", "bleu4", "rougeL", "clinicalF1", "accuracy"})
Z95 = 1.959963984540054


class FitError(ValueError):
    """The points cannot support a fit (too few sizes, non-finite values)."""


def to_error(metric: str, value: float) -> float:
    """Error to fit: 1 - score for scores (all in [0, 1]; BLEU too), the value itself for losses."""
    return 1.0 - value if metric in HIGHER_IS_BETTER else value


def from_error(metric: str, error):  # float or array
    """Inverse of :func:`to_error`: a fitted error back on the metric's scale."""
    return 1.0 - error if metric in HIGHER_IS_BETTER else error


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
        # in logs: a nearly flat curve (b -> 0) puts the crossover beyond any float, i.e. never
        log_n = (math.log(self.a) - math.log(baseline_error - self.c)) / self.b
        return math.exp(log_n) if log_n < MAX_LOG_N else None


@dataclasses.dataclass(frozen=True)
class Fit:
    law: PowerLaw
    r2: float
    ci95: dict[str, tuple[float, float]]
    crossover: float | None
    # (low, high); high None means some replicates never cross (unbounded above).
    crossover_ci95: tuple[float, float | None] | None
    n_boot: int


B_MAX = 5.0
B_COARSE = np.linspace(0.0, B_MAX, 201)[1:]  # step 0.025, then a local grid of step 0.00125
B_LOCAL = np.linspace(-1.0, 1.0, 41) * (B_COARSE[1] - B_COARSE[0])


def _model(x: np.ndarray, amp: float, b: float, c: float) -> np.ndarray:
    return amp * np.power(x, -b) + c


def _profile(x: np.ndarray, ys: np.ndarray, bs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every curve in ``ys`` (R, n) and exponent in ``bs`` (R or 1, G): best amp >= 0, c >= 0, SSE.

    Variable projection: for fixed b the model is linear in (amp, c), so the 2-parameter
    non-negative least squares has a closed form: the interior solution if feasible, else the
    better of the two boundaries (amp = 0 or c = 0). Vectorised over curves and exponents.
    """
    n = x.shape[0]
    phi = np.power(x[None, None, :], -bs[:, :, None])  # (R|1, G, n)
    sp, spp = phi.sum(-1), (phi**2).sum(-1)  # (R|1, G)
    sy, syy = ys.sum(1)[:, None], (ys**2).sum(1)[:, None]  # (R, 1)
    spy = (ys[:, None, :] * phi).sum(-1)  # (R, G)

    def sse(amp: np.ndarray, c: np.ndarray) -> np.ndarray:
        return syy - 2 * amp * spy - 2 * c * sy + amp**2 * spp + 2 * amp * c * sp + n * c**2

    det = n * spp - sp**2
    with np.errstate(divide="ignore", invalid="ignore"):
        amp_i = (n * spy - sp * sy) / det
        c_i = (spp * sy - sp * spy) / det
        amp_b = np.maximum(spy / spp, 0.0)  # boundary c = 0
    c_b = np.broadcast_to(np.maximum(sy / n, 0.0), spy.shape)  # boundary amp = 0
    zero = np.zeros_like(spy)
    feasible = (amp_i >= 0) & (c_i >= 0) & np.isfinite(amp_i)
    e_i = np.where(feasible, sse(amp_i, c_i), np.inf)
    e_c0, e_a0 = sse(amp_b, zero), sse(zero, c_b)
    best = np.argmin(np.stack([e_i, e_c0, e_a0]), axis=0)
    amp = np.choose(best, [np.where(feasible, amp_i, 0.0), amp_b, zero])
    c = np.choose(best, [np.where(feasible, c_i, 0.0), zero, c_b])
    return amp, c, np.maximum(np.choose(best, [e_i, e_c0, e_a0]), 0.0)


def _best(x: np.ndarray, ys: np.ndarray, bs: np.ndarray) -> np.ndarray:
    amp, c, err = _profile(x, ys, bs)
    j = np.argmin(err, axis=1)
    rows = np.arange(ys.shape[0])
    b = np.broadcast_to(bs, err.shape)[rows, j]
    return np.stack([amp[rows, j], b, c[rows, j]], axis=1)


def _fit_many(x: np.ndarray, ys: np.ndarray, chunk: int = 256) -> np.ndarray:
    """(R, 3) array of (amp, b, c) per curve: a coarse grid in b, then a fine local grid per curve."""
    out = np.empty((ys.shape[0], 3))
    for lo in range(0, ys.shape[0], chunk):
        part = ys[lo : lo + chunk]
        coarse = _best(x, part, B_COARSE[None, :])
        local = np.clip(coarse[:, 1:2] + B_LOCAL[None, :], 1e-6, B_MAX)
        out[lo : lo + chunk] = _best(x, part, local)
    return out


def _fit_once(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """The point estimate: grid search, then Brent on the bracketing grid cells."""
    amp0, b0, c0 = _fit_many(x, y[None, :])[0]
    step = B_LOCAL[1] - B_LOCAL[0]

    def loss(b: float) -> float:
        return float(_profile(x, y[None, :], np.array([[b]]))[2][0, 0])

    res = minimize_scalar(loss, bounds=(max(b0 - step, 1e-6), min(b0 + step, B_MAX)), method="bounded",
                          options={"xatol": 1e-9})
    if res.success and res.fun <= loss(b0):
        amp, c, _ = _profile(x, y[None, :], np.array([[res.x]]))
        return float(amp[0, 0]), float(res.x), float(c[0, 0])
    return float(amp0), float(b0), float(c0)


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
    if n_boot <= 0 or not np.any(sd > 0):
        # No CIs and no degrees of freedom: nothing to resample; report the fit without intervals.
        return Fit(law, r2, {}, crossover, None, 0)

    rng = np.random.default_rng(seed)
    y_star = fitted[None, :] + rng.normal(0.0, 1.0, size=(n_boot, len(y))) * sd[None, :]
    draws = _fit_many(x, y_star)
    draws[:, 0] *= np.power(scale, draws[:, 1])  # amp -> a in images
    ci = {k: (float(np.percentile(draws[:, i], 2.5)), float(np.percentile(draws[:, i], 97.5)))
          for i, k in enumerate("abc")}
    crosses: list[float] = []
    if baseline_error is not None:
        e0 = baseline_error + (rng.normal(size=n_boot) * baseline_sigma if baseline_sigma else 0.0)
        for (a_s, b_s, c_s), e in zip(draws, np.broadcast_to(e0, (n_boot,)), strict=True):
            cross = PowerLaw(float(a_s), float(b_s), float(c_s)).crossover(float(e))
            crosses.append(math.inf if cross is None else cross)
    cross_ci = None
    if crosses:
        capped = np.minimum(np.asarray(crosses), np.finfo(float).max)  # inf: never crosses
        lo, hi = np.percentile(capped, [2.5, 97.5])
        lo, hi = (math.inf if v >= np.finfo(float).max else v for v in (lo, hi))
        cross_ci = (float(lo), float(hi) if math.isfinite(hi) else None) if math.isfinite(lo) else None
    return Fit(law, r2, ci, crossover, cross_ci, n_boot)
