"""Prepare once, reuse everywhere: phantom corpus -> Ray Data shards -> nested subsets -> rank-sharded loader."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from radscale.cells import CellResult
from radscale.operator import api, plan
from radscale.trainer.data import dicom, phantom, shards
from radscale.trainer.data.loader import PreparedDataset
from radscale.trainer.data.manifest import Columns, read_manifest

COLS = Columns(report="report", labels=phantom.LABELS, masks=("catheter_mask",))
PARAMS = shards.PrepParams(prep_size=64, eval_fraction=0.3, seed=0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    phantom.write_corpus(root, 90, seed=4, size=96)
    # two broken files: a truncated DICOM and a PDF posing as one
    rows = (root / "manifest.csv").read_text().splitlines()
    first = root / rows[1].split(",")[0]
    blob = first.read_bytes()
    first.write_bytes(blob[: len(blob) - len(blob) // 4])  # cut inside the pixel data
    second = root / rows[2].split(",")[0]
    second.write_bytes(b"%PDF-1.4" * 50)
    return root


@pytest.fixture(scope="module")
def prepared(corpus, ray_cluster, tmp_path_factory):
    out = tmp_path_factory.mktemp("prep") / "prep"
    man = read_manifest(f"file://{corpus}", "manifest.csv", COLS)
    report = shards.prepare(man, f"file://{corpus}", f"file://{out}", PARAMS)
    return out, man, report


def test_prepare_decodes_everything_once_and_reports_skips(prepared):
    out, _, report = prepared
    assert not report.reused and report.images == 90
    assert report.skipped == {str(dicom.SkipReason.DECODE_ERROR): 1, str(dicom.SkipReason.NOT_DICOM): 1}
    assert report.decoded == 88 == report.pool + sum(report.eval_images.values())
    assert report.bytes_written > 88 * 64 * 64 * 2 * 0.5
    index = json.loads((out / "index.json").read_text())
    assert index["fingerprint"] == report.fingerprint and index["imageShape"] == [64, 64]


def test_second_prepare_reuses_without_decoding(prepared, corpus, monkeypatch):
    out, man, report = prepared
    monkeypatch.setattr(shards.dicom, "load", lambda *a, **k: pytest.fail("decoded again"))
    again = shards.prepare(man, f"file://{corpus}", f"file://{out}", PARAMS)
    assert again.reused and again.decoded == 0 and again.fingerprint == report.fingerprint


def test_fingerprint_follows_manifest_and_params(prepared):
    _, man, report = prepared
    assert shards.fingerprint(man.content_hash, PARAMS) == report.fingerprint
    assert shards.fingerprint(man.content_hash, shards.PrepParams(96, 0.3, 0)) != report.fingerprint
    assert shards.fingerprint("0" * 64, PARAMS) != report.fingerprint


def test_no_patient_in_two_splits_and_no_patient_ids_in_shards(prepared):
    import pyarrow.parquet as pq

    out, man, _ = prepared
    ds = PreparedDataset(f"file://{out}", labels=phantom.LABELS)
    pool_patients = set()
    for path in (out / "pool").glob("*.parquet"):
        pool_patients |= set(pq.read_table(path, columns=["patient"]).column("patient").to_pylist())
    eval_patients = {name: set() for name in ("train", "val", "test")}
    for path in (out / "eval").glob("*.parquet"):
        t = pq.read_table(path, columns=["patient", "split"])
        for p, s in zip(t.column("patient").to_pylist(), t.column("split").to_pylist(), strict=True):
            eval_patients[s].add(p)
    groups = [pool_patients, *eval_patients.values()]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not groups[i] & groups[j]
    raw_ids = set(man.frame["patient"])
    assert not (pool_patients | set().union(*eval_patients.values())) & raw_ids, "patient ids must be hashed"
    assert ds.eval_split("test").images.shape[1:] == (64, 64)


def test_subsets_are_nested_prefixes(prepared):
    out, _, report = prepared
    ds = PreparedDataset(f"file://{out}", labels=phantom.LABELS)
    small = {int(r) for b in ds.iter_batches(20, batch_size=8) for r in b.row_ids}
    big = {int(r) for b in ds.iter_batches(40, batch_size=8) for r in b.row_ids}
    assert len(small) == 20 and len(big) == 40 and small < big
    with pytest.raises(ValueError, match=f"prepared pool of {report.pool} images"):
        ds.subset_files(report.pool + 1)


def test_ranks_are_disjoint_deterministic_and_reshuffled_per_epoch(prepared):
    out, _, _ = prepared
    ds = PreparedDataset(f"file://{out}", labels=phantom.LABELS, masks=("catheter_mask",))

    def rows(rank: int, epoch: int) -> list[int]:
        return [int(r) for b in ds.iter_batches(41, batch_size=5, rank=rank, world_size=2, epoch=epoch, seed=3)
                for r in b.row_ids]

    r0, r1 = rows(0, 0), rows(1, 0)
    # one epoch of 41 rows: the ranks split it with nothing dropped (the tail batch is rank 0's alone)
    assert len(r0) + len(r1) == 41 and len(set(r0) | set(r1)) == 41 and not set(r0) & set(r1)
    assert rows(0, 0) == r0, "same seed and epoch, same order"
    assert rows(0, 1) != r0, "a new epoch reshuffles"
    batch = next(ds.iter_batches(41, batch_size=5))
    assert batch.images.dtype == np.uint16 and batch.images.shape == (5, 64, 64)
    assert batch.labels.shape == (5, len(phantom.LABELS)) and len(batch.reports) == 5
    assert batch.masks["catheter_mask"].shape == (5, 64, 64)
    assert batch.images.max() > 30000, "images use the uint16 range"


def test_shards_hold_each_rows_own_image_and_mask(prepared, corpus):
    """Every stored row is its manifest row's file decoded and resized directly, and its mask the
    mask file cropped and resized alike; rows written after skipped ones included."""
    from PIL import Image

    out, man, report = prepared
    ds = PreparedDataset(f"file://{out}", labels=phantom.LABELS, masks=("catheter_mask",))
    batches = [*ds.iter_batches(report.pool, batch_size=16), *(ds.eval_split(s) for s in ("train", "val", "test"))]
    seen, with_mask = 0, 0
    for batch in batches:
        for row, image, mask in zip(batch.row_ids, batch.images, batch.masks["catheter_mask"], strict=True):
            entry = man.frame.iloc[int(row)]
            want = dicom.to_uint16(dicom.resize_square(dicom.load(f"file://{corpus}/{entry['image']}").image, 64))
            np.testing.assert_array_equal(image, want)
            if isinstance(entry["catheter_mask"], str) and entry["catheter_mask"]:
                src = Image.open(corpus / entry["catheter_mask"]).convert("L")
                small = src.resize((64, 64), Image.Resampling.NEAREST, box=dicom.center_box(*src.size))
                np.testing.assert_array_equal(mask, np.asarray(small) > 127)
                with_mask += mask.any()
            else:
                assert not mask.any()
            seen += 1
    assert seen == report.decoded and with_mask > 0


def test_prepare_entrypoint_on_s3(tmp_path, s3_endpoint, monkeypatch):
    """The RayJob entrypoint end to end against an S3 API (moto on loopback) through s3fs."""
    import s3fs

    src = tmp_path / "corpus"
    phantom.write_corpus(src, 24, seed=8, size=80)
    fs = s3fs.S3FileSystem(key="testing", secret="testing", endpoint_url=s3_endpoint)
    fs.mkdir("cxr")
    fs.put(str(src) + "/", "cxr/data/", recursive=True)
    study = api.ScalingStudy.model_validate({
        "metadata": {"name": "s3study"},
        "spec": {
            "dataset": {"uri": "s3://cxr/data", "endpoint": s3_endpoint,
                        "columns": {"report": "report", "labels": list(phantom.LABELS), "masks": ["catheter_mask"]},
                        "split": {"evalFraction": 0.25, "seed": 1}},
            "sizes": [4, 8, 12], "computeBudget": {"steps": 10, "globalBatchSize": 4, "checkpointEvery": 5},
            "encoders": [{"name": "d", "paradigm": "dino", "model": "vit_tiny_patch16_224", "imageSize": 64}],
            "evaluation": {"tasks": [{"name": "f", "kind": "classification", "labels": ["nodule"]}]},
            "output": "s3://cxr/out",
        },
    })
    p = plan.plan(study)
    cell = plan.cell_spec(study, p, None, api.Stage.PREPARE)
    cell_file = tmp_path / "cell.json"
    cell_file.write_text(cell.to_json())
    ray_tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    env = {"RAY_TMPDIR": ray_tmp, "HOME": str(tmp_path), "RAY_AUTH_MODE": "disabled",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    import os

    proc = subprocess.run([sys.executable, "-m", "radscale.trainer.prepare", "--cell", str(cell_file)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["decoded"] == 24 and not summary["reused"]
    result = CellResult.model_validate_json(fs.cat(cell.result_uri.removeprefix("s3://")))
    assert result.prepare is not None and result.prepare.images == 24
    assert fs.exists(cell.shards.removeprefix("s3://") + "/index.json")
    ds = PreparedDataset(cell.shards, labels=("nodule",), endpoint=s3_endpoint)
    assert len(next(ds.iter_batches(4, batch_size=4)).row_ids) == 4
    shutil.rmtree(ray_tmp, ignore_errors=True)


def test_prepare_entrypoint_refuses_a_bad_manifest(tmp_path):
    (tmp_path / "manifest.csv").write_text("image,patient_id\nx.dcm,p1\n")
    study = api.ScalingStudy.model_validate({
        "metadata": {"name": "bad"},
        "spec": {
            "dataset": {"uri": f"file://{tmp_path}", "columns": {"labels": ["nodule"]}},
            "sizes": [1, 2, 3], "computeBudget": {"steps": 10, "globalBatchSize": 4, "checkpointEvery": 5},
            "encoders": [{"name": "d", "paradigm": "dino", "model": "vit_tiny_patch16_224", "imageSize": 64}],
            "evaluation": {"tasks": [{"name": "f", "kind": "classification", "labels": ["nodule"]}]},
            "output": f"file://{tmp_path}/out",
        },
    })
    cell = plan.cell_spec(study, plan.plan(study), None, api.Stage.PREPARE)
    proc = subprocess.run([sys.executable, "-m", "radscale.trainer.prepare", "--cell", cell.to_json()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "column 'study_id' is missing" in proc.stderr and "column 'nodule' is missing" in proc.stderr
