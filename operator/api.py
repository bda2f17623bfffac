"""The ScalingStudy API (``radscale.io/v1alpha1``): spec and status models.

Pure data, no I/O. These pydantic models are the single source of the CRD
(:mod:`radscale.operator.crd` renders them), of the generated API reference, and of the
offline validation behind ``radscale validate``. Field docs become ``kubectl explain`` text.
Cross-field rules live in :mod:`radscale.operator.rules` and are attached per model.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from radscale.operator import rules as cel

GROUP = "radscale.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ScalingStudy"
PLURAL = "scalingstudies"
SINGULAR = "scalingstudy"
SHORT_NAMES = ("ss",)

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


class OptimizerSpec(Model):
    """AdamW with cosine schedule, warmup and layer-wise LR decay."""

    validations = cel.OPTIMIZER_RULES

    name: Literal["adamw"] = Field("adamw", description="Optimizer. Only adamw for now.")
    lr: float = Field(1e-4, gt=0.0, le=1.0, description="Peak learning rate (after warmup), at globalBatchSize.")
    min_lr: float = Field(1e-6, ge=0.0, le=1.0, description="Learning rate at the end of the cosine schedule.")
    warmup_steps: int = Field(0, ge=0, description="Linear warmup steps; must be below computeBudget.steps.")
    weight_decay: float = Field(0.04, ge=0.0, le=1.0, description="Weight decay at the start of the schedule.")
    weight_decay_end: float | None = Field(
        None, ge=0.0, le=1.0, description="Weight decay at the end (cosine). Unset: constant."
    )
    layer_decay: float = Field(
        1.0, gt=0.0, le=1.0, description="Layer-wise LR decay (1.0 = off; 0.9 is usual for ViT-B)."
    )
    clip_grad: float | None = Field(3.0, gt=0.0, description="Gradient-norm clip. Unset: no clipping.")


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
        description="timm architecture name, e.g. vit_base_patch14_dinov2 or vit_base_patch16_clip_224.",
    )
    init: str = Field(
        "none", pattern=WEIGHTS_URI, max_length=1024,
        description="Weights to continue pretraining from (the open model; also the baseline): "
        "none, a path, an fsspec URL, or hf-hub:ORG/NAME. Nothing is downloaded unless named here.",
    )
    image_size: int = Field(..., ge=32, le=2048, description="Input resolution (pixels) of global views.")
    optimizer: OptimizerSpec = sub(OptimizerSpec, "Optimizer settings.")
    text: TextSpec | None = Field(None, description="Text tower (clip/unicl only). Defaults apply when unset.")
    prototypes: int = Field(
        65536, ge=16, le=262144,
        description="DINO/iBOT head prototypes (dino only; the DINOv2 default is 65,536).",
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


class JobsSpec(Model):
    """How child RayJobs behave."""

    ttl_seconds_after_finished: int = Field(
        600, ge=0, description="Seconds KubeRay keeps a finished RayJob's cluster. Results are copied first."
    )
    active_deadline_seconds: int | None = Field(None, ge=1, description="Per-RayJob deadline. Unset: none.")
    env: dict[str, str] = Field({}, description="Extra environment for every job.")
    pip: list[str] = Field([], max_length=64, description="Extra pip packages (runtime env).")


# ---- evaluation ---------------------------------------------------------------------------


class TaskKind(enum.StrEnum):
    CLASSIFICATION = "classification"
    SEGMENTATION = "segmentation"
    REPORT_GENERATION = "report-generation"


DEFAULT_METRIC = {
    TaskKind.CLASSIFICATION: "auroc",
    TaskKind.SEGMENTATION: "dice",
    TaskKind.REPORT_GENERATION: "bleu4",
}


class TaskSpec(Model):
    """One frozen-encoder evaluation task."""

    validations = cel.TASK_RULES

    name: str = Field(..., pattern=DNS1035, max_length=32, description="Task name (DNS-1035).")
    kind: TaskKind = Field(..., description="classification, segmentation or report-generation.")
    labels: Annotated[list[Annotated[str, Field(max_length=128)]], Field(max_length=64)] = Field(
        [],
        description="Label columns a classification task predicts (from dataset.columns.labels).",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    mask_column: str | None = Field(
        None, max_length=128, description="Mask column of a segmentation task (from dataset.columns.masks)."
    )
    metric: str | None = Field(
        None, max_length=32,
        description="Headline metric: auroc|auprc (classification), dice|cldice (segmentation), "
        "bleu4|rougeL|clinicalF1 (report-generation). Default: auroc, dice, bleu4.",
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

    @field_validator("search_space")
    @classmethod
    def _known_keys(cls, v: dict[str, ParamSpace]) -> dict[str, ParamSpace]:
        unknown = sorted(set(v) - set(SEARCHABLE))
        if unknown:
            raise ValueError(f"unknown hyperparameter(s) {unknown}; searchable: {list(SEARCHABLE)}")
        return v


class EvaluationSpec(Model):
    """One frozen-encoder protocol for every cell."""

    tasks: Annotated[list[TaskSpec], Field(min_length=1, max_length=16)] = Field(
        ...,
        description="Evaluation tasks.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    sweep: SweepSpec = sub(SweepSpec, "Hyperparameter sweep per task (Ray Tune).")
    baselines: bool = Field(True, description="Also evaluate each encoder's init weights as size 0.")

    @field_validator("tasks")
    @classmethod
    def _unique(cls, v: list[TaskSpec]) -> list[TaskSpec]:
        return names_unique(v, "task")


class AnalysisSpec(Model):
    """How the curves become scaling laws and crossovers (see docs/method.md)."""

    fit: Literal["varpro", "huber"] = Field(
        "varpro", description="varpro: least squares by variable projection (exact for fixed b). huber: Huber "
        "loss on log residuals, robust to an outlying cell (Chinchilla's approach 3).")
    min_r2: float = Field(
        0.5, ge=0.0, le=1.0, description="A law with a lower R² (or its exponent at a bound) is reported as "
        "'no law fitted', with the reason, instead of as numbers.")
    max_extrapolation: float = Field(
        10.0, ge=1.0, le=1000.0, description="A crossover beyond the largest size is reported as extrapolated "
        "(and flagged) only up to this factor times the largest size; beyond it, notReached.")


class TrackingSpec(Model):
    """MLflow tracking."""

    uri: str | None = Field(
        None, pattern=r"^[a-z][a-z0-9+.-]*:.+$", max_length=1024,
        description="MLflow tracking URI (http://mlflow:5000). Unset: no MLflow logging on clusters.",
    )
    experiment: str | None = Field(
        None, max_length=256, description="Experiment name. Default: <namespace>/<study>."
    )


# ---- the study ----------------------------------------------------------------------------


class ScalingStudySpec(Model):
    """A data-scaling study: encoders x nested data sizes at constant compute, one evaluation protocol."""

    validations = cel.SPEC_RULES

    dataset: DatasetSpec = Field(..., description="The institution's chest X-rays and manifest.")
    sizes: Annotated[list[Annotated[int, Field(ge=1, le=1_000_000_000)]], Field(min_length=1, max_length=32)] = (
        Field(
            ...,
            description="Nested pretraining-subset sizes in images, strictly increasing "
            "(e.g. 30000, 100000, 1000000). Size N is the first N of one seeded order of the pool.",
            json_schema_extra={"x-kubernetes-list-type": "set"},
        )
    )
    compute_budget: ComputeBudget = Field(..., description="Steps and global batch, identical for every size.")
    replicates: int = Field(
        1, ge=1, le=16, description="Seeds per cell (encoder x size, baselines too). Replicates share the split "
        "and the nested subsets; each has its own init of new parameters, augmentation, data order and "
        "evaluation heads. With 2 or more, the fits' intervals include run-to-run variation.")
    encoders: Annotated[list[EncoderSpec], Field(min_length=1, max_length=16)] = Field(
        ...,
        description="Encoders to continually pretrain.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    attention: Literal["auto", "triton", "sdpa"] = Field(
        "auto", description="Attention kernel: auto (Triton on CUDA, else SDPA), triton, or sdpa."
    )
    resources: ResourcesSpec = sub(ResourcesSpec, "Per-stage Ray cluster shapes.")
    ray_cluster_selector: dict[str, str] | None = Field(
        None,
        description="Run every job on an existing RayCluster selected by these labels "
        "(KubeRay clusterSelector) instead of one cluster per job.",
        min_length=1,
    )
    evaluation: EvaluationSpec = Field(..., description="Evaluation tasks, sweep and baselines.")
    analysis: AnalysisSpec = sub(AnalysisSpec, "Scaling-law fits and crossovers.")
    max_concurrent_cells: int = Field(4, ge=1, le=256, description="Cap on RayJobs running at once.")
    retries: int = Field(2, ge=0, le=10, description="Retries per failed stage; each resumes from its checkpoint.")
    output: str = Field(
        ..., pattern=STORAGE_URI, max_length=1024,
        description="fsspec URL for shards, checkpoints, cell results and plots.",
    )
    tracking: TrackingSpec = sub(TrackingSpec, "MLflow tracking.")
    jobs: JobsSpec = sub(JobsSpec, "Child RayJob settings.")
    suspend: bool = Field(False, description="Suspend running children, keeping state; false resumes.")

    @field_validator("sizes")
    @classmethod
    def _increasing(cls, v: list[int]) -> list[int]:
        for i in range(1, len(v)):
            if v[i] <= v[i - 1]:
                raise ValueError(
                    f"sizes must be unique and strictly increasing; {v[i]} at index {i} follows {v[i - 1]}"
                )
        return v

    @field_validator("encoders")
    @classmethod
    def _unique(cls, v: list[EncoderSpec]) -> list[EncoderSpec]:
        return names_unique(v, "encoder")

    @property
    def prep_size(self) -> int:
        return self.dataset.prep_size or max(e.image_size for e in self.encoders)


# ---- status -------------------------------------------------------------------------------


class Phase(enum.StrEnum):
    PENDING = "Pending"
    PREPARING = "Preparing"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class Stage(enum.StrEnum):
    PREPARE = "prepare"
    PRETRAIN = "pretrain"
    EVALUATE = "evaluate"


class CellState(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    RETRYING = "Retrying"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"

    @property
    def terminal(self) -> bool:
        return self in (CellState.SUCCEEDED, CellState.FAILED)


class ConditionType(enum.StrEnum):
    READY = "Ready"
    PROGRESSING = "Progressing"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    SUSPENDED = "Suspended"


class StatusModel(BaseModel):
    """Status models tolerate unknown fields: an older operator must not choke on a newer status."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Condition(StatusModel):
    """A condition per the Kubernetes API conventions."""

    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(..., pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$", max_length=1024)
    message: str = Field("", max_length=32768)
    last_transition_time: str = Field(..., description="RFC 3339 time of the last status change.")
    observed_generation: int | None = Field(None, ge=0)


class CellCounts(StatusModel):
    total: int = 0
    pending: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0


class CellStatus(StatusModel):
    """One cell (encoder x size; size 0 is the baseline)."""

    name: str
    encoder: str
    size: int = Field(..., ge=0)
    replicate: int = Field(0, ge=0, description="Replicate (seed index) of this encoder x size.")
    stage: Stage
    state: CellState
    attempts: int = Field(0, ge=0)
    ray_job: str | None = Field(None, alias="rayJob")
    dashboard_url: str | None = Field(None, alias="dashboardURL", description="Ray dashboard of the running job.")
    message: str = Field("", max_length=1024)
    failures: int = Field(0, ge=0, description="Failed attempts of the current stage (retries use them up).")
    started_at: str | None = Field(None, description="When the current RayJob was created (RFC 3339).")
    # Earliest time the next attempt may start (exponential backoff after a failure).
    not_before: str | None = None


class Interval(StatusModel):
    low: float
    high: float | None = Field(None, description="Upper bound; null means unbounded (e.g. never crosses).")


class CrossoverOutcome(enum.StrEnum):
    MEASURED = "measured"  # between two measured sizes
    BELOW_SMALLEST = "belowSmallest"  # already beats the baseline at the smallest size: "<= N_min"
    EXTRAPOLATED = "extrapolated"  # beyond the largest size, within analysis.maxExtrapolation: flagged
    NOT_REACHED = "notReached"  # not within maxExtrapolation x the largest size
    NO_BASELINE = "noBaseline"  # no baseline cell to beat


class Crossover(StatusModel):
    """Where this encoder's curve beats its own baseline (its init weights, evaluated as size 0)."""

    outcome: CrossoverOutcome
    size: float | None = Field(
        None, description="measured/extrapolated: the size; belowSmallest: the smallest size (read '<='); "
        "otherwise null. Never below the smallest measured size.")
    ci95: Interval | None = Field(
        None, description="Percentile interval over the bootstrap draws (belowSmallest draws count as the "
        "smallest size, notReached ones as unbounded); null without draws.")
    share: dict[str, float] = Field(default_factory=dict, description="Share of bootstrap draws per outcome.")
    extrapolated: bool = Field(False, description="The size lies beyond the largest measured size.")


class FitStatus(StatusModel):
    """err(N) = a * N^(-b) + c for one encoder x task x metric (err = 1 - score for scores)."""

    encoder: str
    task: str
    metric: str
    fitted: bool = Field(True, description="False: no law fitted (lackOfFit says why); a, b, c are then null.")
    lack_of_fit: str | None = Field(None, description="Why no law is reported (exponent at a bound, low R²).")
    method: str = Field("varpro", description="Fit method: varpro or huber.")
    a: float | None = None
    b: float | None = None
    c: float | None = None
    ci95: dict[str, Interval] = Field(default_factory=dict, description="Bootstrap 95% CI of a, b, c.")
    r2: float
    replicates: int = Field(1, ge=0, description="Fewest replicates at any size of the curve.")
    draws: int = Field(0, ge=0, description="Bootstrap draws behind the intervals.")
    crossover: Crossover = Field(default_factory=lambda: Crossover(outcome=CrossoverOutcome.NO_BASELINE))


class BestEncoder(StatusModel):
    """The best encoder of one task: lowest error at the largest size every encoder has."""

    task: str
    metric: str
    size: int
    encoder: str | None = Field(None, description="Null when the best is tied with another (CIs overlap).")
    tied: list[str] = Field(default_factory=list, description="Encoders whose 95% CIs overlap the best's.")


class ArtifactsStatus(StatusModel):
    results: str | None = Field(None, description="URI of the full results JSON.")
    plot: str | None = Field(None, description="URI of the scaling-curve PNG.")


class MlflowStatus(StatusModel):
    experiment: str | None = None
    experiment_id: str | None = None
    url: str | None = None


# task -> metric -> encoder -> [[size, value, ciLow, ciHigh], ...]
Curves = dict[str, dict[str, dict[str, list[list[float]]]]]


class ScalingStudyStatus(StatusModel):
    """Bounded: large things go to the artifact store."""

    observed_generation: int | None = None
    phase: Phase = Phase.PENDING
    conditions: list[Condition] = Field(default_factory=list)
    cells: CellCounts = Field(default_factory=CellCounts)
    progress: str = Field("0/0", description="Cells succeeded / total (printer column).")
    best: str | None = Field(None, description="The encoder best on the most tasks (untied), or 'tie'.")
    best_per_task: list[BestEncoder] = Field(default_factory=list, description="Best encoder per task.")
    cell_status: list[CellStatus] = Field(default_factory=list)
    results: Curves = Field(default_factory=dict)
    fits: list[FitStatus] = Field(default_factory=list)
    artifacts: ArtifactsStatus = Field(default_factory=ArtifactsStatus)
    mlflow: MlflowStatus = Field(default_factory=MlflowStatus)
    prepare: CellStatus | None = Field(None, description="The shard-preparation stage.")
    dataset_fingerprint: str | None = Field(None, description="Fingerprint of the accepted dataset spec.")
    budget_key: str | None = Field(None, description="Key of the accepted compute budget.")


class ObjectMeta(BaseModel):
    """The part of metadata radscale reads; the rest passes through."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = Field(..., min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN)
    namespace: str | None = Field(None, max_length=63)
    generation: int | None = None
    uid: str | None = None


class ScalingStudy(BaseModel):
    """The custom resource."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    api_version: Literal["radscale.io/v1alpha1"] = Field(API_VERSION, alias="apiVersion")
    kind: Literal["ScalingStudy"] = KIND
    metadata: ObjectMeta
    spec: ScalingStudySpec
    status: ScalingStudyStatus | None = None
