"""Every attention kernel, compiled ahead of time for sm_80 (A100) and sm_90 (H100/H200), no GPU.

For each dtype (fp16, bf16, fp32), head dim (32, 64, 128) and layout (dense, packed varlen), the
launcher itself is run on meta tensors with a recording launch function, so what is compiled is
exactly what it would launch on that architecture: kernel, block sizes, warps, stages and the JIT's
argument specialisation. Each compiled kernel must have no register spills (cuobjdump: no stack
frame or local memory), fit the architecture's per-block shared memory, and lower every bf16/fp16
``tl.dot`` to tensor cores (``mma.sync`` on sm_80, ``wgmma`` on sm_90, per dot in the TTGIR and in
the PTX). fp32 tiles ask for IEEE dots (``input_precision="ieee"``: TF32 would cost ~1e-3
relative error), so their dots must be FMA, not TF32. The toy kernels at the bottom show that the
same checker fails on a spill, on too much shared memory and on a dot that falls back to FMA.

About 2-3 minutes on 2 cores (triton.compile + ptxas + cuobjdump per configuration, 108 of them,
in threads). Triton's cache goes to a temporary folder and every kernel is compiled afresh.
"""

from __future__ import annotations

import pytest
import triton
import triton.language as tl

from radscale.trainer.kernels import aot

MATRIX = aot.attention_matrix((80, 90))


def _id(item) -> str:
    launch, arch = item
    return f"sm_{arch}-" + launch.label.replace(" ", "-")


FP32_FWD = "sm_80-_attn_fwd-float32-d64-dense"


@pytest.fixture(scope="module")
def reports(request, tmp_path_factory) -> dict[str, aot.Report]:
    """The selected configurations (all of them in a full run; ``-k`` narrows it), compiled once."""
    wanted = {item.callspec.id for item in request.session.items
              if item.module is request.module and hasattr(item, "callspec")}
    if any(item.name == "test_fp32_attention_dots_are_ieee_not_tensor_cores" for item in request.session.items):
        wanted.add(FP32_FWD)
    selected = [item for item in MATRIX if _id(item) in wanted]
    cache = tmp_path_factory.mktemp("triton-cache")
    return {_id(item): r for item, r in zip(selected, aot.compile_all(selected, sass=False, cache_dir=str(cache)),
                                            strict=True)}


def test_the_matrix_is_every_launch_of_every_configuration():
    # 2 archs x 3 dtypes x 3 head dims x 2 layouts, 3 kernels each (forward, dK/dV, dQ)
    assert len(MATRIX) == 2 * 3 * 3 * 2 * 3
    assert len({_id(item) for item in MATRIX}) == len(MATRIX)


@pytest.mark.timeout(1800)  # the first one compiles them all: ~1-2 minutes, far more if many spill
@pytest.mark.parametrize("item", MATRIX, ids=[_id(i) for i in MATRIX])
def test_compiles_without_spills_within_shared_memory_on_tensor_cores(item, reports):
    launch, arch = item
    r = reports[_id(item)]
    assert aot.problems(r) == [], aot.table([r])
    # and the launch is the launcher's own choice for this architecture
    import torch

    from radscale.trainer.kernels import attention

    dtype_name, d, layout = launch.label.split()[1:]
    cfgs = attention.configs_for(getattr(torch, dtype_name), int(d[1:]), arch, layout == "packed")
    cfg = {"_attn_fwd": cfgs.fwd, "_attn_bwd_dkdv": cfgs.bwd_dkdv, "_attn_bwd_dq": cfgs.bwd_dq}[launch.kernel]
    assert {k: launch.kwargs[k] for k in cfg.launch_kwargs()} == cfg.launch_kwargs()


# ---- the checker fails where it must: toy kernels (compiled, never interpreted) ---------------------


@triton.jit
def _toy_dot(A, B, C, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr, UPCAST: tl.constexpr,
             SECOND: tl.constexpr):
    """C = A @ B for one (M, K) x (K, N) tile; UPCAST: fp32 IEEE dot (FMA) on bf16 inputs;
    SECOND: add a second, IEEE fp32, dot, so one dot of two falls back."""
    rm, rn, rk = tl.arange(0, M), tl.arange(0, N), tl.arange(0, K)
    a = tl.load(A + rm[:, None] * K + rk[None, :])
    b = tl.load(B + rk[:, None] * N + rn[None, :])
    if UPCAST:  # noqa: SIM108 (a plain if on a constexpr, as Triton's tutorials write it)
        c = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        c = tl.dot(a, b)
    if SECOND:
        c += tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    tl.store(C + rm[:, None] * N + rn[None, :], c)


@triton.jit
def _toy_matmul(A, B, C, K, M: tl.constexpr, N: tl.constexpr, BK: tl.constexpr):
    """A pipelined K loop: each stage buffers an (M, BK) and a (BK, N) tile in shared memory."""
    rm, rn, rk = tl.arange(0, M), tl.arange(0, N), tl.arange(0, BK)
    acc = tl.zeros([M, N], dtype=tl.float32)
    for k in range(0, K, BK):
        a = tl.load(A + rm[:, None] * K + (k + rk)[None, :])
        b = tl.load(B + (k + rk)[:, None] * N + rn[None, :])
        acc += tl.dot(a, b)
    tl.store(C + rm[:, None] * N + rn[None, :], acc)


def _toy(kernel: str, args: tuple, expect: str = "tensor-core", **kwargs) -> aot.Launch:
    return aot.Launch(kernel=kernel, module=__file__, args=args, kwargs=kwargs, expect=expect, label=kernel)


BF16 = (aot.Pointer("bfloat16"), aot.Pointer("bfloat16"), aot.Pointer("float32"))
TOYS = {
    # a small bf16 tile: fine
    "small": _toy("_toy_dot", BF16, M=64, N=64, K=64, UPCAST=False, SECOND=False, num_warps=4),
    # a 256 x 256 fp32 accumulator in one warpgroup: 512 values per thread, for at most 255 registers
    "spill": _toy("_toy_dot", BF16, M=256, N=256, K=64, UPCAST=False, SECOND=False, num_warps=4),
    # 4 stages of a (128 x 256) + (256 x 128) bf16 pair of tiles: 512 KiB of buffers
    "smem": _toy("_toy_matmul", (*BF16, 4096), M=128, N=128, BK=256, num_warps=8, num_stages=4),
    # bf16 loaded, then upcast for an IEEE fp32 dot: FMA
    "fma": _toy("_toy_dot", BF16, M=64, N=32, K=32, UPCAST=True, SECOND=False, num_warps=4),
    # one tensor-core dot and one FMA dot: the PTX has tensor-core instructions all the same
    "mixed": _toy("_toy_dot", BF16, M=64, N=32, K=32, UPCAST=False, SECOND=True, num_warps=4),
}


def _old_fp32_forward() -> aot.Launch:
    """The fp32 forward at the tiles the launcher used before this check: 128 x 64, 4 warps."""
    from radscale.trainer.kernels import attention

    old = attention.KernelConfig(BLOCK_M=128, BLOCK_N=64, num_warps=4, num_stages=3)
    return aot.attention_launches(90, "float32", 64, varlen=False,
                                  configs=attention.AttentionConfigs(old, old, old))[0]


@pytest.fixture(scope="module")
def toys(tmp_path_factory) -> dict[tuple[str, int], aot.Report]:
    items = {(name, arch): (launch, arch) for name, launch in TOYS.items() for arch in (80, 90)}
    items["old-fp32-fwd", 90] = (_old_fp32_forward(), 90)
    cache = tmp_path_factory.mktemp("triton-cache-toys")
    return dict(zip(items, aot.compile_all(items.values(), sass=True, cache_dir=str(cache)), strict=True))


def _found(toys, name: str, arch: int) -> list[str]:
    found = aot.problems(toys[name, arch])
    print(f"{name} sm_{arch}:", found)
    return found


@pytest.mark.parametrize("arch", [80, 90])
def test_a_small_tensor_core_tile_passes(arch, toys):
    r = toys["small", arch]
    assert _found(toys, "small", arch) == []
    assert r.dots == [aot.ARCHS[arch].tensor_core]
    assert r.sass["HGMMA" if arch == 90 else "HMMA"] > 0


@pytest.mark.parametrize("arch", [80, 90])
def test_a_spilling_config_fails(arch, toys):
    found = _found(toys, "spill", arch)
    assert len(found) == 1 and found[0].startswith("register spills:") and toys["spill", arch].spill_stores > 0


@pytest.mark.parametrize("arch", [80, 90])
def test_too_much_shared_memory_fails(arch, toys):
    r, limit = toys["smem", arch], aot.ARCHS[arch].smem_per_block
    assert _found(toys, "smem", arch) == [
        f"shared memory {r.shared + r.static_shared} B > {limit} B, the per-block limit of {aot.ARCHS[arch].name}"]


@pytest.mark.parametrize("arch", [80, 90])
def test_a_dot_that_falls_back_to_fma_fails(arch, toys):
    r, tc = toys["fma", arch], aot.ARCHS[arch].tensor_core
    assert r.dots == ["fma"] and r.sass["FFMA"] > 0
    assert _found(toys, "fma", arch) == [
        f"dot(s) [0] of 1 lowered to ['fma'], not {tc} (tensor cores) on {aot.ARCHS[arch].name}",
        f"no {'wgmma.mma_async' if arch == 90 else 'mma.sync'} in the PTX"]


@pytest.mark.parametrize("arch", [80, 90])
def test_one_fma_dot_among_tensor_core_dots_fails(arch, toys):
    r, tc = toys["mixed", arch], aot.ARCHS[arch].tensor_core
    assert r.dots == [tc, "fma"] and r.ptx["wgmma" if arch == 90 else "mma"] > 0
    assert _found(toys, "mixed", arch) == [
        f"dot(s) [1] of 2 lowered to ['fma'], not {tc} (tensor cores) on {aot.ARCHS[arch].name}"]


def test_the_checker_catches_the_real_kernel_at_its_old_fp32_tiles(toys):
    """Before this check the launcher ran fp32 forwards in 128 x 64 tiles: they spill (tens of KB)."""
    r = toys["old-fp32-fwd", 90]
    assert r.launch.kernel == "_attn_fwd" and r.spill_stores > 1000
    assert [p.split(":")[0] for p in _found(toys, "old-fp32-fwd", 90)] == ["register spills"]


@pytest.mark.timeout(1800)
def test_fp32_attention_dots_are_ieee_not_tensor_cores(reports):
    """Asked to use tensor cores, the fp32 forward's (IEEE) dots are reported as FMA."""
    r = reports[FP32_FWD]
    strict = aot.Report(**{**r.__dict__, "launch": aot.Launch(**{**r.launch.__dict__, "expect": "tensor-core"})})
    found = aot.problems(strict)
    print(found)
    assert r.dots == ["fma", "fma"] and found == [
        "dot(s) [0, 1] of 2 lowered to ['fma', 'fma'], not mma (tensor cores) on sm_80 (A100)",
        "no mma.sync in the PTX"]
