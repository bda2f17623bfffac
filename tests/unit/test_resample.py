"""The shared test-patient resamples: deterministic, per patient, and the same in every cell."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np

from radscale.trainer.evaluate import resample


def _patients(rng: np.random.Generator, n_patients: int = 30) -> list[str]:
    """Hashed-looking ids, 1-4 images each, rows in no particular order."""
    ids = [hashlib.sha256(str(i).encode()).hexdigest()[:16] for i in range(n_patients)]
    rows = [p for p in ids for _ in range(int(rng.integers(1, 5)))]
    return [rows[i] for i in rng.permutation(len(rows))]


def test_weights_count_each_patient_once_per_draw_of_it():
    patients = _patients(np.random.default_rng(0))
    w = resample.patient_weights(patients, seed=3, draws=200)
    assert w.shape == (200, len(patients)) and w.dtype == np.int32
    ids = sorted(set(patients))
    first = [patients.index(p) for p in ids]
    # rows of one patient share its weight; the patients' weights sum to the number of patients
    for p, r in zip(ids, first, strict=True):
        assert (w[:, [i for i, q in enumerate(patients) if q == p]] == w[:, [r]]).all()
    assert (w[:, first].sum(1) == len(ids)).all()
    # about 1 - 1/e of the patients appear in a draw; each with mean multiplicity 1
    assert 0.55 < (w[:, first] > 0).mean() < 0.72
    assert abs(w[:, first].mean() - 1.0) < 1e-9


def test_weights_are_the_same_for_any_row_order_and_subset():
    rng = np.random.default_rng(1)
    cell_a = _patients(rng)
    order = rng.permutation(len(cell_a))  # another cell that reads the same test rows in another order
    cell_b = [cell_a[i] for i in order]
    wa, wb = resample.patient_weights(cell_a, 7, 100), resample.patient_weights(cell_b, 7, 100)
    assert (wb == wa[:, order]).all()
    # more draws extend the matrix without changing the earlier ones
    assert (resample.patient_weights(cell_a, 7, 300)[:100] == wa).all()
    # another split seed, other resamples
    assert not (resample.patient_weights(cell_a, 8, 100) == wa).all()


def test_weights_are_identical_in_another_process():
    patients = _patients(np.random.default_rng(2))
    here = hashlib.sha256(resample.patient_weights(patients, 11, 50).tobytes()).hexdigest()
    code = ("import hashlib, sys; from radscale.trainer.evaluate import resample; "
            "p = sys.stdin.read().split(); "
            "print(hashlib.sha256(resample.patient_weights(p, 11, 50).tobytes()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], input=" ".join(patients), capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == here


def test_no_patients_gives_empty_rows():
    assert resample.patient_weights([], 0, 5).shape == (5, 0)
