"""The effects of one reconcile pass, behind injectable adapters: read what the pure core needs
(children, results, shard index), call it, apply its actions, patch the status once.

The kopf handlers drive it against the Kubernetes API (``kube.KubeCluster``); ``radscale run``
drives the very same class against local processes (``local.LocalCluster``). No kopf here.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from radscale.cells import CellResult, join_uri, storage_options
from radscale.operator import api, artifacts, kube, plan, reconcile, tracking, validation

log = logging.getLogger(__name__)
Observer = Callable[[str, str, reconcile.Outcome, float], None]


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


class SecretMissing(Exception):
    """``spec.dataset.credentialsSecret`` names a Secret that does not exist."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _not_found(exc: Exception) -> bool:
    """A 404 from the cluster adapter (the kubernetes client's ApiException carries ``status``)."""
    return getattr(exc, "status", None) == 404


class Effects:
    """The effects of one reconcile: everything the handlers do, behind injectable adapters."""

    def __init__(self, cluster: kube.Cluster, store: kube.Store, settings: reconcile.Settings | None = None,
                 observer: Observer | None = None):
        self.cluster, self.store, self.observer = cluster, store, observer
        self.settings = settings or settings_from_env(os.environ)
        self._results: dict[tuple[str, str, str], CellResult] = {}  # finished evaluations, read once

    def _options(self, study: api.ScalingStudy, namespace: str) -> dict[str, Any]:
        """fsspec options with the study's credentials; raises :class:`SecretMissing`."""
        ds = study.spec.dataset
        creds = {}
        if ds.credentials_secret:
            try:
                creds = self.cluster.secret(namespace, ds.credentials_secret)
            except Exception as exc:
                if _not_found(exc):
                    raise SecretMissing(ds.credentials_secret) from exc
                raise
        return storage_options(study.spec.output, ds.endpoint, creds)

    def _observe(self, study: api.ScalingStudy, namespace: str) -> reconcile.Observed:
        jobs = self.cluster.list_jobs(namespace, study.metadata.name)
        try:
            options = self._options(study, namespace)
        except SecretMissing as exc:  # the core sets Ready=False and waits; the store cannot be read
            return reconcile.Observed(jobs=jobs, missing_secret=exc.name)
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

    def results_of(self, study: api.ScalingStudy, namespace: str) -> dict[str, CellResult]:
        """Every planned cell's result.json that exists (for the results artifact)."""
        options = self._options(study, namespace)
        out = {}
        for cell in plan.plan(study).cells:
            res = self.store.read_result(study.spec.output, cell.name, options)
            if res is not None:
                out[cell.name] = res
        return out

    def publish(self, study: api.ScalingStudy, namespace: str, status: api.ScalingStudyStatus) -> None:
        """Once a study is terminal: results.json and the PNG into its output, their URIs in
        ``status.artifacts``, and the fits in the study's MLflow run, in both modes. Current
        documents (same digest) are not rewritten; a store that cannot be written is retried next pass."""
        if status.phase not in (api.Phase.SUCCEEDED, api.Phase.FAILED):
            return
        key = artifacts.digest(status)
        if status.artifacts.digest == key:
            return
        spec = study.spec
        try:
            options = self._options(study, namespace)
            docs = artifacts.documents(study, status, self.results_of(study, namespace))
            for uri, data in docs.items():
                self.store.write(uri, data, options)
        except (OSError, SecretMissing) as exc:  # the URI only: never the content
            log.warning("could not write the results of %s/%s to %s (%s); retrying next pass", namespace,
                        study.metadata.name, spec.output, type(exc).__name__)
            return
        status.artifacts = api.ArtifactsStatus(results=join_uri(spec.output, artifacts.RESULTS_FILE),
                                               plot=join_uri(spec.output, artifacts.PLOT_FILE), digest=key)
        status.mlflow = api.MlflowStatus(experiment=artifacts.experiment(study), url=spec.tracking.uri)
        try:
            tracking.log_study(spec.tracking.uri, artifacts.experiment(study), study.metadata.name, status)
        except Exception as exc:  # MLflow down must not fail the study: the status and results.json hold it all
            log.warning("could not log the fits of %s/%s to MLflow (%s)", namespace, study.metadata.name,
                        type(exc).__name__)

    def invalid(self, body: dict[str, Any], problems: list[validation.Problem],
                now: dt.datetime) -> reconcile.Outcome:
        """Patch the core's verdict on a spec that fails validation (Failed=True, one Event)."""
        meta = body["metadata"]
        status = api.ScalingStudyStatus.model_validate(body.get("status") or {})
        message = "; ".join(p.brief for p in problems)[:30000]  # fields, never the spec's values
        outcome = reconcile.invalid(status, message, meta.get("generation"), now)
        self.cluster.patch_status(meta.get("namespace", "default"), meta["name"],
                                  outcome.status.model_dump(by_alias=True, exclude_none=True, mode="json"))
        return outcome

    def reconcile(self, body: dict[str, Any], now: dt.datetime) -> reconcile.Outcome:
        """One pass for one study body (as the API server returned it)."""
        meta = body["metadata"]
        namespace = meta.get("namespace", "default")
        doc = {k: body[k] for k in ("apiVersion", "kind", "spec") if k in body}
        doc["metadata"] = {k: meta[k] for k in ("name", "namespace", "generation", "uid") if k in meta}
        try:
            study = _load(json.dumps(doc, sort_keys=True))
        except validation.SpecError as exc:  # only Events in the outcome: nothing to create or delete
            return self.invalid(body, exc.problems, now)
        status = api.ScalingStudyStatus.model_validate(body.get("status") or {})
        study = study.model_copy(update={"status": status if body.get("status") else None})
        started = time.perf_counter()
        outcome = reconcile.reconcile(study, self._observe(study, namespace), now, self.settings)
        for action in outcome.actions:
            if isinstance(action, reconcile.CreateJob):
                self.cluster.create_job(namespace, action.manifest)
            elif isinstance(action, reconcile.DeleteJob):
                self.cluster.delete_job(namespace, action.name)
        self.publish(study, namespace, outcome.status)
        new = outcome.status.model_dump(by_alias=True, exclude_none=True, mode="json")
        if new != (body.get("status") or None):  # a resync of a settled study writes nothing
            self.cluster.patch_status(namespace, meta["name"], new)
        if self.observer is not None:
            self.observer(namespace, meta["name"], outcome, time.perf_counter() - started)
        return outcome


