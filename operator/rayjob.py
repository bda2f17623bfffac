"""Render KubeRay RayJobs for a study's stages, and read their state back. Pure: data in, data out.

Rendering: ``ray.io/v1`` RayJob, K8sJobMode, the trainer entrypoint with the cell spec, one Ray
cluster per job from the stage's resources (head + worker group; credentials from the study's
Secret; node selectors and tolerations passed through), or ``clusterSelector`` when the study names
an existing RayCluster. ``backoffLimit: 0``: radscale owns retries (each attempt is a new RayJob
that resumes from the cell's checkpoints). Children carry the study's ownerReference and
``radscale.io/{study,cell,stage,attempt}`` labels. With ``spec.queueName`` a RayJob also carries
Kueue's queue label and is created suspended (Kueue admits by unsuspending it).

Reading: a RayJob is finished when ``status.jobDeploymentStatus`` is Complete, Failed or
ValidationFailed, and succeeded only when Complete *and* ``jobStatus`` is SUCCEEDED; ``jobStatus``
alone is never trusted (it can read RUNNING after the deployment failed). Retrying is transient;
Suspending/Suspended (queued or preempted by Kueue) is neither running nor finished.
"""

from __future__ import annotations

import dataclasses
import enum
import shlex
from typing import Any

import yaml

from radscale.cells import CellSpec
from radscale.operator import api

GROUP, VERSION, PLURAL, KIND = "ray.io", "v1", "rayjobs", "RayJob"
LABEL_STUDY = "radscale.io/study"
LABEL_CELL = "radscale.io/cell"
LABEL_STAGE = "radscale.io/stage"
LABEL_ATTEMPT = "radscale.io/attempt"
DEFAULT_IMAGE = "ghcr.io/radscale/trainer:0.1.0"
CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@dataclasses.dataclass(frozen=True)
class Owner:
    name: str
    uid: str


def _container(name: str, image: str, res: api.StageResources, env: list[dict[str, Any]],
               gpus: int) -> dict[str, Any]:
    limits: dict[str, str] = {"cpu": str(res.cpus), "memory": res.memory}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "resources": {"limits": limits, "requests": dict(limits)},
        "env": env,
        "ports": [{"containerPort": 6379, "name": "gcs"}, {"containerPort": 8265, "name": "dashboard"},
                  {"containerPort": 10001, "name": "client"}] if name == "ray-head" else [],
    }


def _env(study: api.ScalingStudy) -> list[dict[str, Any]]:
    spec = study.spec
    env: list[dict[str, Any]] = [{"name": "RADSCALE_STUDY", "value": study.metadata.name}]
    if spec.dataset.credentials_secret:
        env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": spec.dataset.credentials_secret, "key": key}}}
                for key in CREDENTIAL_KEYS]
    if spec.dataset.endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": spec.dataset.endpoint})
    if spec.tracking.uri:
        env.append({"name": "MLFLOW_TRACKING_URI", "value": spec.tracking.uri})
    return env


def _pod(container: dict[str, Any], res: api.StageResources, priority_class: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [container]}
    if priority_class:
        spec["priorityClassName"] = priority_class
    if res.node_selector:
        spec["nodeSelector"] = dict(res.node_selector)
    if res.tolerations:
        spec["tolerations"] = list(res.tolerations)
    return {"spec": spec}


def cluster_spec(study: api.ScalingStudy, res: api.StageResources, default_image: str) -> dict[str, Any]:
    image = res.image or default_image
    env = _env(study)
    priority = study.spec.priority_class_name
    # The head schedules; the workers do the work (Ray Train/Tune/Data workers, one per pod).
    head_res = api.StageResources(cpus=2, memory="8Gi", gpus_per_worker=0, node_selector=res.node_selector,
                                  tolerations=res.tolerations)
    return {
        "headGroupSpec": {
            "rayStartParams": {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
            "template": _pod(_container("ray-head", image, head_res, env, 0), head_res, priority),
        },
        "workerGroupSpecs": [{
            "groupName": "workers",
            "replicas": res.workers,
            "minReplicas": res.workers,
            "maxReplicas": res.workers,
            "rayStartParams": {},
            "template": _pod(_container("ray-worker", image, res, env, res.gpus_per_worker), res, priority),
        }],
    }


CLUSTER_SELECTOR_KEY = "ray.io/cluster"  # KubeRay's RayJobClusterSelectorKey: the RayCluster to submit to


def admission_problems(job: dict[str, Any]) -> list[str]:
    """What KubeRay's own admission (``ValidateRayJobSpec`` in ray-operator/controllers/ray/utils/
    validation.go) would refuse in a RayJob's spec; empty when it would accept it. Rendering and
    suspension are checked against it in tests, in both cluster modes."""
    spec = job.get("spec", {})
    shutdown = bool(spec.get("shutdownAfterJobFinishes", False))
    selector = spec.get("clusterSelector") or {}
    out = []
    if spec.get("suspend") and not shutdown:
        out.append("suspend needs shutdownAfterJobFinishes: true")
    if not shutdown and spec.get("ttlSecondsAfterFinished", 0) > 0:
        out.append("ttlSecondsAfterFinished needs shutdownAfterJobFinishes: true")
    rules = (spec.get("deletionStrategy") or {}).get("deletionRules")
    if rules and shutdown:
        out.append("deletionStrategy.deletionRules and shutdownAfterJobFinishes are mutually exclusive")
    if selector:
        if spec.get("suspend"):
            out.append("a clusterSelector RayJob cannot be suspended")
        if not selector.get(CLUSTER_SELECTOR_KEY):
            out.append(f"clusterSelector needs a non-empty {CLUSTER_SELECTOR_KEY!r}")
        if spec.get("backoffLimit"):
            out.append("a clusterSelector RayJob takes no backoffLimit (radscale owns retries)")
    elif not spec.get("rayClusterSpec"):
        out.append("one of rayClusterSpec or clusterSelector must be set")
    if spec.get("backoffLimit", 0) < 0:
        out.append("backoffLimit must be >= 0")
    if "activeDeadlineSeconds" in spec and spec["activeDeadlineSeconds"] <= 0:
        out.append("activeDeadlineSeconds must be > 0")
    return out


KUEUE_QUEUE = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY = "kueue.x-k8s.io/priority-class"


def labels(study: str, cell: str, stage: api.Stage, attempt: int) -> dict[str, str]:
    return {LABEL_STUDY: study, LABEL_CELL: cell, LABEL_STAGE: stage.value, LABEL_ATTEMPT: str(attempt),
            "app.kubernetes.io/managed-by": "radscale"}


def kueue_labels(spec: api.ScalingStudySpec) -> dict[str, str]:
    out = {}
    if spec.queue_name:
        out[KUEUE_QUEUE] = spec.queue_name
        if spec.workload_priority_class_name:
            out[KUEUE_PRIORITY] = spec.workload_priority_class_name
    return out


def render(study: api.ScalingStudy, cell: CellSpec, name: str, owner: Owner,
           default_image: str = DEFAULT_IMAGE) -> dict[str, Any]:
    """The RayJob that runs one attempt of one stage of one cell."""
    spec = study.spec
    job: dict[str, Any] = {
        "entrypoint": shlex.join(cell.entrypoint()),
        "submissionMode": "K8sJobMode",
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": spec.jobs.ttl_seconds_after_finished,
        "backoffLimit": 0,
    }
    if spec.jobs.active_deadline_seconds:
        job["activeDeadlineSeconds"] = spec.jobs.active_deadline_seconds
    runtime_env: dict[str, Any] = {}
    if spec.jobs.env:
        runtime_env["env_vars"] = dict(spec.jobs.env)
    if spec.jobs.pip:
        runtime_env["pip"] = list(spec.jobs.pip)
    if runtime_env:
        job["runtimeEnvYAML"] = yaml.safe_dump(runtime_env, sort_keys=True)
    if spec.ray_cluster_selector:
        job["clusterSelector"] = dict(spec.ray_cluster_selector)
        # The shared cluster is not ours to shut down, and KubeRay refuses a TTL without shutdown;
        # backoffLimit stays unset (its default, 0): radscale owns retries in both modes.
        for key in ("shutdownAfterJobFinishes", "ttlSecondsAfterFinished", "backoffLimit"):
            job.pop(key)
    else:
        job["rayClusterSpec"] = cluster_spec(study, cell.resources, default_image)
        if spec.queue_name:
            # Kueue admits a job by unsuspending it; created running, it would start before admission.
            job["suspend"] = True
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": study.metadata.namespace or "default",
            "labels": {**labels(study.metadata.name, cell.cell, cell.stage, cell.attempt), **kueue_labels(spec)},
            "ownerReferences": [{
                "apiVersion": api.API_VERSION, "kind": api.KIND, "name": owner.name, "uid": owner.uid,
                "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": job,
    }


# ---- reading state ------------------------------------------------------------------------


class JobPhase(enum.StrEnum):
    PENDING = "Pending"  # created, no status yet, or initialising / waiting for resources
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def finished(self) -> bool:
        return self in (JobPhase.SUCCEEDED, JobPhase.FAILED)


FINISHED_DEPLOYMENT = ("Complete", "Failed", "ValidationFailed")


@dataclasses.dataclass(frozen=True)
class JobState:
    phase: JobPhase
    reason: str
    message: str
    dashboard_url: str | None
    deployment: str = ""  # jobDeploymentStatus as read ("" before KubeRay wrote one)


# A job in one of these has been admitted (by Kueue, or was never held): suspending it is a preemption.
ACTIVE_DEPLOYMENT = ("Initializing", "Running", "Waiting", "Retrying")
SUSPENDED_DEPLOYMENT = ("Suspending", "Suspended")


def state(rayjob: dict[str, Any]) -> JobState:
    """Read a RayJob's status per KubeRay's semantics."""
    status = rayjob.get("status") or {}
    deployment = status.get("jobDeploymentStatus") or ""
    job_status = status.get("jobStatus") or ""
    message = status.get("message") or ""
    url = status.get("dashboardURL")
    if url and not url.startswith("http"):
        url = f"http://{url}"
    reason = status.get("reason") or deployment or "Created"
    if deployment in FINISHED_DEPLOYMENT:
        ok = deployment == "Complete" and job_status == "SUCCEEDED"
        if not ok and not message:
            message = f"jobDeploymentStatus {deployment}, jobStatus {job_status or 'unknown'}"
        return JobState(JobPhase.SUCCEEDED if ok else JobPhase.FAILED, reason, message, url, deployment)
    if deployment in SUSPENDED_DEPLOYMENT:
        return JobState(JobPhase.SUSPENDED, reason, message, url, deployment)
    if deployment == "Running":
        return JobState(JobPhase.RUNNING, reason, message, url, deployment)
    # "", New, Initializing, Waiting, Retrying (transient), ...
    return JobState(JobPhase.PENDING, reason, message, url, deployment)
