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

    def write(self, uri, data, options):
        self.written = [*getattr(self, "written", []), uri]


def body(doc, status=None, generation=1):
    b = json.loads(json.dumps(doc))
    b["metadata"].update({"namespace": "ml", "uid": "u-1", "generation": generation})
    if status:
        b["status"] = status
    return b


def test_a_pass_creates_children_and_patches_status_once():
    cluster, store = FakeCluster(), FakeStore()
    op = handlers.Effects(cluster, store, reconcile.Settings(default_image="img:1"))
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
    op = handlers.Effects(cluster, FakeStore())
    doc = edit(load_yaml(EXAMPLES / "study.yaml"), {"spec.sizes": [30000, 10000]})
    out = op.reconcile(body(doc), T0)  # only an Event to post (issue 15e): nothing created or deleted
    assert [a.reason for a in out.actions] == ["InvalidSpec"]
    ready = next(c for c in cluster.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec" and "spec.sizes" in ready["message"]
    assert cluster.created == []


def test_results_are_read_for_finished_cells_once_and_reach_the_status():
    cluster, store = FakeCluster(), FakeStore()
    op = handlers.Effects(cluster, store)
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


class NotFound(Exception):
    """What kubernetes' ApiException carries for a missing object: ``status == 404``."""

    status = 404


class SecretlessCluster(FakeCluster):
    def secret(self, namespace, name):
        if name not in self.secrets:
            raise NotFound(f"secrets {name!r} not found")
        return self.secrets[name]


def test_a_missing_credentials_secret_sets_ready_false_once_and_the_next_pass_recovers():
    cluster, store = SecretlessCluster(), FakeStore()
    cluster.secrets = {}
    op = handlers.Effects(cluster, store)
    doc = load_yaml(EXAMPLES / "study.yaml")
    out = op.reconcile(body(doc), T0)
    ready = next(c for c in cluster.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and ready["reason"] == "SecretNotFound"
    assert "spec.dataset.credentialsSecret" in ready["message"] and "cxr-s3" in ready["message"]
    assert [a.reason for a in out.actions] == ["SecretNotFound"] and cluster.created == []
    assert store.options == [], "nothing is read from the store without its credentials"
    again = op.reconcile(body(doc, cluster.status), T0 + dt.timedelta(seconds=30))
    assert again.actions == [] and cluster.patches == 1  # unchanged: not patched again
    cluster.secrets = {"cxr-s3": {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}}
    op.reconcile(body(doc, cluster.status), T0 + dt.timedelta(seconds=60))
    assert len(cluster.created) == 6 and store.options[0] == {"key": "k", "secret": "s"}
    assert next(c for c in cluster.status["conditions"] if c["type"] == "Ready")["status"] == "True"


def test_other_secret_errors_are_not_taken_for_a_missing_secret():
    class Broken(FakeCluster):
        def secret(self, namespace, name):
            raise RuntimeError("API server unreachable")

    op = handlers.Effects(Broken(), FakeStore())
    try:
        op.reconcile(body(load_yaml(EXAMPLES / "study.yaml")), T0)
    except RuntimeError as exc:
        assert "unreachable" in str(exc)
    else:
        raise AssertionError("a transient error must reach kopf, which retries")


def test_an_invalid_spec_is_failed_with_one_event_per_generation_and_a_fix_resumes():
    cluster = FakeCluster()
    op = handlers.Effects(cluster, FakeStore())
    good = load_yaml(EXAMPLES / "study.yaml")
    bad = edit(good, {"spec.sizes": [30000, 10000]})
    first = op.reconcile(body(bad), T0)
    assert [a.reason for a in first.actions] == ["InvalidSpec"]
    failed = next(c for c in cluster.status["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and "spec.sizes" in failed["message"] and cluster.status["phase"] == "Failed"
    assert op.reconcile(body(bad, cluster.status), T0 + dt.timedelta(seconds=30)).actions == []
    op.reconcile(body(good, cluster.status, generation=2), T0 + dt.timedelta(seconds=60))
    failed = next(c for c in cluster.status["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "False" and cluster.status["phase"] == "Running" and len(cluster.created) == 6


# --- a result rewritten during a read, and results that must not reach the log (issue 15 b, c) ---

class _FlakyMemory:
    """An in-memory filesystem whose next ``arm`` reads of result.json raise s3fs's FileExpired
    (the object was rewritten between its HEAD and its GET), as s3fs does."""

    registered = False

    @classmethod
    def install(cls):
        import fsspec
        from fsspec.implementations.memory import MemoryFileSystem
        from s3fs.utils import FileExpired

        class Flaky(MemoryFileSystem):
            protocol = ("flakymem",)
            root_marker = "/"
            failures = 0

            def cat_file(self, path, start=None, end=None, **kwargs):
                if str(path).endswith("result.json") and Flaky.failures:
                    Flaky.failures -= 1
                    raise FileExpired(filename=str(path), e_tag='"0123abcd"')
                return super().cat_file(path, start=start, end=end, **kwargs)

            def open(self, path, mode="rb", **kwargs):
                if "r" in mode and str(path).endswith("result.json") and Flaky.failures:
                    Flaky.failures -= 1
                    raise FileExpired(filename=str(path), e_tag='"0123abcd"')
                return super().open(path, mode, **kwargs)

        fsspec.register_implementation("flakymem", Flaky, clobber=True)
        return Flaky


def test_a_result_rewritten_during_the_read_is_read_again_next_pass(caplog):
    import errno

    flaky = _FlakyMemory.install()
    out = "flakymem://issue15c/out"
    cluster, store = FakeCluster(), kube.FsspecStore()
    op = handlers.Effects(cluster, store)
    doc = edit(load_yaml(EXAMPLES / "study-local.yaml"), {"spec.output": out})
    from radscale.operator import plan, validation

    study = validation.load_study(json.loads(json.dumps(doc)))
    fs = flaky()
    fs.pipe_file(plan.shards_uri(study, plan.plan(study).fingerprint) + "/index.json", b"{}")
    op.reconcile(body(doc), T0)
    name, cell = "cxr-local-dino-base-ev", "cxr-local-dino-base"
    cluster.jobs[name]["status"] = {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}
    result = CellResult(study="cxr-local", cell=cell, encoder="dino", size=0, evaluate={"findings": TaskResult(
        metric="auroc", metrics={"auroc": MetricValue(value=0.7)})})
    fs.pipe_file(f"{out}/{cell}/result.json", result.to_json().encode())
    flaky.failures = 2
    with caplog.at_level("DEBUG", logger="radscale.operator.kube"):
        second = op.reconcile(body(doc, cluster.status), T0 + dt.timedelta(minutes=1))  # FileExpired: not yet
        assert second is not None and "findings" not in (second.status.results or {})
        third = op.reconcile(body(doc, cluster.status), T0 + dt.timedelta(minutes=2))  # again: still not yet
        assert "findings" not in (third.status.results or {})
        fourth = op.reconcile(body(doc, cluster.status), T0 + dt.timedelta(minutes=3))  # the rewrite is done
    assert fourth.status.results["findings"]["auroc"]["dino"] == [[0.0, 0.7, 0.7, 0.7]]
    expired = [r for r in caplog.records if "could not read" in r.getMessage()]
    assert [r.levelname for r in expired] == ["WARNING", "DEBUG"], "logged once at WARNING, then quietly"
    assert f"FileExpired (errno {errno.EBUSY})" in expired[0].getMessage() and cell in expired[0].getMessage()


def test_transient_storage_errors_are_not_yet_and_garbage_is_never_quoted(tmp_path, caplog, monkeypatch):
    import botocore.exceptions

    patient = "Jane Q Patient MRN 0042"
    store = kube.FsspecStore()
    out = f"file://{tmp_path}"
    (tmp_path / "c1").mkdir()
    (tmp_path / "c1" / "result.json").write_text(json.dumps({
        "study": "s", "cell": "c1", "size": patient, "encoder": {"patient": patient},
        "evaluate": {patient: {"metric": patient}}, patient: patient}))
    (tmp_path / "c2").mkdir()
    (tmp_path / "c2" / "result.json").write_text('{"study": "s", "cell": "' + patient + '", ')
    with caplog.at_level("DEBUG", logger="radscale.operator.kube"):
        for _ in range(3):
            assert store.read_result(out, "c1", {}) is None
            assert store.read_result(out, "c2", {}) is None
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert patient not in text and "Patient" not in text and "0042" not in text
    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 2, "one WARNING per file, not one per pass"
    assert "c1/result.json" in warned[0].getMessage() and "size (int_parsing)" in warned[0].getMessage()
    assert "<key> (extra_forbidden)" in warned[0].getMessage()
    assert "not JSON" in warned[1].getMessage()

    import fsspec.implementations.local as local_fs

    def unreachable(self, path, *a, **k):
        raise botocore.exceptions.EndpointConnectionError(endpoint_url="http://minio:9000")

    monkeypatch.setattr(local_fs.LocalFileSystem, "cat_file", unreachable)
    (tmp_path / "c3").mkdir()
    (tmp_path / "c3" / "result.json").write_text(CellResult(study="s", cell="c3").to_json())
    assert store.read_result(out, "c3", {}) is None  # unreachable storage is "not yet", not a failed pass
    monkeypatch.setattr(local_fs.LocalFileSystem, "cat_file", lambda self, path, *a, **k: (_ for _ in ()).throw(
        ConnectionResetError(104, "reset")))
    assert store.read_result(out, "c3", {}) is None
    monkeypatch.undo()
    assert store.read_result(out, "c3", {}).cell == "c3"


def test_a_finished_study_publishes_results_and_plot_once_and_a_resync_writes_nothing():
    """One effects path for both modes: the engine writes results.json and the PNG when the study
    ends, records them in status.artifacts, and a later resync neither rewrites nor re-patches."""
    import random

    from tests.unit.test_reconcile import fake_result, local, simulate, study_of

    doc = local()
    final, _ = simulate(doc)
    study = study_of(doc, final)
    cluster, store = FakeCluster(), FakeStore()
    rng = random.Random(0)
    store.results = {cs.name: fake_result(study, cs, rng) for cs in final.cell_status}
    done = json.loads(json.dumps(final.model_dump(by_alias=True, exclude_none=True, mode="json")))
    op = handlers.Effects(cluster, store, reconcile.Settings(default_image="img:1"))
    op.reconcile(body(doc, done), T0)
    assert sorted(u.rsplit("/", 1)[-1] for u in store.written) == ["results.json", "scaling-curves.png"]
    art = cluster.status["artifacts"]
    assert art["results"].endswith("/results.json") and art["plot"].endswith("/scaling-curves.png") and art["digest"]
    assert cluster.status["mlflow"]["experiment"].endswith("/cxr-local")
    patches = cluster.patches
    op.reconcile(body(doc, cluster.status), T0 + dt.timedelta(minutes=5))
    assert len(store.written) == 2, "current documents are not rewritten"
    assert cluster.patches == patches, "an unchanged status is not patched again"

