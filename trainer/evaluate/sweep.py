"""One Ray Tune sweep per task and cell, following the study's ``evaluation.sweep``.

Trials sample lr / weight decay / epochs from the search space and report the task's validation
headline after every epoch; ASHA stops the weak ones early (``scheduler: fifo`` runs all to the
end). The best trial (by its last report) is retrained once with its config, seeded as in the
trial, and scored on the test split with bootstrap CIs: test rows never steer the search. The
features reach every trial through the object store (``tune.with_parameters``), not by pickling.
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


def _trial(config: dict[str, Any], spec_json: str = "", data: EvalData | None = None, seed: int = 0) -> None:
    from ray import tune

    task = tasks.for_spec(TaskSpec.model_validate_json(spec_json), data, seed)
    for epoch, value in enumerate(task.train(config), start=1):
        tune.report({VAL: value, "epoch": epoch})


def run(spec: TaskSpec, data: EvalData, sweep: SweepSpec, *, seed: int = 0, n_boot: int = tasks.N_BOOT,
        cpus_per_trial: float = 1.0) -> SweepOutcome:
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    task = tasks.for_spec(spec, data, seed)  # fail fast on a bad task before any trial starts
    sched = sweep.scheduler
    scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max_epochs(sweep),
                              grace_period=sched.grace_period, reduction_factor=sched.reduction_factor) \
        if sched.type == "asha" else FIFOScheduler()
    trainable = tune.with_resources(tune.with_parameters(_trial, spec_json=spec.model_dump_json(), data=data,
                                                         seed=seed), {"cpu": cpus_per_trial})
    with tempfile.TemporaryDirectory(prefix="radscale-tune-") as storage:
        tuner = tune.Tuner(
            trainable,
            param_space=search_space(sweep),
            tune_config=tune.TuneConfig(metric=VAL, mode="max", num_samples=sweep.num_samples, scheduler=scheduler,
                                        reuse_actors=True),
            run_config=tune.RunConfig(name=spec.name, storage_path=storage, verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=1)),
        )
        grid = tuner.fit()
        trials = []
        for r in grid:
            if r.error is not None:
                continue
            df = r.metrics_dataframe
            history = [float(v) for v in df[VAL]] if df is not None and VAL in df else []
            cfg = {k: r.config[k] for k in KEYS.values() if k in r.config}
            trials.append(Trial(cfg, history, len(history) < tasks.hparams(cfg)[2]))
        if not trials:
            errors = "; ".join(str(r.error).splitlines()[0] for r in grid if r.error is not None)
            raise RuntimeError(f"every trial of task {spec.name} failed: {errors}")
    best = max(trials, key=lambda t: t.history[-1] if t.history else float("-inf"))
    metrics = task.evaluate(best.config, n_boot)
    if spec.headline_metric not in metrics:  # e.g. no positive test labels: name it, do not invent a value
        raise RuntimeError(f"task {spec.name}: the test split gives no {spec.headline_metric} "
                           f"(got {sorted(metrics)}); the eval split may be too small")
    metrics["val/" + spec.headline_metric] = MetricValue(value=best.history[-1])
    return SweepOutcome(TaskResult(metric=spec.headline_metric, metrics=metrics, best_config=best.config), trials)
