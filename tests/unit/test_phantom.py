"""The phantom corpus: deterministic, shaped like a hospital's, with labels the pixels and reports back up."""

from __future__ import annotations

import csv
import hashlib
import subprocess
import sys

import numpy as np
import pytest

from radscale.trainer.data import dicom, phantom
from radscale.trainer.data.manifest import Columns, read_manifest

COLUMNS = Columns(report="report", labels=phantom.LABELS, masks=("catheter_mask",))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom")
    info = phantom.write_corpus(out, 120, seed=5, size=128)
    return out, info, list(csv.DictReader(open(out / "manifest.csv")))


def _digest(root) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return h.hexdigest()


def test_deterministic_for_a_seed(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    phantom.write_corpus(a, 12, seed=9, size=96)
    phantom.write_corpus(b, 12, seed=9, size=96)
    phantom.write_corpus(c, 12, seed=10, size=96)
    assert _digest(a) == _digest(b) != _digest(c)


def test_manifest_reads_back_with_every_column(corpus):
    out, info, _ = corpus
    m = read_manifest(f"file://{out}", "manifest.csv", COLUMNS)
    assert len(m) == 120 == info["images"]
    labels = m.labels()
    assert set(np.unique(labels[~np.isnan(labels)])) <= {-1.0, 0.0, 1.0}
    assert (labels == -1).any(), "some findings are reported as uncertain"


def test_several_studies_per_patient(corpus):
    _, info, rows = corpus
    per_patient = np.bincount(np.unique([r["patient_id"] for r in rows], return_inverse=True)[1])
    assert info["patients"] == len(per_patient) < 120 and per_patient.max() >= 3


def test_every_label_occurs(corpus):
    _, info, _ = corpus
    for k, p in info["prevalence"].items():
        assert 0.02 < p < 0.6, k


def test_dicoms_mix_encodings_and_all_decode(corpus):
    out, _, rows = corpus
    photometrics, syntaxes, bits = set(), set(), set()
    for r in rows:
        dec = dicom.load(str(out / r["image"]))
        photometrics.add(dec.photometric)
        syntaxes.add(dec.transfer_syntax)
        bits.add(dec.bits_stored)
    assert photometrics == {"MONOCHROME1", "MONOCHROME2"}
    assert len(syntaxes) >= 3 and len(bits) >= 3


def test_masks_follow_the_devices(corpus):
    from PIL import Image

    out, _, rows = corpus
    for r in rows:
        mask = np.asarray(Image.open(out / r["catheter_mask"]))
        has_device = any(r[k] == "1" for k in phantom.DEVICES)
        assert (mask.sum() > 0) == has_device, r["image"]


def test_reports_agree_with_labels(corpus):
    _, _, rows = corpus
    for r in rows:
        text = r["report"]
        assert text.startswith("FINDINGS:") and "IMPRESSION:" in text
        if r["pleural_effusion"] == "0":
            assert "no pleural effusion" in text.lower()
        if r["pleural_effusion"] == "-1":
            assert "possible small pleural effusion" in text.lower()
        if r["ett"] == "1":
            assert "Endotracheal tube" in text
        if r["tip_malpositioned"] == "1":
            assert "Recommend repositioning" in text
        else:
            assert "Recommend repositioning" not in text


def test_findings_are_visible_in_pixels():
    """Cardiomegaly widens the heart; effusions brighten the lung bases: a learnable signal."""
    anatomy = phantom._anatomy(np.random.default_rng(0))
    big, normal = [], []
    for i in range(60):
        case = phantom.render(np.random.default_rng(i), anatomy, 128)
        row = case.image[78, :]  # through the heart
        (big if case.labels["cardiomegaly"] == 1 else normal).append((row > 0.45).sum())
    assert big and normal and np.mean(big) > np.mean(normal) + 4


def test_the_cli_writes_a_corpus_and_its_manifest(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "radscale.operator.cli", "phantom", "--out", str(tmp_path / "p"),
                           "--images", "30", "--seed", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert '"images": 30' in proc.stdout and (tmp_path / "p" / "manifest.csv").exists()
