"""Dice and clDice on masks whose answers are known."""

from __future__ import annotations

import numpy as np

from radscale.trainer.evaluate.segmentation_metrics import cldice, dice


def line(width: int, gap: tuple[int, int] | None = None) -> np.ndarray:
    m = np.zeros((64, 64), bool)
    m[32 - width // 2: 32 + (width + 1) // 2, 4:60] = True
    if gap:
        m[:, gap[0]:gap[1]] = False
    return m


def test_identical_disjoint_and_empty() -> None:
    t = line(5)
    assert dice(t, t) == 1.0 and cldice(t, t) == 1.0
    far = np.roll(t, 20, axis=0)
    assert dice(far, t) == 0.0 and cldice(far, t) == 0.0
    empty = np.zeros_like(t)
    assert dice(empty, empty) == 1.0 and cldice(empty, empty) == 1.0 and cldice(empty, t) == 0.0


def test_cldice_follows_the_centreline_not_the_thickness() -> None:
    catheter = line(7)
    centreline = line(1)  # the right path, one pixel wide
    assert dice(centreline, catheter) < 0.3
    assert cldice(centreline, catheter) > 0.95


def test_a_broken_catheter_costs_cldice() -> None:
    catheter = line(3)
    broken = line(3, gap=(20, 40))  # a third of it missing
    assert cldice(broken, catheter) < cldice(catheter, catheter)
    assert 0.7 < cldice(broken, catheter) < 0.9
