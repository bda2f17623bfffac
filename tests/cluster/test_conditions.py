"""Conditions and Events a user waits on, against the real operator process (issue 15 a, d, e, f):
a missing credentials Secret, a refused spec change, an invalid spec, attempts kept per stage."""

from __future__ import annotations

import base64
import json
import time
from collections import Counter

from tests.cluster.conftest import Cluster, small_study, wait_for
from tests.conftest import edit
from tests.support.operator_process import OperatorProcess


def reasons(cluster: Cluster, name: str = "grid") -> Counter:
    """Event reasons about one study, as kubectl lists them (kopf posts Events in the background)."""
    events = json.loads(cluster.kubectl("get", "events", "-o", "json"))["items"]
    return Counter(e["reason"] for e in events if e["involvedObject"]["name"] == name)


def ready(cluster: Cluster, reason: str, name: str = "grid") -> dict:
    return wait_for(lambda: (c := cluster.condition(name, "Ready")) and c["reason"] == reason and c,
                    what=f"Ready reason {reason}", on_timeout=lambda: json.dumps(cluster.status(name))[:3000])


def test_a_missing_credentials_secret_is_reported_once_and_the_study_starts_when_it_appears(
        cluster: Cluster, operator: OperatorProcess, tmp_path) -> None:
    doc = small_study(tmp_path)
    doc["spec"]["dataset"]["credentialsSecret"] = "cxr-s3"
    cluster.apply(doc)
    cond = ready(cluster, "SecretNotFound")
    assert cond["status"] == "False"
    assert "spec.dataset.credentialsSecret" in cond["message"] and "cxr-s3" in cond["message"]
    wait_for(lambda: reasons(cluster)["SecretNotFound"] >= 1, what="the SecretNotFound Event")
    time.sleep(4)  # several resyncs (1 s in tests)
    assert reasons(cluster)["SecretNotFound"] == 1, "posted once, not on every resync"
    assert not cluster.rayjobs() and operator.alive
    log = operator.log.read_text()
    assert "Traceback" not in log and "will retry" not in log.lower(), operator.tail()
    keys = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    cluster.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cxr-s3", "namespace": "default"},
                   "data": {k: base64.b64encode(v.encode()).decode() for k, v in keys.items()}})
    cluster.kubectl("wait", "--for=condition=Succeeded", "scalingstudy/grid", "--timeout=90s", timeout=100)
    assert cluster.condition("grid", "Ready")["status"] == "True"
    assert cluster.status("grid")["progress"] == "8/8"


def test_a_refused_spec_change_posts_one_event_per_generation_even_across_restarts(cluster: Cluster,
                                                                                    tmp_path) -> None:
    op = OperatorProcess(cluster.kubeconfig, tmp_path / "operator.log")
    with op:
        cluster.apply(small_study(tmp_path))
        cluster.kubectl("wait", "--for=condition=Succeeded", "scalingstudy/grid", "--timeout=60s", timeout=70)
        doc = small_study(tmp_path)
        doc["spec"]["computeBudget"]["steps"] = 80
        cluster.apply(doc)
        assert "spec.computeBudget" in ready(cluster, "SpecChangeRefused")["message"]
        wait_for(lambda: reasons(cluster)["SpecChangeRefused"] >= 1, what="the SpecChangeRefused Event")
        time.sleep(4)
        assert reasons(cluster)["SpecChangeRefused"] == 1, reasons(cluster)
    with op:  # a restarted operator reads "already posted" back from the status
        time.sleep(4)
        assert reasons(cluster)["SpecChangeRefused"] == 1, reasons(cluster)
        doc["spec"]["computeBudget"]["steps"] = 90  # a new generation is refused anew
        cluster.apply(doc)
        wait_for(lambda: reasons(cluster)["SpecChangeRefused"] == 2, what="a second Event for generation 3")
        time.sleep(3)
        assert reasons(cluster)["SpecChangeRefused"] == 2


def test_an_invalid_spec_is_failed_for_kubectl_wait_and_get_and_a_fix_resumes(cluster: Cluster, operator,
                                                                              tmp_path) -> None:
    good = small_study(tmp_path)
    cluster.apply(edit(good, {"spec.sizes": [200, 100, 400]}))
    out = cluster.kubectl("wait", "--for=condition=Failed", "scalingstudy/grid", "--timeout=30s", timeout=40)
    assert "condition met" in out
    failed = cluster.condition("grid", "Failed")
    assert failed["reason"] == "InvalidSpec" and "spec.sizes" in failed["message"]
    row = cluster.kubectl("get", "ss", "grid", "--no-headers").split()
    assert row[0] == "grid" and row[1] == "False" and "Failed" in row, row
    wide = cluster.kubectl("get", "ss", "grid", "-o", "wide")
    assert "REASON" in wide and "InvalidSpec" in wide, wide
    wait_for(lambda: reasons(cluster)["InvalidSpec"] >= 1, what="the InvalidSpec Event")
    time.sleep(3)
    assert reasons(cluster)["InvalidSpec"] == 1, reasons(cluster)
    assert not cluster.rayjobs()
    cluster.apply(good)
    cluster.kubectl("wait", "--for=condition=Succeeded", "scalingstudy/grid", "--timeout=60s", timeout=70)
    assert cluster.condition("grid", "Failed")["status"] == "False"
    assert cluster.status("grid")["phase"] == "Succeeded"
    assert cluster.kubectl("get", "ss", "grid", "--no-headers").split()[1:5] == [
        "True", "8/8", cluster.status("grid")["best"], "Succeeded"]


def test_a_pretrain_failure_stays_in_the_cell_status_after_evaluation(cluster: Cluster, operator,
                                                                      tmp_path) -> None:
    cluster.kuberay.behaviour.fail = lambda name, cell: (cell.cell == "grid-dino-100" and cell.stage == "pretrain"
                                                         and cell.attempt == 0)
    cluster.apply(small_study(tmp_path, retries=2))
    cluster.kubectl("wait", "--for=condition=Succeeded", "scalingstudy/grid", "--timeout=90s", timeout=100)
    cell = next(c for c in cluster.status("grid")["cellStatus"] if c["name"] == "grid-dino-100")
    assert cell["stage"] == "evaluate" and cell["state"] == "Succeeded"
    history = {h["stage"]: h for h in cell["history"]}
    assert set(history) == {"pretrain", "evaluate"}
    assert (history["pretrain"]["attempts"], history["pretrain"]["failures"]) == (2, 1)
    assert "AppFailed" in history["pretrain"]["lastMessage"]
    assert (history["evaluate"]["attempts"], history["evaluate"]["failures"]) == (1, 0)
