"""AdamW with the DINOv2 / open_clip schedules, driven by a resolved :class:`radscale.recipes.Recipe`.

- LR: linear warm-up over ``warmup_steps``, then cosine to ``min_lr`` at the last step.
- Weight decay: cosine from ``weight_decay`` (step 0) to ``weight_decay_end`` (DINOv2; constant
  for clip/unicl), none on biases, norms and 1-d parameters (timm's rule; open_clip's excludes the
  same, logit scale included).
- Layer-wise LR decay on the image tower, DINOv2's ``get_vit_lr_decay_rate`` for ViTs: the
  embeddings (patch, position, class and register tokens) are layer 0, block i is layer i + 1, the
  rest (final norm) layer depth + 1, and a parameter at layer l gets ``decay ** (depth + 1 - l)``,
  so the last block already trains at ``decay`` (timm's ``param_groups_layer_decay`` puts the last
  block at 1.0: one factor less everywhere). Towers without ``blocks`` (DaViT) use timm's layer ids.
  The DINO student's mask token sits with the embeddings, as in DINOv2's backbone. Heads,
  projections and the text tower train at the full rate.
- The patch embedding's LR is multiplied by ``patch_embed_lr_mult`` (DINOv2: 0.2).
- The DINO head's last layer has LR 0 for the first ``freeze_last_layer_steps`` steps (DINOv2's
  ``last_layer_lr_schedule``): AdamW then leaves it bit for bit unchanged, decay included.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.optim import param_groups_layer_decay
from torch import nn

from radscale.trainer.objectives.teacher import cosine

EMBEDDING_LEVEL = ("mask_token",)  # parameters outside the tower that DINOv2 keeps in the backbone
LAST_LAYER = "last_layer"


def _decays(p: nn.Parameter, name: str) -> bool:
    return p.ndim > 1 and not name.endswith(".bias") and "logit_scale" not in name


EMBEDDINGS = ("pos_embed", "patch_embed", "cls_token", "reg_token", "register_tokens", "mask_token")


def vit_layer_id(name: str, depth: int) -> int:
    """DINOv2's layer id of a ViT parameter (``get_vit_lr_decay_rate``)."""
    if name.split(".")[0] in EMBEDDINGS:
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def _tower_scales(image_tower: nn.Module, layer_decay: float) -> dict[int, tuple[float, bool]]:
    """id(param) -> (lr_scale, weight decay on) for the image tower."""
    no_wd = set(getattr(image_tower, "no_weight_decay", lambda: ())())
    blocks = getattr(image_tower, "blocks", None)
    if isinstance(blocks, nn.Sequential | nn.ModuleList):
        depth = len(blocks)
        return {id(p): (layer_decay ** (depth + 1 - vit_layer_id(n, depth)),
                        not (p.ndim <= 1 or n.endswith(".bias") or n in no_wd))
                for n, p in image_tower.named_parameters() if p.requires_grad}
    out = {}
    for g in param_groups_layer_decay(image_tower, weight_decay=1.0, layer_decay=layer_decay,
                                      no_weight_decay_list=tuple(no_wd)):
        for p in g["params"]:
            out[id(p)] = (g["lr_scale"], g["weight_decay"] > 0)
    return out


def param_groups(model: nn.Module, image_tower: nn.Module, layer_decay: float,
                 patch_embed_lr_mult: float = 1.0) -> list[dict]:
    """One group per (lr_scale, decayed, last layer): ``lr_scale`` and ``wd_on`` are read by
    :func:`schedule`, ``last_layer`` by the freeze. Weight decay skips 1-d parameters, biases and
    the tower's ``no_weight_decay()`` (timm's rule)."""
    tower = _tower_scales(image_tower, layer_decay)
    embed_scale = min((s for s, _ in tower.values()), default=1.0)
    patch = getattr(image_tower, "patch_embed", None)
    patch_ids = {id(p) for p in patch.parameters()} if isinstance(patch, nn.Module) else set()
    buckets: dict[tuple[float, bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) in tower:
            scale, wd_on = tower[id(p)]
            if id(p) in patch_ids:
                scale *= patch_embed_lr_mult
        else:
            scale = embed_scale if name.split(".")[-1] in EMBEDDING_LEVEL else 1.0
            wd_on = _decays(p, name)
        buckets.setdefault((scale, wd_on, LAST_LAYER in name), []).append(p)
    return [{"params": ps, "lr_scale": s, "wd_on": wd, "last_layer": last}
            for (s, wd, last), ps in buckets.items()]


def build(model: nn.Module, image_tower: nn.Module, recipe: Any) -> torch.optim.AdamW:
    groups = param_groups(model, image_tower, recipe.layer_decay, recipe.patch_embed_lr_mult)
    for g in groups:
        g["weight_decay"] = recipe.weight_decay if g["wd_on"] else 0.0
    return torch.optim.AdamW(groups, lr=recipe.lr, betas=tuple(recipe.betas), eps=recipe.eps)


def lr_at(step: int, recipe: Any) -> float:
    """Linear warm-up to ``lr`` (reached at step ``warmup_steps - 1``), then DINOv2's cosine:
    ``min_lr + (lr - min_lr) / 2 * (1 + cos(pi * i / n))`` at ``i = step - warmup_steps`` of
    ``n = steps - warmup_steps`` (``CosineScheduler``)."""
    w = recipe.warmup_steps
    if step < w:
        return recipe.lr * (step + 1) / w
    return cosine(recipe.lr, recipe.min_lr, step - w, max(1, recipe.steps - w))


def wd_at(step: int, recipe: Any) -> float:
    """DINOv2's cosine from ``weight_decay`` at step 0 towards ``weight_decay_end`` over ``steps``."""
    return cosine(recipe.weight_decay, recipe.weight_decay_end, step, recipe.steps)


def last_layer_frozen(step: int, recipe: Any) -> bool:
    return step < recipe.freeze_last_layer_steps


def schedule(optimizer: torch.optim.Optimizer, step: int, recipe: Any) -> tuple[float, float]:
    """Set this step's LR and weight decay on every group; returns (lr, wd) at full scale."""
    lr, wd = lr_at(step, recipe), wd_at(step, recipe)
    frozen = last_layer_frozen(step, recipe)
    for g in optimizer.param_groups:
        g["lr"] = 0.0 if frozen and g.get("last_layer") else lr * g.get("lr_scale", 1.0)
        g["weight_decay"] = wd if g.get("wd_on") else 0.0
    return lr, wd
