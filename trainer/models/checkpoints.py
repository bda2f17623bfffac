"""Checkpoints as published: where they are, which layout they use, and how their inputs are normalised.

- :func:`read` resolves an init URI to its tensors and the files beside them: a path or fsspec URL
  of a safetensors / torch file, a folder (Hugging Face ``save_pretrained`` layout: ``model.safetensors``
  with ``config.json`` / ``preprocessor_config.json``), or ``hf-hub:ORG/NAME``, looked up in the local
  Hugging Face cache first and downloaded only when the hub is reachable and not switched off.
- :class:`Preprocess` is what travels with the weights, as timm's ``pretrained_cfg`` does: mean/std
  per channel and the input size the weights were trained at. radscale writes it into the
  ``__metadata__`` of every ``encoder.safetensors``; for other files it comes from the config beside
  them, from :data:`KNOWN` (published values), from the layout (open_clip) or from timm's config of
  the architecture, in that order.
- :func:`hf_dinov2_to_timm` maps Hugging Face transformers' ``Dinov2Model`` keys (RAD-DINO's release
  format, both the 4.x ``attention.attention.query`` and 5.x ``attention.q_proj`` spellings) onto
  timm's ``vit_*_dinov2``.

I/O: :func:`read` only (the weights URI and the files beside it). Everything else is pure.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import fsspec
import torch
from safetensors import safe_open
from safetensors.torch import load as load_safetensors

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
WRAPPER_KEYS = ("state_dict", "model", "teacher", "student", "module")
META_PREFIX = "radscale."

# Radiographs are scaled per image to [0, 1] at prepare time; a randomly initialised encoder sees this.
RADSCALE_MEAN, RADSCALE_STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's default for its ViTs
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class WeightsError(ValueError):
    """Weights that cannot be read or do not fit the architecture."""


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """How images are standardised for a set of weights: ``(x - mean) / std`` per channel, x in [0, 1]."""

    mean: tuple[float, float, float] = RADSCALE_MEAN
    std: tuple[float, float, float] = RADSCALE_STD
    input_size: int | None = None  # square side the weights were trained at; None: not known
    source: str = "radscale default (random init)"

    @classmethod
    def of(cls, mean: Any, std: Any, input_size: Any = None, source: str = "") -> Preprocess:
        m, s = [float(v) for v in mean], [float(v) for v in std]
        m, s = (m * 3 if len(m) == 1 else m), (s * 3 if len(s) == 1 else s)
        if len(m) != 3 or len(s) != 3 or min(s) <= 0:
            raise ValueError(f"normalisation from {source}: need 1 or 3 means and positive stds, got {mean}/{std}")
        return cls(tuple(m), tuple(s), None if input_size is None else int(input_size), source)  # type: ignore[arg-type]

    def to_metadata(self) -> dict[str, str]:
        out = {f"{META_PREFIX}mean": json.dumps(list(self.mean)), f"{META_PREFIX}std": json.dumps(list(self.std))}
        if self.input_size is not None:
            out[f"{META_PREFIX}input_size"] = str(self.input_size)
        return out

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], source: str) -> Preprocess | None:
        if f"{META_PREFIX}mean" not in meta or f"{META_PREFIX}std" not in meta:
            return None
        return cls.of(json.loads(meta[f"{META_PREFIX}mean"]), json.loads(meta[f"{META_PREFIX}std"]),
                      meta.get(f"{META_PREFIX}input_size"), source)


# Published values for checkpoints that do not carry them in the weights file.
KNOWN: dict[str, Preprocess] = {
    # model card and preprocessor_config.json of microsoft/rad-dino (ViT-B/14, 37 x 37 patches)
    "hf-hub:microsoft/rad-dino": Preprocess((0.5307,) * 3, (0.2583,) * 3, 518,
                                            "hf-hub:microsoft/rad-dino (model card)"),
}


@dataclasses.dataclass
class Checkpoint:
    """A checkpoint's tensors (wrappers removed), its safetensors metadata and the JSON configs beside it."""

    uri: str
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str] = dataclasses.field(default_factory=dict)
    configs: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # file name -> JSON

    @property
    def layout(self) -> str:
        """'hf-dinov2', 'open_clip' or 'timm' (whatever timm's own converter may still recognise)."""
        if hf_dinov2_prefix(self.tensors) is not None:
            return "hf-dinov2"
        if any(k.endswith("visual.class_embedding") for k in self.tensors):
            return "open_clip"
        return "timm"

    def preprocess(self, architecture_cfg: Mapping[str, Any] | None = None) -> Preprocess:
        """The normalisation these weights expect (see the module docstring for the order)."""
        found = Preprocess.from_metadata(self.metadata, f"{self.uri} (metadata)")
        if found is not None:
            return found
        pre = self.configs.get("preprocessor_config.json")
        if pre and "image_mean" in pre and "image_std" in pre:
            size = pre.get("crop_size") or pre.get("size") or {}
            side = size.get("height") or size.get("shortest_edge") if isinstance(size, dict) else size
            return Preprocess.of(pre["image_mean"], pre["image_std"], side, f"{self.uri} (preprocessor_config.json)")
        cfg = (self.configs.get("config.json") or {}).get("pretrained_cfg")  # timm's hub layout
        if cfg and "mean" in cfg and "std" in cfg:
            side = cfg.get("input_size", [None, None])[-1]
            return Preprocess.of(cfg["mean"], cfg["std"], side, f"{self.uri} (config.json pretrained_cfg)")
        if self.uri in KNOWN:
            return KNOWN[self.uri]
        if self.layout == "open_clip":
            return Preprocess(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, None, f"{self.uri} (open_clip layout)")
        if architecture_cfg and "mean" in architecture_cfg:
            side = (architecture_cfg.get("input_size") or [None])[-1]
            return Preprocess.of(architecture_cfg["mean"], architecture_cfg["std"], side,
                                 f"timm's config of the architecture (nothing in {self.uri} says otherwise)")
        return Preprocess(source=f"radscale default ({self.uri} carries no normalisation)")

    def pop_prefixed(self, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
        """Remove and return the tensors under ``prefixes`` (training heads beside a backbone)."""
        out = {k: v for k, v in self.tensors.items() if k.startswith(prefixes)}
        for k in out:
            del self.tensors[k]
        return out


# ---- reading ----------------------------------------------------------------------------------


def _hf_cache_dir() -> str:
    """Read at call time (HF_HUB_CACHE / HF_HOME), so a test or a user can point it anywhere."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return os.path.join(home, "hub")


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hf_hub_folder(uri: str, field: str, files: tuple[str, ...] = WEIGHT_FILES,
                  what: str = "model.safetensors") -> Path:
    """The local snapshot folder of ``hf-hub:ORG/NAME[@REV]`` holding one of ``files``: the Hugging Face
    cache first; else a download of the whole snapshot (never when offline)."""
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    repo, _, revision = uri.removeprefix("hf-hub:").partition("@")
    cache = _hf_cache_dir()
    for name in files:
        hit = try_to_load_from_cache(repo, name, cache_dir=cache, revision=revision or None)
        if isinstance(hit, str):
            return Path(hit).parent
    todo = (f"download it once where the hub is reachable (`hf download {repo}` with HF_HUB_CACHE={cache}), "
            f"or copy its files to storage and set {field} to that folder or file")
    if _offline():
        raise WeightsError(f"{field}: {uri} is not in the local Hugging Face cache ({cache}) and downloads are "
                           f"off (HF_HUB_OFFLINE); {todo}")
    try:
        folder = Path(snapshot_download(repo, revision=revision or None, cache_dir=cache,
                                        allow_patterns=[*files, "*.json", "*.txt", "*.model"]))
    except Exception as exc:
        raise WeightsError(f"{field}: cannot fetch {uri} ({type(exc).__name__}: {exc}); {todo}") from exc
    if not any((folder / n).exists() for n in files):
        raise WeightsError(f"{field}: {uri} has no {what}; point {field} at the weights file itself")
    return folder


def _read_json(fs: Any, path: str) -> dict[str, Any] | None:
    try:
        if fs.exists(path):
            return json.loads(fs.cat_file(path))
    except Exception as exc:  # a broken side file must not hide the weights
        log.warning("ignoring %s: %s", path, exc)
    return None


def read(uri: str, storage_options: dict[str, Any] | None = None, field: str = "init") -> Checkpoint:
    """The checkpoint at ``uri`` (file, folder or ``hf-hub:``) or a :class:`WeightsError` naming ``field``."""
    location = str(hf_hub_folder(uri, field)) if uri.startswith("hf-hub:") else uri
    try:
        fs, path = fsspec.core.url_to_fs(location, **(storage_options or {}))
        if fs.isdir(path):
            name = next((n for n in WEIGHT_FILES if fs.exists(posixpath.join(path, n))), None)
            if name is None:
                raise WeightsError(f"{field}: {uri} is a folder without any of {', '.join(WEIGHT_FILES)}")
            folder, path = path, posixpath.join(path, name)
        else:
            folder = posixpath.dirname(path)
        blob = fs.cat_file(path)
    except WeightsError:
        raise
    except FileNotFoundError as exc:
        raise WeightsError(f"{field}: weights not found at {uri}; check the URI") from exc
    except Exception as exc:
        raise WeightsError(f"{field}: cannot read weights from {uri}: {type(exc).__name__}: {exc}") from exc
    tensors, metadata = _parse(blob, uri, field)
    configs = {n: c for n in ("config.json", "preprocessor_config.json", "open_clip_config.json")
               if (c := _read_json(fs, posixpath.join(folder, n))) is not None}
    return Checkpoint(uri, tensors, metadata, configs)


def _parse(blob: bytes, uri: str, field: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        tensors = dict(load_safetensors(blob))
    except Exception:
        pass
    else:
        n = int.from_bytes(blob[:8], "little")
        return tensors, json.loads(blob[8:8 + n]).get("__metadata__") or {}
    try:
        obj = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"{field}: {uri} is neither a safetensors file nor a torch state dict ({exc})") from exc
    for _ in range(3):  # unwrap {"state_dict": {...}}, {"teacher": {...}}, ...
        if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{field}: {uri} holds no state dict of tensors")
    return obj, {}


def metadata_of(path: str | Path) -> dict[str, str]:
    """The ``__metadata__`` of a local safetensors file (no tensors read)."""
    with safe_open(str(path), "pt") as fh:
        return dict(fh.metadata() or {})


# ---- Hugging Face Dinov2Model -> timm vit_*_dinov2 -------------------------------------------


def hf_dinov2_prefix(sd: Mapping[str, torch.Tensor]) -> str | None:
    """'' for a bare Dinov2Model, 'dinov2.' inside a task model; None when it is not that layout."""
    marker = "embeddings.patch_embeddings.projection.weight"
    for k in sd:
        if k.endswith(marker):
            return k[: -len(marker)]
    return None


_HF_ATTN = {  # 5.x spelling, 4.x spelling
    "q": ("attention.q_proj", "attention.attention.query"),
    "k": ("attention.k_proj", "attention.attention.key"),
    "v": ("attention.v_proj", "attention.attention.value"),
    "o": ("attention.o_proj", "attention.output.dense"),
}
# (theirs, ours) key prefixes inside one layer; weights_in/out: the SwiGLU MLP (ViT-g)
_HF_RENAME = (("layer_scale1.lambda1", "ls1.gamma"), ("layer_scale2.lambda1", "ls2.gamma"),
              ("mlp.weights_in.", "mlp.fc1."), ("mlp.weights_out.", "mlp.fc2."))


def hf_dinov2_to_timm(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(timm backbone state dict, extras) of a transformers ``Dinov2Model`` state dict; extras holds
    ``mask_token`` (D,) for the iBOT student. Position embeddings keep the checkpoint's grid (the
    loader resamples them to the model's)."""
    prefix = hf_dinov2_prefix(sd)
    if prefix is None:
        raise WeightsError("not a transformers Dinov2Model state dict")
    sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    out = {
        "cls_token": sd["embeddings.cls_token"],
        "pos_embed": sd["embeddings.position_embeddings"],
        "patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": sd["layernorm.weight"],
        "norm.bias": sd["layernorm.bias"],
    }
    if "embeddings.register_tokens" in sd:
        out["reg_token"] = sd["embeddings.register_tokens"]
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layer.")})
    for i in layers:
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."

        def get(names: tuple[str, ...], suffix: str, src: str = src) -> torch.Tensor:
            for n in names:
                if src + n + suffix in sd:
                    return sd[src + n + suffix]
            raise WeightsError(f"Dinov2Model {src} has no {names[0]}{suffix}")

        for suffix in (".weight", ".bias"):
            out[dst + "attn.qkv" + suffix] = torch.cat([get(_HF_ATTN[p], suffix) for p in "qkv"])
            out[dst + "attn.proj" + suffix] = get(_HF_ATTN["o"], suffix)
        attn_keys = {src + n + suffix for names in _HF_ATTN.values() for n in names for suffix in (".weight", ".bias")}
        for key in (k for k in sd if k.startswith(src) and k not in attn_keys):
            rest = key[len(src):]
            for theirs, ours in _HF_RENAME:
                if rest.startswith(theirs):
                    rest = ours + rest[len(theirs):]
                    break
            out[dst + rest] = sd[key]  # norm1/2, mlp.fc1/2 as they are; anything else is named as unexpected
    extras = {"mask_token": sd["embeddings.mask_token"].reshape(-1)} if "embeddings.mask_token" in sd else {}
    return out, extras
