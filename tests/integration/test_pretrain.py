"""Continual pretraining on Ray Train: 2 CPU workers, phantom shards, checkpoints on S3 (moto),
metrics in a real MLflow server, and resumption after a worker failure and after a new job."""

from __future__ import annotations

from pathlib import Path

import pytest

from radscale.cells import CellResult, CellSpec
from radscale.operator import api, plan
from radscale.trainer import pretrain
from radscale.trainer.data import phantom, shards
from radscale.trainer.data.manifest import Columns, read_manifest
from radscale.trainer.models.encoders import build_encoder

STEPS, EVERY = 12, 4


def run_job(cell: CellSpec, tmp_path, **env: str) -> tuple[int, dict, str]:
    """The RayJob's command, against the session's Ray cluster: (exit code, summary line, stderr)."""
    import json
    import os
    import subprocess
    import sys

    import ray

    spec = tmp_path / f"{cell.cell}-{len(list(tmp_path.iterdir()))}.json"
    spec.write_text(cell.to_json())
    proc = subprocess.run([sys.executable, "-m", "radscale.trainer.pretrain", "--cell", str(spec)],
                          capture_output=True, text=True, timeout=400,
                          env={**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address, **env})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    return proc.returncode, json.loads(lines[-1]) if lines else {}, proc.stderr


@pytest.fixture(scope="module")
def study(tmp_path_factory, s3_endpoint, mlflow_server, ray_cluster):
    """A study whose output (shards, checkpoints, results) is on S3; its shards prepared once."""
    import s3fs

    corpus = tmp_path_factory.mktemp("corpus")
    phantom.write_corpus(corpus, 120, seed=3, size=64)
    s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=s3_endpoint).mkdir("pt-bucket")
    doc = api.ScalingStudy.model_validate({
        "metadata": {"name": "pt", "namespace": "ml"},
        "spec": {
            "dataset": {"uri": f"file://{corpus}", "endpoint": s3_endpoint,
                        "columns": {"report": "report", "labels": list(phantom.LABELS)},
                        "split": {"evalFraction": 0.25, "seed": 1}, "prepSize": 32},
            "sizes": [32, 64], "computeBudget": {"steps": STEPS, "globalBatchSize": 8, "checkpointEvery": EVERY},
            "encoders": [
                {"name": "dino", "paradigm": "dino", "model": "vit_tiny_patch16_224", "imageSize": 32,
                 "prototypes": 64, "optimizer": {"lr": 0.0005, "warmupSteps": 2}},
                {"name": "unicl", "paradigm": "unicl", "model": "vit_tiny_patch16_224", "imageSize": 32,
                 "optimizer": {"lr": 0.0005, "warmupSteps": 2},
                 "text": {"model": "text-tiny", "contextLength": 32, "embedDim": 32}},
            ],
            "resources": {"pretrain": {"workers": 2, "cpus": 1}},
            "evaluation": {"tasks": [{"name": "f", "kind": "classification", "labels": ["nodule"]}]},
            "output": "s3://pt-bucket/out",
            "tracking": {"uri": mlflow_server, "experiment": "pretrain-tests"},
        },
    })
    p = plan.plan(doc)
    prep = plan.cell_spec(doc, p, None, api.Stage.PREPARE)
    man = read_manifest(f"file://{corpus}", "manifest.csv", Columns(report="report", labels=phantom.LABELS))
    shards.prepare(man, f"file://{corpus}", prep.shards, shards.PrepParams(prep_size=32, eval_fraction=0.25, seed=1),
                   endpoint=s3_endpoint)
    return doc, p


def cell_of(study, encoder: str, size: int = 64) -> CellSpec:
    doc, p = study
    cell = next(c for c in p.cells if c.encoder == encoder and c.size == size)
    return plan.cell_spec(doc, p, cell, api.Stage.PRETRAIN)


def s3(s3_endpoint):
    import s3fs

    return s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=s3_endpoint)


@pytest.mark.parametrize("encoder", ["dino", "unicl"])
def test_pretrain_two_workers_checkpoints_on_s3_and_metrics_in_mlflow(study, encoder, s3_endpoint, mlflow_server,
                                                                     tmp_path):
    from mlflow.tracking import MlflowClient

    cell = cell_of(study, encoder)
    code, summary, err = run_job(cell, tmp_path)
    assert code == 0, err[-3000:]
    assert summary["pretrain"]["steps"] == STEPS and summary["pretrain"]["images_seen"] == STEPS * 8
    assert summary["pretrain"]["epochs"] == pytest.approx(STEPS * 8 / 64)  # true passes: 96 samples of 64 rows
    assert summary["pretrain"]["distinct_images"] == 64  # measured over the stream's row ids
    fs = s3(s3_endpoint)
    stored = CellResult.model_validate_json(fs.cat(cell.result_uri.removeprefix("s3://")))
    assert stored.pretrain.steps == STEPS and stored.mlflow_run_id
    assert (stored.pretrain.images_seen, stored.pretrain.distinct_images) == (STEPS * 8, 64)
    kept = [e["name"] for e in fs.ls(cell.checkpoint_uri.removeprefix("s3://"), detail=True)
            if e["type"] == "directory"]
    assert len(kept) == 2, kept  # the two latest of 3 checkpoints (steps 4, 8, 12)
    # the image tower loads into the encoder builder, through s3fs
    build_encoder("vit_tiny_patch16_224", img_size=32, weights=cell.encoder_uri,
                  storage_options={"endpoint_url": s3_endpoint, "key": "testing", "secret": "testing"})
    history = MlflowClient(mlflow_server).get_metric_history(stored.mlflow_run_id, "loss")
    assert sorted(m.step for m in history) == [4, 8, 10, 12]
    assert all(m.value == m.value for m in history)  # finite, logged from rank 0 once per step


def test_a_worker_failure_resumes_from_the_last_checkpoint(study, tmp_path):
    cell = cell_of(study, "dino", 32).model_copy(update={"output": "s3://pt-bucket/out/chaos-worker"})
    code, summary, err = run_job(cell, tmp_path, RADSCALE_CHAOS_FAIL_AT_STEP="7",  # one worker raises, once
                                 RADSCALE_CHAOS_MARKER=str(tmp_path / "failed-once"))
    assert code == 0, err[-3000:]
    assert (tmp_path / "failed-once").exists()
    assert summary["pretrain"]["steps"] == STEPS
    assert summary["resumedFrom"] == 4  # Ray Train restarted the workers from the step-4 checkpoint
    # 96 samples over 32 rows: three whole passes, each row drawn three times, resumption included
    pre = summary["pretrain"]
    assert (pre["images_seen"], pre["epochs"], pre["distinct_images"]) == (STEPS * 8, 3.0, 32)


def test_a_new_job_resumes_where_the_failed_one_checkpointed(study, tmp_path):
    cell = cell_of(study, "unicl", 32).model_copy(update={"output": "s3://pt-bucket/out/chaos-job"})
    chaos = {"RADSCALE_CHAOS_FAIL_AT_STEP": "10", "RADSCALE_CHAOS_MARKER": str(tmp_path / "failed-once")}
    code, _, err = run_job(cell, tmp_path, RADSCALE_MAX_WORKER_FAILURES="0", **chaos)  # the job fails
    assert code == 1 and "chaos" in err
    code, summary, err = run_job(cell, tmp_path, **chaos)  # a new RayJob for the same cell
    assert code == 0, err[-3000:]
    assert summary["pretrain"]["steps"] == STEPS and summary["resumedFrom"] == 8
    # the checkpoint scratch of a torn-down worker group is the cell's own, emptied by its next report
    import tempfile

    assert not list(Path(tempfile.gettempdir()).glob(f"radscale-checkpoint-*-{cell.cell}"))


def with_strategy(cell: CellSpec, strategy: str, output: str) -> CellSpec:
    return cell.model_copy(update={"output": output,
                                   "resources": cell.resources.model_copy(update={"strategy": strategy})})


@pytest.fixture(scope="module")
def ddp_run(study, s3_endpoint, tmp_path_factory):
    """Each encoder's size-32 cell trained once with DDP (its summary and encoder weights), shared by
    the tests that compare another run with it: the same seed again, and FSDP."""
    from safetensors.torch import load as load_safetensors

    runs: dict[str, tuple[dict, dict]] = {}

    def get(encoder: str) -> tuple[dict, dict]:
        if encoder not in runs:
            cell = with_strategy(cell_of(study, encoder, 32), "ddp", f"s3://pt-bucket/out/ddp-{encoder}")
            code, summary, err = run_job(cell, tmp_path_factory.mktemp(f"ddp-{encoder}"))
            assert code == 0, err[-3000:]
            runs[encoder] = summary, load_safetensors(s3(s3_endpoint).cat(cell.encoder_uri.removeprefix("s3://")))
        return runs[encoder]

    return get


@pytest.mark.parametrize("encoder", ["dino", "unicl"])
def test_fsdp_trains_the_same_model_as_ddp(study, encoder, s3_endpoint, tmp_path, ddp_run):
    """Sharded parameters, gradients, optimizer state and (dino) teacher give the DDP result: the
    same data and seeds, and only the reduction order differs."""
    from safetensors.torch import load as load_safetensors

    base = cell_of(study, encoder, 32)
    cell = with_strategy(base, "fsdp", f"s3://pt-bucket/out/fsdp-{encoder}")
    code, summary, err = run_job(cell, tmp_path)
    assert code == 0, err[-3000:]
    assert summary["pretrain"]["steps"] == ddp_run(encoder)[0]["pretrain"]["steps"] == STEPS
    ddp = ddp_run(encoder)[1]
    fsdp = load_safetensors(s3(s3_endpoint).cat(cell.encoder_uri.removeprefix("s3://")))
    assert ddp.keys() == fsdp.keys() and "cls_token" in fsdp
    import torch

    from radscale.trainer import paradigms

    torch.manual_seed(base.run_seed)  # the workers' initialisation, as train_loop seeds it
    model, objective = paradigms.build(base, tuple(base.dataset.columns.labels))
    init = objective.image_tower(model).state_dict()
    assert init.keys() == ddp.keys()
    for name in ddp:
        assert fsdp[name].shape == ddp[name].shape, name  # full tensors, not a rank's shard
    update_ddp = torch.cat([(ddp[n] - init[n]).flatten() for n in ddp])
    update_fsdp = torch.cat([(fsdp[n] - init[n]).flatten() for n in ddp])
    # the same starting point as the workers (a different init would be ~1e-2 away), and it moved
    assert 0 < update_ddp.abs().max() < 5e-3
    # FSDP's update is DDP's, up to float reduction order (which Adam's early steps amplify where a
    # gradient is near zero: measured 1.1% of the update's norm for dino, at most 3% per tensor)
    worst = sorted(((float((fsdp[n] - ddp[n]).norm() / (ddp[n] - init[n]).norm().clamp(min=1e-12)), n) for n in ddp),
                   reverse=True)[:5]
    assert (update_fsdp - update_ddp).norm() <= 0.05 * update_ddp.norm(), worst


def test_fsdp_worker_failure_resumes_from_a_full_checkpoint(study, tmp_path):
    cell = with_strategy(cell_of(study, "dino", 32), "fsdp", "s3://pt-bucket/out/chaos-fsdp")
    code, summary, err = run_job(cell, tmp_path, RADSCALE_CHAOS_FAIL_AT_STEP="7",
                                 RADSCALE_CHAOS_MARKER=str(tmp_path / "failed-once"))
    assert code == 0, err[-3000:]
    assert (tmp_path / "failed-once").exists()
    assert summary["pretrain"]["steps"] == STEPS and summary["resumedFrom"] == 4


def test_bad_inputs_fail_fast_naming_the_field(study):
    cell = cell_of(study, "dino")
    with pytest.raises(pretrain.CellError, match="size: 5000 exceeds the prepared pool"):
        pretrain.check(cell.model_copy(update={"size": 5000}))
    with pytest.raises(pretrain.CellError, match=r"shards: .* does not exist"):
        pretrain.check(cell.model_copy(update={"shards": cell.shards + "-missing"}))
    with pytest.raises(pretrain.CellError, match=r"weights: .* cannot be read"):
        pretrain.check(cell.model_copy(update={"weights": "s3://pt-bucket/nowhere/model.safetensors"}))
    unicl = cell_of(study, "unicl")
    no_reports = unicl.dataset.model_copy(update={"columns": unicl.dataset.columns.model_copy(update={"report": None})})
    with pytest.raises(pretrain.CellError, match=r"encoder.paradigm: unicl needs reports"):
        pretrain.check(unicl.model_copy(update={"dataset": no_reports}))
    with pytest.raises(pretrain.CellError, match=r"smaller than computeBudget.globalBatchSize"):
        pretrain.check(cell.model_copy(update={"size": 4}))


def test_the_same_seed_trains_the_same_weights_and_a_replicate_does_not(study, s3_endpoint, tmp_path, ddp_run):
    """Replicates differ only by their run seed: the same cell twice gives the same encoder on CPU
    (2 DDP workers, within 1e-6); replicate 1 starts from other new parameters."""
    import torch
    from safetensors.torch import load as load_safetensors

    from radscale.trainer import paradigms

    base = cell_of(study, "unicl", 32)
    first, first_weights = ddp_run("unicl")  # the same cell, run once already (into another folder)
    cell = with_strategy(base, "ddp", "s3://pt-bucket/out/det-again")
    code, summary, err = run_job(cell, tmp_path)
    assert code == 0, err[-3000:]
    results = [first["pretrain"], summary["pretrain"]]
    weights = [first_weights, load_safetensors(s3(s3_endpoint).cat(cell.encoder_uri.removeprefix("s3://")))]
    assert results[0]["final_loss"] == pytest.approx(results[1]["final_loss"], abs=1e-6)
    assert results[0]["distinct_images"] == results[1]["distinct_images"] == 32
    for name in weights[0]:
        assert torch.allclose(weights[0][name], weights[1][name], rtol=0, atol=1e-6), name
    # a replicate: the split and subset stay (same cell.seed), the run seed and so the new parameters do not
    rep = base.model_copy(update={"replicate": 1})
    assert rep.seed == base.seed and rep.run_seed != base.run_seed
    heads = []
    for c in (base, rep):
        torch.manual_seed(c.run_seed)
        model, _ = paradigms.build(c, tuple(c.dataset.columns.labels))
        heads.append(torch.cat([p.detach().flatten() for n, p in model.named_parameters() if "text" in n]))
    assert not torch.allclose(heads[0], heads[1])
