"""Multi-label linear probe on frozen features, scored by macro AUROC and AUPRC.

Input: the CLS token concatenated with the mean patch token (DINOv2's linear protocol),
standardised with the training split's statistics.

Label policy (CheXpert's U-Ignore): ``1`` positive, ``0`` negative; ``-1`` (uncertain) and blank
(NaN) are left out, both from the probe's loss and from the metrics, per label. A label whose
test rows lack one of the two classes has no AUROC and is left out of the macro average.

Both metrics are computed under row weights (:func:`per_label`), once with unit weights (the test
split) and once per patient resample of :mod:`resample` (the draws and their percentile CI); with
integer weights they equal scikit-learn's ``roc_auc_score`` / ``average_precision_score`` with
``sample_weight``, i.e. on the rows repeated.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from radscale.trainer.evaluate import tasks
from radscale.trainer.evaluate.features import EvalData


def known(labels: np.ndarray) -> np.ndarray:
    """Where a label counts: 0 or 1 (not -1 uncertain, not NaN blank)."""
    return (labels == 0) | (labels == 1)


def linear(dim: int, labels: int) -> nn.Linear:
    """A zero-initialised linear layer (as DINOv2's linear eval): a short probe run cannot leave the
    random directions of a default init in its weights, so every feature starts equal."""
    layer = nn.Linear(dim, labels)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def train_probe(x: np.ndarray, y: np.ndarray, *, lr: float = 1e-2, weight_decay: float = 1e-4, epochs: int = 50,
                batch_size: int = 256, seed: int = 0) -> nn.Linear:
    """A linear layer on standardised features, BCE on the known labels only."""
    torch.manual_seed(seed)
    xt = torch.as_tensor(x, dtype=torch.float32)
    yt = torch.as_tensor(np.nan_to_num(y, nan=-1.0), dtype=torch.float32)
    mask = torch.as_tensor(known(y), dtype=torch.float32)
    probe = linear(xt.shape[1], yt.shape[1])
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(batch_size):
            loss = masked_bce(probe(xt[idx]), yt[idx], mask[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return probe


def masked_bce(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """BCE over the known labels only (mask 1), averaged over them."""
    loss = F.binary_cross_entropy_with_logits(logits, y.clamp(min=0), weight=mask, reduction="sum")
    return loss / mask.sum().clamp(min=1.0)


def predict(probe: nn.Linear, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.sigmoid(probe(torch.as_tensor(x, dtype=torch.float32))).numpy()


def _tie_groups(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positive, negative) weight per group of tied scores, groups in ascending score order: each (D, G).

    Sorting once and summing weights per group is what lets every weight row (each resample) reuse
    one sort: O(D x rows), with no per-resample sorting."""
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], labels[order] == 1
    w = weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    total = np.add.reduceat(w, starts, axis=1)
    pos = np.add.reduceat(w * y, starts, axis=1)
    return pos, total - pos


def _auroc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney statistic, ties counting half: weighted ROC AUC."""
    below = np.cumsum(neg, axis=1) - neg
    return (pos * (below + 0.5 * neg)).sum(1) / (pos.sum(1) * neg.sum(1))


def _auprc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Weighted average precision, scikit-learn's definition: sum over thresholds (tied scores are one)
    of the recall gained times the precision there, thresholds from the highest score down."""
    tp = pos.sum(1, keepdims=True) - (np.cumsum(pos, axis=1) - pos)  # rows scoring >= each group's score
    fp = neg.sum(1, keepdims=True) - (np.cumsum(neg, axis=1) - neg)
    # a threshold with no weight adds no recall; its 0/0 precision is set to 0 and never counts
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    return (pos * precision).sum(1) / pos.sum(1)


METRICS = {"auroc": _auroc, "auprc": _auprc}


def per_label(metric: str, scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(D, L) ``metric`` (auroc or auprc) of each label under each row weight vector of ``weights`` (D, N).

    U-Ignore: a label's rows with -1 or NaN are left out. NaN where a weight row leaves a label
    without a positive or a negative."""
    fn, weights = METRICS[metric], np.asarray(weights, np.float64)
    out = np.full((len(weights), labels.shape[1]), np.nan)
    for j in range(labels.shape[1]):
        ok = known(labels[:, j])
        if not ok.any():
            continue
        pos, neg = _tie_groups(scores[ok, j], labels[ok, j], weights[:, ok])
        defined = (pos.sum(1) > 0) & (neg.sum(1) > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[defined, j] = fn(pos[defined], neg[defined])
    return out


def macro(values: np.ndarray) -> np.ndarray:
    """(D,) mean over the labels defined in each row of ``values`` (D, L); NaN where none is."""
    defined = ~np.isnan(values)
    n = defined.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(defined, values, 0.0).sum(1) / n, np.nan)


def scored_labels(spec: tasks.TaskSpec, data: EvalData) -> list[str]:
    """The task's labels, less those with fewer than ``spec.min_positives`` positives in the test split."""
    names = list(spec.labels)
    if spec.min_positives is None:
        return names
    positives = (data.labels("test", names) == 1).sum(0)
    kept = [n for n, k in zip(names, positives, strict=True) if k >= spec.min_positives]
    if not kept:
        best = int(positives.max()) if len(positives) else 0
        raise ValueError(f"evaluation.tasks[{spec.name}].minPositives={spec.min_positives}: no label has that many "
                         f"positives in the test split (the most is {best}); lower it or use more images")
    return kept


class ProbeTask(tasks.Task):
    """Findings or lines & tubes: a multi-label linear probe over the task's label columns."""

    kind = tasks.TaskKind.CLASSIFICATION

    def __init__(self, spec: tasks.TaskSpec, data: EvalData, seed: int = 0, resample_seed: int = 0):
        super().__init__(spec, data, seed, resample_seed)
        names = scored_labels(spec, data)
        feats = {k: np.concatenate([s.cls, s.patches.mean(1)], axis=1) for k, s in data.splits.items()}
        mean, std = tasks.standardiser(feats["train"])
        self.x = {k: torch.as_tensor((v - mean) / std, dtype=torch.float32) for k, v in feats.items()}
        self.y = {k: data.labels(k, names) for k in data.splits}
        self.names = names
        y = np.nan_to_num(self.y["train"], nan=-1.0)
        self.yt, self.mask = torch.as_tensor(y), torch.as_tensor(known(self.y["train"]), dtype=torch.float32)

    def build(self) -> nn.Module:
        return linear(self.x["train"].shape[1], len(self.names))

    def loss(self, model: nn.Module, rows: torch.Tensor) -> torch.Tensor:
        return masked_bce(model(self.x["train"][rows]), self.yt[rows], self.mask[rows])

    def _scores(self, model: nn.Module, split: str) -> np.ndarray:
        # logits, not sigmoid(logits): ranking is the same, but a confident probe saturates float32
        # probabilities at exactly 1.0, and the ties would pull AUROC towards 0.5
        return model(self.x[split]).numpy()

    @torch.no_grad()
    def validate(self, model: nn.Module) -> float:
        scores, labels = self._scores(model, "val"), self.y["val"]
        value = macro(per_label(self.spec.headline_metric, scores, labels, np.ones((1, len(scores)))))[0]
        return float(value) if value == value else 0.5

    @torch.no_grad()
    def test(self, model: nn.Module, draws: int = tasks.TEST_DRAWS) -> tasks.TestOutput:
        scores, labels = self._scores(model, "test"), self.y["test"]
        weights = self.test_weights(draws)
        values, labelled = {}, {}
        for name in self.metrics:
            per = per_label(name, scores, labels, weights)
            values[name] = macro(per)
            labelled |= {f"{name}/{label}": float(v) for label, v in zip(self.names, per[0], strict=True) if v == v}
        columns = {}
        for j, label in enumerate(self.names):
            columns[f"score/{label}"] = scores[:, j].astype(np.float32)  # logit
            columns[f"label/{label}"] = labels[:, j].astype(np.float32)  # 1, 0, -1 or NaN
        return self.output(values, labelled, self.examples(**columns))
