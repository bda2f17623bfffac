"""Cross-field validation rules, written once in CEL and attached to the API models.

Pure: no I/O. Each :class:`Rule` is rendered into the CRD as an ``x-kubernetes-validations``
entry, so the API server rejects a bad ScalingStudy before the operator sees it, and the same
rule is evaluated offline (``radscale validate``, the operator) by :mod:`radscale.operator.celcheck`.
The rule on a task's metric is written from the task-kind registry (:mod:`radscale.tasks`).

Rules that CEL cannot express (or that need facts outside the object) are Python checks in
:mod:`radscale.operator.validation`.
"""

from __future__ import annotations

import dataclasses

from radscale import recipes
from radscale.tasks import KINDS


@dataclasses.dataclass(frozen=True)
class Rule:
    """One ``x-kubernetes-validations`` entry.

    ``rule`` is evaluated with ``self`` bound to the object the rule is attached to, after
    defaulting (as the API server does). ``field_path`` is relative to that object, in the
    API server's JSONPath-like form (``.a.b``); it names the field the message is about.
    """

    rule: str
    message: str
    field_path: str = ""

    def to_crd(self) -> dict[str, str]:
        out = {"rule": self.rule, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
            out["reason"] = "FieldValueInvalid"
        return out


CONTRASTIVE = "['clip', 'unicl']"


def _every_design(cond: str) -> str:
    """``cond`` (over ``d``, an adaptive spec) holds for spec.adaptive and every encoder's."""
    study = cond.replace("d.", "self.adaptive.")
    per_encoder = cond.replace("d.", "e.adaptive.")
    return f"(!has(self.adaptive) || {study}) && self.encoders.all(e, !has(e.adaptive) || {per_encoder})"


# ---- per-object rules ------------------------------------------------------------------

BUDGET_RULES = (
    Rule(
        "self.checkpointEvery <= self.steps",
        "checkpointEvery must not exceed steps; lower checkpointEvery or raise steps",
        ".checkpointEvery",
    ),
)

# weightDecay when unset, per paradigm (the recipe table), so that the rule holds for defaults too
_WD = recipes.TABLE["optimizer.weightDecay"]
_WEIGHT_DECAY = (f"(has(self.optimizer.weightDecay) ? self.optimizer.weightDecay : "
                 f"(self.paradigm == 'dino' ? {_WD.dino} : {_WD.contrastive}))")

ENCODER_RULES = (
    Rule(
        "self.paradigm != 'dino' || !has(self.text)",
        "text applies only to clip/unicl encoders; remove it or change the paradigm",
        ".text",
    ),
    Rule(
        "self.paradigm != 'dino' || !self.model.startsWith('davit')",
        "a davit tower has no token sequence for DINO's multi-crop and iBOT: use it on a clip or unicl "
        "encoder, or a ViT (vit_base_patch14_dinov2) for dino",
        ".model",
    ),
    Rule(
        "!self.model.startsWith('davit') || self.imageSize % 32 == 0",
        "a davit tower downsamples by 32: imageSize must be a multiple of 32",
        ".imageSize",
    ),
    Rule(
        "self.paradigm == 'dino' || !has(self.teacher)",
        "teacher applies only to dino encoders; remove it or change the paradigm",
        ".teacher",
    ),
    Rule(
        "self.paradigm == 'dino' || !has(self.optimizer.freezeLastLayerFraction)",
        "freezeLastLayerFraction applies only to dino encoders (the DINO head); remove it",
        ".optimizer.freezeLastLayerFraction",
    ),
    Rule(
        f"!has(self.optimizer.weightDecayEnd) || self.optimizer.weightDecayEnd >= {_WEIGHT_DECAY}",
        "weightDecayEnd is the end of an increasing schedule; set it >= weightDecay (unset: "
        f"{_WD.dino} for dino, {_WD.contrastive} for clip/unicl)",
        ".optimizer.weightDecayEnd",
    ),
)

ADAPTIVE_RULES = (
    Rule("self.max > self.min", "adaptive.max must be above adaptive.min", ".max"),
    Rule("self.grid >= self.initial", "adaptive.grid (candidate sizes) must be at least adaptive.initial", ".grid"),
)

NORMALIZATION_RULES = (
    Rule(
        "self.mean.size() == self.std.size()",
        "normalization needs as many std values as mean values (1 for grey, 3 for RGB)",
        ".std",
    ),
)

DECODER_RULES = (
    Rule(
        "self.model != 'builtin' || self.tuning == 'frozen'",
        "tuning: lora adapts a Hugging Face LM; the builtin decoder trains whole. Name an LM in model, or "
        "remove tuning",
        ".tuning",
    ),
)

OPTIMIZER_RULES: tuple[Rule, ...] = ()

PARAM_RULES = (
    Rule(
        "self.type == 'choice' || (has(self.low) && has(self.high) && self.low < self.high)",
        "uniform, loguniform and randint need low < high",
        ".low",
    ),
    Rule(
        "self.type != 'loguniform' || (has(self.low) && self.low > 0.0)",
        "loguniform needs low > 0",
        ".low",
    ),
    Rule(
        "self.type != 'choice' || (has(self.values) && self.values.size() > 0)",
        "choice needs a non-empty values list",
        ".values",
    ),
)

TASK_RULES = (
    Rule(
        "self.kind != 'classification' || self.labels.size() > 0",
        "a classification task needs labels: list the label columns it predicts",
        ".labels",
    ),
    Rule(
        "self.kind == 'classification' || self.labels.size() == 0",
        "labels apply only to classification tasks; remove them",
        ".labels",
    ),
    Rule(
        "self.kind != 'segmentation' || has(self.maskColumn)",
        "a segmentation task needs maskColumn: the manifest column with mask paths",
        ".maskColumn",
    ),
    Rule(
        "self.kind == 'report-generation' || !has(self.decoder)",
        "decoder applies only to report-generation tasks; remove it",
        ".decoder",
    ),
    Rule(
        "self.kind == 'classification' || !has(self.minPositives)",
        "minPositives applies only to classification tasks; remove it",
        ".minPositives",
    ),
    Rule(
        "self.kind == 'segmentation' || !has(self.maskColumn)",
        "maskColumn applies only to segmentation tasks; remove it",
        ".maskColumn",
    ),
    Rule(
        "!has(self.metric) || " + " || ".join(
            f"(self.kind == '{kind.value}' && self.metric in {list(info.names)})" for kind, info in KINDS.items()),
        "metric does not fit the task kind: " + ", ".join(
            f"{kind.value} takes {'|'.join(info.names)}" for kind, info in KINDS.items()),
        ".metric",
    ),
)

SPEC_RULES = (
    Rule(
        "!has(self.rayClusterSelector) || ('ray.io/cluster' in self.rayClusterSelector"
        " && self.rayClusterSelector['ray.io/cluster'] != '')",
        "rayClusterSelector must name the RayCluster as ray.io/cluster: <name> (KubeRay submits to that key)",
        ".rayClusterSelector",
    ),
    Rule(
        "!has(self.queueName) || !has(self.rayClusterSelector)",
        "queueName needs one Ray cluster per job: Kueue admits a RayJob by unsuspending it, and KubeRay "
        "cannot suspend a clusterSelector RayJob; remove rayClusterSelector or queueName",
        ".queueName",
    ),
    Rule(
        "!has(self.workloadPriorityClassName) || has(self.queueName)",
        "workloadPriorityClassName is read by Kueue only; set queueName (the LocalQueue) too",
        ".workloadPriorityClassName",
    ),
    Rule(
        "has(self.sizes) || has(self.adaptive) || self.encoders.all(e, has(e.adaptive))",
        "give the data sizes: spec.sizes (a fixed grid) or spec.adaptive (sizes chosen as results come in)",
        ".sizes",
    ),
    Rule(
        "!has(self.sizes) || !has(self.adaptive)",
        "spec.sizes and spec.adaptive exclude each other: keep one (an encoder's own adaptive may override "
        "either)",
        ".adaptive",
    ),
    Rule(
        _every_design("d.max <= self.computeBudget.steps * self.computeBudget.globalBatchSize"),
        "budget too small: steps x globalBatchSize must cover adaptive.max at least once; raise steps or "
        "lower adaptive.max",
        ".computeBudget.steps",
    ),
    Rule(
        _every_design("d.maxCells >= d.initial * self.replicates"),
        "adaptive.maxCells must cover the initial sizes: at least adaptive.initial x spec.replicates cells",
        ".adaptive.maxCells",
    ),
    Rule(
        _every_design("!has(d.task) || self.evaluation.tasks.exists(t, t.name == d.task)"),
        "adaptive.task names no evaluation task; use one of evaluation.tasks[].name",
        ".adaptive.task",
    ),
    Rule(
        "self.evaluation.baselines || " + _every_design("d.target != 'crossover'"),
        "adaptive.target crossover is the size that beats the baseline: set evaluation.baselines: true, or "
        "target exponent or errorAtMax",
        ".adaptive.target",
    ),
    Rule(
        "!has(self.sizes) || "
        "self.sizes.all(n, n <= self.computeBudget.steps * self.computeBudget.globalBatchSize)",
        "budget too small: steps x globalBatchSize must cover the largest size at least once "
        "(constant compute means small subsets repeat, large ones must still be seen); raise steps",
        ".computeBudget.steps",
    ),
    Rule(
        "self.computeBudget.globalBatchSize % self.resources.pretrain.workers == 0",
        "globalBatchSize must be divisible by resources.pretrain.workers",
        ".computeBudget.globalBatchSize",
    ),
    Rule(
        "self.encoders.all(e, !has(e.optimizer.warmupSteps) || e.optimizer.warmupSteps < self.computeBudget.steps)",
        "an encoder's optimizer.warmupSteps must be less than computeBudget.steps",
        ".encoders",
    ),
    Rule(
        f"!self.encoders.exists(e, e.paradigm in {CONTRASTIVE}) || has(self.dataset.columns.report)",
        "clip/unicl encoders train on image-report pairs: set dataset.columns.report",
        ".dataset.columns.report",
    ),
    Rule(
        "!self.encoders.exists(e, e.paradigm == 'unicl') || self.dataset.columns.labels.size() > 0",
        "unicl encoders use structured labels: list them in dataset.columns.labels",
        ".dataset.columns.labels",
    ),
    Rule(
        "!has(self.dataset.prepSize) || self.encoders.all(e, e.imageSize <= self.dataset.prepSize)",
        "dataset.prepSize must be at least every encoder's imageSize (prep never upsamples)",
        ".dataset.prepSize",
    ),
    Rule(
        "self.evaluation.tasks.all(t, t.labels.all(l, l in self.dataset.columns.labels))",
        "a task names a label that is not in dataset.columns.labels; add it there or fix the task",
        ".evaluation.tasks",
    ),
    Rule(
        "self.evaluation.tasks.all(t, !has(t.maskColumn) || t.maskColumn in self.dataset.columns.masks)",
        "a task's maskColumn is not in dataset.columns.masks; add it there or fix the task",
        ".evaluation.tasks",
    ),
    Rule(
        "!self.evaluation.tasks.exists(t, t.kind == 'report-generation') || has(self.dataset.columns.report)",
        "report-generation needs report text: set dataset.columns.report",
        ".dataset.columns.report",
    ),
)
