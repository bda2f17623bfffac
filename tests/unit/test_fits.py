"""Scaling-law fits recover known laws, give honest intervals, and refuse what they cannot fit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from radscale.operator import fits

TRUE = fits.PowerLaw(a=5.0, b=0.35, c=0.08)
SIZES = np.logspace(3, 7, 8)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recovers_known_parameters_inside_the_ci(seed):
    rng = np.random.default_rng(seed)
    sd = 0.003
    y = TRUE(SIZES) + rng.normal(0, sd, len(SIZES))
    f = fits.fit_power_law(SIZES, y, sigmas=[sd] * len(SIZES), baseline_error=0.2, baseline_sigma=sd,
                           n_boot=400, seed=seed)
    for name in "abc":
        lo, hi = f.ci95[name]
        assert lo <= getattr(TRUE, name) <= hi, (name, lo, hi)
        assert lo <= getattr(f.law, name) <= hi
    assert f.r2 > 0.99
    true_cross = TRUE.crossover(0.2)
    assert f.crossover_ci95 is not None
    lo, hi = f.crossover_ci95
    assert lo <= true_cross <= hi
    assert abs(math.log(f.crossover / true_cross)) < 0.3


def test_noise_free_points_fit_exactly():
    f = fits.fit_power_law(SIZES, TRUE(SIZES), n_boot=0)
    assert f.law.a == pytest.approx(5.0, rel=1e-3)
    assert f.law.b == pytest.approx(0.35, rel=1e-3)
    assert f.law.c == pytest.approx(0.08, abs=1e-4)
    assert f.r2 == pytest.approx(1.0)


def test_intervals_widen_with_noise():
    rng = np.random.default_rng(3)
    widths = []
    for sd in (0.001, 0.01):
        y = TRUE(SIZES) + rng.normal(0, sd, len(SIZES))
        f = fits.fit_power_law(SIZES, y, sigmas=[sd] * len(SIZES), n_boot=300)
        widths.append(f.ci95["b"][1] - f.ci95["b"][0])
    assert widths[1] > 2 * widths[0]


def test_three_sizes_without_point_cis_give_no_intervals():
    f = fits.fit_power_law([1e3, 1e4, 1e5], TRUE(np.array([1e3, 1e4, 1e5])))
    assert f.ci95 == {} and f.n_boot == 0


def test_residual_bootstrap_when_points_carry_no_ci():
    rng = np.random.default_rng(4)
    y = TRUE(SIZES) + rng.normal(0, 0.004, len(SIZES))
    f = fits.fit_power_law(SIZES, y, n_boot=300)
    lo, hi = f.ci95["b"]
    assert lo < f.law.b < hi and hi - lo > 0


@pytest.mark.parametrize("sizes", [[1000], [1000, 2000], [1000, 1000, 2000]])
def test_refuses_fewer_than_three_sizes(sizes):
    with pytest.raises(fits.FitError, match="at least 3 distinct data sizes"):
        fits.fit_power_law(sizes, [0.3] * len(sizes))


def test_refuses_bad_values():
    with pytest.raises(fits.FitError):
        fits.fit_power_law([1e3, 1e4, 1e5], [0.3, float("nan"), 0.2])
    with pytest.raises(fits.FitError):
        fits.fit_power_law([0, 1e4, 1e5], [0.3, 0.25, 0.2])


def test_scores_are_fitted_as_errors():
    assert fits.to_error("auroc", 0.9) == pytest.approx(0.1)
    assert fits.to_error("dice", 0.75) == pytest.approx(0.25)
    assert fits.to_error("loss", 1.7) == 1.7


def test_crossover_is_none_when_the_baseline_is_below_the_floor():
    assert TRUE.crossover(0.05) is None
    n = TRUE.crossover(0.2)
    assert TRUE(n) == pytest.approx(0.2)
    assert TRUE(n * 1.01) < 0.2 < TRUE(n * 0.99)


def test_sigma_from_ci():
    assert fits.sigma_from_ci(0.78, 0.82) == pytest.approx(0.04 / 3.919927969)
    assert fits.sigma_from_ci(None, 0.8) is None


def test_a_nearly_flat_law_never_crosses_instead_of_overflowing():
    # seen in a demo run: b ~ 0.001 put (a / (e - c)) ** (1 / b) beyond any float
    law = fits.PowerLaw(a=0.9, b=0.001, c=0.0)
    assert law.crossover(0.5) is None
    assert fits.PowerLaw(a=1.0, b=0.5, c=0.0).crossover(0.1) == pytest.approx(100.0)
