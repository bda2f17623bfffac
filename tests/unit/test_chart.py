"""The Helm chart, checked with the real helm and kubectl binaries (extracted by `make test`)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import REPO

CHART = REPO / "charts" / "radscale"
HELM, KUBECTL = shutil.which("helm"), shutil.which("kubectl")
if not (HELM and KUBECTL):
    if os.environ.get("RADSCALE_REQUIRE_KUBE_TOOLS"):
        raise RuntimeError("helm/kubectl missing although `make test` should have extracted them into .tools/bin")
    pytest.skip("helm/kubectl not on PATH (run through `make test`)", allow_module_level=True)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def render(*sets: str) -> list[dict]:
    args = ["template", "rs", str(CHART), "--namespace", "radscale-system"]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


CRD_RULE = {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"],
            "verbs": ["get", "list", "watch"]}


def of_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def test_lint_is_clean():
    out = helm("lint", "--strict", str(CHART))
    assert "0 chart(s) failed" in out.stdout


def test_default_install_watches_all_namespaces_with_a_cluster_role():
    docs = render()
    assert {d["kind"] for d in docs} == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment", "Service"}
    (dep,) = of_kind(docs, "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["run", "--standalone"] and "--all-namespaces" in args
    assert args[-2:] == ["-m", "radscale.operator.handlers"]
    (role,) = of_kind(docs, "ClusterRole")
    assert {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]} in role["rules"]
    assert CRD_RULE in role["rules"], "kopf lists and watches CRDs"


def test_pod_runs_locked_down():
    (dep,) = of_kind(render(), "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = pod["containers"][0]["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}
    assert pod["containers"][0]["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_rbac_is_least_privilege():
    for docs in (render(), render("watchNamespaces={ml,research}"), render("rbac.secretNamespaces={ml}"),
                 render("rbac.clusterWideSecrets=true")):
        for role in of_kind(docs, "ClusterRole") + of_kind(docs, "Role"):
            for rule in role["rules"]:
                assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
                if "secrets" in rule["resources"]:
                    assert rule["verbs"] == ["get"], "secrets are read-only"
                if "rayjobs" in rule["resources"]:
                    assert set(rule["verbs"]) == {"get", "list", "watch", "create", "patch", "delete"}


def test_watched_namespaces_get_roles_and_only_crds_cluster_wide():
    docs = render("watchNamespaces={ml,research}")
    (cluster_role,) = of_kind(docs, "ClusterRole")
    assert cluster_role["rules"] == [CRD_RULE], "cluster-wide: reading CRDs (kopf watches them), nothing else"
    (binding,) = of_kind(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    for role in of_kind(docs, "Role"):
        assert {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]} in role["rules"]
    assert sorted(r["metadata"]["namespace"] for r in of_kind(docs, "Role")) == ["ml", "research"]
    assert sorted(b["metadata"]["namespace"] for b in of_kind(docs, "RoleBinding")) == ["ml", "research"]
    (dep,) = of_kind(docs, "Deployment")
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=ml" in args and "--namespace=research" in args and "--all-namespaces" not in args


def test_service_monitor_is_optional():
    assert not of_kind(render(), "ServiceMonitor")
    (sm,) = of_kind(render("metrics.serviceMonitor.enabled=true", "metrics.serviceMonitor.labels.release=prom"),
                    "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prom" and sm["spec"]["endpoints"][0]["port"] == "metrics"


@pytest.mark.parametrize("bad", ["replicaCount=2", "metrics.port=80", "watchNamespaces={Bad_NS}", "imagee=x",
                                 "image.pullPolicy=Sometimes", "logLevel=verbose", "rbac.secretNamespaces={Bad_NS}",
                                 "rbac.clusterWideSecrets=yes", "rbac.secrets=all"])
def test_values_schema_refuses_bad_values(bad):
    proc = helm("template", "rs", str(CHART), "--set", bad, check=False)
    assert proc.returncode != 0 and "schema" in proc.stderr.lower(), proc.stderr


def test_kustomize_base_matches_the_chart():
    committed = (REPO / "manifests" / "operator" / "radscale.yaml").read_text()
    assert committed == helm("template", "radscale", str(CHART), "--namespace", "radscale-system").stdout, \
        "manifests/operator drifted from the chart: run `make crd`"
    proc = subprocess.run([KUBECTL, "kustomize", str(REPO / "manifests" / "operator")], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole",
                            "ClusterRoleBinding", "Deployment", "Service"])
    assert all(d["metadata"].get("namespace", "radscale-system") == "radscale-system" for d in docs)


def _secret_rules(role):
    return [r for r in role["rules"] if "secrets" in r["resources"]]


def test_secrets_are_read_only_in_chosen_namespaces_unless_cluster_wide_is_opted_in():
    default = render()
    assert not any(_secret_rules(r) for r in of_kind(default, "ClusterRole")), "no cluster-wide Secrets by default"
    assert not of_kind(default, "Role")

    scoped = render("rbac.secretNamespaces={ml,research}")
    assert not any(_secret_rules(r) for r in of_kind(scoped, "ClusterRole"))
    roles = of_kind(scoped, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["ml", "research"]
    assert all(r["rules"] == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}] for r in roles)
    bindings = of_kind(scoped, "RoleBinding")
    assert sorted((b["metadata"]["namespace"], b["roleRef"]["kind"], b["roleRef"]["name"]) for b in bindings) == [
        ("ml", "Role", "rs-radscale-secrets"), ("research", "Role", "rs-radscale-secrets")]
    assert all(b["subjects"] == [{"kind": "ServiceAccount", "name": "rs-radscale", "namespace": "radscale-system"}]
               for b in bindings)

    wide = render("rbac.clusterWideSecrets=true", "rbac.secretNamespaces={ml}")
    (role,) = of_kind(wide, "ClusterRole")
    assert _secret_rules(role) == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    assert not of_kind(wide, "Role"), "cluster-wide already covers them"


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
def test_log_level_reaches_the_operators_environment(level):
    (dep,) = of_kind(render(f"logLevel={level}"), "Deployment")
    env = {e["name"]: e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RADSCALE_LOG_LEVEL"] == level
    from radscale.operator import logs

    assert logs.level_from_env(env) == getattr(__import__("logging"), level.upper())
