"""The trainable models of each paradigm and their loss on one batch.

``DinoStudent`` (RAD-DINO): image tower + DINO head (shared by the CLS and iBOT losses, as in the
DINOv2 default) + mask token; the teacher is its EMA copy. ``ContrastiveModel`` (MI2: clip or
unicl): image tower + projection, text tower, learnable temperature. Each forward takes the views
of one batch so that DDP (which hooks ``forward``) synchronises every gradient.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from radscale import recipes
from radscale.trainer import augment, parallel
from radscale.trainer.models.encoders import Encoder, encoder_from_spec, set_drop_path
from radscale.trainer.models.text import text_from_spec
from radscale.trainer.objectives import clip, dino, ibot, koleo, teacher, unicl
from radscale.trainer.objectives.heads import DINOHead


def _patch(encoder: Encoder) -> int:
    return encoder.patch


class DinoStudent(nn.Module):
    """``head_from_checkpoint``: the DINO head (and mask token) came from the init checkpoint (DINOv2's
    ``dino_head.*``); False: a random head, whose last layer dinov2 freezes for its first epoch."""

    def __init__(self, encoder: Encoder, prototypes: int):
        super().__init__()
        self.encoder = encoder
        self.head = DINOHead(encoder.embed_dim, out_dim=prototypes)
        self.mask_token = nn.Parameter(torch.zeros(encoder.embed_dim))
        self.head_from_checkpoint = load_head(self.head, encoder.extras)
        if "mask_token" in encoder.extras and encoder.extras["mask_token"].numel() == encoder.embed_dim:
            with torch.no_grad():
                self.mask_token.copy_(encoder.extras["mask_token"].reshape(-1))
        encoder.extras = {}  # taken: the teacher's deep copy need not carry them

    def forward(self, crops: list[torch.Tensor], masks: list[torch.Tensor] | None = None):
        feats = self.encoder.forward_multicrop(crops, masks or (), self.mask_token if masks else None)
        cls_logits = [self.head(f.cls) for f in feats]
        patch_logits = None
        if masks:
            patches = torch.cat([f.patches for f in feats[: len(masks)]])[torch.cat(masks)]
            patch_logits = self.head(patches)
        return feats, cls_logits, patch_logits


def load_head(head: DINOHead, extras: dict[str, torch.Tensor]) -> bool:
    """Load DINOv2's ``dino_head.*`` (weight-normed last layer as ``weight_g``/``weight_v`` or as torch's
    parametrization) into ``head``; False when the checkpoint has none."""
    theirs = {k.removeprefix("dino_head."): v for k, v in extras.items() if k.startswith("dino_head.")}
    if not theirs:
        return False
    rename = {"last_layer.weight_g": "last_layer.parametrizations.weight.original0",
              "last_layer.weight_v": "last_layer.parametrizations.weight.original1"}
    sd = {rename.get(k, k): v for k, v in theirs.items()}
    own = head.state_dict()
    bad = sorted(k for k in own if k not in sd or tuple(sd[k].shape) != tuple(own[k].shape))
    if bad or set(sd) - set(own):
        shapes = ", ".join(f"{k} {tuple(sd[k].shape) if k in sd else 'missing'} vs {tuple(own[k].shape)}"
                           for k in bad[:4])
        raise ValueError(f"the init checkpoint's dino_head does not fit encoders[].prototypes="
                         f"{head.last_layer.out_features} ({shapes}); set prototypes to the checkpoint's, or drop "
                         "its dino_head to start a new one")
    head.load_state_dict(sd)
    return True


class DinoObjective:
    """DINO + iBOT + 0.1 KoLeo, with the teacher (EMA) and its schedules (from the recipe)."""

    def __init__(self, student: DinoStudent, recipe: recipes.Recipe, local_crops: int = 8,
                 centering: str = "centering"):
        self.teacher = copy.deepcopy(student)
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        set_drop_path(self.teacher, 0.0)  # DINOv2's teacher backbone has no stochastic depth
        k = student.head.last_layer.out_features
        self.dino_loss, self.ibot_loss = dino.DINOLoss(k), ibot.IBOTPatchLoss(k)
        self.recipe, self.steps, self.centering = recipe, recipe.steps, centering
        self.crops = augment.MultiCrop(student.encoder.image_size, _patch(student.encoder), local_crops=local_crops,
                                       norm=augment.Normalize.of(student.encoder.preprocess))

    def to(self, device: torch.device) -> DinoObjective:
        self.teacher.to(device)
        self.dino_loss.to(device)
        self.ibot_loss.to(device)
        return self

    def modules(self) -> list[nn.Module]:
        """Modules the objective owns that the strategy must place like the model (the teacher)."""
        return [self.teacher]

    def state_dict(self) -> dict[str, Any]:
        """Full state on rank 0; collective under FSDP (every rank calls it)."""
        return {"teacher": parallel.full_state(self.teacher), "dino_center": self.dino_loss.center,
                "ibot_center": self.ibot_loss.center}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        parallel.load_state(self.teacher, state["teacher"])
        self.dino_loss.center.copy_(state["dino_center"])
        self.ibot_loss.center.copy_(state["ibot_center"])

    def loss(self, model: nn.Module, batch: Any, step: int, device: torch.device) -> tuple[torch.Tensor, dict]:
        x = augment.unit(batch.images, device)
        views = self.crops(x)
        b = x.shape[0]
        side = views[0].shape[-1] // _patch(self.teacher.encoder)
        rng = np.random.default_rng([step, int(batch.row_ids[0]) if len(batch.row_ids) else 0])
        masks = [m.to(device) for m in ibot.sample_masks(2 * b, (side, side), rng=rng).split(b)]
        r = self.recipe
        temp = teacher.teacher_temperature(step, r.teacher_temperature_warmup_steps,
                                           r.teacher_temperature_start, r.teacher_temperature)
        with torch.no_grad():
            t_feats, t_cls, _ = self.teacher(views[:2])
            t_probs = self.dino_loss.teacher_targets(torch.cat(t_cls), temp, self.centering).split(b)
            t_patches = torch.cat([f.patches for f in t_feats])[torch.cat(masks)]
            t_patch_probs = self.ibot_loss.teacher_targets(self.teacher.head(t_patches), temp, self.centering)
        feats, s_cls, s_patch = model(views, masks)
        loss_dino = self.dino_loss(s_cls, list(t_probs))
        loss_ibot = self.ibot_loss(s_patch, t_patch_probs, torch.cat(masks))
        loss_koleo = sum(koleo.koleo_loss(f.cls) for f in feats[:2])
        loss = loss_dino + loss_ibot + koleo.WEIGHT * loss_koleo
        return loss, {"loss_dino": loss_dino.item(), "loss_ibot": loss_ibot.item(),
                      "loss_koleo": float(loss_koleo.detach()), "teacher_temp": temp}

    def after_step(self, model: nn.Module, step: int) -> dict:
        m = teacher.teacher_momentum(step, self.steps, self.recipe.teacher_momentum, self.recipe.teacher_momentum_end)
        teacher.ema_update(self.teacher, parallel.unwrap(model), m)
        return {"teacher_momentum": m}

    def image_tower(self, model: nn.Module) -> nn.Module:
        """What ``encoder.safetensors`` holds: the teacher's backbone (DINOv2 and RAD-DINO release it)."""
        return self.teacher.encoder.model


class ContrastiveModel(nn.Module):
    def __init__(self, encoder: Encoder, text_spec: Any, storage_options: dict | None = None):
        super().__init__()
        self.encoder = encoder
        self.text = text_from_spec(text_spec, storage_options)
        embed = self.text.transformer.output_dim
        self.image_proj = nn.Linear(encoder.embed_dim, embed, bias=False)
        self.logit_scale = clip.LogitScale()

    def forward(self, images: torch.Tensor, tokens: torch.Tensor):
        return self.image_proj(self.encoder(images).cls), self.text(tokens), self.logit_scale()


class ContrastiveObjective:
    """CLIP on image-report pairs, or UniCL with label prompts (MI2)."""

    def __init__(self, model: ContrastiveModel, paradigm: str, label_names: tuple[str, ...]):
        self.paradigm = paradigm
        self.view = augment.SingleView(model.encoder.image_size, _patch(model.encoder),
                                       norm=augment.Normalize.of(model.encoder.preprocess))
        self.prompts = [unicl.prompt(n) for n in label_names] if paradigm == "unicl" else []
        self.tokenizer = model.text.tokenizer

    def to(self, device: torch.device) -> ContrastiveObjective:
        return self

    def modules(self) -> list[nn.Module]:
        return []

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def loss(self, model: nn.Module, batch: Any, step: int, device: torch.device) -> tuple[torch.Tensor, dict]:
        images = self.view(augment.unit(batch.images, device))
        tokens = self.tokenizer(list(batch.reports) + self.prompts).to(device)
        img, txt, scale = model(images, tokens)
        b = img.shape[0]
        if self.paradigm == "clip":
            loss = clip.clip_loss(img, txt[:b], scale)
        else:  # classes from the label vectors (unicl.label_classes), not from the report text
            labels = torch.as_tensor(np.nan_to_num(batch.labels, nan=0.0), device=device)
            loss = unicl.multilabel_unicl_loss(img, txt[:b], txt[b:], labels, scale)
        return loss, {"logit_scale": float(scale)}

    def after_step(self, model: nn.Module, step: int) -> dict:
        """open_clip: clamp the logit-scale parameter to [0, ln 100] after the optimizer step."""
        parallel.unwrap(model).logit_scale.clamp_()
        return {}

    def image_tower(self, model: nn.Module) -> nn.Module:
        return parallel.unwrap(model).encoder.model


def build(cell: Any, label_names: tuple[str, ...], storage_options: dict | None = None,
          recipe: recipes.Recipe | None = None):
    """(model to train, objective) for a pretrain cell spec, under its resolved recipe."""
    recipe = recipe or recipes.resolve(cell.encoder, cell.budget.steps)
    # The Triton interpreter (TRITON_INTERPRET=1, how CI checks the kernels) is orders of magnitude
    # slower than SDPA: on CPU, ``auto`` trains with SDPA. ``triton`` still insists.
    backend = "sdpa" if cell.attention == "auto" and not torch.cuda.is_available() else cell.attention
    enc = encoder_from_spec(cell.encoder, attention_backend=backend, weights=cell.weights,
                            storage_options=storage_options, drop_path_rate=recipe.drop_path_rate,
                            drop_path_uniform=recipe.drop_path_uniform)
    if cell.encoder.paradigm == "dino":
        student = DinoStudent(enc, cell.encoder.prototypes)
        return student, DinoObjective(student, recipe)
    model = ContrastiveModel(enc, cell.encoder.text, storage_options)
    return model, ContrastiveObjective(model, cell.encoder.paradigm, label_names)
