"""A fake KubeRay controller for the API emulator: RayJobs move through KubeRay's real status
sequence, and each finished stage writes what the real trainer would (shards index, result.json).

Status sequence (KubeRay v1): ``Initializing`` → ``Running`` (jobStatus ``RUNNING``) →
``Complete`` + ``SUCCEEDED``, or ``Failed`` + ``FAILED`` with ``reason: AppFailed``. Like KubeRay,
it can delete a finished RayJob (its TTL) right after the terminal status is written.

``spec.suspend`` is honoured as KubeRay does (what Kueue drives): a job created suspended goes
straight to ``Suspended``; an active job that is suspended goes ``Suspending`` (its Ray cluster is
torn down, jobStatus ``STOPPED``) → ``Suspended``; unsuspended, it starts again from
``Initializing`` with a new Ray cluster (the real trainer resumes from its checkpoints).

The metrics it writes follow a known power law per encoder, so the operator's fits can be checked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import shlex
import time
from collections.abc import Callable
from typing import Any

import fsspec
import kmock

from radscale.cells import CellResult, CellSpec, MetricValue, PretrainResult, TaskResult, join_uri, storage_options
from tests.support.apiserver import ApiServer

RAYJOBS = "ray.io/v1/rayjobs"


def never(name: str, cell: CellSpec) -> bool:
    return False


def fraction(p: float, max_attempt: int = 1) -> Callable[[str, CellSpec], bool]:
    """Fail a deterministic fraction ``p`` of attempts (by RayJob name), never beyond ``max_attempt``."""
    def fail(name: str, cell: CellSpec) -> bool:
        draw = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        return cell.attempt <= max_attempt and draw < p
    return fail


def metric(encoder: str, size: int) -> float:
    """The truth the fake evaluations report: each encoder a saturating power law in data size."""
    ceiling = 0.9 if encoder.endswith(("dino", "0")) else 0.86
    return ceiling - 0.25 * (1.0 + size / 100.0) ** -0.5


@dataclasses.dataclass
class Behaviour:
    init_s: float = 0.05
    run_s: float = 0.2
    fail: Callable[[str, CellSpec], bool] = never
    ttl_delete: bool = False
    """Delete a RayJob right after it finishes, as KubeRay does with ttlSecondsAfterFinished: 0."""
    hold: Callable[[CellSpec], bool] = lambda cell: False
    """Keep matching jobs Running (to look at a study mid-run); set to a falsy predicate to release."""
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    """fsspec options for the output store (the moto endpoint and keys for s3://)."""


@dataclasses.dataclass
class _Track:
    phase: str
    since: float


_NEW = _Track("New", 0.0)  # what an untracked job counts as


class FakeKubeRay:
    def __init__(self, server: ApiServer, behaviour: Behaviour | None = None, tick: float = 0.02):
        self.server = server
        self.behaviour = behaviour or Behaviour()
        self.tick = tick
        self.finished: dict[str, str] = {}  # RayJob name -> jobStatus it ended with
        self._tracks: dict[str, _Track] = {}  # by uid
        self.errors: list[str] = []  # the controller's own failures; a test asserts there are none
        self.finished_at: dict[str, float] = {}  # RayJob name -> monotonic time of its terminal status
        self._cells: dict[str, CellSpec] = {}  # by uid: parsed once
        self.starts: dict[str, int] = {}  # RayJob name -> Ray clusters started for it (> 1: it was suspended)

    async def run(self) -> None:
        res = _res()
        while True:
            # stored objects are replaced on every write, never mutated: reading them needs no copy
            live = [o for k, o in list(self.server.store.items())
                    if k[0] == res and self._tracks.get(o["metadata"]["uid"], _NEW).phase != "Done"]
            for job in live:
                try:
                    await self._step(job)
                except Exception as exc:  # keep going; the test fails on self.errors
                    self.errors.append(f"{job['metadata']['name']}: {exc!r}")
            await asyncio.sleep(self.tick)

    async def _status(self, job: dict[str, Any], **status: Any) -> None:
        key = (_res(), job["metadata"]["namespace"], job["metadata"]["name"])
        if key not in self.server.store:
            return
        current = self.server.store[key]
        await self.server.update(key, {**current, "status": {**current.get("status", {}), **status}},
                                 subresource="status")

    async def _step(self, job: dict[str, Any]) -> None:
        meta = job["metadata"]
        if meta.get("deletionTimestamp"):
            return
        now = time.monotonic()
        track = self._tracks.get(meta["uid"])
        cell = self._cells.get(meta["uid"])
        if cell is None:
            cell = self._cells[meta["uid"]] = CellSpec.from_arg(shlex.split(job["spec"]["entrypoint"])[-1])
        b = self.behaviour
        suspend = bool(job["spec"].get("suspend"))
        if suspend and (track is None or track.phase in ("Initializing", "Running")):
            active = track is not None
            self._tracks[meta["uid"]] = _Track("Suspending" if active else "Suspended", now)
            await self._status(job, jobDeploymentStatus="Suspending" if active else "Suspended",
                               **({"jobStatus": "STOPPED"} if active else {}))
        elif track is not None and track.phase == "Suspending":
            self._tracks[meta["uid"]] = _Track("Suspended", now)
            await self._status(job, jobDeploymentStatus="Suspended")
        elif track is not None and track.phase == "Suspended":
            if not suspend:  # admitted: a new Ray cluster, the job submitted again
                self._tracks[meta["uid"]] = _Track("Initializing", now)
                self.starts[meta["name"]] = self.starts.get(meta["name"], 0) + 1
                await self._status(job, jobDeploymentStatus="Initializing", jobStatus="", startTime=_stamp(),
                                   rayClusterName=f"{meta['name']}-raycluster-r{self.starts[meta['name']]}")
        elif track is None:
            self._tracks[meta["uid"]] = _Track("Initializing", now)
            self.starts[meta["name"]] = 1
            await self._status(job, jobDeploymentStatus="Initializing", startTime=_stamp(),
                               rayClusterName=f"{meta['name']}-raycluster-x7k2p",
                               dashboardURL=f"{meta['name']}-head-svc.{meta['namespace']}.svc.cluster.local:8265")
        elif track.phase == "Initializing" and now - track.since >= b.init_s:
            self._tracks[meta["uid"]] = _Track("Running", now)
            await self._status(job, jobDeploymentStatus="Running", jobStatus="RUNNING",
                               jobId=f"{meta['name']}-{meta['uid'][:5]}")
        elif track.phase == "Running" and now - track.since >= b.run_s and not b.hold(cell):
            failed = b.fail(meta["name"], cell)
            if not failed:
                await asyncio.to_thread(write_outputs, cell, b.options)
            self._tracks[meta["uid"]] = _Track("Done", now)
            self.finished[meta["name"]] = "FAILED" if failed else "SUCCEEDED"
            self.finished_at[meta["name"]] = now
            if failed:
                await self._status(job, jobDeploymentStatus="Failed", jobStatus="FAILED", reason="AppFailed",
                                   message="Job entrypoint command failed with exit code 1", endTime=_stamp())
            else:
                await self._status(job, jobDeploymentStatus="Complete", jobStatus="SUCCEEDED",
                                   message="Job finished successfully.", endTime=_stamp())
            if b.ttl_delete:
                key = (_res(), meta["namespace"], meta["name"])
                if key in self.server.store:
                    await self.server.delete(key)


def _res() -> kmock.resource:
    return kmock.resource(RAYJOBS)


def _stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def write_outputs(cell: CellSpec, options: dict[str, Any]) -> None:
    """What the trainer entrypoint of ``cell.stage`` leaves behind on success."""
    opts = options or storage_options(cell.output)
    if cell.stage == "prepare":
        fs, path = fsspec.core.url_to_fs(join_uri(cell.shards, "index.json"), **opts)
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(path, json.dumps({"fingerprint": cell.shards.rstrip("/").rsplit("/", 1)[-1]}).encode())
        return
    fs, path = fsspec.core.url_to_fs(cell.result_uri, **opts)
    result = CellResult(study=cell.study, cell=cell.cell, encoder=cell.encoder.name if cell.encoder else None,
                        size=cell.size)
    if fs.exists(path):
        result = CellResult.model_validate_json(fs.cat_file(path))
    if cell.stage == "pretrain":
        steps = cell.budget.steps
        result.pretrain = PretrainResult(steps=steps, epochs=steps * cell.budget.global_batch_size / max(cell.size, 1),
                                         images_seen=steps * cell.budget.global_batch_size, final_loss=1.0,
                                         encoder=cell.encoder_uri)
    elif cell.stage == "evaluate":
        value = metric(cell.encoder.name, cell.size)
        result.evaluate = {
            task.name: TaskResult(metric=task.headline_metric, best_config={"lr": 1e-3},
                                  metrics={task.headline_metric: MetricValue(value=value, ci_low=value - 0.01,
                                                                               ci_high=value + 0.01)})
            for task in cell.tasks
        }
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, result.to_json().encode())
