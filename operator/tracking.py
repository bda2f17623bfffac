"""The study's own MLflow run: the fitted laws and crossovers beside the cells' runs.

One run per study under the study's experiment (tag ``radscale.kind = study``; found again by
tag, so writing twice updates it). Per curve ``<task>/<encoder>``: tags name the method, the
crossover's outcome and, for a curve with no law, the reason; metrics hold a, b, c, R², their CI
bounds and the crossover with its CI. A curve with no law fitted logs no a, b or c: MLflow shows
what the status shows. mlflow is imported here only, and only when a tracking URI is set.
"""

from __future__ import annotations

import logging
from typing import Any

from radscale.operator import api

log = logging.getLogger(__name__)


def _values(f: api.FitStatus) -> dict[str, float]:
    out: dict[str, float] = {"r2": f.r2, "replicates": float(f.replicates)}
    if f.fitted:
        for name in "abc":
            out[name] = float(getattr(f, name))
            ci = f.ci95.get(name)
            if ci is not None:
                out[f"{name}_low"] = ci.low
                if ci.high is not None:
                    out[f"{name}_high"] = ci.high
    c = f.crossover
    if c.size is not None:
        out["crossover"] = c.size
    if c.ci95 is not None:
        out["crossover_low"] = c.ci95.low
        if c.ci95.high is not None:
            out["crossover_high"] = c.ci95.high
    return out


def fit_records(status: api.ScalingStudyStatus) -> tuple[dict[str, str], dict[str, float]]:
    """(tags, metrics) of the study run, keyed ``<task>/<encoder>/<name>``."""
    params: dict[str, str] = {}
    metrics: dict[str, float] = {}
    for f in status.fits:
        key = f"{f.task}/{f.encoder}"
        params[f"{key}/method"] = f.method
        params[f"{key}/crossover"] = f.crossover.outcome.value
        params[f"{key}/law"] = "fitted" if f.fitted else f"no law fitted: {f.lack_of_fit}"[:500]
        metrics.update({f"{key}/{k}": v for k, v in _values(f).items()})
    for b in status.best_per_task:
        params[f"{b.task}/best"] = b.encoder or "tie: " + ", ".join(b.tied)
    return params, metrics


def log_study(uri: str | None, experiment: str, study: str, status: api.ScalingStudyStatus) -> str | None:
    """Write the study run; returns its id (None without a tracking URI or mlflow)."""
    if not uri:
        return None
    try:
        from mlflow.entities import Metric, RunTag
        from mlflow.tracking import MlflowClient
    except ImportError:  # an operator-only install: the status and results.json still carry it all
        log.info("mlflow is not installed; the fits are not logged to MLflow")
        return None
    import time

    client: Any = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    runs = client.search_runs([exp_id], filter_string="tags.`radscale.kind` = 'study' and "
                                                      f"tags.`radscale.study` = '{study}'", max_results=1)
    run_id = runs[0].info.run_id if runs else client.create_run(
        exp_id, run_name=f"{study}-fits", tags={"radscale.kind": "study", "radscale.study": study}).info.run_id
    verdicts, metrics = fit_records(status)
    if status.best:
        verdicts["radscale.best"] = status.best
    now = int(time.time() * 1000)
    # verdicts are tags, not params: params are write-once, and a verdict changes as cells arrive
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                     tags=[RunTag(k, v) for k, v in verdicts.items()])
    return run_id
