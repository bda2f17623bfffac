"""The Ray Tune sweep of one cell, per task, following the study's ``evaluation.sweep``.

All tasks of a cell share one Tuner (one start-up, trial actors reused across tasks), but each
task has its own search and its own ASHA brackets (:class:`PerTask`): trials of different tasks
are never compared, since their metrics differ in scale.

Trials sample lr / weight decay / epochs (the most a head trains) from the search space and report
the task's best validation headline so far after every epoch; ASHA stops the weak ones early
(``scheduler: fifo`` runs all to the end). A head stops by itself once ``sweep.patience`` epochs
bring no better validation headline, and keeps its best epoch's weights. A trial that finishes
(its epochs or its patience spent) scores that head on the test split, once, before its last
report; the best of those trials by validation is the task's result, so test rows never
steer the search and no head is trained twice. The features reach every trial through the
object store (``tune.with_parameters``), not by pickling.

The test scores (metrics, the TEST_DRAWS patient-resample draws, the per-example table) do not
travel in the reported metrics: each scoring trial writes them as one Parquet file named by its
trial id under a scratch folder, and its last report names the file; the driver reads only the
best trial's. The evaluate job puts that folder in the cell's storage (on a cluster, trials run on
other nodes than the driver); by default it is inside the sweep's local temporary storage, which
only a single-node Ray shares. Searcher (BasicVariantGenerator)
and heads are seeded with the run seed, so one spec gives the same trial configs and heads again.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any

import pyarrow as pa

from radscale.cells import TEST_DRAWS, MetricValue, TaskResult, join_uri
from radscale.spec import ParamSpace, SweepSpec, TaskSpec
from radscale.trainer import storage as fsio
from radscale.trainer.evaluate import tasks
from radscale.trainer.evaluate.features import EvalData

KEYS = {"lr": "lr", "weightDecay": "weight_decay", "epochs": "epochs"}
VAL = "val_metric"
TEST_FILE = "test_file"  # the last report's pointer to the trial's TestOutput


@dataclasses.dataclass
class Trial:
    config: dict[str, Any]
    history: list[float]  # best validation headline so far, per epoch trained
    stopped_early: bool  # by the scheduler (ASHA) before the head finished: never tested


@dataclasses.dataclass
class SweepOutcome:
    result: TaskResult  # the best trial's metrics, best config and draws
    trials: list[Trial]
    examples: pa.Table  # the best trial's per-example test scores (for examples/<task>.parquet)


def search_space(sweep: SweepSpec) -> dict[str, Any]:
    from ray import tune

    def dist(p: ParamSpace) -> Any:
        if p.type == "loguniform":
            return tune.loguniform(p.low, p.high)
        if p.type == "uniform":
            return tune.uniform(p.low, p.high)
        if p.type == "randint":
            return tune.randint(int(p.low), int(p.high) + 1)  # inclusive bounds, as the spec reads
        return tune.choice(list(p.values or []))

    return {KEYS[k]: dist(v) for k, v in sweep.search_space.items()}


def max_epochs(sweep: SweepSpec) -> int:
    p = sweep.search_space.get("epochs")
    if p is None:
        return int(tasks.DEFAULTS["epochs"])
    return int(max(p.values or [p.high or tasks.DEFAULTS["epochs"]]))


def _trial(config: dict[str, Any], specs_json: dict[str, str] | None = None, data: EvalData | None = None,
           seed: int = 0, resample_seed: int = 0, draws: int = TEST_DRAWS, scratch: str = "",
           endpoint: str | None = None, patience: int | None = None) -> None:
    import torch
    from ray import tune

    task = tasks.for_spec(TaskSpec.model_validate_json((specs_json or {})[config["task"]]), data, seed, resample_seed)
    for epoch, value in enumerate(task.train(config, patience), start=1):
        report: dict[str, Any] = {VAL: value, "epoch": epoch}
        if task.finished:  # max epochs or patience spent: score the best epoch's head on test once
            report["best_epoch"] = task.best_epoch
            with torch.no_grad():
                out = task.test(task.model, draws)
            uri = join_uri(scratch, f"{tune.get_context().get_trial_id()}.parquet")
            fsio.write_bytes(uri, out.to_parquet(), endpoint)
            report[TEST_FILE] = uri
        tune.report(report)


def _read_test(uri: str, endpoint: str | None) -> tasks.TestOutput:
    fs, path = fsio.filesystem(uri, endpoint)
    return tasks.TestOutput.from_parquet(fs.cat_file(path))


def _clear(uri: str, endpoint: str | None) -> None:
    fs, path = fsio.filesystem(uri, endpoint)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def _per_task_scheduler(sweep: SweepSpec) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    class PerTask(FIFOScheduler):
        """Delegates each trial to its task's own scheduler (ASHA brackets per task)."""

        def __init__(self) -> None:
            super().__init__()
            self.by_task: dict[str, Any] = {}

        def _of(self, trial: Any) -> Any:
            name = trial.config["task"]
            if name not in self.by_task:
                sched = sweep.scheduler
                self.by_task[name] = ASHAScheduler(
                    time_attr="training_iteration", metric=VAL, mode="max", max_t=max_epochs(sweep),
                    grace_period=sched.grace_period, reduction_factor=sched.reduction_factor) \
                    if sched.type == "asha" else FIFOScheduler()
            return self.by_task[name]

        def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
            return True  # fixed: VAL, max

        def on_trial_add(self, controller: Any, trial: Any) -> None:
            self._of(trial).on_trial_add(controller, trial)

        def on_trial_result(self, controller: Any, trial: Any, result: dict) -> str:
            return self._of(trial).on_trial_result(controller, trial, result)

        def on_trial_complete(self, controller: Any, trial: Any, result: dict) -> None:
            self._of(trial).on_trial_complete(controller, trial, result)

        def on_trial_error(self, controller: Any, trial: Any) -> None:
            self._of(trial).on_trial_error(controller, trial)

        def on_trial_remove(self, controller: Any, trial: Any) -> None:
            self._of(trial).on_trial_remove(controller, trial)

    return PerTask()


def run(specs: list[TaskSpec], data: EvalData, sweep: SweepSpec, *, seed: int = 0, resample_seed: int = 0,
        draws: int = TEST_DRAWS, cpus_per_trial: float = 1.0, scratch: str | None = None,
        endpoint: str | None = None) -> dict[str, SweepOutcome]:
    """Sweep every task of ``specs``; task name -> the best finished trial's test scores and all trials.

    ``seed`` (the cell's run seed) seeds the searcher and every head; ``resample_seed`` (its split
    seed) the test-patient resamples. ``scratch``: a folder URI that every trial's node can write and
    the driver read (emptied before and removed after); default, inside the sweep's local temporary
    storage, which only a single-node Ray shares."""
    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    for spec in specs:
        tasks.for_spec(spec, data, seed, resample_seed)  # fail fast on a bad task before any trial starts
    space = {**search_space(sweep), "task": tune.grid_search([s.name for s in specs])}
    with tempfile.TemporaryDirectory(prefix="radscale-tune-") as storage:
        outputs = scratch or os.path.join(storage, "test-outputs")
        _clear(outputs, endpoint)  # a failed earlier attempt's files: never read as this run's
        trainable = tune.with_resources(tune.with_parameters(
            _trial, specs_json={s.name: s.model_dump_json() for s in specs}, data=data, seed=seed,
            resample_seed=resample_seed, draws=draws, scratch=outputs, endpoint=endpoint,
            patience=sweep.patience), {"cpu": cpus_per_trial})
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(metric=VAL, mode="max", num_samples=sweep.num_samples,
                                        search_alg=BasicVariantGenerator(random_state=seed),
                                        scheduler=_per_task_scheduler(sweep), reuse_actors=True),
            run_config=tune.RunConfig(name="sweep", storage_path=storage, verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=1)),
        )
        try:
            grid = tuner.fit()
            trials: dict[str, list[Trial]] = {s.name: [] for s in specs}
            finished: dict[str, list[tuple[Trial, str]]] = {s.name: [] for s in specs}
            errors: dict[str, list[str]] = {s.name: [] for s in specs}
            for r in grid:
                name = r.config["task"]
                if r.error is not None:
                    errors[name].append(str(r.error).splitlines()[0] if str(r.error) else type(r.error).__name__)
                    continue
                df = r.metrics_dataframe
                history = [float(v) for v in df[VAL]] if df is not None and VAL in df else []
                cfg = {k: r.config[k] for k in KEYS.values() if k in r.config}
                tested = (r.metrics or {}).get(TEST_FILE)
                trial = Trial(cfg, history, not tested)
                trials[name].append(trial)
                if tested and history:
                    finished[name].append((trial, r.metrics[TEST_FILE]))
            best: dict[str, tuple[Trial, tasks.TestOutput]] = {}
            for spec in specs:
                if not finished[spec.name]:
                    why = "; ".join(errors[spec.name]) or "all were stopped early"
                    raise RuntimeError(f"no trial of task {spec.name} finished: {why}")
                trial, uri = max(finished[spec.name], key=lambda tf: tf[0].history[-1])
                best[spec.name] = trial, _read_test(uri, endpoint)
        finally:
            if scratch:
                _clear(scratch, endpoint)
    out = {}
    for spec in specs:
        trial, test = best[spec.name]
        metrics = dict(test.metrics)
        if spec.headline_metric not in metrics:  # e.g. no positive test labels: name it, do not invent a value
            raise RuntimeError(f"task {spec.name}: the test split gives no {spec.headline_metric} "
                               f"(got {sorted(metrics)}); the eval split may be too small")
        metrics["val/" + spec.headline_metric] = MetricValue(value=trial.history[-1])
        out[spec.name] = SweepOutcome(TaskResult(metric=spec.headline_metric, metrics=metrics,
                                                 best_config=trial.config, draws=test.draws),
                                      trials[spec.name], test.examples)
    return out
