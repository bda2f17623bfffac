"""The recipes behind radscale's pretraining defaults: one table, each value beside its source.

A schedule field of the spec that is unset (``None``) means "the recipe's value" for the
encoder's paradigm: DINOv2 (``dinov2/configs/ssl_default_config.yaml``,
``dinov2/train/ssl_meta_arch.py``, ``dinov2/train/train.py``) for ``dino``, open_clip
(``open_clip_train/params.py``, ``open_clip_train/main.py``, ``open_clip_train/train.py``) for
``clip`` and ``unicl``. :func:`resolve` is the one place where spec fields and the table meet; the
trainer reads only its :class:`Recipe`. ``docs/pretraining.md`` renders :data:`TABLE`.

Epoch counts of the recipes become fractions of the step budget: DINOv2 trains 100 epochs, so
"30 epochs of teacher-temperature warm-up" is 0.3 of ``computeBudget.steps``; under constant
compute a cell's epochs vary with its size, its schedule's shape does not.

Pure data: no torch, no pydantic models of its own (imported by :mod:`radscale.rules`, which
:mod:`radscale.spec` imports).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Any

DINO = "dinov2"
OPEN_CLIP = "open_clip"
SSL_DEFAULT = "dinov2/configs/ssl_default_config.yaml"
OPEN_CLIP_PARAMS = "open_clip_train/params.py"


@dataclasses.dataclass(frozen=True)
class Default:
    """One recipe value per paradigm family (``dino``; ``contrastive`` = clip and unicl)."""

    field: str  # the spec field (camelCase path under the encoder) that overrides it
    dino: Any
    contrastive: Any
    dino_source: str
    contrastive_source: str
    shown: str = ""  # how the clip/unicl value reads in the docs, when not the bare value

    def value(self, paradigm: str) -> Any:
        return self.dino if paradigm == "dino" else self.contrastive


TABLE: dict[str, Default] = {d.field: d for d in (
    Default("optimizer.warmupFraction", 0.1, 0.1,
            f"{SSL_DEFAULT}: optim.warmup_epochs 10 of optim.epochs 100",
            f"{OPEN_CLIP_PARAMS}: --warmup 10000 (steps); radscale caps it at 0.1 of the budget",
            "min(10,000 steps, 0.1)"),
    Default("optimizer.weightDecay", 0.04, 0.2,
            f"{SSL_DEFAULT}: optim.weight_decay", f"{OPEN_CLIP_PARAMS}: --wd 0.2"),
    Default("optimizer.weightDecayEnd", 0.4, None,
            f"{SSL_DEFAULT}: optim.weight_decay_end (cosine, dinov2/train/train.py)",
            "open_clip: constant (no weight-decay schedule)",
            "= weightDecay (constant)"),
    Default("optimizer.layerDecay", 0.9, 1.0,
            f"{SSL_DEFAULT}: optim.layerwise_decay (dinov2/train/param_groups.py)",
            "open_clip: none"),
    Default("optimizer.patchEmbedLrMult", 0.2, 1.0,
            f"{SSL_DEFAULT}: optim.patch_embed_lr_mult", "open_clip: none"),
    Default("optimizer.freezeLastLayerFraction", 0.01, None,
            f"{SSL_DEFAULT}: optim.freeze_last_layer_epochs 1 of 100 (last-layer LR 0)",
            "no DINO head"),
    Default("teacher.temperatureStart", 0.04, None,
            f"{SSL_DEFAULT}: teacher.warmup_teacher_temp", "no teacher"),
    Default("teacher.temperature", 0.07, None, f"{SSL_DEFAULT}: teacher.teacher_temp", "no teacher"),
    Default("teacher.temperatureWarmupFraction", 0.3, None,
            f"{SSL_DEFAULT}: teacher.warmup_teacher_temp_epochs 30 of 100", "no teacher"),
    Default("teacher.momentum", 0.992, None, f"{SSL_DEFAULT}: teacher.momentum_teacher (cosine)", "no teacher"),
    Default("teacher.momentumEnd", 1.0, None, f"{SSL_DEFAULT}: teacher.final_momentum_teacher", "no teacher"),
)}

# Fixed parts of the recipes (not spec fields): AdamW moments, and the open_clip ViT betas.
ADAMW = {
    "dino": {"betas": (0.9, 0.999), "eps": 1e-8,
             "source": f"{SSL_DEFAULT}: optim.adamw_beta1/adamw_beta2 (torch's default eps)"},
    "contrastive": {"betas": (0.9, 0.98), "eps": 1e-6,
                    "source": f"{OPEN_CLIP_PARAMS}: get_default_params for ViT towers"},
}
OPEN_CLIP_WARMUP_STEPS = 10_000
LOGIT_SCALE_MAX = 100.0  # open_clip_train/train.py clamps the parameter to ln(100) after each step

# Stochastic depth (timm's drop_path_rate) by architecture, first match wins. DINOv2 applies
# one rate to every block of the student (student.drop_path_uniform: true); the teacher has none.
DROP_PATH: tuple[tuple[str, str, float, str], ...] = (
    ("dino", "vit_giant*", 0.4, "dinov2/configs/train/vitg14.yaml: student.drop_path_rate"),
    ("dino", "vit_large_patch14*", 0.4, "dinov2/configs/train/vitl14.yaml: student.drop_path_rate"),
    ("dino", "*", 0.3, f"{SSL_DEFAULT}: student.drop_path_rate (ViT-L/16; applied to other sizes)"),
    ("contrastive", "*", 0.0, "open_clip model configs: no drop path on the image tower"),
)

# Augmentation per paradigm. Radiographs are grey and lateralised; what of each recipe is kept
# and why is written out in docs/pretraining.md ("Augmentation").
AUGMENT: dict[str, dict[str, Any]] = {
    "dino": {
        "global_scale": (0.32, 1.0), "local_scale": (0.05, 0.32), "local_crops": 8,  # crops.*
        "jitter": 0.4, "jitter_p": 0.8,  # ColorJitter brightness/contrast 0.4 at p 0.8; no saturation/hue
        "blur_p": (1.0, 0.1, 0.5),  # Gaussian blur p for global 1, global 2, locals; sigma 0.1-2
        "solarize_p": 0.2,  # second global crop only, threshold at mid-grey
        "flip": False, "grayscale_p": 0.0,
        "source": "dinov2/data/augmentations.py (DataAugmentationDINO), minus hue/saturation, "
                  "random grayscale and horizontal flips",
    },
    "contrastive": {
        "scale": (0.9, 1.0), "jitter": 0.0,
        "source": "open_clip/transform.py AugmentationCfg: scale (0.9, 1.0), no colour jitter",
    },
}


def family(paradigm: str) -> str:
    return "dino" if paradigm == "dino" else "contrastive"


def drop_path_rate(paradigm: str, model: str) -> tuple[float, str]:
    """(rate, source) of the first matching row of :data:`DROP_PATH`."""
    for fam, pattern, rate, source in DROP_PATH:
        if fam == family(paradigm) and fnmatch.fnmatch(model, pattern):
            return rate, source
    return 0.0, "no matching row"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Every schedule value one pretraining cell runs with, resolved. Steps are optimizer steps."""

    paradigm: str
    steps: int
    lr: float
    min_lr: float
    warmup_steps: int
    weight_decay: float
    weight_decay_end: float
    layer_decay: float
    patch_embed_lr_mult: float
    freeze_last_layer_steps: int
    clip_grad: float | None
    betas: tuple[float, float]
    eps: float
    drop_path_rate: float
    drop_path_uniform: bool
    teacher_temperature_start: float | None = None
    teacher_temperature: float | None = None
    teacher_temperature_warmup_steps: int = 0
    teacher_momentum: float | None = None
    teacher_momentum_end: float | None = None
    sources: dict[str, str] = dataclasses.field(default_factory=dict, compare=False)

    def params(self) -> dict[str, Any]:
        """Flat values for MLflow params."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "sources" and v is not None}


def _pick(spec: Any, path: str, paradigm: str, sources: dict[str, str]) -> Any:
    obj = spec
    for part in path.split("."):
        obj = None if obj is None else getattr(obj, _snake(part))
    d = TABLE[path]
    if obj is not None:
        sources[path] = "spec"
        return obj
    sources[path] = d.dino_source if paradigm == "dino" else d.contrastive_source
    return d.value(paradigm)


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


def _fraction_steps(fraction: float, steps: int) -> int:
    return round(fraction * steps)


def resolve(encoder: Any, steps: int) -> Recipe:
    """The recipe of one encoder (an ``EncoderSpec``) at a step budget: spec fields where set,
    the paradigm's recipe values where not."""
    paradigm = str(getattr(encoder.paradigm, "value", encoder.paradigm))
    opt = encoder.optimizer
    src: dict[str, str] = {}
    if opt.warmup_steps is not None:
        warmup, src["optimizer.warmupSteps"] = opt.warmup_steps, "spec"
    else:
        fraction = _pick(encoder, "optimizer.warmupFraction", paradigm, src)
        warmup = _fraction_steps(fraction, steps)
        if paradigm != "dino" and opt.warmup_fraction is None:
            warmup = min(OPEN_CLIP_WARMUP_STEPS, warmup)
    wd = _pick(encoder, "optimizer.weightDecay", paradigm, src)
    wd_end = _pick(encoder, "optimizer.weightDecayEnd", paradigm, src)
    if wd_end is None:  # clip/unicl: constant
        wd_end = wd
    elif opt.weight_decay_end is None:  # the recipe's end, never below a start the spec raised
        wd_end = max(wd_end, wd)
    freeze = _pick(encoder, "optimizer.freezeLastLayerFraction", paradigm, src)
    adamw = ADAMW[family(paradigm)]
    if getattr(encoder, "drop_path_rate", None) is not None:
        dpr, src["dropPathRate"] = encoder.drop_path_rate, "spec"
    else:
        dpr, src["dropPathRate"] = drop_path_rate(paradigm, encoder.model)
    teacher: dict[str, Any] = {}
    if paradigm == "dino":
        teacher = {
            "teacher_temperature_start": _pick(encoder, "teacher.temperatureStart", paradigm, src),
            "teacher_temperature": _pick(encoder, "teacher.temperature", paradigm, src),
            "teacher_temperature_warmup_steps": _fraction_steps(
                _pick(encoder, "teacher.temperatureWarmupFraction", paradigm, src), steps),
            "teacher_momentum": _pick(encoder, "teacher.momentum", paradigm, src),
            "teacher_momentum_end": _pick(encoder, "teacher.momentumEnd", paradigm, src),
        }
    return Recipe(
        paradigm=paradigm, steps=steps, lr=opt.lr, min_lr=opt.min_lr, warmup_steps=min(warmup, max(0, steps - 1)),
        weight_decay=wd, weight_decay_end=wd_end,
        layer_decay=_pick(encoder, "optimizer.layerDecay", paradigm, src),
        patch_embed_lr_mult=_pick(encoder, "optimizer.patchEmbedLrMult", paradigm, src),
        freeze_last_layer_steps=0 if freeze is None else _fraction_steps(freeze, steps),
        clip_grad=opt.clip_grad, betas=adamw["betas"], eps=adamw["eps"],
        drop_path_rate=dpr, drop_path_uniform=paradigm == "dino", sources=src, **teacher,
    )


def markdown_table() -> str:
    """The table of :data:`TABLE` as docs/pretraining.md shows it (a test keeps them equal)."""
    rows = ["| spec field (unset = recipe) | dino | source | clip / unicl | source |",
            "|---|---|---|---|---|"]
    for d in TABLE.values():
        c = d.shown or ("—" if d.contrastive is None else d.contrastive)
        rows.append(f"| `{d.field}` | {d.dino} | {d.dino_source} | {c} | {d.contrastive_source} |")
    rows.append("| `dropPathRate` | " + "; ".join(f"{p}: {r}" for f, p, r, _ in DROP_PATH if f == "dino")
                + " (uniform over blocks) | dinov2/configs/train/vitg14.yaml, vitl14.yaml; "
                f"{SSL_DEFAULT} (student.drop_path_rate, drop_path_uniform) | 0.0 | "
                "open_clip model configs |")
    rows.append(f"| AdamW betas, eps (fixed) | {ADAMW['dino']['betas']}, {ADAMW['dino']['eps']} | "
                f"{ADAMW['dino']['source']} | {ADAMW['contrastive']['betas']}, {ADAMW['contrastive']['eps']} | "
                f"{ADAMW['contrastive']['source']} |")
    return "\n".join(rows)
