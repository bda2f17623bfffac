"""DINO loss over the CLS token (Caron et al., 2021; DINOv2 ``DINOLoss``).

The teacher's prototype scores are centred and sharpened (softmax at the teacher temperature,
0.04 -> 0.07 during warm-up) or balanced by Sinkhorn-Knopp (3 iterations); the student is a
softmax at 0.1. The loss is the cross-entropy between every teacher global crop and every student
crop of another view, averaged over those pairs and the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from radscale.trainer.objectives.distributed import all_reduce_max, all_reduce_sum, world

STUDENT_TEMPERATURE = 0.1
CENTER_MOMENTUM = 0.9


@torch.no_grad()
def sinkhorn_knopp(teacher_logits: torch.Tensor, temperature: float, iterations: int = 3,
                   samples: int | None = None) -> torch.Tensor:
    """Balanced soft assignments [B, K] of the global batch to K prototypes (SwAV / DINOv2).

    ``samples``: rows over all workers when they differ per worker (iBOT's masked patches);
    by default this worker's rows times the world size."""
    scaled = teacher_logits.float() / temperature
    shift = all_reduce_max(scaled.max())  # cancels in the first normalisation; avoids exp overflow
    q = torch.exp(scaled - shift).t()  # K x B
    k = q.shape[0]
    b = samples if samples is not None else q.shape[1] * world()[1]
    q /= all_reduce_sum(q.sum())
    for _ in range(iterations):
        q /= all_reduce_sum(q.sum(dim=1, keepdim=True))  # rows: each prototype gets mass 1/K
        q /= k
        q /= q.sum(dim=0, keepdim=True)  # columns: each sample has mass 1/B
        q /= b
    q *= b
    return q.t()


class CenteredTeacher(nn.Module):
    """The teacher side shared by the CLS and patch losses: centring (momentum 0.9) and sharpening,
    or Sinkhorn-Knopp, over the rows of every worker.

    The batch centre is the mean of per-worker means (DINOv2: ``DINOLoss`` and
    ``iBOTPatchLoss.reduce_center_update`` all-reduce each worker's sum, or mean, and divide by the
    world size). For the CLS loss every worker has the same rows, so it equals the mean over all
    rows; for iBOT, where each worker masks a different number of patches, every worker weighs the
    same whatever its count. A worker without rows (no masked patch this step) is left out of the
    mean instead of making it NaN."""

    def __init__(self, out_dim: int, student_temp: float = STUDENT_TEMPERATURE,
                 center_momentum: float = CENTER_MOMENTUM):
        super().__init__()
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    @torch.no_grad()
    def teacher_targets(self, teacher_logits: torch.Tensor, temperature: float,
                        centering: str = "centering") -> torch.Tensor:
        """Teacher probabilities per row; with ``centering`` the centre is then updated from these
        rows (the softmax of batch t uses the centre of batches up to t-1, as in DINOv2)."""
        rows = teacher_logits.shape[0]
        if centering == "sinkhorn":  # rows may differ per worker (iBOT's masked patches): B is global
            count = all_reduce_sum(torch.tensor(float(rows), device=teacher_logits.device))
            return sinkhorn_knopp(teacher_logits, temperature, samples=int(count.item()))
        probs = F.softmax((teacher_logits.float() - self.center) / temperature, dim=-1)
        self.center.mul_(self.center_momentum).add_(worker_mean(teacher_logits), alpha=1.0 - self.center_momentum)
        return probs


@torch.no_grad()
def worker_mean(rows: torch.Tensor) -> torch.Tensor:
    """[1, K]: the mean over workers (that have rows) of each worker's mean row; one all-reduce."""
    n = rows.shape[0]
    local = rows.float().sum(dim=0, keepdim=True) / max(n, 1)
    packed = torch.cat([local, local.new_full((1, 1), 1.0 if n else 0.0)], dim=1)
    all_reduce_sum(packed)
    return packed[:, :-1] / packed[:, -1:].clamp(min=1.0)


class DINOLoss(CenteredTeacher):
    def forward(self, student_logits: Sequence[torch.Tensor], teacher_probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``student_logits``: per crop [B, K], the global crops first, in the teacher's order.
        ``teacher_probs``: per global crop [B, K]. Pairs of the same view are skipped."""
        total, terms = student_logits[0].new_zeros(()), 0
        log_students = [F.log_softmax(s.float() / self.student_temp, dim=-1) for s in student_logits]
        for t_idx, t in enumerate(teacher_probs):
            for s_idx, log_s in enumerate(log_students):
                if s_idx == t_idx:
                    continue
                total = total + torch.sum(-t * log_s, dim=-1).mean()
                terms += 1
        return total / max(terms, 1)
