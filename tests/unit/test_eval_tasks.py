"""The evaluation heads and metrics on synthetic features with a known answer, and the text metrics on
real OpenI reports (torchxrayvision's wheel; read at test time, never copied)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from radscale.operator.api import TaskSpec
from radscale.trainer.evaluate import labeler, probe, report, tasks
from radscale.trainer.evaluate.features import EvalData, SplitData
from tests.support import openi

GRID, PATCH, DIM = (4, 4), 8, 24
LABELS = ("effusion", "cvc")
TEMPLATES = ("findings: there is a right pleural effusion. the heart size is normal.",
             "findings: no pleural effusion. central venous catheter tip in the svc. no pneumothorax.")


def synthetic(n: int = 240, seed: int = 0) -> EvalData:
    """Class-conditional features: each label shifts the CLS token (label 0 every patch token too, as
    a global finding does) along a fixed direction, and a catheter patch is shifted along another.
    The report follows label 0. A head that reads the features gets them right; chance does not."""
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(np.random.default_rng(99).normal(size=(DIM, 3)))[0].T.astype(np.float32)  # orthonormal
    splits = {}
    for name in ("train", "val", "test"):
        m = n if name == "train" else n // 2
        y0 = (rng.random(m) < 0.5).astype(np.float32)
        y1 = (rng.random(m) < 0.4).astype(np.float32)
        on = rng.random((m, GRID[0] * GRID[1])) < 0.2
        s0, s1 = (2 * y0 - 1)[:, None], (2 * y1 - 1)[:, None]
        cls = (rng.normal(size=(m, DIM)) + 1.5 * s0 * u[0] + 1.5 * s1 * u[1]).astype(np.float32)
        patches = (rng.normal(size=(m, GRID[0] * GRID[1], DIM)) + 0.5 * s0[:, None] * u[0]
                   + 2.5 * on[..., None] * u[2]).astype(np.float32)
        y1[: m // 10] = -1  # uncertain: left out (U-Ignore)
        masks = np.kron(on.reshape(m, *GRID), np.ones((PATCH, PATCH))).astype(np.uint8)
        reports = [TEMPLATES[int(v)] for v in (y0 == 0)]
        splits[name] = SplitData(cls, patches, np.stack([y0, y1], 1), reports, {"catheter": masks})
    return EvalData(splits, LABELS, GRID, PATCH, GRID[0] * PATCH)


@pytest.fixture(scope="module")
def data() -> EvalData:
    return synthetic()


@pytest.fixture(scope="module")
def openi_reports() -> list[str]:
    return [text for text, _ in openi.reports()]


def test_bootstrap_auroc_equals_scikit_learn_on_each_resample():
    rng = np.random.default_rng(3)
    scores = np.round(rng.random((80, 3)), 1)  # rounded: many ties
    labels = (rng.random((80, 3)) < 0.4).astype(np.float32)
    labels[:5, 1] = -1
    labels[5:9, 2] = np.nan
    boots = probe.bootstrap_auroc(scores, labels, n_boot=25, seed=7)
    again = np.random.default_rng(7)
    for b in range(25):
        idx = again.integers(0, 80, 80)
        per = []
        for j in range(3):
            ok = probe.known(labels[idx, j])
            y = labels[idx, j][ok]
            if 0 < y.sum() < len(y):
                per.append(roc_auc_score(y, scores[idx, j][ok]))
        assert boots[b] == pytest.approx(np.mean(per), abs=1e-12)


def test_probe_learns_the_labels_and_ignores_uncertain(data):
    spec = TaskSpec(name="findings", kind="classification", labels=list(LABELS))
    task = tasks.for_spec(spec, data)
    history = list(task.train({"lr": 1e-2, "epochs": 30}))
    assert history[-1] > 0.93 and history[-1] > history[0]
    out = task.test(task.model, n_boot=200)
    assert out["auroc"].value > 0.9
    assert out["auroc"].ci_low <= out["auroc"].value <= out["auroc"].ci_high
    assert set(out) >= {"auroc", "auprc", "auroc/effusion", "auroc/cvc"}


def test_segmentation_head_finds_the_masked_patches(data):
    spec = TaskSpec(name="catheter-seg", kind="segmentation", mask_column="catheter")
    task = tasks.for_spec(spec, data)
    out = task.evaluate({"lr": 1e-2, "epochs": 20}, n_boot=100)
    # predicting every pixel would score Dice ~0.33 (a fifth of the patches hold catheter)
    assert out["dice"].value > 0.6 and out["cldice"].value > 0.5
    assert out["dice"].ci_low <= out["dice"].value <= out["dice"].ci_high


def test_segmentation_rejects_an_unknown_mask_column(data):
    with pytest.raises(ValueError, match=r"maskColumn: 'nope'"):
        tasks.for_spec(TaskSpec(name="seg", kind="segmentation", mask_column="nope"), data)


def test_report_decoder_learns_which_template_fits_the_image(data):
    spec = TaskSpec(name="report-gen", kind="report-generation")
    task = tasks.for_spec(spec, data)
    out = task.evaluate({"lr": 3e-3, "epochs": 60}, n_boot=100)
    assert out["bleu4"].value > 0.8, out
    assert out["clinicalF1"].value > 0.9 and out["rougeL"].value > 0.9
    generated = task.generate(task.model, task.x["test"][:4])
    assert all(g in TEMPLATES for g in generated), generated
    task.beam = 3  # beam search agrees on an easy, well-trained decoder
    assert task.generate(task.model, task.x["test"][:4]) == generated


def test_unknown_headline_metric_is_named(data):
    with pytest.raises(ValueError, match="'dice' is not a classification metric"):
        tasks.for_spec(TaskSpec(name="f", kind="classification", labels=["cvc"], metric="dice"), data)


def test_tokenizer_keeps_numbers_and_detokenizes():
    toks = report.tokenize("ET tube 4.2 cm above the carina, no PTX.")
    assert "4.2" in toks and toks[-1] == "."
    assert report.detokenize(toks) == "et tube 4.2 cm above the carina, no ptx."


def test_text_metrics_known_values():
    assert report.bleu4(["the cat sat on the mat"], ["the cat sat on the mat"])[0] == pytest.approx(1.0)
    assert report.bleu4(["completely different words here"], ["the cat sat on the mat"])[0] == pytest.approx(0.0)
    # LCS of "a b c d" and "a c d e" is "a c d": P = R = 3/4
    assert report.rouge_l(["a b c d"], ["a c d e"])[0] == pytest.approx(0.75)
    pos = labeler.positives(["There is a pleural effusion.", "No effusion."], ["pleural_effusion"])
    assert pos[:, 0].tolist() == [True, False]
    assert labeler.f1(pos, pos) == 1.0 and labeler.f1(pos, ~pos) == 0.0


def test_text_metrics_on_real_openi_reports(openi_reports):
    refs = [r for r in openi_reports if len(r.split()) > 8][:300]
    assert len(refs) == 300
    same, lo, hi = report.bleu4(refs, refs, n_boot=200)
    assert same == pytest.approx(1.0)
    shuffled = refs[1:] + refs[:1]
    other, lo, hi = report.bleu4(shuffled, refs, n_boot=200)
    assert 0.0 < other < 0.5 and lo <= other <= hi  # real reports share boilerplate, not content
    assert report.rouge_l(refs, refs).mean() == pytest.approx(1.0)
    assert 0.1 < report.rouge_l(shuffled, refs).mean() < 0.6
    # dropping the negations turns "no effusion" into "effusion": clinical F1 must fall
    flipped = [r.replace("No ", "").replace(" no ", " ") for r in refs]
    f_same = labeler.clinical_f1(refs, refs)
    f_flip = labeler.clinical_f1(flipped, refs)
    assert f_same == 1.0 and f_flip < 0.8


@pytest.mark.parametrize("epochs", [1, 2])
def test_a_short_trial_trains(epochs):
    # a one-batch epoch: the LR schedule must still be defined (OneCycleLR divided by zero here)
    small = synthetic(n=40)
    task = tasks.for_spec(TaskSpec(name="f", kind="classification", labels=list(LABELS)), small)
    assert len(list(task.train({"lr": 1e-2, "epochs": epochs}))) == epochs
    f = tasks.warmup_cosine(3)
    assert [round(f(i), 3) for i in range(3)] == [1.0, 1.0, 0.5]
