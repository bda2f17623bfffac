"""Manifests name the bad column or row; splits are by patient; subsets are nested."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from radscale.trainer.data import split as sp
from radscale.trainer.data.manifest import Columns, ManifestError, parse_manifest, read_manifest

COLS = Columns(report="report", labels=("effusion", "ett"), masks=("mask",))
GOOD = [
    {"image": "a/1.dcm", "patient_id": "p1", "study_id": "s1", "view": "PA", "report": "No effusion.",
     "effusion": "0", "ett": "1", "mask": "m/1.png"},
    {"image": "a/2.dcm", "patient_id": "p1", "study_id": "s2", "view": "AP", "report": "Effusion.",
     "effusion": "1", "ett": "", "mask": "m/2.png"},
    {"image": "a/3.dcm", "patient_id": "p2", "study_id": "s3", "view": "PA", "report": "Possible effusion.",
     "effusion": "-1", "ett": "0", "mask": ""},
]


def csv_bytes(rows) -> bytes:
    return pd.DataFrame(rows).to_csv(index=False).encode()


@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_reads_every_format(tmp_path, fmt):
    df = pd.DataFrame(GOOD)
    path = tmp_path / f"manifest.{fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "parquet":
        df.to_parquet(path)
    else:
        path.write_text("\n".join(json.dumps(r) for r in GOOD))
    m = read_manifest(f"file://{tmp_path}", path.name, COLS)
    assert len(m) == 3 and list(m.frame["image"]) == ["a/1.dcm", "a/2.dcm", "a/3.dcm"]
    labels = m.labels()
    assert labels[0].tolist() == [0.0, 1.0] and labels[2].tolist() == [-1.0, 0.0] and np.isnan(labels[1, 1])
    assert len(m.content_hash) == 64


def test_missing_columns_are_named():
    rows = [{k: v for k, v in r.items() if k != "ett"} for r in GOOD]
    with pytest.raises(ManifestError) as exc:
        parse_manifest(csv_bytes(rows), "m.csv", COLS)
    assert "column 'ett' is missing" in str(exc.value) and "'effusion'" in str(exc.value)


def test_unknown_label_values_name_rows():
    rows = [dict(r) for r in GOOD]
    rows[1]["effusion"], rows[2]["ett"] = "yes", "2"
    with pytest.raises(ManifestError) as exc:
        parse_manifest(csv_bytes(rows), "m.csv", COLS)
    msg = str(exc.value)
    assert "label column 'effusion'" in msg and "rows 3 are not" in msg
    assert "label column 'ett'" in msg and "rows 4 are not" in msg


def test_duplicates_and_empty_patients():
    rows = [dict(r) for r in GOOD] + [dict(GOOD[0])]
    rows[2]["patient_id"] = ""
    with pytest.raises(ManifestError) as exc:
        parse_manifest(csv_bytes(rows), "m.csv", COLS)
    msg = str(exc.value)
    assert "duplicate images in rows 5" in msg and "'patient_id': empty in rows 4" in msg
    assert "p1" not in msg, "patient ids stay out of messages"


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(ManifestError, match=r"name it \.csv, \.parquet or \.jsonl"):
        parse_manifest(b"x", "manifest.xlsx", COLS)
    with pytest.raises(ManifestError, match=r"not found; check spec\.dataset\.uri"):
        read_manifest(f"file://{tmp_path}", "nope.csv", COLS)


def test_split_is_by_patient_and_deterministic():
    rng = np.random.default_rng(0)
    patients = [f"p{int(i)}" for i in rng.integers(0, 400, 3000)]  # several images per patient
    images = [f"img/{i}.dcm" for i in range(3000)]
    a = sp.split_by_patient(patients, images, 0.3, seed=1)
    b = sp.split_by_patient(patients, images, 0.3, seed=1)
    c = sp.split_by_patient(patients, images, 0.3, seed=2)
    assert all(np.array_equal(x, y) for x, y in zip(dataclasses_astuple(a), dataclasses_astuple(b), strict=True))
    assert not np.array_equal(a.pool, c.pool)
    groups = [set(np.asarray(patients)[idx]) for idx in dataclasses_astuple(a)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not groups[i] & groups[j], "a patient appears in two splits"
    assert sum(len(x) for x in dataclasses_astuple(a)) == 3000
    assert 0.2 < (3000 - len(a.pool)) / 3000 < 0.4


def test_adding_patients_moves_nobody():
    patients = [f"p{i // 3}" for i in range(300)]
    images = [f"i{i}" for i in range(300)]
    before = sp.split_by_patient(patients, images, 0.25, seed=0)
    after = sp.split_by_patient([*patients, "new1", "new2"], [*images, "n1", "n2"], 0.25, seed=0)
    assert set(before.eval_test) <= set(after.eval_test) and set(before.pool) <= set(after.pool)


def test_subsets_are_nested_and_bounded():
    patients = [f"p{i // 2}" for i in range(1000)]
    images = [f"i{i}" for i in range(1000)]
    s = sp.split_by_patient(patients, images, 0.2, seed=3)
    small, big = sp.nested_subset(s, 100), sp.nested_subset(s, 400)
    assert set(small) < set(big) and list(big[:100]) == list(small)
    with pytest.raises(ValueError, match=f"exceeds the pretraining pool of {len(s.pool)} images"):
        sp.nested_subset(s, len(s.pool) + 1)


def dataclasses_astuple(s: sp.Split):
    return (s.pool, s.eval_train, s.eval_val, s.eval_test)


def test_missing_images_are_counted_lazily(tmp_path):
    from radscale.trainer.data.manifest import missing_images

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "1.dcm").write_bytes(b"x")
    m = parse_manifest(csv_bytes(GOOD), "m.csv", COLS)
    assert missing_images(m, f"file://{tmp_path}") == (2, 3)
    missing, checked = missing_images(m, f"file://{tmp_path}", sample=2, seed=1)
    assert checked == 2 and 0 <= missing <= 2
