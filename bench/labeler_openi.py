"""The report labeler against human indexing: OpenI MeSH terms, and the phantom's own labels.

    .venv/bin/python bench/labeler_openi.py [--phantom 2000] [--json out.json]

OpenI: the 3,955 Indiana reports in torchxrayvision's wheel (``data/NLMCXR_reports.tgz``, CC BY-NC-ND
4.0: read from the installed package, never copied). Text = FINDINGS + IMPRESSION; reference = the
MeSH ``major`` headings (the XMLs carry ``major`` and ``automatic`` terms and no ``minor`` ones;
``automatic`` terms are machine-made, so they are not a reference). A heading counts by its first
part ("Pleural Effusion/right/small" -> "Pleural Effusion"); :data:`MESH` maps it to radscale labels,
for the labels both cover. Per label it prints precision/recall/F1 of

- the labeler: a report is positive when :func:`labeler.positives` says so (present or uncertain,
  what clinical F1 counts), and
- a keyword baseline: positive when the label's keyword (:data:`KEYWORDS`) appears anywhere.

Phantom: reports rendered by ``trainer/data/phantom.py`` from its own labels (images at 64 px, only
to draw the same labels and device notes as the corpus), scored against those labels with
uncertain (-1) references left out per label (U-Ignore, as the probes do).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from radscale.trainer.evaluate import labeler

# radscale label -> MeSH major headings (first part) that mean it
MESH: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("Cardiomegaly",),
    "pleural_effusion": ("Pleural Effusion",),
    "pneumothorax": ("Pneumothorax", "Hydropneumothorax", "Hemopneumothorax"),
    "consolidation": ("Consolidation",),
    "pneumonia": ("Pneumonia",),
    "atelectasis": ("Pulmonary Atelectasis",),
    "edema": ("Pulmonary Edema", "Pulmonary Congestion"),
    "nodule": ("Nodule", "Mass"),
    "fracture": ("Fractures, Bone",),
    "lung_opacity": ("Opacity", "Infiltrate", "Airspace Disease", "Density"),
    "cvc": ("Catheters, Indwelling",),
}
# the plain keyword baseline: the label's keyword anywhere in the report
KEYWORDS: dict[str, str] = {
    "cardiomegaly": "cardiomegaly", "pleural_effusion": "effusion", "pneumothorax": "pneumothorax",
    "consolidation": "consolidation", "pneumonia": "pneumonia", "atelectasis": "atelectasis", "edema": "edema",
    "nodule": "nodule", "fracture": "fracture", "lung_opacity": "opacity", "cvc": "catheter",
    "ett": "endotracheal", "ngt": "nasogastric", "chest_drain": "chest drain", "pacemaker": "pacemaker",
}
PHANTOM_LABELS = ("cardiomegaly", "pleural_effusion", "consolidation", "nodule", "pneumothorax",
                  "ett", "ngt", "cvc", "chest_drain", "pacemaker")


def openi_path() -> Path | None:
    """torchxrayvision's ``data/NLMCXR_reports.tgz``, found without importing torchxrayvision."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "NLMCXR_reports.tgz"
    return path if path.is_file() else None


def openi_reports(path: Path | None = None) -> list[tuple[str, frozenset[str]]]:
    """(FINDINGS + IMPRESSION, first parts of the MeSH major headings) per report."""
    path = path or openi_path()
    if path is None:
        raise FileNotFoundError("torchxrayvision's data/NLMCXR_reports.tgz is not installed")
    out = []
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith(".xml"):
                root = ET.fromstring(tar.extractfile(member).read())
                text = " ".join(a.text or "" for a in root.iter("AbstractText")
                                if a.get("Label") in ("FINDINGS", "IMPRESSION"))
                out.append((text, frozenset((m.text or "").split("/")[0].strip() for m in root.iter("major"))))
    return out


def prf(pred: np.ndarray, ref: np.ndarray) -> dict[str, float | int]:
    tp, fp, fn = int((pred & ref).sum()), int((pred & ~ref).sum()), int((~pred & ref).sum())
    return {"precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1),
            "f1": 2 * tp / max(2 * tp + fp + fn, 1), "support": int(ref.sum())}


def keyword(texts: list[str], labels: tuple[str, ...]) -> np.ndarray:
    pats = [re.compile(r"\b" + re.escape(KEYWORDS[k]), re.I) for k in labels]
    return np.array([[bool(p.search(t)) for p in pats] for t in texts], dtype=bool).reshape(len(texts), len(labels))


def openi_table(reports: list[tuple[str, frozenset[str]]] | None = None) -> dict[str, dict[str, dict]]:
    """Per covered label: {"labeler": prf, "keyword": prf, "labeler_certain": prf} against the MeSH
    indexing; ``labeler_certain`` counts only mentions read as present (uncertain ones as negative)."""
    reports = openi_reports() if reports is None else reports
    labels = tuple(MESH)
    texts = [t for t, _ in reports]
    ref = np.array([[bool(mesh & set(MESH[k])) for k in labels] for _, mesh in reports], dtype=bool)
    ours, base = labeler.positives(texts, labels), keyword(texts, labels)
    certain = np.array([[v == 1 for v in labeler.label(t, labels).values()] for t in texts], dtype=bool)
    return {k: {"labeler": prf(ours[:, j], ref[:, j]), "keyword": prf(base[:, j], ref[:, j]),
                "labeler_certain": prf(certain[:, j], ref[:, j])} for j, k in enumerate(labels)}


def phantom_reports(n: int, seed: int = 0) -> list[tuple[str, dict[str, int]]]:
    """``n`` phantom reports with the labels they were written from."""
    from radscale.trainer.data import phantom

    out = []
    for i in range(n):
        rng = np.random.default_rng([seed, 2, i])
        case = phantom.render(rng, phantom._anatomy(np.random.default_rng([seed, 1, i])), 64)
        out.append((phantom.report(rng, case), dict(case.labels)))
    return out


def phantom_table(reports: list[tuple[str, dict[str, int]]]) -> dict[str, dict]:
    """Per phantom label: prf of :func:`labeler.positives` against the phantom's labels, uncertain
    (-1) references left out (U-Ignore)."""
    labels = PHANTOM_LABELS
    pred = labeler.positives([t for t, _ in reports], labels)
    ref = np.array([[lab[k] for k in labels] for _, lab in reports])
    return {k: prf(pred[ref[:, j] != -1, j], ref[ref[:, j] != -1, j] == 1) for j, k in enumerate(labels)}


def _markdown(openi: dict | None, ph: dict | None) -> str:
    lines = []
    if openi is not None:
        lines += ["| label | MeSH heading(s) | n | labeler P | labeler R | labeler F1 | keyword P | keyword R "
                  "| keyword F1 | labeler F1, certain only |", "|---|---|---|---|---|---|---|---|---|---|"]
        for k, row in openi.items():
            a, b = row["labeler"], row["keyword"]
            lines.append(f"| {k} | {', '.join(MESH[k])} | {a['support']} | {a['precision']:.2f} | {a['recall']:.2f} "
                         f"| **{a['f1']:.2f}** | {b['precision']:.2f} | {b['recall']:.2f} | {b['f1']:.2f} "
                         f"| {row['labeler_certain']['f1']:.2f} |")
    if ph is not None:
        lines += ["", "| phantom label | n | precision | recall | F1 |", "|---|---|---|---|---|"]
        lines += [f"| {k} | {r['support']} | {r['precision']:.2f} | {r['recall']:.2f} | {r['f1']:.2f} |"
                  for k, r in ph.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--phantom", type=int, default=2000, help="phantom reports to score (0: none)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args(argv)
    openi = openi_table() if openi_path() else None
    if openi is None:
        print("torchxrayvision's data/NLMCXR_reports.tgz is not installed: OpenI check skipped", file=sys.stderr)
    ph = phantom_table(phantom_reports(args.phantom)) if args.phantom else None
    print(_markdown(openi, ph))
    if args.json:
        args.json.write_text(json.dumps({"openi": openi, "phantom": ph}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
