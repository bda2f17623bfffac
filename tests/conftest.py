from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

# CI has no GPU: Triton kernels run in the interpreter. It is read when kernels are defined (at
# import), so it must be set before any test module imports them.
if not Path("/dev/nvidiactl").exists():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
EXAMPLES = REPO / "manifests" / "examples"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture
def paper_study() -> dict[str, Any]:
    return load_yaml(EXAMPLES / "study.yaml")


@pytest.fixture
def local_study() -> dict[str, Any]:
    return load_yaml(EXAMPLES / "study-local.yaml")


_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _parts(path: str) -> list[str | int]:
    return [int(i) if i else k for k, i in _TOKEN.findall(path)]


def edit(doc: dict[str, Any], set_: dict[str, Any] | None = None, delete: list[str] | None = None) -> dict[str, Any]:
    """A copy of ``doc`` with dotted paths (``a.b[0].c``) set or deleted."""
    out = copy.deepcopy(doc)
    for path, value in (set_ or {}).items():
        *head, last = _parts(path)
        node = out
        for p in head:
            node = node[p]
        node[last] = value
    for path in delete or []:
        *head, last = _parts(path)
        node = out
        for p in head:
            node = node[p]
        del node[last]
    return out


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on loopback; credentials are dummies that moto accepts."""
    from moto.server import ThreadedMotoServer

    from tests.support import environ, free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    with environ(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing"):
        yield f"http://127.0.0.1:{port}"
        server.stop()
