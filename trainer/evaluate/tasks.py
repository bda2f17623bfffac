"""The frozen-encoder protocol shared by every task: a small head trained on cached features.

A task trains its head with AdamW for up to ``epochs`` (the sweep's hyperparameters: ``lr``,
``weight_decay``, ``epochs``), stops once ``patience`` epochs in a row bring no better validation
headline, keeps its best epoch's weights, yields the best validation headline so far after every
epoch (what Ray Tune's ASHA scheduler compares), and scores that head on the test split
(:class:`TestOutput`). The baseline's head is trained the same way, so it never loses to an
encoder for want of epochs.

Test scoring is vectorised over weight rows: row 0 weighs every test row 1 (the value on the full
split), rows 1.. are the :data:`~radscale.cells.TEST_DRAWS` patient resamples of :mod:`resample`,
the same in every cell of a study. Each aggregate metric keeps its value per resample (what the
operator's fit bootstrap combines across cells), and its 95% CI is their 2.5/97.5 percentiles.
The head's init and data order follow the task's ``seed`` (the cell's run seed); the resamples
follow ``resample_seed`` (the split seed) alone. The encoder never runs here: :mod:`features`
extracted its outputs once.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from radscale.cells import TEST_DRAWS, MetricValue
from radscale.spec import TaskSpec
from radscale.tasks import TaskKind, metrics_of
from radscale.trainer.evaluate import resample
from radscale.trainer.evaluate.features import EvalData

DEFAULTS = {"lr": 1e-3, "weight_decay": 1e-4, "epochs": 10}
BATCH = 64
_META = b"radscale.test"  # schema metadata key of a TestOutput's metrics and draws in Parquet


def hparams(config: dict[str, Any]) -> tuple[float, float, int]:
    """(lr, weight decay, epochs) of a sweep config, defaults for what the search space leaves out."""
    return (float(config.get("lr", DEFAULTS["lr"])), float(config.get("weight_decay", DEFAULTS["weight_decay"])),
            max(1, round(float(config.get("epochs", DEFAULTS["epochs"])))))


@dataclasses.dataclass
class TestOutput:
    """A head scored on the test split.

    ``metrics``: every metric (aggregates with their CI from the draws, per-label entries without);
    ``draws``: aggregate metric -> its value in each patient resample (None: undefined there);
    ``examples``: one row per scored test example (hashed patient, row_id, the task's scores or
    predictions), for the cell's ``examples/<task>.parquet``; never part of the metrics.
    """

    __test__ = False  # not a pytest class, despite the name

    metrics: dict[str, MetricValue]
    draws: dict[str, list[float | None]]
    examples: pa.Table

    def to_parquet(self) -> bytes:
        """The examples as Parquet, with the metrics and draws in its schema metadata (one file per trial)."""
        meta = {"metrics": {k: v.model_dump() for k, v in self.metrics.items()}, "draws": self.draws}
        return parquet_bytes(self.examples.replace_schema_metadata({_META: json.dumps(meta).encode()}))

    @classmethod
    def from_parquet(cls, blob: bytes) -> TestOutput:
        table = pq.read_table(pa.BufferReader(blob))
        meta = json.loads((table.schema.metadata or {})[_META])
        return cls({k: MetricValue(**v) for k, v in meta["metrics"].items()}, meta["draws"],
                   table.replace_schema_metadata(None))


def parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(D,) weighted mean of per-example ``values`` (N,) under each weight row (D, N); NaN where a row weighs 0."""
    total = weights.sum(1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, weights @ np.asarray(values, np.float64) / total, np.nan)


def summarise(values: np.ndarray) -> tuple[MetricValue, list[float | None]]:
    """(value with its percentile 95% CI, the per-draw values) of a metric evaluated under
    :meth:`Task.test_weights` rows: ``values[0]`` the full split, ``values[1:]`` the draws (NaN undefined)."""
    draws = np.asarray(values[1:], np.float64)
    ok = draws[~np.isnan(draws)]
    low, high = (float(v) for v in np.percentile(ok, [2.5, 97.5])) if len(ok) else (None, None)
    return (MetricValue(value=float(values[0]), ci_low=low, ci_high=high),
            [None if v != v else round(float(v), 6) for v in draws])  # 6 decimals: result.json stays small


def metric(value: float) -> MetricValue:
    """A metric reported without draws (the per-label entries)."""
    return MetricValue(value=float(value))


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


def _trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of what training changes: trainable parameters and buffers (running statistics), not
    a frozen language model's weights."""
    state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    state.update({n: b.detach().clone() for n, b in model.named_buffers()})
    return state


class Task:
    """One evaluation task over an :class:`EvalData`. Subclasses: build, loss, validate, test.

    ``seed`` (the cell's run seed) fixes the head's init and data order; ``resample_seed`` (the
    cell's split seed) fixes the test-set resamples, which must not vary between replicates.
    """

    kind: ClassVar[TaskKind]
    metrics: ClassVar[tuple[str, ...]]  # set from the task-kind registry: never a list of its own

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.metrics = metrics_of(cls.kind)

    def __init__(self, spec: TaskSpec, data: EvalData, seed: int = 0, resample_seed: int = 0):
        self.spec, self.data, self.seed, self.resample_seed = spec, data, seed, resample_seed
        self.model: nn.Module | None = None
        self.finished = False  # set by train(): its last yield
        self.best_epoch = 0  # the epoch whose weights the head ends with
        self._weights: tuple[int, np.ndarray] | None = None

    # -- subclass hooks ---------------------------------------------------------------------------
    def build(self) -> nn.Module:
        raise NotImplementedError

    def train_rows(self) -> int:
        return len(self.data.splits["train"].cls)

    def loss(self, model: nn.Module, rows: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def validate(self, model: nn.Module) -> float:
        raise NotImplementedError

    def test(self, model: nn.Module, draws: int = TEST_DRAWS) -> TestOutput:
        raise NotImplementedError

    # -- test-set resamples -----------------------------------------------------------------------
    def test_weights(self, draws: int = TEST_DRAWS) -> np.ndarray:
        """(1 + draws, test rows) float64: row 0 all ones (the full split), then the patient resamples."""
        if self._weights is None or self._weights[0] != draws:
            w = resample.patient_weights(self.data.splits["test"].patient_ids(), self.resample_seed, draws)
            self._weights = draws, np.vstack([np.ones((1, w.shape[1])), w]).astype(np.float64)
        return self._weights[1]

    def examples(self, rows: np.ndarray | None = None, **columns: Any) -> pa.Table:
        """Per-example table of the test ``rows`` (default all): hashed patient, row_id, then ``columns``."""
        test = self.data.splits["test"]
        idx = np.arange(len(test.cls)) if rows is None else np.asarray(rows)
        patients = test.patient_ids()
        return pa.table({"patient": pa.array([patients[i] for i in idx], pa.string()),
                         "row_id": pa.array(test.ids()[idx], pa.int64()), **columns})

    def output(self, values: dict[str, np.ndarray], per_label: dict[str, float], examples: pa.Table) -> TestOutput:
        """A :class:`TestOutput` from each aggregate's values under :meth:`test_weights`; an aggregate
        undefined on the full split (e.g. no test row with both classes) is left out."""
        metrics, draws = {}, {}
        for name, v in values.items():
            if v[0] == v[0]:
                metrics[name], draws[name] = summarise(v)
        metrics.update({k: metric(v) for k, v in per_label.items()})
        return TestOutput(metrics, draws, examples)

    # -- the protocol -----------------------------------------------------------------------------
    def train(self, config: dict[str, Any], patience: int | None = None) -> Iterator[float]:
        """Train a fresh head for up to ``epochs``; yields the best validation headline so far after
        each epoch. With ``patience``, training stops once that many epochs in a row did not improve
        on the best; either way the head ends at its best epoch's weights (the one a test scores).
        ``self.finished`` is True on the last yield, so a caller can score the test split then."""
        lr, wd, epochs = hparams(config)
        torch.manual_seed(self.seed)
        model = self.build()
        self.model, self.finished, self.best_epoch = model, False, 0
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(epochs * self._steps_per_epoch()))
        gen = torch.Generator().manual_seed(self.seed)
        best, best_state, since = -math.inf, None, 0
        for epoch in range(1, epochs + 1):
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
                value = self.validate(model)
            if value > best:  # NaN (undefined on validation) never counts as better
                best, best_state, since, self.best_epoch = value, _trained_state(model), 0, epoch
            else:
                since += 1
            self.finished = epoch == epochs or (patience is not None and since >= patience)
            if self.finished and best_state is not None:
                model.load_state_dict(best_state, strict=False)
            yield best if best_state is not None else value
            if self.finished:
                return

    def _steps_per_epoch(self) -> int:
        return max(1, -(-self.train_rows() // BATCH))

    def fit(self, config: dict[str, Any], patience: int | None = None) -> nn.Module:
        for _ in self.train(config, patience):
            pass
        assert self.model is not None
        return self.model

    def evaluate(self, config: dict[str, Any], draws: int = TEST_DRAWS, patience: int | None = None) -> TestOutput:
        """Train with ``config`` (its best epoch) and score on the test split."""
        model = self.fit(config, patience)
        with torch.no_grad():
            return self.test(model, draws)


def classes() -> dict[TaskKind, type[Task]]:
    """The task class of every registered kind (a test checks none is missing)."""
    from radscale.trainer.evaluate import probe, report, segment  # noqa: F401  (defining them registers them)

    return {cls.kind: cls for cls in Task.__subclasses__()}


def for_spec(spec: TaskSpec, data: EvalData, seed: int = 0, resample_seed: int = 0) -> Task:
    task = classes()[TaskKind(spec.kind)](spec, data, seed, resample_seed)
    if spec.headline_metric not in task.metrics:
        raise ValueError(f"evaluation.tasks[{spec.name}].metric: {spec.headline_metric!r} is not a "
                         f"{spec.kind} metric; choose one of {list(task.metrics)}")
    return task
