"""Attention throughput: radscale's Triton kernel against every SDPA backend, on our shapes.

    .venv/bin/python bench/attention.py            # on a GPU: the full table, < 3 minutes on an H100
    .venv/bin/python bench/attention.py --dry-run  # anywhere: tiny shapes in Triton's interpreter
    .venv/bin/python bench/attention.py --aot      # anywhere, no GPU: every config the launcher picks,
                                                   # compiled for sm_80 and sm_90, and its resources
    .venv/bin/python bench/attention.py --aot --candidates  # the tile search space, pruned by the same check
    .venv/bin/python bench/attention.py --sweep    # on a GPU: time each candidate tile (bf16, d = 64)
    .venv/bin/python bench/attention.py --vit-step # on a GPU: a ViT-B/14 518-px multi-crop training step

TFLOP/s count 4*B*H*N^2*D for the forward and 2.5x that for the backward (fwd+bwd: 3.5x).
Cases: B*H = 64*12 at N = 257 (224-px global crop) and N = 1370 (518-px RAD-DINO), d = 64, bf16;
and DINOv2 multi-crop (64 images x (2x257 + 8x50 tokens)) packed into one launch against two SDPA
calls with the crops batched by size.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

if not torch.cuda.is_available():  # must precede the kernels' import
    os.environ.setdefault("TRITON_INTERPRET", "1")

from torch.nn.attention import SDPBackend, sdpa_kernel

from radscale.trainer.kernels import attention
from radscale.trainer.kernels.attention import flash_attention

SDPA_BACKENDS = {
    "sdpa-flash": SDPBackend.FLASH_ATTENTION,
    "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
    "sdpa-cudnn": SDPBackend.CUDNN_ATTENTION,
    "sdpa-math": SDPBackend.MATH,
}


def timer(fn: Callable[[], object], reps: int) -> float:
    """Milliseconds per call."""
    if torch.cuda.is_available():
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=10, rep=max(reps, 25)))
    fn()
    start = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - start) * 1e3 / reps


def modes(run: Callable[[], torch.Tensor], inputs: list[torch.Tensor], reps: int) -> dict[str, float]:
    """ms for fwd, bwd (fwd+bwd minus fwd), and fwd+bwd."""
    def fwd() -> None:
        with torch.no_grad():
            run()

    def fwd_bwd() -> None:
        out = run()
        out.backward(grad_out[0])
        for t in inputs:
            t.grad = None

    grad_out = [torch.randn_like(run())]
    f = timer(fwd, reps)
    fb = timer(fwd_bwd, reps)
    return {"fwd": f, "bwd": max(fb - f, 1e-9), "fwd+bwd": fb}


def tflops(flops_fwd: float, ms: dict[str, float]) -> dict[str, float]:
    """TFLOP/s per mode, plus the fwd+bwd milliseconds."""
    scale = {"fwd": 1.0, "bwd": 2.5, "fwd+bwd": 3.5}
    out = {k: flops_fwd * scale[k] / (v * 1e-3) / 1e12 for k, v in ms.items()}
    out["ms"] = ms["fwd+bwd"]
    return out


def dense_case(b: int, h: int, n: int, d: int, dtype: torch.dtype, device: str, reps: int) -> dict[str, dict]:
    q, k, v = (torch.randn(b, h, n, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    flops = 4.0 * b * h * n * n * d
    rows: dict[str, dict] = {}
    rows["radscale-triton"] = tflops(flops, modes(lambda: flash_attention(q, k, v), [q, k, v], reps))
    for name, backend in SDPA_BACKENDS.items():
        def run(backend: SDPBackend = backend) -> torch.Tensor:
            with sdpa_kernel(backend):
                return torch.nn.functional.scaled_dot_product_attention(q, k, v)
        try:
            rows[name] = tflops(flops, modes(run, [q, k, v], reps))
        except RuntimeError as exc:  # backend not available for this device/dtype/shape
            rows[name] = {"error": str(exc).splitlines()[0][:80]}
    return rows


def multicrop_case(images: int, h: int, d: int, dtype: torch.dtype, device: str, reps: int,
                   globals_: tuple[int, int], locals_: tuple[int, int]) -> dict[str, dict]:
    (ng, tg), (nl, tl) = globals_, locals_
    lengths = [tg] * ng * images + [tl] * nl * images
    total = sum(lengths)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=device)
    q, k, v = (torch.randn(total, h, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    flops = 4.0 * h * d * sum(n * n for n in lengths)
    rows: dict[str, dict] = {}
    rows["radscale-triton packed"] = tflops(
        flops, modes(lambda: flash_attention(q, k, v, cu, max(lengths)), [q, k, v], reps))
    gq, gk, gv = (torch.randn(ng * images, h, tg, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    lq, lk, lv = (torch.randn(nl * images, h, tl, d, device=device, dtype=dtype, requires_grad=True) for _ in range(3))
    for name, backend in SDPA_BACKENDS.items():
        def run(backend: SDPBackend = backend) -> torch.Tensor:
            with sdpa_kernel(backend):
                a = torch.nn.functional.scaled_dot_product_attention(gq, gk, gv)
                b = torch.nn.functional.scaled_dot_product_attention(lq, lk, lv)
            return torch.cat([a.flatten(), b.flatten()])
        try:
            rows[f"{name} x2 calls"] = tflops(flops, modes(run, [gq, gk, gv, lq, lk, lv], reps))
        except RuntimeError as exc:
            rows[f"{name} x2 calls"] = {"error": str(exc).splitlines()[0][:80]}
    return rows


def print_table(title: str, rows: dict[str, dict]) -> None:
    print(f"\n{title}")
    print(f"{'kernel':<28}{'fwd':>10}{'bwd':>10}{'fwd+bwd':>10}  (TFLOP/s){'fwd+bwd ms':>12}")
    for name, r in rows.items():
        if "error" in r:
            print(f"{name:<28}  unavailable: {r['error']}")
        else:
            print(f"{name:<28}{r['fwd']:>10.3g}{r['bwd']:>10.3g}{r['fwd+bwd']:>10.3g}{'':>11}{r['ms']:>10.3f}")
    ours = next(r for n, r in rows.items() if n.startswith("radscale"))
    others = [r["fwd+bwd"] for n, r in rows.items() if not n.startswith("radscale") and "error" not in r]
    if others:
        print(f"{'speed-up vs best SDPA (fwd+bwd)':<38}{ours['fwd+bwd'] / max(others):>10.3g}x")


def aot_table(archs: list[int], candidates: bool, json_path: Path | None) -> int:
    """Compile ahead of time (no GPU) and print one row per configuration; 1 if any has a problem."""
    from radscale.trainer.kernels import aot

    start = time.perf_counter()
    if candidates:
        items = aot.candidate_matrix(archs)
        what = "candidate tile configs (attention.CANDIDATES), packed layout"
    else:
        items = aot.attention_matrix(archs)
        what = "configs the launcher picks (attention.configs_for)"
    reports = aot.compile_all(items)
    print(f"{len(reports)} {what}, compiled with triton {aot.triton.__version__} for "
          f"{', '.join(aot.ARCHS[a].name for a in archs)} in {time.perf_counter() - start:.0f} s\n")
    print(aot.pruning_table(reports) if candidates else aot.table(reports))
    if candidates:
        print("\n(registers per thread where the check passes; spill / smem / dots where it does not)")
    bad = [r for r in reports if aot.problems(r)]
    print(f"\n{len(reports) - len(bad)} of {len(reports)} pass (no spills, shared memory within the per-block "
          "limit, bf16/fp16 dots on tensor cores, fp32 dots IEEE)")
    if json_path:
        json_path.write_text(json.dumps([aot.report_dict(r) for r in reports], indent=1))
    return 1 if bad and not candidates else 0


def jit_resources() -> list[dict[str, object]]:
    """What the GPU's own JIT compiled for this run: registers, spills and shared memory per kernel."""
    rows = []
    for kernel in (attention._attn_fwd, attention._attn_bwd_dkdv, attention._attn_bwd_dq):
        for cache in kernel.device_caches.values():
            for compiled in cache[0].values():
                names = compiled.src.fn.arg_names
                const = {names[k[0]]: v for k, v in compiled.src.constants.items() if len(k) == 1}
                md = compiled.metadata
                rows.append({
                    "kernel": kernel.fn.__name__, "HEAD_DIM": const.get("HEAD_DIM"), "VARLEN": const.get("VARLEN"),
                    "IEEE": const.get("IEEE"), "BLOCK_M": const.get("BLOCK_M"), "BLOCK_N": const.get("BLOCK_N"),
                    "num_warps": md.num_warps, "num_stages": md.num_stages, "n_regs": compiled.n_regs,
                    "n_spills": compiled.n_spills, "shared": md.shared})
    return rows


def sweep(reps: int) -> dict[str, object]:
    """On a GPU: time every candidate tile config of each kernel at the bench shapes (bf16, d = 64),
    the other two kernels left at the launcher's choice. Forward candidates: forward time; dK/dV and
    dQ candidates: forward + backward time."""
    b, h, d, dtype = 64, 12, 64, torch.bfloat16
    arch = attention._arch(torch.empty(0, device="cuda"))
    chosen = attention.configs_for(dtype, d, arch, False)
    real = attention.configs_for
    out: dict[str, object] = {"arch": arch, "chosen": dataclasses.asdict(chosen)}
    cases = {}
    for n in (257, 1370):
        q, k, v = (torch.randn(b, h, n, d, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
        cases[f"dense N={n}"] = (lambda q=q, k=k, v=v: flash_attention(q, k, v), [q, k, v])
    lengths = [257] * 2 * 64 + [50] * 8 * 64
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    pq, pk, pv = (torch.randn(sum(lengths), h, d, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3))
    cases["packed multi-crop"] = (lambda: flash_attention(pq, pk, pv, cu, 257), [pq, pk, pv])
    print(f"\nsweep on sm_{arch}, bf16, d={d}, B*H={b}*{h}: ms per call (* = the launcher's choice)")
    try:
        for field in ("fwd", "bwd_dkdv", "bwd_dq"):
            for cfg in attention.CANDIDATES[field]:
                trial = dataclasses.replace(chosen, **{field: cfg})
                attention.configs_for = lambda *a, trial=trial: trial
                row = {}
                for name, (run, inputs) in cases.items():
                    try:
                        ms = modes(run, inputs, reps)
                        row[name] = ms["fwd"] if field == "fwd" else ms["fwd+bwd"]
                    except Exception as exc:  # e.g. triton's OutOfResources (shared memory)
                        row[name] = f"{type(exc).__name__}"
                mark = "*" if cfg == getattr(chosen, field) else " "
                cells = "  ".join(f"{k}: {v:8.3f}" if isinstance(v, float) else f"{k}: {v}" for k, v in row.items())
                tile = f"{cfg.BLOCK_M:>3}x{cfg.BLOCK_N:<3} w{cfg.num_warps} s{cfg.num_stages}"
                print(f"{mark} {field:<9} {tile}  {cells}", flush=True)
                out.setdefault(field, []).append({"config": dataclasses.asdict(cfg), **row})
    finally:
        attention.configs_for = real
    return out


def vit_step(images: int, steps: int, model: str = "vit_base_patch14_dinov2") -> dict[str, object]:
    """images/s/GPU of one pretraining step (forward, loss, backward, AdamW) on a DINOv2 multi-crop
    batch: per image 2 global crops at 518 px (1,370 tokens) and 8 local crops at 98 px (50 tokens),
    bf16 autocast. radscale: the encoder with our attention, every crop packed into one sequence
    (``forward_multicrop``); timm: the stock model (``fused_attn``: SDPA), one forward per crop size."""
    import timm

    from radscale.trainer.models.encoders import build_encoder

    g, loc = 518, 98
    gx = torch.randn(2 * images, 3, g, g, device="cuda")
    lx = torch.randn(8 * images, 3, loc, loc, device="cuda")
    out: dict[str, object] = {"model": model, "images": images, "crops": f"2x{g}px + 8x{loc}px", "steps": steps}

    def loss_of(feats) -> torch.Tensor:
        return sum(f.float().pow(2).mean() for f in feats)

    for name in ("radscale-triton packed", "timm-sdpa per crop size"):
        torch.manual_seed(0)
        if name.startswith("radscale"):
            enc = build_encoder(model, img_size=g, attention_backend="triton", autocast_bf16=True).cuda().train()

            def forward(enc=enc):
                return [t for f in enc.forward_multicrop([gx, lx]) for t in (f.cls, f.patches)]
        else:
            enc = timm.create_model(model, pretrained=False, num_classes=0, img_size=g,
                                    dynamic_img_size=True).cuda().train()

            def forward(enc=enc):
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return [enc.forward_features(gx), enc.forward_features(lx)]
        opt = torch.optim.AdamW(enc.parameters(), lr=1e-4)

        def step(forward=forward, opt=opt):
            loss = loss_of(forward())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        for _ in range(3):  # compile the kernels, warm the allocator
            step()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        ms = (time.perf_counter() - start) * 1e3 / steps
        out[name] = {"ms_per_step": ms, "images_per_s": images / (ms * 1e-3),
                     "peak_gib": torch.cuda.max_memory_allocated() / 2**30}
        print(f"{name:<28} {ms:9.1f} ms/step  {images / (ms * 1e-3):8.1f} images/s/GPU", flush=True)
        del enc, opt
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    ours, theirs = out["radscale-triton packed"], out["timm-sdpa per crop size"]
    out["speedup"] = ours["images_per_s"] / theirs["images_per_s"]
    print(f"{'speed-up vs timm SDPA':<28} {out['speedup']:9.3g}x")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes; runs on the CPU in the interpreter")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--aot", action="store_true",
                    help="no GPU needed: compile every config the launcher picks for --arch and print registers, "
                         "spills, shared memory, estimated occupancy and tensor-core instructions")
    ap.add_argument("--arch", default="80,90", help="with --aot: compute capabilities (default 80,90)")
    ap.add_argument("--candidates", action="store_true",
                    help="with --aot: compile the tile search space instead, and show what the check prunes")
    ap.add_argument("--sweep", action="store_true", help="on a GPU, after the table: time every candidate tile")
    ap.add_argument("--vit-step", action="store_true",
                    help="on a GPU, instead of the table: a ViT-B/14 518-px multi-crop training step, ours vs timm")
    ap.add_argument("--images", type=int, default=32, help="with --vit-step: images per step (default 32)")
    args = ap.parse_args()
    if args.aot:
        return aot_table([int(a) for a in args.arch.split(",")], args.candidates, args.json)
    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        print("no CUDA device: run with --dry-run (interpreter, tiny shapes) or on a GPU", file=sys.stderr)
        return 2
    device = "cuda" if cuda and not args.dry_run else "cpu"
    if args.vit_step:
        if device != "cuda":
            print("--vit-step needs a GPU", file=sys.stderr)
            return 2
        result = vit_step(args.images, steps=10)
        if args.json:
            args.json.write_text(json.dumps(result, indent=2))
        return 0
    if device == "cuda":
        dtype, reps, b, h, d, images = torch.bfloat16, 50, 64, 12, 64, 64
        ns, g, loc = (257, 1370), (2, 257), (8, 50)
    else:
        dtype, reps, b, h, d, images = torch.float32, 1, 1, 2, 64, 1
        ns, g, loc = (17, 50), (1, 17), (2, 5)
    device_name = torch.cuda.get_device_name() if device == "cuda" else "CPU (Triton interpreter)"
    print(f"device: {device_name}; torch {torch.__version__}; dtype {dtype}")
    results: dict[str, object] = {"device": device_name, "dtype": str(dtype)}
    for n in ns:
        rows = dense_case(b, h, n, d, dtype, device, reps)
        print_table(f"dense B={b} H={h} N={n} d={d}", rows)
        results[f"dense_N{n}"] = rows
    rows = multicrop_case(images, h, d, dtype, device, reps, g, loc)
    print_table(f"multi-crop: {images} images x ({g[0]}x{g[1]} + {loc[0]}x{loc[1]} tokens), H={h} d={d}", rows)
    results["multicrop"] = rows
    if device == "cuda":
        try:
            results["jit_resources"] = jit_resources()
        except Exception as exc:  # Triton internals differ between versions: report, don't fail the bench
            print(f"could not read the JIT's kernels: {exc!r}")
            results["jit_resources"] = []
        print("\nkernels the JIT compiled on this GPU (registers, spills, shared bytes):")
        for r in results["jit_resources"]:
            print(f"  {r['kernel']:<15} d={r['HEAD_DIM']} varlen={r['VARLEN']} ieee={r['IEEE']} "
                  f"{r['BLOCK_M']}x{r['BLOCK_N']} w{r['num_warps']} s{r['num_stages']}: "
                  f"{r['n_regs']} regs, {r['n_spills']} spills, {r['shared']} B shared")
        if args.sweep:
            results["sweep"] = sweep(reps)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
