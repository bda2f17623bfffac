"""The local executor's parts without Ray: child processes as RayJobs, their state per KubeRay's
semantics, Ctrl-C resume bookkeeping, and the PNG."""

from __future__ import annotations

import io
import sys
import time

import pytest

from radscale.operator import api, local, plot, rayjob


def manifest(name: str, code: str) -> dict:
    return {"metadata": {"name": name, "labels": {rayjob.LABEL_STUDY: "s"}},
            "spec": {"entrypoint": f"python -c {code!r}",
                     "runtimeEnvYAML": "env_vars:\n  RADSCALE_X: from-runtime-env\n"}}


def wait_done(cluster: local.LocalCluster, name: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = cluster.list_jobs("local", "s")[name]
        if rayjob.state(job).phase.finished:
            return job
        time.sleep(0.05)
    raise AssertionError(f"{name} did not finish")


@pytest.fixture
def cluster(tmp_path) -> local.LocalCluster:
    return local.LocalCluster({"metadata": {"name": "s"}}, tmp_path / "logs", {"PATH": "/usr/bin:/bin"},
                              "http://127.0.0.1:8265")


def test_a_child_runs_the_entrypoint_and_reads_as_a_rayjob(cluster):
    code = ("import os, json; print('radscale-progress', json.dumps({'done': 3, 'total': 4})); "
            "assert os.environ['RADSCALE_X'] == 'from-runtime-env'")
    cluster.create_job("local", manifest("ok", code))
    cluster.create_job("local", manifest("ok", "raise SystemExit(9)"))  # exists: a 409, not a second child
    assert len(cluster.children) == 1
    running = rayjob.state(cluster.list_jobs("local", "s")["ok"])
    assert running.dashboard_url == "http://127.0.0.1:8265"
    job = wait_done(cluster, "ok")
    assert rayjob.state(job).phase is rayjob.JobPhase.SUCCEEDED
    assert job["status"] == {"dashboardURL": "http://127.0.0.1:8265", "jobDeploymentStatus": "Complete",
                             "jobStatus": "SUCCEEDED"}
    assert local.progress_of(local._tail(cluster.children["ok"].log)) == {"done": 3, "total": 4}


def test_a_failed_child_carries_its_error_line(cluster):
    code = "import sys; print('noise'); print('error: size: 5000 exceeds the pool', file=sys.stderr); sys.exit(2)"
    cluster.create_job("local", manifest("bad", code))
    st = rayjob.state(wait_done(cluster, "bad"))
    assert st.phase is rayjob.JobPhase.FAILED
    assert st.reason == "BadInput" and st.message == "size: 5000 exceeds the pool"
    cluster.create_job("local", manifest("crash", "import os; os._exit(7)"))
    st = rayjob.state(wait_done(cluster, "crash"))
    assert st.reason == "AppFailed" and st.message.startswith("exit code 7")


def test_delete_stops_the_child_and_its_process_group(cluster):
    cluster.create_job("local", manifest("slow", "import time; time.sleep(60)"))
    child = cluster.children["slow"]
    started = time.monotonic()
    cluster.delete_job("local", "slow")
    assert child.proc.returncode is not None and time.monotonic() - started < 10
    assert "slow" not in cluster.list_jobs("local", "s")
    cluster.delete_job("local", "slow")  # gone already: nothing to do


def test_an_interrupted_status_resumes_without_using_a_retry():
    status = api.ScalingStudyStatus(cell_status=[
        api.CellStatus(name="a", encoder="e", size=1, stage="pretrain", state="Running", attempts=1, rayJob="a-pt"),
        api.CellStatus(name="b", encoder="e", size=2, stage="evaluate", state="Succeeded", attempts=1),
    ], prepare=api.CellStatus(name="p", encoder="", size=0, stage="prepare", state="Succeeded", attempts=1))
    out = local.resumable(status)
    assert [c.state for c in out.cell_status] == [api.CellState.SUSPENDED, api.CellState.SUCCEEDED]
    assert out.cell_status[0].ray_job is None and out.cell_status[0].failures == 0
    assert status.cell_status[0].state is api.CellState.RUNNING  # the input is untouched


def test_failure_message_prefers_the_jobs_error_line():
    assert local.failure_message(["x", "error: weights: s3://b/k cannot be read", "Traceback"], 2) == \
        "weights: s3://b/k cannot be read"
    assert local.failure_message(["last words", ""], 1) == "exit code 1: last words"


def test_png_has_a_panel_per_task_and_draws_fits():
    pytest.importorskip("matplotlib")
    from PIL import Image

    pts = [[0, 0.6, 0.55, 0.65], [100, 0.7, 0.65, 0.75], [200, 0.75, 0.7, 0.8], [400, 0.78, 0.74, 0.82]]
    status = api.ScalingStudyStatus(
        results={"findings": {"auroc": {"dino": pts, "unicl": [p[:1] + [p[1] - 0.05] * 3 for p in pts]}},
                 "catheter-seg": {"dice": {"dino": pts}}, "report-gen": {"bleu4": {"dino": pts}}},
        fits=[api.FitStatus(encoder="dino", task="findings", metric="auroc", a=1.0, b=0.3, c=0.1, r2=0.99,
                            crossover=api.Crossover(outcome="measured", size=150.0,
                                                    ci95=api.Interval(low=110.0, high=None))),
              api.FitStatus(encoder="unicl", task="findings", metric="auroc", fitted=False, r2=0.2,
                            lack_of_fit="R² 0.20 is below 0.5",
                            crossover=api.Crossover(outcome="belowSmallest", size=100.0))])
    png = plot.render_png(status, "test")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(png))
    assert img.size == (1320, 924)  # 2 x 2 panels at 110 dpi


def test_a_bad_study_file_is_named(tmp_path, capsys):
    bad = tmp_path / "study.yaml"
    bad.write_text("apiVersion: radscale.io/v1alpha1\nkind: ScalingStudy\nmetadata: {name: s}\nspec: {sizes: [0]}\n")
    from radscale.operator import cli

    code = cli.main(["run", str(bad)])
    err = capsys.readouterr().err
    assert code == 2
    assert str(bad) in err, err
    assert "spec.sizes[0]" in err and "spec.dataset" in err, err


def test_live_panel_and_final_tables_render(cluster, tmp_path):
    from rich.console import Console

    from radscale.operator import display

    code = "import json; print('radscale-progress', json.dumps({'done': 5, 'total': 20, 'loss': 3.2}), flush=True); " \
           "import time; time.sleep(30)"
    cluster.create_job("local", manifest("s-a-pt", code))
    deadline = time.monotonic() + 20
    while local.progress_of(local._tail(cluster.children["s-a-pt"].log)) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    status = api.ScalingStudyStatus(
        phase="Running", cells=api.CellCounts(total=2, running=1, pending=1),
        cell_status=[api.CellStatus(name="s-a", encoder="e", size=10, stage="pretrain", state="Running",
                                    attempts=1, rayJob="s-a-pt"),
                     api.CellStatus(name="s-b", encoder="e", size=20, stage="pretrain", state="Pending")],
        results={"findings": {"auroc": {"e": [[0, 0.5, 0.5, 0.5], [10, 0.7, 0.65, 0.75]]}}})
    console = Console(record=True, width=120, force_terminal=True)
    view = display.Display(console, live=True)
    console.print(view.panel(status, cluster))
    text = console.export_text()
    assert "Running  0/2 succeeded, 1 running" in text and "s-a" in text and "loss 3.2" in text
    assert "s-b" not in text  # only running cells get a row
    cluster.delete_job("local", "s-a-pt")
    study = api.ScalingStudy.model_construct(metadata=api.ObjectMeta(name="s"))
    status.fits = [
        api.FitStatus(encoder="e", task="findings", metric="auroc", a=1.0, b=0.3, c=0.1, r2=0.9,
                      ci95={"b": api.Interval(low=0.2, high=0.4)}, replicates=2,
                      crossover=api.Crossover(outcome="belowSmallest", size=10.0,
                                              ci95=api.Interval(low=10.0, high=40.0))),
        api.FitStatus(encoder="f", task="findings", metric="auroc", fitted=False, r2=0.31,
                      lack_of_fit="R² 0.31 is below 0.5", crossover=api.Crossover(outcome="notReached")),
        api.FitStatus(encoder="g", task="findings", metric="auroc", a=1.0, b=0.3, c=0.1, r2=0.9,
                      crossover=api.Crossover(outcome="extrapolated", size=900.0))]
    wide = Console(record=True, width=200, force_terminal=True)
    wide.print(*display.tables(study, status))
    out = wide.export_text()
    assert "0.700 [0.650, 0.750]" in out and "baseline" in out
    assert "≤ 10 (smallest size) [10, 40]" in out and "0.300 [0.200, 0.400]" in out
    assert "no law fitted: R² 0.31 is below 0.5" in out and "not reached" in out
    assert "900 EXTRAPOLATED" in out


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
