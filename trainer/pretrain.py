"""Continual pretraining of one cell on Ray Train: ``python -m radscale.trainer.pretrain --cell CELL``.

CELL is the cell spec (inline JSON, or a path/URL of it) that the operator or the local runner
writes. The job runs ``computeBudget.steps`` optimizer steps at ``globalBatchSize`` over the
cell's nested subset (constant compute: small subsets see more epochs), on
``resources.pretrain.workers`` Ray Train workers (DDP; bf16 autocast on GPU, fp32 on CPU). Step k
trains on samples [k*B, (k+1)*B) of the loader's stream, whose epochs are true passes over the
subset. The run seed (``cell.run_seed``) drives initialisation, augmentation and data order; the
split and subset, fixed across replicates, come from the prepared shards.

Checkpoints go to ``<output>/<cell>/checkpoints/`` through fsspec (local or S3) every
``checkpointEvery`` steps. A failed worker is restarted by Ray Train from the latest checkpoint
(``RADSCALE_MAX_WORKER_FAILURES``, 3); a new job for the same cell (a retry RayJob, a resumed
study) finds the same run in storage and resumes from it too. The data position (the stream
offset, steps done x B) is part of the checkpoint, so a resumed run continues the same order
mid-epoch, ends at exactly the step budget and repeats at most the steps since the last checkpoint.

Outputs: ``encoder.safetensors`` (the image tower; the teacher's for dino) and ``result.json``
with the pretrain stage (steps, samples drawn, true epochs, distinct images measured from the
stream's row ids). Metrics (loss, LR, images/s, GPU memory) go to MLflow (one run per cell
under the study's experiment, resumed by tag) and through ``ray.train.report``.

Exit codes: 0 done, 2 bad input (named), 1 training failed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from radscale import recipes
from radscale.cells import CellResult, CellSpec, PretrainResult, storage_options
from radscale.trainer import entrypoints
from radscale.trainer.entrypoints import CellError, localise

__all__ = ["CellError", "check", "localise", "main", "run", "train_loop"]

log = logging.getLogger("radscale.pretrain")
LOG_EVERY = 10
last_metrics: dict[str, Any] = {}  # the final reported metrics of the last run() in this process


def check(cell: CellSpec) -> dict[str, Any]:
    """Fail fast on what would otherwise fail inside a worker; returns the prepared index."""
    if cell.stage != "pretrain":
        raise CellError(f"stage: this entrypoint runs pretrain cells, got {cell.stage!r}")
    if cell.encoder is None or cell.size <= 0:
        raise CellError("encoder/size: a pretrain cell needs an encoder and a size > 0 (baselines only evaluate)")
    index = entrypoints.read_index(cell)
    pool = int(index["pool"])
    if cell.size > pool:
        raise CellError(f"size: {cell.size} exceeds the prepared pool of {pool} images; lower spec.sizes")
    if cell.size < cell.budget.global_batch_size:
        raise CellError(f"size: {cell.size} is smaller than computeBudget.globalBatchSize "
                        f"({cell.budget.global_batch_size}); a batch would hold the same image twice")
    if cell.encoder.paradigm in ("clip", "unicl") and not cell.dataset.columns.report:
        raise CellError(f"encoder.paradigm: {cell.encoder.paradigm} needs reports; set dataset.columns.report "
                        "or use paradigm dino")
    entrypoints.check_weights(cell, "fix encoders[].init or its credentials")
    return index


# ---- the worker loop ------------------------------------------------------------------------------


def train_loop(config: dict[str, Any]) -> None:
    import numpy as np
    import ray.train
    import ray.train.torch
    import torch

    from radscale.trainer import optim, paradigms, parallel
    from radscale.trainer.data.loader import PreparedDataset
    from radscale.trainer.models.encoders import save_weights

    cell = CellSpec.model_validate_json(config["cell"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.manual_seed(cell.run_seed)  # new parameters' init and augmentation vary by replicate
    opts = storage_options(cell.output, cell.dataset.endpoint)
    labels = tuple(cell.dataset.columns.labels)
    recipe = recipes.resolve(cell.encoder, cell.budget.steps)  # every schedule value, spec or recipe
    model, objective = paradigms.build(cell, labels, opts, recipe)
    strategy = getattr(cell.resources, "strategy", "ddp")
    model = parallel.wrap(model, strategy, device, world, companions=objective.modules())
    objective.to(device)
    optimizer = optim.build(model, parallel.unwrap(model).encoder.model, recipe)  # after wrap: FSDP replaces params
    position = {"step": 0}
    resumed_from = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / "state.pt", map_location=device, weights_only=False)
        parallel.load_state(model, state["model"])
        parallel.load_optimizer_state(model, optimizer, state["optimizer"])
        objective.load_state_dict(state["objective"])
        position = state["position"]
        resumed_from = position["step"]
        if rank == 0:
            print(f"resumed from step {position['step']}", flush=True)

    data = PreparedDataset(cell.shards, labels=labels, endpoint=cell.dataset.endpoint)
    steps, every = cell.budget.steps, cell.budget.checkpoint_every
    per_worker = cell.budget.global_batch_size // world
    gbs = per_worker * world
    step = position["step"]  # the stream offset is step x gbs at any world size: the same order on resume
    chaos = config.get("chaos") or {}
    client = entrypoints.mlflow_client(config.get("tracking_uri")) if config.get("run_id") else None
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()
    window_start, window_images, last_loss = time.perf_counter(), 0, float("nan")

    for batch in data.iter_batches(cell.size, batch_size=per_worker, rank=rank, world_size=world, seed=cell.run_seed,
                                   start=step * gbs, stop=steps * gbs):
        if chaos.get("step") == step + 1 and rank == world - 1 and not Path(chaos["marker"]).exists():
            Path(chaos["marker"]).touch()
            raise RuntimeError(f"chaos: injected worker failure at step {step + 1}")
        lr, wd = optim.schedule(optimizer, step, recipe)
        with autocast:
            loss, extra = objective.loss(model, batch, step, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recipe.clip_grad:
            torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_grad)
        optimizer.step()
        extra.update(objective.after_step(model, step))
        step += 1
        last_loss = float(loss.detach())
        if not np.isfinite(last_loss):
            raise FloatingPointError(f"loss is {last_loss} at step {step}; lower encoders[].optimizer.lr")
        window_images += gbs
        position = {"step": step, "samples": step * gbs}
        metrics = {"step": step, "epoch": step * gbs / cell.size, "loss": last_loss, "lr": lr, "weight_decay": wd,
                   "resumed_from": resumed_from, **extra}
        if rank == 0 and (step % max(1, steps // 100) == 0 or step == steps):
            entrypoints.progress(step, steps, loss=round(last_loss, 4))
        if step % LOG_EVERY == 0 or step % every == 0 or step == steps:
            elapsed = time.perf_counter() - window_start
            metrics["images_per_s"] = window_images / max(elapsed, 1e-9)
            if device.type == "cuda":
                metrics["gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            window_start, window_images = time.perf_counter(), 0
            if client is not None and rank == 0:
                client.log_batch(config["run_id"], metrics=entrypoints.mlflow_metrics(metrics, step))
        if step % every == 0 or step == steps:
            _report(metrics, rank, model, optimizer, objective, position,
                    f"{cell.namespace}-{cell.study}-{cell.cell}")

    tower = parallel.full_state(objective.image_tower(model))  # collective under FSDP
    if rank == 0:  # the normalisation it was trained with travels in the file, at the size it was trained at
        pre = dataclasses.replace(parallel.unwrap(model).encoder.preprocess, input_size=cell.encoder.image_size)
        save_weights(tower, cell.encoder_uri, opts, preprocess=pre)


def _report(metrics: dict[str, Any], rank: int, model: Any, optimizer: Any, objective: Any,
            position: dict[str, int], cell_key: str) -> None:
    import ray.train
    import torch

    from radscale.trainer import parallel

    # Gathered on every rank (collective under FSDP); full, unsharded state lands on rank 0.
    state = {"model": parallel.full_state(model), "optimizer": parallel.optimizer_state(model, optimizer),
             "objective": objective.state_dict(), "position": position}
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    # One scratch folder per cell, emptied before each use: when a worker group is torn down
    # mid-report (another rank failed), a TemporaryDirectory's cleanup never runs, and every such
    # failure left a full checkpoint (170 MB in the tests) in /tmp. Ray copies it to storage.
    scratch = Path(tempfile.gettempdir()) / f"radscale-checkpoint-{cell_key}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        torch.save(state, scratch / "state.pt")
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(scratch)))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


# ---- the driver ----------------------------------------------------------------------------------------


def run(cell: CellSpec) -> CellResult:
    import fsspec
    import pyarrow.fs as pafs
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cell = localise(cell)
    check(cell)
    entrypoints.ray_init()
    opts = storage_options(cell.output, cell.dataset.endpoint)
    fs, root = fsspec.core.url_to_fs(cell.output, **opts)
    fs.makedirs(root, exist_ok=True)
    recipe = recipes.resolve(cell.encoder, cell.budget.steps)
    tracking_uri, run_id = entrypoints.mlflow_run(cell, {
        **recipe.params(), "paradigm": cell.encoder.paradigm, "model": cell.encoder.model,
        "global_batch_size": cell.budget.global_batch_size, "workers": cell.resources.workers})
    res = cell.resources
    chaos = None
    if os.environ.get("RADSCALE_CHAOS_FAIL_AT_STEP"):
        chaos = {"step": int(os.environ["RADSCALE_CHAOS_FAIL_AT_STEP"]), "marker": os.environ["RADSCALE_CHAOS_MARKER"]}
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"cell": cell.to_json(), "tracking_uri": tracking_uri, "run_id": run_id, "chaos": chaos},
        scaling_config=ScalingConfig(num_workers=res.workers, use_gpu=res.gpus_per_worker > 0,
                                     resources_per_worker={"CPU": res.cpus, "GPU": res.gpus_per_worker}
                                     if res.gpus_per_worker else {"CPU": res.cpus}),
        run_config=RunConfig(
            name="checkpoints", storage_path=root,
            storage_filesystem=pafs.PyFileSystem(pafs.FSSpecHandler(fs)),
            failure_config=FailureConfig(max_failures=int(os.environ.get("RADSCALE_MAX_WORKER_FAILURES", "3"))),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    started = time.perf_counter()
    result = trainer.fit()
    wall = time.perf_counter() - started
    if result.error is not None:
        raise result.error
    metrics = result.metrics or {}
    last_metrics.clear()
    last_metrics.update(metrics)
    from radscale.trainer.data.loader import PreparedDataset

    steps = int(metrics.get("step", cell.budget.steps))
    samples = steps * cell.budget.global_batch_size
    # Counted over the row ids the stream gave steps [0, steps) (the row_id column only, no pixels).
    data = PreparedDataset(cell.shards, endpoint=cell.dataset.endpoint)
    distinct = data.distinct_rows(cell.size, samples, seed=cell.run_seed)
    out = entrypoints.read_result(cell)
    out.pretrain = PretrainResult(steps=steps, epochs=samples / cell.size, images_seen=samples,
                                  distinct_images=distinct, final_loss=metrics.get("loss"),
                                  wall_seconds=wall, encoder=cell.encoder_uri)
    out.mlflow_run_id = run_id or out.mlflow_run_id
    entrypoints.write_result(cell, out)
    return out


def main(argv: list[str] | None = None) -> int:
    def go(cell: CellSpec) -> dict[str, Any]:
        result = run(cell)
        return {"pretrain": result.pretrain.model_dump(mode="json"),
                "resumedFrom": last_metrics.get("resumed_from", 0)}

    return entrypoints.main(argv, prog="python -m radscale.trainer.pretrain", doc=__doc__, run=go)


if __name__ == "__main__":
    sys.exit(main())
