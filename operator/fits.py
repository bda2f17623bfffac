"""Scaling-law fits: ``err(N) = a * N^(-b) + c``, bootstrap CIs from what varies, a typed crossover.

Pure (numpy/scipy, no I/O). Score metrics (AUROC, Dice, BLEU, ...) are fitted as errors,
``1 - score``, so every curve falls with N. ``c`` is the irreducible error, ``b`` the exponent.

What a point is made of. Each size N has R replicate cells (own seeds; same split and subset)
and every cell is scored on one shared test split. A cell brings its value on the full test
split and its values in ``TEST_DRAWS`` resamples of the test patients, where resample ``i`` is
the same set of patients in every cell (:class:`Replicates`). Two things vary:

- run to run: seen between replicates of one size;
- the test set: every cell shares it, so its noise is correlated across the curve and with
  the baseline. Resample ``i`` moves every cell at once, as a new test set would.

Bootstrap draw ``i`` (:func:`resample`): at each size, R replicates drawn with replacement
(their spread inflated by sqrt(R/(R-1)), the bootstrap's small-sample variance bias), each
moved by its own deviation in test resample ``i``; the baseline the same way. Each draw is
refitted; the 2.5/97.5 percentiles give the CIs of a, b, c and of the crossover. With one
replicate, run-to-run variation is invisible and the intervals cover only the test set:
``bench/fit_coverage.py`` measures what that costs.

Fits (:func:`fit_many`): ``varpro`` is least squares by variable projection (for fixed b the
model is linear in a and c: closed-form non-negative LS, then a grid and Brent over b);
``huber`` minimises a Huber loss on log residuals (Chinchilla's approach 3) by iteratively
reweighted variable projection: the first pass's global b grid serves as the multiple starts,
each reweighting then searches a window around its exponent.

Lack of fit: an exponent at its bound, a flat law (a = 0) or R² below ``min_r2`` is "no law
fitted" with the reason; the crossover then interpolates the measured points and never
extrapolates. The crossover (:class:`CrossoverOutcome`) is computed in every draw and is never
a number below the smallest measured size.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize_scalar

from radscale.tasks import HIGHER_IS_BETTER

MIN_SIZES = 3
Z95 = 1.959963984540054
B_MAX = 5.0
B_MIN = 1e-6
B_FLAT = 0.01  # below this, 10x the data removes < 2.3% of the reducible error: no scaling to speak of
HUBER_DELTA = 1e-3  # Chinchilla's delta, on log residuals
HUBER_ITERATIONS = 8
METHODS = ("varpro", "huber")


class FitError(ValueError):
    """The points cannot support a fit (too few sizes, non-finite values)."""


class CrossoverOutcome(enum.StrEnum):
    MEASURED = "measured"
    BELOW_SMALLEST = "belowSmallest"
    EXTRAPOLATED = "extrapolated"
    NOT_REACHED = "notReached"
    NO_BASELINE = "noBaseline"


def sigma_from_ci(low: float | None, high: float | None) -> float | None:
    """Standard error from a 95% interval."""
    if low is None or high is None or not math.isfinite(low) or not math.isfinite(high):
        return None
    return abs(high - low) / (2 * Z95)


def to_error(metric: str, value):  # float or array
    """Error to fit: 1 - score for scores (all in [0, 1]; BLEU too), the value itself for losses."""
    return 1.0 - value if metric in HIGHER_IS_BETTER else value


def from_error(metric: str, error):  # float or array
    """Inverse of :func:`to_error`: a fitted error back on the metric's scale."""
    return 1.0 - error if metric in HIGHER_IS_BETTER else error


@dataclasses.dataclass(frozen=True)
class PowerLaw:
    a: float
    b: float
    c: float

    def __call__(self, n: np.ndarray | float) -> np.ndarray | float:
        return self.a * np.power(n, -self.b) + self.c


@dataclasses.dataclass(frozen=True)
class Replicates:
    """The cells of one size, on the error scale: full-test values (R,) and their values in the
    shared test resamples (R, D), NaN where a resample left the metric undefined; ``draws`` None when
    the cells carry no resamples (then only run-to-run variation is resampled)."""

    values: np.ndarray
    draws: np.ndarray | None = None
    sigmas: np.ndarray | None = None  # (R,) test-set sd per cell, for results without draws

    @classmethod
    def of(cls, values: Sequence[float], draws: Sequence[Sequence[float | None]] | None = None,
           sigmas: Sequence[float | None] | None = None) -> Replicates:
        v = np.asarray(values, dtype=float)
        if draws is None or any(d is None or len(d) == 0 for d in draws):
            sd = None if sigmas is None or any(s is None for s in sigmas) else np.asarray(sigmas, dtype=float)
            return cls(v, None, sd)
        width = min(len(d) for d in draws)
        d = np.array([[np.nan if x is None else x for x in row[:width]] for row in draws], dtype=float)
        return cls(v, d)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))


def run_deviations(points: Sequence[Replicates]) -> tuple[np.ndarray, int]:
    """Run-to-run deviations pooled over sizes, and their degrees of freedom: each replicate minus
    its size's mean, times sqrt(R/(R-1)) so that their spread estimates one run's sd unbiasedly."""
    devs = [(p.values - p.mean) * math.sqrt(len(p.values) / (len(p.values) - 1)) for p in points
            if len(p.values) > 1]
    return (np.concatenate(devs) if devs else np.zeros(0)), sum(len(p.values) - 1 for p in points)


def resample(points: Sequence[Replicates], n_boot: int, rng: np.random.Generator,
             deviations: tuple[np.ndarray, int] | None = None) -> np.ndarray:
    """(n_boot, len(points)) bootstrap draws of the per-size means; see the module doc.

    Run to run: each size's R replicates are drawn from the pooled deviations with replacement,
    and each draw's spread is scaled by sqrt(df / chi2_df): the variance itself is estimated from
    few replicates, and a percentile interval that ignores it covers like z where t is due (with 2
    replicates at 5 sizes, df = 5: t = 2.57 against z = 1.96). Test set: draw ``i`` moves each
    picked cell by its own deviation in test resample ``i mod D``, the same patients at every point
    (baseline included).
    """
    devs, df = deviations if deviations is not None else run_deviations(points)
    scale = np.sqrt(df / rng.chisquare(df, size=n_boot)) if df > 0 and len(devs) else np.zeros(n_boot)
    out = np.empty((n_boot, len(points)))
    for j, p in enumerate(points):
        r = len(p.values)
        pick = rng.integers(0, r, size=(n_boot, r))
        run = devs[rng.integers(0, len(devs), size=(n_boot, r))].mean(1) * scale if len(devs) else 0.0
        test = np.zeros(n_boot)
        if p.draws is not None and p.draws.shape[1]:
            dev = p.draws - p.values[:, None]  # (R, D): each cell's move in each test resample
            dev = np.where(np.isfinite(dev), dev, 0.0)
            cols = np.arange(n_boot) % dev.shape[1]
            test = dev[pick, cols[:, None]].mean(1)
        elif p.sigmas is not None:
            # no shared draws (a result file from before they existed): each cell's test noise is
            # redrawn on its own from its CI, which misses the correlation along the curve
            test = (rng.normal(size=(n_boot, r)) * p.sigmas[pick]).mean(1)
        out[:, j] = p.mean + run + test
    return out


# ---- the fits ------------------------------------------------------------------------------------

B_COARSE = np.linspace(0.0, B_MAX, 201)[1:]  # step 0.025, then a local grid of step 0.00125
B_LOCAL = np.linspace(-1.0, 1.0, 41) * (B_COARSE[1] - B_COARSE[0])
B_WINDOW = np.linspace(-0.25, 0.25, 21)  # IRLS steps move b little once the global grid has placed it


def _model(x: np.ndarray, amp: float, b: float, c: float) -> np.ndarray:
    return amp * np.power(x, -b) + c


def _profile(x: np.ndarray, ys: np.ndarray, bs: np.ndarray,
             w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For every curve in ``ys`` (R, n) and exponent in ``bs`` (R or 1, G): best amp >= 0, c >= 0 and
    the (weighted) SSE, with per-point weights ``w`` (R, n) or none.

    Variable projection: for fixed b the model is linear in (amp, c), so the 2-parameter
    non-negative least squares has a closed form: the interior solution if feasible, else the
    better of the two boundaries (amp = 0 or c = 0). Vectorised over curves and exponents.
    """
    w = np.ones_like(ys) if w is None else w
    phi = np.power(x[None, None, :], -bs[:, :, None])  # (R|1, G, n)
    wn = w[:, None, :]
    n = w.sum(1)[:, None]  # (R, 1)
    sp, spp = (wn * phi).sum(-1), (wn * phi**2).sum(-1)  # (R, G)
    sy, syy = (w * ys).sum(1)[:, None], (w * ys**2).sum(1)[:, None]  # (R, 1)
    spy = (wn * ys[:, None, :] * phi).sum(-1)  # (R, G)

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
    with np.errstate(invalid="ignore", over="ignore"):  # infeasible entries are discarded below
        e_i = np.where(feasible, sse(amp_i, c_i), np.inf)
    e_c0, e_a0 = sse(amp_b, zero), sse(zero, c_b)
    best = np.argmin(np.stack([e_i, e_c0, e_a0]), axis=0)
    amp = np.choose(best, [np.where(feasible, amp_i, 0.0), amp_b, zero])
    c = np.choose(best, [np.where(feasible, c_i, 0.0), zero, c_b])
    return amp, c, np.maximum(np.choose(best, [e_i, e_c0, e_a0]), 0.0)


def _best(x: np.ndarray, ys: np.ndarray, bs: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    amp, c, err = _profile(x, ys, bs, w)
    j = np.argmin(err, axis=1)
    rows = np.arange(ys.shape[0])
    b = np.broadcast_to(bs, err.shape)[rows, j]
    return np.stack([amp[rows, j], b, c[rows, j]], axis=1)


def _grid_fit(x: np.ndarray, ys: np.ndarray, w: np.ndarray | None, around: np.ndarray | None = None) -> np.ndarray:
    """Coarse grid over all of (0, B_MAX] (or a window of +-0.25 around ``around``), then a fine one."""
    if around is None:
        coarse = _best(x, ys, B_COARSE[None, :], w)
    else:
        coarse = _best(x, ys, np.clip(around[:, None] + B_WINDOW[None, :], B_MIN, B_MAX), w)
    local = np.clip(coarse[:, 1:2] + B_LOCAL[None, :], B_MIN, B_MAX)
    return _best(x, ys, local, w)


def _huber_weights(x: np.ndarray, ys: np.ndarray, params: np.ndarray) -> np.ndarray:
    """IRLS weights of a Huber loss on log residuals: d(log y) ~ dy / y, so each point is weighted
    1/y² (relative error) times Huber's psi(r)/r (1 inside delta, delta/|r| outside)."""
    pred = params[:, :1] * np.power(x[None, :], -params[:, 1:2]) + params[:, 2:3]
    floor = 1e-9
    r = np.log(np.maximum(pred, floor)) - np.log(np.maximum(ys, floor))
    h = np.minimum(1.0, HUBER_DELTA / np.maximum(np.abs(r), 1e-12))
    return h / np.maximum(ys, floor) ** 2


def fit_many(x: np.ndarray, ys: np.ndarray, method: str = "varpro", chunk: int = 256) -> np.ndarray:
    """(R, 3) array of (amp, b, c) per curve of ``ys`` (R, n) over ``x`` (n,): a coarse grid in b,
    then a fine local grid per curve; ``huber`` repeats that with IRLS weights."""
    if method not in METHODS:
        raise FitError(f"unknown fit method {method!r}; choose one of {list(METHODS)}")
    out = np.empty((ys.shape[0], 3))
    for lo in range(0, ys.shape[0], chunk):
        part = ys[lo: lo + chunk]
        params = _grid_fit(x, part, None)
        if method == "huber":
            for _ in range(HUBER_ITERATIONS):
                params = _grid_fit(x, part, _huber_weights(x, part, params), around=params[:, 1])
        out[lo: lo + chunk] = params
    return out


def _polish(x: np.ndarray, y: np.ndarray, params: np.ndarray, method: str) -> tuple[float, float, float]:
    """The point estimate: Brent over b on the bracketing grid cells (varpro; huber keeps its
    final IRLS weights), so the exponent is not rounded to the grid."""
    amp0, b0, c0 = params
    w = _huber_weights(x, y[None, :], params[None, :]) if method == "huber" else None
    step = B_LOCAL[1] - B_LOCAL[0]

    def loss(b: float) -> float:
        return float(_profile(x, y[None, :], np.array([[b]]), w)[2][0, 0])

    res = minimize_scalar(loss, bounds=(max(b0 - step, B_MIN), min(b0 + step, B_MAX)), method="bounded",
                          options={"xatol": 1e-9})
    if res.success and res.fun <= loss(b0):
        amp, c, _ = _profile(x, y[None, :], np.array([[res.x]]), w)
        return float(amp[0, 0]), float(res.x), float(c[0, 0])
    return float(amp0), float(b0), float(c0)


# ---- the crossover ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Crossover:
    outcome: CrossoverOutcome
    size: float | None  # measured/extrapolated: N; belowSmallest: N_min ("<="); else None
    ci95: tuple[float, float | None] | None  # (low, high); high None: unbounded (some draws never cross)
    share: dict[str, float]

    @property
    def extrapolated(self) -> bool:
        return self.outcome is CrossoverOutcome.EXTRAPOLATED


def _crossings(laws: np.ndarray | None, curves: np.ndarray, base: np.ndarray, sizes: np.ndarray,
               max_extrapolation: float) -> tuple[np.ndarray, np.ndarray]:
    """Per draw: (outcome code, size) where each draw's curve first beats its baseline.

    With laws (D, 3) in images: the law's crossing, clipped to the typed outcomes. Without: the
    measured points ``curves`` (D, n), interpolated in log N between the two sizes that bracket the
    crossing; beyond the largest size nothing is claimed.
    Codes: 0 measured, 1 belowSmallest, 2 extrapolated, 3 notReached.
    """
    n_min, n_max = float(sizes[0]), float(sizes[-1])
    d = len(base)
    code = np.full(d, 3)
    at = np.full(d, np.inf)
    if laws is not None:
        a, b, c = laws[:, 0], laws[:, 1], laws[:, 2]
        first = a * n_min ** (-b) + c
        below = first < base
        with np.errstate(divide="ignore", invalid="ignore"):
            log_n = (np.log(a) - np.log(base - c)) / b
        ok = (base > c) & (a > 0) & (b > 0) & np.isfinite(log_n)
        n_star = np.where(ok, np.exp(np.minimum(log_n, 700.0)), np.inf)
        code = np.where(below, 1, np.where(n_star <= n_max, 0, np.where(n_star <= n_max * max_extrapolation, 2, 3)))
        at = np.where(code == 1, n_min, np.where(code == 3, np.inf, n_star))
        return code, np.maximum(at, n_min)  # round-off must not put a crossing below the smallest size
    logs = np.log(sizes)
    beats = curves < base[:, None]
    for i in range(d):
        hit = np.flatnonzero(beats[i])
        if not len(hit):
            continue
        j = int(hit[0])
        if j == 0:
            code[i], at[i] = 1, n_min
            continue
        y0, y1 = curves[i, j - 1], curves[i, j]
        t = (y0 - base[i]) / (y0 - y1) if y0 != y1 else 1.0
        code[i], at[i] = 0, math.exp(logs[j - 1] + t * (logs[j] - logs[j - 1]))
    return code, np.clip(at, n_min, n_max)  # exp(log(N)) can round below N: never claim below N_min


_CODES = (CrossoverOutcome.MEASURED, CrossoverOutcome.BELOW_SMALLEST, CrossoverOutcome.EXTRAPOLATED,
          CrossoverOutcome.NOT_REACHED)


def _crossover(point_code: int, point_at: float, codes: np.ndarray, ats: np.ndarray) -> Crossover:
    outcome = _CODES[point_code]
    size = None if outcome is CrossoverOutcome.NOT_REACHED else float(point_at)
    if not len(codes):
        return Crossover(outcome, size, None, {})
    share = {_CODES[k].value: float(np.mean(codes == k)) for k in range(4) if np.any(codes == k)}
    lo, hi = np.percentile(np.where(np.isfinite(ats), ats, np.finfo(float).max), [2.5, 97.5])
    big = np.finfo(float).max / 2
    ci = None if lo >= big else (float(lo), None if hi >= big else float(hi))
    return Crossover(outcome, size, ci, share)


# ---- one curve ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Boot:
    """Bootstrap draws of one curve: laws (D, 3) in images (a, b, c; fitted whether or not a law is
    reported), the per-size means (D, n), the baseline (D,) or None, and each draw's crossover size
    (D,), inf where it never crosses."""

    laws: np.ndarray
    means: np.ndarray
    baseline: np.ndarray | None
    crossover: np.ndarray | None


@dataclasses.dataclass(frozen=True)
class Fit:
    law: PowerLaw | None  # None: no law fitted (lack_of_fit says why)
    attempted: PowerLaw  # the best fit whether or not it is reported as a law
    r2: float
    lack_of_fit: str | None
    ci95: dict[str, tuple[float, float]]
    crossover: Crossover
    n_boot: int
    replicates: int
    method: str
    means: np.ndarray  # per size, error scale
    point_ci95: np.ndarray  # (n, 2) per size, error scale
    prediction: tuple[float, float, float] | None = None  # error at ``predict_at``: (value, low, high)
    boot: Boot | None = None  # the bootstrap draws behind the intervals (not in the status)

    @property
    def fitted(self) -> bool:
        return self.law is not None


def lack_of_fit(law: PowerLaw, r2: float, min_r2: float) -> str | None:
    """Why these numbers are not a law, or None."""
    if law.a <= 0:
        return "flat: no decrease with N (a = 0)"
    if law.b >= B_MAX * (1 - 1e-3):
        return f"exponent at its bound (b = {B_MAX:g}): a step, not a law"
    if law.b < B_FLAT:
        return f"flat: exponent at its bound (b = {law.b:.3f} ~ 0)"
    if r2 < min_r2:
        return f"R² {r2:.2f} < {min_r2:g}"
    return None


def run_variation(points: Sequence[Replicates], residuals: np.ndarray) -> tuple[np.ndarray, int]:
    """The run-to-run deviations a bootstrap resamples: pooled over replicates where there are any;
    with one replicate per size, the residuals around the fit stand in (n - 3 df, lack of fit
    included, so it errs wide); with 3 sizes there are none and only the test set varies."""
    deviations = run_deviations(points)
    n = len(residuals)
    if not len(deviations[0]) and n > 3:
        deviations = (residuals * math.sqrt(n / (n - 3)), n - 3)
    return deviations


def fit_curve(sizes: Sequence[float], points: Sequence[Replicates], baseline: Replicates | None = None, *,
              method: str = "varpro", min_r2: float = 0.5, max_extrapolation: float = 10.0,
              n_boot: int = 1000, seed: int = 0, predict_at: float | None = None) -> Fit:
    """Fit one curve (per-size replicates on the error scale) and bootstrap it; see the module doc.

    ``predict_at``: also the law's error at that size with its CI (:attr:`Fit.prediction`).
    """
    n = np.asarray(sizes, dtype=float)
    if len(n) != len(points):
        raise FitError(f"{len(n)} sizes but {len(points)} points")
    if len(set(n.tolist())) != len(n):
        raise FitError("sizes must be distinct; give each size's replicates as one point")
    if len(n) < MIN_SIZES:
        raise FitError(f"a scaling law needs at least {MIN_SIZES} distinct data sizes, got {len(n)}; "
                       "add sizes to the study")
    order = np.argsort(n)
    n, points = n[order], [points[i] for i in order]
    y = np.array([p.mean for p in points])
    if not (np.all(np.isfinite(n)) and np.all(np.isfinite(y))) or np.any(n <= 0) or \
            any(len(p.values) == 0 for p in points):
        raise FitError("sizes must be positive and values finite")
    scale = float(np.exp(np.mean(np.log(n))))  # fit in N / geometric-mean(N) for conditioning
    x = n / scale

    amp, b, c = _polish(x, y, fit_many(x, y[None, :], method)[0], method)
    attempted = PowerLaw(a=amp * scale**b, b=b, c=c)
    ss_res = float(np.sum((y - _model(x, amp, b, c)) ** 2))
    ss_tot = float(np.sum((y - np.mean(y)) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0)
    why = lack_of_fit(attempted, r2, min_r2)
    law = None if why else attempted

    base_mean = np.array([baseline.mean]) if baseline is not None else None
    point_laws = np.array([[attempted.a, attempted.b, attempted.c]]) if law else None
    if base_mean is not None:
        code, at = _crossings(point_laws, y[None, :], base_mean, n, max_extrapolation)
        point_code, point_at = int(code[0]), float(at[0])
    replicates = min(len(p.values) for p in points)
    varies = replicates > 1 or len(n) > 3 or any(p.draws is not None or p.sigmas is not None for p in points)
    if n_boot <= 0 or not varies:
        cross = _crossover(point_code, point_at, np.array([]), np.array([])) if base_mean is not None else \
            Crossover(CrossoverOutcome.NO_BASELINE, None, None, {})
        return Fit(law, attempted, r2, why, {}, cross, 0, replicates, method, y, np.stack([y, y], 1))

    rng = np.random.default_rng(seed)
    every = points + ([baseline] if baseline is not None else [])
    boot = resample(every, n_boot, rng, run_variation(every, y - _model(x, amp, b, c)))
    ys, base = boot[:, :len(points)], (boot[:, -1] if baseline is not None else None)
    draws = fit_many(x, ys, method)
    draws[:, 0] *= np.power(scale, draws[:, 1])  # amp -> a in images
    ci = {k: (float(np.percentile(draws[:, i], 2.5)), float(np.percentile(draws[:, i], 97.5)))
          for i, k in enumerate("abc")} if law else {}
    ats = None
    if base is None:
        cross = Crossover(CrossoverOutcome.NO_BASELINE, None, None, {})
    else:
        codes, ats = _crossings(draws if law else None, ys, base, n, max_extrapolation)
        cross = _crossover(point_code, point_at, codes, ats)
    point_ci = np.percentile(ys, [2.5, 97.5], axis=0).T
    prediction = None
    if law is not None and predict_at is not None:
        at = draws[:, 0] * predict_at ** -draws[:, 1] + draws[:, 2]
        lo, hi = np.percentile(at, [2.5, 97.5])
        prediction = (float(law(predict_at)), float(lo), float(hi))
    return Fit(law, attempted, r2, why, ci, cross, n_boot, replicates, method, y, point_ci, prediction,
               Boot(draws, ys, base, ats))


def fit_power_law(sizes: Sequence[float], errors: Sequence[float], **kw) -> Fit:
    """One value per size, no replicates or test resamples: the law, its R² and crossover, no CIs."""
    return fit_curve(sizes, [Replicates.of([e]) for e in errors], **kw)
