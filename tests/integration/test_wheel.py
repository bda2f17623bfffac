"""The wheel is the product: a non-editable install (what docker/trainer.Dockerfile does) must hold
every module and data file of the source tree, and run the trainer stages and import the operator.

The build context is what the Dockerfile copies; ``python -m build --no-isolation`` (offline, the
venv's setuptools) makes the sdist and, from it, the wheel. The wheel goes into a fresh venv with
``pip --no-index --no-deps``; the test venv's site-packages is appended through a ``.pth`` file for
the dependencies. A ``.pth`` path is not a site dir, so the test venv's editable-install finder is
not loaded there: only the wheel's ``radscale`` can be imported. Each stage then runs as a child of
the fresh venv's python, without RAY_ADDRESS, so it starts its own local Ray whose workers run that
python too (a shared session cluster would run the editable checkout and prove nothing).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from radscale.operator import api, plan
from radscale.trainer.data import phantom

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "docker" / "trainer.Dockerfile"
# source folder -> where its files land in the wheel
ROOTS = {"radscale": "radscale", "operator": "radscale/operator", "trainer": "radscale/trainer"}
HEAVY = ("torch", "ray", "timm", "triton")


def source_files() -> dict[str, Path]:
    """Every file the wheel must hold (its path in the wheel -> the source file): all of the three
    roots but caches, bytecode and dot-files, the same rule as setup.py's, written out again here."""
    out = {}
    for folder, target in ROOTS.items():
        base = REPO / folder
        for path in base.rglob("*"):
            rel = path.relative_to(base)
            if not path.is_file() or path.suffix in {".pyc", ".pyo"} \
                    or any(p.startswith(".") or p == "__pycache__" for p in rel.parts):
                continue
            out[f"{target}/{rel.as_posix()}"] = path
    return out


def docker_context(dest: Path) -> None:
    """The files the trainer image's COPY lines put beside its ``pip install .``."""
    copies = [line.split()[1:] for line in DOCKERFILE.read_text().splitlines() if line.startswith("COPY ")]
    assert copies, f"{DOCKERFILE} has no COPY lines"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
    for args in copies:
        *sources, target = [a for a in args if not a.startswith("--")]
        for src in sources:
            path = REPO / src
            to = dest / target / path.name if target.endswith("/") or len(sources) > 1 else dest / target
            if path.is_dir():
                shutil.copytree(path, to, ignore=ignore, dirs_exist_ok=True)
            else:
                to.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, to)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    """The sdist and the wheel built from it, offline."""
    root = tmp_path_factory.mktemp("wheel")
    ctx, out = root / "context", root / "dist"
    docker_context(ctx)
    proc = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ctx)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    wheels, sdists = sorted(out.glob("radscale-*.whl")), sorted(out.glob("radscale-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in out.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed (not editable); its python."""
    root = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    python = root / "bin" / "python"
    # Install before the .pth exists: pip then sees only the empty venv, not the editable radscale.
    proc = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index",
                           "--no-deps", "--disable-pip-version-check", str(dist["wheel"])],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(site) / "zz-radscale-test-deps.pth").write_text("".join(f"{p}\n" for p in sorted(deps)))
    return python


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[dict[str, str]]:
    """The children's environment: no RAY_ADDRESS (each job starts its own Ray), Ray's files and
    HOME under a short temporary folder, a capped object store."""
    tmp = Path(tempfile.mkdtemp(prefix="rsw", dir="/tmp"))  # Ray's socket paths must stay under 107 bytes
    out = {k: v for k, v in os.environ.items() if k not in {"RAY_ADDRESS", "PYTHONPATH", "PYTHONHOME"}}
    out.update(RAY_TMPDIR=str(tmp), HOME=str(tmp), RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0",
               RAY_DEFAULT_OBJECT_STORE_MAX_MEMORY_BYTES=str(256 * 1024**2), PYTHONNOUSERSITE="1")
    yield out
    shutil.rmtree(tmp, ignore_errors=True)


def run_py(python: Path, code: str, env: dict[str, str], cwd: Path) -> dict:
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=env, cwd=cwd, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_wheel_ships_every_file_of_the_source_tree(dist):
    with zipfile.ZipFile(dist["wheel"]) as zf:
        shipped = {n for n in zf.namelist() if not n.split("/")[0].endswith(".dist-info")}
    expected = source_files()
    missing = sorted(set(expected) - shipped)
    packages = sorted({m.rsplit("/", 1)[0].replace("/", ".") for m in missing})
    assert not missing, f"the wheel lacks {len(missing)} files of the source tree, in {packages}: {missing}"
    extra = sorted(shipped - set(expected))
    assert not extra, f"the wheel holds files that are not in the source tree: {extra}"
    # the sdist (the wheel was built from it) holds the same sources under their folders
    import tarfile

    with tarfile.open(dist["sdist"]) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    sources = {p.relative_to(REPO).as_posix() for p in expected.values()}
    assert not sources - names, sorted(sources - names)


def test_the_venv_imports_every_module_from_the_wheel_and_ray_workers_do_too(venv, env, tmp_path):
    code = (
        "import importlib, json, pkgutil, sys, ray, radscale\n"
        "mods = [m.name for m in pkgutil.walk_packages(radscale.__path__, 'radscale.')"
        " if not m.name.endswith('.__main__')]\n"
        "files = {m: getattr(importlib.import_module(m), '__file__', None) for m in mods}\n"
        "def where():\n"
        "    import sys, radscale.trainer.data\n"
        "    return sys.executable, radscale.trainer.data.__file__\n"
        "ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)\n"
        "worker = ray.get(ray.remote(where).remote())\n"
        "ray.shutdown()\n"
        "print(json.dumps({'prefix': sys.prefix, 'radscale': radscale.__file__, 'files': files, 'worker': worker,"
        " 'editable': sorted(m for m in sys.modules if m.startswith('__editable__'))}))\n"
    )
    out = run_py(venv, code, env, tmp_path)
    prefix = out["prefix"]
    assert prefix == str(venv.parent.parent)
    assert out["radscale"].startswith(prefix), out["radscale"]
    assert not out["editable"], out["editable"]
    outside = {m: f for m, f in out["files"].items() if not (f or "").startswith(prefix)}
    assert not outside, outside
    for sub in ("data", "evaluate", "kernels", "models", "objectives"):
        assert f"radscale.trainer.{sub}" in out["files"]
    executable, data_file = out["worker"]
    assert executable.startswith(prefix) and data_file.startswith(prefix), out["worker"]


def test_the_operator_imports_without_torch_from_the_wheel(venv, env, tmp_path):
    code = (
        # A finder that refuses the heavy packages acts as if they were not installed. (A None entry in
        # sys.modules would too, but scipy probes sys.modules['torch'] for its array API and trips on None.)
        "import importlib, importlib.abc, json, pkgutil, sys\n"
        "class Refuse(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {HEAVY!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Refuse())\n"
        "import radscale.operator as op, radscale.operator.handlers as h\n"
        "for m in pkgutil.iter_modules(op.__path__):\n"
        "    importlib.import_module('radscale.operator.' + m.name)\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print(json.dumps({'handlers': h.__file__, 'prefix': sys.prefix, 'heavy': heavy}))\n"
    )
    out = run_py(venv, code, env, tmp_path)
    assert out["handlers"].startswith(out["prefix"]) and not out["heavy"], out


def test_a_tiny_cell_runs_prepare_pretrain_and_evaluate_from_the_wheel(venv, env, tmp_path):
    from radscale.cells import CellResult

    corpus = tmp_path / "corpus"
    phantom.write_corpus(corpus, 160, seed=7, size=48)
    doc = api.ScalingStudy.model_validate({
        "metadata": {"name": "wheel", "namespace": "ml"},
        "spec": {
            "dataset": {"uri": f"file://{corpus}", "columns": {"report": "report", "labels": list(phantom.LABELS)},
                        "split": {"evalFraction": 0.4, "seed": 0}, "prepSize": 32},
            "sizes": [32], "computeBudget": {"steps": 4, "globalBatchSize": 8, "checkpointEvery": 2},
            "encoders": [{"name": "dino", "paradigm": "dino", "model": "vit_tiny_patch16_224", "imageSize": 32,
                          "prototypes": 64, "optimizer": {"lr": 0.0005, "warmupSteps": 1}}],
            "attention": "sdpa",
            "resources": {"prepare": {"cpus": 1}, "pretrain": {"workers": 1, "cpus": 1}, "evaluate": {"cpus": 1}},
            "evaluation": {
                "tasks": [{"name": "lines-tubes", "kind": "classification", "labels": ["ett", "ngt", "cvc"]}],
                "sweep": {"numSamples": 2, "searchSpace": {"lr": {"type": "loguniform", "low": 0.001, "high": 0.01},
                                                           "epochs": {"type": "choice", "values": [1]}}},
                "baselines": False,
            },
            "output": f"file://{tmp_path}/out",
        },
    })
    p = plan.plan(doc)
    [cell] = p.cells
    specs = [plan.cell_spec(doc, p, None, api.Stage.PREPARE), plan.cell_spec(doc, p, cell, api.Stage.PRETRAIN),
             plan.cell_spec(doc, p, cell, api.Stage.EVALUATE)]
    summaries = {}
    for spec in specs:
        python, *argv = spec.entrypoint()  # what the RayJob runs: python -m radscale.trainer.<stage> --cell ...
        assert python == "python"
        proc = subprocess.run([str(venv), *argv], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=400)
        assert proc.returncode == 0, f"{spec.stage}:\n{proc.stderr[-4000:]}"
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        summaries[str(spec.stage)] = json.loads(lines[-1])
    assert summaries["prepare"]["images"] == 160
    assert summaries["pretrain"]["pretrain"]["steps"] == 4
    result = CellResult.model_validate_json(Path(specs[2].result_uri.removeprefix("file://")).read_text())
    assert result.pretrain.steps == 4 and set(result.evaluate) == {"lines-tubes"}
