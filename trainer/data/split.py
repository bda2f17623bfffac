"""Patient-level splits and nested subsets. Pure and deterministic for a seed.

Each patient is assigned by a keyed hash of (seed, patient id): a patient's split never depends
on who else is in the manifest, so adding patients moves nobody. Evaluation patients are split
again into probe train / val / test. The pretraining pool is ordered by a keyed hash of
(seed, image path): size N is the first N images of that one order, so every subset contains
every smaller one (nested), and appending images to a manifest does not reorder the others.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np

# Shares of the evaluation patients: enough test patients for a tight bootstrap CI.
EVAL_SHARES = {"train": 0.5, "val": 0.2, "test": 0.3}


def _unit(keys: Sequence[str], seed: int, domain: str) -> np.ndarray:
    """Keyed hash of each key, as a float in [0, 1)."""
    salt = f"{domain}:{seed}:".encode()
    return np.array([int.from_bytes(hashlib.blake2b(salt + k.encode(), digest_size=8).digest(), "big")
                     for k in keys], dtype=np.float64) / 2.0**64


@dataclasses.dataclass(frozen=True)
class Split:
    pool: np.ndarray  # row indices, in nested order
    eval_train: np.ndarray
    eval_val: np.ndarray
    eval_test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {"pool": len(self.pool), "eval_train": len(self.eval_train), "eval_val": len(self.eval_val),
                "eval_test": len(self.eval_test)}


def split_by_patient(patients: Sequence[str], images: Sequence[str], eval_fraction: float, seed: int) -> Split:
    if len(patients) != len(images):
        raise ValueError("patients and images differ in length")
    uniq, inverse = np.unique(np.asarray(patients, dtype=object).astype(str), return_inverse=True)
    u = _unit(list(uniq), seed, "patient")
    is_eval = u < eval_fraction
    # eval patients: rescale their hash to [0, 1) and cut by EVAL_SHARES
    v = np.where(is_eval, u / eval_fraction, 2.0)
    cut_train, cut_val = EVAL_SHARES["train"], EVAL_SHARES["train"] + EVAL_SHARES["val"]
    part = np.select([~is_eval, v < cut_train, v < cut_val], [0, 1, 2], default=3)[inverse]
    rows = np.arange(len(patients))
    pool = rows[part == 0]
    order = np.argsort(_unit([images[i] for i in pool], seed, "image"), kind="stable")
    return Split(pool=pool[order], eval_train=rows[part == 1], eval_val=rows[part == 2], eval_test=rows[part == 3])


def nested_subset(split: Split, size: int) -> np.ndarray:
    """The first ``size`` images of the pool's one seeded order."""
    if size > len(split.pool):
        raise ValueError(f"size {size} exceeds the pretraining pool of {len(split.pool)} images; "
                         "lower the size, or lower dataset.split.evalFraction")
    return split.pool[:size]
