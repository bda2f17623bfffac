"""A tiny study end to end on local Ray with ``radscale run``: output on S3 (moto), metrics in a real
MLflow server, the real trainer entrypoints as child processes. Interrupted with Ctrl-C once it has
finished work, resumed to the end without redoing it, then run again: nothing to do."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from radscale.trainer.data import phantom
from tests.support import crdschema

ROOT = Path(__file__).resolve().parents[2]
RADSCALE = [sys.executable, "-m", "radscale.operator.cli"]


def study_doc(corpus: Path, s3_endpoint: str, mlflow: str) -> dict:
    return {
        "apiVersion": "radscale.io/v1alpha1", "kind": "ScalingStudy", "metadata": {"name": "tiny"},
        "spec": {
            "dataset": {"uri": f"file://{corpus}", "endpoint": s3_endpoint,
                        "columns": {"report": "report", "labels": list(phantom.LABELS), "masks": ["catheter_mask"]},
                        "split": {"evalFraction": 0.4, "seed": 0}, "prepSize": 32},
            "sizes": [16, 32, 64],
            "computeBudget": {"steps": 4, "globalBatchSize": 16, "checkpointEvery": 2},
            "encoders": [{"name": "dino", "paradigm": "dino", "model": "vit_tiny_patch16_224", "imageSize": 32,
                          "prototypes": 64, "optimizer": {"lr": 0.0005, "warmupSteps": 1}}],
            "attention": "sdpa",
            "resources": {"prepare": {"cpus": 1}, "pretrain": {"workers": 1, "cpus": 1},
                          "evaluate": {"cpus": 1}},
            "evaluation": {
                "tasks": [
                    {"name": "findings", "kind": "classification",
                     "labels": ["cardiomegaly", "pleural_effusion", "consolidation"]},
                    {"name": "lines-tubes", "kind": "classification", "labels": ["ett", "ngt", "cvc"]},
                    {"name": "catheter-seg", "kind": "segmentation", "maskColumn": "catheter_mask"},
                    {"name": "report-gen", "kind": "report-generation"},
                ],
                "sweep": {"numSamples": 2, "searchSpace": {"lr": {"type": "loguniform", "low": 0.001, "high": 0.01},
                                                           "epochs": {"type": "choice", "values": [1, 2]}},
                          "scheduler": {"type": "asha", "gracePeriod": 1}},
                "baselines": True,
            },
            "maxConcurrentCells": 2, "retries": 1,
            "output": "s3://local-study/out",
            "tracking": {"uri": mlflow, "experiment": "local-study-test"},
        },
    }


@pytest.fixture(scope="module")
def study(tmp_path_factory, s3_endpoint, mlflow_server, ray_cluster) -> tuple[Path, dict, Path]:
    import s3fs

    tmp = tmp_path_factory.mktemp("local-study")
    corpus = tmp / "corpus"
    phantom.write_corpus(corpus, 240, seed=5, size=48)
    s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=s3_endpoint).mkdir("local-study")
    doc = study_doc(corpus, s3_endpoint, mlflow_server)
    path = tmp / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path, doc, tmp


def runner(path: Path, tmp: Path, status_out: Path) -> subprocess.Popen:
    import ray

    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    return subprocess.Popen([*RADSCALE, "run", str(path), "--status-out", str(status_out)], cwd=tmp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def s3_json(s3_endpoint: str, key: str) -> dict:
    import s3fs

    fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=s3_endpoint)
    return json.loads(fs.cat_file(f"local-study/out/{key}"))


def test_interrupt_resume_and_rerun(study, s3_endpoint, mlflow_server):
    path, doc, tmp = study
    status_out = tmp / "status.json"

    # 1. run until some cell has finished, then Ctrl-C
    proc = runner(path, tmp, status_out)
    deadline = time.monotonic() + 400
    finished: list[dict] = []
    while time.monotonic() < deadline and proc.poll() is None:
        if status_out.exists():
            st = json.loads(status_out.read_text())
            # done: a whole cell, or a cell's pretraining (its stage moved on to evaluate)
            finished = [c for c in st.get("cellStatus", [])
                        if c["state"] == "Succeeded" or (c["stage"] == "evaluate" and c["size"] > 0)]
            if finished and any(c["state"] == "Running" for c in st["cellStatus"]):
                break
        time.sleep(0.5)
    assert proc.poll() is None, proc.stdout.read()
    proc.send_signal(signal.SIGINT)
    out1, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out1
    assert "interrupted" in out1
    st = json.loads(status_out.read_text())
    assert not [c for c in st["cellStatus"] if c["state"] == "Running"]
    assert [c for c in st["cellStatus"] if c["state"] == "Suspended"]
    done_before = {c["name"]: c for c in finished}
    before = {name: s3_json(s3_endpoint, f"{name}/result.json") for name in done_before
              if done_before[name]["size"] > 0}

    # 2. resume to the end: what had finished is not redone
    proc = runner(path, tmp, status_out)
    out2, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out2
    assert "resuming from" in out2
    for name, c in done_before.items():
        if c["state"] == "Succeeded":
            assert f"{name}: evaluate attempt" not in out2, f"{name} was redone"
        elif c["size"] > 0:  # pretrained before the interrupt: not pretrained again
            assert f"{name}: pretrain attempt" not in out2
            assert s3_json(s3_endpoint, f"{name}/result.json")["pretrain"] == before[name]["pretrain"]

    status = json.loads(status_out.read_text())
    crd = yaml.safe_load((ROOT / "manifests/crd/scalingstudies.radscale.io.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert crdschema.problems_for_schema(schema, status) == []
    assert status["phase"] == "Succeeded" and status["cells"]["succeeded"] == status["cells"]["total"] == 4
    tasks = [t["name"] for t in doc["spec"]["evaluation"]["tasks"]]
    for cs in status["cellStatus"]:
        res = s3_json(s3_endpoint, f"{cs['name']}/result.json")
        assert sorted(res["evaluate"]) == sorted(tasks), cs["name"]
        for tr in res["evaluate"].values():
            head = tr["metrics"][tr["metric"]]
            assert head["ciLow"] <= head["value"] <= head["ciHigh"]
            assert set(tr["bestConfig"]) >= {"lr", "epochs"}
    # curves for every task (3 sizes + baseline), and a fit per task where >= 3 sizes
    assert sorted(status["results"]) == sorted(tasks)
    for by_metric in status["results"].values():
        (points,) = by_metric.values()
        assert [p[0] for p in points["dino"]] == [0, 16, 32, 64]
    assert {f["task"] for f in status["fits"]} <= set(tasks)
    assert len(status["fits"]) >= 1
    for f in status["fits"]:  # a claim, not numbers: a law or the reason there is none; no crossover below 16
        assert f["fitted"] == ("lackOfFit" not in f) and f["fitted"] == ("b" in f)
        assert f["crossover"]["outcome"] in {"measured", "belowSmallest", "extrapolated", "notReached"}
        assert f["crossover"].get("size", 16) >= 16
    assert status["artifacts"]["plot"] == "s3://local-study/out/scaling-curves.png"
    results = s3_json(s3_endpoint, "results.json")
    assert sorted(results["cells"]) == sorted(c["name"] for c in status["cellStatus"])

    # MLflow: one run per cell with every task's metrics, trials nested under it
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("local-study-test")
    cells = client.search_runs([exp.experiment_id], "tags.`radscale.kind` = 'cell'")
    assert sorted(r.data.tags["radscale.cell"] for r in cells) == sorted(c["name"] for c in status["cellStatus"])
    for run in cells:
        assert {f"{t}/" for t in tasks} <= {k.split("/")[0] + "/" for k in run.data.metrics}
        trials = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
        assert len(trials) >= len(tasks) * 2 - 1  # numSamples per task (a resumed cell may log a task once)
    (study_run,) = client.search_runs([exp.experiment_id], "tags.`radscale.kind` = 'study'")
    for f in status["fits"]:
        key = f"{f['task']}/{f['encoder']}"
        assert study_run.data.tags[f"{key}/crossover"] == f["crossover"]["outcome"]
        assert (f"{key}/b" in study_run.data.metrics) == f["fitted"]

    # 3. run again: nothing left to do, nothing launched
    proc = runner(path, tmp, status_out)
    out3, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out3
    assert "JobCreated" not in out3 and "StageSucceeded" not in out3
    assert json.loads(status_out.read_text())["results"] == status["results"]
