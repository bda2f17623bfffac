"""KoLeo regulariser (DINOv2 ``KoLeoLoss``; Sablayrolles et al., 2019): push each L2-normalised
feature away from its nearest neighbour in the batch. DINOv2 weights it 0.1."""

from __future__ import annotations

import torch
import torch.nn.functional as F

WEIGHT = 0.1


def koleo_loss(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """-mean_i log(min_{j != i} ||x_i - x_j||) over L2-normalised rows of ``x`` [B, D]."""
    with torch.autocast(x.device.type, enabled=False):
        x = F.normalize(x.float(), eps=eps, p=2, dim=-1)
        with torch.no_grad():
            dots = x @ x.t()
            dots.fill_diagonal_(-1.0)
            nearest = dots.argmax(dim=1)
        distances = F.pairwise_distance(x, x[nearest], p=2, eps=eps)
        return -torch.log(distances + eps).mean()
