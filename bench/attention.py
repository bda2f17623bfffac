"""Attention throughput: radscale's Triton kernel against every SDPA backend, on our shapes.

    .venv/bin/python bench/attention.py            # on a GPU: the full table, < 3 minutes on an H100
    .venv/bin/python bench/attention.py --dry-run  # anywhere: tiny shapes in Triton's interpreter

TFLOP/s count 4*B*H*N^2*D for the forward and 2.5x that for the backward (fwd+bwd: 3.5x).
Cases: B*H = 64*12 at N = 257 (224-px global crop) and N = 1370 (518-px RAD-DINO), d = 64, bf16;
and DINOv2 multi-crop (64 images x (2x257 + 8x50 tokens)) packed into one launch against two SDPA
calls with the crops batched by size.
"""

from __future__ import annotations

import argparse
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="tiny shapes; runs on the CPU in the interpreter")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        print("no CUDA device: run with --dry-run (interpreter, tiny shapes) or on a GPU", file=sys.stderr)
        return 2
    device = "cuda" if cuda and not args.dry_run else "cpu"
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
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
