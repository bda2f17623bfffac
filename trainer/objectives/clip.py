"""CLIP loss (Radford et al., 2021): symmetric InfoNCE over image-text pairs with a learnable
temperature, negatives from every worker's batch."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from radscale.trainer.objectives.distributed import gather_with_grad

INIT_TEMPERATURE = 0.07
MAX_LOGIT_SCALE = 100.0


class LogitScale(nn.Module):
    """log(1/T), initialised at 1/0.07 and clamped at 100 when used (CLIP)."""

    def __init__(self, init_temperature: float = INIT_TEMPERATURE):
        super().__init__()
        # shape [1], not a scalar: FSDP shards parameters along their first dimension
        self.log_scale = nn.Parameter(torch.tensor([math.log(1.0 / init_temperature)]))

    def forward(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=MAX_LOGIT_SCALE)[0]


def contrastive_logits(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Scaled cosine similarities of the global batch [B_img, B_txt] (rows: images)."""
    image = gather_with_grad(F.normalize(image.float(), dim=-1))
    text = gather_with_grad(F.normalize(text.float(), dim=-1))
    return scale * image @ text.t()


def clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Mean of image->text and text->image cross-entropy; the i-th text is the i-th image's pair."""
    logits = contrastive_logits(image, text, scale)
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
