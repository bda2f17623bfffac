"""Plain-torch attention, the reference the Triton kernel is tested against.

Explicit softmax in the input dtype (float64 works), dense ``(B, H, N, D)`` or packed
``(T, H, D)`` with ``cu_seqlens`` (each sequence attends only to itself). No I/O.
"""

from __future__ import annotations

import itertools

import torch


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if cu_seqlens is None:
        attn = (q @ k.transpose(-2, -1)) * scale  # B H N N
        return attn.softmax(dim=-1) @ v  # B H N D
    out = torch.empty_like(q)
    bounds = cu_seqlens.tolist()
    for start, end in itertools.pairwise(bounds):
        qs, ks, vs = (t[start:end].transpose(0, 1) for t in (q, k, v))  # H n D
        out[start:end] = attention_reference(qs, ks, vs, scale=scale).transpose(0, 1)
    return out
