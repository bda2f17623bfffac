"""A cluster on loopback: the API emulator, the real kopf operator process, real kubectl/helm and a
fake KubeRay controller. Each test gets a fresh API server; processes are stopped after it."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from tests.conftest import EXAMPLES, REPO
from tests.support.apiserver import CRDS, Running
from tests.support.kuberay import Behaviour, FakeKubeRay
from tests.support.operator_process import OperatorProcess

STUDIES = "radscale.io/v1alpha1/scalingstudies"
RAYJOBS = "ray.io/v1/rayjobs"
CRD_FILE = REPO / "manifests" / "crd" / "scalingstudies.radscale.io.yaml"
# KubeRay's CRD is not ours to ship; the emulator only needs it to serve the resource.
RAYJOB_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "rayjobs.ray.io"},
    "spec": {"group": "ray.io", "scope": "Namespaced",
             "names": {"kind": "RayJob", "plural": "rayjobs", "singular": "rayjob"},
             "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                           "schema": {"openAPIV3Schema": {"type": "object",
                                                          "x-kubernetes-preserve-unknown-fields": True}}}]},
}


def kube_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("RADSCALE_REQUIRE_KUBE_TOOLS"):
            pytest.fail(f"{name} is not on PATH; `make test` extracts it into .tools/bin")
        pytest.skip(f"{name} not installed (make test provides it)")
    return path


def wait_for(predicate: Callable[[], Any], timeout: float = 60, what: str = "condition",
             on_timeout: Callable[[], str] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{on_timeout()}")


class Cluster:
    """What a test talks to: the API (directly and through kubectl) and the fake KubeRay."""

    def __init__(self, api: Running, tmp: pathlib.Path):
        self.api, self.server, self.tmp = api, api.server, tmp
        self.kubeconfig = api.kubeconfig(tmp / "kubeconfig.json")
        self.kuberay = FakeKubeRay(self.server, Behaviour())
        self._kuberay_task = api.spawn(self.kuberay.run())

    def kubectl(self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60) -> str:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        proc = subprocess.run([kube_tool("kubectl"), *args], env=env, capture_output=True, text=True,
                              input=input, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc.stdout if check else proc.stdout + proc.stderr

    def study(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        return self.server.get(STUDIES, namespace, name)

    def status(self, name: str, namespace: str = "default") -> dict[str, Any]:
        return (self.study(name, namespace) or {}).get("status") or {}

    def condition(self, name: str, type_: str, namespace: str = "default") -> dict[str, Any] | None:
        return next((c for c in self.status(name, namespace).get("conditions", []) if c["type"] == type_), None)

    def rayjobs(self, namespace: str = "default") -> list[dict[str, Any]]:
        return self.server.objects(RAYJOBS, namespace)

    def created_rayjobs(self) -> list[str]:
        return [name for plural, _, name in self.server.created if plural == "rayjobs"]

    def apply(self, doc: dict[str, Any]) -> str:
        return self.kubectl("apply", "--validate=false", "-f", "-", input=json.dumps(doc))

    def close(self) -> None:
        self._kuberay_task.cancel()


@pytest.fixture
def cluster(tmp_path: pathlib.Path) -> Iterator[Cluster]:
    api = Running().start()
    api.call(api.server.create, (CRDS, None, "rayjobs.ray.io"), RAYJOB_CRD)
    c = Cluster(api, tmp_path)
    c.kubectl("apply", "--validate=false", "-f", str(CRD_FILE))
    yield c
    c.close()
    api.stop()
    assert not c.kuberay.errors, c.kuberay.errors


@pytest.fixture
def operator(cluster: Cluster, tmp_path: pathlib.Path) -> Iterator[OperatorProcess]:
    op = OperatorProcess(cluster.kubeconfig, tmp_path / "operator.log")
    op.start()
    yield op
    op.stop()


def small_study(tmp: pathlib.Path, name: str = "grid", sizes: tuple[int, ...] = (100, 200, 400),
                **spec: Any) -> dict[str, Any]:
    """The local example, shrunk: 2 encoders x 3 sizes + baselines, 2 tasks, output under tmp."""
    doc = yaml.safe_load((EXAMPLES / "study-local.yaml").read_text())
    doc["metadata"] = {"name": name, "namespace": "default"}
    doc["spec"].update(sizes=list(sizes), output=f"file://{tmp}/out/{name}", maxConcurrentCells=4, retries=2,
                       replicates=1,
                       computeBudget={"steps": 40, "globalBatchSize": 32, "checkpointEvery": 10})  # covers 800
    doc["spec"]["evaluation"]["tasks"] = doc["spec"]["evaluation"]["tasks"][:2]
    doc["spec"].update(spec)
    return doc
