"""Cross-worker helpers that are no-ops on one process, so every loss runs the same on CPU tests."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over workers, in place and without gradient (centres, normalisers)."""
    if world()[1] > 1:
        dist.all_reduce(x)
    return x


def all_reduce_max(x: torch.Tensor) -> torch.Tensor:
    if world()[1] > 1:
        dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return x


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every worker's rows, keeping the gradient to this worker's rows (contrastive
    negatives from the global batch)."""
    if world()[1] == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every worker's rows, without gradient (labels, targets)."""
    if world()[1] == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world()[1])]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)
