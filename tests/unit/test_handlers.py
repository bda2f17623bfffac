"""The operator's effects behind its own adapters (no HTTP mocked): what a pass reads, creates, patches."""

from __future__ import annotations

import datetime as dt
import json

from radscale.cells import CellResult, MetricValue, TaskResult
from radscale.operator import handlers, kube, reconcile
from tests.conftest import EXAMPLES, edit, load_yaml

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


class FakeCluster:
    def __init__(self):
        self.jobs: dict[str, dict] = {}
        self.created: list[str] = []
        self.deleted: list[str] = []
        self.status: dict | None = None
        self.patches = 0
        self.secrets = {"cxr-s3": {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}}

    def list_jobs(self, namespace, study):
        return {n: j for n, j in self.jobs.items() if j["metadata"]["labels"]["radscale.io/study"] == study}

    def create_job(self, namespace, manifest):
        self.created.append(manifest["metadata"]["name"])
        self.jobs.setdefault(manifest["metadata"]["name"], {**manifest, "status": {}})

    def delete_job(self, namespace, name):
        self.deleted.append(name)
        self.jobs.pop(name, None)

    def patch_status(self, namespace, name, status):
        json.dumps(status)  # what goes to the API server must be plain JSON
        self.patches += 1
        self.status = status

    def secret(self, namespace, name):
        return self.secrets[name]


class FakeStore:
    def __init__(self, prepared=True):
        self.prepared, self.results, self.reads, self.options = prepared, {}, [], []

    def shards_exist(self, shards_uri, options):
        self.options.append(options)
        return self.prepared

    def read_result(self, output_uri, cell, options):
        self.reads.append(cell)
        return self.results.get(cell)


def body(doc, status=None, generation=1):
    b = json.loads(json.dumps(doc))
    b["metadata"].update({"namespace": "ml", "uid": "u-1", "generation": generation})
    if status:
        b["status"] = status
    return b


def test_a_pass_creates_children_and_patches_status_once():
    cluster, store = FakeCluster(), FakeStore()
    op = handlers.Operator(cluster, store, reconcile.Settings(default_image="img:1"))
    out = op.reconcile(body(load_yaml(EXAMPLES / "study.yaml")), T0)
    assert out is not None and len(cluster.created) == 6 and len(set(cluster.created)) == 6
    assert cluster.patches == 1, "one status patch per pass"
    assert cluster.status["phase"] == "Running" and cluster.status["progress"] == "0/24"
    # storage options come from the study's endpoint/Secret
    assert store.options[0] == {"key": "k", "secret": "s"}
    image = cluster.jobs[cluster.created[0]]["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"][
        "containers"][0]["image"]
    assert image == "img:1"


def test_invalid_specs_get_a_condition_naming_the_field_and_no_children():
    cluster = FakeCluster()
    op = handlers.Operator(cluster, FakeStore())
    doc = edit(load_yaml(EXAMPLES / "study.yaml"), {"spec.sizes": [30000, 10000]})
    assert op.reconcile(body(doc), T0) is None
    ready = next(c for c in cluster.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec" and "spec.sizes" in ready["message"]
    assert cluster.created == []


def test_results_are_read_for_finished_cells_once_and_reach_the_status():
    cluster, store = FakeCluster(), FakeStore()
    op = handlers.Operator(cluster, store)
    doc = load_yaml(EXAMPLES / "study-local.yaml")
    first = op.reconcile(body(doc), T0)
    name = "cxr-local-dino-base-ev"
    cluster.jobs[name]["status"] = {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}
    store.results["cxr-local-dino-base"] = CellResult(study="cxr-local", cell="cxr-local-dino-base", encoder="dino",
                                                      size=0, evaluate={"findings": TaskResult(
                                                          metric="auroc", metrics={"auroc": MetricValue(value=0.7)})})
    second = op.reconcile(body(doc, cluster.status), T0 + dt.timedelta(minutes=1))
    assert second.status.results["findings"]["auroc"]["dino"] == [[0.0, 0.7, 0.7, 0.7]]
    op.reconcile(body(doc, cluster.status), T0 + dt.timedelta(minutes=2))
    assert store.reads.count("cxr-local-dino-base") == 1, "a finished evaluation is read once"
    assert first.status.phase == "Running"


def test_storage_options_for_s3_and_local(monkeypatch):
    from radscale.cells import storage_options

    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    assert storage_options("s3://b/x", "http://minio:9000", {"AWS_ACCESS_KEY_ID": "a",
                                                                  "AWS_SECRET_ACCESS_KEY": "b"}) == {
        "endpoint_url": "http://minio:9000", "key": "a", "secret": "b"}
    assert storage_options("file:///data", "http://minio:9000", {}) == {}
    assert storage_options("s3://b/x") == {}  # keys from the environment, as in a RayJob
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
    assert storage_options("s3://b/x") == {"endpoint_url": "http://127.0.0.1:9000"}


def test_fsspec_store_reads_results_and_ignores_garbage(tmp_path):
    store = kube.FsspecStore()
    out = f"file://{tmp_path}"
    (tmp_path / "c1").mkdir()
    (tmp_path / "c1" / "result.json").write_text(CellResult(study="s", cell="c1").to_json())
    (tmp_path / "c2").mkdir()
    (tmp_path / "c2" / "result.json").write_text("{not json")
    assert store.read_result(out, "c1", {}).cell == "c1"
    assert store.read_result(out, "c2", {}) is None
    assert store.read_result(out, "c3", {}) is None
    assert not store.shards_exist(f"{out}/prep/abc", {})
