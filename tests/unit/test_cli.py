"""The `radscale` CLI contract: validate, crd, plan, --version, as users and pipelines call it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from radscale import __version__
from radscale.operator import crd
from tests.conftest import EXAMPLES, REPO, edit, load_yaml

RADSCALE = shutil.which("radscale", path=str(REPO / ".venv" / "bin")) or shutil.which("radscale")


def run(*args: str, cwd=REPO) -> subprocess.CompletedProcess[str]:
    cmd = [RADSCALE, *args] if RADSCALE else [sys.executable, "-m", "radscale.operator.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=120)


def test_version():
    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"radscale {__version__}"


def test_validate_accepts_the_examples():
    out = run("validate", str(EXAMPLES / "study.yaml"), str(EXAMPLES / "study-local.yaml"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout == ""


def test_validate_prints_one_line_per_problem(tmp_path):
    doc = edit(load_yaml(EXAMPLES / "study.yaml"), {"spec.retries": 99, "spec.encoders[1].paradigm": "mae"})
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    out = run("validate", str(bad))
    assert out.returncode == 1
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2
    assert any(line.startswith("spec.retries: ") for line in lines)
    assert any(line.startswith("spec.encoders[1].paradigm: ") for line in lines)
    assert "2 problem(s)" in out.stderr


def test_validate_fails_if_any_file_fails(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(edit(load_yaml(EXAMPLES / "study.yaml"), {"spec.sizes": []})))
    out = run("validate", str(EXAMPLES / "study.yaml"), str(bad))
    assert out.returncode == 1 and out.stdout.startswith("spec.sizes: ")


def test_validate_reports_cross_field_rules(tmp_path):
    doc = edit(load_yaml(EXAMPLES / "study.yaml"), {"spec.computeBudget.steps": 100},)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    out = run("validate", str(bad))
    assert out.returncode == 1
    assert "spec.computeBudget.steps: budget too small" in out.stdout


def test_validate_missing_file_and_bad_yaml(tmp_path):
    out = run("validate", str(tmp_path / "nope.yaml"))
    assert out.returncode == 1 and "nope.yaml" in out.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n")
    out = run("validate", str(broken))
    assert out.returncode == 1 and "not valid YAML at line" in out.stdout


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n", "---\n# c\n---\n"])
def test_validate_refuses_a_file_with_no_study(tmp_path, text):
    empty = tmp_path / "empty.yaml"
    empty.write_text(text)
    out = run("validate", str(empty))
    assert out.returncode == 1
    assert f"{empty}: no ScalingStudy found" in out.stderr


def test_validate_checks_every_document_of_a_file(tmp_path):
    good = load_yaml(EXAMPLES / "study.yaml")
    bad = edit(good, {"spec.retries": 99})
    both = tmp_path / "two.yaml"
    both.write_text(yaml.safe_dump_all([good, bad]))
    out = run("validate", str(both))
    assert out.returncode == 1
    assert f"{both} (document 1): valid" in out.stderr
    assert f"{both} (document 2): 1 problem(s)" in out.stderr and "spec.retries" in out.stdout


def test_replicates_multiply_the_cells_and_keep_the_first_names(tmp_path):
    def plan_of(replicates: int) -> dict:
        path = tmp_path / f"r{replicates}.yaml"
        path.write_text(yaml.safe_dump(edit(load_yaml(EXAMPLES / "study-local.yaml"), {"spec.replicates": replicates})))
        return yaml.safe_load(run("plan", str(path), "--json").stdout)

    one, three = plan_of(1), plan_of(3)
    names1 = {c["cell"] for c in one["cells"]}
    names3 = {c["cell"] for c in three["cells"]}
    assert {c["replicate"] for c in three["cells"]} == {0, 1, 2}
    assert names1 < names3 and len(names3) == 3 * len(names1)
    assert all(n.endswith(("-r1", "-r2")) for n in names3 - names1)


def test_crd_prints_the_rendered_crd():
    out = run("crd")
    assert out.returncode == 0
    assert yaml.safe_load(out.stdout) == crd.crd()


def test_plan_json_is_machine_readable():
    out = run("plan", str(EXAMPLES / "study.yaml"), "--json")
    assert out.returncode == 0
    data = json.loads(out.stdout)
    assert data["study"] == "cxr" and len(data["cells"]) == 24  # 2 encoders x (5 sizes + baseline) x 2 replicates
    assert data["budget"]["images"] == 50000 * 512
    first = data["cells"][1]
    assert first == {"cell": "cxr-rad-dino-30k", "encoder": "rad-dino", "size": 30000, "replicate": 0,
                     "stages": ["pretrain", "evaluate"], "rayJobs": ["cxr-rad-dino-30k-pt", "cxr-rad-dino-30k-ev"]}


def test_plan_table_for_people():
    out = run("plan", str(EXAMPLES / "study-local.yaml"))
    assert out.returncode == 0
    assert "cxr-local-dino-128-pt -> cxr-local-dino-128-ev" in out.stdout
    assert "cxr-local-dino-128-r1-pt -> cxr-local-dino-128-r1-ev" in out.stdout
    assert "constant compute: 64 steps x 32 = 2,048 images" in out.stdout


def test_plan_refuses_an_invalid_study(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(edit(load_yaml(EXAMPLES / "study.yaml"), {"spec.attention": "flash"})))
    out = run("plan", str(bad))
    assert out.returncode == 1 and "spec.attention" in out.stderr


@pytest.mark.parametrize("args", [[], ["frobnicate"]])
def test_usage_errors_exit_2(args):
    assert run(*args).returncode == 2


def test_plan_prints_one_cell_spec_as_its_rayjob_receives_it():
    from radscale.cells import CellSpec

    out = run("plan", str(EXAMPLES / "study.yaml"), "--cell", "cxr-mi2-30k", "--stage", "evaluate")
    assert out.returncode == 0, out.stderr
    cell = CellSpec.model_validate_json(out.stdout)
    assert cell.stage == "evaluate" and cell.weights.endswith("cxr-mi2-30k/encoder.safetensors")
    prep = CellSpec.model_validate_json(run("plan", str(EXAMPLES / "study.yaml"), "--cell", "cxr-prep").stdout)
    assert prep.stage == "prepare" and "/prep/" in prep.shards
    bad = run("plan", str(EXAMPLES / "study.yaml"), "--cell", "cxr-nope")
    assert bad.returncode == 1 and "cells: cxr-prep, cxr-rad-dino-base" in bad.stderr
