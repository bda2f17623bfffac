"""Multi-label linear probe on frozen features, scored by AUROC with a bootstrap 95% CI.

Label policy (CheXpert's U-Ignore): ``1`` positive, ``0`` negative; ``-1`` (uncertain) and blank
(NaN) are left out, both from the probe's loss and from the metrics, per label. A label whose
test rows lack one of the two classes has no AUROC and is left out of the macro average.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch import nn


@dataclasses.dataclass(frozen=True)
class Scores:
    per_label: dict[str, float]
    macro: float
    ci_low: float
    ci_high: float


def known(labels: np.ndarray) -> np.ndarray:
    """Where a label counts: 0 or 1 (not -1 uncertain, not NaN blank)."""
    return (labels == 0) | (labels == 1)


def train_probe(x: np.ndarray, y: np.ndarray, *, lr: float = 1e-2, weight_decay: float = 1e-4, epochs: int = 50,
                batch_size: int = 256, seed: int = 0) -> nn.Linear:
    """A linear layer on standardised features, BCE on the known labels only."""
    torch.manual_seed(seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(np.nan_to_num(y, nan=-1.0), dtype=torch.float32)
    mask = torch.as_tensor(known(y), dtype=torch.float32)
    probe = nn.Linear(xt.shape[1], yt.shape[1])
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(batch_size):
            logits = probe(xt[idx])
            loss = F.binary_cross_entropy_with_logits(logits, yt[idx].clamp(min=0), weight=mask[idx], reduction="sum")
            loss = loss / mask[idx].sum().clamp(min=1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return probe


def predict(probe: nn.Linear, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(probe(torch.as_tensor(x, dtype=torch.float32))).numpy()


def _macro(scores: np.ndarray, labels: np.ndarray) -> tuple[dict[int, float], float]:
    per: dict[int, float] = {}
    for j in range(labels.shape[1]):
        ok = known(labels[:, j])
        y = labels[ok, j]
        if y.min(initial=1) == 0 and y.max(initial=0) == 1:
            per[j] = float(roc_auc_score(y, scores[ok, j]))
    return per, float(np.mean(list(per.values()))) if per else float("nan")


def auroc(scores: np.ndarray, labels: np.ndarray, names: list[str], n_boot: int = 1000, seed: int = 0) -> Scores:
    """Per-label and macro AUROC; the macro's 95% CI from ``n_boot`` bootstrap resamples of the rows."""
    per, macro = _macro(scores, labels)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(scores), len(scores))
        _, m = _macro(scores[idx], labels[idx])
        if m == m:
            boots.append(m)
    low, high = (np.percentile(boots, [2.5, 97.5]) if boots else (float("nan"), float("nan")))
    return Scores({names[j]: v for j, v in per.items()}, macro, float(low), float(high))
