"""iBOT masked-patch loss (Zhou et al., 2022; DINOv2 ``iBOTPatchLoss``).

The student sees some patches masked; at those positions its prototype scores are trained
against the teacher's (which saw the whole image). Each image's masked patches are averaged, then
images are averaged (images without masks count, with zero loss), as in DINOv2. The teacher side
is centred (momentum 0.9; the centre is the mean of per-worker means of the masked patches, as in
DINOv2, so a worker that masked fewer patches weighs as much as one that masked more) or balanced
by Sinkhorn-Knopp, as for the CLS loss.

Masks (:func:`sample_masks`): half the images get a mask, with ratios spread over [0.1, 0.5]
(DINOv2's collate), made of rectangular blocks of patches as in BEiT/iBOT/DINOv2's
``MaskingGenerator``: a block covers at least 4 patches and at most half the grid, with an aspect
ratio log-uniform in [0.3, 1/0.3]; blocks are added until the image's count is reached or ten
placements in a row add nothing. Blocks hide whole structures (a rib segment, a tube tip), so the
student must infer them from context instead of interpolating from neighbouring patches.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from radscale.trainer.objectives.dino import CenteredTeacher

MIN_BLOCK = 4
ASPECT = (math.log(0.3), math.log(1 / 0.3))


def block_mask(grid: tuple[int, int], count: int, rng: np.random.Generator, max_block: int | None = None) -> np.ndarray:
    """Bool [H, W] with about ``count`` (never more) patches masked in rectangular blocks."""
    h, w = grid
    mask = np.zeros(grid, dtype=bool)
    max_block = max_block or max(MIN_BLOCK, (h * w) // 2)
    done = 0
    while done < count:
        budget = min(count - done, max_block)
        added = 0
        for _ in range(10):  # placements: a block must add something and not overshoot the budget
            area = rng.uniform(MIN_BLOCK, max(MIN_BLOCK, budget))
            aspect = math.exp(rng.uniform(*ASPECT))
            bh, bw = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if not (0 < bh < h and 0 < bw < w):
                continue
            top, left = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
            block = mask[top:top + bh, left:left + bw]
            new = bh * bw - int(block.sum())
            if 0 < new <= budget:
                block[:] = True
                added = new
                break
        if added == 0:
            break
        done += added
    return mask


def sample_masks(batch: int, grid: tuple[int, int], ratio: tuple[float, float] = (0.1, 0.5),
                 probability: float = 0.5, rng: np.random.Generator | None = None) -> torch.Tensor:
    """Bool masks [B, H*W]: ``probability`` of the images masked in blocks, ratios spread over ``ratio``."""
    rng = rng if rng is not None else np.random.default_rng()
    patches = grid[0] * grid[1]
    n_masked = int(batch * probability)
    edges = np.linspace(ratio[0], ratio[1], n_masked + 1)
    masks = np.zeros((batch, patches), dtype=bool)
    for i in range(n_masked):
        masks[i] = block_mask(grid, int(patches * rng.uniform(edges[i], edges[i + 1])), rng).ravel()
    return torch.from_numpy(masks[rng.permutation(batch)])


class IBOTPatchLoss(CenteredTeacher):
    def forward(self, student_logits: torch.Tensor, teacher_probs: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """``student_logits`` and ``teacher_probs``: [M, K] at the masked positions (row order of
        ``masks[masks]``); ``masks``: [B, N] bool."""
        per_token = torch.sum(-teacher_probs * F.log_softmax(student_logits.float() / self.student_temp, dim=-1), -1)
        weight = (1.0 / masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]
        return (per_token * weight).sum() / masks.shape[0]
