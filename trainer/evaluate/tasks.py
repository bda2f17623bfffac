"""The frozen-encoder protocol shared by every task: a small head trained on cached features.

A task trains its head with AdamW for ``epochs`` (the sweep's hyperparameters: ``lr``,
``weight_decay``, ``epochs``), yields its validation headline after every epoch (what Ray Tune's
ASHA scheduler compares), and scores the trained head on the test split with bootstrap 95% CIs.
The encoder never runs here: :mod:`features` extracted its outputs once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from radscale.cells import MetricValue
from radscale.operator.api import TaskKind, TaskSpec
from radscale.trainer.evaluate.features import EvalData

DEFAULTS = {"lr": 1e-3, "weight_decay": 1e-4, "epochs": 10}
BATCH = 64
N_BOOT = 1000


def hparams(config: dict[str, Any]) -> tuple[float, float, int]:
    """(lr, weight decay, epochs) of a sweep config, defaults for what the search space leaves out."""
    return (float(config.get("lr", DEFAULTS["lr"])), float(config.get("weight_decay", DEFAULTS["weight_decay"])),
            max(1, round(float(config.get("epochs", DEFAULTS["epochs"])))))


def bootstrap_ci(stat: Callable[[np.ndarray], float], n: int, n_boot: int = N_BOOT,
                 seed: int = 0) -> tuple[float | None, float | None]:
    """Percentile 95% CI of ``stat(rows)`` over ``n_boot`` resamples of ``n`` rows (NaN resamples skipped)."""
    if n == 0:
        return None, None
    rng = np.random.default_rng(seed)
    vals = [v for v in (stat(rng.integers(0, n, n)) for _ in range(n_boot)) if v == v]
    if not vals:
        return None, None
    low, high = np.percentile(vals, [2.5, 97.5])
    return float(low), float(high)


def metric(value: float, ci: tuple[float | None, float | None] = (None, None)) -> MetricValue:
    return MetricValue(value=float(value), ci_low=ci[0], ci_high=ci[1])


def warmup_cosine(total: int) -> Callable[[int], float]:
    """LR factor per step: linear warmup over the first 10% (at least one step), then cosine to 0.
    Defined for any ``total`` >= 1 (torch's OneCycleLR divides by zero below ~10 steps)."""
    warm = max(1, total // 10)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return factor


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over all but the last axis of the training features."""
    flat = x.reshape(-1, x.shape[-1])
    return flat.mean(0), flat.std(0) + 1e-6


class Task:
    """One evaluation task over an :class:`EvalData`. Subclasses: build, loss, validate, test."""

    kind: ClassVar[TaskKind]
    metrics: ClassVar[tuple[str, ...]]

    def __init__(self, spec: TaskSpec, data: EvalData, seed: int = 0):
        self.spec, self.data, self.seed = spec, data, seed
        self.model: nn.Module | None = None

    # -- subclass hooks ---------------------------------------------------------------------------
    def build(self) -> nn.Module:
        raise NotImplementedError

    def train_rows(self) -> int:
        return len(self.data.splits["train"].cls)

    def loss(self, model: nn.Module, rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def validate(self, model: nn.Module) -> float:
        raise NotImplementedError

    def test(self, model: nn.Module, n_boot: int = N_BOOT) -> dict[str, MetricValue]:
        raise NotImplementedError

    # -- the protocol -----------------------------------------------------------------------------
    def train(self, config: dict[str, Any]) -> Iterator[float]:
        """Train a fresh head; yields the validation headline after each epoch."""
        lr, wd, epochs = hparams(config)
        torch.manual_seed(self.seed)
        model = self.build()
        self.model = model
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(epochs * self._steps_per_epoch()))
        gen = torch.Generator().manual_seed(self.seed)
        for _ in range(epochs):
            model.train()
            for rows in torch.randperm(self.train_rows(), generator=gen).split(BATCH):
                loss = self.loss(model, rows)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
            model.eval()
            with torch.no_grad():
                yield self.validate(model)

    def _steps_per_epoch(self) -> int:
        return max(1, -(-self.train_rows() // BATCH))

    def fit(self, config: dict[str, Any]) -> nn.Module:
        for _ in self.train(config):
            pass
        assert self.model is not None
        return self.model

    def evaluate(self, config: dict[str, Any], n_boot: int = N_BOOT) -> dict[str, MetricValue]:
        """Train with ``config`` and score on the test split."""
        model = self.fit(config)
        with torch.no_grad():
            return self.test(model, n_boot)


def for_spec(spec: TaskSpec, data: EvalData, seed: int = 0) -> Task:
    from radscale.trainer.evaluate.probe import ProbeTask
    from radscale.trainer.evaluate.report import ReportTask
    from radscale.trainer.evaluate.segment import SegmentTask

    kinds: dict[TaskKind, type[Task]] = {TaskKind.CLASSIFICATION: ProbeTask, TaskKind.SEGMENTATION: SegmentTask,
                                         TaskKind.REPORT_GENERATION: ReportTask}
    task = kinds[spec.kind](spec, data, seed)
    if spec.headline_metric not in task.metrics:
        raise ValueError(f"evaluation.tasks[{spec.name}].metric: {spec.headline_metric!r} is not a "
                         f"{spec.kind} metric; choose one of {list(task.metrics)}")
    return task
