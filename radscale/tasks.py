"""The registry of evaluation task kinds: what each measures, its default headline, and which way is better.

One table, read by both planes: the API's default headline metric and the CEL rule on
``evaluation.tasks[].metric`` (control plane), the fits' direction (scores are fitted as
``1 - score``), and the trainer's task classes, which report exactly these aggregate metrics.
Adding a kind or a metric here is the one place to do it; a test checks every consumer agrees.
"""

from __future__ import annotations

import dataclasses
import enum


class TaskKind(enum.StrEnum):
    CLASSIFICATION = "classification"
    SEGMENTATION = "segmentation"
    REPORT_GENERATION = "report-generation"


@dataclasses.dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool = True
    description: str = ""


@dataclasses.dataclass(frozen=True)
class KindInfo:
    metrics: tuple[Metric, ...]  # aggregate metrics the kind reports; the first is the default headline

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(m.name for m in self.metrics)

    @property
    def headline(self) -> str:
        return self.metrics[0].name


KINDS: dict[TaskKind, KindInfo] = {
    TaskKind.CLASSIFICATION: KindInfo((
        Metric("auroc", description="macro AUROC over the task's labels (U-Ignore)"),
        Metric("auprc", description="macro average precision"),
    )),
    TaskKind.SEGMENTATION: KindInfo((
        Metric("dice", description="Dice at 0.5 over images that hold a mask"),
        Metric("cldice", description="centreline Dice (topology of thin structures)"),
    )),
    TaskKind.REPORT_GENERATION: KindInfo((
        # the headline counts findings: a fluent report that misses the effusion must not score well
        Metric("clinicalF1", description="F1 of the findings the labeler reads from generated vs reference"),
        Metric("bleu4", description="corpus BLEU-4 / 100"),
        Metric("rougeL", description="mean ROUGE-L F-measure"),
    )),
}

DEFAULT_METRIC: dict[TaskKind, str] = {k: v.headline for k, v in KINDS.items()}
# metric name -> higher is better, over every kind (names are unique across kinds)
HIGHER_IS_BETTER: frozenset[str] = frozenset(m.name for v in KINDS.values() for m in v.metrics if m.higher_is_better)
ALL_METRICS: tuple[str, ...] = tuple(m.name for v in KINDS.values() for m in v.metrics)


def metrics_of(kind: TaskKind | str) -> tuple[str, ...]:
    return KINDS[TaskKind(kind)].names
