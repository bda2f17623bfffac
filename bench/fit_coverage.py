"""How often the fits' nominal 95% intervals cover the truth, with the noise a real study has.

    .venv/bin/python bench/fit_coverage.py [--studies 300] [--boot 1000] [--method varpro]

Each simulated study has a known law err(N) = a N^-b + c and a baseline error (so a known
crossover). Every cell (size x replicate, and the baseline's replicates) is one training run:

- run-to-run noise: each cell's error moves by N(0, --run-sd) (0.02, as the issue's simulation);
- one shared test set of --patients patients: patient i adds u_i to every cell's error (its
  difficulty), so the test set's mean shift (sd --test-sd, 0.01) is common to all cells, plus a
  small cell x patient interaction (--cell-test-sd of the mean, 0.004).

A cell reports its full-test error and its errors in the study's shared test-patient resamples,
exactly what an evaluate job writes; :func:`radscale.operator.fits.fit_curve` fits and bootstraps.
The truth for c is the population error (an infinite test set, the mean over runs). A crossover
truth below the smallest size counts as the smallest size ("<= N_min"); one beyond
maxExtrapolation x the largest size counts as not reached.

Coverage is over the studies whose law was fitted; the share with "no law fitted" is printed
beside it. The last line is ``coverage b=... c=... crossover=... (replicates=2)`` at the paper's sizes.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from radscale.operator import fits

REPO = Path(__file__).resolve().parents[1]
PAPER_SIZES = (30_000, 50_000, 100_000, 1_000_000, 3_500_000)


def _demo_sizes() -> tuple[int, ...]:
    """The sizes `make demo` runs, read from its study so the two never drift apart."""
    import yaml

    doc = yaml.safe_load((REPO / "manifests" / "examples" / "study-local.yaml").read_text())
    return tuple(int(n) for n in doc["spec"]["sizes"])


DEMO_SIZES = _demo_sizes()


@dataclasses.dataclass(frozen=True)
class Truth:
    law: fits.PowerLaw
    baseline: float

    def crossover(self, sizes: tuple[int, ...], max_extrapolation: float) -> float:
        a, b, c = self.law.a, self.law.b, self.law.c
        if self.law(sizes[0]) < self.baseline:
            return float(sizes[0])
        if self.baseline <= c:
            return math.inf
        n = (a / (self.baseline - c)) ** (1 / b)
        return n if n <= sizes[-1] * max_extrapolation else math.inf


def truth_for(sizes: tuple[int, ...], rng: np.random.Generator) -> Truth:
    """A law whose error falls by 0.08-0.2 over the sizes (against run noise 0.02) and a baseline
    it crosses somewhere inside the measured range."""
    b = rng.uniform(0.25, 0.6)
    c = rng.uniform(0.05, 0.15)
    drop = rng.uniform(0.08, 0.2)
    a = drop / (sizes[0] ** -b - sizes[-1] ** -b)
    law = fits.PowerLaw(a, b, c)
    at = math.exp(rng.uniform(math.log(sizes[0]) + 0.3, math.log(sizes[-1]) - 0.3))
    return Truth(law, float(law(at)))


class TestSet:
    """One study's shared test set: patient difficulties and the study's patient resamples; each
    cell drawn from it moves with the same patients (what an evaluate job writes)."""

    def __init__(self, rng: np.random.Generator, *, run_sd: float = 0.02, test_sd: float = 0.01,
                 cell_test_sd: float = 0.004, patients: int = 400, draws: int = 1000):
        self.rng, self.run_sd, self.cell_test_sd, self.patients = rng, run_sd, cell_test_sd, patients
        self.u = rng.normal(0, test_sd * math.sqrt(patients), patients)
        self.counts = rng.multinomial(patients, np.full(patients, 1 / patients), size=draws).astype(float)

    def cells(self, err: float, replicates: int) -> fits.Replicates:
        rng, p = self.rng, self.patients
        per_patient = err + rng.normal(0, self.run_sd, (replicates, 1)) + self.u[None, :] + \
            rng.normal(0, self.cell_test_sd * math.sqrt(p), (replicates, p))
        full = per_patient.mean(1)
        resampled = per_patient @ self.counts.T / p  # (R, draws): each draw the same patients in every cell
        return fits.Replicates(full, resampled)


def simulate(truth: Truth, sizes: tuple[int, ...], replicates: int, rng: np.random.Generator,
             **noise: float) -> tuple[list[fits.Replicates], fits.Replicates]:
    """The per-size replicates and the baseline's, with the study's shared test resamples."""
    test = TestSet(rng, **noise)
    return [test.cells(float(truth.law(n)), replicates) for n in sizes], test.cells(truth.baseline, replicates)


def covered(ci: tuple[float, float | None] | None, value: float) -> bool:
    if ci is None:
        return False
    lo, hi = ci
    return lo <= value <= (math.inf if hi is None else hi)


def coverage(sizes: tuple[int, ...], replicates: int, studies: int, boot: int, method: str,
             seed: int = 0) -> dict[str, float]:
    rng = np.random.default_rng([seed, replicates, len(sizes)])
    hits = {"b": 0, "c": 0, "crossover": 0}
    fitted, seconds, widths = 0, 0.0, []
    for i in range(studies):
        truth = truth_for(sizes, rng)
        points, base = simulate(truth, sizes, replicates, rng)
        t = time.perf_counter()
        f = fits.fit_curve(sizes, points, base, method=method, n_boot=boot, seed=i)
        seconds += time.perf_counter() - t
        if not f.fitted:
            continue
        fitted += 1
        if "b" in f.ci95:
            widths.append((f.ci95["b"][1] - f.ci95["b"][0]) / truth.law.b)
        hits["b"] += covered(f.ci95.get("b"), truth.law.b)
        hits["c"] += covered(f.ci95.get("c"), truth.law.c)
        hits["crossover"] += covered(f.crossover.ci95, truth.crossover(sizes, 10.0))
    out = {k: v / max(fitted, 1) for k, v in hits.items()}
    out["fitted"] = fitted / studies
    out["b_width"] = float(np.median(widths)) if widths else math.nan
    out["seconds_per_curve"] = seconds / studies
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=300, help="simulated curves per row")
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--method", choices=fits.METHODS, default="varpro")
    ap.add_argument("--replicates", type=int, nargs="+", default=[1, 2, 3])
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}; "
          f"{args.studies} studies per row, {args.boot} draws, fit {args.method}")
    print("nominal 95% intervals; coverage over the studies with a fitted law; b CI/b: median CI width / true b")
    print(f"{'sizes':<8} {'replicates':>10} {'b':>6} {'c':>6} {'crossover':>10} "
          f"{'law fitted':>11} {'b CI/b':>7} {'ms/curve':>9}")
    last = None
    for name, sizes in (("demo", DEMO_SIZES), ("paper", PAPER_SIZES)):
        for r in args.replicates:
            cov = coverage(sizes, r, args.studies, args.boot, args.method)
            print(f"{name:<8} {r:>10} {cov['b']:>6.3f} {cov['c']:>6.3f} {cov['crossover']:>10.3f} "
                  f"{cov['fitted']:>11.2f} {cov['b_width']:>7.2f} {cov['seconds_per_curve'] * 1e3:>9.0f}", flush=True)
            if name == "paper" and r == 2:
                last = cov
    if last is not None:
        print(f"coverage b={last['b']:.3f} c={last['c']:.3f} crossover={last['crossover']:.3f} (replicates=2)")


if __name__ == "__main__":
    main()
