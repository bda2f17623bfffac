"""A whole study on local Ray, no cluster: ``radscale run STUDY.yaml``.

The same plan, the same reconcile core and the same effects class (:class:`effects.Effects`) as
the operator, with :class:`LocalCluster` in place of the Kubernetes API: a "RayJob" is a child
process running the very entrypoint a RayJob runs (``python -m radscale.trainer.<stage> --cell
…``), against one local Ray cluster that the runner starts and stops (or ``$RAY_ADDRESS``). The
same cell spec goes in and the same ``result.json`` comes out; this module imports no torch or ray.

State lives in the study's output: ``<output>/status.json`` is the CR's ``.status``, rewritten on
every change. Ctrl-C stops the children and marks their cells Suspended; running again resumes:
finished cells are kept, interrupted ones restart from their checkpoints without using a retry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from radscale.cells import PROGRESS_MARKER, join_uri, storage_options
from radscale.operator import api, effects, kube, reconcile, validation

STATUS_FILE = "status.json"
NAMESPACE = "local"
STOP_GRACE_S = 15.0


class RunError(RuntimeError):
    """The study cannot run locally: the message says what to do."""


# ---- children -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Child:
    manifest: dict[str, Any]
    proc: subprocess.Popen
    log: Path
    started: float
    ended: float | None = None

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()


def _tail(path: Path, size: int = 16384) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - size))
            return fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []


def failure_message(lines: list[str], code: int) -> str:
    """The job's own 'error: …' line (what a RayJob's message shows), else its last line."""
    for line in reversed(lines):
        if line.startswith("error:"):
            return line.removeprefix("error:").strip()[:900]
    last = next((ln for ln in reversed(lines) if ln.strip()), "")
    return f"exit code {code}: {last.strip()[:800]}"


def progress_of(lines: list[str]) -> dict[str, Any] | None:
    """The latest progress line of a job's log."""
    for line in reversed(lines):
        at = line.find(PROGRESS_MARKER)
        if at >= 0:
            with contextlib.suppress(ValueError):
                return json.loads(line[at + len(PROGRESS_MARKER):])
    return None


class LocalCluster:
    """kube.Cluster over local processes: create_job starts the RayJob's entrypoint as a child."""

    def __init__(self, body: dict[str, Any], logs: Path, env: dict[str, str], dashboard: str | None,
                 on_status: Callable[[dict[str, Any]], None] = lambda status: None):
        self.body, self.logs, self.env, self.dashboard, self.on_status = body, logs, env, dashboard, on_status
        self.children: dict[str, Child] = {}
        logs.mkdir(parents=True, exist_ok=True)

    # kube.Cluster
    def get_study(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.body

    def list_jobs(self, namespace: str, study: str) -> dict[str, dict[str, Any]]:
        return {name: self._rayjob(name, child) for name, child in self.children.items()}

    def create_job(self, namespace: str, manifest: dict[str, Any]) -> None:
        name = manifest["metadata"]["name"]
        if name in self.children:
            return  # exists: counts as created, as a 409 does
        argv = shlex.split(manifest["spec"]["entrypoint"])
        if argv and argv[0] == "python":
            argv[0] = sys.executable
        env = {**self.env, **_runtime_env(manifest)}
        log = self.logs / f"{name}.log"
        with open(log, "ab") as fh:
            proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                    start_new_session=True,  # Ctrl-C reaches the runner, which stops children
                                    preexec_fn=_default_sigint)
        self.children[name] = Child(manifest, proc, log, time.monotonic())

    def delete_job(self, namespace: str, name: str) -> None:
        child = self.children.pop(name, None)
        if child is not None:
            stop([child])

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.body["status"] = status
        self.on_status(status)

    def secret(self, namespace: str, name: str) -> dict[str, str]:
        return {}  # local runs read credentials from the environment, as s3fs does

    # helpers
    def _rayjob(self, name: str, child: Child) -> dict[str, Any]:
        code = child.returncode
        status: dict[str, Any] = {"dashboardURL": self.dashboard} if self.dashboard else {}
        if code is None:
            status.update(jobDeploymentStatus="Running", jobStatus="RUNNING")
        elif code == 0:
            status.update(jobDeploymentStatus="Complete", jobStatus="SUCCEEDED")
        else:
            status.update(jobDeploymentStatus="Failed", jobStatus="FAILED",
                          reason="BadInput" if code == 2 else "AppFailed",
                          message=failure_message(_tail(child.log), code))
        return {"metadata": dict(child.manifest["metadata"]), "spec": child.manifest["spec"], "status": status}

    def running(self) -> list[Child]:
        return [c for c in self.children.values() if c.returncode is None]


def _runtime_env(manifest: dict[str, Any]) -> dict[str, str]:
    import yaml

    text = manifest["spec"].get("runtimeEnvYAML")
    env = ((yaml.safe_load(text) or {}).get("env_vars") or {}) if text else {}
    return {str(k): str(v) for k, v in env.items()}


def _default_sigint() -> None:
    """In a child before exec: SIGINT back to its default. A shell runs background jobs with SIGINT
    ignored and children inherit that, so :func:`stop`'s clean SIGINT would not reach the job's
    Ray driver and every stop would wait out the grace period for SIGKILL."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop(children: list[Child], grace_s: float = STOP_GRACE_S) -> None:
    """SIGINT each child's process group (Ray drivers shut down cleanly), then SIGKILL stragglers."""
    for child in children:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.proc.pid, signal.SIGINT)
    deadline = time.monotonic() + grace_s
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(max(0.1, deadline - time.monotonic()))
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.proc.pid, signal.SIGKILL)
            child.proc.wait()


# ---- local Ray ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class LocalRay:
    address: str
    dashboard: str | None
    proc: subprocess.Popen | None = None
    tmp: str | None = None


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def local_ray(num_cpus: int | None, dashboard: bool, env: dict[str, str]) -> Iterator[LocalRay]:
    """``$RAY_ADDRESS`` when set; else a head node of our own (``ray start --head --block``), stopped after."""
    if env.get("RAY_ADDRESS"):
        yield LocalRay(env["RAY_ADDRESS"], None)
        return
    ray_bin = Path(sys.executable).parent / "ray"
    if not ray_bin.exists():
        raise RunError(f"{ray_bin} not found: install the trainer extra (pip install 'radscale[trainer]')")
    tmp = tempfile.mkdtemp(prefix="rs", dir="/tmp")  # Ray's socket paths must stay under 107 bytes
    port, dash_port = _free_port(), _free_port()
    argv = [str(ray_bin), "start", "--head", "--block", f"--port={port}", "--node-ip-address=127.0.0.1",
            f"--temp-dir={tmp}", "--disable-usage-stats", f"--include-dashboard={str(dashboard).lower()}"]
    if dashboard:
        argv += ["--dashboard-host=127.0.0.1", f"--dashboard-port={dash_port}"]
    if num_cpus:
        argv.append(f"--num-cpus={num_cpus}")
    log = open(Path(tmp) / "head.log", "wb")  # noqa: SIM115 (closed with the head below)
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while b"Ray runtime started" not in (Path(tmp) / "head.log").read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RunError("the local Ray head did not start:\n"
                               + (Path(tmp) / "head.log").read_text(errors="replace")[-2000:])
            time.sleep(0.3)
        yield LocalRay(f"127.0.0.1:{port}", f"http://127.0.0.1:{dash_port}" if dashboard else None, proc, tmp)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        with contextlib.suppress(ProcessLookupError):  # raylet, GCS and workers share the head's group
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        log.close()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


# ---- the run -------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Options:
    status_out: str | None = None
    num_cpus: int | None = None
    dashboard: bool = True
    tick_s: float = 1.0
    retry_backoff_s: float = 2.0


def tracking_store(spec: api.ScalingStudySpec) -> Path:
    """Where the default MLflow store lives: beside a local output, else in ./.radscale."""
    out = spec.output
    base = Path(out.removeprefix("file://")) if out.startswith("file://") or "://" not in out else Path(".radscale")
    base.mkdir(parents=True, exist_ok=True)
    return base.resolve()


@contextlib.contextmanager
def local_mlflow(spec: api.ScalingStudySpec) -> Iterator[tuple[str, str | None]]:
    """(tracking URI for the jobs, the sqlite store behind it): the spec's URI, else an MLflow server of
    our own on loopback over a sqlite store. One server serialises the writes of concurrent jobs (a
    shared sqlite file does not: two jobs creating its tables at once fail), and it stops with the run."""
    if spec.tracking.uri:
        yield spec.tracking.uri, None
        return
    import urllib.request

    root = tracking_store(spec)
    store = f"sqlite:///{root / 'mlflow.db'}"
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    if not mlflow_bin.exists():
        raise RunError(f"{mlflow_bin} not found: install the trainer extra, or set spec.tracking.uri")
    port = _free_port()
    with open(root / "mlflow-server.log", "ab") as log:
        proc = subprocess.Popen([str(mlflow_bin), "server", "--backend-store-uri", store, "--default-artifact-root",
                                 str(root / "mlartifacts"), "--host", "127.0.0.1", "--port", str(port),
                                 "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RunError(f"the local MLflow server did not start; see {root / 'mlflow-server.log'}") \
                        from None
                time.sleep(0.5)
        yield url, store
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _fs(uri: str, spec: api.ScalingStudySpec) -> tuple[Any, str]:
    import fsspec

    return fsspec.core.url_to_fs(uri, **storage_options(uri, spec.dataset.endpoint))


def read_status(spec: api.ScalingStudySpec) -> api.ScalingStudyStatus | None:
    fs, path = _fs(join_uri(spec.output, STATUS_FILE), spec)
    try:
        if not fs.exists(path):
            return None
        return api.ScalingStudyStatus.model_validate_json(fs.cat_file(path))
    except ValueError as exc:
        raise RunError(f"{join_uri(spec.output, STATUS_FILE)} is not a study status ({exc}); move it away to "
                       "start the study afresh") from exc


def resumable(status: api.ScalingStudyStatus) -> api.ScalingStudyStatus:
    """A status left by an interrupted run: what was running restarts from its checkpoints as a new
    attempt (Suspended -> Pending in the core), without using up a retry."""
    out = status.model_copy(deep=True)
    reconcile.suspend_running(out, "interrupted")  # its processes are gone already: nothing to delete
    return out


def write(uri: str, data: bytes, spec: api.ScalingStudySpec) -> None:
    fs, path = _fs(uri, spec)
    parent = path.rsplit("/", 1)[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    fs.pipe_file(path, data)


def load(path: str) -> api.ScalingStudy:
    docs = validation.read_documents(path)
    if len(docs) != 1:
        raise RunError(f"{path}: expected one ScalingStudy document, found {len(docs)}")
    study = validation.load_study(docs[0])
    return study.model_copy(update={"metadata": study.metadata.model_copy(
        update={"namespace": NAMESPACE, "generation": 1, "uid": "local"})})


def run(path: str, opts: Options, display: Any) -> int:
    """Run (or resume) the study to the end. 0 succeeded, 1 a cell failed, 130 interrupted."""
    # SIGINT stops the study cleanly even when the shell started us with it ignored (`... &`).
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
    study = load(path)
    previous = read_status(study.spec)
    with contextlib.ExitStack() as stack:
        tracking, store = stack.enter_context(local_mlflow(study.spec))
        spec = study.spec.model_copy(update={"tracking": study.spec.tracking.model_copy(update={"uri": tracking})})
        return _run(study.model_copy(update={"spec": spec}), previous, store, opts, display)


def _run(study: api.ScalingStudy, previous: api.ScalingStudyStatus | None, store: str | None, opts: Options,
         display: Any) -> int:
    spec, tracking = study.spec, study.spec.tracking.uri or ""
    body = json.loads(study.model_dump_json(by_alias=True, exclude_none=True))
    body.pop("status", None)
    if previous is not None:
        body["status"] = resumable(previous).model_dump(by_alias=True, exclude_none=True, mode="json")
        display.note(f"resuming from {join_uri(spec.output, STATUS_FILE)} ({previous.progress} cells done)")
    env = dict(os.environ)
    env.setdefault("RAY_AUTH_MODE", "disabled")  # a loopback cluster of our own
    env["MLFLOW_TRACKING_URI"] = tracking
    last: dict[str, bytes] = {}

    def save(status: dict[str, Any]) -> None:
        data = json.dumps(status, indent=1, sort_keys=True).encode()
        if last.get("status") == data:
            return
        last["status"] = data
        write(join_uri(spec.output, STATUS_FILE), data, spec)
        if opts.status_out:
            Path(opts.status_out).write_bytes(data)

    logs = Path(".radscale") / "logs" / study.metadata.name
    with local_ray(opts.num_cpus, opts.dashboard, env) as ray:
        env["RAY_ADDRESS"] = ray.address
        if ray.dashboard:
            display.note(f"Ray dashboard: {ray.dashboard}")
        cluster = LocalCluster(body, logs, env, ray.dashboard, save)
        settings = reconcile.Settings(backoff_base_s=opts.retry_backoff_s, backoff_max_s=60.0, vanish_grace_s=30.0)
        op = effects.Effects(cluster, kube.FsspecStore(), settings)
        try:
            outcome = None
            while True:
                outcome = op.reconcile(cluster.body, dt.datetime.now(dt.UTC))
                for action in outcome.actions:
                    if isinstance(action, reconcile.Event):
                        display.event(action)
                display.update(outcome.status, cluster)
                if outcome.status.phase in (api.Phase.SUCCEEDED, api.Phase.FAILED) and not cluster.running():
                    break
                time.sleep(opts.tick_s)
        except KeyboardInterrupt:
            display.note("interrupted: stopping running jobs (run again to resume)")
            stop(cluster.running())
            status = api.ScalingStudyStatus.model_validate(cluster.body.get("status") or {})
            save(resumable(status).model_dump(by_alias=True, exclude_none=True, mode="json"))
            return 130
    status = outcome.status  # the engine wrote results.json, the PNG and the MLflow fits run (publish)
    results = op.results_of(study, NAMESPACE)
    if store:  # the loopback MLflow server stops with the run; its store stays
        status.mlflow = status.mlflow.model_copy(update={"url": store})
    save(status.model_dump(by_alias=True, exclude_none=True, mode="json"))
    display.finish(study, status, results)
    return 0 if status.phase is api.Phase.SUCCEEDED else 1
