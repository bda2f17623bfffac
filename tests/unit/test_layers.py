"""The layers: the control plane never imports the data plane or its libraries, the data plane never
imports the control plane, and the bridge (radscale/) stands on neither."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.conftest import REPO

HEAVY = ("torch", "ray", "timm", "triton")
CONTROL_PLANE = sorted((REPO / "operator").rglob("*.py")) + sorted((REPO / "radscale").rglob("*.py"))
DATA_PLANE = sorted((REPO / "trainer").rglob("*.py"))
BRIDGE = sorted((REPO / "radscale").rglob("*.py"))


def _imports(path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


@pytest.mark.parametrize("path", CONTROL_PLANE, ids=lambda p: str(p.relative_to(REPO)))
def test_control_plane_source_never_imports_the_data_plane(path):
    for name in _imports(path):
        top = name.split(".")[0]
        assert top not in HEAVY, f"{path.name} imports {name}"
        assert not name.startswith("radscale.trainer"), f"{path.name} imports {name}"


@pytest.mark.parametrize("path", DATA_PLANE, ids=lambda p: str(p.relative_to(REPO)))
def test_the_data_plane_never_imports_the_control_plane(path):
    for name in _imports(path):
        assert not name.startswith("radscale.operator"), f"{path.name} imports {name}: use radscale.spec/tasks"


@pytest.mark.parametrize("path", BRIDGE, ids=lambda p: str(p.relative_to(REPO)))
def test_the_bridge_stands_on_neither_plane(path):
    for name in _imports(path):
        assert not name.startswith(("radscale.operator", "radscale.trainer")), f"{path.name} imports {name}"


def test_importing_the_trainer_entrypoints_loads_no_control_plane_module():
    code = ("import sys, radscale.trainer.prepare, radscale.trainer.pretrain, radscale.trainer.evaluate.stage, "
            "radscale.trainer.evaluate.sweep, radscale.trainer.evaluate.tasks\n"
            "print(','.join(sorted(m for m in sys.modules if m.startswith('radscale.operator'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == ""


def test_importing_the_operator_loads_no_heavy_module():
    code = (
        "import sys, importlib, pkgutil, radscale.operator as op, radscale.cells\n"
        "for m in pkgutil.iter_modules(op.__path__):\n"
        "    importlib.import_module('radscale.operator.' + m.name)\n"
        f"print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == ""


def test_operator_folder_never_shadows_the_stdlib_operator():
    # From the repo root, where the working directory is sys.path[0] and ./operator/ sits in it.
    code = "import operator, radscale.operator as o; print(operator.__file__); print(o.__file__)"
    env_py = sys.executable
    out = subprocess.run([env_py, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    stdlib_file, ours = out.stdout.split()
    assert "site-packages" not in stdlib_file and not stdlib_file.startswith(str(REPO))
    assert ours == str(REPO / "operator" / "__init__.py")


def test_a_bare_interpreter_in_the_repo_root_still_gets_the_stdlib_operator():
    # -S: no site, so nothing preloads the stdlib module; the repo root is sys.path[0].
    code = "import collections, operator; assert operator.eq(2, 2) and operator.itemgetter(1)([0, 7]) == 7"
    subprocess.run([sys.executable, "-S", "-c", code], check=True, cwd=REPO, capture_output=True)


def test_no_top_level_operator_or_trainer_package_is_installed():
    from importlib.metadata import distribution

    dist = distribution("radscale")
    top = (dist.read_text("top_level.txt") or "").split()
    assert "operator" not in top and "trainer" not in top
