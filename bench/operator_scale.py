"""The operator at scale: many studies at once against the API emulator, with the real kopf process.

    PATH=.tools/bin:$PATH .venv/bin/python bench/operator_scale.py [--studies 100] [--duration 120] [--pin] [--distinct]

Each study has 5 encoders x 9 sizes + 5 baselines = 50 cells. All studies are applied at once;
the fake KubeRay controller runs every RayJob for ``--job-seconds``. Reported:

- apply -> first RayJob (the prepare stage) per study, and prepare done -> first wave of cell
  RayJobs (``maxConcurrentCells`` of them) per study: p50 / p95 / max (target < 5 s);
- the operator's API writes (RayJob creates/deletes, study status patches and updates, Events)
  per cell-stage transition (a RayJob started or finished), with and without Events (target <= 3);
- the operator's peak RSS (sampled every 0.2 s).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import kmock
import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.cluster.conftest import CRD_FILE, RAYJOB_CRD, STUDIES  # noqa: E402
from tests.support.apiserver import CRDS, ApiServer, Running  # noqa: E402
from tests.support.kuberay import Behaviour, FakeKubeRay  # noqa: E402
from tests.support.operator_process import OperatorProcess  # noqa: E402

OPERATOR_WRITES = {("create", "rayjobs"), ("delete", "rayjobs"), ("status", "scalingstudies"),
                   ("update", "scalingstudies")}


def study(i: int, tmp: Path, concurrent: int, distinct: bool = False) -> dict:
    """Study ``i``; with ``distinct`` every study differs in what the cross-field rules read (sizes,
    budget, each encoder's optimizer), so no validation verdict is shared between studies."""
    doc = yaml.safe_load((REPO / "manifests" / "examples" / "study-local.yaml").read_text())
    encoders = []
    for e in range(5):
        enc = copy.deepcopy(doc["spec"]["encoders"][e % 2])
        enc["name"] = f"enc{e}"
        if distinct:
            enc.setdefault("optimizer", {}).update(lr=1e-4 * (1 + i + 100 * e), warmupSteps=1 + i % 7)
        encoders.append(enc)
    doc["metadata"] = {"name": f"study-{i:03d}", "namespace": "default"}
    sizes = [100 * k + (i if distinct else 0) for k in range(1, 10)]
    doc["spec"].update(encoders=encoders, sizes=sizes, maxConcurrentCells=concurrent, replicates=1,
                       computeBudget={"steps": 40 + (i if distinct else 0), "globalBatchSize": 32,
                                      "checkpointEvery": 10},
                       output=f"file://{tmp}/out/study-{i:03d}")
    return doc


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=100)
    ap.add_argument("--concurrent", type=int, default=6, help="maxConcurrentCells per study")
    ap.add_argument("--duration", type=float, default=120, help="seconds to run after applying")
    ap.add_argument("--job-seconds", type=float, default=2.0)
    ap.add_argument("--distinct", action="store_true",
                    help="studies differ in every field the validation rules read (no shared verdicts)")
    ap.add_argument("--resync", type=float, default=30.0, help="the operator's timer interval")
    ap.add_argument("--pin", action="store_true",
                    help="operator on the last core, emulator + fake KubeRay on the others (as on a cluster, "
                         "where the API server does not share the operator's CPU)")
    args = ap.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    operator_cpus = {cores[-1]} if args.pin and len(cores) > 1 else None
    if operator_cpus:
        os.sched_setaffinity(0, set(cores[:-1]))
    tmp = Path(tempfile.mkdtemp(prefix="rs-bench-"))

    api = Running(ApiServer(keep_requests=False)).start()
    server = api.server
    api.call(server.create, (CRDS, None, "rayjobs.ray.io"), RAYJOB_CRD)
    api.call(server.create, (CRDS, None, "scalingstudies.radscale.io"), yaml.safe_load(CRD_FILE.read_text()))
    kuberay = FakeKubeRay(server, Behaviour(init_s=0.2, run_s=args.job_seconds), tick=0.1)
    api.spawn(kuberay.run())
    op = OperatorProcess(api.kubeconfig(tmp / "kubeconfig.json"), tmp / "operator.log",
                         env={"RADSCALE_RESYNC_SECONDS": str(args.resync)}, cpus=operator_cpus)
    op.start()

    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        proc = psutil.Process(op.proc.pid)
        while not stop.is_set():
            with contextlib.suppress(psutil.Error):  # a child may exit between listing and reading
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]))
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    res = kmock.resource(STUDIES)
    applied: dict[str, float] = {}
    t0 = time.monotonic()
    for i in range(args.studies):
        doc = study(i, tmp, args.concurrent, args.distinct)
        api.call(server.create, (res, "default", doc["metadata"]["name"]), doc)
        applied[doc["metadata"]["name"]] = time.monotonic()
    print(f"applied {args.studies} studies in {time.monotonic() - t0:.2f} s", flush=True)
    time.sleep(args.duration)
    stop.set()
    writes = dict(server.writes)
    events = writes.get(("create", "events"), 0)
    created = {name: server.created_at[("rayjobs", ns, name)] for plural, ns, name in server.created
               if plural == "rayjobs"}
    finished = dict(kuberay.finished_at)
    first_update = {k[3]: t for k, t in server.first_write.items() if k[:2] == ("update", "scalingstudies")}
    first_status = {k[3]: t for k, t in server.first_write.items() if k[:2] == ("status", "scalingstudies")}
    op.stop()
    api.stop()

    first_job, first_wave, to_kopf, kopf_to_status = [], [], [], []
    for name, t_apply in applied.items():
        if name in first_update and name in first_status:
            to_kopf.append(first_update[name] - t_apply)  # kopf's finalizer patch: the watch event handled
            kopf_to_status.append(first_status[name] - first_update[name])  # ... to our first pass's status
        prep = created.get(f"{name}-prep")
        if prep is None:
            continue
        first_job.append(prep - t_apply)
        done = finished.get(f"{name}-prep")
        cells = sorted(t for n, t in created.items() if n.startswith(name + "-") and not n.endswith("-prep"))
        if done is not None and len(cells) >= args.concurrent:
            first_wave.append(cells[args.concurrent - 1] - done)
    transitions = len(created) + len(finished)
    op_writes = sum(v for k, v in writes.items() if k in OPERATOR_WRITES)
    print(f"machine: {platform.processor() or platform.machine()}, {psutil.cpu_count()} cores, "
          f"python {platform.python_version()}")
    print(f"{args.studies} studies x 50 cells, {args.duration:.0f} s, jobs {args.job_seconds} s, "
          f"maxConcurrentCells {args.concurrent}, resync {args.resync} s"
          + (", distinct specs" if args.distinct else "")
          + (f", operator pinned to core {sorted(operator_cpus)}" if operator_cpus else ""))
    print(f"studies with a first RayJob: {len(first_job)}/{args.studies}; "
          f"with a first cell wave: {len(first_wave)}/{args.studies}")
    for label, xs in (("apply -> first RayJob", first_job), ("  of which apply -> kopf's first write", to_kopf),
                      ("  of which kopf's first write -> first status", kopf_to_status),
                      ("prepare done -> first cell wave", first_wave)):
        if xs:
            print(f"{label}: p50 {statistics.median(xs):.2f} s, p95 {pct(xs, 0.95):.2f} s, max {max(xs):.2f} s")
    print(f"RayJobs created {len(created)}, finished {len(finished)}: {transitions} transitions")
    print(f"operator writes: {op_writes} without Events ({op_writes / max(transitions, 1):.2f} per transition), "
          f"{op_writes + events} with {events} Events ({(op_writes + events) / max(transitions, 1):.2f} per "
          f"transition); by kind: { {f'{v}/{p}': n for (v, p), n in sorted(writes.items())} }")
    print(f"operator peak RSS: {peak[0] / 2**20:.0f} MiB")


if __name__ == "__main__":
    main()
