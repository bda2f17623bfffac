"""Installing: the chart rendered by helm, and the kustomize base, applied with kubectl."""

from __future__ import annotations

import subprocess

from tests.cluster.conftest import Cluster, kube_tool
from tests.conftest import REPO

KINDS = {
    "v1/serviceaccounts": "radscale",
    "rbac.authorization.k8s.io/v1/clusterroles": "radscale",
    "rbac.authorization.k8s.io/v1/clusterrolebindings": "radscale",
    "apps/v1/deployments": "radscale",
    "v1/services": "radscale-metrics",
}


def test_helm_template_applies_with_kubectl(cluster: Cluster) -> None:
    rendered = subprocess.run([kube_tool("helm"), "template", "radscale", str(REPO / "charts" / "radscale"),
                               "--namespace", "radscale-system", "--include-crds"],
                              capture_output=True, text=True, check=True).stdout
    cluster.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "radscale-system"}})
    out = cluster.kubectl("apply", "--validate=false", "-f", "-", input=rendered)
    assert "customresourcedefinition.apiextensions.k8s.io/scalingstudies.radscale.io" in out
    for resource, name in KINDS.items():
        ns = None if "cluster" in resource else "radscale-system"
        found = {o["metadata"]["name"] for o in cluster.server.objects(resource, ns)}
        assert any(n.startswith(name) for n in found), (resource, found)
    dep = cluster.server.objects("apps/v1/deployments", "radscale-system")[0]
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["run", "--standalone"] and "radscale.operator.handlers" in args
    # re-applying is a no-op: nothing changes, so no object gets a new generation
    again = cluster.kubectl("apply", "--validate=false", "-f", "-", input=rendered)
    assert "configured" not in again, again


def test_kustomize_base_applies_with_kubectl(cluster: Cluster) -> None:
    out = cluster.kubectl("apply", "--validate=false", "-k", str(REPO / "manifests" / "operator"))
    assert "deployment.apps/radscale" in out and "namespace/radscale-system" in out
    assert cluster.server.objects("apps/v1/deployments", "radscale-system")


def test_operator_scale_bench_executes() -> None:
    """The benchmark's plumbing, at a size that says nothing about speed (numbers: docs/benchmarks.md)."""
    import sys

    kube_tool("kubectl")
    proc = subprocess.run([sys.executable, "bench/operator_scale.py", "--studies", "2", "--duration", "8",
                           "--job-seconds", "0.3"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "studies with a first RayJob: 2/2" in proc.stdout
    assert "per transition" in proc.stdout and "operator peak RSS" in proc.stdout
