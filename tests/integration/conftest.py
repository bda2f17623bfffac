"""Real services for integration tests, started on loopback and stopped afterwards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port, local_ray


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local Ray for the session: 2 CPUs, a capped object store, files under a short tmp."""
    with local_ray(object_store_mb=256):
        yield


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[str]:
    """A real MLflow tracking server (sqlite backend) on loopback, stopped after the session."""
    import subprocess
    import sys
    import time
    import urllib.request

    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    with open(root / "server.log", "wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([str(mlflow), "server", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
                                 "--default-artifact-root", str(root / "artifacts"), "--host", "127.0.0.1",
                                 "--port", str(port), "--workers", "1"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        raise RuntimeError(f"MLflow did not start:\n{(root / 'server.log').read_text()[-2000:]}")
    yield url
    proc.terminate()
    proc.wait(20)
