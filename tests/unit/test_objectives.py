"""The pretraining losses on random inputs: known values, symmetries, reductions, gradients."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from radscale.trainer.objectives import clip, dino, heads, ibot, koleo, teacher, unicl

torch.manual_seed(0)


def test_dino_uniform_logits_give_log_k() -> None:
    k, b = 64, 8
    loss = dino.DINOLoss(k)
    teacher_probs = [torch.full((b, k), 1.0 / k)] * 2
    students = [torch.zeros(b, k) for _ in range(6)]  # 2 global + 4 local crops
    assert loss(students, teacher_probs).item() == pytest.approx(math.log(k), rel=1e-6)


def test_dino_skips_same_view_pairs_and_averages_the_rest() -> None:
    k, b = 16, 4
    loss = dino.DINOLoss(k)
    students = [torch.randn(b, k) for _ in range(4)]
    t = [F.softmax(torch.randn(b, k), -1) for _ in range(2)]
    expected = []
    for ti, tp in enumerate(t):
        for si, s in enumerate(students):
            if si != ti:
                expected.append(torch.sum(-tp * F.log_softmax(s / 0.1, -1), -1).mean())
    assert loss(students, t).item() == pytest.approx(torch.stack(expected).mean().item(), rel=1e-6)
    assert len(expected) == 2 * 4 - 2


def test_dino_centering_updates_with_momentum_and_sharpens() -> None:
    k = 8
    loss = dino.DINOLoss(k)
    logits = torch.randn(32, k) + 3.0
    probs = loss.teacher_targets(logits, temperature=0.04)
    assert torch.allclose(loss.center, 0.1 * logits.mean(0, keepdim=True), atol=1e-6)
    assert torch.allclose(probs.sum(-1), torch.ones(32), atol=1e-5)
    assert probs.max(-1).values.mean() > F.softmax(logits, -1).max(-1).values.mean()  # sharper than T=1


def test_sinkhorn_balances_prototypes_and_samples() -> None:
    scores = torch.tanh(torch.randn(64, 16))  # prototype scores are cosines: unit-norm bottleneck and prototypes
    q = dino.sinkhorn_knopp(scores, temperature=0.04, iterations=3)
    assert torch.allclose(q.sum(-1), torch.ones(64), atol=1e-4)  # each sample is a distribution
    per_proto = q.sum(0)
    assert (per_proto.max() / per_proto.min()) < 2.0, "prototypes get roughly equal mass"


def test_ibot_weights_each_image_equally_and_ignores_unmasked_images() -> None:
    k, n = 8, 10
    masks = torch.zeros(4, n, dtype=torch.bool)
    masks[0, :2] = True
    masks[1, :5] = True  # images 2 and 3 unmasked
    m = int(masks.sum())
    loss = ibot.IBOTPatchLoss(k)
    s, t = torch.zeros(m, k), torch.full((m, k), 1.0 / k)
    # every masked token costs log(k); two masked images out of four
    assert loss(s, t, masks).item() == pytest.approx(math.log(k) * 2 / 4, rel=1e-6)


def test_ibot_masks_follow_dinov2_collate() -> None:
    masks = ibot.sample_masks(16, (14, 14), rng=np.random.default_rng(0))
    per_image = masks.sum(-1)
    assert int((per_image > 0).sum()) == 8
    ratios = sorted((per_image[per_image > 0] / 196).tolist())
    # blocks never overshoot an image's count and rarely fall far short of it
    assert ratios[0] >= 0.07 and ratios[-1] <= 0.5 and ratios[-1] - ratios[0] > 0.2
    again = ibot.sample_masks(16, (14, 14), rng=np.random.default_rng(0))
    assert torch.equal(masks, again), "masks must be reproducible from the step's seed"


def _masked_neighbours(mask: np.ndarray) -> float:
    """Fraction of masked patches with a masked 4-neighbour."""
    padded = np.pad(mask, 1)
    neighbour = padded[:-2, 1:-1] | padded[2:, 1:-1] | padded[1:-1, :-2] | padded[1:-1, 2:]
    return float((mask & neighbour).sum() / max(1, mask.sum()))


def test_ibot_masks_are_blocks_not_scattered_patches() -> None:
    rng = np.random.default_rng(1)
    grid = (16, 16)
    blocky = [ibot.block_mask(grid, 60, rng) for _ in range(50)]
    assert all(0 < m.sum() <= 60 for m in blocky)
    assert np.mean([m.sum() for m in blocky]) > 50  # close to the asked count
    # scattered positions at this density have a masked neighbour about 1-(1-60/256)^4 = 65% of
    # the time; blocks (>= 4 patches, both sides >= 1) almost always do
    assert np.mean([_masked_neighbours(m) for m in blocky]) > 0.9
    scattered = np.zeros(256, dtype=bool)
    scattered[rng.choice(256, 60, replace=False)] = True
    assert _masked_neighbours(scattered.reshape(grid)) < 0.8
    # a block covers at most half the grid
    big = ibot.block_mask((4, 4), 16, rng)
    assert big.sum() <= 16 and ibot.block_mask((4, 4), 0, rng).sum() == 0


def test_koleo_known_value_and_spreading_lowers_it() -> None:
    x = torch.eye(4)  # orthonormal: every nearest neighbour is at sqrt(2)
    assert koleo.koleo_loss(x).item() == pytest.approx(-math.log(math.sqrt(2)), rel=1e-5)
    clumped = torch.randn(1, 16) + 0.01 * torch.randn(32, 16)
    spread = torch.randn(32, 16)
    assert koleo.koleo_loss(spread) < koleo.koleo_loss(clumped)


def test_clip_is_symmetric_and_perfect_pairs_score_low() -> None:
    img, txt = torch.randn(8, 32), torch.randn(8, 32)
    scale = clip.LogitScale()()
    assert scale.item() == pytest.approx(1 / 0.07, rel=1e-5)
    assert clip.clip_loss(img, txt, scale).item() == pytest.approx(clip.clip_loss(txt, img, scale).item(), rel=1e-6)
    aligned = clip.clip_loss(img, img.clone(), scale)
    assert aligned < clip.clip_loss(img, txt, scale) and aligned < 0.1
    # the forward never clamps (open_clip clamps the parameter after the step; tests/unit/test_recipes.py)
    hot = clip.LogitScale(init_temperature=0.001)
    assert hot().item() == pytest.approx(1000.0, rel=1e-5)
    hot.clamp_()
    assert hot().item() == pytest.approx(100.0, rel=1e-6)


def test_unicl_equals_clip_when_all_labels_are_distinct() -> None:
    img, txt = torch.randn(8, 32), torch.randn(8, 32)
    scale = clip.LogitScale()()
    targets = unicl.label_targets(torch.arange(8), torch.arange(8))
    logits = clip.contrastive_logits(img, txt, scale)
    assert unicl.unicl_loss(logits, targets).item() == pytest.approx(clip.clip_loss(img, txt, scale).item(), rel=1e-6)
    # and the multi-label form with distinct reports and no positive labels is CLIP plus prompt negatives
    no_labels = torch.zeros(8, 3)
    loss = unicl.multilabel_unicl_loss(img, txt, torch.randn(3, 32), no_labels, scale)
    assert loss > clip.clip_loss(img, txt, scale) - 1e-6


def test_unicl_multilabel_targets_and_prompts() -> None:
    classes = torch.tensor([1, 2, 1])
    labels = torch.tensor([[1, 0], [-1, 1], [0, 0]])
    t = unicl.multilabel_targets(classes, labels)
    assert t.tolist() == [[1, 0, 1, 1, 0], [0, 1, 0, 0, 1], [1, 0, 1, 0, 0]]  # -1 uncertain: not positive
    assert unicl.prompt("pleural_effusion") == "chest x-ray with pleural effusion"
    img, rep, pr = (torch.randn(n, 16, requires_grad=True) for n in (3, 3, 2))
    loss = unicl.multilabel_unicl_loss(img, rep, pr, labels, clip.LogitScale()())
    loss.backward()
    assert torch.isfinite(loss) and all(t.grad.abs().sum() > 0 for t in (img, rep, pr))


def test_gradients_reach_the_student_not_the_teacher_and_ema_moves_the_teacher() -> None:
    student = heads.DINOHead(32, out_dim=64, hidden_dim=48, bottleneck_dim=16)
    teach = copy.deepcopy(student)
    for p in teach.parameters():
        p.requires_grad_(False)
    loss_fn = dino.DINOLoss(64)
    x = torch.randn(2, 8, 32)
    with torch.no_grad():
        t_probs = [loss_fn.teacher_targets(teach(x[i]), 0.04) for i in range(2)]
    loss = loss_fn([student(x[i]) for i in range(2)], t_probs)
    loss.backward()
    assert all(p.grad is None for p in teach.parameters())
    trainable = [p for p in student.parameters() if p.requires_grad]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
    g = student.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.allclose(g, torch.ones_like(g)), "prototype norms fixed at 1"

    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    before = [p.clone() for p in teach.parameters()]
    teacher.ema_update(teach, student, momentum=0.9)
    for b, t, s in zip(before, teach.parameters(), student.parameters(), strict=True):
        assert torch.allclose(t, 0.9 * b + 0.1 * s, atol=1e-6)


def test_schedules() -> None:
    assert teacher.teacher_momentum(0, 100) == pytest.approx(0.992)
    assert teacher.teacher_momentum(50, 100) == pytest.approx(0.996)
    assert teacher.teacher_momentum(100, 100) == 1.0
    assert teacher.teacher_temperature(0, 10) == pytest.approx(0.04)
    assert teacher.teacher_temperature(5, 10) == pytest.approx(0.055)
    assert teacher.teacher_temperature(50, 10) == pytest.approx(0.07)
