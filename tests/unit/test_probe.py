"""The linear probe and its AUROC: known values, the U-Ignore policy, the bootstrap CI."""

from __future__ import annotations

import numpy as np
import pytest

from radscale.trainer.evaluate import probe


def test_perfect_and_chance_scores() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (400, 2)).astype(np.float32)
    perfect = probe.auroc(y.copy(), y, ["a", "b"], n_boot=200)
    assert perfect.macro == 1.0 and perfect.ci_low == 1.0
    # random scores: the 95% CI covers the true 0.5 in about 95% of independent draws
    covered = sum(c.ci_low < 0.5 < c.ci_high for c in (probe.auroc(rng.random((400, 2)), y, ["a", "b"], n_boot=100,
                                                                   seed=i) for i in range(20)))
    assert covered >= 16


def test_uncertain_and_blank_labels_are_ignored() -> None:
    y = np.array([[1], [0], [-1], [np.nan], [1], [0]], dtype=np.float32)
    scores = np.array([[0.9], [0.1], [0.0], [1.0], [0.8], [0.2]])  # the ignored rows are "wrong"
    assert probe.auroc(scores, y, ["x"], n_boot=50).per_label["x"] == 1.0
    only_one_class = np.array([[1], [1], [-1]], dtype=np.float32)
    assert probe.auroc(np.array([[0.2], [0.3], [0.1]]), only_one_class, ["x"], n_boot=10).per_label == {}


def test_probe_learns_a_linear_task_and_ignores_uncertain_labels() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 16)).astype(np.float32)
    y = np.stack([(x[:, 0] > 0), (x[:, 1] + x[:, 2] > 0)], axis=1).astype(np.float32)
    noisy = y.copy()
    noisy[rng.random(noisy.shape) < 0.2] = -1  # uncertain: must not be read as negative
    p = probe.train_probe(x[:400], noisy[:400], lr=0.05, epochs=30)
    scores = probe.auroc(probe.predict(p, x[400:]), y[400:], ["a", "b"], n_boot=200)
    assert scores.macro > 0.97 and scores.ci_low > 0.9
    assert scores.ci_low <= scores.macro <= scores.ci_high


@pytest.mark.parametrize("seed", [0, 1])
def test_bootstrap_is_seeded(seed) -> None:
    rng = np.random.default_rng(3)
    y, s = rng.integers(0, 2, (100, 3)).astype(np.float32), rng.random((100, 3))
    a, b = probe.auroc(s, y, list("abc"), seed=seed), probe.auroc(s, y, list("abc"), seed=seed)
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
