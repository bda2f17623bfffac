"""The planner: the grid, deterministic DNS-safe names, stages, and the cell specs jobs receive."""

from __future__ import annotations

import json
import re

import pytest

from radscale.cells import CellResult, CellSpec, TaskResult
from radscale.operator import api, plan, validation
from tests.conftest import edit

DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@pytest.fixture
def study(paper_study) -> api.ScalingStudy:
    return validation.load_study(paper_study)


def test_grid_is_encoders_times_sizes_plus_baselines(study):
    p = plan.plan(study)
    assert len(p.cells) == 2 * (5 + 1) * 2  # the example runs 2 replicates
    grid = {(c.encoder, c.size, c.replicate) for c in p.cells}
    assert grid == {(e, n, r) for e in ("rad-dino", "mi2") for n in (0, 30000, 50000, 100000, 1000000, 3500000)
                    for r in (0, 1)}
    assert "cxr-rad-dino-30k-r1" in {c.name for c in p.cells}
    for c in p.cells:
        assert c.stages == ((api.Stage.EVALUATE,) if c.size == 0 else (api.Stage.PRETRAIN, api.Stage.EVALUATE))
    names = [c.name for c in p.cells]
    assert names[:2] == ["cxr-rad-dino-base", "cxr-rad-dino-30k"] and "cxr-mi2-3500k" in names


def test_no_baselines_when_turned_off(paper_study):
    s = validation.load_study(edit(paper_study, {"spec.evaluation.baselines": False}))
    assert all(c.size > 0 for c in plan.plan(s).cells)


def test_plan_is_deterministic(paper_study):
    a = plan.plan(validation.load_study(paper_study))
    b = plan.plan(validation.load_study(paper_study))
    assert a == b


def test_adding_a_size_keeps_every_existing_name(paper_study):
    before = plan.plan(validation.load_study(paper_study))
    grown = edit(paper_study, {"spec.sizes": [30000, 50000, 75000, 100000, 1000000, 3500000]})
    after = plan.plan(validation.load_study(grown))
    assert {c.name for c in before.cells} < {c.name for c in after.cells}
    assert len(after.cells) == len(before.cells) + 2 * 2  # one size x 2 encoders x 2 replicates
    assert before.fingerprint == after.fingerprint, "sizes do not change the prepared shards"


def test_raising_replicates_adds_cells_and_keeps_every_existing_name(paper_study):
    before = plan.plan(validation.load_study(paper_study))
    after = plan.plan(validation.load_study(edit(paper_study, {"spec.replicates": 3})))
    assert {c.name for c in before.cells} < {c.name for c in after.cells}
    assert {c.name for c in after.cells} - {c.name for c in before.cells} == \
        {f"{c.name}-r2" for c in before.cells if c.replicate == 0}
    assert before.fingerprint == after.fingerprint, "replicates share the split and the shards"


def test_replicates_share_split_seed_and_differ_in_run_seed(paper_study):
    study = validation.load_study(paper_study)
    p = plan.plan(study)
    specs = [plan.cell_spec(study, p, c, api.Stage.PRETRAIN) for c in p.cells
             if c.encoder == "mi2" and c.size == 30000]
    assert [s.replicate for s in specs] == [0, 1]
    assert specs[0].seed == specs[1].seed == study.spec.dataset.split.seed
    assert specs[0].run_seed == specs[0].seed and specs[1].run_seed != specs[0].run_seed
    assert specs[0].shards == specs[1].shards and specs[0].output != specs[1].output


def test_fingerprint_follows_the_dataset_not_the_grid(paper_study):
    base = plan.plan(validation.load_study(paper_study)).fingerprint
    other_split = edit(paper_study, {"spec.dataset.split.seed": 18})
    assert plan.plan(validation.load_study(other_split)).fingerprint != base
    new_secret = edit(paper_study, {"spec.dataset.credentialsSecret": "rotated"})
    assert plan.plan(validation.load_study(new_secret)).fingerprint == base


@pytest.mark.parametrize("n,label", [(0, "base"), (30000, "30k"), (1_000_000, "1m"), (3_500_000, "3500k"),
                                     (1234, "1234"), (2_000_000_000, "2000m")])
def test_size_labels_are_exact(n, label):
    assert plan.size_label(n) == label


def test_long_names_are_hashed_within_limits(paper_study):
    long_name = "a-very-long-study-name-for-the-radiology-department-scaling-2026"
    doc = edit(paper_study, {"metadata.name": long_name[:63]})
    p = plan.plan(validation.load_study(doc))
    for c in p.cells:
        assert len(c.name) <= plan.CELL_NAME_MAX and DNS1035.match(c.name), c.name
        for stage in c.stages:
            for attempt in (0, 1, 12):
                job = plan.job_name(c.name, stage, attempt)
                assert len(job) <= plan.RAYJOB_NAME_MAX and DNS1035.match(job), job
    jobs = [plan.job_name(c.name, s, a) for c in p.cells for s in c.stages for a in range(3)]
    assert len(set(jobs)) == len(jobs), "every cell x stage x attempt has its own RayJob"
    assert len(p.prepare_name) <= plan.RAYJOB_NAME_MAX


def test_dns_name_keeps_short_names_and_hashes_long_ones():
    assert plan.dns_name("cxr", "mi2", "30k", limit=47) == "cxr-mi2-30k"
    cut = plan.dns_name("x" * 60, "pt", limit=47)
    assert len(cut) == 47 and cut != plan.dns_name("x" * 61, "pt", limit=47)
    assert plan.dns_name("9lives", limit=47).startswith("rs-")


def test_job_names_carry_the_attempt():
    assert plan.job_name("cxr-mi2-30k", api.Stage.PRETRAIN) == "cxr-mi2-30k-pt"
    assert plan.job_name("cxr-mi2-30k", api.Stage.PRETRAIN, 2) == "cxr-mi2-30k-pt-a2"
    assert plan.job_name("cxr-mi2-30k", api.Stage.EVALUATE) == "cxr-mi2-30k-ev"


def test_cell_specs_for_each_stage(study):
    p = plan.plan(study)
    prep = plan.cell_spec(study, p, None, api.Stage.PREPARE)
    assert prep.output == prep.shards == f"s3://hospital-cxr/radscale/cxr/prep/{p.fingerprint}"
    assert prep.encoder is None and prep.resources.workers == 8

    cell = next(c for c in p.cells if c.encoder == "mi2" and c.size == 100000)
    pre = plan.cell_spec(study, p, cell, api.Stage.PRETRAIN, attempt=1)
    assert pre.output == "s3://hospital-cxr/radscale/cxr/cxr-mi2-100k"
    assert pre.weights == "s3://hospital-models/medimageinsight/image-encoder.safetensors"
    assert pre.size == 100000 and pre.seed == 17 and pre.attempt == 1
    assert pre.budget.steps == 50000 and pre.resources.gpus_per_worker == 1
    assert pre.checkpoint_uri == pre.output + "/checkpoints"

    ev = plan.cell_spec(study, p, cell, api.Stage.EVALUATE)
    assert ev.weights == pre.output + "/encoder.safetensors"
    assert [t.name for t in ev.tasks] == ["findings", "lines-tubes", "catheter-seg", "report-gen"]
    assert ev.sweep is not None and ev.sweep.num_samples == 16

    base = next(c for c in p.cells if c.encoder == "mi2" and c.size == 0)
    bev = plan.cell_spec(study, p, base, api.Stage.EVALUATE)
    assert bev.weights == "s3://hospital-models/medimageinsight/image-encoder.safetensors" and bev.baseline
    with pytest.raises(ValueError):
        plan.cell_spec(study, p, base, api.Stage.PRETRAIN)


def test_cell_spec_round_trips_through_the_entrypoint(study, tmp_path):
    p = plan.plan(study)
    spec = plan.cell_spec(study, p, p.cells[1], api.Stage.PRETRAIN)
    argv = spec.entrypoint()
    assert argv[:4] == ["python", "-m", "radscale.trainer.pretrain", "--cell"]
    assert CellSpec.from_arg(argv[4]) == spec
    path = tmp_path / "cell.json"
    path.write_text(argv[4])
    assert CellSpec.from_arg(str(path)) == spec
    assert CellSpec.from_arg(f"file://{path}") == spec
    wire = json.loads(argv[4])
    assert wire["apiVersion"] == "radscale.io/cell-v1" and "globalBatchSize" in wire["budget"]


def test_the_pretrain_strategy_reaches_the_pretrain_cell_only(paper_study):
    study = validation.load_study(edit(paper_study, {"spec.resources.pretrain.strategy": "fsdp"}))
    p = plan.plan(study)
    pretrain = CellSpec.from_arg(plan.cell_spec(study, p, p.cells[1], api.Stage.PRETRAIN).entrypoint()[4])
    assert pretrain.resources.strategy == "fsdp"
    evaluate = plan.cell_spec(study, p, p.cells[1], api.Stage.EVALUATE)
    assert getattr(evaluate.resources, "strategy", "ddp") == "ddp"
    default = validation.load_study(paper_study)
    assert plan.cell_spec(default, plan.plan(default), p.cells[1], api.Stage.PRETRAIN).resources.strategy == "ddp"


def test_cell_result_model():
    res = CellResult.model_validate({
        "study": "cxr", "cell": "cxr-mi2-30k", "encoder": "mi2", "size": 30000,
        "evaluate": {"findings": {"metric": "auroc", "metrics": {"auroc": {"value": 0.8, "ciLow": 0.78,
                                                                            "ciHigh": 0.82}},
                                  "bestConfig": {"lr": 0.01}}},
    })
    task: TaskResult = res.evaluate["findings"]
    assert task.headline.value == 0.8 and task.headline.ci_high == 0.82
    assert CellResult.model_validate_json(res.to_json()) == res
