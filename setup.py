"""Package discovery for setuptools; every other piece of metadata lives in pyproject.toml.

The folders ``operator/`` and ``trainer/`` are mapped under ``radscale.``: a top-level ``operator``
package would shadow the standard library module of that name. setuptools' own discovery cannot
map folders to other import names, and an explicit list of packages forgets the next subpackage
(the wheel once shipped no ``radscale/trainer/{data,evaluate,kernels,models,objectives}``). So here
every folder below a root that holds a ``.py`` file is a package, and every other file is package
data of the nearest package above it. tests/integration/test_wheel.py checks the built wheel
against the source tree.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
ROOTS = {"radscale": "radscale", "radscale.operator": "operator", "radscale.trainer": "trainer"}  # name -> folder


def shipped(path: Path, base: Path) -> bool:
    """Not a cache, bytecode, or a dot-file or dot-folder."""
    parts = path.relative_to(base).parts
    return not any(p.startswith(".") or p == "__pycache__" for p in parts) and path.suffix not in {".pyc", ".pyo"}


def discover() -> tuple[dict[str, str], list[str], dict[str, list[str]]]:
    """(package_dir, packages, package_data) of every root's tree."""
    packages: list[str] = []
    package_data: dict[str, list[str]] = {}
    for name, folder in ROOTS.items():
        base = HERE / folder
        files = sorted(p for p in base.rglob("*") if p.is_file() and shipped(p, base))
        dirs = sorted({p.parent for p in files if p.suffix == ".py"} | {base})
        names = {d: ".".join((name, *d.relative_to(base).parts)) for d in dirs}
        packages += names.values()
        for f in files:
            if f.suffix == ".py":
                continue
            owner = next(d for d in f.parents if d in names)  # the nearest package folder (base at last)
            package_data.setdefault(names[owner], []).append(f.relative_to(owner).as_posix())
    return dict(ROOTS), packages, package_data


PACKAGE_DIR, PACKAGES, PACKAGE_DATA = discover()

setup(package_dir=PACKAGE_DIR, packages=PACKAGES, package_data=PACKAGE_DATA)
