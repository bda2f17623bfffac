"""A phantom chest X-ray corpus with a real, learnable scaling signal.

No chest X-ray dataset can be downloaded here, so the demo and the tests run on synthetic frontal
radiographs that behave like one: per-patient anatomy (thorax, lungs, ribs, heart, mediastinum,
spine, diaphragm) with exposure, noise and rotation; findings with visible signatures
(cardiomegaly by cardiothoracic ratio, pleural effusion, consolidation, nodule, pneumothorax);
lines and tubes as thin continuous curves on realistic paths, some malpositioned, with per-pixel
masks; templated reports consistent with the labels (negations, uncertainty, device positions);
several studies per patient; DICOMs in a mix of photometric interpretations, bit depths, windows
and transfer syntaxes; and a manifest in radscale's format.

Deterministic for a seed: image i depends only on (seed, i). I/O: :func:`write_corpus` only.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

FINDINGS = ("cardiomegaly", "pleural_effusion", "consolidation", "nodule", "pneumothorax")
DEVICES = ("ett", "ngt", "cvc", "chest_drain", "pacemaker")
LABELS = (*FINDINGS, *DEVICES, "tip_malpositioned")
PREVALENCE = {"cardiomegaly": 0.2, "pleural_effusion": 0.2, "consolidation": 0.2, "nodule": 0.15,
              "pneumothorax": 0.12, "ett": 0.25, "ngt": 0.25, "cvc": 0.3, "chest_drain": 0.12, "pacemaker": 0.1}
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
UID_ROOT = "1.2.826.0.1.3680043.10.1443."  # a private root for phantom UIDs


# ---- drawing primitives (normalised coordinates: x, y in [-1, 1], y down) ------------------------


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ax = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    return np.meshgrid(ax, ax)  # x, y


def _ellipse(x, y, cx, cy, rx, ry, soft=0.02):
    d = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return np.clip((1.0 - d) / soft, 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    small = rng.standard_normal((max(2, size // scale), max(2, size // scale))).astype(np.float32)
    return np.asarray(Image.fromarray(small, mode="F").resize((size, size), Image.Resampling.BICUBIC))


def _polyline(img: np.ndarray, mask: np.ndarray, pts: np.ndarray, value: float, width_px: float) -> None:
    """Draw a thin continuous curve through ``pts`` (normalised coords) into img and mask."""
    size = img.shape[0]
    px = (pts + 1.0) * 0.5 * (size - 1)
    seg = np.concatenate([np.linspace(px[i], px[i + 1], max(2, int(np.hypot(*(px[i + 1] - px[i]))) * 2))
                          for i in range(len(px) - 1)])
    r = max(1, math.ceil(width_px))
    for dx in range(-r, r + 1):
        for dy in range(-r, r + 1):
            if dx * dx + dy * dy > width_px * width_px + 0.25:
                continue
            xs = np.clip(np.round(seg[:, 0] + dx).astype(int), 0, size - 1)
            ys = np.clip(np.round(seg[:, 1] + dy).astype(int), 0, size - 1)
            img[ys, xs] = np.maximum(img[ys, xs], value)
            mask[ys, xs] = 1


def _curve(p0, p1, bend, n=24):
    """A smooth quadratic Bezier from p0 to p1 bent sideways by ``bend``."""
    p0, p1 = np.asarray(p0, np.float32), np.asarray(p1, np.float32)
    mid = (p0 + p1) / 2 + np.array([bend, 0.0], np.float32)
    t = np.linspace(0, 1, n, dtype=np.float32)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * mid + t**2 * p1


# ---- patients, studies, images -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Anatomy:
    thorax: float  # half-width of the thorax
    lung_h: float
    heart: float  # baseline heart half-width as a fraction of the thorax
    exposure: float
    rotation: float  # degrees
    noise: float


def _anatomy(rng: np.random.Generator) -> Anatomy:
    return Anatomy(thorax=rng.uniform(0.72, 0.86), lung_h=rng.uniform(0.52, 0.62), heart=rng.uniform(0.40, 0.47),
                   exposure=rng.uniform(0.85, 1.15), rotation=rng.uniform(-4, 4), noise=rng.uniform(0.01, 0.03))


@dataclasses.dataclass
class Case:
    """One image: its labels (1/0/-1), devices with tip positions, and the pixels."""

    labels: dict[str, int]
    device_notes: dict[str, str]
    image: np.ndarray  # float32 [0, 1], air dark
    mask: np.ndarray  # uint8 catheter/tube mask


def render(rng: np.random.Generator, anatomy: Anatomy, size: int) -> Case:
    x, y = _grid(size)
    th = anatomy.thorax
    labels = {k: int(rng.random() < PREVALENCE[k]) for k in (*FINDINGS, *DEVICES)}

    img = 0.32 * _ellipse(x, y, 0, 0.05, th + 0.1, 1.05, soft=0.15)  # soft tissue
    lung_mask = np.zeros_like(x)
    for side in (-1, 1):
        lung_mask = np.maximum(lung_mask, _ellipse(x, y, side * th * 0.5, -0.08, th * 0.42, anatomy.lung_h, 0.08))
    texture = 0.04 * _smooth_noise(rng, size, 12)
    img = img - lung_mask * (0.2 - texture)
    # ribs: bright arcs across each lung
    for i in range(9):
        yy = -0.62 + i * 0.13
        arc = np.exp(-(((y - yy - 0.18 * (np.abs(x) / th) ** 2) / 0.018) ** 2))
        img = img + 0.09 * arc * (np.abs(x) < th) * (np.abs(x) > 0.08)
    # heart (cardiothoracic ratio > 0.5 reads as cardiomegaly), mediastinum, spine, diaphragm
    ctr = rng.uniform(0.55, 0.66) if labels["cardiomegaly"] else anatomy.heart + rng.uniform(-0.03, 0.03)
    hw = ctr * th
    img = np.maximum(img, 0.55 * _ellipse(x, y, 0.12 * hw, 0.28, hw, 0.34, 0.12))
    img = np.maximum(img, 0.5 * _ellipse(x, y, 0, -0.35, 0.14, 0.5, 0.15))
    img = np.maximum(img, 0.62 * (np.abs(x) < 0.07) * (y > -0.95))
    dome = 0.45 + 0.12 * (x / th) ** 2
    img = np.maximum(img, 0.5 * np.clip((y - dome) / 0.05, 0, 1) * (np.abs(x) < th + 0.05))

    # findings
    if labels["pleural_effusion"]:
        side = rng.choice([-1, 1])
        level = rng.uniform(0.15, 0.35)
        meniscus = level - 0.08 * ((x - side * th * 0.5) / (th * 0.42)) ** 2 * side * np.sign(x - side * th * 0.5)
        fluid = np.clip((y - meniscus) / 0.04, 0, 1) * (side * x > 0.08) * (np.abs(x) < th)
        img = np.maximum(img, 0.5 * fluid * (y < dome + 0.05))
    if labels["consolidation"]:
        cx, cy = rng.choice([-1, 1]) * th * rng.uniform(0.3, 0.65), rng.uniform(-0.4, 0.3)
        blob = _ellipse(x, y, cx, cy, rng.uniform(0.12, 0.22), rng.uniform(0.1, 0.2), 0.6)
        img = img + 0.22 * blob * (0.7 + 0.3 * _smooth_noise(rng, size, 8)) * lung_mask
    if labels["nodule"]:
        cx, cy = rng.choice([-1, 1]) * th * rng.uniform(0.25, 0.7), rng.uniform(-0.5, 0.3)
        img = img + 0.3 * _ellipse(x, y, cx, cy, r := rng.uniform(0.035, 0.06), r, 0.3)
    if labels["pneumothorax"]:
        side = rng.choice([-1, 1])
        edge = side * th * rng.uniform(0.55, 0.72)
        collapsed = (side * x > side * edge) * (lung_mask > 0.3)
        img = np.where(collapsed, img * 0.35, img)  # no lung markings beyond the pleural line
        img = img + 0.15 * np.exp(-(((x - edge) / 0.008) ** 2)) * (lung_mask > 0.3)

    # lines and tubes: thin bright curves, some malpositioned
    mask = np.zeros((size, size), np.uint8)
    notes: dict[str, str] = {}
    bad = False
    width = max(0.8, size / 256)
    if labels["ett"]:
        low = rng.random() < 0.2
        tip = 0.02 if low else rng.uniform(-0.3, -0.18)  # carina ~ y = -0.05
        _polyline(img, mask, _curve((0.0, -1.0), (0.02 if not low else 0.1, tip), 0.02), 0.95, width)
        notes["ett"] = "in the right main bronchus" if low else f"{round((-0.05 - tip) * 20, 1)} cm above the carina"
        bad |= low
    if labels["ngt"]:
        coiled = rng.random() < 0.2
        end = (0.2, 0.3) if coiled else (th * 0.45, 0.7)
        _polyline(img, mask, _curve((-0.02, -1.0), end, -0.1), 0.9, width)
        notes["ngt"] = "coiled in the oesophagus, tip above the diaphragm" if coiled else "tip in the stomach"
        bad |= coiled
    if labels["cvc"]:
        high = rng.random() < 0.2
        start = (-0.75, -0.75)
        tip = (-0.15, -0.85) if high else (-0.06, rng.uniform(-0.15, 0.0))
        _polyline(img, mask, _curve(start, tip, 0.15), 0.92, width)
        notes["cvc"] = "tip directed up into the neck veins" if high else "tip at the cavoatrial junction"
        bad |= high
    if labels["chest_drain"]:
        side = rng.choice([-1, 1])
        _polyline(img, mask, _curve((side * (th + 0.1), 0.45), (side * th * 0.5, -0.45), side * 0.1), 0.9,
                  width * 1.5)
        notes["chest_drain"] = f"{'right' if side < 0 else 'left'} chest drain in place"
    if labels["pacemaker"]:
        gx, gy = 0.55, -0.72
        box = (np.abs(x - gx) < 0.08) & (np.abs(y - gy) < 0.05)
        img = np.where(box, 0.97, img)
        _polyline(img, mask, _curve((gx, gy), (0.05, 0.3), -0.2), 0.95, width)
        notes["pacemaker"] = "pacemaker leads projecting over the right ventricle"
    labels["tip_malpositioned"] = int(bad)

    # exposure, rotation, noise
    img = img * anatomy.exposure
    if abs(anatomy.rotation) > 0.5:
        rotated = Image.fromarray(img.astype(np.float32), "F").rotate(anatomy.rotation, Image.Resampling.BILINEAR)
        img = np.asarray(rotated)
        mask = np.asarray(Image.fromarray(mask * 255).rotate(anatomy.rotation, Image.Resampling.NEAREST)) // 255
    img = img + rng.normal(0, anatomy.noise, img.shape).astype(np.float32)
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    # a few "possible" findings: uncertain labels, as radiologists write them
    for k in FINDINGS:
        if labels[k] and rng.random() < 0.08:
            labels[k] = -1
    return Case(labels=labels, device_notes=notes, image=img, mask=mask.astype(np.uint8))


# ---- reports ---------------------------------------------------------------------------------------

_POS = {
    "cardiomegaly": ["The heart is enlarged.", "Cardiomegaly.", "Enlarged cardiac silhouette."],
    "pleural_effusion": ["There is a pleural effusion.", "Pleural effusion with blunting of the costophrenic angle."],
    "consolidation": ["Airspace consolidation is present.", "Focal opacity consistent with consolidation."],
    "nodule": ["A pulmonary nodule is seen.", "Small nodular opacity in the lung."],
    "pneumothorax": ["There is a pneumothorax.", "Pneumothorax with a visible pleural line."],
}
_NEG = {
    "cardiomegaly": ["Heart size is normal.", "The cardiac silhouette is within normal limits."],
    "pleural_effusion": ["No pleural effusion.", "There is no pleural effusion."],
    "consolidation": ["No focal consolidation.", "The lungs are clear without consolidation."],
    "nodule": ["No pulmonary nodules.", "No suspicious nodule."],
    "pneumothorax": ["No pneumothorax.", "There is no pneumothorax."],
}
_UNC = {
    "cardiomegaly": "The heart may be mildly enlarged.",
    "pleural_effusion": "Possible small pleural effusion.",
    "consolidation": "Possible early consolidation.",
    "nodule": "Possible small nodule, consider follow-up.",
    "pneumothorax": "Possible small apical pneumothorax.",
}
_DEVICE_NAME = {"ett": "Endotracheal tube", "ngt": "Nasogastric tube", "cvc": "Central venous catheter",
                "chest_drain": "Chest drain", "pacemaker": "Pacemaker"}


def report(rng: np.random.Generator, case: Case) -> str:
    findings, devices = [], []
    for k in FINDINGS:
        v = case.labels[k]
        findings.append(_UNC[k] if v == -1 else str(rng.choice(_POS[k] if v == 1 else _NEG[k])))
    rng.shuffle(findings)
    for k in DEVICES:
        if case.labels[k]:
            note = case.device_notes[k]
            devices.append(f"{_DEVICE_NAME[k]} {note}." if k != "chest_drain" else f"{note.capitalize()}.")
    if case.labels["tip_malpositioned"]:
        devices.append("Recommend repositioning of the malpositioned line.")
    impression = [s for s in findings if not s.startswith(("No ", "There is no", "Heart size is normal",
                                                             "The lungs are clear", "The cardiac"))]
    text = "FINDINGS: " + " ".join(devices + findings)
    text += " IMPRESSION: " + (" ".join(impression) if impression else "No acute cardiopulmonary abnormality.")
    return text


# ---- DICOM ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Encoding:
    photometric: str = "MONOCHROME2"
    bits_stored: int = 12
    syntax: str = "uncompressed"  # uncompressed | rle | j2k
    window: bool = True
    rescale: bool = False


def _uid(seed: int, *parts: object) -> str:
    return generate_uid(prefix=UID_ROOT, entropy_srcs=[str(seed), *map(str, parts)])


def write_dicom(image: np.ndarray, enc: Encoding, *, patient_id: str, study_uid: str, sop_uid: str,
                view: str = "PA") -> bytes:
    """A CR DICOM file of a float [0, 1] display image (air dark), stored as ``enc`` says."""
    top = 2**enc.bits_stored - 1
    stored = image if enc.photometric == "MONOCHROME2" else 1.0 - image
    px = np.round(stored * top).astype(np.uint16)
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CR_STORAGE
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CR_STORAGE, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, sop_uid.rsplit(".", 1)[0] + ".1"
    ds.PatientID, ds.PatientName = patient_id, f"PHANTOM^{patient_id}"
    ds.Modality, ds.ViewPosition, ds.BodyPartExamined = "CR", view, "CHEST"
    ds.set_pixel_data(px, enc.photometric, bits_stored=enc.bits_stored, generate_instance_uid=False)
    if enc.rescale:  # stored values are offsets from -1024, as some vendors write them
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "US"
    if enc.window:
        off = -1024 if enc.rescale else 0
        ds.WindowCenter, ds.WindowWidth = (top + 1) // 2 + off, top + 1
    if enc.syntax == "rle":
        ds.compress(RLELossless, generate_instance_uid=False)
    elif enc.syntax == "j2k":
        ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _encoding(rng: np.random.Generator, j2k: bool) -> Encoding:
    syntax = str(rng.choice(["uncompressed", "rle", "j2k"], p=[0.6, 0.3, 0.1] if j2k else [0.65, 0.35, 0.0]))
    return Encoding(photometric=str(rng.choice(["MONOCHROME1", "MONOCHROME2"])),
                    bits_stored=int(rng.choice([10, 12, 15, 16])), syntax=syntax,
                    window=bool(rng.random() < 0.6), rescale=bool(rng.random() < 0.15))


def _j2k_available() -> bool:
    try:
        import openjpeg  # noqa: F401  (pylibjpeg-openjpeg)
    except ImportError:
        return False
    return True


# ---- corpus -------------------------------------------------------------------------------------------


def write_corpus(out: str | Path, images: int, seed: int = 0, size: int = 256,
                 studies_per_patient: tuple[int, int] = (1, 4)) -> dict[str, Any]:
    """Write ``images`` DICOMs, their catheter masks (PNG) and ``manifest.csv`` under ``out``."""
    root = Path(out)
    (root / "dicom").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    j2k = _j2k_available()
    rows: list[dict[str, Any]] = []
    patient, remaining, anatomy = -1, 0, None
    prng = np.random.default_rng([seed, 0])
    for i in range(images):
        if remaining == 0:  # a new patient with their own anatomy and number of studies
            patient += 1
            remaining = int(prng.integers(studies_per_patient[0], studies_per_patient[1] + 1))
            anatomy = _anatomy(np.random.default_rng([seed, 1, patient]))
        remaining -= 1
        rng = np.random.default_rng([seed, 2, i])
        case = render(rng, anatomy, size)
        pid = f"PH{seed:03d}{patient:06d}"
        study_uid, sop_uid = _uid(seed, "study", i), _uid(seed, "image", i)
        rel = f"dicom/{pid}/{i:07d}.dcm"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(write_dicom(case.image, _encoding(rng, j2k), patient_id=pid,
                                             study_uid=study_uid, sop_uid=sop_uid))
        mask_rel = f"masks/{i:07d}.png"
        Image.fromarray(case.mask * 255).save(root / mask_rel, optimize=False)
        rows.append({"image": rel, "patient_id": pid, "study_id": study_uid, "view": "PA",
                     "report": report(rng, case), **{k: case.labels[k] for k in LABELS},
                     "catheter_mask": mask_rel})
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    prevalence = {k: float(np.mean([r[k] == 1 for r in rows])) for k in LABELS}
    return {"images": images, "patients": patient + 1, "manifest": str(root / "manifest.csv"),
            "prevalence": prevalence}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import time

    ap = argparse.ArgumentParser(prog="radscale phantom", description="Write a phantom chest X-ray corpus.")
    ap.add_argument("--out", required=True, help="output folder (DICOMs, masks/, manifest.csv)")
    ap.add_argument("--images", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=256, help="image side in pixels")
    args = ap.parse_args(argv)
    if args.images < 1 or args.size < 64:
        ap.error("--images must be >= 1 and --size >= 64")
    start = time.perf_counter()
    info = write_corpus(args.out, args.images, seed=args.seed, size=args.size)
    info["seconds"] = round(time.perf_counter() - start, 2)
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
