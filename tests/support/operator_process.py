"""The real operator as a process: ``kopf run --standalone -m radscale.operator.handlers``.

Started against the API emulator with its own kubeconfig (the kubernetes client reads
``$KUBECONFIG`` at import time, so it must be in the child's environment, not set later).
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

from tests.support import free_port


class OperatorProcess:
    def __init__(self, kubeconfig: pathlib.Path, log: pathlib.Path, env: dict[str, str | None] | None = None,
                 namespace: str | None = None, cpus: set[int] | None = None):
        self.kubeconfig, self.log = kubeconfig, log
        self.cpus = cpus  # pin the operator to these cores (benchmarks keep it off the emulator's)
        self.env = env or {}
        self.namespace = namespace
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.metrics_port = self.liveness_port = 0

    def start(self, wait: bool = True) -> OperatorProcess:
        self.metrics_port, self.liveness_port = free_port(), free_port()
        scope = [f"--namespace={self.namespace}"] if self.namespace else ["--all-namespaces"]
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "RADSCALE_METRICS_PORT": str(self.metrics_port),
            "RADSCALE_RESYNC_SECONDS": "1",
            "RADSCALE_RETRY_BACKOFF_SECONDS": "0.2",
            "RADSCALE_RETRY_BACKOFF_MAX_SECONDS": "1",
            "RADSCALE_VANISH_GRACE_SECONDS": "5",
            **self.env,
        }
        env = {k: v for k, v in env.items() if v is not None}  # None unsets: e.g. no AWS keys but the Secret's
        cmd = [sys.executable, "-m", "kopf", "run", "--standalone", *scope,
               f"--liveness=http://127.0.0.1:{self.liveness_port}/healthz", "-m", "radscale.operator.handlers"]
        self.starts += 1
        with open(self.log, "ab") as fh:
            fh.write(f"\n===== start {self.starts} =====\n".encode())
            cpus = self.cpus
            self.proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"the operator exited ({self.proc and self.proc.returncode}):\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"the operator was not live after {timeout}s:\n{self.tail()}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """SIGKILL: no cleanup, no finalizer removal, in-flight requests cut."""
        if self.alive:
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.alive:
            assert self.proc is not None
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill9()

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            return r.read().decode()

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def __enter__(self) -> OperatorProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
