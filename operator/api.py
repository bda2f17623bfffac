"""The ScalingStudy API (``radscale.io/v1alpha1``): spec and status models.

Pure data, no I/O. These pydantic models are the single source of the CRD
(:mod:`radscale.operator.crd` renders them), of the generated API reference, and of the
offline validation behind ``radscale validate``. Field docs become ``kubectl explain`` text.
The vocabulary both planes share (dataset, encoder, budget, resources, task, sweep, tracking,
stage) lives in :mod:`radscale.spec` and is re-exported here; cross-field rules live in
:mod:`radscale.rules` and are attached per model.
"""

from __future__ import annotations

import enum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from radscale import rules as cel
from radscale.spec import (  # noqa: F401  (re-exported: api is the ScalingStudy's one namespace)
    COLUMN,
    DEFAULT_METRIC,
    DNS1035,
    DNS1123_SUBDOMAIN,
    QUANTITY,
    SEARCHABLE,
    STORAGE_URI,
    TIMM_NAME,
    WEIGHTS_URI,
    AdaptiveSpec,
    ColumnsSpec,
    ComputeBudget,
    DatasetSpec,
    DecoderSpec,
    DesignTarget,
    EncoderSpec,
    Model,
    NormalizationSpec,
    OptimizerSpec,
    Paradigm,
    ParamSpace,
    PretrainResources,
    ResourcesSpec,
    SchedulerSpec,
    SplitSpec,
    Stage,
    StageResources,
    SweepSpec,
    TaskKind,
    TaskSpec,
    TextSpec,
    TrackingSpec,
    default_search_space,
    names_unique,
    sub,
)

GROUP = "radscale.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ScalingStudy"
PLURAL = "scalingstudies"
SINGULAR = "scalingstudy"
SHORT_NAMES = ("ss",)


class JobsSpec(Model):
    """How child RayJobs behave."""

    ttl_seconds_after_finished: int = Field(
        600, ge=0, description="Seconds KubeRay keeps a finished RayJob's cluster. Results are copied first."
    )
    active_deadline_seconds: int | None = Field(None, ge=1, description="Per-RayJob deadline. Unset: none.")
    env: dict[str, str] = Field({}, description="Extra environment for every job.")
    pip: list[str] = Field([], max_length=64, description="Extra pip packages (runtime env).")


# ---- evaluation ---------------------------------------------------------------------------


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


# ---- the study ----------------------------------------------------------------------------


class ScalingStudySpec(Model):
    """A data-scaling study: encoders x nested data sizes at constant compute, one evaluation protocol."""

    validations = cel.SPEC_RULES

    dataset: DatasetSpec = Field(..., description="The institution's chest X-rays and manifest.")
    sizes: Annotated[list[Annotated[int, Field(ge=1, le=1_000_000_000)]], Field(min_length=1, max_length=32)] | None = (
        Field(
            None,
            description="Nested pretraining-subset sizes in images, strictly increasing "
            "(e.g. 30000, 100000, 1000000). Size N is the first N of one seeded order of the pool. "
            "Give sizes (a fixed grid) or adaptive.",
            json_schema_extra={"x-kubernetes-list-type": "set"},
        )
    )
    adaptive: AdaptiveSpec | None = Field(
        None, description="Choose every encoder's sizes by sequential design instead of a fixed grid "
        "(an encoder's own adaptive overrides it).")
    compute_budget: ComputeBudget = Field(..., description="Steps and global batch, identical for every size.")
    replicates: int = Field(
        1, ge=1, le=8, description="Seeds per cell (encoder x size, baselines too). Replicates share the split "
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
    queue_name: str | None = Field(
        None, min_length=1, max_length=63, pattern=DNS1123_SUBDOMAIN,
        description="Kueue LocalQueue for every RayJob (label kueue.x-k8s.io/queue-name). The RayJobs are "
        "created suspended and start when Kueue admits them; a job Kueue suspends (preemption) resumes from "
        "its checkpoints when readmitted and uses up no retry. Needs one cluster per job (no "
        "rayClusterSelector).")
    priority_class_name: str | None = Field(
        None, min_length=1, max_length=253, pattern=DNS1123_SUBDOMAIN,
        description="Kubernetes PriorityClass of every Ray pod (head and workers); Kueue takes the workload's "
        "priority from it, for queue order and preemption.")
    workload_priority_class_name: str | None = Field(
        None, min_length=1, max_length=63, pattern=DNS1123_SUBDOMAIN,
        description="Kueue WorkloadPriorityClass (label kueue.x-k8s.io/priority-class): a priority for "
        "Kueue alone, not for the pod scheduler. Needs queueName.")
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
    def _increasing(cls, v: list[int] | None) -> list[int] | None:
        for i in range(1, len(v or ())):
            if v[i] <= v[i - 1]:
                raise ValueError(
                    f"sizes must be unique and strictly increasing; {v[i]} at index {i} follows {v[i - 1]}"
                )
        return v

    def design_of(self, encoder: EncoderSpec) -> AdaptiveSpec | None:
        """The sequential design of an encoder's sizes, or None for the fixed ``sizes``."""
        return encoder.adaptive or self.adaptive

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
    queued: int = Field(0, description="Of the running cells, those whose RayJob is suspended: waiting for "
                        "Kueue to admit it (or readmit it after a preemption).")
    succeeded: int = 0
    failed: int = 0


HISTORY_MESSAGE_MAX = 256


class StageAttempts(StatusModel):
    """The attempts one stage of a cell used: kept after the cell moves on to its next stage."""

    stage: Stage
    attempts: int = Field(0, ge=0, description="RayJobs created for this stage.")
    failures: int = Field(0, ge=0, description="Attempts of this stage that failed.")
    last_message: str = Field("", max_length=HISTORY_MESSAGE_MAX,
                              description="The last failure of this stage (truncated), or empty.")


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
    job_phase: str | None = Field(
        None, alias="jobPhase", description="Last observed jobDeploymentStatus of the current RayJob (Suspended: "
        "queued for Kueue admission, or preempted).")
    preemptions: int = Field(0, ge=0, description="Times Kueue suspended a running RayJob of this cell "
                             "(each resumed from its checkpoints without using up a retry).")
    history: list[StageAttempts] = Field(
        default_factory=list, max_length=len(Stage),
        description="Attempts and failures per stage, at most one entry per stage (bounded): a failure of "
        "pretraining stays visible after evaluation starts.")


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


class TargetCI(StatusModel):
    """A design target's 95% interval; ``width`` is relative: (high - low) / value, and for a
    crossover high / low - 1 (its scale is a size). Null bounds: none yet, or unbounded."""

    value: float | None = None
    low: float | None = None
    high: float | None = None
    width: float | None = Field(None, description="Relative width; null when unbounded or undefined.")


class DesignDecision(StatusModel):
    """One round of a sequential design: the cells it added and why."""

    round: int = Field(..., ge=0)
    sizes: list[int] = Field(..., max_length=64, description="One entry per cell added; a size already "
                             "measured is one more replicate of it, 0 one more baseline evaluation.")
    reason: str = Field("", max_length=1024)
    before: TargetCI | None = Field(None, description="The target's CI when the round was chosen.")
    predicted: TargetCI | None = Field(None, description="The CI the round was predicted to leave.")
    after: TargetCI | None = Field(None, description="The CI measured once the round's cells finished.")
    time: str


class DesignState(enum.StrEnum):
    RUNNING = "Running"
    STOPPED = "Stopped"


DESIGN_DECISIONS_MAX = 64


class DesignStatus(StatusModel):
    """The sequential design of one encoder's sizes (spec.adaptive or the encoder's own)."""

    encoder: str
    target: str
    task: str
    metric: str
    state: DesignState = DesignState.RUNNING
    stop_reason: str | None = Field(None, description="TargetReached, BudgetSpent or GridExhausted.")
    message: str = Field("", max_length=1024)
    cells: int = Field(0, ge=0, description="Cells the design has added (baselines beyond spec.replicates "
                       "included).")
    max_cells: int = Field(0, ge=0)
    current: TargetCI | None = Field(None, description="The target's CI from the finished cells.")
    batch_rule: str = Field("", description="How a round of several cells is chosen.")
    decisions: list[DesignDecision] = Field(default_factory=list, max_length=DESIGN_DECISIONS_MAX)


class ArtifactsStatus(StatusModel):
    results: str | None = Field(None, description="URI of the full results JSON.")
    plot: str | None = Field(None, description="URI of the scaling-curve PNG.")
    digest: str | None = Field(None, description="Key of the curves and fits the documents show; unchanged: "
                               "nothing is rewritten.")


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
    design: list[DesignStatus] = Field(default_factory=list, max_length=16,
                                       description="Sequential designs of sizes, one per adaptive encoder.")
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
