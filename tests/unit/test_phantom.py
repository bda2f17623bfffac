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


# ---- phantom v2 (the long tail) and the foreign style ---------------------------------------------

# The default invocation's content, computed from the generator before v2 existed (manifest bytes,
# decoded pixels and key header fields of every DICOM, decoded masks): v2 must not move it.
DEFAULT_CONTENT_12_SEED9_96PX = "90bb8814905ca3bfd9c0ce917c2a0e2ff1e1390ed483465aa56f30fbe8b7aa54"


def _content_digest(root) -> str:
    import pydicom
    from PIL import Image

    h = hashlib.sha256((root / "manifest.csv").read_bytes())
    for p in sorted((root / "dicom").rglob("*.dcm")):
        ds = pydicom.dcmread(p)
        h.update(p.relative_to(root).as_posix().encode())
        h.update(str([ds.file_meta.TransferSyntaxUID, ds.PhotometricInterpretation, ds.BitsStored,
                      ds.get("WindowCenter"), ds.get("WindowWidth"), ds.get("RescaleIntercept"),
                      ds.StudyInstanceUID, ds.SOPInstanceUID, ds.PatientID]).encode())
        h.update(np.ascontiguousarray(ds.pixel_array, dtype="<u2").tobytes())
    for p in sorted((root / "masks").glob("*.png")):
        h.update(np.asarray(Image.open(p), dtype=np.uint8).tobytes())
    return h.hexdigest()


def test_the_default_invocation_writes_what_it_always_wrote(tmp_path):
    if not phantom._j2k_available():
        pytest.skip("the reference corpus was written with the JPEG 2000 encoder")
    phantom.write_corpus(tmp_path / "a", 12, seed=9, size=96)
    phantom.write_corpus(tmp_path / "b", 12, seed=9, size=96, version=1, style="default")
    assert _content_digest(tmp_path / "a") == DEFAULT_CONTENT_12_SEED9_96PX == _content_digest(tmp_path / "b")
    assert not (tmp_path / "a" / "subtypes.json").exists()


V2_COLUMNS = Columns(report="report", labels=(*phantom.LABELS, *phantom.SUBTYPE_COLUMNS), masks=("catheter_mask",))


@pytest.fixture(scope="module")
def corpus_v2(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom_v2")
    info = phantom.write_corpus(out, 150, seed=3, size=96, version=2)
    return out, info, list(csv.DictReader(open(out / "manifest.csv")))


def test_v2_has_a_zipf_tail_of_distinct_named_subtypes():
    subtypes = phantom.SUBTYPES
    assert len(subtypes) >= 64 and len({s.family for s in subtypes}) >= 24
    assert len({s.name for s in subtypes}) == len(subtypes)
    phrases = [s.phrase.lower() for s in subtypes]
    assert not [(a, b) for a in phrases for b in phrases if a != b and a in b], "a phrase inside another"
    counts = np.sort(phantom.subtype_counts(6000, seed=0))[::-1]
    ranks = np.arange(1, len(counts) + 1)
    slope = np.polyfit(np.log(ranks[counts > 0]), np.log(counts[counts > 0]), 1)[0]
    assert -1.25 < slope < -0.75, slope  # Zipf, exponent ~1
    assert counts[0] > 30 * counts[-1] > 0


def test_v2_rewards_more_data():
    learnable = [phantom.learnable_subtypes(n, 10, range(3)) for n in (32, 128, 512)]
    assert learnable[0] < 3 and learnable[1] > 2 * max(learnable[0], 1) and learnable[2] > 2.5 * learnable[1]


def test_v2_manifest_keeps_the_v1_columns_and_adds_subtypes(corpus_v2):
    out, info, rows = corpus_v2
    m = read_manifest(f"file://{out}", "manifest.csv", COLUMNS)  # a v1 study reads a v2 corpus
    assert len(m) == 150
    m2 = read_manifest(f"file://{out}", "manifest.csv", V2_COLUMNS)
    assert set(np.unique(m2.labels())) <= {0.0, 1.0}
    assert {"study_date", "timepoint"} <= set(rows[0]) and {r["view"] for r in rows} == {"AP", "PA"}
    assert info["subtypes_present"] >= 30
    for r in rows:  # v1 labels follow from the subtypes
        for s, col in zip(phantom.SUBTYPES, phantom.SUBTYPE_COLUMNS, strict=True):
            if r[col] == "1" and s.legacy:
                assert r[s.legacy] == "1", (col, s.legacy)
    for r in rows:
        has_line = any(r[k] == "1" for k in phantom.DEVICES)
        if has_line:
            from PIL import Image
            assert np.asarray(Image.open(out / r["catheter_mask"])).sum() > 0


def test_v2_reports_name_each_subtype(corpus_v2):
    _, _, rows = corpus_v2
    named = 0
    for r in rows:
        text = r["report"].lower()
        assert text.startswith("findings:") and "impression:" in text
        for s, col in zip(phantom.SUBTYPES, phantom.SUBTYPE_COLUMNS, strict=True):
            assert (s.phrase.lower() in text) == (r[col] == "1"), (col, r["report"])
            named += r[col] == "1"
        if r["pleural_effusion"] == "0":
            assert "no pleural effusion" in text
        assert ("recommend repositioning" in text) == (r["tip_malpositioned"] == "1")
    assert named > 150


def test_v2_patients_have_several_dated_studies_with_stable_anatomy(corpus_v2):
    _, info, rows = corpus_v2
    by_patient: dict[str, list[dict]] = {}
    for r in rows:
        by_patient.setdefault(r["patient_id"], []).append(r)
    assert info["patients"] == len(by_patient) < 75 and max(map(len, by_patient.values())) >= 4
    for studies in by_patient.values():
        assert [int(r["timepoint"]) for r in studies] == list(range(len(studies)))
        dates = [r["study_date"] for r in studies]
        assert dates == sorted(dates) and len(set(dates)) == len(dates)
    # the same patient looks alike across studies, more than two patients do
    plan = phantom.plan_v2(40, seed=4)
    imgs = np.stack([phantom._render_v2(np.random.default_rng(i), st, 64)[0].ravel() for i, st in enumerate(plan)])
    corr = np.corrcoef(imgs)
    same = np.array([[a.patient == b.patient for b in plan] for a in plan]) & ~np.eye(len(plan), dtype=bool)
    other = np.array([[a.patient != b.patient for b in plan] for a in plan])
    assert same.any() and corr[same].mean() > corr[other].mean() + 0.02
    anatomies = {}
    for st in plan:
        assert anatomies.setdefault(st.patient, st.anatomy) == st.anatomy


def test_v2_seeds_give_different_corpora_with_the_same_statistics(tmp_path):
    a, b = phantom.subtype_counts(4000, seed=0), phantom.subtype_counts(4000, seed=1)
    assert (a != b).any()
    pa, pb = a / 4000, b / 4000
    assert np.abs(pa - pb).max() < 0.03 and np.corrcoef(pa, pb)[0, 1] > 0.98
    expected = np.array([s.frequency for s in phantom.SUBTYPES])
    assert np.abs(pa - expected).max() < 0.03 and np.abs(pb - expected).max() < 0.03
    phantom.write_corpus(tmp_path / "s0", 8, seed=0, size=64, version=2)
    phantom.write_corpus(tmp_path / "s0b", 8, seed=0, size=64, version=2)
    phantom.write_corpus(tmp_path / "s1", 8, seed=1, size=64, version=2)
    assert _digest(tmp_path / "s0") == _digest(tmp_path / "s0b") != _digest(tmp_path / "s1")


def _look(img: np.ndarray) -> tuple[float, float, float]:
    """Mean, dark-pixel fraction and high-frequency energy relative to contrast."""
    return float(img.mean()), float((img < 0.1).mean()), float(np.diff(img, axis=1).std() / img.std())


@pytest.mark.parametrize("version", [1, 2])
def test_the_foreign_style_looks_measurably_different(tmp_path, version):
    stats = {}
    for style in phantom.STYLES:
        root = tmp_path / style
        phantom.write_corpus(root, 16, seed=2, size=96, version=version, style=style)
        rows = list(csv.DictReader((root / "manifest.csv").read_text().splitlines()))
        decoded = [dicom.load(str(root / r["image"])) for r in rows]
        windowed = [d.image for d in decoded if d.windowed]  # the stored intensities, not renormalised
        stats[style] = (np.mean([_look(d.image)[2] for d in decoded]),
                        *np.mean([_look(w)[:2] for w in windowed], axis=0), rows)
    hf_default, mean_default, dark_default, rows_default = stats["default"]
    hf_foreign, mean_foreign, dark_foreign, rows_foreign = stats["foreign"]
    assert hf_foreign > 1.5 * hf_default  # grid lines, edge enhancement, coarser noise
    assert dark_default - dark_foreign > 0.1 and abs(mean_foreign - mean_default) > 0.03
    assert all(r["patient_id"].startswith("FX") for r in rows_foreign)
    # the same labels and reports: only the domain moves
    assert [r["report"] for r in rows_foreign] == [r["report"] for r in rows_default]


def test_the_cli_passes_version_and_style(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "radscale.operator.cli", "phantom", "--out", str(tmp_path / "p"),
                           "--images", "6", "--size", "64", "--version", "2", "--style", "foreign"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert '"version": 2' in proc.stdout and '"style": "foreign"' in proc.stdout
    header = (tmp_path / "p" / "manifest.csv").read_text().splitlines()[0]
    assert "subtype_" in header and "study_date" in header
