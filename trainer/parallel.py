"""How a pretraining model is spread over the Ray Train workers, and how its state is saved.

- ``ddp`` (the default): Ray Train's ``prepare_model`` wraps the model in DistributedDataParallel;
  every worker holds the whole model, its gradients and AdamW's two moments.
- ``fsdp``: PyTorch FSDP2 (``fully_shard``) shards parameters, gradients and optimizer state over
  the workers, so per-worker memory for them falls by the world size. Each transformer block (image
  and text towers) and each DINO head is its own unit, gathered just before it runs and freed
  after; the rest (embeddings, norms, projections, mask token) is the root unit. The DINO teacher
  is sharded the same way, so its EMA update is local to each shard: no communication.
  (Ray Train's ``prepare_model`` offers only FSDP1, and only on GPUs; FSDP2 also runs on CPU
  with gloo, which is how the tests check it.)

Checkpoints hold full, unsharded state in both cases (``torch.distributed.checkpoint``'s state-dict
API, gathered to rank 0, keyed by parameter name), and ``encoder.safetensors`` is the same file
whichever strategy wrote it. Gathering is collective:
every rank calls :func:`full_state` and :func:`optimizer_state`, rank 0 keeps the result.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

STRATEGIES = ("ddp", "fsdp")
_GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True)  # rank 0 gets it, others {}
_LOAD = StateDictOptions(full_state_dict=True)  # every rank holds the full state and keeps its shard


def shard_units(model: nn.Module) -> list[nn.Module]:
    """The submodules FSDP gathers one at a time: transformer blocks and DINO heads."""
    from radscale.trainer.objectives.heads import DINOHead

    units: list[nn.Module] = []
    for module in model.modules():
        blocks = getattr(module, "blocks", None)  # timm ViTs
        if isinstance(blocks, nn.Sequential | nn.ModuleList):
            units.extend(blocks)
        resblocks = getattr(module, "resblocks", None)  # open_clip text transformers
        if isinstance(resblocks, nn.ModuleList):
            units.extend(resblocks)
        if isinstance(module, DINOHead):
            units.append(module)
    return units


def _fully_shard(model: nn.Module, mesh: Any) -> None:
    from torch.distributed.fsdp import fully_shard

    for unit in shard_units(model):
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)


def wrap(model: nn.Module, strategy: str, device: torch.device, world_size: int,
         companions: Iterable[nn.Module] = ()) -> nn.Module:
    """The model ready to train under ``strategy``; ``companions`` (the DINO teacher) are sharded
    like it under FSDP and only moved to the device otherwise. Build the optimizer afterwards:
    FSDP replaces the parameters."""
    import ray.train.torch

    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; use one of {STRATEGIES}")
    if strategy == "ddp" or world_size == 1:
        for other in companions:
            other.to(device)
        return ray.train.torch.prepare_model(model)
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(device.type, (world_size,))
    model.to(device)
    _fully_shard(model, mesh)
    for other in companions:
        other.to(device)
        _fully_shard(other, mesh)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The module under a DDP wrapper (FSDP2 shards in place: nothing to unwrap)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def full_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Full, unsharded weights on CPU: the whole dict on rank 0, {} elsewhere when sharded.
    Collective under FSDP: call it on every rank."""
    if not torch.distributed.is_initialized():
        return {k: v.detach().cpu().clone() for k, v in unwrap(module).state_dict().items()}
    return get_model_state_dict(unwrap(module), options=_GATHER)


def load_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load full weights; under FSDP each rank keeps its own shard."""
    if not torch.distributed.is_initialized():
        unwrap(module).load_state_dict(state)
        return
    set_model_state_dict(unwrap(module), state, options=_LOAD)


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state keyed by parameter names, full on rank 0. Collective under FSDP."""
    return get_optimizer_state_dict(unwrap(model), optimizer, options=_GATHER)


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    set_optimizer_state_dict(unwrap(model), optimizer, optim_state_dict=state, options=_LOAD)


def local_parameters(module: nn.Module) -> list[torch.Tensor]:
    """The module's parameters as local tensors (each rank's shard under FSDP), for elementwise
    in-place updates. FSDP2 leaves a root module's parameters gathered after a forward without a
    backward (the teacher's), so they are resharded first."""
    from torch.distributed.fsdp import FSDPModule

    for sub in module.modules():
        if isinstance(sub, FSDPModule):
            sub.reshard()
    return [p.to_local() if hasattr(p, "to_local") else p for p in module.parameters()]
