"""A fake Kueue for the API emulator: it admits queued RayJobs by unsuspending them, holds the rest
beyond a quota, and can preempt running ones by suspending them again, as Kueue's RayJob
integration does (the ``kueue.x-k8s.io/queue-name`` label marks a job as Kueue's; Kueue's webhook
would suspend an unsuspended one on create, so radscale creates them suspended).

Admission is FIFO by the time a job entered the queue (a preempted job re-enters at the back), one
ClusterQueue with a quota counted in admitted, unfinished RayJobs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Any

import kmock

from tests.support.apiserver import ApiServer

QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
FINISHED = ("Complete", "Failed", "ValidationFailed")


@dataclasses.dataclass
class FakeKueue:
    server: ApiServer
    queue: str
    quota: int = 2
    preempt: int = 0
    """How many running RayJobs to preempt (one at a time, each after ``preempt_after_s`` running)."""
    preempt_after_s: float = 0.1
    victim: Callable[[str], bool] = lambda name: True
    """Which RayJobs (by name) may be preempted."""
    tick: float = 0.02
    admitted_peak: int = 0
    preempted: list[str] = dataclasses.field(default_factory=list)
    admissions: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    _queued_since: dict[str, float] = dataclasses.field(default_factory=dict)  # uid -> entered the queue
    _running_since: dict[str, float] = dataclasses.field(default_factory=dict)  # uid -> first seen Running

    async def run(self) -> None:
        while True:
            try:
                await self._pass()
            except Exception as exc:  # keep going; the test fails on self.errors
                self.errors.append(repr(exc))
            await asyncio.sleep(self.tick)

    async def _set_suspend(self, key: tuple[Any, str, str], value: bool) -> None:
        current = self.server.store.get(key)
        if current is not None:
            await self.server.update(key, {**current, "spec": {**current["spec"], "suspend": value}})

    async def _pass(self) -> None:
        res, now = kmock.resource("ray.io/v1/rayjobs"), time.monotonic()
        ours = [(k, o) for k, o in list(self.server.store.items())
                if k[0] == res and (o["metadata"].get("labels") or {}).get(QUEUE_LABEL) == self.queue
                and not o["metadata"].get("deletionTimestamp")]
        live = [(k, o) for k, o in ours if (o.get("status") or {}).get("jobDeploymentStatus") not in FINISHED]
        admitted = [(k, o) for k, o in live if not o["spec"].get("suspend")]
        queued = [(k, o) for k, o in live if o["spec"].get("suspend")]
        for _, o in queued:
            self._queued_since.setdefault(o["metadata"]["uid"], now)
        for _, o in admitted:
            if (o.get("status") or {}).get("jobDeploymentStatus") == "Running":
                self._running_since.setdefault(o["metadata"]["uid"], now)
        self.admitted_peak = max(self.admitted_peak, len(admitted))
        if len(self.preempted) < self.preempt:
            for key, o in admitted:
                since = self._running_since.get(o["metadata"]["uid"])
                if since is not None and now - since >= self.preempt_after_s and self.victim(o["metadata"]["name"]):
                    uid = o["metadata"]["uid"]
                    self._running_since.pop(uid)
                    self._queued_since[uid] = now  # back of the queue
                    self.preempted.append(o["metadata"]["name"])
                    await self._set_suspend(key, True)
                    return
        queued.sort(key=lambda ko: self._queued_since[ko[1]["metadata"]["uid"]])
        for key, o in queued[:max(self.quota - len(admitted), 0)]:
            self._queued_since.pop(o["metadata"]["uid"], None)
            self.admissions.append(o["metadata"]["name"])
            await self._set_suspend(key, False)
