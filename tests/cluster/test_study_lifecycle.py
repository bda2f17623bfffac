"""Scenarios: a study applied with kubectl runs to Succeeded under the real operator process."""

from __future__ import annotations

import json
from collections import Counter

from tests.cluster.conftest import Cluster, small_study, wait_for
from tests.support.kuberay import metric


def succeeded(cluster: Cluster, name: str) -> bool:
    cond = cluster.condition(name, "Succeeded")
    return bool(cond and cond["status"] == "True")


def test_grid_with_baselines_runs_to_succeeded(cluster: Cluster, operator, tmp_path) -> None:
    cluster.apply(small_study(tmp_path))
    out = cluster.kubectl("wait", "--for=condition=Succeeded", "scalingstudy/grid", "--timeout=120s",
                          timeout=130)
    assert "condition met" in out
    status = cluster.status("grid")
    # 2 encoders x (3 sizes + baseline) cells, each evaluated; non-baselines pretrained first.
    cells = {c["name"]: c for c in status["cellStatus"]}
    assert len(cells) == 8 and all(c["state"] == "Succeeded" for c in cells.values())
    jobs = Counter(n.rsplit("-", 1)[-1] for n in cluster.created_rayjobs())
    assert jobs == {"prep": 1, "pt": 6, "ev": 8}, jobs
    # pipelines read fits and curves by jsonpath
    fits = json.loads(cluster.kubectl("get", "scalingstudy", "grid", "-o", "jsonpath={.status.fits}"))
    assert {(f["encoder"], f["task"]) for f in fits} == {(e, t) for e in ("dino", "unicl")
                                                          for t in ("findings", "lines-tubes")}
    assert all(f["r2"] > 0.9 for f in fits), fits
    for by_metric in status["results"].values():
        for encoder, points in by_metric["auroc"].items():
            assert sorted(p[0] for p in points) == [0, 100, 200, 400]  # the baseline is size 0
            for size, value, low, high in points:
                assert abs(value - metric(encoder, int(size))) < 1e-9 and low < value < high
    # the operator itself wrote the results and the figure, as `radscale run` does
    art = status["artifacts"]
    assert art["results"] == f"file://{tmp_path}/out/grid/results.json" and art["digest"]
    results = json.loads((tmp_path / "out" / "grid" / "results.json").read_text())
    assert sorted(results["cells"]) == sorted(cells) and results["status"]["fits"] == status["fits"]
    assert (tmp_path / "out" / "grid" / "scaling-curves.png").read_bytes()[:4] == b"\x89PNG"
    # kubectl get renders the CRD's printer columns: Succeeded, Cells, Best
    row = cluster.kubectl("get", "scalingstudies", "--no-headers").split()
    assert row[:4] == ["grid", "True", "8/8", status["best"]], row


def results_sizes(cluster: Cluster, name: str) -> set[int]:
    curves = cluster.status(name).get("results", {})
    return {int(p[0]) for by_metric in curves.values() for by_enc in by_metric.values()
            for pts in by_enc.values() for p in pts}


def test_partial_curves_appear_while_the_study_runs(cluster: Cluster, operator, tmp_path) -> None:
    cluster.kuberay.behaviour.hold = lambda cell: cell.size == 800  # the largest size stays Running
    cluster.apply(small_study(tmp_path, sizes=(100, 200, 400, 800)))
    wait_for(lambda: cluster.status("grid").get("progress") == "8/10", what="all but the held cells",
             on_timeout=lambda: json.dumps(cluster.status("grid"))[:3000])
    status = cluster.status("grid")
    assert results_sizes(cluster, "grid") == {0, 100, 200, 400}
    assert status["phase"] == "Running" and cluster.condition("grid", "Succeeded")["status"] == "False"
    assert len(status["fits"]) == 4, "fits appear as soon as a curve has three sizes"
    running = [c for c in status["cellStatus"] if c["state"] == "Running"]
    assert {c["size"] for c in running} == {800}
    assert all(c["rayJob"].endswith("-pt") and c["dashboardURL"].endswith(":8265") for c in running)
    cluster.kuberay.behaviour.hold = lambda cell: False
    cluster.kubectl("wait", "--for=condition=Succeeded", "scalingstudy/grid", "--timeout=60s", timeout=70)
    assert results_sizes(cluster, "grid") == {0, 100, 200, 400, 800}


def test_suspend_deletes_running_children_and_resume_finishes(cluster: Cluster, operator, tmp_path) -> None:
    cluster.kuberay.behaviour.hold = lambda cell: cell.stage == "pretrain" and cell.size == 400
    cluster.apply(small_study(tmp_path))
    wait_for(lambda: cluster.status("grid").get("progress") == "6/8", what="all but the held cells")
    before = list(cluster.created_rayjobs())
    cluster.kubectl("patch", "scalingstudy", "grid", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    cluster.kubectl("wait", "--for=condition=Suspended", "scalingstudy/grid", "--timeout=30s", timeout=40)
    wait_for(lambda: not [j for j in cluster.rayjobs() if "-400-" in j["metadata"]["name"]],
             what="running RayJobs deleted")
    status = cluster.status("grid")
    states = {c["name"]: c["state"] for c in status["cellStatus"]}
    assert sorted(s for s in states.values() if s != "Succeeded") == ["Suspended", "Suspended"]
    assert status["phase"] == "Suspended" and status["progress"] == "6/8"  # finished work is kept

    cluster.kuberay.behaviour.hold = lambda cell: False
    cluster.kubectl("patch", "scalingstudy", "grid", "--type=merge", "-p", '{"spec":{"suspend":false}}')
    cluster.kubectl("wait", "--for=condition=Succeeded", "scalingstudy/grid", "--timeout=60s", timeout=70)
    new = cluster.created_rayjobs()[len(before):]
    # the two suspended pretrain cells restart as new attempts (resuming from checkpoints), then evaluate
    assert sorted(new) == ["grid-dino-400-ev", "grid-dino-400-pt-a1", "grid-unicl-400-ev", "grid-unicl-400-pt-a1"]


def test_extending_a_finished_study_adds_only_new_cells(cluster: Cluster, operator, tmp_path) -> None:
    cluster.apply(small_study(tmp_path))
    cluster.kubectl("wait", "--for=condition=Succeeded", "scalingstudy/grid", "--timeout=60s", timeout=70)
    before = list(cluster.created_rayjobs())
    cluster.apply(small_study(tmp_path, sizes=(100, 200, 400, 800)))
    assert cluster.study("grid")["metadata"]["generation"] == 2
    # kubectl wait compares the condition's observedGeneration with the object's generation
    cluster.kubectl("wait", "--for=condition=Succeeded", "scalingstudy/grid", "--timeout=60s", timeout=70)
    assert cluster.status("grid")["observedGeneration"] == 2
    assert sorted(cluster.created_rayjobs()[len(before):]) == [
        "grid-dino-800-ev", "grid-dino-800-pt", "grid-unicl-800-ev", "grid-unicl-800-pt"]
    assert cluster.status("grid")["progress"] == "10/10"


def test_a_change_that_invalidates_finished_cells_is_refused(cluster: Cluster, operator, tmp_path) -> None:
    cluster.apply(small_study(tmp_path))
    cluster.kubectl("wait", "--for=condition=Succeeded", "scalingstudy/grid", "--timeout=60s", timeout=70)
    before = list(cluster.created_rayjobs())
    doc = small_study(tmp_path)
    doc["spec"]["computeBudget"]["steps"] = 80
    cluster.apply(doc)
    ready = wait_for(lambda: (c := cluster.condition("grid", "Ready")) and c["status"] == "False" and c,
                     what="Ready=False")
    assert "spec.computeBudget" in ready["message"]
    assert cluster.created_rayjobs() == before and cluster.status("grid")["progress"] == "8/8"


def test_deleting_a_study_deletes_its_running_children(cluster: Cluster, operator, tmp_path) -> None:
    cluster.kuberay.behaviour.hold = lambda cell: cell.stage == "pretrain"
    cluster.apply(small_study(tmp_path))
    wait_for(lambda: len(cluster.rayjobs()) >= 3, what="running children")
    cluster.kubectl("delete", "scalingstudy", "grid", "--timeout=30s", timeout=40)
    wait_for(lambda: not cluster.rayjobs() and cluster.study("grid") is None, what="children and study gone")


def test_events_and_metrics(cluster: Cluster, operator, tmp_path) -> None:
    cluster.apply(small_study(tmp_path))
    cluster.kubectl("wait", "--for=condition=Succeeded", "scalingstudy/grid", "--timeout=60s", timeout=70)
    def reasons() -> Counter:  # kopf posts Events in the background, after the status patch
        events = json.loads(cluster.kubectl("get", "events", "-o", "json"))["items"]
        return Counter(e["reason"] for e in events if e["involvedObject"]["name"] == "grid")

    wait_for(lambda: reasons()["StudySucceeded"] == 1, what="the StudySucceeded Event")
    got = reasons()
    assert got["JobCreated"] == 15 and got["StageSucceeded"] == 15 and got["StudySucceeded"] == 1, got
    text = operator.metrics()
    assert 'radscale_cells{namespace="default",state="Succeeded",study="grid"} 8.0' in text
    assert "radscale_reconcile_seconds_count" in text


def test_results_on_s3_are_read_with_the_studys_credentials_secret(cluster: Cluster, tmp_path, s3_endpoint) -> None:
    import base64

    import s3fs

    from tests.support.operator_process import OperatorProcess

    keys = {"AWS_ACCESS_KEY_ID": "radscale", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}
    s3fs.S3FileSystem(endpoint_url=s3_endpoint, key="x", secret="y").mkdir("cxr-results")
    cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cxr-s3", "namespace": "default"},
                   "data": {k: base64.b64encode(v.encode()).decode() for k, v in keys.items()}})
    cluster.kuberay.behaviour.options = {"endpoint_url": s3_endpoint, "key": "trainer", "secret": "pod-env"}
    doc = small_study(tmp_path, output="s3://cxr-results/grid")
    doc["spec"]["dataset"].update(endpoint=s3_endpoint, credentialsSecret="cxr-s3")
    # the operator has no AWS keys of its own: only the Secret's can reach the store
    op = OperatorProcess(cluster.kubeconfig, tmp_path / "operator.log",
                         env={"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None})
    with op:
        cluster.apply(doc)
        cluster.kubectl("wait", "--for=condition=Succeeded", "scalingstudy/grid", "--timeout=60s", timeout=70)
    assert results_sizes(cluster, "grid") == {0, 100, 200, 400}
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, key="x", secret="y")
    assert len(fs.glob("cxr-results/grid/*/result.json")) == 8
