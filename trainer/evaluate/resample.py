"""Patient-level resamples of the test split, shared by every cell of a study (common random numbers).

Every cell of a study is scored on the same test split, so the operator's fit bootstrap must resample
that one test set once per draw, for all cells together. Each evaluate cell therefore scores its heads
on :data:`~radscale.cells.TEST_DRAWS` resamples whose draw ``i`` depends only on the split seed, the
set of (hashed) test patient ids and ``i``: never on the cell's encoder, size, replicate, run seed,
task or row order. Resampling patients rather than rows keeps a patient's images together, as the
patient-level split does.

Pure numpy: the metrics that consume the weights live with their tasks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

# Keeps these streams apart from any other use of the split seed (the split itself, the pool order).
DOMAIN = "radscale-test-resample"
_TAG = int.from_bytes(hashlib.sha256(DOMAIN.encode()).digest()[:8], "little")


def generator(seed: int) -> np.random.Generator:
    """The resamples' numpy Generator: seeded by (split seed, :data:`DOMAIN`), the same in any process."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), _TAG]))


def patient_weights(patients: Sequence[str], seed: int, draws: int) -> np.ndarray:
    """(draws, rows) int32: row ``r``'s weight in resample ``i`` is how often resample ``i`` drew its patient.

    Resample ``i`` draws as many patients as there are distinct ones, with replacement, from the sorted
    distinct ids, so it is a function of (``seed``, that sorted set, ``i``) only: reordering the rows,
    or scoring a subset of them (segmentation scores only images with a catheter), keeps each patient's
    weight, and row ``i`` of the matrix does not depend on ``draws``.
    """
    ids, inverse = np.unique(np.asarray(list(patients), dtype=str), return_inverse=True)
    n = len(ids)
    if n == 0:
        return np.zeros((draws, 0), np.int32)
    picks = generator(seed).integers(0, n, (draws, n))
    # per-draw counts in one bincount: offset each draw's picks into its own block of n bins
    counts = np.bincount((picks + n * np.arange(draws)[:, None]).ravel(), minlength=draws * n).reshape(draws, n)
    return counts[:, inverse.ravel()].astype(np.int32)
