"""The reconcile core: (study, observed children, now) -> (actions, new status). Pure: no I/O, no clock.

Every decision of the operator is made here and returned as data; ``handlers.py`` applies the
actions (create/delete RayJobs, post Events) and patches the status once. The same core drives the
local executor. Rules, in the order they are applied:

1. A spec change that would invalidate finished work (dataset, compute budget) is refused: Ready
   turns False naming the field, and nothing else changes. Added sizes/encoders/tasks add cells.
2. ``suspend: true`` deletes running children and marks them Suspended; state is kept. On resume a
   stage restarts as a new attempt (its checkpoints make it resume), without using up a retry.
3. Prepare runs first, once per dataset fingerprint (skipped when the shards already exist).
4. Cells pipeline: a cell's evaluation starts as soon as its pretraining succeeds; baselines only
   evaluate. At most ``maxConcurrentCells`` RayJobs run at once.
5. A child's terminal state is copied into the status as soon as it is seen, so a RayJob deleted
   later (TTL) changes nothing; a terminal cell is never re-run. A child that vanishes before a
   terminal state was seen counts as a failed attempt, unless its result is already written.
6. A RayJob that is suspended while its cell runs (queued by Kueue, or preempted by it) is neither
   a failure nor a retry: the cell waits, counted as queued, and a preempted job resumes from its
   checkpoints when Kueue readmits it. Each preemption is counted and posted once.
7. A failed attempt is retried with exponential backoff, as a new RayJob with an attempt suffix,
   up to ``spec.retries``; then the cell is Failed with KubeRay's reason. Other cells go on. Each
   stage's attempts and failures stay in the cell's ``history`` (one entry per stage).
8. An adaptive encoder (``spec.adaptive``) plans only the cells its design has chosen. When every
   cell of its last round is terminal (and its results are read), the pure design
   (:mod:`radscale.operator.design`) chooses the next round from those results, or stops; the
   round is recorded in ``status.design`` with its reason, one ``SizesChosen`` Event, and its cells
   start in the same pass. The study succeeds once every design has stopped.

Conditions that block the whole study (an invalid spec, a refused spec change, a missing
credentials Secret) post their Warning Event once per generation and reason: whether it was posted
is read back from the Ready condition (reason and observedGeneration), so a resync or a restarted
operator does not post it again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from radscale.cells import CellResult
from radscale.operator import api, design, plan, rayjob, results

Stage, CellState = api.Stage, api.CellState


@dataclasses.dataclass(frozen=True)
class Settings:
    backoff_base_s: float = 30.0
    """First retry delay; doubles per failure. 30 s rides out a node restart without idling GPUs long."""
    backoff_max_s: float = 1800.0
    """Cap on the retry delay (30 min)."""
    vanish_grace_s: float = 120.0
    """How long a just-created RayJob may be missing from the watch cache before it counts as lost."""
    default_image: str = rayjob.DEFAULT_IMAGE


@dataclasses.dataclass(frozen=True)
class Observed:
    jobs: Mapping[str, dict[str, Any]]  # RayJob name -> object, for this study's labelled children
    results: Mapping[str, CellResult] = dataclasses.field(default_factory=dict)  # cell -> result.json
    prepared: bool = False  # the shards index for this fingerprint exists
    missing_secret: str | None = None  # spec.dataset.credentialsSecret names a Secret that does not exist


@dataclasses.dataclass(frozen=True)
class CreateJob:
    name: str
    manifest: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class DeleteJob:
    name: str


@dataclasses.dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


Action = CreateJob | DeleteJob | Event


@dataclasses.dataclass(frozen=True)
class Outcome:
    actions: list[Action]
    status: api.ScalingStudyStatus


def _ts(now: dt.datetime) -> str:
    return now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(ts: str | None) -> dt.datetime | None:
    return dt.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC) if ts else None


def budget_key(spec: api.ScalingStudySpec) -> str:
    return hashlib.sha256(json.dumps(spec.compute_budget.model_dump(mode="json"), sort_keys=True).encode()
                          ).hexdigest()[:16]


def set_condition(status: api.ScalingStudyStatus, type_: api.ConditionType, value: bool, reason: str,
                  message: str, now: dt.datetime, generation: int | None) -> None:
    """Update one condition by type; lastTransitionTime moves only when the status flips."""
    new = "True" if value else "False"
    for i, c in enumerate(status.conditions):
        if c.type == type_:
            moved = c.status != new
            status.conditions[i] = c.model_copy(update={
                "status": new, "reason": reason, "message": message, "observed_generation": generation,
                "last_transition_time": _ts(now) if moved else c.last_transition_time})
            return
    status.conditions.append(api.Condition(type=type_, status=new, reason=reason, message=message,
                                           last_transition_time=_ts(now), observed_generation=generation))


def _already_reported(status: api.ScalingStudyStatus, reason: str, generation: int | None) -> bool:
    """Whether Ready already says ``reason`` for this generation (its Event was posted then)."""
    ready = next((c for c in status.conditions if c.type is api.ConditionType.READY), None)
    return (ready is not None and ready.status == "False" and ready.reason == reason
            and ready.observed_generation == generation)


def _block(status: api.ScalingStudyStatus, reason: str, message: str, now: dt.datetime,
           generation: int | None, actions: list[Action]) -> None:
    """Ready=False for a reason that stops the whole study; its Warning once per generation."""
    if not _already_reported(status, reason, generation):
        actions.append(Event("Warning", reason, message))
    set_condition(status, api.ConditionType.READY, False, reason, message, now, generation)


def invalid(status: api.ScalingStudyStatus | None, message: str, generation: int | None,
            now: dt.datetime) -> Outcome:
    """The outcome for a spec that fails validation: terminal (``Failed=True``, phase Failed) until
    the spec changes, so ``kubectl wait --for=condition=Failed`` returns. Nothing is created or
    deleted; children of an earlier, valid generation are left alone. The next valid generation
    recomputes every condition and the phase, and processing resumes."""
    s = (status or api.ScalingStudyStatus()).model_copy(deep=True)
    actions: list[Action] = []
    _block(s, "InvalidSpec", message, now, generation, actions)
    s.phase = api.Phase.FAILED
    s.observed_generation = generation
    set_condition(s, api.ConditionType.FAILED, True, "InvalidSpec", message, now, generation)
    set_condition(s, api.ConditionType.SUCCEEDED, False, "InvalidSpec", "the spec is invalid", now, generation)
    set_condition(s, api.ConditionType.PROGRESSING, False, "InvalidSpec", "the spec is invalid", now, generation)
    return Outcome(actions, s)


def suspend_running(status: api.ScalingStudyStatus, why: str = "suspended") -> list[str]:
    """Mark every running stage Suspended (it restarts from its checkpoints as a new attempt, without
    using up a retry); returns the RayJobs to delete. ``spec.suspend`` and an interrupted local run
    both come here."""
    jobs = []
    for cs in [status.prepare, *status.cell_status]:
        if cs is not None and cs.state is CellState.RUNNING:
            if cs.ray_job:
                jobs.append(cs.ray_job)
            cs.state, cs.ray_job, cs.job_phase = CellState.SUSPENDED, None, None
            cs.message = f"{why}; resumes from checkpoints"
    return jobs


class _Run:
    """One reconcile pass; holds the working copy and the actions collected."""

    def __init__(self, study: api.ScalingStudy, observed: Observed, now: dt.datetime, settings: Settings):
        self.study, self.spec, self.obs, self.now, self.cfg = study, study.spec, observed, now, settings
        self.status = (study.status or api.ScalingStudyStatus()).model_copy(deep=True)
        self.plan = plan.plan(study)
        self.actions: list[Action] = []
        self.owner = rayjob.Owner(study.metadata.name, study.metadata.uid or "")
        self.gen = study.metadata.generation

    # -- helpers ---------------------------------------------------------------------------------

    def event(self, type_: str, reason: str, message: str) -> None:
        self.actions.append(Event(type_, reason, message))

    def backoff(self, failures: int) -> dt.datetime:
        delay = min(self.cfg.backoff_base_s * 2 ** (failures - 1), self.cfg.backoff_max_s)
        return self.now + dt.timedelta(seconds=delay)

    def job_name(self, cs: api.CellStatus) -> str:
        if cs.stage is Stage.PREPARE:
            base = self.plan.prepare_name
            if cs.attempts <= 1:
                return base
            return plan.dns_name(base, f"a{cs.attempts - 1}", limit=plan.RAYJOB_NAME_MAX)
        return plan.job_name(cs.name, cs.stage, max(cs.attempts - 1, 0))

    def start(self, cs: api.CellStatus, cell: plan.Cell | None) -> None:
        """Create the next attempt's RayJob for the cell's current stage."""
        cs.attempts += 1
        name = self.job_name(cs)
        spec = plan.cell_spec(self.study, self.plan, cell, cs.stage, attempt=cs.attempts - 1)
        manifest = rayjob.render(self.study, spec, name, self.owner, self.cfg.default_image)
        self.actions.append(CreateJob(name, manifest))
        cs.state, cs.ray_job, cs.started_at, cs.not_before, cs.dashboard_url, cs.job_phase = (
            CellState.RUNNING, name, _ts(self.now), None, None, None)
        self.event("Normal", "JobCreated", f"{cs.name}: {cs.stage} attempt {cs.attempts} as RayJob {name}")

    def record(self, cs: api.CellStatus, message: str | None = None) -> None:
        """Fold the current stage's attempts into the cell's history (one entry per stage)."""
        entry = next((h for h in cs.history if h.stage == cs.stage), None)
        if entry is None:
            entry = api.StageAttempts(stage=cs.stage)
            cs.history.append(entry)
        entry.attempts, entry.failures = cs.attempts, cs.failures
        if message is not None:
            cut = api.HISTORY_MESSAGE_MAX
            entry.last_message = message if len(message) <= cut else message[:cut - 3] + "..."

    def stage_done(self, cs: api.CellStatus, cell: plan.Cell | None) -> None:
        self.record(cs)
        later = [s for s in (cell.stages if cell else (Stage.PREPARE,)) if s != cs.stage]
        nxt = later[0] if cs.stage is Stage.PRETRAIN and later else None
        self.event("Normal", "StageSucceeded", f"{cs.name}: {cs.stage} succeeded")
        if nxt is None:
            cs.state, cs.message = CellState.SUCCEEDED, ""
        else:  # pipelining: evaluation becomes runnable at once
            cs.stage, cs.state, cs.attempts, cs.failures, cs.message = nxt, CellState.PENDING, 0, 0, ""
        cs.ray_job, cs.started_at, cs.job_phase = None, None, None

    def stage_failed(self, cs: api.CellStatus, reason: str, message: str) -> None:
        cs.failures += 1
        text = f"{reason}: {message}" if message else reason
        self.record(cs, f"attempt {cs.attempts}: {text}")
        if cs.failures <= self.spec.retries:
            cs.state, cs.not_before = CellState.RETRYING, _ts(self.backoff(cs.failures))
            cs.message = f"attempt {cs.attempts} failed ({text}); retry {cs.failures}/{self.spec.retries} after backoff"
            self.event("Warning", "AttemptFailed", f"{cs.name}: {cs.stage} {cs.message}")
        else:
            cs.state, cs.message = CellState.FAILED, f"{cs.stage} failed after {cs.attempts} attempt(s): {text}"
            self.event("Warning", "CellFailed", f"{cs.name}: {cs.message}")
        cs.ray_job, cs.started_at, cs.job_phase = None, None, None

    def result_has(self, cs: api.CellStatus) -> bool:
        res = self.obs.results.get(cs.name)
        if res is None:
            return False
        return res.pretrain is not None if cs.stage is Stage.PRETRAIN else bool(res.evaluate)

    def observe(self, cs: api.CellStatus, cell: plan.Cell | None) -> None:
        """Fold the current RayJob's state into a Running cell."""
        job = self.obs.jobs.get(cs.ray_job or "")
        if job is None:
            started = _parse(cs.started_at)
            if started and (self.now - started).total_seconds() < self.cfg.vanish_grace_s:
                return  # just created; the watch has not caught up
            finished = self.obs.prepared if cs.stage is Stage.PREPARE else self.result_has(cs)
            if finished:  # it finished and was deleted before we looked: its output is the proof
                self.stage_done(cs, cell)
            else:
                self.stage_failed(cs, "RayJobLost", "the RayJob disappeared before it finished")
            return
        st = rayjob.state(job)
        cs.dashboard_url = st.dashboard_url or cs.dashboard_url
        if st.phase is rayjob.JobPhase.SUCCEEDED:
            self.stage_done(cs, cell)
        elif st.phase is rayjob.JobPhase.FAILED:
            self.stage_failed(cs, st.reason, st.message)
        else:
            self.queueing(cs, st)

    def queueing(self, cs: api.CellStatus, st: rayjob.JobState) -> None:
        """Follow a live RayJob through admission: suspended before it was ever active is queued;
        suspended after it was active is a preemption (no retry used; the next run resumes from
        its checkpoints)."""
        previous, cs.job_phase = cs.job_phase, st.deployment or None
        queue = self.spec.queue_name
        held = f"Kueue LocalQueue {queue!r}" if queue else "whoever suspended its RayJob"
        if st.phase is rayjob.JobPhase.SUSPENDED:
            if previous in rayjob.ACTIVE_DEPLOYMENT:
                cs.preemptions += 1
                cs.message = (f"preempted ({cs.preemptions}x): waiting for {held} to readmit it; it resumes "
                              "from its checkpoints and uses up no retry")
                self.event("Normal", "Preempted", f"{cs.name}: {cs.stage} RayJob {cs.ray_job} was suspended while "
                           f"{previous.lower()}; {cs.message}")
            elif previous not in rayjob.SUSPENDED_DEPLOYMENT:
                cs.message = f"queued: waiting for {held} to admit it"
        elif st.deployment in rayjob.ACTIVE_DEPLOYMENT and previous in rayjob.SUSPENDED_DEPLOYMENT:
            cs.message = ""  # admitted

    # -- the pass ---------------------------------------------------------------------------------

    def spec_change_refused(self) -> bool:
        s = self.status
        fp, bk = self.plan.fingerprint, budget_key(self.spec)
        started = any(c.attempts or c.state.terminal for c in s.cell_status)
        changed = [f for f, old, new in (("spec.dataset", s.dataset_fingerprint, fp),
                                         ("spec.computeBudget", s.budget_key, bk)) if old and old != new]
        if changed and started:
            msg = (f"{' and '.join(changed)} changed after cells ran; finished cells would no longer be "
                   "comparable. Revert the change, or create a new ScalingStudy")
            _block(s, "SpecChangeRefused", msg, self.now, self.gen, self.actions)
            return True
        s.dataset_fingerprint, s.budget_key = fp, bk
        set_condition(s, api.ConditionType.READY, True, "SpecAccepted", "", self.now, self.gen)
        s.observed_generation = self.gen
        return False

    def secret_missing(self) -> bool:
        """Without the credentials Secret neither shards nor results can be read: wait for it,
        changing nothing else (the next pass after it appears goes on where this one stopped)."""
        name = self.obs.missing_secret
        if name is None:
            return False
        msg = (f"spec.dataset.credentialsSecret names Secret {name!r}, which does not exist in namespace "
               f"{self.study.metadata.namespace or 'default'!r}; create it (keys AWS_ACCESS_KEY_ID and "
               "AWS_SECRET_ACCESS_KEY) or fix the name")
        _block(self.status, "SecretNotFound", msg, self.now, self.gen, self.actions)
        return True

    def merge_cells(self) -> dict[str, plan.Cell]:
        cells = {c.name: c for c in self.plan.cells}
        known = {c.name: c for c in self.status.cell_status}
        merged = []
        for c in self.plan.cells:
            merged.append(known.get(c.name) or api.CellStatus(
                name=c.name, encoder=c.encoder, size=c.size, replicate=c.replicate, stage=c.stages[0],
                state=CellState.PENDING))
        for name, cs in known.items():  # removed from the spec: stop what runs, keep what finished
            if name not in cells:
                if cs.state is CellState.RUNNING and cs.ray_job:
                    self.actions.append(DeleteJob(cs.ray_job))
                if cs.state.terminal:
                    merged.append(cs)
        self.status.cell_status = merged
        return cells

    def suspend(self) -> None:
        self.actions.extend(DeleteJob(name) for name in suspend_running(self.status))

    def resume(self) -> None:
        for cs in [self.status.prepare, *self.status.cell_status]:
            if cs is not None and cs.state is CellState.SUSPENDED:
                cs.state, cs.message = CellState.PENDING, ""

    def run(self) -> Outcome:
        s = self.status
        if self.secret_missing() or self.spec_change_refused():
            return Outcome(self.actions, s)
        cells = self.merge_cells()
        if self.spec.suspend:
            self.suspend()
        else:
            self.resume()
            self.schedule(cells)
        self.summarise()
        return Outcome(self.actions, s)

    def schedule(self, cells: dict[str, plan.Cell]) -> None:
        s = self.status
        if s.prepare is None:
            s.prepare = api.CellStatus(name=self.plan.prepare_name, encoder="", size=0, stage=Stage.PREPARE,
                                       state=CellState.PENDING)
        prep = s.prepare
        # observe everything first, so that slots freed this pass can be reused at once
        if prep.state is CellState.RUNNING:
            self.observe(prep, None)
        for cs in s.cell_status:
            if cs.state is CellState.RUNNING and cs.name in cells:
                self.observe(cs, cells[cs.name])
        self.designs()
        slots = self.spec.max_concurrent_cells - sum(
            c.state is CellState.RUNNING for c in [prep, *s.cell_status])
        if prep.state in (CellState.PENDING, CellState.RETRYING):
            if self.obs.prepared:
                prep.state, prep.message = CellState.SUCCEEDED, "shards for this fingerprint already exist; reused"
            elif slots > 0 and self.due(prep):
                self.start(prep, None)
                slots -= 1
        if prep.state is not CellState.SUCCEEDED:
            return
        for cs in s.cell_status:
            if slots <= 0:
                break
            if cs.state in (CellState.PENDING, CellState.RETRYING) and cs.name in cells and self.due(cs):
                self.start(cs, cells[cs.name])
                slots -= 1

    # -- sequential designs (spec.adaptive) ---------------------------------------------------------

    def designs(self) -> None:
        """Advance every adaptive encoder's design by at most one round; new cells join the plan."""
        added = False
        adaptive = {e.name for e in self.spec.encoders if self.spec.design_of(e) is not None}
        self.status.design = [d for d in self.status.design if d.encoder in adaptive]  # bounded by the spec
        for enc in self.spec.encoders:
            ad = self.spec.design_of(enc)
            if ad is not None:
                added |= self.design_round(enc.name, ad)
        if added:  # the chosen cells are in the status now: re-plan and add them as Pending
            self.study = self.study.model_copy(update={"status": self.status})
            self.plan = plan.plan(self.study)
            self.merge_cells()

    def design_entry(self, encoder: str, ad: api.AdaptiveSpec) -> api.DesignStatus:
        task = ad.task or self.spec.evaluation.tasks[0].name
        metric = next(t for t in self.spec.evaluation.tasks if t.name == task).headline_metric
        entry = next((d for d in self.status.design if d.encoder == encoder), None)
        if entry is None:
            entry = api.DesignStatus(encoder=encoder, target=ad.target.value, task=task, metric=metric)
            self.status.design.append(entry)
        entry.target, entry.task, entry.metric, entry.max_cells = ad.target.value, task, metric, ad.max_cells
        entry.batch_rule = design.BATCH_RULE
        return entry

    def design_round(self, encoder: str, ad: api.AdaptiveSpec) -> bool:
        """One encoder's design: wait for the round's cells, then choose the next round or stop.
        Returns whether cells were added."""
        entry = self.design_entry(encoder, ad)
        if not entry.decisions:
            sizes = list(design.initial_cells(ad, self.spec.replicates))
            entry.decisions.append(api.DesignDecision(
                round=0, sizes=sizes, time=_ts(self.now),
                reason=f"initial: {len(set(sizes))} log-spaced sizes over [{ad.min:,}, {ad.max:,}], "
                f"{self.spec.replicates} replicate(s) each"))
            entry.cells = len(sizes)
            self.event("Normal", "SizesChosen", f"{encoder}: round 0 runs sizes {sorted(set(sizes))} "
                       f"({len(sizes)} cells)")
            return False  # the plan already holds the initial round
        mine = [cs for cs in self.status.cell_status if cs.encoder == encoder and cs.name in self.plan_names()]
        waiting = [cs for cs in mine if not cs.state.terminal]
        unread = [cs for cs in mine if cs.state is CellState.SUCCEEDED and cs.name not in self.obs.results]
        last = entry.decisions[-1]
        if waiting or unread:
            if entry.state is api.DesignState.RUNNING:
                entry.message = (f"round {last.round}: waiting for {len(waiting)} cell(s)" if waiting else
                                 f"round {last.round}: reading {len(unread)} result(s)")
            return False
        chosen = [n for d in entry.decisions for n in d.sizes]
        curve = self.design_curve(encoder, entry)
        rnd = design.choose_cached(curve, ad, chosen, self.spec.max_concurrent_cells, design.Settings(
            method=self.spec.analysis.fit, min_r2=self.spec.analysis.min_r2,
            max_extrapolation=self.spec.analysis.max_extrapolation))
        entry.current = _target_ci(rnd.current)
        if last.after is None:
            last.after = entry.current
        entry.cells = len(chosen)
        if rnd.stop:
            if entry.state is not api.DesignState.STOPPED or entry.stop_reason != rnd.stop:
                self.event("Normal", "DesignStopped", f"{encoder}: {rnd.stop}: {rnd.message}")
            entry.state, entry.stop_reason, entry.message = api.DesignState.STOPPED, rnd.stop, rnd.message
            return False
        if len(entry.decisions) >= api.DESIGN_DECISIONS_MAX:  # only with absurd budgets: stop, bounded
            entry.state, entry.stop_reason = api.DesignState.STOPPED, design.Stop.BUDGET_SPENT
            entry.message = f"{api.DESIGN_DECISIONS_MAX} rounds recorded; raise the batch size (maxConcurrentCells)"
            return False
        sizes = [c.size for c in rnd.choices]
        reason = "; ".join(c.reason for c in rnd.choices)[:1024]
        entry.decisions.append(api.DesignDecision(
            round=last.round + 1, sizes=sizes, reason=reason, before=entry.current,
            predicted=_target_ci(rnd.choices[-1].predicted), time=_ts(self.now)))
        entry.state, entry.stop_reason, entry.cells = api.DesignState.RUNNING, None, len(chosen) + len(sizes)
        entry.message = f"round {last.round + 1}: {len(sizes)} cell(s) chosen"
        self.event("Normal", "SizesChosen", f"{encoder}: round {last.round + 1} adds {sizes}: {reason}"[:1024])
        return True

    def plan_names(self) -> set[str]:
        return {c.name for c in self.plan.cells}

    def design_curve(self, encoder: str, entry: api.DesignStatus) -> design.Curve:
        """The encoder's measured curve for the design's task and metric, on the error scale."""
        gathered = results.gather(self.spec, self.status.cell_status, self.obs.results)
        by_size = gathered.get((entry.task, entry.metric, encoder), {})
        reps = {n: results.replicates(entry.metric, cells) for n, cells in by_size.items()}
        return design.Curve({n: r for n, r in reps.items() if n > 0}, reps.get(0))

    def due(self, cs: api.CellStatus) -> bool:
        nb = _parse(cs.not_before)
        return nb is None or self.now >= nb

    def summarise(self) -> None:
        s, now, gen = self.status, self.now, self.gen
        previous = s.phase
        states = [c.state for c in s.cell_status]
        s.cells = api.CellCounts(
            total=len(states), succeeded=states.count(CellState.SUCCEEDED), failed=states.count(CellState.FAILED),
            running=states.count(CellState.RUNNING),
            queued=sum(c.state is CellState.RUNNING and c.job_phase in rayjob.SUSPENDED_DEPLOYMENT
                       for c in s.cell_status),
            pending=sum(x in (CellState.PENDING, CellState.RETRYING, CellState.SUSPENDED) for x in states))
        s.progress = f"{s.cells.succeeded}/{s.cells.total}"
        s.results, s.fits, s.best_per_task = results.summarise(self.spec, s.cell_status, self.obs.results)
        s.best = results.best_overall(s.best_per_task)
        prep_failed = s.prepare is not None and s.prepare.state is CellState.FAILED
        designing = [d for d in s.design if d.state is api.DesignState.RUNNING]
        done = prep_failed or (bool(states) and all(x.terminal for x in states) and not designing)
        failed = prep_failed or s.cells.failed > 0
        if self.spec.suspend:
            s.phase = api.Phase.SUSPENDED
        elif done:
            s.phase = api.Phase.FAILED if failed else api.Phase.SUCCEEDED
        elif s.prepare is None or s.prepare.state is not CellState.SUCCEEDED:
            s.phase = api.Phase.PREPARING
        else:
            s.phase = api.Phase.RUNNING
        failed_names = [c.name for c in s.cell_status if c.state is CellState.FAILED]
        if prep_failed:
            failed_names.insert(0, s.prepare.name)
        if s.phase is not previous and s.phase in (api.Phase.SUCCEEDED, api.Phase.FAILED, api.Phase.SUSPENDED):
            failures = f"; failed: {', '.join(failed_names[:10])}" if failed_names else ""
            self.event("Warning" if s.phase is api.Phase.FAILED else "Normal", f"Study{s.phase.value}",
                       f"{s.progress} cells succeeded{failures}")
        set_condition(s, api.ConditionType.SUSPENDED, self.spec.suspend, "Suspended" if self.spec.suspend
                      else "NotSuspended", "", now, gen)
        queued = f"; {s.cells.queued} waiting for admission" if s.cells.queued else ""
        designs = "".join(f"; design {d.encoder}: {d.message}" for d in designing)
        reason = "Finished" if done else ("DesignRunning" if designing else "CellsRunning")
        set_condition(s, api.ConditionType.PROGRESSING, not done and not self.spec.suspend, reason,
                      f"{s.progress} cells succeeded{queued}{designs}"[:32768], now, gen)
        set_condition(s, api.ConditionType.SUCCEEDED, done and not failed,
                      "AllCellsSucceeded" if done and not failed else ("CellsFailed" if failed else "InProgress"),
                      f"{s.progress} cells succeeded", now, gen)
        set_condition(s, api.ConditionType.FAILED, done and failed, "CellsFailed" if failed else "NoFailures",
                      ("failed: " + ", ".join(failed_names[:10])) if failed_names else "", now, gen)


def _target_ci(iv: design.Interval) -> api.TargetCI:
    width = iv.width
    return api.TargetCI(value=iv.value, low=iv.low, high=iv.high, width=width if math.isfinite(width) else None)


def reconcile(study: api.ScalingStudy, observed: Observed, now: dt.datetime,
              settings: Settings = Settings()) -> Outcome:
    """One pure reconcile pass."""
    return _Run(study, observed, now, settings).run()
