"""The DINO teacher: an exponential moving average of the student, and the schedules DINOv2 uses."""

from __future__ import annotations

import math

import torch
from torch import nn


def cosine(start: float, end: float, step: int, total: int) -> float:
    """Cosine from ``start`` (step 0) to ``end`` (step ``total`` and after)."""
    if total <= 0 or step >= total:
        return end
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * step / total))


def linear_warmup(start: float, end: float, step: int, warmup: int) -> float:
    """Linear from ``start`` to ``end`` over ``warmup`` steps, then ``end``."""
    if warmup <= 0 or step >= warmup:
        return end
    return start + (end - start) * step / warmup


def teacher_momentum(step: int, total: int, base: float = 0.992, final: float = 1.0) -> float:
    """EMA momentum, cosine from 0.992 to 1.0 over training (DINOv2)."""
    return cosine(base, final, step, total)


def teacher_temperature(step: int, warmup: int, start: float = 0.04, end: float = 0.07) -> float:
    """Teacher softmax temperature, warmed up linearly from 0.04 to 0.07 (DINO/DINOv2)."""
    return linear_warmup(start, end, step, warmup)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- m * teacher + (1 - m) * student, parameter by parameter (buffers copied).
    Under FSDP both are sharded alike and each rank updates its own shards."""
    from radscale.trainer.parallel import local_parameters

    t_params, s_params = local_parameters(teacher), local_parameters(student)
    if len(t_params) != len(s_params):
        raise ValueError("teacher and student must have the same parameters")
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, [p.detach() for p in s_params], alpha=1.0 - momentum)
    for tb, sb in zip(teacher.buffers(), student.buffers(), strict=True):
        tb.copy_(sb)
