"""The one bridge between the planes: the cell spec a job receives and the cell result it writes.

Pure data (pydantic), importable by both planes; it never imports torch, ray, kopf or the
kubernetes client. The control plane renders a :class:`CellSpec` into each RayJob's entrypoint::

    python -m radscale.trainer.prepare  --cell <json-or-uri>
    python -m radscale.trainer.pretrain --cell <json-or-uri>
    python -m radscale.trainer.evaluate --cell <json-or-uri>

and the job writes a :class:`CellResult` to ``<cell.output>/result.json``, with checkpoints in
``<cell.output>/checkpoints/`` and the pretrained image tower in ``<cell.output>/encoder.safetensors``.
Jobs also print progress lines (``PROGRESS_MARKER`` + JSON) that the local runner's display reads.
Nothing else crosses.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from radscale.spec import (
    ComputeBudget,
    DatasetSpec,
    EncoderSpec,
    PretrainResources,
    Stage,
    StageResources,
    SweepSpec,
    TaskSpec,
    TrackingSpec,
)

CELL_API_VERSION = "radscale.io/cell-v1"
ENTRYPOINT_MODULES = {
    Stage.PREPARE: "radscale.trainer.prepare",
    Stage.PRETRAIN: "radscale.trainer.pretrain",
    Stage.EVALUATE: "radscale.trainer.evaluate",
}
RESULT_FILE = "result.json"
CHECKPOINT_DIR = "checkpoints"
ENCODER_FILE = "encoder.safetensors"
TEST_DRAWS = 1000  # shared test-set bootstrap draws per cell and aggregate metric
EXAMPLES_DIR = "examples"  # <cell>/examples/<task>.parquet: per-example scores and predictions
PROGRESS_MARKER = "radscale-progress"  # a job's stdout line: the marker, then {"done": i, "total": n, ...}


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, exclude_none=True)


def join_uri(base: str, *parts: str) -> str:
    """Join an fsspec URL or path with relative parts, with exactly one '/' between them."""
    out = base.rstrip("/")
    for part in parts:
        out += "/" + part.strip("/")
    return out


def storage_options(uri: str, endpoint: str | None = None,
                    credentials: dict[str, str] | None = None) -> dict[str, Any]:
    """fsspec options for a study's storage, the same in both planes.

    For S3: the endpoint (``spec.dataset.endpoint``, else $AWS_ENDPOINT_URL) and, when given, the keys
    of the study's credentials Secret; without them s3fs reads AWS_ACCESS_KEY_ID/... from the
    environment, as RayJobs have them. Other filesystems need nothing.
    """
    if not uri.startswith(("s3://", "s3a://")):
        return {}
    opts: dict[str, Any] = {}
    url = endpoint or os.environ.get("AWS_ENDPOINT_URL")
    if url:
        opts["endpoint_url"] = url
    if credentials and credentials.get("AWS_ACCESS_KEY_ID"):
        opts["key"] = credentials["AWS_ACCESS_KEY_ID"]
        opts["secret"] = credentials.get("AWS_SECRET_ACCESS_KEY", "")
    return opts


def run_seed(seed: int, replicate: int) -> int:
    if replicate == 0:
        return seed
    digest = hashlib.sha256(f"radscale-replicate:{seed}:{replicate}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class CellSpec(_Wire):
    """Everything one stage of one cell needs. Written by the planner; read by the job."""

    api_version: Literal["radscale.io/cell-v1"] = CELL_API_VERSION
    study: str = Field(..., description="Study name.")
    namespace: str = Field("default", description="Study namespace (or 'local').")
    cell: str = Field(..., description="Cell name; also the folder under the study output.")
    stage: Stage
    attempt: int = Field(0, ge=0, description="0 for the first try; retries resume from checkpoints.")
    encoder: EncoderSpec | None = Field(None, description="Unset for the prepare stage.")
    size: int = Field(0, ge=0, description="Nested-subset size; 0 for a baseline (init weights, no pretraining).")
    seed: int = Field(0, ge=0, description="Seed of the patient split and of the one pool order.")
    replicate: int = Field(0, ge=0, description="Replicate of this (encoder, size): its run seed differs, its "
                           "split and subset do not.")
    dataset: DatasetSpec
    prep_size: int = Field(..., ge=1, description="Shorter side images are prepared at.")
    shards: str = Field(..., description="URI of the prepared shards for this dataset fingerprint.")
    output: str = Field(..., description="URI of this cell's folder: result.json, checkpoints/, encoder.")
    weights: str = Field(
        "none", description="Weights to start from (pretrain) or to evaluate (evaluate): an init URI or a "
        "pretrained cell's encoder.safetensors."
    )
    budget: ComputeBudget
    attention: Literal["auto", "triton", "sdpa"] = "auto"
    tasks: list[TaskSpec] = Field(default_factory=list)
    sweep: SweepSpec | None = None
    resources: PretrainResources | StageResources = Field(default_factory=StageResources)
    tracking: TrackingSpec | None = None

    @property
    def baseline(self) -> bool:
        return self.size == 0

    @property
    def run_seed(self) -> int:
        """Seed of what varies between replicates: new parameters' init, augmentation, data order,
        evaluation heads and the sweep's searcher. Replicate 0 keeps the split seed itself; the split,
        the nested subsets and the test-set resamples use :attr:`seed` and never change."""
        return run_seed(self.seed, self.replicate)

    @property
    def result_uri(self) -> str:
        return join_uri(self.output, RESULT_FILE)

    @property
    def checkpoint_uri(self) -> str:
        return join_uri(self.output, CHECKPOINT_DIR)

    @property
    def encoder_uri(self) -> str:
        return join_uri(self.output, ENCODER_FILE)

    def entrypoint(self) -> list[str]:
        """The argv a RayJob (or the local executor) runs."""
        return ["python", "-m", ENTRYPOINT_MODULES[self.stage], "--cell", self.to_json()]

    @classmethod
    def from_arg(cls, arg: str) -> CellSpec:
        """Parse ``--cell``: inline JSON, or a path/URL of a JSON file (read through fsspec)."""
        text = arg.strip()
        if not text.startswith("{"):
            import fsspec  # only when given a location

            with fsspec.open(text, "rt") as fh:
                text = fh.read()
        return cls.model_validate(json.loads(text))


class PrepareResult(_Wire):
    fingerprint: str
    images: int = Field(..., ge=0)
    pool: int = Field(..., ge=0, description="Images in the pretraining pool.")
    eval_images: dict[str, int] = Field(default_factory=dict, description="Images per eval split.")
    skipped: dict[str, int] = Field(default_factory=dict, description="Skipped files by reason.")
    bytes_written: int = Field(0, ge=0)


class PretrainResult(_Wire):
    steps: int = Field(..., ge=0)
    epochs: float = Field(..., ge=0, description="True passes over the size-N subset: samples drawn / N "
                          "(constant compute: more for small N).")
    images_seen: int = Field(..., ge=0, description="Samples drawn: steps x global batch.")
    distinct_images: int | None = Field(None, ge=0, description="Distinct subset images that reached a step; "
                                        "min(N, samples drawn) when every epoch is a full pass.")
    final_loss: float | None = None
    wall_seconds: float = Field(0.0, ge=0)
    encoder: str = Field(..., description="URI of the pretrained image tower.")


class MetricValue(_Wire):
    value: float
    ci_low: float | None = None
    ci_high: float | None = None


class TaskResult(_Wire):
    metric: str = Field(..., description="Headline metric of the task.")
    metrics: dict[str, MetricValue] = Field(..., description="Every metric the task reports, on the test split.")
    best_config: dict[str, Any] = Field(default_factory=dict, description="Sweep config of the best trial.")
    draws: dict[str, list[float | None]] = Field(
        default_factory=dict,
        description="Aggregate metric -> its value in each of TEST_DRAWS resamples of the test patients. Draw i "
        "resamples the same patients in every cell of the study (the split seed fixes them), so the operator's fit "
        "bootstrap can apply one test-set resample to every cell at once. None: undefined in that draw.")
    examples: str | None = Field(None, description="URI of the per-example scores and predictions (Parquet).")

    @property
    def headline(self) -> MetricValue:
        return self.metrics[self.metric]


class CellResult(_Wire):
    """What a cell's jobs write to ``<output>/result.json``; each stage fills its part."""

    api_version: Literal["radscale.io/cell-v1"] = CELL_API_VERSION
    study: str
    cell: str
    encoder: str | None = None
    size: int = Field(0, ge=0)
    prepare: PrepareResult | None = None
    pretrain: PretrainResult | None = None
    evaluate: dict[str, TaskResult] = Field(default_factory=dict, description="Per task.")
    mlflow_run_id: str | None = None
