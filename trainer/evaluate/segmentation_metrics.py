"""Dice and clDice (centreline Dice; Shit et al., 2021) for thin, elongated structures such as
catheters: clDice asks whether the prediction follows the structure's centreline and keeps it
connected, whatever its thickness. Skeletons by scikit-image."""

from __future__ import annotations

import numpy as np
from skimage.morphology import skeletonize


def dice(pred: np.ndarray, target: np.ndarray) -> float:
    """2|P∩T| / (|P|+|T|) over boolean masks; 1.0 when both are empty."""
    p, t = pred.astype(bool), target.astype(bool)
    total = p.sum() + t.sum()
    return 1.0 if total == 0 else float(2 * (p & t).sum() / total)


def cldice(pred: np.ndarray, target: np.ndarray) -> float:
    """Harmonic mean of topology precision |S(P)∩T|/|S(P)| and topology sensitivity |S(T)∩P|/|S(T)|,
    where S is the skeleton; 1.0 when both are empty, 0.0 when only one is."""
    p, t = pred.astype(bool), target.astype(bool)
    if not p.any() and not t.any():
        return 1.0
    if not p.any() or not t.any():
        return 0.0
    sp, st = skeletonize(p), skeletonize(t)
    tprec = (sp & t).sum() / max(sp.sum(), 1)
    tsens = (st & p).sum() / max(st.sum(), 1)
    return 0.0 if tprec + tsens == 0 else float(2 * tprec * tsens / (tprec + tsens))
