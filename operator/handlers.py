"""kopf wiring: thin. Reads what the reconcile core needs, calls it, applies its actions, patches once.

    kopf run --standalone --all-namespaces -m radscale.operator.handlers

The study is reconciled on create/resume/update, on a timer, and whenever one of its RayJobs
(label-selected) changes. A spec that fails validation gets ``Ready=False`` naming each field, and
is not retried until it changes: no crash loop. Metrics (prometheus-client) on
``$RADSCALE_METRICS_PORT`` (8080): cells by state, reconcile latency, RayJob failures and retries.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from typing import Any

import kopf
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from radscale.operator import api, effects, kube, logs, reconcile
from radscale.operator.effects import Effects, settings_from_env

__all__ = ["Effects", "settings_from_env"]

log = logging.getLogger(__name__)

CELLS = Gauge("radscale_cells", "Cells by state", ["namespace", "study", "state"])
RECONCILE_SECONDS = Histogram("radscale_reconcile_seconds", "Duration of one reconcile pass")
JOB_FAILURES = Counter("radscale_rayjob_failures_total", "RayJob attempts that failed", ["namespace", "study"])
RETRIES = Counter("radscale_rayjob_retries_total", "RayJob attempts started after a failure", ["namespace", "study"])


def _observe_metrics(namespace: str, name: str, outcome: reconcile.Outcome, seconds: float) -> None:
    for action in outcome.actions:
        if isinstance(action, reconcile.CreateJob) and \
                action.manifest["metadata"]["labels"].get("radscale.io/attempt", "0") != "0":
            RETRIES.labels(namespace, name).inc()
        elif isinstance(action, reconcile.Event) and action.reason in ("AttemptFailed", "CellFailed"):
            JOB_FAILURES.labels(namespace, name).inc()
    for state in api.CellState:
        CELLS.labels(namespace, name, state.value).set(sum(c.state is state for c in outcome.status.cell_status))
    RECONCILE_SECONDS.observe(seconds)


_operator: effects.Effects | None = None
_locks: dict[tuple[str, str], asyncio.Lock] = {}
_queued: set[tuple[str, str]] = set()


def _get() -> effects.Effects:
    global _operator
    if _operator is None:
        _operator = effects.Effects(kube.KubeCluster(), kube.FsspecStore(), observer=_observe_metrics)
    return _operator


async def _run(namespace: str, name: str) -> None:
    """One pass for one study, on the body as it is now.

    Passes for a study are serialised (timer, spec changes and child events interleave), and each
    reads the study afresh under the lock: a body captured before waiting would carry a stale
    status, and acting on it would recreate jobs and roll the status back. Triggers coalesce: at
    most one pass runs and one waits per study, so a burst of child events costs two passes.
    """
    key = (namespace, name)
    if key in _queued:
        return  # a pass is already waiting for the lock; it reads the study after this change anyway
    _queued.add(key)
    lock = _locks.setdefault(key, asyncio.Lock())
    async with lock:
        _queued.discard(key)
        op = _get()
        body = await asyncio.to_thread(op.cluster.get_study, namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return  # gone or going: the delete handler owns it now
        outcome = await asyncio.to_thread(op.reconcile, body, dt.datetime.now(dt.UTC))
    if outcome is not None:
        for action in outcome.actions:
            if isinstance(action, reconcile.Event):
                kopf.event(body, type=action.type, reason=action.reason, message=action.message)


@kopf.on.startup()
def _startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    try:
        logs.configure(os.environ)  # RADSCALE_LOG_LEVEL (the chart's logLevel); botocore & co. never below WARNING
    except ValueError as exc:  # a level nobody knows: stop with the reason, not a retry loop
        raise kopf.PermanentError(str(exc)) from exc
    settings.persistence.finalizer = "radscale.io/finalizer"
    settings.posting.level = logging.WARNING  # our own Events are posted explicitly; not every "Handler succeeded"
    start_http_server(int(os.environ.get("RADSCALE_METRICS_PORT", "8080")))


@kopf.on.resume(api.GROUP, api.VERSION, api.PLURAL)
@kopf.on.create(api.GROUP, api.VERSION, api.PLURAL)
@kopf.on.update(api.GROUP, api.VERSION, api.PLURAL, field="spec")
async def _on_change(namespace: str, name: str, **_: Any) -> None:
    await _run(namespace, name)


@kopf.timer(api.GROUP, api.VERSION, api.PLURAL, interval=float(os.environ.get("RADSCALE_RESYNC_SECONDS", "30")),
            initial_delay=5.0)
async def _resync(namespace: str, name: str, **_: Any) -> None:
    await _run(namespace, name)


@kopf.on.event("ray.io", "v1", "rayjobs", labels={"radscale.io/study": kopf.PRESENT})
async def _on_rayjob(body: kopf.Body, **_: Any) -> None:
    """A child changed: reconcile its study now rather than at the next timer tick."""
    await _run(body["metadata"].get("namespace", "default"), body["metadata"]["labels"]["radscale.io/study"])


@kopf.on.delete(api.GROUP, api.VERSION, api.PLURAL)
async def _on_delete(body: kopf.Body, **_: Any) -> None:
    """Delete running children (ownerReferences would, but KubeRay's finalizers make it slow)."""
    ns = body["metadata"].get("namespace", "default")
    op = _get()
    jobs = await asyncio.to_thread(op.cluster.list_jobs, ns, body["metadata"]["name"])
    for name in jobs:
        await asyncio.to_thread(op.cluster.delete_job, ns, name)
