"""Scaling-law fits: known laws recovered, intervals from what varies, lack of fit reported, and a
crossover that is a typed outcome and never a number below the smallest measured size."""

from __future__ import annotations

import math

import numpy as np
import pytest

from radscale.operator import fits

TRUE = fits.PowerLaw(a=5.0, b=0.35, c=0.08)
SIZES = np.logspace(3, 7, 8)
Outcome = fits.CrossoverOutcome


def study(law, sizes, baseline, *, replicates=2, run_sd=0.005, test_sd=0.003, seed=0, draws=400, patients=300):
    """Cells as evaluate jobs report them: run noise per cell, one test set shared by every cell."""
    rng = np.random.default_rng(seed)
    u = rng.normal(0, test_sd * math.sqrt(patients), patients)
    counts = rng.multinomial(patients, np.full(patients, 1 / patients), size=draws)

    def cells(err):
        per = err + rng.normal(0, run_sd, (replicates, 1)) + u[None, :]
        return fits.Replicates(per.mean(1), per @ counts.T / patients)

    return [cells(float(law(n))) for n in sizes], (cells(baseline) if baseline is not None else None)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_known_parameters_inside_the_ci(seed):
    points, base = study(TRUE, SIZES, 0.2, seed=seed)
    f = fits.fit_curve(SIZES, points, base, n_boot=400, seed=seed)
    assert f.fitted and f.r2 > 0.95 and f.replicates == 2 and f.n_boot == 400
    for name in "abc":
        lo, hi = f.ci95[name]
        assert lo <= getattr(TRUE, name) <= hi, (name, lo, hi)
        assert lo <= getattr(f.law, name) <= hi
    true_cross = (TRUE.a / (0.2 - TRUE.c)) ** (1 / TRUE.b)
    assert f.crossover.outcome is Outcome.MEASURED
    lo, hi = f.crossover.ci95
    assert lo <= true_cross <= hi
    assert abs(math.log(f.crossover.size / true_cross)) < 0.3


def test_noise_free_points_fit_exactly():
    f = fits.fit_power_law(SIZES, TRUE(SIZES), n_boot=0)
    assert f.law.a == pytest.approx(5.0, rel=1e-3)
    assert f.law.b == pytest.approx(0.35, rel=1e-3)
    assert f.law.c == pytest.approx(0.08, abs=1e-4)
    assert f.r2 == pytest.approx(1.0)


def test_intervals_widen_with_run_to_run_noise():
    widths = []
    for sd in (0.001, 0.01):
        points, base = study(TRUE, SIZES, 0.2, run_sd=sd, seed=3)
        f = fits.fit_curve(SIZES, points, base, n_boot=300)
        widths.append(f.ci95["b"][1] - f.ci95["b"][0])
    assert widths[1] > 2 * widths[0]


def test_the_shared_test_set_moves_c_and_not_b():
    """A test-set shift common to every cell is irreducible-error uncertainty: it widens c's
    interval, and barely b's; treated as independent per cell it would blur b too."""
    sizes = SIZES[:5]
    shared, base = study(TRUE, sizes, 0.2, run_sd=1e-4, test_sd=0.01, seed=4)
    f = fits.fit_curve(sizes, shared, base, n_boot=400)
    assert f.fitted
    c_lo, c_hi = f.ci95["c"]
    assert c_hi - c_lo > 0.02  # about +-2 sd of the common shift
    b_lo, b_hi = f.ci95["b"]
    rng = np.random.default_rng(5)
    independent = [fits.Replicates(p.values, p.values[:, None] + rng.normal(0, 0.01, p.draws.shape)) for p in shared]
    g = fits.fit_curve(sizes, independent, base, n_boot=400)
    assert (b_hi - b_lo) < 0.5 * (g.ci95["b"][1] - g.ci95["b"][0])


def test_the_crossover_shares_the_test_set_with_the_baseline():
    """The baseline is scored on the same patients: in every draw both move together, so the
    crossover's interval is narrower than if the baseline's test noise were its own."""
    points, base = study(TRUE, SIZES, 0.2, run_sd=1e-4, test_sd=0.01, seed=6)
    f = fits.fit_curve(SIZES, points, base, n_boot=400)
    rng = np.random.default_rng(7)
    own = fits.Replicates(base.values, base.values[:, None] + rng.normal(0, 0.01, base.draws.shape))
    g = fits.fit_curve(SIZES, points, own, n_boot=400)
    width = math.log(f.crossover.ci95[1] / f.crossover.ci95[0])
    assert width < 0.6 * math.log(g.crossover.ci95[1] / g.crossover.ci95[0])


def test_flat_noise_is_no_law_with_the_reason():
    rng = np.random.default_rng(8)
    sizes = [25, 50, 100, 200]
    points = [fits.Replicates(0.3 + rng.normal(0, 0.02, 2)) for _ in sizes]
    f = fits.fit_curve(sizes, points, fits.Replicates(np.array([0.31, 0.29])), n_boot=200)
    assert not f.fitted and f.law is None and f.ci95 == {}
    assert f.lack_of_fit and ("R²" in f.lack_of_fit or "bound" in f.lack_of_fit or "flat" in f.lack_of_fit)


@pytest.mark.parametrize(("y", "why"), [
    ([0.4, 0.1, 0.1005, 0.0995], "bound (b = 5)"),  # a step: the exponent runs to its upper bound
    ([0.2, 0.201, 0.199, 0.2], "flat"),  # no decrease: a = 0 or b ~ 0
])
def test_a_law_at_its_bound_or_flat_is_not_reported_as_numbers(y, why):
    f = fits.fit_power_law([100, 200, 400, 800], y)
    assert not f.fitted and why in f.lack_of_fit


def test_low_r2_threshold_is_the_users():
    rng = np.random.default_rng(9)
    sizes = np.array([100, 200, 400, 800, 1600.0])
    y = fits.PowerLaw(1.0, 0.3, 0.1)(sizes) + rng.normal(0, 0.02, 5)
    f = fits.fit_power_law(sizes, y, min_r2=0.0)
    strict = fits.fit_power_law(sizes, y, min_r2=0.999)
    assert f.fitted and not strict.fitted and "< 0.999" in strict.lack_of_fit


def test_a_curve_already_better_at_the_smallest_size_reads_below_smallest():
    """The issue's "beats baseline at N = 7" with a smallest size of 25: now '<= 25'."""
    sizes = [25, 50, 100, 200]
    law = fits.PowerLaw(a=0.5, b=0.5, c=0.1)
    points, base = study(law, sizes, 0.25, seed=10)
    f = fits.fit_curve(sizes, points, base, n_boot=300)
    assert f.crossover.outcome is Outcome.BELOW_SMALLEST and f.crossover.size == 25
    assert f.crossover.ci95[0] >= 25


def test_a_flat_curve_above_its_baseline_everywhere_is_below_smallest_not_never():
    rng = np.random.default_rng(11)
    sizes = [25, 50, 100, 200]
    points = [fits.Replicates(0.2 + rng.normal(0, 0.003, 2)) for _ in sizes]  # error 0.2: better than base
    f = fits.fit_curve(sizes, points, fits.Replicates(np.array([0.3, 0.31])), n_boot=200)
    assert f.crossover.outcome is Outcome.BELOW_SMALLEST and f.crossover.size == 25
    assert f.crossover.share.get("belowSmallest", 0) > 0.95


def test_an_extrapolated_crossover_is_flagged_and_bounded_by_the_users_factor():
    sizes = np.array([1e3, 2e3, 4e3, 8e3])
    law = fits.PowerLaw(a=5.0, b=0.35, c=0.08)
    base = float(law(3e4))  # crossed at 30k: 3.75x the largest size
    f = fits.fit_power_law(sizes, law(sizes), baseline=fits.Replicates(np.array([base])))
    assert f.crossover.outcome is Outcome.EXTRAPOLATED and f.crossover.extrapolated
    assert f.crossover.size == pytest.approx(3e4, rel=1e-3)
    g = fits.fit_power_law(sizes, law(sizes), baseline=fits.Replicates(np.array([base])), max_extrapolation=2.0)
    assert g.crossover.outcome is Outcome.NOT_REACHED and g.crossover.size is None


def test_no_baseline_and_a_baseline_below_the_floor():
    f = fits.fit_power_law(SIZES, TRUE(SIZES))
    assert f.crossover.outcome is Outcome.NO_BASELINE
    g = fits.fit_power_law(SIZES, TRUE(SIZES), baseline=fits.Replicates(np.array([0.05])))  # c = 0.08 > 0.05
    assert g.crossover.outcome is Outcome.NOT_REACHED


def test_without_a_law_the_crossover_interpolates_and_never_extrapolates():
    sizes = [100, 200, 400, 800]
    errs = [0.40, 0.30, 0.33, 0.20]  # not a law (no monotone power law fits well)
    f = fits.fit_power_law(sizes, errs, baseline=fits.Replicates(np.array([0.35])), min_r2=0.99)
    assert not f.fitted
    assert f.crossover.outcome is Outcome.MEASURED and 100 < f.crossover.size < 200
    g = fits.fit_power_law(sizes, errs, baseline=fits.Replicates(np.array([0.1])), min_r2=0.99)
    assert g.crossover.outcome is Outcome.NOT_REACHED


def test_one_replicate_uses_the_residuals_and_three_sizes_only_the_test_set():
    points, base = study(TRUE, SIZES[:5], 0.2, replicates=1, seed=12)
    f = fits.fit_curve(SIZES[:5], points, base, n_boot=300)
    assert f.replicates == 1 and f.n_boot == 300 and "b" in f.ci95
    three = fits.fit_curve(SIZES[:3], points[:3], base, n_boot=300)
    assert three.n_boot == 300  # the test draws still vary
    bare = fits.fit_curve(SIZES[:3], [fits.Replicates(p.values) for p in points[:3]], n_boot=300)
    assert bare.n_boot == 0 and bare.ci95 == {}  # nothing varies: no interval is invented


def test_huber_shrugs_off_one_broken_cell():
    sizes = SIZES.copy()
    y = TRUE(sizes)
    y[3] += 0.05  # one cell gone wrong
    ls = fits.fit_power_law(sizes, y)
    hub = fits.fit_power_law(sizes, y, method="huber")
    assert abs(hub.attempted.b - TRUE.b) < 0.5 * abs(ls.attempted.b - TRUE.b)
    assert hub.method == "huber"


def test_fits_are_deterministic():
    points, base = study(TRUE, SIZES, 0.2, seed=13)
    f, g = (fits.fit_curve(SIZES, points, base, n_boot=200, seed=1) for _ in range(2))
    assert f.ci95 == g.ci95 and f.crossover == g.crossover


def test_refuses_what_it_cannot_fit():
    with pytest.raises(fits.FitError, match="at least 3"):
        fits.fit_power_law([1e3, 1e4], [0.3, 0.2])
    with pytest.raises(fits.FitError, match="finite"):
        fits.fit_power_law([1e3, 1e4, 1e5], [0.3, float("nan"), 0.1])
    with pytest.raises(fits.FitError, match="distinct"):
        fits.fit_power_law([1e3, 1e3, 1e5], [0.3, 0.2, 0.1])
    with pytest.raises(fits.FitError, match="unknown fit method"):
        fits.fit_power_law(SIZES, TRUE(SIZES), method="magic")


def test_replicate_deviations_are_resampled_with_the_small_sample_correction():
    reps = [fits.Replicates(np.array([0.1, 0.3])), fits.Replicates(np.array([0.5, 0.7]))]
    devs, df = fits.run_deviations(reps)
    assert df == 2 and np.allclose(np.abs(devs), 0.1 * math.sqrt(2))
    boot = fits.resample(reps, 4000, np.random.default_rng(0))
    assert boot.mean(0) == pytest.approx([0.2, 0.6], abs=0.01)


def test_results_without_draws_fall_back_to_their_own_cis():
    """result.json files written before the shared draws existed carry only a CI per cell: each
    cell's test noise is redrawn from it, so intervals exist and widen with the CIs."""
    widths = []
    for sd in (0.002, 0.02):
        pts = [fits.Replicates.of([float(TRUE(n))], None, [sd]) for n in SIZES[:3]]
        f = fits.fit_curve(SIZES[:3], pts, n_boot=300)
        assert f.n_boot == 300
        widths.append(float(np.diff(f.point_ci95[0])[0]))
    assert widths[1] > 5 * widths[0]


def test_a_crossing_at_the_smallest_size_never_rounds_below_it():
    """exp(log(16)) is 15.999999999999998: an interpolated or solved crossing at N_min must read N_min."""
    sizes = [16, 32, 64]
    errs = [0.30, 0.25, 0.20]
    base = fits.Replicates(np.array([0.30]))  # the curve meets the baseline exactly at 16
    f = fits.fit_power_law(sizes, errs, baseline=base, min_r2=1.01)  # no law: interpolation
    assert f.crossover.size is None or f.crossover.size >= 16
    _, at = fits._crossings(None, np.array([errs]), np.array([0.30 - 1e-17]), np.array(sizes, float), 10.0)
    assert at[0] >= 16
    law = np.array([[1.0, 0.5, 0.05]])
    n16 = float(fits.PowerLaw(1.0, 0.5, 0.05)(16.0))
    _, at = fits._crossings(law, np.array([errs]), np.array([n16]), np.array(sizes, float), 10.0)
    assert at[0] >= 16
