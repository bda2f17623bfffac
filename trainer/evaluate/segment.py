"""Catheter segmentation from frozen patch tokens: a linear decoder, scored by Dice and clDice.

Each patch token is mapped linearly to the p x p logits of its own pixels (a per-patch linear
decoder, as in Segmenter's linear baseline), so the head adds no spatial context of its own: what
it finds along a thin catheter is what the frozen features already carry. Loss: BCE with the
positive class up-weighted (catheters cover a few % of pixels) plus soft Dice. Metrics per test
image at threshold 0.5, averaged over the images that hold a catheter (on an empty image, "predict
nothing" would score a perfect 1 and reward a head that never finds one). The draws weigh each of
those images by its patient's multiplicity in the shared test-patient resamples (:mod:`resample`:
drawn over all test patients, so a resample may hold no catheter image and leave the draw undefined).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from radscale.trainer.evaluate import tasks
from radscale.trainer.evaluate.features import EvalData
from radscale.trainer.evaluate.segmentation_metrics import cldice, dice


class PatchDecoder(nn.Module):
    def __init__(self, dim: int, patch: int, grid: tuple[int, int]):
        super().__init__()
        self.patch, self.grid = patch, grid
        self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, patch * patch)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, h*w, C) -> logits (B, h*p, w*p)."""
        b, (h, w), p = tokens.shape[0], self.grid, self.patch
        x = self.proj(self.norm(tokens)).view(b, h, w, p, p)
        return x.permute(0, 1, 3, 2, 4).reshape(b, h * p, w * p)


class SegmentTask(tasks.Task):
    kind = tasks.TaskKind.SEGMENTATION

    def __init__(self, spec: tasks.TaskSpec, data: EvalData, seed: int = 0, resample_seed: int = 0):
        super().__init__(spec, data, seed, resample_seed)
        column = spec.mask_column or ""
        if column not in data.splits["train"].masks:
            raise ValueError(f"evaluation.tasks[{spec.name}].maskColumn: {column!r} is not among "
                             f"dataset.columns.masks {sorted(data.splits['train'].masks)}")
        mean, std = tasks.standardiser(data.splits["train"].patches)
        self.x = {k: torch.as_tensor((s.patches - mean) / std, dtype=torch.float32) for k, s in data.splits.items()}
        self.y = {k: torch.as_tensor(np.array(s.masks[column]), dtype=torch.float32) for k, s in data.splits.items()}
        frac = float(self.y["train"].mean()) if self.y["train"].numel() else 0.5
        self.pos_weight = torch.tensor(min(max((1 - frac) / max(frac, 1e-6), 1.0), 50.0))

    def build(self) -> nn.Module:
        return PatchDecoder(self.x["train"].shape[-1], self.data.patch, self.data.grid)

    def loss(self, model: nn.Module, rows: torch.Tensor) -> torch.Tensor:
        logits, target = model(self.x["train"][rows]), self.y["train"][rows]
        bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight)
        prob = torch.sigmoid(logits)
        inter = (prob * target).sum((1, 2))
        soft_dice = 1 - (2 * inter + 1) / (prob.sum((1, 2)) + target.sum((1, 2)) + 1)
        return bce + soft_dice.mean()

    def _predict(self, model: nn.Module, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(predicted, target) masks of the split's images that hold a catheter, and those images' rows."""
        target = self.y[split].numpy()
        has = target.reshape(len(target), -1).any(1)
        return (torch.sigmoid(model(self.x[split][has])) >= 0.5).numpy(), target[has], np.flatnonzero(has)

    @torch.no_grad()
    def validate(self, model: nn.Module) -> float:
        pred, target, _ = self._predict(model, "val")
        fn = cldice if self.spec.headline_metric == "cldice" else dice
        return float(np.mean([fn(p, t) for p, t in zip(pred, target, strict=True)])) if len(pred) else 0.0

    @torch.no_grad()
    def test(self, model: nn.Module, draws: int = tasks.TEST_DRAWS) -> tasks.TestOutput:
        pred, target, rows = self._predict(model, "test")
        weights = self.test_weights(draws)[:, rows]
        per = {name: np.array([fn(p, t) for p, t in zip(pred, target, strict=True)], np.float64)
               for name, fn in (("dice", dice), ("cldice", cldice))}
        values = {name: tasks.weighted_mean(v, weights) for name, v in per.items()}
        return self.output(values, {}, self.examples(rows, **per))
