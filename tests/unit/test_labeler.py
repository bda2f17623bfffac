"""The report labeler: negation, uncertainty, normal phrasing and devices, then agreement with the
human MeSH indexing of the real OpenI (Indiana) reports shipped in torchxrayvision's wheel (read at
test time, never copied: CC BY-NC-ND)."""

from __future__ import annotations

import pytest

from radscale.trainer.evaluate.labeler import clinical_f1, label
from tests.support import openi


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
def reports() -> list[tuple[str, list[str]]]:
    return openi.reports()


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
