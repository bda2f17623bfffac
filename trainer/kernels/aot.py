"""Ahead-of-time compilation and resource checks of Triton kernels, for GPUs this machine lacks.

Triton compiles for any NVIDIA target without a driver: ``triton.compile`` lowers a kernel to
TTIR, TTGIR, LLVM IR, PTX and (with the ``ptxas`` its wheel ships) a cubin. This module compiles a
kernel *exactly as the JIT would* for a given launch (the JIT's own binder turns the launch's
arguments into the signature and specialisation: ints equal to 1 become constexprs, pointers and
ints divisible by 16 get ``tt.divisibility``; without that, the resource figures are wrong), then
reads what the GPU would need:

- registers and local memory (spills) from ``cuobjdump --dump-resource-usage`` on the cubin
  (``REG``, ``STACK``: the stack frame, where spilled registers live, ``LOCAL``), and, when that
  shows any, the spill stores/loads from ``ptxas -v``;
- shared memory from the compiled kernel's metadata (what Triton's launcher requests);
- how each ``tl.dot`` lowered, from the TTGIR (``ttng.warp_group_dot``: wgmma; a ``tt.dot`` with an
  ``nvidia_mma`` result layout: ``mma.sync``; a ``blocked`` result layout: FMA), cross-checked
  against the PTX (``mma.sync``/``wgmma.mma_async``) and SASS (``HMMA``/``HGMMA``/``FFMA``);
- an occupancy estimate (resident warps per SM out of 64).

:func:`problems` turns a :class:`Report` into the list of what is wrong with it (empty: fine).
The module is torch-free except :func:`attention_launches` and :func:`candidate_matrix`, which
ask the attention launcher (``kernels/attention.py``) what it would launch. Written against triton 3.7.1 (the pinned
version): the binder and ``_pack_args`` are Triton internals.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pickle
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import triton
import triton.language as tl
from triton import knobs
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from triton.compiler.compiler import make_backend
from triton.runtime.jit import JITFunction, create_function_from_signature

BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"


@dataclasses.dataclass(frozen=True)
class Arch:
    """Per-SM limits of one compute capability.

    Shared memory: the CUDA C++ Programming Guide's "Technical Specifications per Compute
    Capability" table and the Ampere/Hopper tuning guides: an A100 (8.0) SM has up to 164 KB of
    shared memory and one block may opt in to 163 KB (166,912 bytes); an H100/H200 (9.0) SM has up
    to 228 KB, one block 227 KB (232,448 bytes); CUDA reserves 1 KB per resident block on top.
    These per-block figures are ``cudaDevAttrMaxSharedMemoryPerBlockOptin``, the limit Triton's
    launcher checks ``metadata.shared`` against (``OutOfResources`` otherwise). Both have 64K
    32-bit registers per SM, at most 255 per thread, 64 resident warps and 32 resident blocks.
    """

    capability: int
    name: str
    smem_per_block: int
    smem_per_sm: int
    tensor_core: str  # the instruction bf16/fp16 dots must use: "mma" (mma.sync) or "wgmma"
    regs_per_sm: int = 65536
    max_warps_per_sm: int = 64
    max_blocks_per_sm: int = 32
    reserved_smem_per_block: int = 1024


ARCHS: dict[int, Arch] = {
    80: Arch(80, "sm_80 (A100)", smem_per_block=163 * 1024, smem_per_sm=164 * 1024, tensor_core="mma"),
    90: Arch(90, "sm_90 (H100/H200)", smem_per_block=227 * 1024, smem_per_sm=228 * 1024, tensor_core="wgmma"),
}


@dataclasses.dataclass(frozen=True)
class Pointer:
    """Stands in for a tensor argument: what the JIT's specialisation reads (dtype, alignment)."""

    dtype_name: str  # a triton.language dtype name: "bfloat16", "float16", "float32", "int32"
    aligned: bool = True  # data_ptr % 16 == 0 (every fresh CUDA allocation is 256-byte aligned)

    @property
    def dtype(self) -> tl.dtype:
        return getattr(tl, self.dtype_name)

    def data_ptr(self) -> int:
        return 1 << 20 if self.aligned else (1 << 20) + 4


@dataclasses.dataclass(frozen=True)
class Launch:
    """One kernel launch as the launcher would make it: the kernel, its arguments, the options."""

    kernel: str  # the @triton.jit function's name
    module: str  # the file that defines it
    args: tuple
    kwargs: Mapping[str, Any]  # constexprs plus num_warps / num_stages
    expect: str = "tensor-core"  # how its dots must lower: "tensor-core" or "fma" (IEEE fp32 dots)
    label: str = ""

    @property
    def num_warps(self) -> int:
        return int(self.kwargs.get("num_warps", 4))

    @property
    def num_stages(self) -> int:
        return int(self.kwargs.get("num_stages", 3))


@dataclasses.dataclass
class Report:
    launch: Launch
    arch: int
    registers: int = 0
    stack: int = 0  # stack frame bytes per thread (spilled registers)
    local: int = 0  # declared local memory bytes per thread
    spill_stores: int = 0  # from ptxas -v, only read when stack/local show anything
    spill_loads: int = 0
    shared: int = 0  # dynamic shared memory per block (metadata.shared)
    static_shared: int = 0
    dots: list[str] = dataclasses.field(default_factory=list)  # "wgmma" | "mma" | "fma" per tl.dot
    ptx: dict[str, int] = dataclasses.field(default_factory=dict)  # instruction counts
    sass: dict[str, int] = dataclasses.field(default_factory=dict)
    compile_s: float = 0.0
    error: str = ""

    @property
    def spilled(self) -> bool:
        return self.stack > 0 or self.local > 0 or self.spill_stores > 0 or self.spill_loads > 0

    def blocks_per_sm(self) -> int:
        """Resident blocks per SM, from registers, shared memory, warps and the block cap."""
        a = ARCHS[self.arch]
        warps = self.launch.num_warps
        # registers are allocated per warp in units of 256 (8 per thread)
        regs_per_warp = -(-max(self.registers, 1) * 32 // 256) * 256
        by_regs = (a.regs_per_sm // regs_per_warp) // warps
        smem = self.shared + self.static_shared + a.reserved_smem_per_block
        by_smem = a.smem_per_sm // smem
        by_warps = a.max_warps_per_sm // warps
        return max(0, min(by_regs, by_smem, by_warps, a.max_blocks_per_sm))

    def occupancy(self) -> float:
        """Resident warps per SM as a share of the 64 possible."""
        return self.blocks_per_sm() * self.launch.num_warps / ARCHS[self.arch].max_warps_per_sm

    def tensor_core_instructions(self) -> str:
        """PTX counts, with SASS counts when read: ``wgmma x16 (HGMMA x16)``, ``none (FFMA x8208)``."""
        def sass(op: str) -> str:
            return f" ({op} x{self.sass[op]})" if self.sass else ""
        if self.ptx.get("wgmma"):
            extra = f" + mma.sync x{self.ptx['mma']}" if self.ptx.get("mma") else ""
            return f"wgmma x{self.ptx['wgmma']}{sass('HGMMA')}{extra}"
        if self.ptx.get("mma"):
            return f"mma.sync x{self.ptx['mma']}{sass('HMMA')}"
        return f"none{sass('FFMA')}"


def problems(r: Report) -> list[str]:
    """What would go wrong on the GPU (empty: nothing): failed compile, spills, too much shared
    memory, no resident block, or dots that did not lower as ``r.launch.expect`` says."""
    a = ARCHS[r.arch]
    if r.error:
        return [f"does not compile: {r.error}"]
    out = []
    if r.spilled:
        out.append(f"register spills: {r.spill_stores} B spill stores, {r.spill_loads} B spill loads "
                   f"({r.stack} B stack frame, {r.local} B local) at {r.registers} registers")
    if r.shared + r.static_shared > a.smem_per_block:
        out.append(f"shared memory {r.shared + r.static_shared} B > {a.smem_per_block} B, "
                   f"the per-block limit of {a.name}")
    elif r.blocks_per_sm() == 0:
        out.append("no block fits on an SM")
    if not r.dots:
        out.append("no tl.dot found in the TTGIR")
    if r.launch.expect == "tensor-core":
        want = a.tensor_core
        bad = [i for i, kind in enumerate(r.dots) if kind != want]
        if bad:
            out.append(f"dot(s) {bad} of {len(r.dots)} lowered to {[r.dots[i] for i in bad]}, not {want} "
                       f"(tensor cores) on {a.name}")
        ptx_key = "wgmma" if want == "wgmma" else "mma"
        if not r.ptx.get(ptx_key):
            out.append(f"no {'wgmma.mma_async' if want == 'wgmma' else 'mma.sync'} in the PTX")
    elif r.launch.expect == "fma":
        tc = [i for i, kind in enumerate(r.dots) if kind != "fma"]
        if tc or r.ptx.get("mma") or r.ptx.get("wgmma"):
            out.append(f"dot(s) {tc} use tensor cores (TF32), but this launch asks for IEEE fp32 dots")
    return out


# ---- compiling ------------------------------------------------------------------------------------


def load_jit_module(path: str | os.PathLike, name: str | None = None):
    """A private copy of the module at ``path`` with its ``@triton.jit`` functions compiled, not
    interpreted: under ``TRITON_INTERPRET=1`` (the CPU test suite) the imported kernels are
    interpreter objects that cannot be lowered."""
    path = Path(path)
    name = name or f"_radscale_aot_{path.stem}"
    with knobs.runtime.scope():
        knobs.runtime.interpret = False
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod  # dataclasses look their module up while it executes
        try:
            spec.loader.exec_module(mod)
        except BaseException:
            del sys.modules[name]
            raise
    return mod


_MODULES: dict[str, Any] = {}


def _kernel(launch: Launch) -> JITFunction:
    mod = _MODULES.get(launch.module)
    if mod is None:
        mod = _MODULES[launch.module] = load_jit_module(launch.module)
    fn = getattr(mod, launch.kernel)
    if not isinstance(fn, JITFunction):
        raise TypeError(f"{launch.kernel} in {launch.module} is not a @triton.jit kernel: {type(fn)}")
    return fn


def _tool(name: str, *args: str) -> str:
    return subprocess.run([str(BIN / name), *args], capture_output=True, text=True, check=True).stdout


_DOT = re.compile(r"=\s*(tt\.dot|ttng\.warp_group_dot)\s.*->\s*tensor<[^,>]*,\s*#([\w.]+)>")
_LAYOUT = re.compile(r"^#([\w.]+)\s*=\s*#ttg\.(\w+)<", re.M)


def dot_lowering(ttgir: str) -> list[str]:
    """How each dot in a TTGIR module lowered: "wgmma", "mma" (mma.sync) or "fma"."""
    layouts = dict(_LAYOUT.findall(ttgir))
    out = []
    for op, enc in _DOT.findall(ttgir):
        if op == "ttng.warp_group_dot":
            out.append("wgmma")
        elif layouts.get(enc) == "nvidia_mma":
            out.append("mma")
        else:
            out.append("fma")
    return out


def _count(pattern: str, text: str) -> int:
    return len(re.findall(pattern, text))


def inspect_cubin(cubin: bytes, ptx_src: str, arch: int, r: Report, sass: bool = True) -> None:
    with tempfile.TemporaryDirectory(prefix="radscale-aot-") as tmp:
        path = Path(tmp) / "k.cubin"
        path.write_bytes(cubin)
        usage = _tool("cuobjdump", "--dump-resource-usage", str(path))
        fields = dict(re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", usage.split("Function", 1)[-1]))
        r.registers, r.stack = int(fields.get("REG", 0)), int(fields.get("STACK", 0))
        r.static_shared, r.local = int(fields.get("SHARED", 0)), int(fields.get("LOCAL", 0))
        if sass:
            text = _tool("cuobjdump", "-sass", str(path))
            r.sass = {op: _count(rf"\b{op}\b", text) for op in ("HMMA", "HGMMA", "FFMA")}
        if r.stack or r.local:  # how much spills: ask ptxas itself (costs a second ptxas run)
            src = Path(tmp) / "k.ptx"
            src.write_text(ptx_src)
            gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
            log = subprocess.run([str(BIN / "ptxas"), "-v", "--regAllocOptLevel=2", f"--gpu-name={gpu}",
                                  str(src), "-o", str(Path(tmp) / "k.o")], capture_output=True, text=True).stderr
            m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
            if m:
                r.spill_stores, r.spill_loads = int(m[1]), int(m[2])


def compile_launch(launch: Launch, arch: int, sass: bool = True) -> Report:
    """Compile one launch for ``sm_{arch}`` as Triton's JIT would, and read its resources."""
    r = Report(launch=launch, arch=arch)
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    start = time.perf_counter()
    try:
        kernel = _kernel(launch)
        binder = create_function_from_signature(kernel.signature, kernel.params, backend)
        kwargs = dict(launch.kwargs)
        bound, specialization, options = binder(*launch.args, **kwargs)
        options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization, options)
        compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target,
                                  options=options.__dict__)
    except Exception as exc:  # a config that does not compile is a finding, not a crash
        r.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"
        r.compile_s = time.perf_counter() - start
        return r
    r.compile_s = time.perf_counter() - start
    r.shared = int(compiled.metadata.shared)
    r.dots = dot_lowering(compiled.asm["ttgir"])
    ptx = compiled.asm["ptx"]
    r.ptx = {"mma": _count(r"\bmma\.sync\.aligned", ptx), "wgmma": _count(r"\bwgmma\.mma_async", ptx)}
    inspect_cubin(compiled.asm["cubin"], ptx, arch, r, sass=sass)
    return r


def _interpreted() -> bool:
    """Was triton imported under ``TRITON_INTERPRET=1``? Then ``triton.language``'s own jit helpers
    (``tl.zeros``, ``tl.sum``...) are interpreter objects, and calling one while compiling patches
    ``triton.language`` for the interpreter for good: such a process cannot compile."""
    return not isinstance(tl.zeros, JITFunction)


def compile_all(launches: Iterable[tuple[Launch, int]], workers: int | None = None, sass: bool = True,
                cache_dir: str | None = None) -> list[Report]:
    """Compile many (launch, arch) pairs; threads overlap the ptxas/cuobjdump subprocesses.

    Nothing is reused from an earlier run: Triton's cache goes to a fresh temporary folder (or
    ``cache_dir``) and ``always_compile`` is on. A process running Triton's interpreter (the CPU
    test suite, ``bench/attention.py`` without a GPU) compiles in a child process without it."""
    items = list(launches)
    workers = workers or min(4, os.cpu_count() or 1)
    if _interpreted():
        return _compile_in_child(items, workers, sass, cache_dir)
    with tempfile.TemporaryDirectory(prefix="radscale-aot-cache-") as tmp, knobs.cache.scope(), \
            knobs.compilation.scope():
        knobs.cache.dir = cache_dir or tmp
        knobs.compilation.always_compile = True
        for launch, _ in items:  # load the modules once, before the threads
            _kernel(launch)
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(lambda item: compile_launch(item[0], item[1], sass=sass), items))


def _compile_in_child(items: list, workers: int, sass: bool, cache_dir: str | None) -> list[Report]:
    with tempfile.TemporaryDirectory(prefix="radscale-aot-") as tmp:
        job, out = Path(tmp) / "job.pickle", Path(tmp) / "reports.pickle"
        job.write_bytes(pickle.dumps((items, workers, sass, cache_dir)))
        code = "import sys; from radscale.trainer.kernels import aot; aot._child(sys.argv[1], sys.argv[2])"
        env = {**os.environ, "TRITON_INTERPRET": "0", **({"TRITON_CACHE_DIR": cache_dir} if cache_dir else {})}
        proc = subprocess.run([sys.executable, "-c", code, str(job), str(out)], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"ahead-of-time compile failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        return pickle.loads(out.read_bytes())


def _child(job: str, out: str) -> None:
    items, workers, sass, cache_dir = pickle.loads(Path(job).read_bytes())
    reports = compile_all(items, workers=workers, sass=sass, cache_dir=cache_dir)
    Path(out).write_bytes(pickle.dumps(reports))


# ---- the attention kernels --------------------------------------------------------------------------


def _as_arg(a: Any) -> Any:
    if hasattr(a, "data_ptr") and hasattr(a, "dtype"):  # a tensor
        return Pointer(str(a.dtype).removeprefix("torch."), aligned=a.data_ptr() % 16 == 0)
    return a


def attention_launches(arch: int, dtype_name: str, head_dim: int, varlen: bool,
                       heads: int = 12, seqlen: int = 257, configs: Any = None) -> list[Launch]:
    """The launches one forward + backward of the attention kernel makes on ``sm_{arch}``.

    Runs the launcher itself (``_forward``/``_backward``) on meta tensors with a recording launch
    function, so the kernels, block sizes, warps, stages and argument specialisation are the
    launcher's own. Dense: contiguous (B, H, N, D), N = ``seqlen`` (257: 256 patches + CLS, not a
    multiple of 16, as every ViT length with a CLS token); packed: a DINOv2 multi-crop image
    (2 x 257 + 8 x 50 tokens) as (T, H, D) with ``cu_seqlens``. ``configs`` (an
    ``attention.AttentionConfigs``) replaces the launcher's tiles, to try candidates.
    """
    import torch

    from radscale.trainer.kernels import attention

    dtype = getattr(torch, dtype_name)
    meta = dict(device="meta", dtype=dtype)
    if varlen:
        lengths = [seqlen] * 2 + [50] * 8
        q, k, v, do = (torch.empty(sum(lengths), heads, head_dim, **meta) for _ in range(4))
        cu = torch.empty(len(lengths) + 1, device="meta", dtype=torch.int32)
        max_seqlen = max(lengths)
    else:
        q, k, v, do = (torch.empty(2, heads, seqlen, head_dim, **meta) for _ in range(4))
        cu, max_seqlen = None, None
    recorded: list[tuple] = []

    def record(kernel, grid, args, kwargs):
        recorded.append((kernel.fn.__name__, args, kwargs))

    scale = head_dim ** -0.5
    real = attention.configs_for
    if configs is not None:
        attention.configs_for = lambda *a, **k: configs
    try:
        o, lse = attention._forward(q, k, v, cu, max_seqlen, scale, arch=arch, launch=record)
        attention._backward(do, q, k, v, o, lse, cu, max_seqlen, scale, arch=arch, launch=record)
    finally:
        attention.configs_for = real
    expect = "fma" if dtype == torch.float32 else "tensor-core"
    layout = "packed" if varlen else "dense"
    return [Launch(kernel=name, module=attention.__file__, args=tuple(_as_arg(a) for a in args),
                   kwargs=dict(kwargs), expect=expect, label=f"{name} {dtype_name} d{head_dim} {layout}")
            for name, args, kwargs in recorded]


ATTENTION_DTYPES = ("float16", "bfloat16", "float32")
ATTENTION_HEAD_DIMS = (32, 64, 128)


def attention_matrix(archs: Iterable[int] = (80, 90)) -> list[tuple[Launch, int]]:
    """Every (launch, arch) the attention launcher can make: dtypes x head dims x dense/packed."""
    out = []
    for arch in archs:
        for dtype_name in ATTENTION_DTYPES:
            for d in ATTENTION_HEAD_DIMS:
                for varlen in (False, True):
                    out += [(launch, arch) for launch in attention_launches(arch, dtype_name, d, varlen)]
    return out


KERNEL_FIELDS = {"_attn_fwd": "fwd", "_attn_bwd_dkdv": "bwd_dkdv", "_attn_bwd_dq": "bwd_dq"}


def candidate_matrix(archs: Iterable[int] = (80, 90), head_dims: Iterable[int] = ATTENTION_HEAD_DIMS,
                     varlen: bool = True) -> list[tuple[Launch, int]]:
    """Every candidate tile of ``attention.CANDIDATES`` (bf16) and ``FP32_CANDIDATES`` (fp32), per
    kernel, head dim and arch; packed layout by default (it needs the most registers)."""
    import dataclasses as dc

    import torch

    from radscale.trainer.kernels import attention

    out = []
    for arch in archs:
        for dtype_name, space in (("bfloat16", attention.CANDIDATES), ("float32", attention.FP32_CANDIDATES)):
            for d in head_dims:
                for field, cfgs in space.items():
                    for cfg in cfgs:
                        trial = dc.replace(attention.configs_for(getattr(torch, dtype_name), d, arch, varlen),
                                           **{field: cfg})
                        out += [(launch, arch) for launch in attention_launches(arch, dtype_name, d, varlen,
                                                                                configs=trial)
                                if KERNEL_FIELDS[launch.kernel] == field]
    return out


def report_dict(r: Report) -> dict[str, Any]:
    """A JSON-ready row."""
    return {"arch": r.arch, "label": r.launch.label, "kernel": r.launch.kernel,
            **{k: v for k, v in r.launch.kwargs.items()}, "registers": r.registers, "stack": r.stack,
            "local": r.local, "spill_stores": r.spill_stores, "spill_loads": r.spill_loads, "shared": r.shared,
            "static_shared": r.static_shared, "blocks_per_sm": r.blocks_per_sm(), "occupancy": r.occupancy(),
            "dots": r.dots, "ptx": r.ptx, "sass": r.sass, "compile_s": round(r.compile_s, 2),
            "problems": problems(r)}


def table(reports: Iterable[Report]) -> str:
    """A Markdown table: one row per compiled configuration."""
    head = ("| arch | kernel | dtype | d | layout | BLOCK_MxN | warps | stages | regs | spills (B) | "
            "shared (KiB) | occupancy | dots | tensor-core instructions | ok |")
    rows = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in reports:
        kw = r.launch.kwargs
        name, dtype_name, d, layout = [*r.launch.label.split(), "", "", "", ""][:4]
        bad = problems(r)
        spills = f"{r.spill_stores}/{r.spill_loads}" if r.spilled else "0"
        rows.append(
            f"| sm_{r.arch} | {name.removeprefix('_attn_')} | {dtype_name} | {d.removeprefix('d')} | {layout} | "
            f"{kw.get('BLOCK_M')}x{kw.get('BLOCK_N')} | {r.launch.num_warps} | {r.launch.num_stages} | "
            f"{r.registers} | {spills} | {(r.shared + r.static_shared) / 1024:.0f} | "
            f"{r.occupancy():.0%} ({r.blocks_per_sm()} blk) | {'/'.join(r.dots)} | "
            f"{r.tensor_core_instructions()} | {'yes' if not bad else 'NO: ' + '; '.join(bad)} |")
    return "\n".join(rows)


def pruning_table(reports: Iterable[Report]) -> str:
    """Candidates as rows, (arch, head dim) as columns: registers where the check passes, else why not."""
    cells: dict[tuple, dict] = {}
    cols: list[tuple[int, str]] = []
    for r in reports:
        name, dtype_name, d = r.launch.label.split()[:3]
        kw = r.launch.kwargs
        row = (dtype_name, name.removeprefix("_attn_"),
               f"{kw['BLOCK_M']}x{kw['BLOCK_N']} w{r.launch.num_warps} s{r.launch.num_stages}")
        bad = problems(r)
        cell = (str(r.registers) if not bad else "spill" if r.spilled else
                "smem" if bad[0].startswith("shared") else "dots" if "lowered" in bad[0] else "error")
        cells.setdefault(row, {})[r.arch, d] = cell
        if (r.arch, d) not in cols:
            cols.append((r.arch, d))
    cols.sort(key=lambda c: (c[0], int(c[1][1:])))
    out = ["| dtype | kernel | BLOCK_MxN warps stages | " + " | ".join(f"sm_{a} {d}" for a, d in cols) + " |",
           "|---|---|---|" + "---|" * len(cols)]
    out += [f"| {dt} | {k} | {cfg} | " + " | ".join(v.get(c, "") for c in cols) + " |"
            for (dt, k, cfg), v in cells.items()]
    return "\n".join(out)


if __name__ == "__main__":  # python -m radscale.trainer.kernels.aot: the attention table
    reports = compile_all(attention_matrix())
    print(table(reports))
    sys.exit(1 if any(problems(r) for r in reports) else 0)
