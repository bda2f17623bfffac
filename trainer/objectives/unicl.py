"""UniCL loss (Yang et al., 2022): image-text-label contrastive learning.

Every text that shares a label with an image is its positive; the loss is the cross-entropy of
each row (image -> texts) and each column (text -> images) against its positives, normalised to
sum to one, averaged over both directions. With all labels distinct the targets are the identity
and this is exactly CLIP.

Classes follow the paper: in UniCL an image-label pair's class is its label, and an image-text
pair without a label is its own class. Radiology pairs carry a structured label vector, so the
class of a pair is its set of positive labels (:func:`label_classes`): pairs whose label vectors
have the same positives share a class, and their reports are positives of each other's images;
a pair with no positive label (a normal study, or one whose labels are all 0, -1 uncertain or
blank) is its own class, as an unlabelled image-text pair is. Report text never decides a class.

For radiology (MI2-style) it is multi-label: the texts of a batch are the reports and one prompt
per structured label ("chest x-ray with pleural effusion"); an image is positive with the reports
of its class and with the prompt of each of its positive labels.
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


def label_classes(labels: torch.Tensor) -> torch.Tensor:
    """Class ids [B] (int64) of image-report pairs from their label vectors ``labels`` [B, L]
    (1 positive; 0, -1 uncertain and NaN/blank are not): rows with the same set of positives share
    an id; a row without any positive gets an id of its own. Ids are only compared within the call."""
    positive = labels == 1
    b = positive.shape[0]
    if positive.shape[1] == 0:
        return torch.arange(b, device=labels.device)
    _, ids = torch.unique(positive, dim=0, return_inverse=True)
    own = positive.any(dim=1).logical_not()
    return torch.where(own, positive.shape[0] + torch.arange(b, device=labels.device), ids.to(torch.int64))


def multilabel_targets(classes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Targets [B, B + L] for texts = B reports then L label prompts.

    ``classes`` [B]: class ids (:func:`label_classes`); ``labels`` [B, L]: 1 positive, anything
    else (0, -1 uncertain, blank) not a positive.
    """
    same_class = (classes.view(-1, 1) == classes.view(1, -1)).float()
    return torch.cat([same_class, (labels == 1).float()], dim=1)


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
                          labels: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """MI2-style UniCL over the global batch: images against every worker's reports (gathered) and
    the label prompts (the same on every worker, so not gathered).

    ``labels`` [B, L] for the L prompts; classes are taken from the gathered label vectors, so
    pairs on different workers share a class too."""
    image_g = gather_with_grad(F.normalize(image.float(), dim=-1))
    reports_g = gather_with_grad(F.normalize(reports.float(), dim=-1))
    prompts = F.normalize(prompts.float(), dim=-1)
    logits = scale * image_g @ torch.cat([reports_g, prompts]).t()
    labels_g = gather(labels)
    targets = multilabel_targets(label_classes(labels_g), labels_g)
    return unicl_loss(logits, targets)
