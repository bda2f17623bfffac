"""RayJob rendering (a contract test against KubeRay's real CRD) and KubeRay's completion semantics."""

from __future__ import annotations

import shlex

import pytest
import yaml

from radscale.cells import CellSpec
from radscale.operator import api, plan, rayjob, validation
from tests.conftest import EXAMPLES, SHARED, edit, load_yaml
from tests.support import crdschema

KUBERAY_CRD = SHARED / "reference" / "kuberay" / "ray.io_rayjobs.yaml"
OWNER = rayjob.Owner(name="cxr", uid="0b8f6c1e-1111-2222-3333-444455556666")


def all_jobs(doc):
    study = validation.load_study(doc)
    p = plan.plan(study)
    jobs = [rayjob.render(study, plan.cell_spec(study, p, None, api.Stage.PREPARE), p.prepare_name, OWNER)]
    for cell in p.cells:
        for stage in cell.stages:
            for attempt in (0, 2):
                spec = plan.cell_spec(study, p, cell, stage, attempt)
                jobs.append(rayjob.render(study, spec, plan.job_name(cell.name, stage, attempt), OWNER))
    return study, jobs


@pytest.mark.skipif(not KUBERAY_CRD.exists(), reason="../shared/reference is absent")
@pytest.mark.parametrize("variant", ["own-clusters", "shared-cluster", "runtime-env", "local-example", "kueue"])
def test_every_rendered_rayjob_validates_against_kuberays_crd(variant):
    kuberay = yaml.safe_load(KUBERAY_CRD.read_text())
    schema = next(v for v in kuberay["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]
    doc = load_yaml(EXAMPLES / ("study-local.yaml" if variant == "local-example" else "study.yaml"))
    if variant == "shared-cluster":
        doc = edit(doc, {"spec.rayClusterSelector": {"ray.io/cluster": "shared-gpu"}})
    if variant == "kueue":
        doc = edit(doc, {"spec.queueName": "gpu-team", "spec.priorityClassName": "research-low"})
    if variant == "runtime-env":
        doc = edit(doc, {"spec.jobs": {"env": {"NCCL_DEBUG": "WARN"}, "pip": ["einops==0.8.0"],
                                       "activeDeadlineSeconds": 86400},
                         "spec.resources.pretrain.nodeSelector": {"gpu": "h100"},
                         "spec.resources.pretrain.tolerations": [{"key": "gpu", "operator": "Exists",
                                                                  "effect": "NoSchedule"}]})
    _, jobs = all_jobs(doc)
    for job in jobs:
        assert crdschema.problems_for_schema(schema, job) == [], job["metadata"]["name"]


def test_rendered_job_shape():
    _, jobs = all_jobs(load_yaml(EXAMPLES / "study.yaml"))
    job = next(j for j in jobs if j["metadata"]["name"] == "cxr-mi2-30k-pt")
    meta, spec = job["metadata"], job["spec"]
    assert meta["labels"][rayjob.LABEL_CELL] == "cxr-mi2-30k" and meta["labels"][rayjob.LABEL_STAGE] == "pretrain"
    assert meta["ownerReferences"][0]["uid"] == OWNER.uid and meta["ownerReferences"][0]["controller"] is True
    assert spec["submissionMode"] == "K8sJobMode" and spec["backoffLimit"] == 0
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] == 600
    argv = shlex.split(spec["entrypoint"])
    assert argv[:4] == ["python", "-m", "radscale.trainer.pretrain", "--cell"]
    cell = CellSpec.from_arg(argv[4])
    assert cell.cell == "cxr-mi2-30k" and cell.size == 30000
    workers = spec["rayClusterSpec"]["workerGroupSpecs"][0]
    assert workers["replicas"] == 8
    container = workers["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"] == {"cpu": "12", "memory": "96Gi", "nvidia.com/gpu": "1"}
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"] if "valueFrom" in e}
    assert secrets == {"AWS_ACCESS_KEY_ID": "cxr-s3", "AWS_SECRET_ACCESS_KEY": "cxr-s3"}
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.mlops:5000"} in container["env"]
    assert len({j["metadata"]["name"] for j in jobs}) == len(jobs)


def test_shared_cluster_uses_the_selector_and_is_not_shut_down():
    doc = edit(load_yaml(EXAMPLES / "study.yaml"), {"spec.rayClusterSelector": {"ray.io/cluster": "shared"}})
    _, jobs = all_jobs(doc)
    for job in jobs:
        assert job["spec"]["clusterSelector"] == {"ray.io/cluster": "shared"}
        assert "rayClusterSpec" not in job["spec"] and "shutdownAfterJobFinishes" not in job["spec"]
        assert "ttlSecondsAfterFinished" not in job["spec"] and "backoffLimit" not in job["spec"]


@pytest.mark.parametrize("changes", [{}, {"spec.rayClusterSelector": {"ray.io/cluster": "shared"}},
                                     {"spec.queueName": "gpu-team"}])
def test_every_rendered_rayjob_passes_kuberays_own_admission_rules(changes):
    _, jobs = all_jobs(edit(load_yaml(EXAMPLES / "study.yaml"), changes))
    if "spec.queueName" in changes:  # created suspended for Kueue, which needs shutdownAfterJobFinishes
        assert all(j["spec"]["suspend"] and j["spec"]["shutdownAfterJobFinishes"] for j in jobs)
    assert jobs and all(rayjob.admission_problems(j) == [] for j in jobs), \
        [(j["metadata"]["name"], rayjob.admission_problems(j)) for j in jobs if rayjob.admission_problems(j)]


@pytest.mark.parametrize(("spec", "problem"), [
    ({"rayClusterSpec": {}, "suspend": True}, "suspend needs shutdownAfterJobFinishes"),
    ({"rayClusterSpec": {}, "ttlSecondsAfterFinished": 600}, "ttlSecondsAfterFinished needs"),
    ({"clusterSelector": {"ray.io/cluster": "c"}, "shutdownAfterJobFinishes": True, "suspend": True},
     "cannot be suspended"),
    ({"clusterSelector": {"ray.io/cluster": "c"}, "backoffLimit": 2}, "takes no backoffLimit"),
    ({"clusterSelector": {"team": "ml"}}, "non-empty 'ray.io/cluster'"),
    ({"rayClusterSpec": {}, "shutdownAfterJobFinishes": True,
      "deletionStrategy": {"deletionRules": [{"policy": "DeleteCluster"}]}}, "mutually exclusive"),
    ({}, "one of rayClusterSpec or clusterSelector"),
])
def test_the_admission_check_refuses_what_kuberay_refuses(spec, problem):
    assert any(problem in p for p in rayjob.admission_problems({"spec": spec})), rayjob.admission_problems(
        {"spec": spec})


def obj(deployment=None, job_status=None, **extra):
    status = {k: v for k, v in {"jobDeploymentStatus": deployment, "jobStatus": job_status, **extra}.items() if v}
    return {"metadata": {"name": "j"}, "status": status} if status else {"metadata": {"name": "j"}}


@pytest.mark.parametrize(("deployment", "job_status", "phase"), [
    (None, None, rayjob.JobPhase.PENDING),
    ("New", None, rayjob.JobPhase.PENDING),
    ("Initializing", None, rayjob.JobPhase.PENDING),
    ("Waiting", None, rayjob.JobPhase.PENDING),
    ("Running", "PENDING", rayjob.JobPhase.RUNNING),
    ("Running", "RUNNING", rayjob.JobPhase.RUNNING),
    ("Retrying", "FAILED", rayjob.JobPhase.PENDING),  # transient: KubeRay is retrying
    ("Complete", "SUCCEEDED", rayjob.JobPhase.SUCCEEDED),
    ("Complete", "FAILED", rayjob.JobPhase.FAILED),
    ("Complete", "STOPPED", rayjob.JobPhase.FAILED),
    ("Failed", "RUNNING", rayjob.JobPhase.FAILED),  # jobStatus lies: the deployment failed
    ("Failed", None, rayjob.JobPhase.FAILED),
    ("ValidationFailed", None, rayjob.JobPhase.FAILED),
    ("Suspending", "STOPPED", rayjob.JobPhase.SUSPENDED),  # Kueue preempted it; KubeRay tears down
    ("Suspended", None, rayjob.JobPhase.SUSPENDED),
    (None, "SUCCEEDED", rayjob.JobPhase.PENDING),  # never trust jobStatus alone
])
def test_completion_follows_kuberay_semantics(deployment, job_status, phase):
    assert rayjob.state(obj(deployment, job_status)).phase is phase


def test_failure_reason_and_dashboard_url_are_kept():
    st = rayjob.state(obj("Failed", "RUNNING", reason="DeadlineExceeded", message="activeDeadlineSeconds passed",
                          dashboardURL="cxr-mi2-30k-pt-head-svc.ns.svc:8265"))
    assert (st.reason, st.message) == ("DeadlineExceeded", "activeDeadlineSeconds passed")
    assert st.dashboard_url == "http://cxr-mi2-30k-pt-head-svc.ns.svc:8265"
    st = rayjob.state(obj("Complete", "FAILED"))
    assert st.message == "jobDeploymentStatus Complete, jobStatus FAILED"
