"""Sequential design of sizes (spec.adaptive): the pure choice, then reconcile tables for adaptive
studies: round 0, the rounds it adds and why, the stop, a restart between a result and its decision,
a batch, and extending a finished design."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from radscale.cells import CellResult, MetricValue, TaskResult
from radscale.operator import api, design, fits, plan, reconcile
from radscale.operator.reconcile import CreateJob, Observed
from radscale.spec import AdaptiveSpec, DesignTarget
from tests.conftest import EXAMPLES, edit, load_yaml
from tests.unit.test_reconcile import CFG, T0, cond, study_of

SHIFT = np.random.default_rng(7).normal(0, 0.01, 200)  # the shared test set: one shift per resample


def truth(size: int) -> float:
    """Error on the findings task: a power law crossing the baseline (err 0.28) at about N = 69."""
    return 0.28 if size == 0 else 0.3 * (size / 25) ** -0.5 + 0.1


def result(study: api.ScalingStudy, cs: api.CellStatus) -> CellResult:
    """A cell's evaluation: the truth plus run noise (seeded by size and replicate), with draws on the
    shared test set (each cell its own small cell x patient part)."""
    rng = np.random.default_rng([cs.size, cs.replicate, 3])
    err = truth(cs.size) + rng.normal(0, 0.01)
    tasks = {}
    for t in study.spec.evaluation.tasks:
        m = t.headline_metric
        draws = (1 - err + SHIFT + rng.normal(0, 0.002, len(SHIFT))).round(6).tolist()
        tasks[t.name] = TaskResult(metric=m, metrics={m: MetricValue(value=1 - err, ci_low=1 - err - 0.02,
                                                                     ci_high=1 - err + 0.02)}, draws={m: draws})
    return CellResult(study=study.metadata.name, cell=cs.name, encoder=cs.encoder, size=cs.size, evaluate=tasks)


def adaptive(**changes):
    doc = load_yaml(EXAMPLES / "study-adaptive.yaml")
    base = {"spec.encoders": doc["spec"]["encoders"][:1], "spec.replicates": 2,
            "spec.evaluation.tasks": doc["spec"]["evaluation"]["tasks"][:1],
            "spec.adaptive": {"min": 25, "max": 200, "initial": 3, "grid": 8, "maxCells": 9, "target": "crossover",
                              "task": "findings", "relativeWidth": 0.05}}
    return edit(doc, {**base, **changes})


class Driver:
    """Drives the core as the operator would: every created RayJob finishes in the next pass, and an
    evaluation leaves its result."""

    def __init__(self, doc):
        self.doc, self.jobs, self.created, self.written, self.status = doc, {}, [], {}, None
        self.now, self.outcomes = T0, []

    def observed(self):
        return Observed(jobs=dict(self.jobs), prepared=True, results=dict(self.written))

    def step(self) -> reconcile.Outcome:
        study = study_of(self.doc, self.status)
        out = reconcile.reconcile(study, self.observed(), self.now, CFG)
        self.apply(study, out)
        return out

    def apply(self, study, out) -> None:
        self.status = out.status
        self.outcomes.append(out)
        for j in list(self.jobs.values()):  # what ran last pass has finished now
            labels = j["metadata"]["labels"]
            j["status"] = {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}
            if labels["radscale.io/stage"] == "evaluate":
                cs = next(c for c in out.status.cell_status if c.name == labels["radscale.io/cell"])
                self.written[cs.name] = result(study, cs)
        for a in out.actions:
            if isinstance(a, CreateJob):
                assert a.name not in self.jobs and a.name not in self.created, f"{a.name} created twice"
                self.jobs[a.name] = {"metadata": a.manifest["metadata"],
                                     "status": {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}}
                self.created.append(a.name)
        self.now += dt.timedelta(minutes=5)

    def run(self, steps: int = 200) -> api.ScalingStudyStatus:
        for _ in range(steps):
            self.step()
            if self.status.phase in (api.Phase.SUCCEEDED, api.Phase.FAILED):
                break
        return self.status


def events(outcomes, reason):
    return [a for o in outcomes for a in o.actions if isinstance(a, reconcile.Event) and a.reason == reason]


# ---- the pure choice ------------------------------------------------------------------------------


def test_the_candidate_grid_is_log_spaced_over_the_range_and_round_zero_takes_its_ends_and_middle():
    ad = AdaptiveSpec(min=25, max=200, grid=8, initial=3, max_cells=9)
    grid = design.candidates(ad)
    assert grid[0] == 25 and grid[-1] == 200 and len(grid) == 8
    ratios = np.diff(np.log(grid))
    assert np.allclose(ratios, ratios.mean(), atol=0.05)
    first, middle, last = design.initial_sizes(ad)
    assert (first, last) == (25, 200) and middle in grid[3:5]
    assert design.initial_cells(ad, 2) == tuple(n for n in design.initial_sizes(ad) for _ in range(2))
    assert design.with_replicates([25, 60, 25, 25]) == [(25, 0), (60, 0), (25, 1), (25, 2)]


def curve_of(sizes, replicates=2, base=True, seed=0):
    rng = np.random.default_rng(seed)

    def reps(err, r):
        values = err + rng.normal(0, 0.01, r)
        return fits.Replicates(values, values[:, None] + SHIFT[None, :] + rng.normal(0, 0.002, (r, len(SHIFT))))

    return design.Curve({n: reps(truth(n), replicates) for n in sizes}, reps(truth(0), replicates) if base else None)


def test_a_round_is_deterministic_and_names_why_each_cell_was_chosen():
    ad = AdaptiveSpec(min=25, max=200, grid=8, max_cells=12, relative_width=0.01)
    cells = list(design.initial_cells(ad, 2))
    a = design.choose(curve_of(design.initial_sizes(ad)), ad, cells, 3)
    b = design.choose(curve_of(design.initial_sizes(ad)), ad, cells, 3)
    assert a == b and a.stop is None and len(a.choices) == 3
    assert all(c.size in (*design.candidates(ad), design.BASELINE) for c in a.choices)
    assert all("shrinks the crossover CI most" in c.reason for c in a.choices)
    widths = [c.predicted.width for c in a.choices]
    assert all(w <= a.current.width for w in widths) and widths == sorted(widths, reverse=True), \
        "each cell of the batch is predicted to narrow the interval further"


def test_a_design_stops_when_the_interval_is_narrow_enough_or_the_budget_is_spent():
    ad = AdaptiveSpec(min=25, max=200, grid=8, max_cells=6, relative_width=0.01)
    sizes = design.initial_sizes(ad)
    spent = design.choose(curve_of(sizes), ad, list(design.initial_cells(ad, 2)), 1)
    assert spent.stop == design.Stop.BUDGET_SPENT and "6/6 cells spent" in spent.message and not spent.choices
    wide = ad.model_copy(update={"relative_width": 10.0, "max_cells": 20})
    done = design.choose(curve_of(sizes), wide, list(design.initial_cells(ad, 2)), 1)
    assert done.stop == design.Stop.TARGET_REACHED and done.current.width <= 10.0


def test_before_three_sizes_the_design_fills_the_widest_gap():
    ad = AdaptiveSpec(min=25, max=200, grid=8, initial=2, max_cells=8)
    rnd = design.choose(curve_of((25, 200)), ad, [25, 25, 200, 200], 1)
    assert rnd.choices[0].size in design.candidates(ad)[3:5] and "widest gap" in rnd.choices[0].reason


@pytest.mark.parametrize("target", [DesignTarget.EXPONENT, DesignTarget.ERROR_AT_MAX])
def test_law_targets_read_their_interval_from_the_fit(target):
    ad = AdaptiveSpec(min=25, max=200, grid=8, max_cells=12, target=target, relative_width=0.01)
    rnd = design.choose(curve_of((25, 50, 100, 200)), ad, [25, 25, 50, 50, 100, 100, 200, 200], 1)
    assert rnd.current.value is not None and rnd.current.low < rnd.current.value < rnd.current.high
    assert len(rnd.choices) == 1 and rnd.choices[0].size != design.BASELINE, "the baseline plays no part in a law"


def test_a_design_beats_random_choices_on_simulated_curves():
    """On 12 simulated studies with a known law, the design's final crossover interval is narrower
    than that of the same budget spent on random candidates (the benchmark's claim, in small)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
    from adaptive import simulate_design

    chosen, rand = [], []
    for seed in range(12):
        chosen.append(simulate_design(seed, budget=10, policy="design"))
        rand.append(simulate_design(seed, budget=10, policy="random"))
    assert np.median(chosen) < np.median(rand), (chosen, rand)


# ---- reconcile tables -------------------------------------------------------------------------------


def test_round_zero_is_planned_from_the_spec_and_recorded_with_one_event():
    out = Driver(adaptive()).step()
    d = out.status.design[0]
    assert (d.encoder, d.target, d.task, d.metric, d.state) == ("dino", "crossover", "findings", "auroc", "Running")
    assert d.decisions[0].round == 0 and d.decisions[0].sizes == [25, 25, 82, 82, 200, 200]
    assert "initial: 3 log-spaced sizes" in d.decisions[0].reason and d.batch_rule == design.BATCH_RULE
    names = {c.name for c in out.status.cell_status}
    assert {"cxr-adaptive-dino-25", "cxr-adaptive-dino-25-r1", "cxr-adaptive-dino-base-r1"} <= names
    assert len(events([out], "SizesChosen")) == 1


def test_an_adaptive_study_adds_rounds_until_it_stops_and_only_then_succeeds():
    drv = Driver(adaptive())
    status = drv.run()
    d = status.design[0]
    assert status.phase == api.Phase.SUCCEEDED and d.state == "Stopped"
    assert d.stop_reason in (design.Stop.TARGET_REACHED, design.Stop.BUDGET_SPENT), d.message
    assert len(d.decisions) >= 2, "at least one round after the initial one"
    chosen = [n for dec in d.decisions for n in dec.sizes]
    assert d.cells == len(chosen) <= 9
    for dec in d.decisions[1:]:
        assert dec.reason and dec.before is not None and dec.predicted is not None and dec.after is not None
    # every chosen cell exists once: sizes as (size, replicate), 0 as extra baseline evaluations
    pretrain = sorted((c.size, c.replicate) for c in status.cell_status if c.size > 0)
    assert pretrain == sorted(design.with_replicates([n for n in chosen if n]))
    baselines = [c for c in status.cell_status if c.size == 0]
    assert len(baselines) == 2 + chosen.count(0)
    assert len(drv.created) == len(set(drv.created)) == len(baselines) + 2 * len(pretrain)  # shards exist: no prepare
    assert len(events(drv.outcomes, "SizesChosen")) == len(d.decisions)
    assert len(events(drv.outcomes, "DesignStopped")) == 1
    progressing = [next(c for c in o.status.conditions if c.type == "Progressing") for o in drv.outcomes]
    assert any(c.reason == "DesignRunning" and "design dino: round" in c.message for c in progressing)
    assert cond(status, "Progressing").reason == "Finished"


def test_a_restart_between_a_result_and_its_decision_makes_the_same_decision_and_no_duplicate():
    drv = Driver(adaptive())
    while True:  # up to the pass that sees round 0's last result
        before = drv.status
        study = study_of(drv.doc, before)
        out = reconcile.reconcile(study, drv.observed(), drv.now, CFG)
        if out.status.design and len(out.status.design[0].decisions) > 1:
            break
        drv.apply(study, out)
    # the operator dies before its status patch: a new one starts from the old status, caches cold
    design._cached.cache_clear()
    again = reconcile.reconcile(study_of(drv.doc, before), drv.observed(), drv.now, CFG)
    assert [a.name for a in again.actions if isinstance(a, CreateJob)] == \
        [a.name for a in out.actions if isinstance(a, CreateJob)]
    assert again.status.design[0].decisions[1].sizes == out.status.design[0].decisions[1].sizes
    drv.apply(study, again)
    # the next pass (status patched, RayJobs exist) creates none of them again
    known = set(drv.created)
    nxt = drv.step()
    assert not {a.name for a in nxt.actions if isinstance(a, CreateJob)} & known


def test_a_batch_chooses_up_to_max_concurrent_cells_at_once():
    drv = Driver(adaptive(**{"spec.maxConcurrentCells": 3}))
    status = drv.run()
    rounds = status.design[0].decisions[1:]
    assert rounds and all(1 <= len(r.sizes) <= 3 for r in rounds)
    assert any(len(r.sizes) > 1 for r in rounds) or status.design[0].stop_reason == design.Stop.BUDGET_SPENT


def test_extending_a_finished_design_adds_rounds_and_keeps_every_finished_cell():
    small = {"min": 25, "max": 200, "initial": 3, "grid": 8, "maxCells": 6, "task": "findings",
             "relativeWidth": 0.01}
    drv = Driver(adaptive(**{"spec.adaptive": small}))
    status = drv.run()
    d = status.design[0]
    assert d.stop_reason == design.Stop.BUDGET_SPENT and len(d.decisions) == 1
    done = {c.name for c in status.cell_status if c.state == "Succeeded"}
    # a wider range (within what the budget covers: 64 steps x 32) and a larger budget
    drv.doc = adaptive(**{"spec.adaptive": {**small, "min": 16, "max": 208, "grid": 10, "maxCells": 8}})
    out = drv.step()
    d = out.status.design[0]
    assert d.state == "Running" and len(d.decisions) == 2 and d.stop_reason is None
    assert all(n in design.candidates(AdaptiveSpec(min=16, max=208, grid=10)) or n == 0 for n in d.decisions[1].sizes)
    assert {c.name for c in out.status.cell_status if c.state == "Succeeded"} >= done
    assert out.status.phase == api.Phase.RUNNING
    final = drv.run()
    assert final.phase == api.Phase.SUCCEEDED and final.design[0].cells <= 8


def test_plan_of_a_fixed_size_study_is_unchanged_by_designs():
    doc = load_yaml(EXAMPLES / "study-local.yaml")
    p = plan.plan(study_of(doc))
    assert sorted({c.size for c in p.cells}) == [0, 32, 128, 512, 2048]
