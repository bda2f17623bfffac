"""iBOT masked-patch loss (Zhou et al., 2022; DINOv2 ``iBOTPatchLoss``).

The student sees some patches masked; at those positions its prototype scores are trained
against the teacher's (which saw the whole image). Each image's masked patches are averaged, then
images are averaged (images without masks count, with zero loss), as in DINOv2. The teacher side
is centred (momentum 0.9) or balanced by Sinkhorn-Knopp, as for the CLS loss.

Masks (:func:`sample_masks`): half the images get a mask, with ratios spread over [0.1, 0.5]
(DINOv2's collate); positions are drawn uniformly here, where DINOv2 draws BEiT-style blocks.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

from radscale.trainer.objectives.dino import CenteredTeacher


def sample_masks(batch: int, patches: int, ratio: tuple[float, float] = (0.1, 0.5), probability: float = 0.5,
                 generator: random.Random | None = None) -> torch.Tensor:
    """Bool masks [B, N]: ``probability`` of the images masked, ratios spread over ``ratio``."""
    rng = generator or random.Random()
    n_masked = int(batch * probability)
    edges = torch.linspace(ratio[0], ratio[1], n_masked + 1).tolist()
    masks = torch.zeros(batch, patches, dtype=torch.bool)
    for i in range(n_masked):
        count = int(patches * rng.uniform(edges[i], edges[i + 1]))
        masks[i, rng.sample(range(patches), count)] = True
    return masks[torch.tensor(rng.sample(range(batch), batch))]


class IBOTPatchLoss(CenteredTeacher):
    def forward(self, student_logits: torch.Tensor, teacher_probs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """``student_logits`` and ``teacher_probs``: [M, K] at the masked positions (row order of
        ``masks[masks]``); ``masks``: [B, N] bool."""
        per_token = torch.sum(-teacher_probs * F.log_softmax(student_logits.float() / self.student_temp, dim=-1), -1)
        weight = (1.0 / masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]
        return (per_token * weight).sum() / masks.shape[0]
