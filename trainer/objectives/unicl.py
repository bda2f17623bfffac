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

import torch
import torch.nn.functional as F

from radscale.trainer.objectives.distributed import gather, gather_with_grad


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


def unicl_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Both directions against the positives of ``targets`` (same shape as ``logits``), averaged.
    Rows or columns without a positive are left out of their direction."""
    row = targets / targets.sum(dim=1, keepdim=True).clamp(min=1e-12)
    col = targets / targets.sum(dim=0, keepdim=True).clamp(min=1e-12)
    has_row, has_col = targets.sum(dim=1) > 0, targets.sum(dim=0) > 0
    i2t = -(row * F.log_softmax(logits, dim=1)).sum(dim=1)[has_row].mean()
    t2i = -(col * F.log_softmax(logits, dim=0)).sum(dim=0)[has_col].mean()
    return 0.5 * (i2t + t2i)


def multilabel_unicl_loss(image: torch.Tensor, reports: torch.Tensor, prompts: torch.Tensor,
                          report_ids: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """MI2-style UniCL over the global batch: images against every worker's reports (gathered) and
    the label prompts (the same on every worker, so not gathered).

    ``report_ids`` [B] int64, equal for identical report texts on any worker (a text hash);
    ``labels`` [B, L] for the L prompts."""
    image_g = gather_with_grad(F.normalize(image.float(), dim=-1))
    reports_g = gather_with_grad(F.normalize(reports.float(), dim=-1))
    prompts = F.normalize(prompts.float(), dim=-1)
    logits = scale * image_g @ torch.cat([reports_g, prompts]).t()
    targets = multilabel_targets(gather(report_ids), gather(labels))
    return unicl_loss(logits, targets)
