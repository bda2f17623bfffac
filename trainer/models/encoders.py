"""Image encoders: timm ViTs and DaViTs built offline, running radscale's attention, with multi-crop packing.

- :func:`build_encoder` creates a timm model by name (``pretrained=False``: architecture only),
  swaps every standard timm ``Attention`` for :class:`RadscaleAttention` and DaViT's window
  attention for :class:`RadscaleWindowAttention` (same parameters and state-dict keys, our kernel
  inside), and loads weights from a URI when one is named. The encoder carries the weights'
  normalisation (:class:`~radscale.trainer.models.checkpoints.Preprocess`).
- :meth:`Encoder.forward_multicrop` embeds crops of different resolutions (interpolated position
  embeddings), packs all their tokens into one sequence with ``cu_seqlens``, runs the blocks
  once, and unpacks CLS + patch tokens per crop: DINOv2's 2 global + 8 local crops in one pass (ViTs only).
- :func:`load_weights` reads a checkpoint through :mod:`checkpoints` (path, fsspec URL, folder or
  ``hf-hub:ORG/NAME``), remaps known layouts (transformers Dinov2Model, open_clip, DINOv2 training
  checkpoints, timm's converters) and names every missing or unexpected key when they do not fit.
  Nothing is downloaded unless a URI names it.

I/O: only :func:`load_weights` / :func:`save_weights`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import logging
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import fsspec
import timm
import torch
from safetensors.torch import save as save_safetensors
from timm.layers.attention import Attention as TimmAttention
from timm.models.davit import ChannelAttention, ChannelAttentionV2
from timm.models.davit import WindowAttention as DavitWindowAttention
from torch import nn
from torch.utils.checkpoint import checkpoint

from radscale.trainer.kernels.attention import SUPPORTED_HEAD_DIMS, Backend, attention
from radscale.trainer.models import checkpoints
from radscale.trainer.models.checkpoints import WeightsError

__all__ = ["Encoder", "Features", "RadscaleAttention", "WeightsError", "build_encoder", "encoder_from_spec",
           "load_weights", "save_weights", "swap_attention"]

log = logging.getLogger(__name__)

# (cu_seqlens, max_seqlen) while a packed multi-crop batch runs through the blocks.
_PACKING: contextvars.ContextVar[tuple[torch.Tensor, int] | None] = contextvars.ContextVar(
    "radscale_packing", default=None
)


@contextlib.contextmanager
def packed(cu_seqlens: torch.Tensor, max_seqlen: int) -> Iterator[None]:
    """Within this block, every RadscaleAttention treats its (1, T, C) input as packed sequences."""
    token = _PACKING.set((cu_seqlens, max_seqlen))
    try:
        yield
    finally:
        _PACKING.reset(token)


class RadscaleAttention(TimmAttention):
    """timm's standard Attention with the core routed through :func:`attention`.

    The qkv projection, q/k norm, optional gate, output norm, projection and dropouts are timm's
    own modules, so parameters and state-dict keys are unchanged. Attention-probability dropout
    and explicit masks have no kernel: those calls go to timm's implementation.
    """

    attn_backend: Backend = "auto"

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False):
        packing = _PACKING.get()
        if attn_mask is not None or is_causal or (self.training and self.attn_drop.p > 0):
            if packing is not None:
                raise ValueError("packed multi-crop does not support attention masks or attention dropout")
            return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
        b, n, _ = x.shape
        gate = self.gate(x).sigmoid() if self.gate is not None else None
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim)
        if packing is not None:
            cu_seqlens, max_seqlen = packing
            q, k, v = qkv[0].unbind(1)  # T H D each
            q, k = self.q_norm(q), self.k_norm(k)
            out = attention(q, k, v, cu_seqlens, max_seqlen, scale=self.scale, backend=self.attn_backend)
            out = out.reshape(1, n, self.attn_dim)
        else:
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # B H N D each
            q, k = self.q_norm(q), self.k_norm(k)
            out = attention(q, k, v, scale=self.scale, backend=self.attn_backend)
            out = out.transpose(1, 2).reshape(b, n, self.attn_dim)
        out = self.norm(out)
        if gate is not None:
            out = out * gate
        return self.proj_drop(self.proj(out))


class RadscaleWindowAttention(DavitWindowAttention):
    """DaViT's window attention (no relative position bias: DaViT encodes position with convolutions)
    with the core routed through :func:`attention`: windows are the batch, (B*nW, H, 49, D)."""

    attn_backend: Backend = "auto"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # B*nW H N D each
        out = attention(q, k, v, scale=self.scale, backend=self.attn_backend)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


@functools.cache
def _note_kept(what: str, reason: str) -> None:
    log.info("attention: %s uses %s", what, reason)


def swap_attention(model: nn.Module, backend: Backend = "auto") -> int:
    """Route every standard timm Attention and DaViT window attention in ``model`` through radscale's;
    returns how many. A window attention whose head_dim the kernel lacks gets SDPA (logged once)."""
    swapped = 0
    for module in model.modules():
        if type(module) in (TimmAttention, RadscaleAttention):
            module.__class__ = RadscaleAttention
            module.attn_backend = backend
            swapped += 1
        elif type(module) in (DavitWindowAttention, RadscaleWindowAttention):
            module.__class__ = RadscaleWindowAttention
            head_dim = module.dim // module.num_heads
            if backend != "sdpa" and head_dim not in SUPPORTED_HEAD_DIMS:
                _note_kept(f"DaViT window attention of width {module.dim}",
                           f"PyTorch SDPA (head_dim {head_dim} not in {SUPPORTED_HEAD_DIMS})")
                module.attn_backend = "sdpa"
            else:
                module.attn_backend = backend
            swapped += 1
        elif type(module) in (ChannelAttention, ChannelAttentionV2):
            _note_kept("DaViT channel attention", "timm's own matmuls (a softmax over channels, not tokens: "
                       "no fused-attention shape)")
    if swapped == 0:
        log.warning("%s has no standard timm Attention; it keeps its own attention", type(model).__name__)
    return swapped


# ---- weights ----------------------------------------------------------------------------------


STRIP_PREFIXES = ("module.", "backbone.", "encoder.", "model.", "trunk.", "visual.trunk.")
# Training checkpoints keep heads beside the backbone (DINOv2: dino_head/ibot_head); an image tower drops them.
HEAD_PREFIXES = ("dino_head.", "ibot_head.", "head.", "heads.", "text.", "logit_scale", "projector.")
# What a DINO student can take from a checkpoint besides its backbone (radscale's and DINOv2's names).
STUDENT_EXTRAS = ("dino_head.", "ibot_head.", "mask_token")


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Unwrap 'module.'-style prefixes; with heads beside a prefixed backbone, keep the backbone."""
    for prefix in STRIP_PREFIXES:
        inside = [k for k in sd if k.startswith(prefix)]
        if inside and all(k.startswith(prefix) or k.startswith(HEAD_PREFIXES) for k in sd):
            return _strip_prefixes({k.removeprefix(prefix): sd[k] for k in inside})
    return sd


def _listing(keys: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def _resample_pos_embed(sd: dict[str, torch.Tensor], model: nn.Module) -> None:
    """A ViT checkpoint trained at another resolution: its position grid resampled to the model's."""
    own = getattr(model, "pos_embed", None)
    if own is None or "pos_embed" not in sd or sd["pos_embed"].shape == own.shape:
        return
    from timm.layers import resample_abs_pos_embed

    prefix = 0 if getattr(model, "no_embed_class", False) else getattr(model, "num_prefix_tokens", 1)
    sd["pos_embed"] = resample_abs_pos_embed(sd["pos_embed"], new_size=model.patch_embed.grid_size,
                                             num_prefix_tokens=prefix, verbose=False)


def load_weights(model: nn.Module, uri: str, storage_options: dict[str, Any] | None = None,
                 field: str = "init") -> checkpoints.Checkpoint | None:
    """Load ``uri`` into ``model`` or raise :class:`WeightsError` naming ``field`` and what does not fit.

    Returns the checkpoint with what the backbone did not take (``tensors``: heads, mask token) and its
    metadata, for :meth:`checkpoints.Checkpoint.preprocess`; None for ``none``."""
    if uri == "none":
        return None
    ckpt = checkpoints.read(uri, storage_options, field)
    if ckpt.layout == "hf-dinov2":
        sd, extras = checkpoints.hf_dinov2_to_timm(ckpt.tensors)
    else:
        extras = ckpt.pop_prefixed(STUDENT_EXTRAS)  # heads sit beside a prefixed backbone: take them first
        sd = _strip_prefixes(ckpt.tensors)
        if "mask_token" in sd:  # DINOv2's backbone.mask_token: the student's, not the tower's
            extras["mask_token"] = sd.pop("mask_token").reshape(-1)
        # timm's own converter for this architecture (DINOv2 / OpenCLIP / DaViT / BEiT layouts).
        converter = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
        if converter is not None:
            try:
                sd = converter(sd, model)
            except Exception as exc:  # a layout the converter does not know: compare keys as they are
                log.debug("checkpoint_filter_fn declined %s: %s", uri, exc)
    sd = dict(sd)
    _resample_pos_embed(sd, model)
    own = model.state_dict()
    missing = sorted(k for k in own if k not in sd and not k.startswith("head."))
    unexpected = sorted(k for k in sd if k not in own and not k.startswith("head."))
    wrong = sorted(k for k in sd if k in own and tuple(sd[k].shape) != tuple(own[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{field}: weights at {uri} ({ckpt.layout} layout) do not fit {type(model).__name__}"]
        if missing:
            parts.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_listing(unexpected)}")
        if wrong:
            parts.append("shape mismatches: " + _listing(
                [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in wrong]))
        raise WeightsError("; ".join(parts))
    model.load_state_dict({k: v for k, v in sd.items() if k in own}, strict=False)
    ckpt.tensors = extras
    return ckpt


def save_weights(model: nn.Module | dict[str, torch.Tensor], uri: str,
                 storage_options: dict[str, Any] | None = None,
                 preprocess: checkpoints.Preprocess | None = None) -> None:
    """Write a model's state dict (or a state dict) as safetensors to a path or fsspec URL, with the
    normalisation and input size that go with it in the file's metadata."""
    state = model.state_dict() if isinstance(model, nn.Module) else model
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    meta = preprocess.to_metadata() if preprocess is not None else None
    with fsspec.open(uri, "wb", **(storage_options or {})) as fh:
        fh.write(save_safetensors(tensors, metadata=meta))


# ---- the encoder --------------------------------------------------------------------------------


@dataclasses.dataclass
class Features:
    """Per crop group: CLS (B, C) and patch tokens (B, N, C). For a hierarchical tower (DaViT) ``cls``
    is the pooled, normalised feature its classifier reads and ``patches`` the last stage's grid."""

    cls: torch.Tensor
    patches: torch.Tensor


class Encoder(nn.Module):
    """One interface over a timm ViT or DaViT: plain (and, for ViTs, multi-crop) forwards returning
    CLS/pooled + patch tokens.

    ``preprocess``: the normalisation and input size of the weights it was built with (what every
    stage standardises its images with). ``extras``: what the init checkpoint held beside the
    backbone (DINO/iBOT head, mask token), for the paradigm to take; empty when it held none.
    """

    def __init__(self, model: nn.Module, autocast_bf16: bool = False,
                 preprocess: checkpoints.Preprocess | None = None, image_size: int | None = None):
        super().__init__()
        self.model = model
        self.embed_dim: int = model.num_features
        self.num_prefix_tokens: int = getattr(model, "num_prefix_tokens", 1)
        self.autocast_bf16 = autocast_bf16
        self.hierarchical = not hasattr(model, "patch_embed")  # DaViT: stem + stages, no tokens until the end
        if self.hierarchical:
            self.patch = int(model.feature_info[-1]["reduction"])  # pixels per last-stage cell
            self.image_size = int(image_size or 224)
        else:
            size = model.patch_embed.patch_size
            self.patch = int(size[0] if isinstance(size, tuple | list) else size)
            self.image_size = int(model.patch_embed.img_size[0])
        self.preprocess = preprocess or checkpoints.Preprocess()
        self.extras: dict[str, torch.Tensor] = {}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)

    def _autocast(self, x: torch.Tensor) -> contextlib.AbstractContextManager:
        if self.autocast_bf16 and x.is_cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _split(self, tokens: torch.Tensor) -> Features:
        return Features(cls=tokens[:, 0], patches=tokens[:, self.num_prefix_tokens:])

    def forward(self, x: torch.Tensor) -> Features:
        with self._autocast(x):
            if self.hierarchical:
                fmap = self.model.forward_features(x)  # B C h w
                pooled = self.model.forward_head(fmap, pre_logits=True)  # pool -> norm: what a classifier reads
                patches = self.model.head.norm(fmap).flatten(2).transpose(1, 2)  # B h*w C
                return Features(cls=pooled, patches=patches)
            return self._split(self.model.forward_features(x))

    def _embed(self, x: torch.Tensor, mask: torch.Tensor | None = None,
               mask_token: torch.Tensor | None = None) -> torch.Tensor:
        m = self.model
        tokens = m.patch_embed(x)
        if mask is not None:  # iBOT: masked patches become the mask token before position embedding
            flat = tokens.reshape(tokens.shape[0], -1, tokens.shape[-1])
            flat = torch.where(mask.unsqueeze(-1), mask_token.to(flat.dtype).view(1, 1, -1), flat)
            tokens = flat.view(tokens.shape)
        return m.norm_pre(m.patch_drop(m._pos_embed(tokens)))

    def forward_multicrop(self, crops: Sequence[torch.Tensor], masks: Sequence[torch.Tensor] = (),
                          mask_token: torch.Tensor | None = None) -> list[Features]:
        """``crops``: tensors (B_i, C, H_i, W_i), one per resolution. All tokens run as one packed batch.
        ``masks``: bool (B_i, N_i) for the first ``len(masks)`` crops, replaced by ``mask_token``."""
        if self.hierarchical:
            raise ValueError(f"{type(self.model).__name__} has no token sequence to pack: multi-crop "
                             "(dino) needs a ViT; use a davit_* tower on a clip or unicl encoder")
        with self._autocast(crops[0]):
            groups = [self._embed(x, masks[i] if i < len(masks) else None, mask_token)
                      for i, x in enumerate(crops)]  # (B_i, N_i, C)
            lengths = [n for g in groups for n in [g.shape[1]] * g.shape[0]]
            cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32,
                              device=crops[0].device)
            x = torch.cat([g.reshape(-1, g.shape[-1]) for g in groups])[None]  # 1 T C
            for blk in self.model.blocks:
                if self.model.grad_checkpointing and self.training:
                    x = checkpoint(_packed_block, blk, x, cu, max(lengths), use_reentrant=False)
                else:
                    x = _packed_block(blk, x, cu, max(lengths))
            x = self.model.norm(x)[0]
            out, offset = [], 0
            for g in groups:
                count = g.shape[0] * g.shape[1]
                out.append(self._split(x[offset:offset + count].view(g.shape)))
                offset += count
            return out


def _packed_block(blk: nn.Module, x: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int) -> torch.Tensor:
    # The packing is entered per block so that checkpoint recomputation (in backward) sees it too.
    with packed(cu_seqlens, max_seqlen):
        return blk(x)


class DropPath(nn.Module):
    """Stochastic depth (timm's ``drop_path_rate``): the residual branch of a sample is dropped
    with probability ``drop_prob`` and kept ones are scaled by ``1 / (1 - drop_prob)``.

    Inside a packed multi-crop batch (one ``(1, T, C)`` sequence) the sample is each packed
    sequence, one crop of one image, as DINOv2 draws it per sample of each crop's batch; timm's
    ``DropPath`` would drop the whole packed batch at once."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        packing = _PACKING.get()
        if packing is not None and x.shape[0] == 1:
            cu_seqlens, _ = packing
            per_seq = x.new_empty(cu_seqlens.numel() - 1).bernoulli_(keep).div_(keep)
            per_token = torch.repeat_interleave(per_seq, (cu_seqlens[1:] - cu_seqlens[:-1]).long(),
                                                output_size=x.shape[1])
            return x * per_token.view(1, -1, *([1] * (x.ndim - 2)))
        return x * x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep).div_(keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


DROP_PATH_ATTRS = ("drop_path", "drop_path1", "drop_path2")


def set_drop_path(model: nn.Module, rate: float | None) -> int:
    """Give every block's stochastic-depth slots (timm's ``drop_path``/``drop_path1``/``drop_path2``)
    the same ``rate`` (DINOv2's ``drop_path_uniform``; 0 removes them, as for the teacher), or with
    ``rate=None`` keep each slot's rate and make it packing-aware. Returns the slots set."""
    from timm.layers import DropPath as TimmDropPath

    slots = 0
    for module in model.modules():
        for attr in DROP_PATH_ATTRS:
            current = getattr(module, attr, None)
            if not isinstance(current, nn.Identity | TimmDropPath | DropPath):
                continue
            p = float(getattr(current, "drop_prob", 0.0)) if rate is None else rate
            setattr(module, attr, DropPath(p) if p > 0 else nn.Identity())
            slots += 1
    return slots


def encoder_from_spec(spec: Any, attention_backend: Backend = "auto", weights: str | None = None,
                      **kwargs: Any) -> Encoder:
    """Build from an ``EncoderSpec`` (radscale.spec): its model, image size, init weights and normalisation.
    ``weights`` (a pretrained cell's encoder) replaces the init; errors name the field that set them."""
    field = f"encoders[{spec.name}].init" if weights is None or weights == spec.init else "weights"
    norm = getattr(spec, "normalization", None)
    override = checkpoints.Preprocess.of(norm.mean, norm.std, None, f"encoders[{spec.name}].normalization") \
        if norm is not None else None
    return build_encoder(spec.model, img_size=spec.image_size, attention_backend=attention_backend,
                         weights=spec.init if weights is None else weights, field=field, normalization=override,
                         **kwargs)


def _create(model_name: str, img_size: int, drop_path_rate: float = 0.0) -> nn.Module:
    kwargs: dict[str, Any] = {"pretrained": False, "num_classes": 0}
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    for extra in ({"img_size": img_size, "dynamic_img_size": True}, {"img_size": img_size}, {}):
        try:  # ViTs with dynamic position embeddings; fixed-size ViTs; towers without a size (DaViT)
            return timm.create_model(model_name, **kwargs, **extra)
        except TypeError:
            continue
        except RuntimeError as exc:
            raise ValueError(f"unknown timm architecture {model_name!r}: {exc}") from exc
    raise ValueError(f"timm architecture {model_name!r} cannot be built without downloading weights")


def build_encoder(
    model_name: str,
    *,
    img_size: int,
    attention_backend: Backend = "auto",
    weights: str = "none",
    storage_options: dict[str, Any] | None = None,
    grad_checkpointing: bool = False,
    autocast_bf16: bool = False,
    drop_path_rate: float = 0.0,
    drop_path_uniform: bool = True,
    field: str = "init",
    normalization: checkpoints.Preprocess | None = None,
) -> Encoder:
    """A timm architecture (no download), our attention inside, weights from ``weights`` if named.
    ``drop_path_rate``: the same in every block when ``drop_path_uniform`` (DINOv2), else timm's
    linear rise over depth.

    The encoder's ``preprocess`` is ``normalization`` when given, else what the weights carry
    (:meth:`checkpoints.Checkpoint.preprocess`), else radscale's default for a random init."""
    rising = drop_path_rate if drop_path_rate and not drop_path_uniform else 0.0
    model = _create(model_name, img_size, rising)
    if not hasattr(model, "patch_embed") and img_size % int(model.feature_info[-1]["reduction"]):
        stride = int(model.feature_info[-1]["reduction"])
        raise ValueError(f"{model_name} downsamples by {stride}: imageSize {img_size} must be a multiple of it")
    swap_attention(model, attention_backend)
    set_drop_path(model, drop_path_rate if drop_path_uniform else None)
    ckpt = load_weights(model, weights, storage_options, field)
    pre = normalization or (ckpt.preprocess(getattr(model, "pretrained_cfg", None)) if ckpt else None)
    pre = pre or checkpoints.Preprocess(input_size=None)
    if pre.input_size is not None and pre.input_size != img_size:
        log.warning("%s: %s was trained at %d px, imageSize is %d (position embeddings are resampled)",
                    field, weights, pre.input_size, img_size)
    encoder = Encoder(model, autocast_bf16=autocast_bf16, preprocess=pre, image_size=img_size)
    if ckpt is not None:
        encoder.extras = ckpt.tensors
    log.info("%s: normalisation mean %s std %s from %s", field, pre.mean, pre.std, pre.source)
    if grad_checkpointing:
        encoder.set_grad_checkpointing(True)
    return encoder
