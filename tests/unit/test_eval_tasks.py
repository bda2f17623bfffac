"""The evaluation heads and metrics on synthetic features with a known answer, the shared test-set
draws and their determinism, a small seeded sweep, and the text metrics on real OpenI reports
(torchxrayvision's wheel; read at test time, never copied)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from sacrebleu.metrics import BLEU
from sklearn.metrics import roc_auc_score

from radscale.cells import TEST_DRAWS
from radscale.operator.api import SweepSpec, TaskSpec
from radscale.trainer.evaluate import labeler, probe, report, resample, tasks
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
        patients = [f"{name}-{i // 2:04d}" for i in range(m)]  # two images per patient
        splits[name] = SplitData(cls, patches, np.stack([y0, y1], 1), reports, {"catheter": masks}, patients,
                                 np.arange(m) + 10_000)
    return EvalData(splits, LABELS, GRID, PATCH, GRID[0] * PATCH)


@pytest.fixture(scope="module")
def data() -> EvalData:
    return synthetic()


@pytest.fixture(scope="module")
def openi_reports() -> list[str]:
    return [text for text, _ in openi.reports()]


def _check_draws(out: tasks.TestOutput, name: str) -> None:
    """``name``'s draws: TEST_DRAWS of them, and its CI their 2.5/97.5 percentiles."""
    draws = out.draws[name]
    assert len(draws) == TEST_DRAWS
    ok = [v for v in draws if v is not None]
    low, high = np.percentile(ok, [2.5, 97.5])
    mv = out.metrics[name]
    # draws are stored to 6 decimals
    assert (mv.ci_low, mv.ci_high) == (pytest.approx(low, abs=1e-6), pytest.approx(high, abs=1e-6))
    assert mv.ci_low <= mv.value <= mv.ci_high


def test_probe_learns_the_labels_and_ignores_uncertain(data):
    spec = TaskSpec(name="findings", kind="classification", labels=list(LABELS))
    task = tasks.for_spec(spec, data)
    history = list(task.train({"lr": 1e-2, "epochs": 30}))
    assert history[-1] > 0.93 and history[-1] > history[0]
    started = time.perf_counter()
    out = task.test(task.model)
    assert time.perf_counter() - started < 10
    assert out.metrics["auroc"].value > 0.9
    assert set(out.metrics) >= {"auroc", "auprc", "auroc/effusion", "auroc/cvc"}
    assert set(out.draws) == {"auroc", "auprc"}  # aggregates only, not the per-label entries
    _check_draws(out, "auroc")
    _check_draws(out, "auprc")
    ex = out.examples
    assert ex.column_names == ["patient", "row_id", "score/effusion", "label/effusion", "score/cvc", "label/cvc"]
    assert ex.num_rows == 120 and ex.column("row_id").to_pylist()[:2] == [10_000, 10_001]


def test_min_positives_scores_only_the_labels_with_that_many_test_positives(data):
    test = data.splits["test"].labels
    counts = {n: int((test[:, j] == 1).sum()) for j, n in enumerate(LABELS)}
    assert counts["effusion"] != counts["cvc"]
    rare, common = sorted(LABELS, key=counts.get)
    spec = TaskSpec(name="tail", kind="classification", labels=list(LABELS), min_positives=counts[rare] + 1)
    out = tasks.for_spec(spec, data).evaluate({"lr": 1e-2, "epochs": 10})
    assert f"auroc/{common}" in out.metrics and f"auroc/{rare}" not in out.metrics
    assert out.metrics["auroc"].value == pytest.approx(out.metrics[f"auroc/{common}"].value)
    assert out.examples.column_names == ["patient", "row_id", f"score/{common}", f"label/{common}"]
    with pytest.raises(ValueError, match=r"tasks\[tail\]\.minPositives=.*the most is"):
        tasks.for_spec(spec.model_copy(update={"min_positives": counts[common] + 1}), data)


def test_probe_draws_score_the_resampled_patients(data):
    task = tasks.for_spec(TaskSpec(name="findings", kind="classification", labels=list(LABELS)), data,
                          resample_seed=4)
    out = task.evaluate({"lr": 1e-2, "epochs": 5})
    scores = np.stack([out.examples.column(f"score/{n}").to_numpy() for n in LABELS], 1)
    labels = data.splits["test"].labels
    w = resample.patient_weights(data.splits["test"].patients, 4, TEST_DRAWS)
    for i in (0, 1, 500, TEST_DRAWS - 1):  # draw i: scikit-learn on the resample's rows, repeated
        rows = np.repeat(np.arange(len(scores)), w[i])
        per = [roc_auc_score(labels[rows, j][probe.known(labels[rows, j])],
                             scores[rows, j][probe.known(labels[rows, j])]) for j in range(len(LABELS))]
        assert out.draws["auroc"][i] == pytest.approx(np.mean(per), abs=1e-6)


def test_same_cell_twice_gives_the_same_scores_and_another_replicate_does_not(data):
    spec = TaskSpec(name="catheter-seg", kind="segmentation", mask_column="catheter")
    config = {"lr": 1e-2, "epochs": 3}
    a, b = (tasks.for_spec(spec, data, seed=11).evaluate(config) for _ in range(2))
    for name in ("dice", "cldice"):
        assert a.metrics[name].value == pytest.approx(b.metrics[name].value, abs=1e-6)
        np.testing.assert_allclose(np.array(a.draws[name], float), np.array(b.draws[name], float), atol=1e-6)
    other = tasks.for_spec(spec, data, seed=12).evaluate(config)
    assert abs(other.metrics["dice"].value - a.metrics["dice"].value) > 1e-6
    # the probe's zero init leaves only the data order to the seed: that alone must move its scores
    spec = TaskSpec(name="findings", kind="classification", labels=list(LABELS))
    p1, p2, p3 = (tasks.for_spec(spec, data, seed=s).evaluate({"lr": 1e-2, "epochs": 3}) for s in (11, 11, 12))
    assert p1.metrics["auroc"].value == pytest.approx(p2.metrics["auroc"].value, abs=1e-6)
    np.testing.assert_allclose(np.array(p1.draws["auroc"], float), np.array(p2.draws["auroc"], float), atol=1e-6)
    assert p1.examples.equals(p2.examples)
    assert abs(p3.metrics["auroc"].value - p1.metrics["auroc"].value) > 1e-6


def test_segmentation_head_finds_the_masked_patches(data):
    spec = TaskSpec(name="catheter-seg", kind="segmentation", mask_column="catheter")
    task = tasks.for_spec(spec, data)
    out = task.evaluate({"lr": 1e-2, "epochs": 20})
    # predicting every pixel would score Dice ~0.33 (a fifth of the patches hold catheter)
    assert out.metrics["dice"].value > 0.6 and out.metrics["cldice"].value > 0.5
    _check_draws(out, "dice")
    _check_draws(out, "cldice")
    ex = out.examples
    assert ex.column_names == ["patient", "row_id", "dice", "cldice"]
    assert out.metrics["dice"].value == pytest.approx(np.mean(ex.column("dice").to_numpy()))


def test_segmentation_rejects_an_unknown_mask_column(data):
    with pytest.raises(ValueError, match=r"maskColumn: 'nope'"):
        tasks.for_spec(TaskSpec(name="seg", kind="segmentation", mask_column="nope"), data)


def test_report_decoder_learns_which_template_fits_the_image(data):
    spec = TaskSpec(name="report-gen", kind="report-generation")
    task = tasks.for_spec(spec, data)
    out = task.evaluate({"lr": 3e-3, "epochs": 60})
    assert out.metrics["bleu4"].value > 0.8, out.metrics
    assert out.metrics["clinicalF1"].value > 0.9 and out.metrics["rougeL"].value > 0.9
    for name in ("bleu4", "rougeL", "clinicalF1"):
        _check_draws(out, name)
    ex = out.examples
    assert ex.column_names == ["patient", "row_id", "generated", "reference", "rougeL"]
    assert out.metrics["bleu4"].value == pytest.approx(report.bleu4(ex.column("generated").to_pylist(),
                                                                    ex.column("reference").to_pylist()))
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
    assert report.bleu4(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(1.0)
    assert report.bleu4(["completely different words here"], ["the cat sat on the mat"]) == pytest.approx(0.0)
    # LCS of "a b c d" and "a c d e" is "a c d": P = R = 3/4
    assert report.rouge_l(["a b c d"], ["a c d e"])[0] == pytest.approx(0.75)
    pos = labeler.positives(["There is a pleural effusion.", "No effusion."], ["pleural_effusion"])
    assert pos[:, 0].tolist() == [True, False]
    assert labeler.f1(pos, pos) == 1.0 and labeler.f1(pos, ~pos) == 0.0


def test_text_metrics_on_real_openi_reports(openi_reports):
    refs = [r for r in openi_reports if len(r.split()) > 8][:300]
    assert len(refs) == 300
    assert report.bleu4(refs, refs) == pytest.approx(1.0)
    shuffled = refs[1:] + refs[:1]
    other = report.bleu4(shuffled, refs)
    assert 0.0 < other < 0.5  # real reports share boilerplate, not content
    assert report.rouge_l(refs, refs).mean() == pytest.approx(1.0)
    assert 0.1 < report.rouge_l(shuffled, refs).mean() < 0.6
    # dropping the negations turns "no effusion" into "effusion": clinical F1 must fall
    flipped = [r.replace("No ", "").replace(" no ", " ") for r in refs]
    f_same = labeler.clinical_f1(refs, refs)
    f_flip = labeler.clinical_f1(flipped, refs)
    assert f_same == 1.0 and f_flip < 0.8


def test_weighted_text_metrics_equal_sacrebleu_and_the_labeler_on_repeated_reports(openi_reports):
    refs = [r for r in openi_reports if len(r.split()) > 8][:120]
    gen = [r.replace("No ", "").replace(" no ", " ") for r in refs[1:] + refs[:1]]
    stats = report.bleu_stats(gen, refs)
    sacre = BLEU(lowercase=True)
    unit = report.bleu4_weighted(stats, np.ones((1, len(gen))))[0]
    assert unit == pytest.approx(sacre.corpus_score(gen, [refs]).score / 100, abs=1e-12)
    pg, pr = labeler.positives(gen, labeler.LABELS), labeler.positives(refs, labeler.LABELS)
    w = np.random.default_rng(0).integers(0, 3, (4, len(gen)))
    bleu, f1 = report.bleu4_weighted(stats, w), report.clinical_f1_weighted(pg, pr, w)
    for d in range(len(w)):
        rows = np.repeat(np.arange(len(gen)), w[d])
        g, r = [gen[i] for i in rows], [refs[i] for i in rows]
        assert bleu[d] == pytest.approx(sacre.corpus_score(g, [r]).score / 100, abs=1e-12)
        assert f1[d] == pytest.approx(labeler.f1(pg[rows], pr[rows]), abs=1e-12)
    rl = report.rouge_l(gen, refs)
    assert tasks.weighted_mean(rl, w)[0] == pytest.approx(rl[np.repeat(np.arange(len(gen)), w[0])].mean())


@pytest.mark.parametrize("epochs", [1, 2])
def test_a_short_trial_trains(epochs):
    # a one-batch epoch: the LR schedule must still be defined (OneCycleLR divided by zero here)
    small = synthetic(n=40)
    task = tasks.for_spec(TaskSpec(name="f", kind="classification", labels=list(LABELS)), small)
    assert len(list(task.train({"lr": 1e-2, "epochs": epochs}))) == epochs
    f = tasks.warmup_cosine(3)
    assert [round(f(i), 3) for i in range(3)] == [1.0, 1.0, 0.5]


def test_a_head_stops_when_validation_stops_improving_and_keeps_its_best_epoch():
    small = synthetic(n=80, seed=3)
    spec = TaskSpec(name="f", kind="classification", labels=list(LABELS))
    config = {"lr": 3e-2, "epochs": 60}
    raw = []  # the validation headline of every epoch, read from the head as it trains
    full = tasks.for_spec(spec, small, seed=1)
    for _ in full.train(config):
        raw.append(full.validate(full.model) if not full.finished else None)
    runs = []
    for _ in range(2):
        task = tasks.for_spec(spec, small, seed=1)
        history = list(task.train(config, patience=3))
        runs.append((history, task.best_epoch, [p.detach().clone() for p in task.model.parameters()]))
        # what the head ends with is its best epoch's: the validation it reports, and its test score
        assert task.validate(task.model) == pytest.approx(history[-1], abs=1e-12)
        assert task.finished
    history, best_epoch, weights = runs[0]
    assert len(history) < 60, "patience 3 stops long before 60 epochs on 80 rows"
    assert history == sorted(history), "the best so far never falls"
    assert best_epoch == len(history) - 3, "stopped after exactly 3 epochs without a better one"
    assert history[-1] == pytest.approx(max(v for v in raw[: len(history)] if v is not None), abs=1e-12), \
        "the same seed trains the same head as an unlimited run, epoch for epoch"
    h2, e2, w2 = runs[1]
    assert (h2, e2) == (history, best_epoch) and all(torch.equal(a, b) for a, b in zip(weights, w2, strict=True))


# ---- the sweep: one small seeded Ray Tune run -------------------------------------------------------


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    from tests.support import local_ray as ray_scope

    with ray_scope(object_store_mb=128):
        yield


def test_sweep_with_one_seed_gives_the_same_trials_and_returns_the_best_ones_draws(local_ray, tmp_path):
    from radscale.trainer.evaluate import sweep

    small = synthetic(n=60, seed=1)
    spec = TaskSpec(name="findings", kind="classification", labels=list(LABELS))
    sweep_spec = SweepSpec.model_validate({
        "numSamples": 3, "scheduler": {"type": "fifo"},
        "searchSpace": {"lr": {"type": "loguniform", "low": 1e-3, "high": 1e-1},
                        "epochs": {"type": "choice", "values": [1, 2]}}})
    scratch = tmp_path / "scratch"
    runs = [sweep.run([spec], small, sweep_spec, seed=5, resample_seed=2, scratch=str(scratch)),
            sweep.run([spec], small, sweep_spec, seed=5, resample_seed=2)]
    assert not scratch.exists()  # the trials' test outputs are removed once read
    configs = [sorted(tuple(sorted(t.config.items())) for t in r["findings"].trials) for r in runs]
    assert configs[0] == configs[1] and len(configs[0]) == 3 and len(set(configs[0])) == 3
    a, b = (r["findings"] for r in runs)
    assert a.result.best_config == b.result.best_config
    assert len(a.result.draws["auroc"]) == TEST_DRAWS
    np.testing.assert_allclose(np.array(a.result.draws["auroc"], float), np.array(b.result.draws["auroc"], float),
                               atol=1e-6)
    assert a.examples.num_rows == len(small.splits["test"].cls) and "patient" in a.examples.column_names
    assert "val/auroc" in a.result.metrics and not any("draw" in k for k in a.result.metrics)
