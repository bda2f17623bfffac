"""An adaptive study against the real operator process: it runs to Succeeded through the rounds its
design chooses, and a kill -9 between a result and the decision it leads to changes nothing: the
restarted operator chooses the same sizes and creates no RayJob twice."""

from __future__ import annotations

from typing import Any

from tests.cluster.conftest import Cluster, small_study, wait_for
from tests.cluster.test_faults import assert_one_job_per_cell_stage_attempt
from tests.support.operator_process import OperatorProcess

DESIGN = {"min": 100, "max": 800, "initial": 3, "grid": 7, "maxCells": 5, "target": "exponent",
          "task": "findings", "relativeWidth": 0.001}  # unreachable: the design spends its 5 cells


def adaptive_study(tmp, name: str) -> dict[str, Any]:
    doc = small_study(tmp, name=name)
    del doc["spec"]["sizes"]
    doc["spec"]["encoders"] = doc["spec"]["encoders"][:1]
    doc["spec"]["adaptive"] = DESIGN
    return doc


def decisions(cluster: Cluster, name: str) -> list[list[int]]:
    (d,) = cluster.status(name)["design"]
    return [r["sizes"] for r in d["decisions"]]


def events_of(cluster: Cluster, name: str, reason: str) -> list[str]:
    out = cluster.kubectl("get", "events", "-o", "jsonpath={range .items[*]}{.involvedObject.name}|{.reason}|"
                          "{.message}{'\\n'}{end}")
    return [line for line in out.splitlines() if line.startswith(f"{name}|{reason}|")]


def test_an_adaptive_study_survives_kill_9_between_a_result_and_its_decision(cluster: Cluster, tmp_path) -> None:
    op = OperatorProcess(cluster.kubeconfig, tmp_path / "operator.log")
    op.start()
    try:
        # undisturbed: the rounds the design chooses from these (deterministic) results
        cluster.apply(adaptive_study(tmp_path, "calm"))
        cluster.kubectl("wait", "--for=condition=Succeeded", "scalingstudy/calm", "--timeout=120s", timeout=130)
        calm = decisions(cluster, "calm")
        (d,) = cluster.status("calm")["design"]
        assert d["state"] == "Stopped" and d["stopReason"] == "BudgetSpent" and d["cells"] == 5, d
        assert calm[0] == [100, 283, 800] and sum(len(r) for r in calm) == 5 and len(calm) >= 2
        assert len(events_of(cluster, "calm", "SizesChosen")) == len(calm)
        assert len(events_of(cluster, "calm", "DesignStopped")) == 1

        # the same study; the operator dies while round 0's last evaluation finishes
        held = "kill-dino-800"
        cluster.kuberay.behaviour.hold = lambda cell: cell.cell == held and cell.stage == "evaluate"
        cluster.apply(adaptive_study(tmp_path, "kill"))

        def only_held_left() -> bool:
            cells = (cluster.study("kill") or {}).get("status", {}).get("cellStatus", [])
            return len(cells) == 4 and all(c["state"] == "Succeeded" for c in cells if c["name"] != held)

        wait_for(only_held_left, what="round 0 done but one evaluation", on_timeout=op.tail)
        op.kill9()
        cluster.kuberay.behaviour.hold = lambda cell: False
        wait_for(lambda: cluster.kuberay.finished.get(f"{held}-ev") == "SUCCEEDED", what="the held evaluation")
        assert len(decisions(cluster, "kill")) == 1, "no decision was made before the kill"
        op.start()
        cluster.kubectl("wait", "--for=condition=Succeeded", "scalingstudy/kill", "--timeout=120s", timeout=130)
    finally:
        op.stop()
    assert decisions(cluster, "kill") == calm, "the restarted operator chose the same sizes"
    by_stage = assert_one_job_per_cell_stage_attempt(cluster)
    assert all(tries == [0] for tries in by_stage.values()), by_stage
    assert len(events_of(cluster, "kill", "SizesChosen")) == len(calm)
    progressing = cluster.condition("kill", "Progressing")
    assert progressing["status"] == "False" and progressing["reason"] == "Finished"
