"""The text tower of clip/unicl encoders: open_clip's text transformer and its CLIP BPE tokenizer.

The BPE vocabulary ships inside the open_clip wheel, so tokenizing needs no download. Weights
start from ``spec.init`` (a path, fsspec URL or ``hf-hub:``) like the image tower, or random.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from radscale.trainer.models.encoders import load_weights


@dataclasses.dataclass(frozen=True)
class TextArch:
    width: int
    heads: int
    layers: int


# text-base is CLIP's (and BiomedCLIP-sized) text transformer; the smaller ones are for tests/CPU.
ARCHS = {
    "text-base": TextArch(512, 8, 12),
    "text-small": TextArch(256, 4, 4),
    "text-tiny": TextArch(64, 2, 2),
}


class Tokenizer:
    def __init__(self, context_length: int):
        from open_clip.tokenizer import SimpleTokenizer

        self._tok = SimpleTokenizer(context_length=context_length)
        self.vocab_size = self._tok.vocab_size
        self.context_length = context_length

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """Token ids [N, context_length]; long reports are truncated (the end-of-text token kept)."""
        return self._tok(list(texts))


class TextTower(nn.Module):
    def __init__(self, model: str = "text-base", context_length: int = 128, embed_dim: int = 512):
        super().__init__()
        from open_clip.transformer import TextTransformer

        if model not in ARCHS:
            raise ValueError(f"unknown text tower {model!r}; known: {', '.join(sorted(ARCHS))}")
        arch = ARCHS[model]
        self.tokenizer = Tokenizer(context_length)
        self.transformer = TextTransformer(context_length=context_length, vocab_size=self.tokenizer.vocab_size,
                                           width=arch.width, heads=arch.heads, layers=arch.layers,
                                           output_dim=embed_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.transformer(tokens)

    def encode(self, texts: Sequence[str], device: torch.device | str = "cpu") -> torch.Tensor:
        return self(self.tokenizer(texts).to(device))


def text_from_spec(spec: Any, storage_options: dict[str, Any] | None = None) -> TextTower:
    """Build from a ``TextSpec`` (radscale.operator.api); defaults when the encoder names none."""
    model = getattr(spec, "model", "text-base")
    tower = TextTower(model, getattr(spec, "context_length", 128), getattr(spec, "embed_dim", 512))
    load_weights(tower.transformer, getattr(spec, "init", "none"), storage_options)
    return tower
