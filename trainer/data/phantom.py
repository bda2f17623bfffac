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

``version=2`` (``--version 2``) is a long-tail corpus that keeps rewarding data: 80 finding and
device subtypes with Zipf frequencies, each drawn distinctly and named in the report, patients
with fixed anatomy over 1-6 dated studies, and one ``subtype_<name>`` label column per subtype.
``style="foreign"`` (``--style foreign``, either version) renders another site's scanner look and
patient mix. The defaults write exactly what version 1 always wrote. See docs/data.md.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
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
STYLES = ("default", "foreign")
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
                view: str = "PA", study_date: str | None = None) -> bytes:
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
    if study_date:
        ds.StudyDate = study_date
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


# ---- phantom v2: a long tail of finding and device subtypes (``--version 2``) -----------------------
#
# Each subtype is a (family, parameters) pair with its own drawing and its own report phrase.
# Subtype r (1-based rank in ``SUBTYPES``) is present in an image with probability ZIPF_TOP / r**ZIPF_S,
# so a corpus of N images holds about N * ZIPF_TOP / r examples of it: the head is learnt from a few
# dozen images, the tail needs thousands. The rank order is a fixed permutation of the catalogue, the
# same for every seed, so different seeds give different corpora with the same statistics.

ZIPF_TOP, ZIPF_S = 0.3, 1.0
V2_STUDIES_PER_PATIENT = (1, 6)
_ZONES = {"right upper zone": (-0.5, -0.38), "right lower zone": (-0.48, 0.18),
          "left upper zone": (0.5, -0.38), "left lower zone": (0.5, 0.18)}
_LOBES = {"right upper lobe": (-0.5, -0.42), "right middle lobe": (-0.35, 0.0), "right lower lobe": (-0.55, 0.25),
          "left upper lobe": (0.5, -0.42), "lingula": (0.4, 0.0), "left lower lobe": (0.6, 0.25)}


@dataclasses.dataclass(frozen=True)
class Subtype:
    name: str  # manifest column ``subtype_<name>``
    family: str  # nodule, mass, consolidation, effusion, ... ett, cvc, ...
    phrase: str  # how the report names it (unique: no phrase contains another)
    legacy: str | None  # the v1 label it implies, if any
    chronic: bool  # persists across a patient's studies
    params: tuple = ()
    malpositioned: bool = False
    rank: int = 0
    frequency: float = 0.0


def _catalogue() -> list[Subtype]:
    s: list[Subtype] = []
    for kind, word in (("solid", "solid"), ("calcified", "calcified"), ("cavitary", "cavitating")):
        for zone, pos in _ZONES.items():
            s.append(Subtype(f"nodule_{kind}_{''.join(w[0] for w in zone.split())}", "nodule",
                             f"{word} nodule in the {zone}", "nodule", kind == "calcified", (kind, pos)))
    for kind in ("spiculated", "lobulated"):
        for side, sx in (("right", -1), ("left", 1)):
            s.append(Subtype(f"mass_{kind}_{side}", "mass", f"{kind} {side} perihilar mass", None, True, (kind, sx)))
    for lobe, pos in _LOBES.items():
        s.append(Subtype(f"consolidation_{lobe.replace(' ', '_')}", "consolidation", f"{lobe} consolidation",
                         "consolidation", False, (pos,)))
    for size, level in (("small", 0.33), ("large", 0.0)):
        for side, sx in (("right", -1), ("left", 1)):
            s.append(Subtype(f"effusion_{size}_{side}", "effusion", f"{size} {side} pleural effusion",
                             "pleural_effusion", False, (level, (sx,))))
    s.append(Subtype("effusion_bilateral", "effusion", "bilateral pleural effusions", "pleural_effusion", False,
                     (0.3, (-1, 1))))
    for side, sx in (("right", -1), ("left", 1)):
        s.append(Subtype(f"pneumothorax_apical_{side}", "pneumothorax", f"{side} apical pneumothorax",
                         "pneumothorax", False, ("apical", sx)))
        s.append(Subtype(f"pneumothorax_large_{side}", "pneumothorax", f"large {side} pneumothorax with lung collapse",
                         "pneumothorax", False, ("large", sx)))
    s.append(Subtype("pneumothorax_tension", "pneumothorax", "right tension pneumothorax with mediastinal shift",
                     "pneumothorax", False, ("tension", -1)))
    for zone in ("upper", "lower"):
        s.append(Subtype(f"reticular_{zone}", "interstitial", f"{zone} zone reticular opacities", None, True, (zone,)))
    s.append(Subtype("miliary", "miliary", "diffuse miliary nodularity", None, False))
    s.append(Subtype("honeycombing", "honeycomb", "basal honeycombing", None, True))
    s.append(Subtype("oedema_batwing", "oedema", "perihilar batwing oedema", None, False))
    s.append(Subtype("kerley_b", "kerley", "septal Kerley B lines", None, False))
    for side, sx in (("right", -1), ("left", 1)):
        s.append(Subtype(f"atelectasis_plate_{side}", "plate", f"{side} basal plate atelectasis", None, False, (sx,)))
    s.append(Subtype("collapse_rul", "collapse", "right upper lobe collapse", None, False, ("rul",)))
    s.append(Subtype("collapse_lll", "collapse", "retrocardiac left lower lobe collapse", None, False, ("lll",)))
    s.append(Subtype("cardiomegaly", "heart", "enlarged cardiac silhouette", "cardiomegaly", True, ("wide",)))
    s.append(Subtype("pericardial_effusion", "heart", "globular heart of a pericardial effusion", "cardiomegaly",
                     False, ("globular",)))
    s.append(Subtype("hilar_adenopathy", "hila", "bilateral hilar lymphadenopathy", None, True))
    s.append(Subtype("wide_mediastinum", "mediastinum", "widened superior mediastinum", None, False))
    s.append(Subtype("hiatus_hernia", "hernia", "retrocardiac hiatus hernia with an air-fluid level", None, True))
    s.append(Subtype("aortic_calcification", "aorta", "calcification of the aortic knuckle", None, True))
    s.append(Subtype("free_air", "free_air", "free air under the right hemidiaphragm", None, False))
    for side, sx in (("right", -1), ("left", 1)):
        s.append(Subtype(f"rib_fracture_{side}", "fracture", f"displaced {side} rib fracture", None, True, (sx,)))
    s.append(Subtype("scoliosis", "scoliosis", "thoracic scoliosis", None, True))
    s.append(Subtype("granulomas", "granulomas", "scattered calcified granulomata", None, True))
    # devices
    s.append(Subtype("ett_ok", "ett", "endotracheal tube with its tip above the carina", "ett", False, (False,)))
    s.append(Subtype("ett_bronchial", "ett", "endotracheal tube in the right main bronchus", "ett", False, (True,),
                     malpositioned=True))
    s.append(Subtype("tracheostomy", "trache", "tracheostomy tube", None, True))
    s.append(Subtype("ngt_ok", "ngt", "nasogastric tube with its tip in the stomach", "ngt", False, (False,)))
    s.append(Subtype("ngt_coiled", "ngt", "nasogastric tube coiled in the oesophagus", "ngt", False, (True,),
                     malpositioned=True))
    for name, phrase, start in (("ij_right", "right internal jugular central line", (-0.3, -1.0)),
                                ("ij_left", "left internal jugular central line", (0.3, -1.0)),
                                ("subclavian_right", "right subclavian central line", (-0.75, -0.72)),
                                ("subclavian_left", "left subclavian central line", (0.75, -0.72))):
        s.append(Subtype(f"cvc_{name}", "cvc", phrase, "cvc", False, (start, False)))
    s.append(Subtype("cvc_neck", "cvc", "central line looping up into the neck veins", "cvc", False,
                     ((-0.75, -0.72), True), malpositioned=True))
    for side, sx in (("right", -1), ("left", 1)):
        s.append(Subtype(f"picc_{side}", "picc", f"{side} arm PICC", "cvc", False, (sx,)))
    s.append(Subtype("swan_ganz", "swan", "Swan-Ganz catheter in the pulmonary artery", "cvc", False))
    for side, sx in (("right", -1), ("left", 1)):
        s.append(Subtype(f"chest_drain_{side}", "drain", f"{side} intercostal chest drain", "chest_drain", False,
                         (sx,)))
    s.append(Subtype("pacemaker_single", "pacemaker", "single-lead pacemaker", "pacemaker", True, (1, False)))
    s.append(Subtype("pacemaker_dual", "pacemaker", "dual-lead pacemaker", "pacemaker", True, (2, False)))
    s.append(Subtype("icd", "pacemaker", "implantable cardioverter-defibrillator", "pacemaker", True, (1, True)))
    s.append(Subtype("sternotomy", "sternotomy", "median sternotomy wires", None, True))
    s.append(Subtype("valve_aortic", "valve", "prosthetic aortic valve", None, True, ((0.02, 0.05), 0.05)))
    s.append(Subtype("valve_mitral", "valve", "prosthetic mitral valve", None, True, ((0.18, 0.28), 0.07)))
    s.append(Subtype("ecg_leads", "ecg", "overlying ECG electrodes", None, False))
    s.append(Subtype("port", "port", "implanted venous port", None, True))
    s.append(Subtype("clips", "clips", "axillary surgical clips", None, True))
    s.append(Subtype("iabp", "iabp", "intra-aortic balloon pump marker", None, False))
    s.append(Subtype("spinal_rods", "rods", "spinal fixation rods", None, True))
    s.append(Subtype("shoulder_prosthesis", "shoulder", "right shoulder prosthesis", None, True))
    order = np.random.default_rng(16).permutation(len(s))  # fixed: the same ranks for every seed
    return [dataclasses.replace(s[j], rank=r + 1, frequency=ZIPF_TOP / (r + 1) ** ZIPF_S)
            for r, j in enumerate(order)]


SUBTYPES: tuple[Subtype, ...] = tuple(_catalogue())
SUBTYPE_COLUMNS = tuple(f"subtype_{s.name}" for s in SUBTYPES)


@dataclasses.dataclass(frozen=True)
class Anatomy2:
    """Patient-level anatomy (fixed for a patient) for v2."""

    thorax: float
    lung_h: float
    lung_y: float  # vertical centre of the lungs
    heart: float
    heart_y: float
    dome: float  # diaphragm height
    rib_gap: float
    spine_w: float
    soft: float  # soft-tissue density
    exposure: float
    noise: float
    rotation: float  # the patient's habitual rotation, degrees
    texture_seed: int


def _anatomy2(rng: np.random.Generator, foreign: bool = False) -> Anatomy2:
    w = 1.6 if foreign else 1.0  # a foreign site sees a wider mix of habitus
    c = lambda lo, hi: float(rng.uniform((lo + hi) / 2 - w * (hi - lo) / 2, (lo + hi) / 2 + w * (hi - lo) / 2))  # noqa: E731
    return Anatomy2(thorax=c(0.70, 0.88), lung_h=c(0.50, 0.64), lung_y=c(-0.12, -0.04), heart=c(0.39, 0.47),
                    heart_y=c(0.24, 0.32), dome=c(0.40, 0.52), rib_gap=c(0.12, 0.145), spine_w=c(0.055, 0.08),
                    soft=c(0.28, 0.36), exposure=c(0.85, 1.15), noise=c(0.01, 0.03), rotation=c(-3, 3),
                    texture_seed=int(rng.integers(2**31)))


@dataclasses.dataclass(frozen=True)
class Study2:
    """One planned v2 image: who, when, how positioned, and which subtypes it shows."""

    index: int
    patient: int
    timepoint: int
    day: int  # days since 2020-01-01
    anatomy: Anatomy2
    view: str  # PA or AP
    rotation: float
    shift: tuple[float, float]
    inspiration: float
    present: tuple[int, ...]  # indices into SUBTYPES


def plan_v2(images: int, seed: int = 0, foreign: bool = False) -> list[Study2]:
    """Patients, their studies over time and each study's subtypes: labels only, no pixels.

    Each subtype follows a two-state Markov chain over a patient's studies whose stationary
    probability is its Zipf frequency: chronic subtypes (devices left in, healed fractures,
    calcifications) persist with probability 0.9 from one study to the next, acute ones with 0.5.
    """
    freq = np.array([s.frequency for s in SUBTYPES])
    stay = np.array([0.9 if s.chronic else 0.5 for s in SUBTYPES])
    arrive = freq * (1 - stay) / (1 - freq)
    prng = np.random.default_rng([seed, 10])
    out: list[Study2] = []
    patient = -1
    while len(out) < images:
        patient += 1
        rng = np.random.default_rng([seed, 11, patient])
        anatomy = _anatomy2(rng, foreign)
        n = int(prng.integers(V2_STUDIES_PER_PATIENT[0], V2_STUDIES_PER_PATIENT[1] + 1))
        day = int(rng.integers(0, 1500))
        on = rng.random(len(SUBTYPES)) < freq
        for t in range(min(n, images - len(out))):
            if t:
                day += int(rng.integers(1, 120))
                on = np.where(on, rng.random(len(SUBTYPES)) < stay, rng.random(len(SUBTYPES)) < arrive)
            ap = bool(rng.random() < 0.3)
            out.append(Study2(index=len(out), patient=patient, timepoint=t, day=day, anatomy=anatomy,
                              view="AP" if ap else "PA",
                              rotation=anatomy.rotation + float(rng.normal(0, 4.0 if foreign else 2.0)),
                              shift=(float(rng.normal(0, 0.03)), float(rng.normal(0, 0.03))),
                              inspiration=float(rng.uniform(0.9, 1.06)), present=tuple(np.flatnonzero(on))))
    return out


def subtype_counts(images: int, seed: int = 0) -> np.ndarray:
    """Examples of each subtype (in ``SUBTYPES`` order) in the v2 corpus of this size and seed."""
    counts = np.zeros(len(SUBTYPES), np.int64)
    for st in plan_v2(images, seed):
        counts[list(st.present)] += 1
    return counts


def learnable_subtypes(images: int, k: int, seeds: range = range(8)) -> float:
    """Mean number of subtypes with at least ``k`` examples in a v2 corpus of ``images`` images."""
    return float(np.mean([(subtype_counts(images, s) >= k).sum() for s in seeds]))


class _Canvas:
    """The image being drawn, its catheter mask and the patient's geometry."""

    def __init__(self, size: int, anatomy: Anatomy2, st: Study2, rng: np.random.Generator):
        self.size, self.rng, self.a = size, rng, anatomy
        self.x, self.y = _grid(size)
        self.mask = np.zeros((size, size), np.uint8)
        self.th = anatomy.thorax
        self.lung_h = anatomy.lung_h * st.inspiration
        self.mag = 1.1 if st.view == "AP" else 1.0  # AP films magnify the heart
        self.width = max(0.8, size / 256)

    def blob(self, cx, cy, rx, ry, soft=0.3):
        return _ellipse(self.x, self.y, cx, cy, rx, ry, soft)

    def line(self, pts, value=0.93, width=1.0, mask=True):
        m = self.mask if mask else np.zeros_like(self.mask)
        _polyline(self.img, m, np.asarray(pts, np.float32), value, self.width * width)


def _draw(c: _Canvas, s: Subtype) -> None:  # one branch per family
    x, y, th, rng, p = c.x, c.y, c.th, c.rng, s.params
    f = s.family
    if f == "nodule":
        kind, (cx, cy) = p
        cx, cy = cx * th / 0.8 + rng.normal(0, 0.04), cy + rng.normal(0, 0.04)
        if kind == "solid":
            c.img += 0.28 * c.blob(cx, cy, 0.05, 0.05, 0.4)
        elif kind == "calcified":
            c.img = np.maximum(c.img, 0.9 * c.blob(cx, cy, 0.028, 0.028, 0.15))
        else:
            c.img += 0.3 * c.blob(cx, cy, 0.075, 0.075, 0.15) - 0.3 * c.blob(cx, cy, 0.045, 0.045, 0.15)
    elif f == "mass":
        kind, sx = p
        cx, cy = sx * th * 0.38, -0.12 + rng.normal(0, 0.03)
        if kind == "spiculated":
            ang, r = np.arctan2(y - cy, x - cx), np.hypot(x - cx, y - cy)
            c.img += 0.3 * np.clip((0.11 * (1 + 0.35 * np.cos(9 * ang) ** 8) - r) / 0.02, 0, 1)
        else:
            for dx, dy in ((0, 0), (0.07, 0.05), (-0.05, 0.07)):
                c.img += 0.2 * c.blob(cx + sx * dx, cy + dy, 0.08, 0.07, 0.2)
    elif f == "consolidation":
        (cx, cy), = p
        blob = c.blob(cx * th / 0.8, cy, 0.2, 0.16, 0.7)
        bronchi = (np.sin((x - cx) * 60 + np.sin(y * 20)) > 0.85) * blob  # air bronchograms
        c.img += 0.25 * blob * (0.7 + 0.3 * _smooth_noise(rng, c.size, 8)) * c.lung - 0.08 * bronchi
    elif f == "effusion":
        level, sides = p
        for sx in sides:
            meniscus = level - 0.12 * ((x - sx * th * 0.5) / (th * 0.42)) * sx
            fluid = np.clip((y - meniscus) / 0.04, 0, 1) * (sx * x > 0.08) * (np.abs(x) < th)
            c.img = np.maximum(c.img, 0.52 * fluid * (y < c.dome + 0.08))
    elif f == "pneumothorax":
        kind, sx = p
        side_lung = (sx * x > 0.05) & (c.lung > 0.3)
        if kind == "apical":
            edge = -0.15 - 0.08 * ((x - sx * th * 0.5) / 0.25) ** 2
            gone = side_lung & (y < edge)
            line = np.exp(-(((y - edge) / 0.01) ** 2)) * side_lung
        else:
            edge = sx * th * (0.32 if kind == "large" else 0.22)
            gone = side_lung & (sx * x > sx * edge)
            line = np.exp(-(((x - edge) / 0.01) ** 2)) * side_lung
        c.img = np.where(gone, c.img * 0.3, c.img) + 0.18 * line
        if kind == "tension":  # mediastinum pushed to the other side
            c.img = np.maximum(c.img, 0.55 * c.blob(0.18, 0.0, 0.12, 0.55, 0.15))
    elif f == "interstitial":
        band = (y < -0.1) if p[0] == "upper" else (y > 0.0)
        mesh = (np.abs(np.sin(x * 70)) < 0.18) | (np.abs(np.sin(y * 70 + x * 9)) < 0.18)
        c.img += 0.09 * mesh * band * (c.lung > 0.5)
    elif f == "miliary":
        dots = (_smooth_noise(rng, c.size, 2) > 1.6) * (c.lung > 0.5)
        c.img += 0.16 * dots
    elif f == "honeycomb":
        ring = np.abs(np.sin(x * 45) * np.sin(y * 45)) > 0.75
        c.img += 0.12 * ring * (y > 0.15) * (c.lung > 0.5)
    elif f == "oedema":
        for sx in (-1, 1):
            c.img += 0.16 * c.blob(sx * th * 0.3, -0.05, 0.3, 0.3, 0.9) * c.lung
    elif f == "kerley":
        for sx in (-1, 1):
            for i in range(6):
                yy = 0.05 + i * 0.05
                c.line([(sx * th * 0.85, yy), (sx * th * 0.68, yy)], 0.6, 0.8, mask=False)
    elif f == "plate":
        sx, = p
        band = np.exp(-(((y - 0.25 - 0.15 * (x - sx * 0.5)) / 0.015) ** 2)) * (sx * x > 0.2) * (sx * x < th * 0.85)
        c.img += 0.25 * band
    elif f == "collapse":
        if p[0] == "rul":  # a dense triangle at the right apex with an elevated fissure
            tri = (x < -0.1) & (x > -th * 0.9) & (y < -0.25 - 0.4 * (x + 0.1)) & (y > -0.7) & (c.lung > 0.2)
        else:  # a triangle behind the heart ("sail sign")
            tri = (x > 0.05) & (x < 0.05 + (y - 0.0) * 0.6) & (y < c.dome) & (y > 0.0)
        c.img = np.where(tri, np.maximum(c.img, 0.6), c.img)
    elif f == "heart":
        if p[0] == "wide":
            hw = rng.uniform(0.58, 0.66) * th
            c.img = np.maximum(c.img, 0.56 * c.blob(0.12 * hw, c.a.heart_y, hw, 0.36, 0.12))
        else:
            c.img = np.maximum(c.img, 0.56 * c.blob(0.05, c.a.heart_y + 0.02, th * 0.6, 0.45, 0.06))
    elif f == "hila":
        for sx in (-1, 1):
            for dy in (-0.05, 0.06):
                c.img = np.maximum(c.img, 0.52 * c.blob(sx * 0.2, -0.1 + dy, 0.07, 0.06, 0.2))
    elif f == "mediastinum":
        c.img = np.maximum(c.img, 0.55 * c.blob(0, -0.45, 0.3, 0.4, 0.12))
    elif f == "hernia":
        c.img = np.maximum(c.img, 0.5 * c.blob(0.05, 0.3, 0.14, 0.1, 0.1))
        c.img = np.where((c.blob(0.05, 0.3, 0.12, 0.08, 0.1) > 0.5) & (y < 0.29), 0.12, c.img)
    elif f == "aorta":
        ang = np.arctan2(y + 0.42, x - 0.12)
        arc = np.exp(-(((np.hypot(x - 0.12, y + 0.42) - 0.08) / 0.012) ** 2)) * (ang < 0.2) * (ang > -1.8)
        c.img += 0.45 * arc
    elif f == "free_air":
        crescent = (y < c.dome - 0.01) & (y > c.dome - 0.06) & (x < -0.1) & (x > -th * 0.75)
        c.img = np.where(crescent, 0.05, c.img)
    elif f == "fracture":
        sx, = p
        yy = -0.23 + c.a.rib_gap * rng.integers(0, 3)
        gap = (np.abs(x - sx * th * 0.75) < 0.025) & (np.abs(y - yy - 0.18 * (np.abs(x) / th) ** 2) < 0.04)
        c.img = np.where(gap, c.img * 0.7, c.img)
        c.img += 0.3 * c.blob(sx * th * 0.75, yy + 0.1, 0.05, 0.03, 0.4)  # callus
    elif f == "scoliosis":
        pass  # drawn with the spine (see _render_v2)
    elif f == "granulomas":
        for _ in range(6):
            cx, cy = rng.choice([-1, 1]) * rng.uniform(0.2, th * 0.8), rng.uniform(-0.55, 0.3)
            c.img = np.maximum(c.img, 0.92 * c.blob(cx, cy, 0.012, 0.012, 0.2))
    elif f == "ett":
        tip = 0.04 if p[0] else rng.uniform(-0.32, -0.2)
        c.line(_curve((0.0, -1.0), (0.1 if p[0] else 0.01, tip), 0.02), 0.95, 1.6)
    elif f == "trache":
        c.line([(0.0, -1.0), (0.0, -0.55)], 0.95, 2.5)
        c.line([(-0.12, -0.9), (0.12, -0.9)], 0.97, 2.0)
    elif f == "ngt":
        end = (0.2, 0.3) if p[0] else (th * 0.45, 0.72)
        c.line(_curve((-0.02, -1.0), end, -0.1), 0.9)
        if p[0]:
            t = np.linspace(0, 2 * np.pi, 24)
            c.line(np.stack([0.05 + 0.06 * np.cos(t), -0.55 + 0.06 * np.sin(t)], 1), 0.9)
    elif f == "cvc":
        start, bad = p
        tip = (-0.2, -0.95) if bad else (-0.06, rng.uniform(-0.15, 0.0))
        c.line(_curve(start, tip, 0.12 if start[1] > -0.9 else 0.04), 0.92)
    elif f == "picc":
        sx, = p
        c.line(_curve((sx * 1.0, -0.3), (sx * 0.4, -0.78), 0.05), 0.88)
        c.line(_curve((sx * 0.4, -0.78), (-0.05, -0.05), 0.05), 0.88)
    elif f == "swan":
        c.line(_curve((-0.3, -1.0), (0.0, 0.1), 0.1), 0.92)
        c.line(_curve((0.0, 0.1), (0.3, -0.2), 0.1), 0.92)
    elif f == "drain":
        sx, = p
        c.line(_curve((sx * (th + 0.1), 0.45), (sx * th * 0.5, -0.45), sx * 0.1), 0.9, 2.0)
        for i in range(4):  # side holes
            c.img = np.where(c.blob(sx * th * (0.55 + 0.03 * i), -0.35 + 0.07 * i, 0.012, 0.012, 0.1) > 0.5,
                             0.3, c.img)
    elif f == "pacemaker":
        leads, icd = p
        gx, gy = 0.55, -0.72
        c.img = np.where((np.abs(x - gx) < 0.09) & (np.abs(y - gy) < 0.06), 0.97, c.img)
        c.line(_curve((gx, gy), (0.05, 0.3), -0.2), 0.95, 2.8 if icd else 1.0)
        if leads == 2:
            c.line(_curve((gx, gy), (-0.05, 0.02), -0.1), 0.95)
    elif f == "sternotomy":
        for i in range(5):
            yy = -0.5 + i * 0.14
            c.line([(-0.03, yy), (0.03, yy + 0.02), (-0.03, yy + 0.04)], 0.97, 1.2, mask=False)
    elif f == "valve":
        (cx, cy), r = p
        t = np.linspace(0, 2 * np.pi, 32)
        c.line(np.stack([cx + r * np.cos(t), cy + 0.7 * r * np.sin(t)], 1), 0.97, 1.5, mask=False)
    elif f == "ecg":
        for cx, cy in ((-0.6, -0.75), (0.6, -0.75), (0.55, 0.5), (-0.5, 0.55)):
            c.img = np.maximum(c.img, 0.8 * c.blob(cx, cy, 0.04, 0.04, 0.2) - 0.4 * c.blob(cx, cy, 0.02, 0.02, 0.3))
    elif f == "port":
        c.img = np.maximum(c.img, 0.9 * c.blob(-0.45, -0.6, 0.06, 0.06, 0.1))
        c.line(_curve((-0.45, -0.6), (-0.06, -0.1), 0.1), 0.88)
    elif f == "clips":
        for _ in range(5):
            cx, cy = rng.choice([-1, 1]) * rng.uniform(0.75, 0.9), rng.uniform(-0.75, -0.5)
            c.line([(cx - 0.02, cy - 0.02), (cx, cy + 0.02), (cx + 0.02, cy - 0.02)], 0.97, 1.0, mask=False)
    elif f == "iabp":
        c.img = np.where((np.abs(x - 0.1) < 0.02) & (np.abs(y + 0.3) < 0.02), 0.97, c.img)
        c.line([(0.1, -0.3), (0.08, 1.0)], 0.85)
    elif f == "rods":
        for sx in (-1, 1):
            c.line([(sx * 0.07, -0.4), (sx * 0.07, 0.9)], 0.97, 2.2, mask=False)
    elif f == "shoulder":
        c.img = np.maximum(c.img, 0.95 * c.blob(-0.97, -0.8, 0.1, 0.1, 0.1))
        c.line([(-0.95, -0.75), (-1.0, -0.3)], 0.95, 3.0, mask=False)


@functools.lru_cache(maxsize=4)  # a patient's studies are consecutive
def _patient_layers(a: Anatomy2, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The patient's own lung texture and ribs (the costly part of the anatomy), drawn once."""
    x, y = _grid(size)
    texture = 0.04 * _smooth_noise(np.random.default_rng(a.texture_seed), size, 12)
    ribs = np.zeros_like(x)
    bend = y - 0.18 * (np.abs(x) / a.thorax) ** 2
    for i in range(9):
        ribs += np.exp(-(((bend - (-0.62 + i * a.rib_gap)) / 0.018) ** 2))
    ribs *= 0.09 * (np.abs(x) < a.thorax) * (np.abs(x) > 0.08)
    texture.flags.writeable = ribs.flags.writeable = False
    return texture, ribs


def _render_v2(rng: np.random.Generator, st: Study2, size: int) -> tuple[np.ndarray, np.ndarray]:
    a = st.anatomy
    c = _Canvas(size, a, st, rng)
    x, y, th = c.x, c.y, c.th
    present = [SUBTYPES[j] for j in st.present]
    families = {s.family for s in present}
    img = a.soft * _ellipse(x, y, 0, 0.05, th + 0.1, 1.05, soft=0.15)
    lung = np.zeros_like(x)
    for side in (-1, 1):
        lung = np.maximum(lung, _ellipse(x, y, side * th * 0.5, a.lung_y, th * 0.42, c.lung_h, 0.08))
    texture, ribs = _patient_layers(a, size)
    img = img - lung * (0.2 - texture) + ribs
    if "heart" not in families:
        hw = (a.heart + rng.uniform(-0.02, 0.02)) * th * c.mag
        img = np.maximum(img, 0.55 * _ellipse(x, y, 0.12 * hw, a.heart_y, hw, 0.34, 0.12))
    img = np.maximum(img, 0.5 * _ellipse(x, y, 0, -0.35, 0.14, 0.5, 0.15))
    spine_x = 0.12 * np.sin((y + 1) * 1.6) if "scoliosis" in families else 0.0
    img = np.maximum(img, 0.62 * (np.abs(x - spine_x) < a.spine_w) * (y > -0.95))
    c.dome = a.dome / st.inspiration
    dome = c.dome + 0.12 * (x / th) ** 2
    img = np.maximum(img, 0.5 * np.clip((y - dome) / 0.05, 0, 1) * (np.abs(x) < th + 0.05))
    c.img, c.lung = img.astype(np.float32), lung
    for s in present:
        _draw(c, s)
    img, mask = c.img * a.exposure, c.mask
    rot = st.rotation
    dx, dy = (round(v * size / 2) for v in st.shift)
    if abs(rot) > 0.5 or dx or dy:
        img = np.asarray(Image.fromarray(img.astype(np.float32), "F").rotate(
            rot, Image.Resampling.BILINEAR, translate=(dx, dy)))
        mask = np.asarray(Image.fromarray(mask * 255).rotate(rot, Image.Resampling.NEAREST, translate=(dx, dy))) // 255
    img = img + rng.normal(0, a.noise, img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32), mask.astype(np.uint8)


DEVICE_FAMILIES = frozenset({"ett", "trache", "ngt", "cvc", "picc", "swan", "drain", "pacemaker", "sternotomy",
                             "valve", "ecg", "port", "clips", "iabp", "rods", "shoulder"})
_V2_NEG = {"cardiomegaly": "Heart size is normal.", "pleural_effusion": "No pleural effusion.",
           "consolidation": "No focal consolidation.", "nodule": "No pulmonary nodules.",
           "pneumothorax": "No pneumothorax."}


def report_v2(rng: np.random.Generator, st: Study2, labels: dict[str, int]) -> str:
    """Every present subtype is named by its phrase; absent v1 findings are negated as in v1."""
    present = [SUBTYPES[j] for j in st.present]
    devices = [f"{s.phrase[0].upper()}{s.phrase[1:]}." for s in present if s.family in DEVICE_FAMILIES]
    lead = ("There is evidence of", "Again seen:" if st.timepoint else "New:", "Noted:", "Demonstrated:")
    findings = [f"{lead[int(rng.integers(len(lead)))]} {s.phrase}." for s in present
                if s.family not in DEVICE_FAMILIES]
    negatives = [_V2_NEG[k] for k in FINDINGS if not labels[k]]
    rng.shuffle(negatives)
    if labels["tip_malpositioned"]:
        devices.append("Recommend repositioning of the malpositioned line.")
    text = "FINDINGS: " + " ".join(devices + findings + negatives)
    text += " IMPRESSION: " + (" ".join(findings) if findings else "No acute cardiopulmonary abnormality.")
    return text


def v2_labels(st: Study2) -> dict[str, int]:
    present = [SUBTYPES[j] for j in st.present]
    labels = {k: int(any(s.legacy == k for s in present)) for k in (*FINDINGS, *DEVICES)}
    labels["tip_malpositioned"] = int(any(s.malpositioned for s in present))
    return labels


# ---- the foreign domain (``--style foreign``) ---------------------------------------------------------
#
# Another hospital's scanner: a flatter gamma, strong unsharp-mask edge enhancement, a heel-effect
# ramp, anti-scatter grid lines, collimation borders, a burned-in marker and signal-dependent,
# coarser noise; its patients come from a wider anatomy mix (``_foreign_anatomy``, ``_anatomy2``).


def _foreign_anatomy(rng: np.random.Generator) -> Anatomy:
    return Anatomy(thorax=rng.uniform(0.62, 0.93), lung_h=rng.uniform(0.46, 0.66), heart=rng.uniform(0.37, 0.5),
                   exposure=rng.uniform(0.7, 1.3), rotation=rng.uniform(-9, 9), noise=rng.uniform(0.02, 0.05))


def foreign_look(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Re-render a display image [0, 1] as the foreign site's scanner would show it."""
    size = img.shape[0]
    ax = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    x, y = ax[None, :], ax[:, None]  # broadcast rows and columns: no full grids
    small = max(8, size // 10)
    blur = np.asarray(Image.fromarray(img, "F").resize((small, small), Image.Resampling.BILINEAR)
                      .resize((size, size), Image.Resampling.BILINEAR))
    out = 0.18 + 0.62 * np.sqrt(np.clip(img, 0, 1))  # flatter gamma, raised floor
    out += np.float32(rng.uniform(0.6, 1.0)) * (img - blur)  # edge enhancement
    out *= 1.0 - 0.18 * (y + 1) / 2  # heel effect
    out += 0.025 * np.sin(x * size * np.float32(np.pi / rng.uniform(2.2, 3.0)))  # anti-scatter grid lines
    out += np.sqrt(np.clip(out, 0, 1)) * rng.normal(0, 0.035, out.shape).astype(np.float32)  # quantum noise
    out += 0.03 * _smooth_noise(rng, size, 4)
    b = rng.uniform(0.03, 0.08, 4)  # collimation: unexposed (bright) margins
    out[:, (ax < -1 + b[0]) | (ax > 1 - b[1])] = 0.92
    out[(ax < -1 + b[2]) | (ax > 1 - b[3]), :] = 0.92
    mx, my = np.abs(ax + 0.8) < 0.05, np.abs(ax + 0.8) < 0.07
    out[np.ix_(my, mx & (np.abs(ax + 0.8) > 0.02))] = 1.0  # a burned-in marker
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# ---- corpus -------------------------------------------------------------------------------------------


def write_corpus(out: str | Path, images: int, seed: int = 0, size: int = 256,
                 studies_per_patient: tuple[int, int] = (1, 4), version: int = 1,
                 style: str = "default") -> dict[str, Any]:
    """Write ``images`` DICOMs, their catheter masks (PNG) and ``manifest.csv`` under ``out``.

    ``version=2`` writes the long-tail corpus (subtype columns, ``study_date``, ``timepoint`` and
    ``subtypes.json``); ``style="foreign"`` renders another site's scanner look and patient mix.
    The defaults write exactly what this generator always wrote. v2 draws its own number of
    studies per patient (``V2_STUDIES_PER_PATIENT``) and ignores ``studies_per_patient``.
    """
    if version not in (1, 2) or style not in STYLES:
        raise ValueError(f"version must be 1 or 2 and style one of {STYLES}")
    root = Path(out)
    (root / "dicom").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    j2k = _j2k_available()
    foreign = style == "foreign"
    if version == 2:
        return _write_v2(root, images, seed, size, foreign, j2k)
    rows: list[dict[str, Any]] = []
    patient, remaining, anatomy = -1, 0, None
    prng = np.random.default_rng([seed, 0])
    for i in range(images):
        if remaining == 0:  # a new patient with their own anatomy and number of studies
            patient += 1
            remaining = int(prng.integers(studies_per_patient[0], studies_per_patient[1] + 1))
            anatomy = (_foreign_anatomy(np.random.default_rng([seed, 5, patient])) if foreign
                       else _anatomy(np.random.default_rng([seed, 1, patient])))
        remaining -= 1
        rng = np.random.default_rng([seed, 2, i])
        case = render(rng, anatomy, size)  # the same labels in either style: only the pixels differ
        if foreign:
            case.image = foreign_look(np.random.default_rng([seed, 6, i]), case.image)
        pid = f"{'FX' if foreign else 'PH'}{seed:03d}{patient:06d}"
        tag = ("foreign",) if foreign else ()
        study_uid, sop_uid = _uid(seed, *tag, "study", i), _uid(seed, *tag, "image", i)
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


def _write_v2(root: Path, images: int, seed: int, size: int, foreign: bool, j2k: bool) -> dict[str, Any]:
    import datetime
    import json

    rows: list[dict[str, Any]] = []
    plan = plan_v2(images, seed, foreign)
    style = "foreign" if foreign else "default"
    for st in plan:
        i = st.index
        rng = np.random.default_rng([seed, 12, i])
        image, mask = _render_v2(rng, st, size)
        if foreign:
            image = foreign_look(np.random.default_rng([seed, 13, i]), image)
        labels = v2_labels(st)
        pid = f"{'FX' if foreign else 'PH'}{seed:03d}{st.patient:06d}"
        date = datetime.date(2020, 1, 1) + datetime.timedelta(days=st.day)
        study_uid, sop_uid = _uid(seed, "v2", style, "study", i), _uid(seed, "v2", style, "image", i)
        rel = f"dicom/{pid}/{i:07d}.dcm"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(write_dicom(image, _encoding(rng, j2k), patient_id=pid, study_uid=study_uid,
                                             sop_uid=sop_uid, view=st.view, study_date=date.strftime("%Y%m%d")))
        mask_rel = f"masks/{i:07d}.png"
        Image.fromarray(mask * 255).save(root / mask_rel, optimize=False)
        present = set(st.present)
        rows.append({"image": rel, "patient_id": pid, "study_id": study_uid, "view": st.view,
                     "report": report_v2(rng, st, labels), **{k: labels[k] for k in LABELS},
                     "catheter_mask": mask_rel, "study_date": date.isoformat(), "timepoint": st.timepoint,
                     **{c: int(j in present) for j, c in enumerate(SUBTYPE_COLUMNS)}})
    with open(root / "manifest.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    counts = {s.name: int(sum(r[c] for r in rows)) for s, c in zip(SUBTYPES, SUBTYPE_COLUMNS, strict=True)}
    (root / "subtypes.json").write_text(json.dumps(
        [{"column": c, **{k: v for k, v in dataclasses.asdict(s).items() if k != "params"}, "count": counts[s.name]}
         for s, c in zip(SUBTYPES, SUBTYPE_COLUMNS, strict=True)], indent=1))
    prevalence = {k: float(np.mean([r[k] == 1 for r in rows])) for k in LABELS}
    return {"images": images, "patients": plan[-1].patient + 1, "manifest": str(root / "manifest.csv"),
            "prevalence": prevalence, "version": 2, "style": style,
            "subtypes_present": sum(v > 0 for v in counts.values()),
            "subtypes_with_10": sum(v >= 10 for v in counts.values())}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import time

    ap = argparse.ArgumentParser(prog="radscale phantom", description="Write a phantom chest X-ray corpus.")
    ap.add_argument("--out", required=True, help="output folder (DICOMs, masks/, manifest.csv)")
    ap.add_argument("--images", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=256, help="image side in pixels")
    ap.add_argument("--version", type=int, choices=(1, 2), default=1,
                    help="1: the original corpus; 2: the long tail of subtypes with repeated studies")
    ap.add_argument("--style", choices=STYLES, default="default", help="foreign: another site's scanner look")
    args = ap.parse_args(argv)
    if args.images < 1 or args.size < 64:
        ap.error("--images must be >= 1 and --size >= 64")
    start = time.perf_counter()
    info = write_corpus(args.out, args.images, seed=args.seed, size=args.size, version=args.version,
                        style=args.style)
    info["seconds"] = round(time.perf_counter() - start, 2)
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
