"""The linear probe and its weighted AUROC/AUPRC: scikit-learn's values, the U-Ignore policy, the CI."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from radscale.trainer.evaluate import probe, resample, tasks

SKLEARN = {"auroc": roc_auc_score, "auprc": average_precision_score}


def _sklearn_per_label(metric: str, scores: np.ndarray, labels: np.ndarray, w: np.ndarray | None = None) -> list:
    out = []
    for j in range(labels.shape[1]):
        ok = probe.known(labels[:, j]) & (True if w is None else w > 0)
        y = labels[ok, j]
        defined = 0 < y.sum() < len(y)
        out.append(SKLEARN[metric](y, scores[ok, j], sample_weight=None if w is None else w[ok]) if defined
                   else np.nan)
    return out


def _data(seed: int, n: int = 90) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = np.round(rng.random((n, 3)), 1)  # rounded: many ties
    labels = (rng.random((n, 3)) < 0.4).astype(np.float32)
    labels[:5, 1] = -1
    labels[5:9, 2] = np.nan
    return scores, labels


@pytest.mark.parametrize("metric", ["auroc", "auprc"])
def test_unit_weights_equal_scikit_learn(metric):
    for seed in range(5):
        scores, labels = _data(seed)
        ours = probe.per_label(metric, scores, labels, np.ones((1, len(scores))))[0]
        np.testing.assert_allclose(ours, _sklearn_per_label(metric, scores, labels), rtol=0, atol=1e-12)


@pytest.mark.parametrize("metric", ["auroc", "auprc"])
def test_integer_weights_equal_repeated_rows_and_sample_weight(metric):
    scores, labels = _data(5)
    w = np.random.default_rng(6).integers(0, 4, (20, len(scores)))  # zeros too: a row left out
    ours = probe.per_label(metric, scores, labels, w)
    for d in range(len(w)):
        rows = np.repeat(np.arange(len(scores)), w[d])
        repeated = _sklearn_per_label(metric, scores[rows], labels[rows])
        np.testing.assert_allclose(ours[d], repeated, rtol=0, atol=1e-12)
        np.testing.assert_allclose(ours[d], _sklearn_per_label(metric, scores, labels, w[d].astype(float)),
                                   rtol=0, atol=1e-12)


def test_macro_skips_undefined_labels_and_draws():
    values = np.array([[0.5, np.nan, 0.7], [np.nan, np.nan, np.nan]])
    out = probe.macro(values)
    assert out[0] == pytest.approx(0.6) and np.isnan(out[1])


def test_perfect_and_chance_scores():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, (400, 2)).astype(np.float32)
    patients = [f"p{i // 2}" for i in range(400)]
    w = np.vstack([np.ones((1, 400)), resample.patient_weights(patients, 0, 200)])
    perfect, _ = tasks.summarise(probe.macro(probe.per_label("auroc", y.copy(), y, w)))
    assert perfect.value == 1.0 and perfect.ci_low == 1.0
    # random scores: the 95% CI covers the true 0.5 in about 95% of independent draws
    covered = 0
    for i in range(20):
        w = np.vstack([np.ones((1, 400)), resample.patient_weights(patients, i, 100)])
        mv, _ = tasks.summarise(probe.macro(probe.per_label("auroc", rng.random((400, 2)), y, w)))
        covered += mv.ci_low < 0.5 < mv.ci_high
    assert covered >= 16


def test_uncertain_and_blank_labels_are_ignored():
    y = np.array([[1], [0], [-1], [np.nan], [1], [0]], dtype=np.float32)
    scores = np.array([[0.9], [0.1], [0.0], [1.0], [0.8], [0.2]])  # the ignored rows are "wrong"
    for metric in ("auroc", "auprc"):
        assert probe.per_label(metric, scores, y, np.ones((1, 6)))[0, 0] == 1.0
    only_one_class = np.array([[1], [1], [-1]], dtype=np.float32)
    assert np.isnan(probe.per_label("auroc", np.array([[0.2], [0.3], [0.1]]), only_one_class, np.ones((1, 3)))).all()


def test_probe_learns_a_linear_task_and_ignores_uncertain_labels():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 16)).astype(np.float32)
    y = np.stack([(x[:, 0] > 0), (x[:, 1] + x[:, 2] > 0)], axis=1).astype(np.float32)
    noisy = y.copy()
    noisy[rng.random(noisy.shape) < 0.2] = -1  # uncertain: must not be read as negative
    p = probe.train_probe(x[:400], noisy[:400], lr=0.05, epochs=30)
    w = np.vstack([np.ones((1, 200)), resample.patient_weights([str(i) for i in range(200)], 0, 200)])
    mv, draws = tasks.summarise(probe.macro(probe.per_label("auroc", probe.predict(p, x[400:]), y[400:], w)))
    assert mv.value > 0.97 and mv.ci_low > 0.9
    assert mv.ci_low <= mv.value <= mv.ci_high and len(draws) == 200
