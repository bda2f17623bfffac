"""The Ray Tune sweep of one cell, per task, following the study's ``evaluation.sweep``.

All tasks of a cell share one Tuner (one start-up, trial actors reused across tasks), but each
task has its own search and its own ASHA brackets (:class:`PerTask`): trials of different tasks
are never compared, since their metrics differ in scale.

Trials sample lr / weight decay / epochs from the search space and report the task's validation
headline after every epoch; ASHA stops the weak ones early (``scheduler: fifo`` runs all to the
end). A trial that trains to its last epoch also scores its head on the test split (bootstrap CIs)
in that last report; the best of those trials by validation is the task's result, so test rows
never steer the search and no head is trained twice. The features reach every trial through the
object store (``tune.with_parameters``), not by pickling.
"""

from __future__ import annotations

import dataclasses
import tempfile
from typing import Any

from radscale.cells import MetricValue, TaskResult
from radscale.operator.api import ParamSpace, SweepSpec, TaskSpec
from radscale.trainer.evaluate import tasks
from radscale.trainer.evaluate.features import EvalData

KEYS = {"lr": "lr", "weightDecay": "weight_decay", "epochs": "epochs"}
VAL = "val_metric"


@dataclasses.dataclass
class Trial:
    config: dict[str, Any]
    history: list[float]  # validation headline per epoch
    stopped_early: bool


@dataclasses.dataclass
class SweepOutcome:
    result: TaskResult
    trials: list[Trial]


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


TEST = "test/"


def _trial(config: dict[str, Any], specs_json: dict[str, str] | None = None, data: EvalData | None = None,
           seed: int = 0, n_boot: int = tasks.N_BOOT) -> None:
    import torch
    from ray import tune

    task = tasks.for_spec(TaskSpec.model_validate_json((specs_json or {})[config["task"]]), data, seed)
    epochs = tasks.hparams(config)[2]
    for epoch, value in enumerate(task.train(config), start=1):
        report: dict[str, Any] = {VAL: value, "epoch": epoch}
        if epoch == epochs:  # the last epoch: score on test once
            with torch.no_grad():
                for name, mv in task.test(task.model, n_boot).items():
                    report[f"{TEST}{name}"] = mv.value
                    report[f"{TEST}{name}_low"] = mv.ci_low if mv.ci_low is not None else float("nan")
                    report[f"{TEST}{name}_high"] = mv.ci_high if mv.ci_high is not None else float("nan")
        tune.report(report)


def _test_metrics(metrics: dict[str, Any]) -> dict[str, MetricValue]:
    out = {}
    for key, value in metrics.items():
        if key.startswith(TEST) and not key.endswith(("_low", "_high")):
            name = key[len(TEST):]
            low, high = metrics.get(f"{key}_low"), metrics.get(f"{key}_high")
            out[name] = MetricValue(value=float(value), ci_low=None if low is None or low != low else float(low),
                                    ci_high=None if high is None or high != high else float(high))
    return out


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


def run(specs: list[TaskSpec], data: EvalData, sweep: SweepSpec, *, seed: int = 0, n_boot: int = tasks.N_BOOT,
        cpus_per_trial: float = 1.0) -> dict[str, SweepOutcome]:
    """Sweep every task of ``specs``; task name -> the best finished trial's test metrics and all trials."""
    from ray import tune

    for spec in specs:
        tasks.for_spec(spec, data, seed)  # fail fast on a bad task before any trial starts
    trainable = tune.with_resources(tune.with_parameters(
        _trial, specs_json={s.name: s.model_dump_json() for s in specs}, data=data, seed=seed, n_boot=n_boot),
        {"cpu": cpus_per_trial})
    space = {**search_space(sweep), "task": tune.grid_search([s.name for s in specs])}
    with tempfile.TemporaryDirectory(prefix="radscale-tune-") as storage:
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(metric=VAL, mode="max", num_samples=sweep.num_samples,
                                        scheduler=_per_task_scheduler(sweep), reuse_actors=True),
            run_config=tune.RunConfig(name="sweep", storage_path=storage, verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=1)),
        )
        grid = tuner.fit()
        trials: dict[str, list[Trial]] = {s.name: [] for s in specs}
        finished: dict[str, list[tuple[Trial, dict[str, MetricValue]]]] = {s.name: [] for s in specs}
        errors: dict[str, list[str]] = {s.name: [] for s in specs}
        for r in grid:
            name = r.config["task"]
            if r.error is not None:
                errors[name].append(str(r.error).splitlines()[0] if str(r.error) else type(r.error).__name__)
                continue
            df = r.metrics_dataframe
            history = [float(v) for v in df[VAL]] if df is not None and VAL in df else []
            cfg = {k: r.config[k] for k in KEYS.values() if k in r.config}
            trial = Trial(cfg, history, len(history) < tasks.hparams(cfg)[2])
            trials[name].append(trial)
            if not trial.stopped_early and history:
                finished[name].append((trial, _test_metrics(r.metrics or {})))
    out = {}
    for spec in specs:
        if not finished[spec.name]:
            why = "; ".join(errors[spec.name]) or "all were stopped early"
            raise RuntimeError(f"no trial of task {spec.name} finished: {why}")
        best, metrics = max(finished[spec.name], key=lambda tm: tm[0].history[-1])
        if spec.headline_metric not in metrics:  # e.g. no positive test labels: name it, do not invent a value
            raise RuntimeError(f"task {spec.name}: the test split gives no {spec.headline_metric} "
                               f"(got {sorted(metrics)}); the eval split may be too small")
        metrics["val/" + spec.headline_metric] = MetricValue(value=best.history[-1])
        out[spec.name] = SweepOutcome(TaskResult(metric=spec.headline_metric, metrics=metrics,
                                                 best_config=best.config), trials[spec.name])
    return out
