"""Faults against the real operator process: kill -9, failing RayJobs, TTL deletion, bad specs."""

from __future__ import annotations

import random
import re
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from tests.cluster.conftest import Cluster, small_study, wait_for
from tests.conftest import EXAMPLES, edit
from tests.support.kuberay import fraction
from tests.support.operator_process import OperatorProcess

CORPUS = yaml.safe_load((Path(__file__).parent.parent / "unit" / "bad_specs.yaml").read_text())
JOB = re.compile(r"^(?P<cell>.+?)-(?P<stage>prep|pt|ev)(?:-a(?P<attempt>\d+))?$")


def attempts(names: list[str]) -> dict[tuple[str, str], list[int]]:
    """(cell, stage) -> attempts in creation order, from every RayJob name the API server ever created."""
    out: dict[tuple[str, str], list[int]] = {}
    for name in names:
        m = JOB.match(name)
        assert m, name
        out.setdefault((m["cell"], m["stage"]), []).append(int(m["attempt"] or 0))
    return out


def assert_one_job_per_cell_stage_attempt(cluster: Cluster) -> dict[tuple[str, str], list[int]]:
    names = cluster.created_rayjobs()
    dupes = [n for n, k in Counter(names).items() if k > 1]
    assert not dupes, f"RayJobs created more than once: {dupes}"
    by_stage = attempts(names)
    for key, tries in by_stage.items():
        assert tries == list(range(len(tries))), f"{key}: attempts {tries}"
    return by_stage


def succeeded(cluster: Cluster) -> bool:
    cond = cluster.condition("grid", "Succeeded")
    return bool(cond and cond["status"] == "True")


def test_kill_9_at_random_points_completes_with_one_rayjob_per_cell_stage_attempt(cluster: Cluster,
                                                                                   tmp_path) -> None:
    cluster.kuberay.behaviour.run_s = 0.6  # long enough that kills land in every phase of the study
    kills = [0]
    # the largest cells' evaluations wait for the tenth kill, so a fast machine cannot finish early
    cluster.kuberay.behaviour.hold = lambda cell: cell.stage == "evaluate" and cell.size == 800 and kills[0] < 10
    op = OperatorProcess(cluster.kubeconfig, tmp_path / "operator.log")
    rng = random.Random(7)
    cluster.apply(small_study(tmp_path, sizes=(100, 200, 400, 800)))
    try:
        while kills[0] < 12 and not succeeded(cluster):
            op.start(wait=False)
            time.sleep(rng.uniform(0.3, 2.5))  # kopf start-up included: some kills land before it is live
            op.kill9()
            kills[0] += 1
        assert kills[0] >= 10
        op.start()
        wait_for(lambda: succeeded(cluster), timeout=120, what="Succeeded after the kills", on_timeout=op.tail)
    finally:
        op.stop()
    by_stage = assert_one_job_per_cell_stage_attempt(cluster)
    # nothing failed, so every cell and stage ran exactly once
    assert all(tries == [0] for tries in by_stage.values()), by_stage
    assert Counter(stage for _, stage in by_stage) == {"prep": 1, "pt": 8, "ev": 10}
    assert cluster.status("grid")["progress"] == "10/10"


def test_thirty_percent_of_rayjobs_fail_and_are_retried(cluster: Cluster, operator, tmp_path) -> None:
    cluster.kuberay.behaviour.fail = fraction(0.3, max_attempt=1)
    cluster.apply(small_study(tmp_path, sizes=(100, 200, 400, 800), retries=2))
    cluster.kubectl("wait", "--for=condition=Succeeded", "scalingstudy/grid", "--timeout=120s", timeout=130)
    by_stage = assert_one_job_per_cell_stage_attempt(cluster)
    failed = [n for n, s in cluster.kuberay.finished.items() if s == "FAILED"]
    assert len(failed) >= 3, "the draw should fail some attempts"
    retried = {k: v for k, v in by_stage.items() if len(v) > 1}
    assert sum(len(v) - 1 for v in retried.values()) == len(failed)
    reasons = Counter(e["reason"] for e in cluster.server.objects("v1/events"))
    assert reasons["AttemptFailed"] == len(failed) and reasons["CellFailed"] == 0
    assert f'radscale_rayjob_retries_total{{namespace="default",study="grid"}} {len(failed)}.0' in operator.metrics()


def test_a_cell_that_keeps_failing_fails_the_study_but_keeps_partial_curves(cluster: Cluster, operator,
                                                                            tmp_path) -> None:
    cluster.kuberay.behaviour.fail = lambda name, cell: cell.cell == "grid-unicl-800" and cell.stage == "pretrain"
    cluster.apply(small_study(tmp_path, sizes=(100, 200, 400, 800), retries=1))
    cluster.kubectl("wait", "--for=condition=Failed", "scalingstudy/grid", "--timeout=120s", timeout=130)
    status = cluster.status("grid")
    cell = next(c for c in status["cellStatus"] if c["name"] == "grid-unicl-800")
    assert cell["state"] == "Failed" and cell["attempts"] == 2 and "AppFailed" in cell["message"]
    assert status["progress"] == "9/10" and status["phase"] == "Failed"
    assert {(f["encoder"], f["task"]) for f in status["fits"]} >= {("unicl", "findings"), ("dino", "findings")}
    assert "grid-unicl-800" in cluster.condition("grid", "Failed")["message"]


def test_rayjobs_deleted_by_ttl_right_after_completion_keep_their_results(cluster: Cluster, operator,
                                                                          tmp_path) -> None:
    cluster.kuberay.behaviour.ttl_delete = True
    cluster.apply(small_study(tmp_path))
    cluster.kubectl("wait", "--for=condition=Succeeded", "scalingstudy/grid", "--timeout=120s", timeout=130)
    assert not cluster.rayjobs(), "every RayJob was deleted by its TTL"
    by_stage = assert_one_job_per_cell_stage_attempt(cluster)
    assert all(tries == [0] for tries in by_stage.values()), f"a TTL deletion was taken for a failure: {by_stage}"
    assert cluster.status("grid")["progress"] == "8/8"


ACCEPTED = [c for c in CORPUS if c.get("crd") == "accept"]


def test_bad_specs_past_the_schema_get_a_condition_naming_the_field_and_no_crash_loop(cluster: Cluster, operator,
                                                                                      tmp_path) -> None:
    assert ACCEPTED, "the corpus has cases only the operator can catch"
    base = yaml.safe_load((EXAMPLES / "study.yaml").read_text())
    names = []
    for i, case in enumerate(ACCEPTED):
        doc = edit({**base, "metadata": {"name": f"bad-{i}"}}, case.get("set"), case.get("delete"))
        names.append(doc["metadata"]["name"])
        cluster.apply(doc)
    for name, case in zip(names, ACCEPTED, strict=True):
        ready = wait_for(lambda n=name: (c := cluster.condition(n, "Ready")) and c, what=case["name"])
        assert ready["status"] == "False" and ready["reason"] == "InvalidSpec"
        assert case["field"] in ready["message"], (case["name"], ready["message"])
    time.sleep(3)  # several resync ticks: still alive, no RayJobs, no handler retries
    assert operator.alive and not cluster.rayjobs()
    log = operator.log.read_text()
    assert "Traceback" not in log and "will retry" not in log.lower(), operator.tail()


@pytest.mark.parametrize("case", ACCEPTED[:1], ids=lambda c: c["name"])
def test_fixing_a_bad_spec_starts_the_study(cluster: Cluster, operator, tmp_path, case) -> None:
    good = small_study(tmp_path)
    bad = edit(good, {"spec.sizes": [200, 100, 400]})
    cluster.apply(bad)
    wait_for(lambda: (c := cluster.condition("grid", "Ready")) and c["status"] == "False", what="InvalidSpec")
    cluster.apply(good)
    cluster.kubectl("wait", "--for=condition=Succeeded", "scalingstudy/grid", "--timeout=60s", timeout=70)
