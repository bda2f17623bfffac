"""The adaptive example (manifests/examples/study-adaptive.yaml), shrunk to one encoder and one task,
end to end on local Ray with ``radscale run``: the initial round, a round the design chooses from the
real cells' results, the stop, and the design in the printed tables and the status."""

from __future__ import annotations

import json
import subprocess

import yaml

from radscale.trainer.data import phantom
from tests.conftest import EXAMPLES, edit, load_yaml
from tests.integration.test_local_study import runner


def test_the_adaptive_example_runs_to_succeeded_on_local_ray(tmp_path, mlflow_server, ray_cluster):
    corpus = tmp_path / "corpus"
    phantom.write_corpus(corpus, 200, seed=11, size=40)
    doc = load_yaml(EXAMPLES / "study-adaptive.yaml")
    enc = {**doc["spec"]["encoders"][0], "imageSize": 32, "prototypes": 64, "init": "none",
           "optimizer": {"lr": 0.001, "warmupSteps": 1}}
    doc = edit(doc, {
        "spec.dataset.uri": f"file://{corpus}", "spec.dataset.prepSize": 32,
        "spec.dataset.split": {"evalFraction": 0.4, "seed": 0},
        "spec.encoders": [enc],
        "spec.computeBudget": {"steps": 4, "globalBatchSize": 16, "checkpointEvery": 2},
        # a width no 4 cells reach: the design spends its budget, one cell past the initial round
        "spec.adaptive": {"min": 16, "max": 64, "initial": 3, "grid": 5, "maxCells": 4, "task": "findings",
                          "relativeWidth": 0.01},
        # 200 images leave too few test positives for the example's minPositives
        "spec.evaluation.tasks": [{k: v for k, v in doc["spec"]["evaluation"]["tasks"][0].items()
                                   if k != "minPositives"}],
        "spec.evaluation.sweep": {"numSamples": 1, "searchSpace": {"lr": {"type": "choice", "values": [0.003]},
                                                                   "epochs": {"type": "choice", "values": [2]}}},
        "spec.output": f"file://{tmp_path}/out",
        "spec.tracking": {"uri": mlflow_server, "experiment": "local-adaptive-test"},
    })
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    status_out = tmp_path / "status.json"
    proc = runner(path, tmp_path, status_out)
    try:
        out, _ = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, out
    status = json.loads(status_out.read_text())
    assert status["phase"] == "Succeeded", out
    (d,) = status["design"]
    assert d["state"] == "Stopped" and d["stopReason"] == "BudgetSpent" and d["cells"] == 4
    assert [r["round"] for r in d["decisions"]] == [0, 1]
    assert d["decisions"][0]["sizes"] == [16, 32, 64]
    (chosen,) = d["decisions"][1]["sizes"]
    assert chosen in (0, 16, 23, 32, 45, 64) and d["decisions"][1]["reason"]
    assert d["decisions"][1]["after"] is not None
    pretrained = sorted((c["size"], c["replicate"]) for c in status["cellStatus"] if c["size"] > 0)
    expected = [(16, 0), (32, 0), (64, 0)] + ([(chosen, 1 if chosen in (16, 32, 64) else 0)] if chosen else [])
    assert pretrained == sorted(expected)
    for cs in status["cellStatus"]:
        assert (tmp_path / "out" / cs["name"] / "result.json").exists(), cs["name"]
    assert "SizesChosen" in out and "DesignStopped" in out and "sequential designs" in out
