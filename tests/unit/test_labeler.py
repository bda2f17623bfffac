"""The report labeler: negation, uncertainty, normal phrasing and devices, then agreement with the
human MeSH indexing of the real OpenI (Indiana) reports shipped in torchxrayvision's wheel (read at
test time, never copied: CC BY-NC-ND), beside a plain keyword baseline; and per-label F1 on the
phantom's own reports against the labels they were written from."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from radscale.trainer.evaluate.labeler import clinical_f1, label

_spec = importlib.util.spec_from_file_location(
    "labeler_openi", Path(__file__).resolve().parents[2] / "bench" / "labeler_openi.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


@pytest.mark.parametrize(("text", "expected"), [
    ("No pneumothorax or pleural effusion.", {"pneumothorax": 0, "pleural_effusion": 0}),
    ("Small right pleural effusion.", {"pleural_effusion": 1}),
    ("Heart size is normal. Lungs are clear.", {"cardiomegaly": 0, "lung_opacity": 0}),
    ("The heart is enlarged but there is no edema.", {"cardiomegaly": 1, "edema": 0}),
    ("Cannot exclude pneumonia.", {"pneumonia": -1}),
    ("Left basilar opacity may represent atelectasis.", {"atelectasis": -1, "lung_opacity": 1}),
    ("Pneumothorax is not seen.", {"pneumothorax": 0}),
    ("No pneumothorax. Small left pneumothorax after chest tube placement.", {"pneumothorax": 1, "chest_drain": 1}),
    ("Endotracheal tube 3 cm above the carina; enteric tube in the stomach. Right PICC line.",
     {"ett": 1, "ngt": 1, "cvc": 1}),
    ("Interval removal of the endotracheal tube. Dual-chamber pacemaker.", {"ett": 0, "pacemaker": 1}),
    # chest drains under their other names
    ("Right chest drain in place.", {"chest_drain": 1}),
    ("Left intercostal drain and a pigtail catheter.", {"chest_drain": 1}),
    ("Bilateral chest tubes. No residual pneumothorax.", {"chest_drain": 1, "pneumothorax": 0}),
    ("The chest drain has been removed.", {"chest_drain": 0}),
    # a negation before an uncertainty trigger negates ("no suspicious nodule" is no nodule)
    ("No suspicious nodule.", {"nodule": 0}),
    ("No suspicious pulmonary mass or nodule.", {"nodule": 0}),
    ("There is no pleural line to suggest pneumothorax.", {"pneumothorax": 0}),
    ("No pleural effusion or consolidation to suggest pneumonia.", {"pneumonia": 0, "consolidation": 0}),
    ("No focal consolidation, suspicious pulmonary opacity, large pleural effusion, or pneumothorax is identified.",
     {"consolidation": 0, "pleural_effusion": 0, "pneumothorax": 0}),
    # uncertainty reaches to the next comma, negation through the list
    ("Suspicious nodule in the right upper lobe.", {"nodule": -1}),
    ("Possible small nodule, consider follow-up.", {"nodule": -1}),
    ("No effusion, possible atelectasis.", {"pleural_effusion": 0, "atelectasis": -1}),
    ("Possible atelectasis, no effusion.", {"pleural_effusion": 0, "atelectasis": -1}),
    ("Cannot exclude pneumonia, no effusion.", {"pneumonia": -1, "pleural_effusion": 0}),
    ("Pneumonia cannot be excluded.", {"pneumonia": -1}),
    ("Pneumonia is in the differential.", {"pneumonia": -1}),
    ("The heart may be mildly enlarged.", {"cardiomegaly": -1}),
    ("Opacity could be XXXX lung nodule.", {"nodule": -1}),
    # pseudo-negation, post-negation, resolution, clause starts
    ("No significant change in the right pneumothorax.", {"pneumothorax": 1}),
    ("Interval resolution of left effusion.", {"pleural_effusion": 0}),
    ("The effusion has resolved.", {"pleural_effusion": 0}),
    ("No pneumothorax, there is a small left effusion.", {"pneumothorax": 0, "pleural_effusion": 1}),
    ("Heart size normal.No effusion.", {"cardiomegaly": 0, "pleural_effusion": 0}),
    ("Heart size is enlarged.", {"cardiomegaly": 1}),
    ("Right chest XXXX tip overlies the mid SVC.", {"cvc": 1}),
])
def test_phrases(text, expected) -> None:
    got = {k: v for k, v in label(text).items() if v is not None}
    assert {k: got.get(k) for k in expected} == expected, got


def test_unmentioned_labels_are_none_and_clinical_f1() -> None:
    assert label("Lungs are clear.")["pneumothorax"] is None
    refs = ["Moderate cardiomegaly.", "Small left pleural effusion.", "No acute disease."]
    assert clinical_f1(refs, refs) == 1.0
    assert clinical_f1(["No acute disease."] * 3, refs) == 0.0
    assert 0 < clinical_f1(["Moderate cardiomegaly.", "No effusion.", "No acute disease."], refs) < 1


@pytest.fixture(scope="module")
def reports() -> list[tuple[str, frozenset[str]]]:
    if bench.openi_path() is None:
        pytest.skip("torchxrayvision's data/NLMCXR_reports.tgz is not installed (the dev extra): no OpenI check")
    return bench.openi_reports()


@pytest.mark.parametrize(("name", "mesh", "min_f1"), [
    ("cardiomegaly", "Cardiomegaly", 0.8), ("pleural_effusion", "Pleural Effusion", 0.8),
    ("atelectasis", "Pulmonary Atelectasis", 0.9), ("fracture", "Fractures, Bone", 0.8),
])
def test_agrees_with_the_human_indexing_of_real_reports(reports, name, mesh, min_f1) -> None:
    tp = fp = fn = 0
    for text, major in reports:
        ref = any(m.split("/")[0] == mesh for m in major)
        pred = label(text, (name,))[name] == 1
        tp, fp, fn = tp + (pred and ref), fp + (pred and not ref), fn + (ref and not pred)
    assert len(reports) > 3900
    assert 2 * tp / (2 * tp + fp + fn) >= min_f1, (tp, fp, fn)


def test_real_negations(reports) -> None:
    negated = [t for t, _ in reports if "no pneumothorax" in t.lower()]
    assert len(negated) > 500
    assert sum(label(t, ("pneumothorax",))["pneumothorax"] == 0 for t in negated) / len(negated) > 0.97


def test_beats_a_keyword_baseline_on_the_labels_mesh_covers(reports) -> None:
    table = bench.openi_table(reports)
    assert set(table) == set(bench.MESH)
    worse = {k: (round(r["labeler"]["f1"], 3), round(r["keyword"]["f1"], 3)) for k, r in table.items()
             if r["labeler"]["f1"] <= r["keyword"]["f1"]}
    assert not worse, worse
    assert all(r["labeler"]["f1"] >= 0.55 for r in table.values()), table


@pytest.fixture(scope="module")
def phantom_reports() -> list[tuple[str, dict[str, int]]]:
    return bench.phantom_reports(600, seed=3)


def test_per_label_f1_on_phantom_reports(phantom_reports) -> None:
    table = bench.phantom_table(phantom_reports)
    assert all(r["support"] >= 20 for r in table.values()), table
    low = {k: round(r["f1"], 3) for k, r in table.items() if r["f1"] < 0.8}
    assert not low, low


def test_phantom_uncertain_findings_read_uncertain(phantom_reports) -> None:
    cells = [(label(text)[k], v) for text, labels in phantom_reports for k, v in labels.items()
             if k in bench.PHANTOM_LABELS and v == -1]
    assert len(cells) >= 20
    assert sum(got == -1 for got, _ in cells) / len(cells) >= 0.95, cells
