"""The vocabulary both planes share: dataset, encoder, budget, resources, task, sweep, tracking, stage.

Pure data (pydantic), no I/O, no torch. The control plane's ScalingStudy (:mod:`radscale.operator.api`)
is built from these models, and the data plane reads them from the cell spec it receives
(:mod:`radscale.cells`); neither plane imports the other. The models carry their cross-field
CEL rules (:mod:`radscale.rules`), which the CRD renders; field docs become ``kubectl explain`` text.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from radscale import rules as cel
from radscale.tasks import DEFAULT_METRIC, KINDS, TaskKind

# Kubernetes naming: RayJob names must be DNS-1035 labels (start with a letter).
DNS1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# fsspec URL (s3://, gs://, file://, memory://, ...) or an absolute local path.
STORAGE_URI = r"^([a-z][a-z0-9+.-]*://.+|/.*)$"
WEIGHTS_URI = r"^(none|hf-hub:[^\s]+|[a-z][a-z0-9+.-]*://[^\s]+|/[^\s]*)$"
QUANTITY = r"^([0-9]+(\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$"
TIMM_NAME = r"^[a-z0-9_]+(\.[a-z0-9_]+)?$"
COLUMN = r"^[^\s].*$"


class Model(BaseModel):
    """Base: camelCase on the wire, snake_case in Python, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )
    # Cross-field rules (CEL), rendered into the CRD at this model's schema node.
    validations: ClassVar[tuple[cel.Rule, ...]] = ()

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler):
        schema = handler(core_schema)
        schema = handler.resolve_ref_schema(schema)
        if cls.validations:
            schema["x-kubernetes-validations"] = [r.to_crd() for r in cls.validations]
        return schema


def sub(model: type[Model], description: str) -> Any:
    """A nested object that is optional on the wire and defaulted to ``{}`` (then its own defaults)."""
    return Field(default_factory=model, description=description, json_schema_extra={"default": {}})


def names_unique(items: list[Any], what: str) -> list[Any]:
    seen: set[str] = set()
    for i, item in enumerate(items):
        if item.name in seen:
            raise ValueError(f"{what} name {item.name!r} at index {i} is used twice; names must be unique")
        seen.add(item.name)
    return items


# ---- dataset ----------------------------------------------------------------------------


class SplitSpec(Model):
    """How the manifest is split into the pretraining pool and the evaluation splits. Always by patient."""

    eval_fraction: float = Field(
        0.2, gt=0.0, lt=1.0,
        description="Fraction of patients held out for evaluation (probe train/val/test). "
        "The rest form the pretraining pool that nested subsets are drawn from.",
    )
    seed: int = Field(0, ge=0, description="Seed of the patient split and of the subset order.")


class ColumnsSpec(Model):
    """Names of the manifest columns."""

    image: str = Field("image", pattern=COLUMN, description="Image path, relative to dataset.uri.")
    patient: str = Field("patient_id", pattern=COLUMN, description="Patient id; splits are by patient.")
    study: str = Field("study_id", pattern=COLUMN, description="Imaging study id.")
    view: str = Field("view", pattern=COLUMN, description="View position (PA, AP, LATERAL).")
    report: str | None = Field(
        None, pattern=COLUMN, description="Report text. Required by clip/unicl encoders and report generation."
    )
    labels: Annotated[list[Annotated[str, Field(pattern=COLUMN, max_length=128)]], Field(max_length=128)] = Field(
        [],
        description="Label columns (1 positive, 0 negative, -1 uncertain, blank unknown). "
        "Evaluation tasks and unicl prompts draw from these.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    masks: Annotated[list[Annotated[str, Field(pattern=COLUMN, max_length=128)]], Field(max_length=16)] = Field(
        [],
        description="Columns holding per-image mask paths (e.g. catheter masks for segmentation).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


class DatasetSpec(Model):
    """Where the chest X-rays and their manifest live."""

    uri: str = Field(
        ..., pattern=STORAGE_URI, max_length=1024,
        description="fsspec URL of the dataset root, e.g. s3://bucket/cxr/ or file:///data/cxr.",
    )
    manifest: str = Field(
        "manifest.csv", min_length=1, max_length=1024,
        description="Manifest (CSV, Parquet or JSONL): a path relative to uri, or a full URL.",
    )
    endpoint: str | None = Field(
        None, pattern=r"^https?://[^\s]+$", max_length=512,
        description="S3-compatible endpoint URL (MinIO, Ceph). Leave unset for AWS S3.",
    )
    credentials_secret: str | None = Field(
        None, pattern=DNS1123_SUBDOMAIN, max_length=253,
        description="Secret in the study's namespace with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
        "mounted into every job and used by the operator to read results.",
    )
    columns: ColumnsSpec = sub(ColumnsSpec, "Manifest column names.")
    split: SplitSpec = sub(SplitSpec, "Patient-level split.")
    prep_size: int | None = Field(
        None, ge=32, le=4096,
        description="Shorter side, in pixels, that images are resized to once at prepare time. "
        "Defaults to the largest encoder imageSize.",
    )


# ---- encoders ---------------------------------------------------------------------------


class Paradigm(enum.StrEnum):
    DINO = "dino"  # RAD-DINO: DINO + iBOT + KoLeo self-distillation
    CLIP = "clip"  # image-report contrastive
    UNICL = "unicl"  # MI2: image-report-label contrastive


RECIPE = " Unset: the recipe's value for the paradigm (docs/pretraining.md, radscale.recipes)."


def fraction(description: str, upper: float = 1.0) -> Any:
    """An optional share of computeBudget.steps (recipes count epochs of 100; radscale, fractions)."""
    return Field(None, ge=0.0, lt=upper, description=description + RECIPE)


class OptimizerSpec(Model):
    """AdamW with linear warm-up then cosine LR, cosine weight decay, layer-wise LR decay, a
    patch-embedding LR multiplier and (dino) a frozen last layer early on. Unset schedule fields
    take the recipe of the encoder's paradigm: DINOv2 for dino, open_clip for clip/unicl."""

    validations = cel.OPTIMIZER_RULES

    name: Literal["adamw"] = Field("adamw", description="Optimizer. Only adamw for now.")
    lr: float = Field(1e-4, gt=0.0, le=1.0, description="Peak learning rate (after warmup), at globalBatchSize.")
    min_lr: float = Field(1e-6, ge=0.0, le=1.0, description="Learning rate at the end of the cosine schedule.")
    warmup_steps: int | None = Field(
        None, ge=0, description="Linear LR warm-up in steps; must be below computeBudget.steps. "
        "Overrides warmupFraction."
    )
    warmup_fraction: float | None = fraction(
        "Linear LR warm-up as a fraction of computeBudget.steps (dino 0.1: 10 of 100 epochs; "
        "clip/unicl: open_clip's 10,000 steps, at most 0.1)."
    )
    weight_decay: float | None = Field(
        None, ge=0.0, le=1.0, description="Weight decay at the start of the schedule (dino 0.04, clip/unicl 0.2)."
        + RECIPE
    )
    weight_decay_end: float | None = Field(
        None, ge=0.0, le=1.0, description="Weight decay at the end (cosine from weightDecay; dino 0.4; "
        "clip/unicl: equal to weightDecay, constant)." + RECIPE
    )
    layer_decay: float | None = Field(
        None, gt=0.0, le=1.0, description="Layer-wise LR decay of the image tower (1.0 = off; dino 0.9, "
        "clip/unicl 1.0)." + RECIPE
    )
    patch_embed_lr_mult: float | None = Field(
        None, gt=0.0, le=1.0, description="LR multiplier of the patch embedding (dino 0.2, clip/unicl 1.0)." + RECIPE
    )
    freeze_last_layer_fraction: float | None = fraction(
        "dino only: the DINO head's last layer (the prototypes) does not train for this fraction of the "
        "steps (0.01: 1 of 100 epochs)."
    )
    clip_grad: float | None = Field(3.0, gt=0.0, description="Gradient-norm clip. Unset: no clipping.")


class TeacherSpec(Model):
    """The DINO teacher's schedules (dino only). Unset: DINOv2's values."""

    temperature_start: float | None = Field(
        None, gt=0.0, le=1.0, description="Teacher softmax temperature at step 0 (0.04)." + RECIPE
    )
    temperature: float | None = Field(
        None, gt=0.0, le=1.0, description="Teacher temperature after the warm-up (0.07)." + RECIPE
    )
    temperature_warmup_fraction: float | None = fraction(
        "Linear teacher-temperature warm-up as a fraction of computeBudget.steps (0.3: 30 of 100 epochs).",
        upper=1.0,
    )
    momentum: float | None = Field(
        None, ge=0.0, le=1.0, description="EMA momentum at step 0, cosine to momentumEnd (0.992)." + RECIPE
    )
    momentum_end: float | None = Field(
        None, ge=0.0, le=1.0, description="EMA momentum at the last step (1.0)." + RECIPE
    )


class TextSpec(Model):
    """The text tower of a clip/unicl encoder."""

    model: str = Field(
        "text-base", pattern=r"^[a-z0-9_.-]+$", max_length=128,
        description="Text tower architecture (see radscale.trainer.models.text).",
    )
    init: str = Field(
        "none", pattern=WEIGHTS_URI, max_length=1024,
        description="Text tower weights: none, a path, an fsspec URL, or hf-hub:ORG/NAME.",
    )
    context_length: int = Field(128, ge=8, le=1024, description="Maximum tokens per report or prompt.")
    embed_dim: int = Field(512, ge=16, le=4096, description="Shared image-text embedding width.")


class DesignTarget(enum.StrEnum):
    """What an adaptive design pins down (its 95% CI is the one that must shrink)."""

    CROSSOVER = "crossover"  # the size at which the encoder beats its own baseline
    EXPONENT = "exponent"  # b of err(N) = a N^-b + c
    ERROR_AT_MAX = "errorAtMax"  # the law's predicted error at adaptive.max


class AdaptiveSpec(Model):
    """Sizes chosen as results come in (sequential design), instead of a fixed grid.

    Every pretraining cell costs the same compute, so a design spends its cells where they shrink
    the target's interval most: it starts with ``initial`` log-spaced sizes, then, from the current
    bootstrap fit, adds the candidate of a log grid over [min, max] (a new size, or another
    replicate of a measured one) that most shrinks the target's 95% CI, until the CI is narrow
    enough or ``maxCells`` are spent. See docs/method.md.
    """

    validations = cel.ADAPTIVE_RULES

    min: int = Field(..., ge=1, le=1_000_000_000, description="Smallest size the design may choose (images).")
    max: int = Field(..., ge=2, le=1_000_000_000, description="Largest size the design may choose (images); at "
                     "most the pretraining pool (the first N of one seeded order, as for fixed sizes).")
    initial: int = Field(3, ge=2, le=16, description="Log-spaced sizes (min and max included) run first, each "
                         "with spec.replicates replicates.")
    grid: int = Field(16, ge=3, le=64, description="Candidate sizes: this many log-spaced points over [min, max], "
                      "rounded to whole images.")
    max_cells: int = Field(8, ge=2, le=64, description="Budget: pretraining cells of this encoder the design may "
                           "run in all (initial ones and replicates included; baselines are not counted).")
    target: DesignTarget = Field(DesignTarget.CROSSOVER, description="What to pin down: crossover (vs the "
                                 "baseline; needs evaluation.baselines), exponent, or errorAtMax.")
    task: str | None = Field(None, min_length=1, max_length=63, description="Task whose headline metric the "
                             "target is read on. Unset: the first evaluation task.")
    relative_width: float = Field(0.25, gt=0.0, le=10.0, description="Stop once the target's 95% CI width "
                                  "divided by its value is at most this (0.25: +-12.5%).")


class NormalizationSpec(Model):
    """Per-channel standardisation ``(x - mean) / std`` of images scaled to [0, 1]."""

    validations = cel.NORMALIZATION_RULES

    mean: Annotated[list[float], Field(min_length=1, max_length=3)] = Field(
        ..., description="One value (grey, repeated) or three (RGB), e.g. [0.5307] for RAD-DINO."
    )
    std: Annotated[list[Annotated[float, Field(gt=0.0)]], Field(min_length=1, max_length=3)] = Field(
        ..., description="As many positive values as mean, e.g. [0.2583] for RAD-DINO."
    )


class EncoderSpec(Model):
    """One encoder of the grid: an architecture, a paradigm and a starting point."""

    validations = cel.ENCODER_RULES

    name: str = Field(
        ..., pattern=DNS1035, min_length=1, max_length=24,
        description="Short DNS-1035 name (a-z, 0-9, '-'; starts with a letter). Part of every child name.",
    )
    paradigm: Paradigm = Field(
        ..., description="Pretraining objective: dino (RAD-DINO), clip, or unicl (MI2 with labels)."
    )
    model: str = Field(
        ..., pattern=TIMM_NAME, max_length=128,
        description="timm architecture name, e.g. vit_base_patch14_dinov2 (RAD-DINO), vit_base_patch16_clip_224, "
        "or davit_base / davit_huge (MI2's DaViT tower; clip and unicl only).",
    )
    init: str = Field(
        "none", pattern=WEIGHTS_URI, max_length=1024,
        description="Weights to continue pretraining from (the open model; also the baseline): "
        "none, a file (safetensors or torch) or folder (Hugging Face save_pretrained: transformers "
        "Dinov2Model, open_clip or timm layout) as a path or fsspec URL, or hf-hub:ORG/NAME, read from the "
        "local Hugging Face cache first. Nothing is downloaded unless named here.",
    )
    image_size: int = Field(..., ge=32, le=2048, description="Input resolution (pixels) of global views.")
    normalization: NormalizationSpec | None = Field(
        None, description="Image standardisation. Unset: what travels with the init weights (radscale's "
        "metadata, preprocessor_config.json beside them, or published values such as RAD-DINO's "
        "0.5307/0.2583); radscale's 0.5/0.25 for a random init.",
    )
    optimizer: OptimizerSpec = sub(OptimizerSpec, "Optimizer settings.")
    text: TextSpec | None = Field(None, description="Text tower (clip/unicl only). Defaults apply when unset.")
    prototypes: int = Field(
        65536, ge=16, le=262144,
        description="DINO/iBOT head prototypes (dino only; the DINOv2 default is 65,536).",
    )
    adaptive: AdaptiveSpec | None = Field(
        None, description="This encoder's sizes by sequential design, overriding spec.adaptive and spec.sizes.")
    teacher: TeacherSpec | None = Field(
        None, description="DINO teacher schedules (dino only). Unset: DINOv2's values apply."
    )
    drop_path_rate: float | None = Field(
        None, ge=0.0, lt=1.0,
        description="Stochastic depth of the image tower (timm drop_path_rate; dino: the same rate in every "
        "block of the student, none in the teacher). Unset: the recipe's rate for the architecture "
        "(dino 0.3, 0.4 for ViT-L/14 and ViT-g; clip/unicl 0).",
    )


# ---- compute and resources ----------------------------------------------------------------


class ComputeBudget(Model):
    """The same for every data size: the paper's constant compute."""

    validations = cel.BUDGET_RULES

    steps: int = Field(..., ge=1, le=10_000_000, description="Optimizer steps per pretraining cell.")
    global_batch_size: int = Field(..., ge=1, le=1_000_000, description="Images per optimizer step, all workers.")
    checkpoint_every: int = Field(
        1000, ge=1, description="Checkpoint interval in steps; a retry resumes from the last one."
    )


class StageResources(Model):
    """Ray cluster shape for one stage."""

    workers: int = Field(1, ge=1, le=1024, description="Ray Train / Tune workers (one pod each).")
    gpus_per_worker: int = Field(0, ge=0, le=16, description="GPUs per worker.")
    cpus: int = Field(4, ge=1, le=512, description="CPUs per worker.")
    memory: str = Field("16Gi", pattern=QUANTITY, description="Memory per worker (Kubernetes quantity).")
    image: str | None = Field(
        None, max_length=512, description="Trainer image. Defaults to the operator's configured image."
    )
    node_selector: dict[str, str] = Field({}, description="Passed through to worker pods.")
    tolerations: list[dict[str, Any]] = Field(
        [], max_length=32, description="Passed through to worker pods."
    )


class PretrainResources(StageResources):
    """Ray cluster shape for pretraining, and how the model is spread over its workers."""

    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="ddp: every worker holds the whole model (the default). fsdp: parameters, "
        "gradients and optimizer state are sharded over the workers (PyTorch FSDP2), for encoders "
        "that do not fit one GPU; checkpoints hold full weights either way."
    )


class ResourcesSpec(Model):
    """Per-stage Ray cluster shapes."""

    prepare: StageResources = sub(StageResources, "Shard preparation (Ray Data).")
    pretrain: PretrainResources = sub(PretrainResources, "Continual pretraining (Ray Train).")
    evaluate: StageResources = sub(StageResources, "Evaluation sweeps (Ray Tune).")


# ---- evaluation ---------------------------------------------------------------------------


class DecoderSpec(Model):
    """The report generator: radscale's small built-in decoder, or a Hugging Face causal LM behind a
    trained MLP projector (LLaVA-style, as RAD-DINO and MI2 evaluate report generation)."""

    validations = cel.DECODER_RULES

    model: str = Field(
        "builtin", pattern=r"^(builtin|hf-hub:[^\s]+|[a-z][a-z0-9+.-]*://[^\s]+|/[^\s]*)$", max_length=1024,
        description="builtin (2-layer transformer over the patch tokens; the CPU default), or a causal LM "
        "in transformers' save_pretrained layout (weights + tokenizer) as hf-hub:ORG/NAME (local cache "
        "first), a path or an fsspec URL.",
    )
    tuning: Literal["frozen", "lora"] = Field(
        "frozen", description="A Hugging Face LM: frozen (only the projector trains) or lora (plus LoRA "
        "adapters on its linear layers, with peft)."
    )
    lora_rank: int = Field(8, ge=1, le=256, description="LoRA rank (tuning: lora).")


class TaskSpec(Model):
    """One frozen-encoder evaluation task."""

    validations = cel.TASK_RULES

    name: str = Field(..., pattern=DNS1035, max_length=32, description="Task name (DNS-1035).")
    kind: TaskKind = Field(..., description="classification, segmentation or report-generation.")
    labels: Annotated[list[Annotated[str, Field(max_length=128)]], Field(max_length=128)] = Field(
        [],
        description="Label columns a classification task predicts (from dataset.columns.labels).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    min_positives: int | None = Field(
        None, ge=1, le=10_000,
        description="classification only: score only the labels with at least this many positives in the "
        "test split (the macro average of a long tail; an AUROC over one or two positives is luck). The "
        "split is the same for every cell, so every point of a curve averages the same labels. "
        "Unset: every label with a positive and a negative.",
    )
    mask_column: str | None = Field(
        None, max_length=128, description="Mask column of a segmentation task (from dataset.columns.masks)."
    )
    decoder: DecoderSpec | None = Field(
        None, description="report-generation only: the decoder. Unset: the built-in one."
    )
    metric: str | None = Field(
        None, max_length=32,
        description="Headline metric: " + ", ".join(f"{'|'.join(v.names)} ({k.value})" for k, v in KINDS.items())
        + ". Default: " + ", ".join(v.headline for v in KINDS.values()) + ".",
    )

    @property
    def headline_metric(self) -> str:
        return self.metric or DEFAULT_METRIC[self.kind]


SEARCHABLE = ("lr", "weightDecay", "epochs")


class ParamSpace(Model):
    """One hyperparameter's search space."""

    validations = cel.PARAM_RULES

    type: Literal["loguniform", "uniform", "randint", "choice"] = Field(..., description="Distribution.")
    low: float | None = Field(None, description="Lower bound (uniform, loguniform, randint).")
    high: float | None = Field(None, description="Upper bound (uniform, loguniform, randint).")
    values: list[float] | None = Field(None, max_length=64, description="Candidates (choice).")


def default_search_space() -> dict[str, ParamSpace]:
    return {
        "lr": ParamSpace(type="loguniform", low=1e-4, high=1e-1),
        "weightDecay": ParamSpace(type="loguniform", low=1e-6, high=1e-2),
        "epochs": ParamSpace(type="choice", values=[10, 20, 40]),
    }


class SchedulerSpec(Model):
    """Trial scheduler of the sweep."""

    type: Literal["asha", "fifo"] = Field("asha", description="asha (early stopping) or fifo.")
    grace_period: int = Field(1, ge=1, description="ASHA: epochs before a trial may be stopped.")
    reduction_factor: float = Field(3.0, gt=1.0, le=16.0, description="ASHA: halving rate.")


class SweepSpec(Model):
    """The Ray Tune sweep run per task and cell."""

    num_samples: int = Field(8, ge=1, le=1000, description="Trials per task and cell.")
    search_space: dict[str, ParamSpace] = Field(
        default_factory=default_search_space,
        description="Search space by hyperparameter (lr, weightDecay, epochs).",
        json_schema_extra={
            "default": {
                k: v.model_dump(by_alias=True, exclude_none=True) for k, v in default_search_space().items()
            },
            "x-kubernetes-validations": [
                {
                    "rule": "self.all(k, k in " + str(list(SEARCHABLE)) + ")",
                    "message": "searchSpace keys must be among lr, weightDecay, epochs",
                }
            ],
            "maxProperties": len(SEARCHABLE),
        },
    )
    scheduler: SchedulerSpec = sub(SchedulerSpec, "Trial scheduler.")
    patience: int = Field(
        5, ge=1, le=1000,
        description="Epochs in a row without a better validation headline before a head stops training "
        "(epochs is then the most it trains). Every head ends at its best validation epoch's weights, which "
        "the test split scores. A patience of at least the epochs trains every head to its epochs.",
    )

    @field_validator("search_space")
    @classmethod
    def _known_keys(cls, v: dict[str, ParamSpace]) -> dict[str, ParamSpace]:
        unknown = sorted(set(v) - set(SEARCHABLE))
        if unknown:
            raise ValueError(f"unknown hyperparameter(s) {unknown}; searchable: {list(SEARCHABLE)}")
        return v


class TrackingSpec(Model):
    """MLflow tracking."""

    uri: str | None = Field(
        None, pattern=r"^[a-z][a-z0-9+.-]*:.+$", max_length=1024,
        description="MLflow tracking URI (http://mlflow:5000). Unset: no MLflow logging on clusters.",
    )
    experiment: str | None = Field(
        None, max_length=256, description="Experiment name. Default: <namespace>/<study>."
    )


# ---- stages -------------------------------------------------------------------------------


class Stage(enum.StrEnum):
    PREPARE = "prepare"
    PRETRAIN = "pretrain"
    EVALUATE = "evaluate"
