"""UniCL loss (Yang et al., 2022): image-text-label contrastive learning.

Every text that shares a label with an image is its positive; the loss is the cross-entropy of
each row (image -> texts) and each column (text -> images) against its positives, normalised to
sum to one, averaged over both directions. With all labels distinct the targets are the identity
and this is exactly CLIP.

For radiology (MI2-style) it is multi-label: the texts of a batch are the reports and one prompt
per structured label ("chest x-ray with pleural effusion"); an image is positive with its report
(and any identical report) and with the prompt of each of its positive labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from radscale.trainer.objectives.clip import contrastive_logits
from radscale.trainer.objectives.distributed import gather


def label_targets(image_labels: torch.Tensor, text_labels: torch.Tensor) -> torch.Tensor:
    """Single-label UniCL targets [B_img, B_txt]: 1 where the labels are equal."""
    return (image_labels.view(-1, 1) == text_labels.view(1, -1)).float()


def prompt(label: str) -> str:
    """The text a structured label becomes: ``pleural_effusion`` -> "chest x-ray with pleural effusion"."""
    return f"chest x-ray with {label.replace('_', ' ')}"


def multilabel_targets(report_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Targets [B, B + L] for texts = B reports then L label prompts.

    ``report_ids`` [B]: equal ids for identical reports; ``labels`` [B, L]: 1 positive, anything
    else (0, -1 uncertain, blank) not a positive.
    """
    same_report = (report_ids.view(-1, 1) == report_ids.view(1, -1)).float()
    return torch.cat([same_report, (labels == 1).float()], dim=1)


def unicl_loss(image: torch.Tensor, text: torch.Tensor, targets: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``targets`` [B_img, B_txt] for this worker's images and texts; negatives and positives from
    every worker (targets are block-diagonal across workers: texts of other workers are negatives,
    unless they are shared prompts, which each worker passes as its own columns)."""
    logits = contrastive_logits(image, text, scale)
    targets = _global_targets(targets, logits.shape)
    row = targets / targets.sum(dim=1, keepdim=True).clamp(min=1e-12)
    col = targets / targets.sum(dim=0, keepdim=True).clamp(min=1e-12)
    has_row, has_col = targets.sum(dim=1) > 0, targets.sum(dim=0) > 0
    i2t = -(row * F.log_softmax(logits, dim=1)).sum(dim=1)[has_row].mean()
    t2i = -(col * F.log_softmax(logits, dim=0)).sum(dim=0)[has_col].mean()
    return 0.5 * (i2t + t2i)


def _global_targets(local: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    if tuple(local.shape) == tuple(shape):
        return local
    blocks = gather(local.contiguous())  # [W * B_img, B_txt]: each worker's rows over its own texts
    rows, cols = local.shape
    out = local.new_zeros(shape)
    for w in range(shape[0] // rows):
        out[w * rows:(w + 1) * rows, w * cols:(w + 1) * cols] = blocks[w * rows:(w + 1) * rows]
    return out
