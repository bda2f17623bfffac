"""Report generation LLaVA-style, as RAD-DINO and MI2 evaluate it: frozen image features -> a trained
MLP projector -> visual tokens prefixed to a Hugging Face causal LM, frozen or with LoRA adapters (peft).

The LM and its tokenizer come from ``evaluation.tasks[].decoder.model``: a folder in transformers'
``save_pretrained`` layout (a path or an fsspec URL, copied to a local folder once) or
``hf-hub:ORG/NAME`` (the local Hugging Face cache first, as for encoder weights). Training is
teacher forcing on ``[visual tokens] <bos> report <eos>``, the loss on the report tokens only;
decoding is greedy with the LM's key/value cache.

I/O: :func:`resolve` (the LM's files). The rest is pure torch.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from radscale.spec import DecoderSpec

log = logging.getLogger(__name__)
LM_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def resolve(uri: str, field: str, storage_options: dict[str, Any] | None = None) -> Path:
    """A local folder holding the LM and its tokenizer."""
    if uri.startswith("hf-hub:"):
        from radscale.trainer.models.checkpoints import hf_hub_folder

        return hf_hub_folder(uri, field, files=LM_FILES, what="causal-LM weights")
    if uri.startswith("/") or uri.startswith("file://"):
        folder = Path(uri.removeprefix("file://"))
    else:  # s3:// and friends: one local copy per URI
        import fsspec

        folder = Path(tempfile.gettempdir()) / "radscale-lm" / hashlib.sha256(uri.encode()).hexdigest()[:16]
        if not folder.exists():
            fs, path = fsspec.core.url_to_fs(uri, **(storage_options or {}))
            partial = folder.with_suffix(".partial")
            fs.get(path.rstrip("/") + "/", str(partial), recursive=True)
            os.replace(partial, folder)
    if not folder.is_dir() or not any((folder / n).exists() for n in LM_FILES):
        raise ValueError(f"{field}: {uri} is not a causal LM folder (transformers save_pretrained: config.json, "
                         f"one of {', '.join(LM_FILES)}, and the tokenizer files)")
    return folder


def load_tokenizer(folder: Path, field: str) -> Any:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as exc:
        raise ValueError(f"{field}: no tokenizer in {folder} ({type(exc).__name__}: {exc}); save the LM's "
                         "tokenizer beside it") from exc
    if tok.eos_token_id is None:
        raise ValueError(f"{field}: the tokenizer in {folder} has no eos token; generation could not stop")
    return tok


class LMReportModel(nn.Module):
    """Projector (2-layer MLP, GELU, as LLaVA-1.5) + causal LM. ``forward`` returns the mean token loss."""

    def __init__(self, lm: nn.Module, feat_dim: int, bos: int, eos: int):
        super().__init__()
        hidden = lm.get_input_embeddings().embedding_dim
        self.projector = nn.Sequential(nn.LayerNorm(feat_dim), nn.Linear(feat_dim, hidden), nn.GELU(),
                                       nn.Linear(hidden, hidden))
        self.lm, self.bos, self.eos = lm, bos, eos

    def _device(self) -> torch.device:
        return next(self.projector.parameters()).device

    def forward(self, feats: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """feats (B, M, C); ids (B, T) = <bos> report <eos> padded; lengths (B,) of each row's ids."""
        dev = self._device()
        feats, ids, lengths = feats.to(dev), ids.to(dev), lengths.to(dev)
        prefix = self.projector(feats)  # B M H
        m, t = prefix.shape[1], ids.shape[1]
        valid = torch.arange(t, device=dev)[None] < lengths[:, None]  # B T
        emb = self.lm.get_input_embeddings()(ids[:, :-1])
        mask = torch.cat([torch.ones(len(ids), m, dtype=torch.long, device=dev), valid[:, :-1].long()], 1)
        logits = self.lm(inputs_embeds=torch.cat([prefix.to(emb.dtype), emb], 1), attention_mask=mask).logits
        logits = logits[:, m:].float()  # position m + i predicts ids[:, i + 1]
        target = ids[:, 1:].masked_fill(~valid[:, 1:], -100)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)

    @torch.no_grad()
    def greedy(self, feats: torch.Tensor, max_new: int) -> list[list[int]]:
        dev = self._device()
        prefix = self.projector(feats.to(dev))
        embed = self.lm.get_input_embeddings()
        start = embed(torch.full((len(feats), 1), self.bos, dtype=torch.long, device=dev))
        x = torch.cat([prefix.to(start.dtype), start], 1)
        out = self.lm(inputs_embeds=x, use_cache=True)
        rows: list[list[int]] = [[] for _ in range(len(feats))]
        done = torch.zeros(len(feats), dtype=torch.bool, device=dev)
        for _ in range(max_new):
            nxt = out.logits[:, -1].argmax(-1)
            for i in torch.nonzero(~done & (nxt != self.eos)).flatten().tolist():
                rows[i].append(int(nxt[i]))
            done |= nxt == self.eos
            if done.all():
                break
            out = self.lm(inputs_embeds=embed(nxt[:, None]), use_cache=True, **_cache_of(self.lm, out))
        return rows


def _cache_of(lm: nn.Module, out: Any) -> dict[str, Any]:
    """The key/value cache to pass back: ``cache`` since transformers 5.2x, ``past_key_values`` before."""
    params = inspect.signature(lm.forward).parameters
    if "cache" in params or getattr(out, "cache", None) is not None:
        return {"cache": out.cache}
    return {"past_key_values": out.past_key_values}


def build(spec: DecoderSpec, folder: Path, feat_dim: int, tokenizer: Any, field: str) -> LMReportModel:
    """A fresh projector on the LM loaded from ``folder``: frozen, or with LoRA adapters."""
    from transformers import AutoModelForCausalLM

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        lm = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True,
                                                  dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
    except Exception as exc:
        raise ValueError(f"{field}: cannot load a causal LM from {folder} ({type(exc).__name__}: {exc})") from exc
    lm.requires_grad_(False)
    if spec.tuning == "lora":
        from peft import LoraConfig, get_peft_model
        from transformers.pytorch_utils import Conv1D

        transposed = any(isinstance(m, Conv1D) for m in lm.modules())  # GPT-2 stores (in, out) weights
        lm = get_peft_model(lm, LoraConfig(r=spec.lora_rank, lora_alpha=2 * spec.lora_rank, lora_dropout=0.0,
                                           target_modules="all-linear", fan_in_fan_out=transposed))
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return LMReportModel(lm, feat_dim, bos, tokenizer.eos_token_id).to(device)


def encode(tokenizer: Any, reports: list[str], bos: int, eos: int, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids (N, T) as <bos> report <eos>, padded with eos; lengths (N,))."""
    rows = [[bos, *tokenizer(r, add_special_tokens=False)["input_ids"][: max_len - 2], eos] for r in reports]
    width = max((len(r) for r in rows), default=2)
    ids = torch.full((len(rows), width), eos, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
    return ids, torch.tensor([len(r) for r in rows])
