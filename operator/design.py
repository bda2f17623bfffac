"""Sequential design of a scaling curve: which data sizes to pretrain next. Pure (numpy, no I/O).

Every pretraining cell costs the same compute, so a fixed log grid spends most of its cells where
the curve is already known. A design (``adaptive`` in the spec) runs ``initial`` log-spaced sizes
(``spec.replicates`` each), then repeats a round until its target's 95% CI is narrow enough or
its budget is spent:

1. fit the curve as the status does (:func:`radscale.operator.fits.fit_curve`: bootstrap over
   replicates and the shared test set) and read the target's interval: the crossover against the
   encoder's baseline, the exponent b, or the law's error at ``max``;
2. score every candidate: each size of a log grid over [min, max] (a measured size means one more
   replicate of it) and, for a crossover, one more evaluation of the baseline. The bootstrap draws
   give the joint spread of the target q (log N for a crossover), of the curve at each candidate
   and of the baseline; measuring a candidate once more, with the run-to-run variance s2, removes
   Cov(q, f(n))^2 / (Var f(n) + s2) of Var q (Gaussian conditioning). The interval's width also
   scales with the t quantile of the run variance's degrees of freedom, which a replicate or a
   baseline evaluation raises by one and a new size does not;
3. choose the candidate whose predicted interval is narrowest (ties: the size farthest, in log N,
   from every measured one, then the smaller). Before there is an interval to shrink (fewer than
   3 sizes), fill the widest gap in log N.

Batches (``maxConcurrentCells`` > 1): the cells of a round are chosen greedily, each after
conditioning on the ones before it as if they had been measured (a "believer" rule), which
spreads a batch without a joint search. A round starts only when every cell of the previous one is
terminal, so the choices depend on results alone, never on timing: a restarted operator
recomputes the same round and finds the RayJobs it already created.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy.stats import t as student_t

from radscale.operator import fits
from radscale.spec import AdaptiveSpec, DesignTarget

SEED = 0  # every refit shares its bootstrap stream: candidates are compared on common random numbers
MAX_REPLICATES = 8  # per size, as spec.replicates
BASELINE = 0  # a chosen size 0 is one more evaluation of the encoder's init weights
BATCH_RULE = ("greedy kriging believer: each cell of a round is chosen as if the ones before it were "
              "measured at the current fit's prediction")


class Stop:
    TARGET_REACHED = "TargetReached"
    BUDGET_SPENT = "BudgetSpent"
    GRID_EXHAUSTED = "GridExhausted"


def candidates(ad: AdaptiveSpec) -> tuple[int, ...]:
    """The log grid the design chooses from: ``grid`` points over [min, max], whole images."""
    g = np.unique(np.rint(np.geomspace(ad.min, ad.max, ad.grid)).astype(int))
    return tuple(int(n) for n in g)


def initial_sizes(ad: AdaptiveSpec) -> tuple[int, ...]:
    """``initial`` log-spaced points of the grid, min and max included."""
    grid = candidates(ad)
    idx = np.unique(np.rint(np.linspace(0, len(grid) - 1, min(ad.initial, len(grid)))).astype(int))
    return tuple(grid[i] for i in idx)


def initial_cells(ad: AdaptiveSpec, replicates: int) -> tuple[int, ...]:
    """Round 0: every initial size, ``replicates`` times (one entry per cell)."""
    return tuple(n for n in initial_sizes(ad) for _ in range(replicates))


def with_replicates(sizes: Sequence[int]) -> list[tuple[int, int]]:
    """Cells in decision order as (size, replicate): the k-th time a size is chosen is replicate k."""
    seen: dict[int, int] = {}
    out = []
    for n in sizes:
        out.append((n, seen.get(n, 0)))
        seen[n] = seen.get(n, 0) + 1
    return out


@dataclasses.dataclass(frozen=True)
class Interval:
    """A target's 95% interval; ``width`` is relative ((high - low) / value), inf when unbounded or
    undefined (no law for a law's parameter, no crossover, no draws)."""

    value: float | None
    low: float | None
    high: float | None
    why: str = ""

    ratio: bool = False  # a size (the crossover): width relative to the low end, high/low - 1

    @property
    def width(self) -> float:
        if self.value is None or self.low is None or self.high is None or self.value <= 0:
            return math.inf
        if self.ratio:
            return self.high / self.low - 1.0 if self.low > 0 else math.inf
        return (self.high - self.low) / self.value


def target_interval(fit: fits.Fit | None, target: DesignTarget) -> Interval:
    if fit is None:
        return Interval(None, None, None, "fewer than 3 sizes measured")
    if target is DesignTarget.CROSSOVER:
        c = fit.crossover
        if c.outcome is fits.CrossoverOutcome.NO_BASELINE:
            return Interval(None, None, None, "no baseline result")
        low, high = c.ci95 if c.ci95 is not None else (None, None)
        why = "" if high is not None else "some draws never cross within maxExtrapolation x the largest size"
        return Interval(c.size, low, high, why, ratio=True)
    if not fit.fitted:
        return Interval(None, None, None, f"no law fitted ({fit.lack_of_fit})")
    if target is DesignTarget.EXPONENT:
        lo, hi = fit.ci95["b"]
        return Interval(fit.law.b, lo, hi)
    value, lo, hi = fit.prediction
    return Interval(value, lo, hi)


@dataclasses.dataclass(frozen=True)
class Curve:
    """One encoder's measured curve on the error scale: replicates per size, and its baseline."""

    points: Mapping[int, fits.Replicates]
    baseline: fits.Replicates | None


@dataclasses.dataclass(frozen=True)
class Choice:
    size: int
    predicted: Interval
    reason: str


@dataclasses.dataclass(frozen=True)
class Round:
    """What the design does now: add cells (``choices``), or stop (``stop`` says why)."""

    current: Interval
    choices: tuple[Choice, ...] = ()
    stop: str | None = None
    message: str = ""


@dataclasses.dataclass(frozen=True)
class Settings:
    method: str = "varpro"
    min_r2: float = 0.5
    max_extrapolation: float = 10.0
    n_boot: int = 1000


def _fit(curve: Curve, ad: AdaptiveSpec, cfg: Settings, n_boot: int) -> fits.Fit | None:
    sizes = sorted(curve.points)
    if len(sizes) < fits.MIN_SIZES:
        return None
    try:
        return fits.fit_curve(sizes, [curve.points[n] for n in sizes], curve.baseline, method=cfg.method,
                              min_r2=cfg.min_r2, max_extrapolation=cfg.max_extrapolation, n_boot=n_boot,
                              seed=SEED, predict_at=float(ad.max))
    except fits.FitError:
        return None


def _gap(measured: Sequence[int], n: int) -> float:
    return min(abs(math.log(n / m)) for m in measured) if measured else math.inf


def _counts(sizes: Sequence[int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for n in sizes:
        out[n] = out.get(n, 0) + 1
    return out


def _quantity(fit: fits.Fit, ad: AdaptiveSpec, cfg: Settings) -> np.ndarray | None:
    """The target in each bootstrap draw, on the scale its interval is symmetric-ish on: log N for
    the crossover (a draw that never crosses sits at log(maxExtrapolation x max)), b, or the error
    at max."""
    boot = fit.boot
    if boot is None:
        return None
    if ad.target is DesignTarget.CROSSOVER:
        if boot.crossover is None:
            return None
        cap = float(ad.max) * cfg.max_extrapolation
        return np.log(np.minimum(boot.crossover, cap))
    if ad.target is DesignTarget.EXPONENT:
        return boot.laws[:, 1]
    return boot.laws[:, 0] * float(ad.max) ** -boot.laws[:, 1] + boot.laws[:, 2]


def _run_variance(curve: Curve) -> float:
    """One new cell's noise: the pooled run-to-run variance, else a cell's test-set variance."""
    every = [*curve.points.values(), *([curve.baseline] if curve.baseline is not None else [])]
    devs, _ = fits.run_deviations(every)
    if len(devs):
        return float(np.mean(devs**2))
    test = [float(np.nanvar(p.draws, axis=1).mean()) for p in every if p.draws is not None]
    return float(np.mean(test)) if test else 1e-6


def _run_df(curve: Curve) -> tuple[int, bool]:
    """Degrees of freedom of the run-to-run variance the intervals use, and whether it is pooled
    from replicates (else the residuals around the fit stand in)."""
    every = [*curve.points.values(), *([curve.baseline] if curve.baseline is not None else [])]
    devs, df = fits.run_deviations(every)
    return (df, True) if len(devs) else (max(len(curve.points) - 3, 0), False)


@functools.lru_cache(maxsize=128)
def _t95(df: int) -> float:
    return float(student_t.ppf(0.975, df)) if df > 0 else 1e3


def _sd_ratio(cov: np.ndarray, j: int, s2: float, var0: float, df: int, adds_df: bool) -> float:
    """How much the target's interval shrinks if row ``j`` of ``cov`` is measured once more with
    noise ``s2``: its sd after Gaussian conditioning over the sd at the round's start, times the
    ratio of t quantiles (a replicate or a baseline evaluation adds a degree of freedom to the run
    variance the interval is inflated by; a new size adds none)."""
    var = max(cov[0, 0] - cov[0, j] ** 2 / (cov[j, j] + s2), 0.0)
    return math.sqrt(var / var0) * _t95(df + adds_df) / _t95(df)


def _shrunk(width: float, ratio: float, log_scale: bool) -> float:
    """A width after its sd shrinks by ``ratio``: on the log scale for a crossover."""
    if not math.isfinite(width):
        return width
    return math.expm1(math.log1p(width) * ratio) if log_scale else width * ratio


def _scaled(now: Interval, width: float, log_scale: bool) -> Interval:
    """An interval around ``now``'s value with relative width ``width`` (the predicted one)."""
    v = now.value
    if v is None or not math.isfinite(width):
        return Interval(None, None, None)
    if log_scale:  # high/low - 1 = width, centred on v in log N
        half = math.log1p(width) / 2
        return Interval(v, v * math.exp(-half), v * math.exp(half), ratio=True)
    return Interval(v, v - width * v / 2, v + width * v / 2)


def choose(curve: Curve, ad: AdaptiveSpec, cells: Sequence[int], k: int, cfg: Settings = Settings()) -> Round:
    """The next round: up to ``k`` cells, or a stop with its reason.

    ``cells`` lists the sizes of every cell the design has run (a size per cell, repeats for
    replicates; 0 for an extra baseline evaluation), failed ones included: they spent the budget.

    Each candidate is scored by how much measuring it would shrink the target's variance across
    the current bootstrap draws, to first order: the draws give the joint spread of the target q,
    of the curve's value f(n) at every candidate and of the baseline, and one more cell at n with
    run-to-run variance s2 removes Cov(q, f(n))^2 / (Var f(n) + s2) of Var q (Gaussian
    conditioning). A batch conditions on each chosen cell before choosing the next (the believer).
    """
    fit = _fit(curve, ad, cfg, cfg.n_boot)
    now = target_interval(fit, ad.target)
    if now.width <= ad.relative_width:
        return Round(now, stop=Stop.TARGET_REACHED,
                     message=f"{ad.target.value} CI width {now.width:.2f} <= {ad.relative_width:g} "
                     f"after {len(cells)} cells")
    left = ad.max_cells - len(cells)
    counts = _counts(cells)
    grid = [n for n in candidates(ad) if counts.get(n, 0) < MAX_REPLICATES]
    if left <= 0 or not grid:
        width = "unbounded" if math.isinf(now.width) else f"{now.width:.2f}"
        why = (Stop.BUDGET_SPENT, f"{len(cells)}/{ad.max_cells} cells spent") if left <= 0 else \
            (Stop.GRID_EXHAUSTED, f"every candidate size has {MAX_REPLICATES} replicates")
        return Round(now, stop=why[0], message=f"{why[1]}; {ad.target.value} CI width {width} > "
                     f"{ad.relative_width:g}{f' ({now.why})' if now.why else ''}")
    log_scale = ad.target is DesignTarget.CROSSOVER
    q = _quantity(fit, ad, cfg) if fit is not None else None
    options: list[int] = list(grid)
    columns: list[np.ndarray] = []
    if q is not None:
        laws = fit.boot.laws
        columns = [laws[:, 0] * float(n) ** -laws[:, 1] + laws[:, 2] for n in grid]
        base_draws = fit.boot.baseline
        if log_scale and base_draws is not None and \
                counts.get(BASELINE, 0) + len(curve.baseline.values) < MAX_REPLICATES:
            options.append(BASELINE)
            columns.append(base_draws)
    ok = q is not None and bool(np.all(np.isfinite(q))) and all(np.all(np.isfinite(c)) for c in columns)
    cov = np.cov(np.vstack([q, *columns])) if ok else None  # row 0: the target
    s2 = _run_variance(curve)
    df, pooled = _run_df(curve)
    measured = sorted(curve.points)
    choices: list[Choice] = []
    width = now.width
    var0 = cov[0, 0] if cov is not None else 0.0
    for _ in range(min(k, left)):
        usable = [i for i, n in enumerate(options) if counts.get(n, 0) < MAX_REPLICATES]
        if not usable:
            break
        if cov is not None and var0 > 0:
            def key(j: int, cov: np.ndarray = cov, measured: list[int] = measured, df: int = df) -> tuple:
                n = options[j]
                adds_df = not pooled or n == BASELINE or n in measured
                return (round(_sd_ratio(cov, j + 1, s2, var0, df, adds_df), 9),
                        -(_gap(measured, n) if n else 0.0), n)

            i = min(usable, key=key)
            n = options[i]
            adds_df = not pooled or n == BASELINE or n in measured
            before, width = width, _shrunk(now.width, _sd_ratio(cov, i + 1, s2, var0, df, adds_df), log_scale)
            df += adds_df
            kind = "another baseline replicate" if n == BASELINE else \
                f"another replicate of {n:,}" if n in measured else f"new size {n:,}"
            shown = [("unbounded" if math.isinf(w) else f"{w:.2f}") for w in (before, width)]
            reason = f"{kind}: shrinks the {ad.target.value} CI most (width {shown[0]} -> {shown[1]} predicted)"
            predicted = _scaled(now, width, log_scale)
            j = i + 1  # condition on it: the batch's next cell sees it as measured
            cov = cov - np.outer(cov[:, j], cov[j, :]) / (cov[j, j] + s2)
        else:
            i = max((j for j in usable if options[j] != BASELINE),
                    key=lambda j: (_gap(measured, options[j]), -options[j]))
            n = options[i]
            reason = f"new size {n:,}: widest gap in log N ({now.why or 'no interval to shrink yet'})"
            predicted = Interval(None, None, None)
        choices.append(Choice(n, predicted, reason))
        counts[n] = counts.get(n, 0) + 1
        if n != BASELINE:
            measured = sorted({*measured, n})
    return Round(now, tuple(choices))


@functools.lru_cache(maxsize=256)
def _cached(curve_key: tuple, ad_json: str, cells: tuple[int, ...], k: int, cfg: Settings) -> Round:
    points, base = curve_key
    curve = Curve({n: _replicates(r) for n, r in points}, _replicates(base) if base is not None else None)
    return choose(curve, AdaptiveSpec.model_validate_json(ad_json), cells, k, cfg)


def _replicates(key: tuple) -> fits.Replicates:
    values, draws, sigmas = key
    return fits.Replicates(np.asarray(values), None if draws is None else np.asarray(draws),
                           None if sigmas is None else np.asarray(sigmas))


def _key(r: fits.Replicates) -> tuple:
    return (tuple(r.values.tolist()), None if r.draws is None else tuple(map(tuple, r.draws.tolist())),
            None if r.sigmas is None else tuple(r.sigmas.tolist()))


def choose_cached(curve: Curve, ad: AdaptiveSpec, cells: Sequence[int], k: int, cfg: Settings = Settings()) -> Round:
    """:func:`choose`, memoised on its inputs: a reconcile pass that changes nothing refits nothing."""
    key = (tuple((n, _key(r)) for n, r in sorted(curve.points.items())),
           _key(curve.baseline) if curve.baseline is not None else None)
    return _cached(key, ad.model_dump_json(), tuple(cells), k, cfg)
