"""Scenarios: a study applied with kubectl runs to Succeeded under the real operator process."""

from __future__ import annotations

import json
from collections import Counter

from tests.cluster.conftest import Cluster, small_study
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
    # kubectl get renders the CRD's printer columns: Succeeded, Cells, Best
    row = cluster.kubectl("get", "scalingstudies", "--no-headers").split()
    assert row[:4] == ["grid", "True", "8/8", status["best"]], row
