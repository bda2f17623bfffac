"""AdamW with DINOv2/BEiT-style schedules: cosine LR after linear warm-up, cosine weight decay,
layer-wise LR decay on the image tower (timm's parameter groups), no decay on biases and norms."""

from __future__ import annotations

from typing import Any

import torch
from timm.optim import param_groups_layer_decay, param_groups_weight_decay
from torch import nn

from radscale.trainer.objectives.teacher import cosine


def param_groups(model: nn.Module, image_tower: nn.Module, weight_decay: float, layer_decay: float) -> list[dict]:
    """The image tower's groups carry timm's ``lr_scale`` per depth; every other parameter
    (heads, projections, text tower, mask token) trains at the full rate."""
    tower_ids = {id(p) for p in image_tower.parameters()}
    groups = param_groups_layer_decay(image_tower, weight_decay=weight_decay, layer_decay=layer_decay,
                                      no_weight_decay_list=getattr(image_tower, "no_weight_decay", lambda: ())())
    rest = nn.ParameterList([p for p in model.parameters() if id(p) not in tower_ids and p.requires_grad])
    for g in param_groups_weight_decay(rest, weight_decay=weight_decay):
        groups.append({**g, "lr_scale": 1.0})
    return [g for g in groups if g["params"]]


def build(model: nn.Module, image_tower: nn.Module, opt: Any) -> torch.optim.AdamW:
    groups = param_groups(model, image_tower, opt.weight_decay, opt.layer_decay)
    for g in groups:
        g["wd_on"] = g["weight_decay"] > 0
    return torch.optim.AdamW(groups, lr=opt.lr, betas=(0.9, 0.999))


def lr_at(step: int, opt: Any, total: int) -> float:
    if step < opt.warmup_steps:
        return opt.lr * (step + 1) / opt.warmup_steps
    return cosine(opt.lr, opt.min_lr, step - opt.warmup_steps, max(1, total - opt.warmup_steps))


def wd_at(step: int, opt: Any, total: int) -> float:
    end = opt.weight_decay if opt.weight_decay_end is None else opt.weight_decay_end
    return cosine(opt.weight_decay, end, step, total)


def schedule(optimizer: torch.optim.Optimizer, step: int, opt: Any, total: int) -> tuple[float, float]:
    """Set this step's LR and weight decay on every group; returns (lr, wd) at full scale."""
    lr, wd = lr_at(step, opt, total), wd_at(step, opt, total)
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
        g["weight_decay"] = wd if g.get("wd_on") else 0.0
    return lr, wd
