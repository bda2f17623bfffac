"""A rule-based, CheXpert-style labeler for chest X-ray reports, with negation, uncertainty and
devices. Offline and deterministic: it gives clinical F1 for generated reports without model
weights (RadGraph and CheXbert need downloads).

Per label: 1 mentioned as present, 0 mentioned as absent (negated, or a normal-finding phrase
such as "heart size is normal"), -1 uncertain ("cannot exclude", "possible"), None not mentioned.
Scope is the sentence, cut at contrast words ("but", "however"); a negation or uncertainty cue
counts when it precedes the mention within the scope, or follows it as "... is/are not seen".
When a label is mentioned several times, present beats uncertain beats absent (CheXpert's rule).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

# mention patterns per label (lower case, word-bounded when compiled)
MENTIONS: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("cardiomegaly", r"(?:heart|cardiac silhouette|cardiac) (?:is |appears |remains )?"
                     r"(?:mildly |moderately |markedly |slightly )?(?:enlarged|large)", r"enlarged (?:heart|cardiac)",
                     r"cardiac enlargement"),
    "pleural_effusion": (r"pleural (?:effusions?|fluid)", r"effusions?", r"blunting of the (?:\w+ )?costophrenic"),
    "pneumothorax": (r"pneumothora(?:x|ces)",),
    "consolidation": (r"consolidations?", r"airspace (?:disease|opacit(?:y|ies))"),
    "pneumonia": (r"pneumonias?",),
    "atelectasis": (r"atelecta(?:sis|ses|tic)", r"collapse"),
    "edema": (r"(?:pulmonary )?edema", r"vascular congestion", r"interstitial prominence"),
    "nodule": (r"nodules?", r"nodular (?:opacit(?:y|ies)|density)", r"mass(?:es)?"),
    "fracture": (r"fractures?",),
    "lung_opacity": (r"opacit(?:y|ies)", r"densit(?:y|ies)", r"infiltrates?"),
    # devices
    "ett": (r"endotracheal tube", r"\bet tube", r"\bett\b"),
    "ngt": (r"(?:nasogastric|orogastric|enteric|feeding) tube", r"\bng tube", r"\bog tube", r"\bngt\b"),
    "cvc": (r"central (?:venous )?(?:line|catheter)", r"picc(?: line)?", r"(?:internal jugular|subclavian) "
            r"(?:line|catheter|central)", r"port-?a-?cath", r"\bcvc\b"),
    "chest_drain": (r"chest tubes?", r"pleural (?:drain|catheter)", r"pigtail catheter"),
    "pacemaker": (r"pacemaker", r"pacing (?:wires?|leads?)", r"\baicd\b", r"defibrillator", r"cardiac device"),
}
# phrases that state a label is absent without a negation word
NORMAL: dict[str, tuple[str, ...]] = {
    "cardiomegaly": (r"heart (?:size )?(?:is |are |appears |remains )?(?:normal|within normal limits|"
                     r"upper limits of normal)", r"normal (?:heart|cardiac) (?:size|silhouette)",
                     r"cardiomediastinal silhouette (?:is |appears |remains )?(?:normal|within normal|stable)",
                     r"cardiac silhouette (?:is |appears )?(?:normal|within normal)"),
    "lung_opacity": (r"lungs? (?:are |is )?clear",),
    "consolidation": (r"lungs? (?:are |is )?clear",),
    "pleural_effusion": (r"costophrenic (?:angles|sulci) (?:are )?(?:sharp|clear)",),
}
NEGATION = (r"\bno\b", r"\bnot\b", r"\bwithout\b", r"negative for", r"free of", r"clear of", r"\bnor\b",
            r"resolution of", r"resolved", r"removal of", r"interval removal", r"\babsent\b", r"rather than")
UNCERTAIN = (r"\bmay\b", r"\bmight\b", r"possibl[ey]", r"\bprobabl[ey]", r"questionabl[ey]", r"cannot (?:be )?"
             r"exclude", r"can not (?:be )?exclude", r"not (?:be )?excluded", r"(?:could|can) represent",
             r"suggest", r"suspicious", r"\bversus\b", r"\bvs\b", r"concern for", r"differential", r"equivocal",
             r"likely", r"question of", r"consider", r"borderline")
POST_NEGATION = r"^[^.]{0,40}?\b(?:is|are|was|were)\s+(?:not\s+(?:seen|identified|present|visualized)|absent)"
CONTRAST = re.compile(r"\b(?:but|however|although|though|except)\b")
SENTENCE = re.compile(r"(?<=[.;!?])\s+|\n+")

LABELS = tuple(MENTIONS)
FINDINGS = ("cardiomegaly", "pleural_effusion", "pneumothorax", "consolidation", "pneumonia", "atelectasis",
            "edema", "nodule", "fracture", "lung_opacity")
DEVICES = ("ett", "ngt", "cvc", "chest_drain", "pacemaker")

_MENTION = {k: re.compile(r"\b(?:" + "|".join(v) + r")") for k, v in MENTIONS.items()}
_NORMAL = {k: re.compile("|".join(v)) for k, v in NORMAL.items()}
_NEG = re.compile("|".join(NEGATION))
_UNC = re.compile("|".join(UNCERTAIN))
_POST_NEG = re.compile(POST_NEGATION)
_RANK = {1: 3, -1: 2, 0: 1}


def _scopes(text: str) -> Iterable[str]:
    for sentence in SENTENCE.split(text.lower()):
        yield from (part for part in CONTRAST.split(sentence) if part.strip())


def _value(scope: str, start: int, end: int) -> int:
    before, after = scope[:start], scope[end:]
    if _POST_NEG.search(after):
        return 0
    if _UNC.search(before) or re.match(r"^\s*(?:cannot be|can not be|not) excluded", after):
        return -1
    if _NEG.search(before):
        return 0
    return 1


def label(text: str, labels: Sequence[str] = LABELS) -> dict[str, int | None]:
    """Label one report."""
    out: dict[str, int | None] = dict.fromkeys(labels)
    for scope in _scopes(text or ""):
        for name in labels:
            found: list[int] = [_value(scope, m.start(), m.end()) for m in _MENTION[name].finditer(scope)]
            if name in _NORMAL and _NORMAL[name].search(scope):
                found.append(0)
            for value in found:
                if out[name] is None or _RANK[value] > _RANK[out[name]]:
                    out[name] = value
    return out


def positives(texts: Sequence[str], labels: Sequence[str] = FINDINGS) -> np.ndarray:
    """(N, L) bool: each label present or uncertain (uncertain counts as positive, as in
    CheXpert-based report metrics)."""
    return np.array([[v in (1, -1) for v in label(t, labels).values()] for t in texts], dtype=bool
                    ).reshape(len(texts), len(labels))


def f1(generated: np.ndarray, reference: np.ndarray) -> float:
    """Micro F1 of two :func:`positives` arrays."""
    tp = int((generated & reference).sum())
    wrong = int((generated ^ reference).sum())
    return 2 * tp / max(2 * tp + wrong, 1)


def clinical_f1(generated: Sequence[str], reference: Sequence[str], labels: Sequence[str] = FINDINGS) -> float:
    """Micro F1 of positive findings between generated and reference reports."""
    if len(generated) != len(reference):
        raise ValueError(f"{len(generated)} generated reports for {len(reference)} references")
    return f1(positives(generated, labels), positives(reference, labels))
