"""A rule-based, CheXpert-style labeler for chest X-ray reports, with negation, uncertainty and
devices. Offline and deterministic: it gives clinical F1 for generated reports without model
weights (RadGraph and CheXbert need downloads).

Per label: 1 mentioned as present, 0 mentioned as absent (negated, or a normal-finding phrase
such as "heart size is normal"), -1 uncertain ("cannot exclude", "possible"), None not mentioned.

Negation and uncertainty follow NegEx/NegBio-style trigger rules, compactly (no spaCy pipeline:
see docs/evaluation.md for why):

- scope: the sentence, cut at termination words ("but", "however", "which", "there is", ...);
- pre-triggers before the mention: negation ("no", "without", "negative for", "resolution of")
  reaches through the rest of the scope, lists included ("no consolidation, effusion, or
  pneumothorax"); uncertainty ("possible", "may", "suspicious", "could be") reaches only to the
  next comma ("no effusion, possible atelectasis"); negated uncertainty ("cannot exclude", "not
  ruled out") is uncertain;
- the nearest trigger that reaches the mention decides, except that a negation before an
  uncertainty trigger in the same clause negates it ("no suspicious nodule", "no pleural line to
  suggest pneumothorax": absent, not uncertain);
- pseudo-negations negate nothing ("no significant change in the pneumothorax": present);
- post-triggers right after the mention: "... is not seen", "... has resolved" (absent), "...
  cannot be excluded", "... is in the differential" (uncertain).

When a label is mentioned several times, present beats uncertain beats absent (CheXpert's rule).
:func:`positives` (what clinical F1 counts) takes uncertain as positive; the measurements against
the phantom's labels leave uncertain references out (U-Ignore, as the probes do).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

# mention patterns per label (lower case, word-bounded when compiled). Finding terms follow
# CheXpert's mention lists: airspace disease/opacity is lung opacity, vascular congestion is edema.
MENTIONS: dict[str, tuple[str, ...]] = {
    "cardiomegaly": ("cardiomegaly", r"(?:heart|cardiac silhouette|cardiac)(?: size| silhouette| shadow)? "
                     r"(?:is |appears |remains |may be |might be |could be )?(?:again )?"
                     r"(?:mildly |moderately |markedly |slightly |significantly )?(?:enlarged|large)",
                     r"enlarged (?:heart|cardiac)", r"cardiac enlargement"),
    "pleural_effusion": (r"pleural (?:effusions?|fluid)", r"effusions?", r"blunting of the (?:\w+ )?costophrenic"),
    "pneumothorax": (r"pneumothora(?:x|ces)", r"hydropneumothorax"),
    "consolidation": (r"consolidat(?:ions?|ive|ed)",),
    "pneumonia": (r"pneumonias?",),
    "atelectasis": (r"atelecta(?:sis|ses|tic)", r"collapse"),
    "edema": (r"(?:pulmonary )?edema", r"vascular congestion", r"pulmonary congestion"),
    "nodule": (r"nodules?", r"nodular (?:opacit(?:y|ies)|density)", r"mass(?:es)?"),
    "fracture": (r"fractures?",),
    "lung_opacity": (r"opacit(?:y|ies)", r"densit(?:y|ies)", r"infiltrates?", r"air ?space (?:disease|process)"),
    # devices
    "ett": (r"endotracheal tube", r"\bet tube", r"\bett\b"),
    "ngt": (r"(?:nasogastric|orogastric|enteric|feeding) tube", r"\bng tube", r"\bog tube", r"\bngt\b"),
    "cvc": (r"central (?:venous )?(?:line|catheter)", r"picc(?: line)?", r"(?:internal jugular|ij|subclavian) "
            r"(?:venous )?(?:line|catheter|central)", r"port-?a-?cath", r"\bcvc\b",
            r"(?:venous|dialysis|hemodialysis|jugular|subclavian|swan-ganz|central) (?:\w+ )?catheters?",
            r"catheter tip", r"(?:medi|power ?)port", r"(?:tunneled|lumen) catheter",
            r"tip (?:\w+ ){0,5}(?:svc|superior vena cava|cavoatrial|brachiocephalic|right atrium)"),
    "chest_drain": (r"chest (?:tubes?|drains?)", r"(?:pleural|intercostal|thoracostomy) (?:drains?|tubes?|catheters?)",
                    r"pigtail catheter"),
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
# NegEx/NegBio-style triggers. Pre-negation: before the mention, scope to the end of the clause.
NEGATION = (r"\bno\b", r"\bnot\b", r"\bwithout\b", r"negative for", r"free of", r"clear of", r"\bnor\b",
            r"absence of", r"resolution of", r"resolved", r"removal of", r"interval removal", r"\babsent\b",
            r"rather than")
# negated uncertainty ("cannot exclude"): uncertain, and matched before the plain "not" inside it
NEGATED_UNCERTAIN = (r"cannot (?:be )?(?:exclude|ruled? out)", r"can not (?:be )?(?:exclude|ruled? out)",
                     r"could not (?:be )?(?:exclude|ruled? out)", r"not (?:be )?(?:excluded|ruled out)",
                     r"can't (?:be )?exclude")
# pre-uncertainty: its scope ends at the next comma ("possible atelectasis, no effusion")
UNCERTAIN = (r"\bmay\b", r"\bmight\b", r"possibl[ey]", r"\bprobabl[ey]", r"questionabl[ey]",
             r"(?:could|can) represent", r"suggest", r"suspicious", r"suspected", r"\bversus\b", r"\bvs\b",
             r"concern(?:ing)? for", r"differential", r"equivocal", r"likely", r"question of", r"consider",
             r"borderline", r"\bquestion\b", r"(?:could|would|can) (?:be|include)", r"may be due")
# pseudo-negations: look like a trigger, negate nothing ("no change in the effusion")
PSEUDO = (r"\bno (?:significant |appreciable |substantial |definite )?(?:interval )?(?:change|increase|decrease)",
          r"\bwithout (?:significant |interval )?change", r"\bnot only\b", r"\bnot (?:significantly )?changed")
# post-triggers: right after the mention, in the same clause
POST_NEGATION = (r"^[^.,]{0,40}?\b(?:is|are|was|were)\s+(?:not\s+(?:seen|identified|present|visualized|"
                 r"demonstrated)|absent|no longer (?:seen|visible|present|identified))"
                 r"|^[^.,]{0,20}?\b(?:has|have)\s+(?:resolved|cleared|been removed)")
POST_UNCERTAIN = (r"^[^.,]{0,40}?\b(?:(?:cannot|can not|could not|not) (?:be )?(?:excluded|ruled out)|"
                  r"(?:is|are) (?:suspected|questioned|possible|not excluded|in the differential|a possibility))")
# "no ... to suggest X": an uncertainty trigger that a negation anywhere before it in the scope negates
NEGATED_BY_SCOPE = r"\bto (?:suggest|indicate)"
# scope termination: contrast words and clause starts cut a sentence into scopes
CONTRAST = re.compile(r"\b(?:but|however|although|though|except|aside from|apart from|which|there (?:is|are))\b")
SENTENCE = re.compile(r"(?<=[.;!?])\s+|(?<=[a-z])\.(?=[A-Za-z])|\n+")

LABELS = tuple(MENTIONS)
FINDINGS = ("cardiomegaly", "pleural_effusion", "pneumothorax", "consolidation", "pneumonia", "atelectasis",
            "edema", "nodule", "fracture", "lung_opacity")
DEVICES = ("ett", "ngt", "cvc", "chest_drain", "pacemaker")

_MENTION = {k: re.compile(r"\b(?:" + "|".join(v) + r")") for k, v in MENTIONS.items()}
_NORMAL = {k: re.compile("|".join(v)) for k, v in NORMAL.items()}
_CUE = re.compile(f"(?P<tosuggest>{NEGATED_BY_SCOPE})|(?P<negunc>{'|'.join(NEGATED_UNCERTAIN)})"
                  f"|(?P<neg>{'|'.join(NEGATION)})|(?P<unc>{'|'.join(UNCERTAIN)})")
_UNC = re.compile("|".join(UNCERTAIN))
_PSEUDO = re.compile("|".join(PSEUDO))
_POST_NEG = re.compile(POST_NEGATION)
_POST_UNC = re.compile(POST_UNCERTAIN)
_RANK = {1: 3, -1: 2, 0: 1}


def _scopes(text: str) -> Iterable[str]:
    for sentence in SENTENCE.split(text):
        yield from (part for part in CONTRAST.split(sentence.lower()) if part.strip())


def _value(scope: str, start: int, end: int) -> int:
    """1, 0 or -1 for the mention ``scope[start:end]``: the nearest trigger that reaches it decides."""
    after = scope[end:]
    if _POST_UNC.search(after):
        return -1
    if _POST_NEG.search(after):
        return 0
    if _UNC.search(scope[start:end]):  # "the heart may be enlarged"
        return -1
    before = _PSEUDO.sub(lambda m: " " * len(m.group()), scope[:start])
    clause = before.rfind(",") + 1  # where an uncertainty trigger's reach begins
    cues = [(m.start(), m.lastgroup) for m in _CUE.finditer(before)]
    reaching = [(pos, kind) for pos, kind in cues if kind != "unc" or pos >= clause]
    if reaching and reaching[-1][1] == "tosuggest":
        return 0 if any(k == "neg" for _, k in cues) else -1
    if not reaching:
        return 1
    pos, kind = reaching[-1]
    if kind == "neg":
        return 0
    if kind == "unc" and any(k == "neg" and clause <= p < pos for p, k in cues):
        return 0  # "no suspicious nodule", "no pleural line to suggest pneumothorax"
    return -1


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
