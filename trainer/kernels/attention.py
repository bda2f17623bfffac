"""Fused flash attention in Triton: forward and backward, any length, packed variable-length.

Non-causal attention for ViT encoders. One launch handles a whole DINOv2 multi-crop batch
(2 x 257 + 8 x 50 tokens per image) packed along the token axis with ``cu_seqlens`` offsets:
no padding, no attention across sequences. Online softmax in the log2 domain; the forward
saves the log-sum-exp, and the backward recomputes probabilities from it (FlashAttention-2):
one kernel accumulates dK/dV per key block, another dQ per query block, so no atomics.

Layouts: dense ``(B, H, N, D)`` (as SDPA, any strides) or packed ``(T, H, D)`` with
``cu_seqlens`` (int32, ``S + 1`` offsets) and ``max_seqlen``. head_dim 32/64/128; fp32, fp16,
bf16 (fp32 tiles use IEEE dots). Everything else, and every non-CUDA tensor unless the Triton
interpreter is on (``TRITON_INTERPRET=1``), goes to PyTorch SDPA; the reason is logged once.

File order follows Triton's fused-attention tutorial: kernels, launch helpers, the autograd
Function, the public dispatcher. The reference is in :mod:`.reference`; the benchmark in
``bench/attention.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import os
from typing import Literal

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

log = logging.getLogger(__name__)

LOG2E = 1.4426950408889634
SUPPORTED_HEAD_DIMS = (32, 64, 128)
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
Backend = Literal["auto", "triton", "sdpa"]

# Tests flip this to fill every buffer the kernels write with NaN first: an unwritten element fails.
POISON = False


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# ---- kernels ------------------------------------------------------------------------------


@triton.jit
def _dot(a, b, IEEE: tl.constexpr):
    # fp32 tiles take IEEE dots (TF32 would cost ~1e-3 relative error); fp16/bf16 use tensor cores.
    if IEEE:
        return tl.dot(a, b, input_precision="ieee")
    return tl.dot(a, b)


@triton.jit
def _sequence(CU, seqlen_dense, H: tl.constexpr, VARLEN: tl.constexpr):
    """(batch or sequence index, head, first token, length) of this program's (sequence, head)."""
    off_bh = tl.program_id(1)
    b = (off_bh // H).to(tl.int64)
    h = (off_bh % H).to(tl.int64)
    if VARLEN:
        start = tl.load(CU + b).to(tl.int64)
        seqlen = (tl.load(CU + b + 1) - tl.load(CU + b)).to(tl.int32)
    else:
        start = tl.zeros([], dtype=tl.int64)
        seqlen = seqlen_dense
    return b, h, start, seqlen


@triton.jit
def _attn_fwd(
    Q, K, V, O, LSE, CU,
    stride_qb, stride_qt, stride_qh, stride_qd,
    stride_kb, stride_kt, stride_kh, stride_kd,
    stride_vb, stride_vt, stride_vh, stride_vd,
    stride_ob, stride_ot, stride_oh, stride_od,
    stride_lb, stride_lh,
    seqlen_dense, qk_scale,
    H: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    VARLEN: tl.constexpr, IEEE: tl.constexpr,
):
    start_m = tl.program_id(0)
    b, h, start, seqlen = _sequence(CU, seqlen_dense, H, VARLEN)
    if start_m * BLOCK_M >= seqlen:
        return
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    m_mask = offs_m < seqlen

    q_ptrs = Q + b * stride_qb + h * stride_qh + (start + offs_m[:, None]) * stride_qt + offs_d[None, :] * stride_qd
    q = tl.load(q_ptrs, mask=m_mask[:, None], other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    k_base = K + b * stride_kb + h * stride_kh + offs_d[None, :] * stride_kd
    v_base = V + b * stride_vb + h * stride_vh + offs_d[None, :] * stride_vd
    for start_n in range(0, seqlen, BLOCK_N):
        cols = start_n + offs_n
        n_mask = cols < seqlen
        k = tl.load(k_base + (start + cols[:, None]) * stride_kt, mask=n_mask[:, None], other=0.0)
        v = tl.load(v_base + (start + cols[:, None]) * stride_vt, mask=n_mask[:, None], other=0.0)
        # -- compute qk (log2 domain), mask the tail --
        qk = _dot(q, tl.trans(k), IEEE)
        qk = tl.where(n_mask[None, :], qk * qk_scale, float("-inf"))
        # -- online softmax --
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(qk - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        pv = _dot(p.to(v.dtype), v, IEEE)
        acc = acc * alpha[:, None] + pv
        m_i = m_new
    # -- epilogue --
    acc = acc / l_i[:, None]
    o_ptrs = O + b * stride_ob + h * stride_oh + (start + offs_m[:, None]) * stride_ot + offs_d[None, :] * stride_od
    tl.store(o_ptrs, acc.to(O.dtype.element_ty), mask=m_mask[:, None])
    tl.store(LSE + b * stride_lb + h * stride_lh + start + offs_m, m_i + tl.math.log2(l_i), mask=m_mask)


@triton.jit
def _attn_bwd_dkdv(
    Q, K, V, DO, DK, DV, LSE, DELTA, CU,
    stride_qb, stride_qt, stride_qh, stride_qd,
    stride_kb, stride_kt, stride_kh, stride_kd,
    stride_vb, stride_vt, stride_vh, stride_vd,
    stride_dob, stride_dot, stride_doh, stride_dod,
    stride_lb, stride_lh,
    seqlen_dense, qk_scale, sm_scale,
    H: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    VARLEN: tl.constexpr, IEEE: tl.constexpr,
):
    """One key block: loop over every query block, accumulate dK and dV (same strides as K/V)."""
    start_n = tl.program_id(0)
    b, h, start, seqlen = _sequence(CU, seqlen_dense, H, VARLEN)
    if start_n * BLOCK_N >= seqlen:
        return
    offs_n = start_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    n_mask = offs_n < seqlen

    kv_rows = start + offs_n[:, None]
    k = tl.load(K + b * stride_kb + h * stride_kh + kv_rows * stride_kt + offs_d[None, :] * stride_kd,
                mask=n_mask[:, None], other=0.0)
    v = tl.load(V + b * stride_vb + h * stride_vh + kv_rows * stride_vt + offs_d[None, :] * stride_vd,
                mask=n_mask[:, None], other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    q_base = Q + b * stride_qb + h * stride_qh + offs_d[None, :] * stride_qd
    do_base = DO + b * stride_dob + h * stride_doh + offs_d[None, :] * stride_dod
    l_base = b * stride_lb + h * stride_lh + start
    for start_m in range(0, seqlen, BLOCK_M):
        rows = start_m + offs_m
        m_mask = rows < seqlen
        q = tl.load(q_base + (start + rows[:, None]) * stride_qt, mask=m_mask[:, None], other=0.0)
        do = tl.load(do_base + (start + rows[:, None]) * stride_dot, mask=m_mask[:, None], other=0.0)
        lse = tl.load(LSE + l_base + rows, mask=m_mask, other=0.0)
        delta = tl.load(DELTA + l_base + rows, mask=m_mask, other=0.0)
        # -- recompute p^T from the saved log-sum-exp --
        qkT = _dot(k, tl.trans(q), IEEE)
        pT = tl.math.exp2(qkT * qk_scale - lse[None, :])
        pT = tl.where(m_mask[None, :] & n_mask[:, None], pT, 0.0)
        # -- dV += P^T dO ; dP^T = V dO^T ; dS^T = P^T (dP^T - delta) ; dK += dS^T Q --
        dv += _dot(pT.to(do.dtype), do, IEEE)
        dpT = _dot(v, tl.trans(do), IEEE)
        dsT = pT * (dpT - delta[None, :])
        dk += _dot(dsT.to(q.dtype), q, IEEE)
    dk *= sm_scale
    tl.store(DK + b * stride_kb + h * stride_kh + kv_rows * stride_kt + offs_d[None, :] * stride_kd,
             dk.to(DK.dtype.element_ty), mask=n_mask[:, None])
    tl.store(DV + b * stride_vb + h * stride_vh + kv_rows * stride_vt + offs_d[None, :] * stride_vd,
             dv.to(DV.dtype.element_ty), mask=n_mask[:, None])


@triton.jit
def _attn_bwd_dq(
    Q, K, V, DO, DQ, LSE, DELTA, CU,
    stride_qb, stride_qt, stride_qh, stride_qd,
    stride_kb, stride_kt, stride_kh, stride_kd,
    stride_vb, stride_vt, stride_vh, stride_vd,
    stride_dob, stride_dot, stride_doh, stride_dod,
    stride_lb, stride_lh,
    seqlen_dense, qk_scale, sm_scale,
    H: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    VARLEN: tl.constexpr, IEEE: tl.constexpr,
):
    """One query block: loop over every key block, accumulate dQ (same strides as Q)."""
    start_m = tl.program_id(0)
    b, h, start, seqlen = _sequence(CU, seqlen_dense, H, VARLEN)
    if start_m * BLOCK_M >= seqlen:
        return
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    m_mask = offs_m < seqlen

    q_rows = start + offs_m[:, None]
    q = tl.load(Q + b * stride_qb + h * stride_qh + q_rows * stride_qt + offs_d[None, :] * stride_qd,
                mask=m_mask[:, None], other=0.0)
    do = tl.load(DO + b * stride_dob + h * stride_doh + q_rows * stride_dot + offs_d[None, :] * stride_dod,
                 mask=m_mask[:, None], other=0.0)
    l_off = b * stride_lb + h * stride_lh + start + offs_m
    lse = tl.load(LSE + l_off, mask=m_mask, other=0.0)
    delta = tl.load(DELTA + l_off, mask=m_mask, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    k_base = K + b * stride_kb + h * stride_kh + offs_d[None, :] * stride_kd
    v_base = V + b * stride_vb + h * stride_vh + offs_d[None, :] * stride_vd
    for start_n in range(0, seqlen, BLOCK_N):
        cols = start_n + offs_n
        n_mask = cols < seqlen
        k = tl.load(k_base + (start + cols[:, None]) * stride_kt, mask=n_mask[:, None], other=0.0)
        v = tl.load(v_base + (start + cols[:, None]) * stride_vt, mask=n_mask[:, None], other=0.0)
        # -- recompute p ; dP = dO V^T ; dS = P (dP - delta) ; dQ += dS K --
        qk = _dot(q, tl.trans(k), IEEE)
        dp = _dot(do, tl.trans(v), IEEE)
        p = tl.math.exp2(qk * qk_scale - lse[:, None])
        p = tl.where(n_mask[None, :], p, 0.0)
        ds = p * (dp - delta[:, None])
        dq += _dot(ds.to(k.dtype), k, IEEE)
    dq *= sm_scale
    tl.store(DQ + b * stride_qb + h * stride_qh + q_rows * stride_qt + offs_d[None, :] * stride_qd,
             dq.to(DQ.dtype.element_ty), mask=m_mask[:, None])


# ---- launch helpers -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Tile sizes and launch options of one kernel."""

    BLOCK_M: int
    BLOCK_N: int
    num_warps: int
    num_stages: int

    def launch_kwargs(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class AttentionConfigs:
    """What one forward + backward launches: the forward, the dK/dV and the dQ kernel."""

    fwd: KernelConfig
    bwd_dkdv: KernelConfig
    bwd_dq: KernelConfig


def _cfgs(fwd, dkdv, dq) -> AttentionConfigs:
    return AttentionConfigs(KernelConfig(*fwd), KernelConfig(*dkdv), KernelConfig(*dq))


# Tiles per kernel as (BLOCK_M, BLOCK_N, num_warps, num_stages): BLOCK_M tiles the queries, BLOCK_N
# the keys. The forward and dQ kernels keep a BLOCK_M x HEAD_DIM query tile and its fp32 accumulator
# in registers and stream keys; dK/dV keeps a BLOCK_N x HEAD_DIM key/value tile and two fp32
# accumulators and streams queries. Chosen from CANDIDATES below, pruned by the ahead-of-time check
# (`bench/attention.py --aot --candidates`; measured with triton 3.7.1's ptxas, tables in
# docs/kernels.md), as the biggest tiles that keep every head dim spill-free with register headroom:
#
# - sm_90 (H100/H200): 8 warps = two warpgroups, so each wgmma works on a 64-row slab (wgmma's M is
#   64 per warpgroup) and the 128-row query tiles of the forward and dQ kernels split evenly; the
#   dK/dV kernel's 128 key rows likewise. With 4 warps the same tiles need ~230-255 registers and
#   spill at d=128 (forward 128x64 and 128x128, dK/dV 64x64 and 64x128, dQ 128x64); with 8 warps
#   the forward needs 98/126/184 registers at d=32/64/128 (packed) and two blocks fit an SM at d<=64.
#   BLOCK_N 128 in the forward spills at 4 warps and leaves one block per SM at 8; 64 keeps two.
#   Three stages, but dK/dV takes two at d=128 (three reach 255 registers).
#   dK/dV 32x128 and dQ 128x32 are the shapes of Triton's fused-attention tutorial backward.
# - sm_80 (A100), and every other capability (untested: they get the Ampere table): 8 warps too;
#   at 4 warps the old 128x64 forward and 64x64 backward tiles spilled 4-172 bytes at d=64/128.
#   dK/dV takes two stages (a third costs ~45 registers: 222 at d=64) and at d=128 a 64-row key
#   tile (32x128 spills). Every tile stays under 99 KiB of shared memory (at most 96 KiB, at
#   d=128), the per-block limit of sm_86/sm_89.
# - fp32 (IEEE dots, no tensor cores: FMA units hold both operands in registers) needs small tiles
#   on either architecture: the old 128x64 forward spilled 17-32 KB per thread.
# - the interpreter (arch None) keeps the tiles the CPU tests have always used: the interpreter's
#   cost grows with the number of programs, and numerics depend on tiles only through fp32
#   summation order.
#
# fp16/bf16 tables: fwd, dK/dV, dQ per head dim.
_SM90 = {32: _cfgs((128, 64, 8, 3), (32, 128, 8, 3), (128, 32, 8, 3)),
         64: _cfgs((128, 64, 8, 3), (32, 128, 8, 3), (128, 32, 8, 3)),
         128: _cfgs((128, 64, 8, 3), (32, 128, 8, 2), (128, 32, 8, 3))}
_SM80 = {32: _cfgs((128, 64, 8, 3), (32, 128, 8, 2), (128, 32, 8, 3)),
         64: _cfgs((128, 64, 8, 3), (32, 128, 8, 2), (128, 32, 8, 3)),
         128: _cfgs((128, 64, 8, 3), (32, 64, 8, 2), (128, 32, 8, 3))}
_FP32 = _cfgs((64, 32, 8, 2), (16, 32, 4, 2), (32, 32, 4, 2))
_INTERPRETER = {32: _cfgs((128, 64, 4, 3), (64, 64, 4, 3), (64, 64, 4, 3)),
                64: _cfgs((128, 64, 4, 3), (64, 64, 4, 3), (64, 64, 4, 3)),
                128: _cfgs((64, 64, 4, 2), (64, 64, 4, 2), (64, 64, 4, 2))}

# The search space of the tables above: Hopper-shaped (128-row tiles, 64/128 columns, 4/8 warps,
# 2-4 stages) and Ampere-shaped tiles for fp16/bf16, small ones for fp32.
CANDIDATES: dict[str, list[KernelConfig]] = {
    "fwd": [KernelConfig(*c) for c in [
        (128, 64, 4, 2), (128, 64, 4, 3), (128, 64, 4, 4), (128, 128, 4, 2), (128, 128, 4, 3),
        (128, 64, 8, 2), (128, 64, 8, 3), (128, 64, 8, 4), (128, 128, 8, 2), (128, 128, 8, 3), (128, 128, 8, 4),
        (64, 64, 4, 2), (64, 64, 4, 3), (64, 32, 4, 3)]],
    "bwd_dkdv": [KernelConfig(*c) for c in [
        (32, 64, 4, 2), (32, 64, 4, 3), (64, 64, 4, 2), (64, 64, 4, 3), (32, 128, 4, 2), (64, 128, 4, 2),
        (32, 128, 8, 2), (32, 128, 8, 3), (64, 128, 8, 2), (64, 128, 8, 3), (32, 64, 8, 2), (16, 64, 8, 2)]],
    "bwd_dq": [KernelConfig(*c) for c in [
        (64, 32, 4, 2), (64, 32, 4, 3), (64, 64, 4, 2), (64, 64, 4, 3), (128, 32, 4, 2), (128, 64, 4, 2),
        (128, 32, 8, 2), (128, 32, 8, 3), (128, 64, 8, 2), (128, 64, 8, 3)]],
}
FP32_CANDIDATES: dict[str, list[KernelConfig]] = {
    "fwd": [KernelConfig(*c) for c in [(64, 64, 8, 2), (64, 32, 8, 2), (64, 32, 4, 2), (32, 32, 4, 2), (16, 32, 4, 2)]],
    "bwd_dkdv": [KernelConfig(*c) for c in [(32, 64, 8, 2), (16, 64, 8, 2), (32, 32, 8, 2), (32, 32, 4, 2),
                                            (16, 32, 4, 2)]],
    "bwd_dq": [KernelConfig(*c) for c in [(64, 32, 8, 2), (32, 32, 4, 2), (32, 16, 4, 2), (16, 32, 4, 2)]],
}


def configs_for(dtype: torch.dtype, head_dim: int, arch: int | None, varlen: bool) -> AttentionConfigs:
    """The launcher's tiles for ``sm_{arch}`` (``10 * major + minor``; ``None``: the interpreter).

    The one place tiles are chosen: the launchers read it, and the ahead-of-time test
    (tests/unit/test_kernels_aot.py) compiles exactly these for sm_80 and sm_90 and fails on
    spills, shared memory over the limit, or bf16/fp16 dots that miss the tensor cores. Dense and
    packed (``varlen``) layouts share tiles: the packed kernels need a few more registers, and the
    check covers both.
    """
    if arch is None:
        return _INTERPRETER[head_dim]
    if dtype == torch.float32:
        return _FP32
    return (_SM90 if 90 <= arch < 100 else _SM80)[head_dim]


@functools.cache
def _device_arch(index: int) -> int:
    major, minor = torch.cuda.get_device_capability(index)
    return 10 * major + minor


def _arch(t: torch.Tensor) -> int | None:
    """``10 * major + minor`` of a CUDA tensor's device; None elsewhere (the interpreter)."""
    return _device_arch(t.device.index if t.device.index is not None else torch.cuda.current_device()) \
        if t.is_cuda else None


def _launch(kernel, grid, args, kwargs) -> None:
    kernel[grid](*args, **kwargs)


def _empty_like(t: torch.Tensor, shape: tuple[int, ...] | None = None, dtype: torch.dtype | None = None):
    shape = tuple(t.shape) if shape is None else shape
    out = torch.empty(shape, dtype=dtype or t.dtype, device=t.device)
    return out.fill_(float("nan")) if POISON else out


def _strides4(t: torch.Tensor, varlen: bool) -> tuple[int, int, int, int]:
    """(batch, token, head, dim) strides; packed tensors have no batch axis."""
    if varlen:
        return (0, t.stride(0), t.stride(1), t.stride(2))
    return (t.stride(0), t.stride(2), t.stride(1), t.stride(3))


def _geometry(q: torch.Tensor, cu_seqlens: torch.Tensor | None, max_seqlen: int | None):
    if cu_seqlens is not None:
        n_seq = cu_seqlens.numel() - 1
        heads = q.shape[1]
        seqlen = int(max_seqlen) if max_seqlen is not None else int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
        return n_seq, heads, seqlen
    return q.shape[0], q.shape[1], q.shape[2]


def _forward(q, k, v, cu_seqlens, max_seqlen, scale, arch=None, launch=_launch):
    varlen = cu_seqlens is not None
    n_seq, heads, seqlen = _geometry(q, cu_seqlens, max_seqlen)
    head_dim = q.shape[-1]
    o = _empty_like(q, tuple(q.shape))
    if varlen:  # (H, T): one row per head, sequences at their token offsets
        lse = _empty_like(q, (heads, q.shape[0]), torch.float32)
        lse_strides = (0, lse.stride(0))
    else:
        lse = _empty_like(q, (n_seq, heads, seqlen), torch.float32)
        lse_strides = (lse.stride(0), lse.stride(1))
    cfg = configs_for(q.dtype, head_dim, arch, varlen).fwd
    grid = (triton.cdiv(seqlen, cfg.BLOCK_M), n_seq * heads)
    cu = cu_seqlens if varlen else q  # unused when not VARLEN
    launch(_attn_fwd, grid, (
        q, k, v, o, lse, cu,
        *_strides4(q, varlen), *_strides4(k, varlen), *_strides4(v, varlen), *_strides4(o, varlen),
        *lse_strides, seqlen, scale * LOG2E,
    ), dict(H=heads, HEAD_DIM=head_dim, VARLEN=varlen, IEEE=q.dtype == torch.float32, **cfg.launch_kwargs()))
    return o, lse


def _backward(do, q, k, v, o, lse, cu_seqlens, max_seqlen, scale, arch=None, launch=_launch):
    varlen = cu_seqlens is not None
    n_seq, heads, seqlen = _geometry(q, cu_seqlens, max_seqlen)
    head_dim = q.shape[-1]
    # delta_i = rowsum(dO_i * O_i), laid out like the log-sum-exp
    delta = (do.float() * o.float()).sum(-1)
    delta = delta.transpose(0, 1).contiguous() if varlen else delta.contiguous()
    lse_strides = (0, lse.stride(0)) if varlen else (lse.stride(0), lse.stride(1))
    dq, dk, dv = _empty_like(q), _empty_like(k), _empty_like(v)
    cfgs = configs_for(q.dtype, head_dim, arch, varlen)
    cu = cu_seqlens if varlen else q
    common = dict(H=heads, HEAD_DIM=head_dim, VARLEN=varlen, IEEE=q.dtype == torch.float32)
    strides = (*_strides4(q, varlen), *_strides4(k, varlen), *_strides4(v, varlen), *_strides4(do, varlen),
               *lse_strides, seqlen, scale * LOG2E, scale)
    # dk/dv share k/v's strides (allocated like them), dq shares q's.
    assert dk.stride() == k.stride() and dv.stride() == v.stride() and dq.stride() == q.stride()
    cfg = cfgs.bwd_dkdv
    launch(_attn_bwd_dkdv, (triton.cdiv(seqlen, cfg.BLOCK_N), n_seq * heads),
           (q, k, v, do, dk, dv, lse, delta, cu, *strides), dict(common, **cfg.launch_kwargs()))
    cfg = cfgs.bwd_dq
    launch(_attn_bwd_dq, (triton.cdiv(seqlen, cfg.BLOCK_M), n_seq * heads),
           (q, k, v, do, dq, lse, delta, cu, *strides), dict(common, **cfg.launch_kwargs()))
    return dq, dk, dv


# ---- autograd Function ------------------------------------------------------------------------


class _FlashAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, cu_seqlens, max_seqlen, scale):
        # Contiguous inputs make dq/dk/dv (allocated like them) share their strides.
        q, k, v = (t.contiguous() for t in (q, k, v))
        ctx.arch = _arch(q)
        o, lse = _forward(q, k, v, cu_seqlens, max_seqlen, scale, arch=ctx.arch)
        ctx.save_for_backward(q, k, v, o, lse, cu_seqlens)
        ctx.max_seqlen, ctx.scale = max_seqlen, scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, cu_seqlens = ctx.saved_tensors
        dq, dk, dv = _backward(do, q, k, v, o, lse, cu_seqlens, ctx.max_seqlen, ctx.scale, arch=ctx.arch)
        return dq, dk, dv, None, None, None


def flash_attention(q, k, v, cu_seqlens=None, max_seqlen=None, scale=None):
    """The Triton path, no fallback: dense (B, H, N, D) or packed (T, H, D) + cu_seqlens."""
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if cu_seqlens is not None:
        cu_seqlens = cu_seqlens.to(device=q.device, dtype=torch.int32).contiguous()
        if max_seqlen is None:
            max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
    return _FlashAttention.apply(q, k, v, cu_seqlens, max_seqlen, scale)


# ---- dispatcher -------------------------------------------------------------------------------


@functools.cache
def _note_fallback(reason: str) -> None:
    log.info("attention: using PyTorch SDPA (%s)", reason)


def unsupported_reason(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> str | None:
    """Why the Triton kernel cannot take these tensors, or None if it can."""
    if not (q.is_cuda or _interpreting()):
        return f"tensors on {q.device.type} and the Triton interpreter is off"
    if q.shape[-1] not in SUPPORTED_HEAD_DIMS:
        return f"head_dim {q.shape[-1]} not in {SUPPORTED_HEAD_DIMS}"
    if q.dtype not in SUPPORTED_DTYPES or not (q.dtype == k.dtype == v.dtype):
        return f"dtype {q.dtype}/{k.dtype}/{v.dtype}"
    if not (q.shape == k.shape == v.shape):
        return "q, k, v shapes differ (cross-attention)"
    return None


def _sdpa_varlen(q, k, v, cu_seqlens, scale):
    """Block-diagonal attention with SDPA: sequences of equal length are batched together."""
    bounds = cu_seqlens.tolist()
    lengths = [e - s for s, e in itertools.pairwise(bounds)]
    out = torch.empty_like(q)
    by_len: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        by_len.setdefault(n, []).append(i)
    for n, seqs in by_len.items():
        idx = torch.cat([torch.arange(bounds[i], bounds[i] + n, device=q.device) for i in seqs])
        qs, ks, vs = (t[idx].view(len(seqs), n, *t.shape[1:]).transpose(1, 2) for t in (q, k, v))
        o = F.scaled_dot_product_attention(qs, ks, vs, scale=scale)  # S H n D
        out[idx] = o.transpose(1, 2).reshape(len(seqs) * n, *q.shape[1:])
    return out


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens: torch.Tensor | None = None,
    max_seqlen: int | None = None,
    scale: float | None = None,
    backend: Backend = "auto",
) -> torch.Tensor:
    """Non-causal attention. Dense ``(B, H, N, D)``, or packed ``(T, H, D)`` with ``cu_seqlens``.

    ``auto`` uses the Triton kernel where it applies (CUDA, or the interpreter) and SDPA
    otherwise; ``triton`` insists (raising where it cannot run); ``sdpa`` never uses Triton.
    """
    if backend != "sdpa":
        reason = unsupported_reason(q, k, v)
        if reason is None:
            return flash_attention(q, k, v, cu_seqlens, max_seqlen, scale)
        if backend == "triton":
            raise ValueError(f"attention backend 'triton' cannot run here: {reason}")
        _note_fallback(reason)
    if cu_seqlens is None:
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    return _sdpa_varlen(q, k, v, cu_seqlens, scale)
