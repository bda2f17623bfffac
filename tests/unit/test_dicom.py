"""DICOM decoding on real radiographs (pydicom-data's NEMA WG04 set) and on files we write."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from radscale.trainer.data import dicom, phantom


def real(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} is not in the installed pydicom-data")
    return path


def test_j2k_lossless_decodes_identical_to_uncompressed():
    a, b = dicom.load(real("RG1_UNCR.dcm")), dicom.load(real("RG1_J2KR.dcm"))
    assert a.image.shape == (1955, 1841)
    assert np.array_equal(a.image, b.image)
    assert "1.2.840.10008.1.2.4.90" in b.transfer_syntax


def test_j2k_lossy_decodes_identical_to_its_uncompressed_copy():
    a, b = dicom.load(real("RG1_UNCI.dcm")), dicom.load(real("RG1_J2KI.dcm"))
    assert np.array_equal(a.image, b.image)


def test_monochrome1_chest_comes_out_with_dark_lungs_and_bright_mediastinum():
    dec = dicom.load(real("RG1_UNCR.dcm"), prep_size=256)
    assert dec.photometric == "MONOCHROME1" and dec.bits_stored == 15
    img = dec.image
    h, w = img.shape
    mediastinum = img[int(h * 0.3):int(h * 0.6), int(w * 0.45):int(w * 0.55)].mean()
    right_lung = img[int(h * 0.25):int(h * 0.5), int(w * 0.2):int(w * 0.35)].mean()
    left_lung = img[int(h * 0.25):int(h * 0.5), int(w * 0.65):int(w * 0.8)].mean()
    assert mediastinum > right_lung + 0.2 and mediastinum > left_lung + 0.2
    # inversion: the display image falls where the stored values rise
    raw = pydicom.dcmread(real("RG1_UNCR.dcm")).pixel_array.astype(float)
    full = dicom.load(real("RG1_UNCR.dcm")).image
    assert np.corrcoef(raw[::8, ::8].ravel(), full[::8, ::8].ravel())[0, 1] < -0.9


@pytest.mark.parametrize("name", ["RG3_UNCR.dcm", "RG3_J2KR.dcm", "CT_small.dcm", "MR_small_RLE.dcm",
                                  "JPEG-LL.dcm", "mlut_18.dcm", "vlut_04.dcm", "MR2_J2KR.dcm",
                                  "JPGLosslessP14SV1_1s_1f_8b.dcm"])
def test_other_syntaxes_and_luts_decode(name):
    dec = dicom.load(real(name), prep_size=64)
    assert dec.image.dtype == np.float32 and min(dec.image.shape) == 64
    assert 0.0 <= dec.image.min() < dec.image.max() <= 1.0


@pytest.mark.parametrize(("name", "reason"), [("emri_small.dcm", dicom.SkipReason.MULTI_FRAME),
                                              ("SC_rgb.dcm", dicom.SkipReason.NOT_GRAYSCALE),
                                              ("rtplan.dcm", dicom.SkipReason.NO_PIXELS)])
def test_unusable_files_are_skipped_with_a_reason(name, reason):
    with pytest.raises(dicom.DicomSkip) as exc:
        dicom.load(real(name))
    assert exc.value.reason is reason


def test_truncated_and_non_dicom_bytes(tmp_path):
    with open(real("RG1_UNCR.dcm"), "rb") as fh:
        blob = fh.read()
    with pytest.raises(dicom.DicomSkip) as exc:
        dicom.decode(blob[: len(blob) // 2])
    assert exc.value.reason is dicom.SkipReason.DECODE_ERROR
    with pytest.raises(dicom.DicomSkip) as exc:
        dicom.decode(b"%PDF-1.4 not an image" * 20)
    assert exc.value.reason is dicom.SkipReason.NOT_DICOM
    with pytest.raises(dicom.DicomSkip) as exc:
        dicom.load(str(tmp_path / "absent.dcm"))
    assert exc.value.reason is dicom.SkipReason.UNREADABLE


RAMP = np.tile(np.linspace(0.05, 0.95, 64, dtype=np.float32), (48, 1))


@pytest.mark.parametrize("bits", [10, 12, 15, 16])
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
@pytest.mark.parametrize("syntax", ["uncompressed", "rle", "j2k"])
def test_bit_depths_photometrics_and_syntaxes_round_trip(bits, photometric, syntax):
    enc = phantom.Encoding(photometric=photometric, bits_stored=bits, syntax=syntax, window=False)
    blob = phantom.write_dicom(RAMP, enc, patient_id="P1", study_uid="1.2.3", sop_uid="1.2.3.4")
    dec = dicom.decode(blob)
    assert dec.photometric == photometric and dec.bits_stored == bits
    # full-range normalisation maps the ramp back onto itself (up to quantisation), air dark either way
    lo, hi = np.percentile(RAMP, [0.5, 99.5])
    np.testing.assert_allclose(dec.image, np.clip((RAMP - lo) / (hi - lo), 0, 1), atol=2e-3 * 2 ** (12 - min(bits, 12)))


def test_rescale_and_window_are_applied_in_modality_units():
    enc = phantom.Encoding(bits_stored=12, window=True, rescale=True)
    blob = phantom.write_dicom(RAMP, enc, patient_id="P1", study_uid="1.2.3", sop_uid="1.2.3.4")
    ds = pydicom.dcmread(__import__("io").BytesIO(blob))
    assert ds.RescaleIntercept == -1024
    ds.WindowCenter, ds.WindowWidth = int(ds.WindowCenter), 400  # a narrow window around the middle
    dec = dicom.to_display(ds)
    assert dec.windowed
    saturated = (dec.image <= 0.001).mean() + (dec.image >= 0.999).mean()
    assert saturated > 0.7  # most of a 0..4095 ramp falls outside a 400-wide window


def test_resize_keeps_aspect_and_range():
    img = np.random.default_rng(0).random((300, 200), dtype=np.float32)
    out = dicom.resize_shorter(img, 100)
    assert out.shape == (150, 100) and out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1


def test_transient_storage_errors_are_retried(monkeypatch):
    calls = []
    real_open = dicom.fsspec.open

    def flaky(uri, mode="rb", **kw):
        calls.append(uri)
        if len(calls) < 3:
            raise ConnectionError("reset by peer")
        return real_open(uri, mode, **kw)

    monkeypatch.setattr(dicom.fsspec, "open", flaky)
    blob = dicom.read_bytes(real("CT_small.dcm"), backoff_s=0)
    assert len(calls) == 3 and blob[128:132] == b"DICM"
    calls.clear()
    monkeypatch.setattr(dicom.fsspec, "open", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("down")))
    with pytest.raises(dicom.DicomSkip) as exc:
        dicom.read_bytes("s3://bucket/x.dcm", retries=2, backoff_s=0)
    assert exc.value.reason is dicom.SkipReason.UNREADABLE and "after 2 retries" in exc.value.detail
