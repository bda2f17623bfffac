"""Real services for integration tests, started on loopback and stopped afterwards."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local Ray for the session: 2 CPUs, a capped object store, files under the test's tmp."""
    import ray

    tmp = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))  # Ray's socket paths must stay under 107 bytes
    os.environ["RAY_TMPDIR"] = str(tmp)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a throwaway loopback cluster: no token in ~/.ray
    ray.init(num_cpus=2, object_store_memory=256 * 1024**2, include_dashboard=False, log_to_driver=False,
             _temp_dir=str(tmp))
    yield
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)
