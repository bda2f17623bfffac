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
    """The learnable ``log(1/T)``, initialised at ``ln(1/0.07)``.

    As in open_clip (``open_clip_train/train.py``) the parameter itself is clamped to
    ``[0, ln 100]`` after each optimizer step (:meth:`clamp_`), never inside the forward: a clamp
    in the forward zeroes the gradient above ln 100, and a parameter stuck there (it has no weight
    decay) could never come back down."""

    def __init__(self, init_temperature: float = INIT_TEMPERATURE):
        super().__init__()
        # shape [1], not a scalar: FSDP shards parameters along their first dimension
        self.log_scale = nn.Parameter(torch.tensor([math.log(1.0 / init_temperature)]))

    def forward(self) -> torch.Tensor:
        return self.log_scale.exp()[0]

    @torch.no_grad()
    def clamp_(self, max_scale: float = MAX_LOGIT_SCALE) -> None:
        """Clamp the parameter in place (call after ``optimizer.step()``); under FSDP on each shard."""
        param = self.log_scale
        local = param.to_local() if hasattr(param, "to_local") else param
        local.clamp_(0.0, math.log(max_scale))


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
