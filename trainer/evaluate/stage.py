"""The evaluate stage of one cell (its entrypoint: ``python -m radscale.trainer.evaluate --cell CELL``).

Loads the cell's frozen image tower (its ``encoder.safetensors``, or the encoder's init for a
baseline), extracts features of the probe splits once (cached beside the cell's outputs), and runs
a Ray Tune sweep per task (one Tuner for the cell). ``result.json`` gains the evaluate stage (per
task: metric, value, CI, best config, the TEST_DRAWS patient-resample draws of each aggregate
metric, and the URI of ``examples/<task>.parquet``: the best head's per-example test scores, kept
out of the metrics); a retried job redoes only the tasks it lacks. MLflow: the task metrics go to
the cell's run; each trial is a nested run under it.

Seeds: heads, their data order and the searcher use ``cell.run_seed`` (one per replicate); the
test-set resamples use ``cell.seed`` (the split's), so they are the same in every cell of the study.

Exit codes: 0 done, 2 bad input (named), 1 evaluation failed.
"""

from __future__ import annotations

import time
from typing import Any

from radscale.cells import EXAMPLES_DIR, CellSpec, TaskResult, join_uri
from radscale.trainer import entrypoints
from radscale.trainer.entrypoints import CellError

__all__ = ["CellError", "check", "main", "run"]
SCRATCH = "sweep-scratch"  # under the cell's output: the trials' test outputs, removed after the sweep


def check(cell: CellSpec) -> None:
    """Fail fast, naming the field, on what would otherwise fail inside a trial."""
    if cell.stage != "evaluate":
        raise CellError(f"stage: this entrypoint runs evaluate cells, got {cell.stage!r}")
    if cell.encoder is None:
        raise CellError("encoder: an evaluate cell needs its encoder spec")
    if not cell.tasks:
        raise CellError("tasks: no evaluation tasks; set spec.evaluation.tasks")
    entrypoints.read_index(cell)
    cols = cell.dataset.columns
    for t in cell.tasks:
        missing = [lab for lab in t.labels if lab not in cols.labels]
        if missing:
            raise CellError(f"evaluation.tasks[{t.name}].labels: {missing} are not in dataset.columns.labels")
        if t.kind == "segmentation" and t.mask_column not in cols.masks:
            raise CellError(f"evaluation.tasks[{t.name}].maskColumn: {t.mask_column!r} is not in "
                            f"dataset.columns.masks {list(cols.masks)}")
        if t.kind == "report-generation" and not cols.report:
            raise CellError(f"evaluation.tasks[{t.name}]: report generation needs dataset.columns.report")
    entrypoints.check_weights(cell, "fix encoders[].init" if cell.baseline else "run this cell's pretrain stage first")


def _log_trials(client: Any, cell: CellSpec, run_id: str, task: str, outcome: Any) -> None:
    """Each trial as a nested run under the cell's run: its config and its validation curve."""
    from mlflow.entities import Metric, Param

    exp_id = client.get_run(run_id).info.experiment_id
    now = int(time.time() * 1000)
    for i, trial in enumerate(outcome.trials):
        child = client.create_run(exp_id, run_name=f"{cell.cell}-{task}-trial{i}", tags={
            "mlflow.parentRunId": run_id, "radscale.cell": cell.cell, "radscale.task": task,
            "radscale.kind": "trial", "radscale.stoppedEarly": str(trial.stopped_early).lower()})
        client.log_batch(child.info.run_id,
                         params=[Param(k, str(v)) for k, v in trial.config.items()],
                         metrics=[Metric("val_metric", v, now, step) for step, v in enumerate(trial.history, 1)])
        client.set_terminated(child.info.run_id)


def run(cell: CellSpec) -> dict[str, Any]:
    import torch

    from radscale.trainer import storage
    from radscale.trainer.evaluate import features, sweep, tasks

    cell = entrypoints.localise(cell)
    check(cell)
    # the driver only extracts features: as many threads as the stage's CPUs, no oversubscription
    # of a machine that Ray's trial workers share (OpenMP spinning makes that 10x slower)
    torch.set_num_threads(max(1, cell.resources.cpus))
    entrypoints.ray_init()
    started = time.perf_counter()
    result = entrypoints.read_result(cell)
    tracking_uri, run_id = entrypoints.mlflow_run(cell, {"weights": cell.weights, "trials": cell.sweep.num_samples
                                                  if cell.sweep else 0})
    client = entrypoints.mlflow_client(tracking_uri) if run_id else None
    data, cached = features.load(cell)
    sweep_spec = cell.sweep
    if sweep_spec is None:
        from radscale.spec import SweepSpec

        sweep_spec = SweepSpec()
    todo = [t for t in cell.tasks if t.name not in result.evaluate]  # others finished in an earlier attempt
    entrypoints.progress(len(cell.tasks) - len(todo), len(cell.tasks), task=", ".join(t.name for t in todo))
    endpoint = cell.dataset.endpoint
    outcomes = sweep.run(todo, data, sweep_spec, seed=cell.run_seed, resample_seed=cell.seed,
                         scratch=join_uri(cell.output, SCRATCH), endpoint=endpoint) if todo else {}
    done = []
    for name, outcome in outcomes.items():
        uri = join_uri(cell.output, EXAMPLES_DIR, f"{name}.parquet")
        storage.write_bytes(uri, tasks.parquet_bytes(outcome.examples), endpoint)
        result.evaluate[name] = outcome.result.model_copy(update={"examples": uri})
        done.append(name)
        if client is not None:
            client.log_batch(run_id, metrics=entrypoints.mlflow_metrics(
                {f"{name}/{k}": v.value for k, v in outcome.result.metrics.items()}, 0))
            _log_trials(client, cell, run_id, name, outcome)
    result.mlflow_run_id = run_id or result.mlflow_run_id
    entrypoints.write_result(cell, result)
    entrypoints.progress(len(cell.tasks), len(cell.tasks))
    return {"evaluate": {k: _headline(v) for k, v in result.evaluate.items()}, "tasksRun": done,
            "featuresCached": cached, "seconds": round(time.perf_counter() - started, 1)}


def _headline(tr: TaskResult) -> dict[str, Any]:
    h = tr.headline
    return {"metric": tr.metric, "value": round(h.value, 4), "ci": [h.ci_low, h.ci_high], "config": tr.best_config}


def main(argv: list[str] | None = None) -> int:
    return entrypoints.main(argv, prog="python -m radscale.trainer.evaluate", doc=__doc__, run=run)
