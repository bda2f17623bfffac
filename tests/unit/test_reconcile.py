"""The pure reconcile core, transition by transition, without a server; then whole simulated studies."""

from __future__ import annotations

import datetime as dt
import json
import random

import numpy as np
import pytest

from radscale.cells import CellResult, MetricValue, TaskResult
from radscale.operator import api, reconcile, results, validation
from radscale.operator.reconcile import CreateJob, DeleteJob, Observed
from tests.conftest import EXAMPLES, edit, load_yaml

T0 = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
CFG = reconcile.Settings(backoff_base_s=30, backoff_max_s=600, vanish_grace_s=60)


def study_of(doc, status=None, generation=1) -> api.ScalingStudy:
    doc = json.loads(json.dumps(doc))
    doc["metadata"].update({"uid": "uid-1", "generation": generation, "namespace": "ns"})
    s = validation.load_study(doc)
    return s.model_copy(update={"status": status})


# The example's grid, pinned here so that demo tuning of the example does not move these tables.
GRID = {"spec.sizes": [100, 200, 400, 800], "spec.computeBudget.steps": 40, "spec.computeBudget.globalBatchSize": 32,
        "spec.replicates": 1}


def local(**changes):
    return edit(load_yaml(EXAMPLES / "study-local.yaml"), {**GRID, **changes})


def creates(out):
    return [a.name for a in out.actions if isinstance(a, CreateJob)]


def deletes(out):
    return [a.name for a in out.actions if isinstance(a, DeleteJob)]


def job(deployment, job_status=None, **extra):
    status = {"jobDeploymentStatus": deployment, **({"jobStatus": job_status} if job_status else {}), **extra}
    return {"metadata": {"name": "x"}, "status": status}


def cell(status, name):
    return next(c for c in status.cell_status if c.name == name)


def cond(status, type_):
    return next(c for c in status.conditions if c.type == type_)


def test_a_new_study_prepares_first():
    out = reconcile.reconcile(study_of(local()), Observed(jobs={}), T0, CFG)
    assert creates(out) == ["cxr-local-prep"]
    assert out.status.phase == api.Phase.PREPARING and out.status.progress == "0/10"
    assert cond(out.status, "Ready").status == "True" and out.status.observed_generation == 1
    assert out.status.prepare.state == api.CellState.RUNNING


def test_existing_shards_skip_prepare_and_cells_start_up_to_the_cap():
    out = reconcile.reconcile(study_of(local()), Observed(jobs={}, prepared=True), T0, CFG)
    assert out.status.prepare.state == api.CellState.SUCCEEDED and "reused" in out.status.prepare.message
    assert creates(out) == ["cxr-local-dino-base-ev", "cxr-local-dino-100-pt"]  # maxConcurrentCells: 2
    assert out.status.phase == api.Phase.RUNNING and out.status.cells.running == 2


def run_once(doc, jobs, status=None, now=T0, prepared=True, results=None, generation=1):
    return reconcile.reconcile(study_of(doc, status, generation), Observed(jobs=jobs, prepared=prepared,
                                                                           results=results or {}), now, CFG)


def test_pretrain_success_starts_evaluation_in_the_same_pass():
    first = run_once(local(), {})
    out = run_once(local(), {"cxr-local-dino-base-ev": job("Running", "RUNNING"),
                             "cxr-local-dino-100-pt": job("Complete", "SUCCEEDED")}, first.status)
    c = cell(out.status, "cxr-local-dino-100")
    assert c.stage == api.Stage.EVALUATE and c.state == api.CellState.RUNNING
    assert creates(out) == ["cxr-local-dino-100-ev"]


def test_job_status_running_with_a_failed_deployment_is_a_failure_and_retries_with_backoff():
    first = run_once(local(), {})
    jobs = {"cxr-local-dino-base-ev": job("Running", "RUNNING"),
            "cxr-local-dino-100-pt": job("Failed", "RUNNING", reason="DeadlineExceeded", message="too slow")}
    out = run_once(local(), jobs, first.status)
    c = cell(out.status, "cxr-local-dino-100")
    assert c.state == api.CellState.RETRYING and c.failures == 1 and "DeadlineExceeded: too slow" in c.message
    assert c.not_before == "2026-11-27T12:00:30Z"
    # the freed slot goes to the next pending cell, not to the backing-off one
    assert creates(out) == ["cxr-local-dino-200-pt"]
    jobs["cxr-local-dino-200-pt"] = job("Running", "RUNNING")
    jobs["cxr-local-dino-base-ev"] = job("Complete", "SUCCEEDED")
    early = run_once(local(), jobs, out.status, now=T0 + dt.timedelta(seconds=10))
    assert "cxr-local-dino-100-pt-a1" not in creates(early)
    later = run_once(local(), jobs, out.status, now=T0 + dt.timedelta(seconds=31))
    assert "cxr-local-dino-100-pt-a1" in creates(later)
    manifest = next(a.manifest for a in later.actions if isinstance(a, CreateJob)
                    and a.name == "cxr-local-dino-100-pt-a1")
    assert manifest["metadata"]["labels"]["radscale.io/attempt"] == "1"
    assert manifest["spec"]["backoffLimit"] == 0


def test_retries_run_out_then_the_cell_fails_and_others_go_on():
    doc = local(**{"spec.retries": 0})
    first = run_once(doc, {})
    out = run_once(doc, {"cxr-local-dino-base-ev": job("ValidationFailed", reason="ValidationFailed",
                                                       message="bad spec"),
                         "cxr-local-dino-100-pt": job("Running", "RUNNING")}, first.status)
    c = cell(out.status, "cxr-local-dino-base")
    assert c.state == api.CellState.FAILED and "bad spec" in c.message and c.attempts == 1
    assert creates(out) == ["cxr-local-dino-200-pt"]
    assert out.status.phase == api.Phase.RUNNING and out.status.cells.failed == 1
    assert any(isinstance(a, reconcile.Event) and a.reason == "CellFailed" for a in out.actions)


def test_terminal_state_survives_the_job_being_deleted_and_is_never_rerun():
    first = run_once(local(), {})
    done = run_once(local(), {"cxr-local-dino-base-ev": job("Complete", "SUCCEEDED"),
                              "cxr-local-dino-100-pt": job("Running", "RUNNING")}, first.status)
    assert cell(done.status, "cxr-local-dino-base").state == api.CellState.SUCCEEDED
    # TTL deleted the RayJob: nothing changes for that cell, and it is not re-created
    again = run_once(local(), {"cxr-local-dino-100-pt": job("Running", "RUNNING")}, done.status,
                     now=T0 + dt.timedelta(hours=1))
    assert cell(again.status, "cxr-local-dino-base").state == api.CellState.SUCCEEDED
    assert "cxr-local-dino-base-ev" not in creates(again)


def test_a_job_that_vanishes_counts_as_failed_unless_its_result_exists():
    first = run_once(local(), {})
    soon = run_once(local(), {}, first.status, now=T0 + dt.timedelta(seconds=10))
    assert cell(soon.status, "cxr-local-dino-100").state == api.CellState.RUNNING, "within the grace period"
    late = run_once(local(), {}, first.status, now=T0 + dt.timedelta(minutes=5))
    assert cell(late.status, "cxr-local-dino-100").state == api.CellState.RETRYING
    assert "RayJobLost" in cell(late.status, "cxr-local-dino-100").message
    written = {"cxr-local-dino-100": CellResult(study="cxr-local", cell="cxr-local-dino-100", pretrain={
        "steps": 40, "epochs": 12.8, "imagesSeen": 1280, "encoder": "file://x/encoder.safetensors"})}
    kept = run_once(local(), {}, first.status, now=T0 + dt.timedelta(minutes=5), results=written)
    assert cell(kept.status, "cxr-local-dino-100").stage == api.Stage.EVALUATE


def test_suspend_deletes_running_children_and_resume_starts_a_new_attempt():
    first = run_once(local(), {})
    running = {"cxr-local-dino-base-ev": job("Running", "RUNNING"), "cxr-local-dino-100-pt": job("Running", "RUNNING")}
    sus = run_once(local(**{"spec.suspend": True}), running, first.status, generation=2)
    assert sorted(deletes(sus)) == ["cxr-local-dino-100-pt", "cxr-local-dino-base-ev"] and not creates(sus)
    assert sus.status.phase == api.Phase.SUSPENDED and cond(sus.status, "Suspended").status == "True"
    res = run_once(local(), {}, sus.status, generation=3)
    assert creates(res) == ["cxr-local-dino-base-ev-a1", "cxr-local-dino-100-pt-a1"]
    assert cell(res.status, "cxr-local-dino-100").failures == 0, "a suspension is not a failure"
    assert cond(res.status, "Suspended").status == "False"


def test_dataset_or_budget_changes_after_cells_ran_are_refused():
    first = run_once(local(), {})
    out = run_once(local(**{"spec.computeBudget.steps": 80}), {}, first.status, generation=2)
    ready = cond(out.status, "Ready")
    assert ready.status == "False" and ready.reason == "SpecChangeRefused" and "spec.computeBudget" in ready.message
    assert not creates(out) and not deletes(out)
    out = run_once(local(**{"spec.dataset.split.seed": 9}), {}, first.status, generation=2)
    assert "spec.dataset" in cond(out.status, "Ready").message


def test_adding_sizes_adds_cells_and_keeps_finished_ones():
    first = run_once(local(), {})
    done = run_once(local(), {"cxr-local-dino-base-ev": job("Complete", "SUCCEEDED"),
                              "cxr-local-dino-100-pt": job("Running", "RUNNING")}, first.status)
    grown = run_once(local(**{"spec.sizes": [100, 200, 400, 800, 1200]}),
                     {"cxr-local-dino-100-pt": job("Running", "RUNNING")}, done.status, generation=2)
    names = [c.name for c in grown.status.cell_status]
    assert "cxr-local-dino-1200" in names and "cxr-local-unicl-1200" in names and len(names) == 12
    assert cell(grown.status, "cxr-local-dino-base").state == api.CellState.SUCCEEDED
    assert cond(grown.status, "Ready").status == "True" and grown.status.observed_generation == 2


def test_conditions_move_their_transition_time_only_when_they_flip():
    first = run_once(local(), {})
    later = run_once(local(), {}, first.status, now=T0 + dt.timedelta(seconds=20))
    assert cond(later.status, "Ready").last_transition_time == cond(first.status, "Ready").last_transition_time
    # a refused spec change flips Ready to False: its time moves to the pass that flipped it
    flip_at = T0 + dt.timedelta(seconds=40)
    flipped = run_once(local(**{"spec.computeBudget.steps": 80}), {}, later.status, now=flip_at, generation=2)
    ready = cond(flipped.status, "Ready")
    assert ready.status == "False" and ready.last_transition_time == reconcile._ts(flip_at)
    # still False a pass later: the time stays where it flipped
    again = run_once(local(**{"spec.computeBudget.steps": 80}), {}, flipped.status,
                     now=flip_at + dt.timedelta(seconds=20), generation=2)
    assert cond(again.status, "Ready").last_transition_time == ready.last_transition_time


# ---- whole studies, simulated ----------------------------------------------------------------------


# One shared test set: resample i moves every cell's score alike (plus a little of each cell's own).
TEST_SHIFT = np.random.default_rng(99).normal(0, 0.01, 200)


def fake_result(study, cs, rng) -> CellResult:
    """What the trainer would write: scores that improve with size, with CIs and shared test draws."""
    tasks = {}
    for t in study.spec.evaluation.tasks:
        err = (2.0 * max(cs.size, 50) ** -0.35 + 0.05) * (1.2 if cs.size == 0 else 1.0) + rng.uniform(-0.005, 0.005)
        metric = t.headline_metric
        own = np.random.default_rng([cs.size, cs.replicate, len(t.name)]).normal(0, 0.002, len(TEST_SHIFT))
        draws = (1 - err + TEST_SHIFT + own).round(6).tolist()
        tasks[t.name] = TaskResult(metric=metric, metrics={metric: MetricValue(value=1 - err, ci_low=1 - err - 0.02,
                                                                               ci_high=1 - err + 0.02)},
                                   draws={metric: draws})
    return CellResult(study=study.metadata.name, cell=cs.name, encoder=cs.encoder, size=cs.size, evaluate=tasks)


def simulate(doc, fail_rate=0.0, seed=0, steps=400):
    """Drive the core like the operator would, with a KubeRay that finishes jobs after a while."""
    rng = random.Random(seed)
    jobs, created, written = {}, [], {}
    status, now = None, T0
    for _ in range(steps):
        study = study_of(doc, status)
        out = reconcile.reconcile(study, Observed(jobs=dict(jobs), prepared=False, results=dict(written)), now, CFG)
        status = out.status
        running = sum(1 for j in jobs.values() if j["status"].get("jobDeploymentStatus") == "Running")
        assert running <= study.spec.max_concurrent_cells
        for a in out.actions:
            if isinstance(a, CreateJob):
                assert a.name not in jobs, f"{a.name} created twice"
                jobs[a.name] = {"metadata": a.manifest["metadata"], "status": {"jobDeploymentStatus": "Running",
                                                                               "jobStatus": "RUNNING"}}
                created.append(a.name)
            elif isinstance(a, DeleteJob):
                jobs.pop(a.name, None)
        # KubeRay: each running job finishes (or fails) this tick; finished jobs are TTL-deleted a tick later
        for name, j in list(jobs.items()):
            dep = j["status"]["jobDeploymentStatus"]
            if dep in ("Complete", "Failed"):
                del jobs[name]
                continue
            if rng.random() < fail_rate:
                j["status"] = {"jobDeploymentStatus": "Failed", "jobStatus": "RUNNING", "reason": "NodeLost"}
            else:
                j["status"] = {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}
                labels = j["metadata"]["labels"]
                if labels["radscale.io/stage"] == "evaluate":
                    cs = cell(status, labels["radscale.io/cell"])
                    written[cs.name] = fake_result(study, cs, rng)
        now += dt.timedelta(minutes=10)
        if status.phase in (api.Phase.SUCCEEDED, api.Phase.FAILED):
            break
    return status, created


def test_a_whole_study_runs_to_succeeded_with_curves_and_fits():
    status, created = simulate(local())
    assert status.phase == api.Phase.SUCCEEDED and status.progress == "10/10"
    assert cond(status, "Succeeded").status == "True" and cond(status, "Progressing").status == "False"
    assert len(created) == 1 + 2 * (1 + 4 * 2)  # prepare + per encoder: baseline eval + 4 x (pretrain, eval)
    assert set(status.results) == {"findings", "lines-tubes", "catheter-seg", "tail"}
    pts = status.results["findings"]["auroc"]["dino"]
    assert [p[0] for p in pts] == [0, 100, 200, 400, 800]
    assert {(f.encoder, f.task) for f in status.fits} >= {("dino", "findings"), ("unicl", "tail")}
    f = next(f for f in status.fits if f.encoder == "dino" and f.task == "findings")
    assert f.fitted and f.lack_of_fit is None and f.replicates == 1
    assert 0.2 < f.b < 0.5 and f.ci95["b"].low < f.b < f.ci95["b"].high
    # the baseline (err x 1.2 of size 50) is beaten by size 100 already: "<= 100", never a number below it
    assert f.crossover.outcome == api.CrossoverOutcome.BELOW_SMALLEST and f.crossover.size == 100
    assert f.crossover.ci95 is not None and f.crossover.ci95.low >= 100
    assert status.best in ("dino", "unicl", "tie")
    assert {b.task for b in status.best_per_task} == set(status.results)


def test_replicates_add_cells_with_deterministic_names_and_one_point_per_size():
    status, created = simulate(local(**{"spec.replicates": 2}))
    assert status.phase == api.Phase.SUCCEEDED and status.progress == "20/20"
    names = {c.name for c in status.cell_status}
    assert "cxr-local-dino-100" in names and "cxr-local-dino-100-r1" in names and "cxr-local-dino-base-r1" in names
    assert {c.replicate for c in status.cell_status} == {0, 1}
    assert len(created) == len(set(created)) == 1 + 2 * 2 * (1 + 4 * 2)
    pts = status.results["findings"]["auroc"]["dino"]
    assert [p[0] for p in pts] == [0, 100, 200, 400, 800], "one point per size: the replicates' mean"
    f = next(f for f in status.fits if f.encoder == "dino" and f.task == "findings")
    assert f.replicates == 2 and f.draws == results.N_BOOT


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_thirty_percent_of_jobs_fail_and_the_study_still_completes(seed):
    doc = local(**{"spec.retries": 6})
    status, created = simulate(doc, fail_rate=0.3, seed=seed)
    assert status.phase == api.Phase.SUCCEEDED, [c.message for c in status.cell_status if c.message]
    assert len(created) == len(set(created)), "one RayJob per cell, stage and attempt"
    assert any("-a" in n for n in created), "some attempts were retries"


def test_failures_beyond_retries_end_failed_with_partial_curves():
    status, _ = simulate(local(**{"spec.retries": 0}), fail_rate=0.3, seed=7)
    assert status.phase == api.Phase.FAILED
    failed = cond(status, "Failed")
    assert failed.status == "True" and failed.message.startswith("failed: ")
    assert status.results, "partial curves are kept"


def test_status_stays_bounded_for_a_big_grid():
    encoders = [{"name": f"enc{i}", "paradigm": "dino", "model": "vit_small_patch14_dinov2", "imageSize": 224}
                for i in range(10)]
    tasks = [{"name": f"task{i}", "kind": "classification", "labels": ["nodule"]} for i in range(8)]
    doc = local(**{"spec.encoders": encoders, "spec.sizes": [100 * 2**i for i in range(10)],
                   "spec.evaluation.tasks": tasks, "spec.computeBudget.steps": 2000, "spec.replicates": 3,
                   "spec.maxConcurrentCells": 64, "spec.dataset.prepSize": 224})
    status, _ = simulate(doc, steps=400)
    assert status.phase == api.Phase.SUCCEEDED and status.cells.total == 330
    size = len(json.dumps(status.model_dump(by_alias=True, exclude_none=True, mode="json")))
    assert size < 256 * 1024, size
    assert len(status.fits) == 80


def test_unchanged_curves_are_not_refitted(monkeypatch):
    from radscale.operator import fits

    results._analyse.cache_clear()
    calls = []
    real = fits.fit_curve
    monkeypatch.setattr(fits, "fit_curve", lambda *a, **k: calls.append(1) or real(*a, **k))
    study = study_of(local(**{"spec.evaluation.tasks": [{"name": "findings", "kind": "classification",
                                                        "labels": ["nodule"]}]}), None)
    rng = random.Random(0)
    cells = [api.CellStatus(name=f"c{n}", encoder="dino", size=n, stage="evaluate", state="Succeeded")
             for n in (100, 200, 400)]
    res = {c.name: fake_result(study, c, rng) for c in cells}
    first = results.analyse(study.spec, cells, res)
    again = results.analyse(study.spec, cells, {k: CellResult.model_validate_json(v.to_json()) for k, v in res.items()})
    assert len(first[1]) == 1 and first == again and len(calls) == 1
    cells.append(api.CellStatus(name="c800", encoder="dino", size=800, stage="evaluate", state="Succeeded"))
    res["c800"] = fake_result(study, cells[-1], rng)
    assert len(results.analyse(study.spec, cells, res)[1]) == 1 and len(calls) == 2


# ---- issue 15: blocking conditions post once; invalid specs are terminal; attempts are kept ----------


def events(out, reason=None):
    return [a for a in out.actions if isinstance(a, reconcile.Event) and (reason is None or a.reason == reason)]


def test_a_missing_credentials_secret_blocks_the_study_posts_once_and_recovers():
    doc = local(**{"spec.dataset.credentialsSecret": "cxr-s3"})
    study = study_of(doc)
    out = reconcile.reconcile(study, Observed(jobs={}, missing_secret="cxr-s3"), T0, CFG)
    ready = cond(out.status, "Ready")
    assert ready.status == "False" and ready.reason == "SecretNotFound" and ready.observed_generation == 1
    assert "spec.dataset.credentialsSecret" in ready.message and "'cxr-s3'" in ready.message
    assert not creates(out) and [e.type for e in events(out)] == ["Warning"]
    again = reconcile.reconcile(study_of(doc, out.status), Observed(jobs={}, missing_secret="cxr-s3"),
                                T0 + dt.timedelta(seconds=30), CFG)
    assert not again.actions, "a resync does not post the Event again"
    back = reconcile.reconcile(study_of(doc, again.status), Observed(jobs={}, prepared=True),
                               T0 + dt.timedelta(seconds=60), CFG)
    assert cond(back.status, "Ready").status == "True" and creates(back)
    # deleted again later: a new transition, so a new Event
    gone = reconcile.reconcile(study_of(doc, back.status), Observed(jobs={}, missing_secret="cxr-s3"),
                               T0 + dt.timedelta(seconds=90), CFG)
    assert len(events(gone, "SecretNotFound")) == 1 and not creates(gone) and not deletes(gone)


def test_a_refused_spec_change_posts_its_event_once_per_generation():
    first = run_once(local(), {})
    changed = local(**{"spec.computeBudget.steps": 80})
    out = run_once(changed, {}, first.status, generation=2)
    assert len(events(out, "SpecChangeRefused")) == 1
    for i in range(3):  # resyncs, or a restarted operator reading the status back
        out = run_once(changed, {}, out.status, now=T0 + dt.timedelta(seconds=30 * (i + 1)), generation=2)
        assert not events(out, "SpecChangeRefused")
        assert cond(out.status, "Ready").reason == "SpecChangeRefused"
    again = run_once(local(**{"spec.computeBudget.steps": 90}), {}, out.status, generation=3)
    assert len(events(again, "SpecChangeRefused")) == 1, "a new generation is refused anew"


def test_an_invalid_spec_is_terminal_failed_posts_once_and_a_fix_resumes():
    msg = "spec.sizes: sizes must be unique and strictly increasing"
    out = reconcile.invalid(None, msg, 1, T0)
    assert out.status.phase == api.Phase.FAILED and out.status.observed_generation == 1
    failed = cond(out.status, "Failed")
    assert failed.status == "True" and failed.reason == "InvalidSpec" and "spec.sizes" in failed.message
    assert cond(out.status, "Ready").reason == "InvalidSpec" and cond(out.status, "Succeeded").status == "False"
    assert [(e.type, e.reason) for e in out.actions] == [("Warning", "InvalidSpec")]
    assert not reconcile.invalid(out.status, msg, 1, T0 + dt.timedelta(seconds=30)).actions
    assert len(reconcile.invalid(out.status, msg, 2, T0).actions) == 1, "a new invalid generation posts again"
    fixed = run_once(local(), {}, out.status, generation=2)
    assert cond(fixed.status, "Failed").status == "False" and cond(fixed.status, "Ready").status == "True"
    assert fixed.status.phase == api.Phase.RUNNING and creates(fixed)


def test_a_pretrain_failure_stays_in_the_cell_history_after_evaluation_starts():
    first = run_once(local(), {})
    long = "x" * 5000
    failed = run_once(local(), {"cxr-local-dino-base-ev": job("Running", "RUNNING"),
                                "cxr-local-dino-100-pt": job("Failed", "FAILED", reason="AppFailed", message=long)},
                      first.status)
    c = cell(failed.status, "cxr-local-dino-100")
    assert [(h.stage, h.attempts, h.failures) for h in c.history] == [(api.Stage.PRETRAIN, 1, 1)]
    assert c.history[0].last_message.startswith("attempt 1: AppFailed") and len(c.history[0].last_message) <= 256
    assert creates(failed) == ["cxr-local-dino-200-pt"]  # the freed slot; finishing it frees one for the retry
    retry = run_once(local(), {"cxr-local-dino-base-ev": job("Running", "RUNNING"),
                               "cxr-local-dino-200-pt": job("Complete", "SUCCEEDED")}, failed.status,
                     now=T0 + dt.timedelta(seconds=31))
    assert "cxr-local-dino-100-pt-a1" in creates(retry)
    done = run_once(local(), {"cxr-local-dino-base-ev": job("Running", "RUNNING"),
                              "cxr-local-dino-100-pt-a1": job("Complete", "SUCCEEDED")}, retry.status,
                    now=T0 + dt.timedelta(seconds=60))
    c = cell(done.status, "cxr-local-dino-100")
    assert c.stage == api.Stage.EVALUATE and c.attempts == 1 and c.failures == 0  # the new stage's counters
    pre = [h for h in c.history if h.stage == api.Stage.PRETRAIN]
    assert len(pre) == 1 and (pre[0].attempts, pre[0].failures) == (2, 1) and "AppFailed" in pre[0].last_message
    # the status round-trips through the CRD's JSON shape
    dumped = done.status.model_dump(by_alias=True, exclude_none=True, mode="json")
    hist = next(x for x in dumped["cellStatus"] if x["name"] == "cxr-local-dino-100")["history"]
    assert hist[0]["stage"] == "pretrain" and hist[0]["lastMessage"]
    assert api.ScalingStudyStatus.model_validate(dumped) == done.status


def test_kueue_queued_and_preempted_jobs_are_no_failure_and_spend_no_retry():
    doc = local(**{"spec.queueName": "gpu-team", "spec.priorityClassName": "research-low",
                   "spec.workloadPriorityClassName": "batch"})
    first = run_once(doc, {})
    name = "cxr-local-dino-100-pt"
    manifest = next(a.manifest for a in first.actions if isinstance(a, CreateJob) and a.name == name)
    assert manifest["spec"]["suspend"] is True  # created suspended: Kueue admits by unsuspending
    assert manifest["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-team"
    assert manifest["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "batch"
    pods = [manifest["spec"]["rayClusterSpec"]["headGroupSpec"],
            *manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"]]
    assert {p["template"]["spec"]["priorityClassName"] for p in pods} == {"research-low"}

    def step(status, phase, *extra):
        return run_once(doc, {"cxr-local-dino-base-ev": job("Running", "RUNNING"), name: job(phase, *extra)}, status)

    queued = step(first.status, "Suspended")
    cs = cell(queued.status, name[:-3])
    assert cs.state == api.CellState.RUNNING and "waiting for Kueue LocalQueue 'gpu-team'" in cs.message
    assert queued.status.cells.queued == 1 and "1 waiting for admission" in cond(queued.status, "Progressing").message
    admitted = step(queued.status, "Running", "RUNNING")
    assert cell(admitted.status, name[:-3]).message == "" and admitted.status.cells.queued == 0
    evicting = step(admitted.status, "Suspending")  # Kueue evicts: KubeRay tears the cluster down
    assert len(events(evicting, "Preempted")) == 1
    preempted = step(evicting.status, "Suspended")
    cs = cell(preempted.status, name[:-3])
    assert (cs.state, cs.preemptions, cs.failures, cs.attempts) == (api.CellState.RUNNING, 1, 0, 1)
    assert "uses up no retry" in cs.message and not events(preempted, "Preempted")
    again = step(preempted.status, "Suspended")  # a resync posts nothing new
    assert not events(again, "Preempted") and cell(again.status, name[:-3]).preemptions == 1
    readmitted = step(again.status, "Running", "RUNNING")
    done = step(readmitted.status, "Complete", "SUCCEEDED")
    cs = cell(done.status, name[:-3])
    assert cs.stage == api.Stage.EVALUATE and cs.history[0].attempts == 1 and cs.history[0].failures == 0
    assert not [a for a in done.actions if isinstance(a, DeleteJob)] and name not in creates(done)
    assert cs.preemptions == 1  # kept across the stage change: the cell's own count


@pytest.mark.parametrize("changes, field", [
    ({"spec.queueName": "q", "spec.rayClusterSelector": {"ray.io/cluster": "shared"}}, "spec.queueName"),
    ({"spec.workloadPriorityClassName": "batch"}, "spec.workloadPriorityClassName"),
    ({"spec.queueName": "Not_A_Name"}, "spec.queueName"),
])
def test_bad_kueue_settings_are_refused_naming_the_field(changes, field):
    with pytest.raises(validation.SpecError) as err:
        validation.load_study({**local(**changes), "metadata": {"name": "cxr-local"}})
    assert field in str(err.value)
