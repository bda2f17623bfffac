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
import functools
import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

import kopf
from prometheus_client import Counter, Gauge, Histogram, start_http_server

from radscale.cells import CellResult, storage_options
from radscale.operator import api, kube, plan, reconcile, validation

log = logging.getLogger(__name__)

CELLS = Gauge("radscale_cells", "Cells by state", ["namespace", "study", "state"])
RECONCILE_SECONDS = Histogram("radscale_reconcile_seconds", "Duration of one reconcile pass")
JOB_FAILURES = Counter("radscale_rayjob_failures_total", "RayJob attempts that failed", ["namespace", "study"])
RETRIES = Counter("radscale_rayjob_retries_total", "RayJob attempts started after a failure", ["namespace", "study"])


@functools.lru_cache(maxsize=1024)
def _load(doc: str) -> api.ScalingStudy:
    """Validate a study once per distinct spec: the CEL layer dominates a pass (about 70 ms for a
    50-cell study), and timer and child events re-read an unchanged spec many times over."""
    return validation.load_study(json.loads(doc))


def settings_from_env(env: Mapping[str, str]) -> reconcile.Settings:
    """Operator tuning from the Deployment's environment (the chart's ``operator.*`` values)."""
    defaults = reconcile.Settings()
    return reconcile.Settings(
        default_image=env.get("RADSCALE_TRAINER_IMAGE", defaults.default_image),
        backoff_base_s=float(env.get("RADSCALE_RETRY_BACKOFF_SECONDS", defaults.backoff_base_s)),
        backoff_max_s=float(env.get("RADSCALE_RETRY_BACKOFF_MAX_SECONDS", defaults.backoff_max_s)),
        vanish_grace_s=float(env.get("RADSCALE_VANISH_GRACE_SECONDS", defaults.vanish_grace_s)),
    )


class Operator:
    """The effects of one reconcile: everything the handlers do, behind injectable adapters."""

    def __init__(self, cluster: kube.Cluster, store: kube.Store, settings: reconcile.Settings | None = None):
        self.cluster, self.store = cluster, store
        self.settings = settings or settings_from_env(os.environ)
        self._results: dict[tuple[str, str, str], CellResult] = {}  # finished evaluations, read once

    def _options(self, study: api.ScalingStudy, namespace: str) -> dict[str, Any]:
        ds = study.spec.dataset
        creds = self.cluster.secret(namespace, ds.credentials_secret) if ds.credentials_secret else {}
        return storage_options(study.spec.output, ds.endpoint, creds)

    def _observe(self, study: api.ScalingStudy, namespace: str) -> reconcile.Observed:
        jobs = self.cluster.list_jobs(namespace, study.metadata.name)
        options = self._options(study, namespace)
        p = plan.plan(study)
        prepared = self.store.shards_exist(plan.shards_uri(study, p.fingerprint), options)
        results: dict[str, CellResult] = {}
        for cs in (study.status.cell_status if study.status else []):
            key = (namespace, study.metadata.name, cs.name)
            if key in self._results:
                results[cs.name] = self._results[key]
                continue
            if cs.state in (api.CellState.RUNNING, api.CellState.SUCCEEDED, api.CellState.RETRYING):
                res = self.store.read_result(study.spec.output, cs.name, options)
                if res is not None:
                    results[cs.name] = res
                    if res.evaluate:
                        self._results[key] = res
        return reconcile.Observed(jobs=jobs, results=results, prepared=prepared)

    def invalid(self, body: dict[str, Any], problems: list[validation.Problem], now: dt.datetime) -> None:
        meta = body["metadata"]
        status = api.ScalingStudyStatus.model_validate(body.get("status") or {})
        message = "; ".join(str(p) for p in problems)[:30000]
        reconcile.set_condition(status, api.ConditionType.READY, False, "InvalidSpec", message, now,
                                meta.get("generation"))
        self.cluster.patch_status(meta.get("namespace", "default"), meta["name"],
                                  status.model_dump(by_alias=True, exclude_none=True, mode="json"))

    def reconcile(self, body: dict[str, Any], now: dt.datetime) -> reconcile.Outcome | None:
        """One pass for one study body (as the API server returned it)."""
        meta = body["metadata"]
        namespace = meta.get("namespace", "default")
        doc = {k: body[k] for k in ("apiVersion", "kind", "spec") if k in body}
        doc["metadata"] = {k: meta[k] for k in ("name", "namespace", "generation", "uid") if k in meta}
        try:
            study = _load(json.dumps(doc, sort_keys=True))
        except validation.SpecError as exc:
            self.invalid(body, exc.problems, now)
            return None
        status = api.ScalingStudyStatus.model_validate(body.get("status") or {})
        study = study.model_copy(update={"status": status if body.get("status") else None})
        started = time.perf_counter()
        outcome = reconcile.reconcile(study, self._observe(study, namespace), now, self.settings)
        for action in outcome.actions:
            if isinstance(action, reconcile.CreateJob):
                self.cluster.create_job(namespace, action.manifest)
                if action.manifest["metadata"]["labels"].get("radscale.io/attempt", "0") != "0":
                    RETRIES.labels(namespace, meta["name"]).inc()
            elif isinstance(action, reconcile.DeleteJob):
                self.cluster.delete_job(namespace, action.name)
            elif isinstance(action, reconcile.Event) and action.reason in ("AttemptFailed", "CellFailed"):
                JOB_FAILURES.labels(namespace, meta["name"]).inc()
        self.cluster.patch_status(namespace, meta["name"],
                                  outcome.status.model_dump(by_alias=True, exclude_none=True, mode="json"))
        for state in api.CellState:
            CELLS.labels(namespace, meta["name"], state.value).set(
                sum(c.state is state for c in outcome.status.cell_status))
        RECONCILE_SECONDS.observe(time.perf_counter() - started)
        return outcome


_operator: Operator | None = None
_locks: dict[tuple[str, str], asyncio.Lock] = {}
_queued: set[tuple[str, str]] = set()


def _get() -> Operator:
    global _operator
    if _operator is None:
        _operator = Operator(kube.KubeCluster(), kube.FsspecStore())
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
