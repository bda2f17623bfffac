"""A study on a shared GPU cluster behind Kueue: RayJobs are created suspended and labelled with the
LocalQueue, wait beyond the quota, and a preempted job resumes without using up a retry."""

from __future__ import annotations

from tests.cluster.conftest import Cluster, small_study, wait_for
from tests.cluster.test_faults import assert_one_job_per_cell_stage_attempt
from tests.support.kueue import QUEUE_LABEL, FakeKueue


def test_kueue_admits_within_quota_preempts_one_and_the_study_completes(cluster: Cluster, operator,
                                                                        tmp_path) -> None:
    kueue = FakeKueue(cluster.server, queue="gpu-team", quota=2, preempt=1, preempt_after_s=0.1,
                      victim=lambda name: name.endswith("-pt"))
    cluster.kuberay.behaviour.run_s = 0.4  # long enough to be preempted mid-run
    task = cluster.api.spawn(kueue.run())
    try:
        cluster.apply(small_study(tmp_path, queueName="gpu-team", priorityClassName="research-low"))
        # 4 cells may run at once (maxConcurrentCells), Kueue's quota holds 2 of them back
        wait_for(lambda: (cluster.status("grid").get("cells") or {}).get("queued", 0) >= 1,
                 what="a cell waiting for admission")
        queued = next(c for c in cluster.status("grid")["cellStatus"] if c.get("jobPhase") == "Suspended")
        assert "waiting for Kueue LocalQueue 'gpu-team' to admit it" in queued["message"]
        cluster.kubectl("wait", "--for=condition=Succeeded", "scalingstudy/grid", "--timeout=120s", timeout=130)
    finally:
        task.cancel()
    assert not kueue.errors, kueue.errors
    status = cluster.status("grid")
    jobs = {j["metadata"]["name"]: j for j in cluster.rayjobs()}
    assert jobs and all(j["metadata"]["labels"][QUEUE_LABEL] == "gpu-team" for j in jobs.values())
    assert kueue.admitted_peak <= 2 and len(kueue.admissions) == len(cluster.created_rayjobs()) + 1
    # the preempted pretraining ran twice on the same RayJob: no new attempt, no retry, counted and posted
    [victim] = kueue.preempted
    assert cluster.kuberay.starts[victim] == 2 and cluster.kuberay.finished[victim] == "SUCCEEDED"
    by_stage = assert_one_job_per_cell_stage_attempt(cluster)
    assert all(tries == [0] for tries in by_stage.values()), by_stage
    cell = next(c for c in status["cellStatus"] if c["name"] == victim.removesuffix("-pt"))
    assert cell["preemptions"] == 1 and all(h["failures"] == 0 for h in cell["history"])
    events = cluster.kubectl("get", "events", "-o", "jsonpath={range .items[*]}{.reason}{'\\n'}{end}").split()
    assert events.count("Preempted") == 1 and "AttemptFailed" not in events
