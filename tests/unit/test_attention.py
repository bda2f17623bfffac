"""The Triton flash attention against the float64 reference: outputs and all three gradients.

On the CPU these run in Triton's interpreter (TRITON_INTERPRET=1, set in tests/conftest.py).
Tolerances (relative to the largest reference magnitude, floored at 1 so that exact zeros, e.g.
dq for a one-token sequence, are compared absolutely): fp32 2e-5 (measured ~1e-6);
fp16 2e-3 and bf16 1.6e-2 for GPU runs, where the tiles use tensor cores.
"""

from __future__ import annotations

import logging

import pytest
import torch

from radscale.trainer.kernels import attention as attn
from radscale.trainer.kernels.reference import attention_reference

TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    """Every buffer the kernels write starts as NaN: an element they fail to write fails the test."""
    monkeypatch.setattr(attn, "POISON", True)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    assert not torch.isnan(got).any(), "unwritten (NaN) elements"
    return ((got.double() - want).abs().max() / want.abs().max().clamp_min(1.0)).item()


def check(q, k, v, do, out, grads, cu_seqlens=None, dtype=torch.float32):
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    ref = attention_reference(q64, k64, v64, cu_seqlens)
    ref.backward(do.double())
    assert rel_err(out, ref) < TOL[dtype]
    for name, g, r in zip("qkv", grads, (q64.grad, k64.grad, v64.grad), strict=True):
        assert rel_err(g, r) < TOL[dtype], f"d{name}"


def run(fn, *inputs):
    inputs = [t.requires_grad_() for t in inputs]
    out = fn(*inputs)
    do = torch.randn_like(out)
    out.backward(do)
    return out, do, [t.grad for t in inputs]


@pytest.mark.parametrize("n", [1, 7, 50, 257])
@pytest.mark.parametrize("d", [32, 64, 128])
def test_dense_forward_and_backward(n, d):
    torch.manual_seed(n * d)
    q, k, v = (torch.randn(2, 2, n, d, device=DEVICE) for _ in range(3))
    out, do, grads = run(attn.flash_attention, q, k, v)
    check(q, k, v, do, out, grads)


def test_non_contiguous_inputs_as_timm_makes_them():
    torch.manual_seed(1)
    b, n, h, d = 2, 50, 3, 64
    qkv = torch.randn(b, n, 3, h, d, device=DEVICE).permute(2, 0, 3, 1, 4)  # 3 B H N D, strided
    q, k, v = (t.detach() for t in qkv.unbind(0))
    assert not q.is_contiguous()
    out, do, grads = run(attn.flash_attention, q, k, v)
    check(q, k, v, do, out, grads)
    do_strided = torch.randn(b, n, h, d, device=DEVICE).transpose(1, 2)  # a non-contiguous upstream grad
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    attn.flash_attention(q2, k2, v2).backward(do_strided)
    q3, k3, v3 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    attn.flash_attention(q3, k3, v3).backward(do_strided.contiguous())
    assert torch.allclose(q2.grad, q3.grad) and torch.allclose(v2.grad, v3.grad)


def multicrop_lengths(images: int) -> list[int]:
    # DINOv2 per image: 2 global crops (257 tokens) + 8 local crops (50 tokens)
    return [257] * 2 * images + [50] * 8 * images


@pytest.mark.parametrize("lengths", [multicrop_lengths(1), [1, 7, 50, 257, 3, 128, 129]], ids=["multicrop", "odd"])
def test_packed_varlen_matches_reference(lengths):
    torch.manual_seed(len(lengths))
    h, d = 2, 64
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEVICE)
    q, k, v = (torch.randn(sum(lengths), h, d, device=DEVICE) for _ in range(3))
    out, do, grads = run(lambda a, b, c: attn.flash_attention(a, b, c, cu, max(lengths)), q, k, v)
    check(q, k, v, do, out, grads, cu_seqlens=cu)


def test_packed_equals_each_sequence_alone():
    """No attention crosses a sequence boundary: packing changes nothing, outputs or gradients."""
    torch.manual_seed(7)
    lengths, h, d = [50, 257, 7], 2, 32
    cu = torch.tensor([0, 50, 307, 314], dtype=torch.int32, device=DEVICE)
    q, k, v = (torch.randn(sum(lengths), h, d, device=DEVICE) for _ in range(3))
    packed, do, grads = run(lambda a, b, c: attn.flash_attention(a, b, c, cu), q, k, v)
    for i, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist(), strict=True)):
        parts = [t[s:e].detach().transpose(0, 1)[None].clone() for t in (q, k, v)]  # 1 H n D
        alone, _, _alone_grads = run(attn.flash_attention, *parts)
        alone_do = do[s:e].transpose(0, 1)[None]
        # rerun with the packed run's upstream gradient for this sequence
        parts2 = [p.detach().clone().requires_grad_() for p in parts]
        attn.flash_attention(*parts2).backward(alone_do)
        assert torch.allclose(packed[s:e], alone[0].transpose(0, 1), atol=1e-6), i
        for g_packed, p in zip(grads, parts2, strict=True):
            assert torch.allclose(g_packed[s:e], p.grad[0].transpose(0, 1), atol=1e-6), i


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16/bf16 tiles are checked on a GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("n", [50, 257, 1370])
def test_low_precision_on_gpu(dtype, n):
    torch.manual_seed(n)
    q, k, v = (torch.randn(2, 4, n, 64, device="cuda", dtype=dtype) for _ in range(3))
    out, do, grads = run(attn.flash_attention, q, k, v)
    check(q, k, v, do, out, grads, dtype=dtype)


def test_sdpa_backend_and_varlen_fallback_match_reference():
    torch.manual_seed(3)
    lengths = [257, 50, 50, 1]
    cu = torch.tensor([0, 257, 307, 357, 358], dtype=torch.int32)
    q, k, v = (torch.randn(sum(lengths), 2, 48) for _ in range(3))
    out = attn.attention(q, k, v, cu, backend="sdpa")
    assert rel_err(out, attention_reference(q.double(), k.double(), v.double(), cu)) < 1e-5
    dense = [torch.randn(2, 2, 30, 48) for _ in range(3)]
    assert rel_err(attn.attention(*dense, backend="sdpa"), attention_reference(*(t.double() for t in dense))) < 1e-5


def test_dispatcher_falls_back_with_a_reason_logged_once(monkeypatch, caplog):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    attn._note_fallback.cache_clear()
    q, k, v = (torch.randn(1, 2, 9, 64) for _ in range(3))
    with caplog.at_level(logging.INFO, logger=attn.log.name):
        for _ in range(3):
            out = attn.attention(q, k, v)
    notes = [r.message for r in caplog.records if "SDPA" in r.message]
    assert len(notes) == 1 and "interpreter is off" in notes[0]
    assert rel_err(out, attention_reference(q.double(), k.double(), v.double())) < 1e-5
    with pytest.raises(ValueError, match="cannot run here"):
        attn.attention(q, k, v, backend="triton")


def test_unsupported_shapes_fall_back_in_auto_and_refuse_in_triton():
    q, k, v = (torch.randn(1, 2, 9, 48) for _ in range(3))
    assert "head_dim 48" in attn.unsupported_reason(q, k, v)
    out = attn.attention(q, k, v)  # auto: SDPA
    assert rel_err(out, attention_reference(q.double(), k.double(), v.double())) < 1e-5
    with pytest.raises(ValueError, match="head_dim 48"):
        attn.attention(q, k, v, backend="triton")
    assert "dtype" in attn.unsupported_reason(q.double()[..., :32], k.double()[..., :32], v.double()[..., :32])


def test_auto_uses_the_kernel_where_it_applies(monkeypatch):
    calls = []
    real = attn._FlashAttention.apply
    monkeypatch.setattr(attn._FlashAttention, "apply", lambda *a: calls.append(1) or real(*a))
    q, k, v = (torch.randn(1, 2, 9, 32, device=DEVICE) for _ in range(3))
    attn.attention(q, k, v)
    assert calls == [1]
