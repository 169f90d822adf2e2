"""Compile every kernel configuration the dispatcher can pick for sm_80 / sm_90, without a GPU.

    python kernels/compile_check.py [--arch 80 90] [--json out.json]

For each (config, dtype) of ``config.all_configs()`` and each kernel that configuration
launches, ``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`` builds the
PTX/cubin; ``metadata.shared`` is the static shared memory per program, and ``ptxas -v`` on
the PTX gives registers per thread and spill bytes. Must run WITHOUT ``TRITON_INTERPRET=1``
(the interpreter replaces the kernels), so tests run it in a subprocess.

Limits checked: shared memory <= 227 KB (sm_90) / 163 KB (sm_80) per program; no register
spills at all where d and B fill the tiles (d a power of two >= 16, B a multiple of 16: every
point of the benchmark grid). The masked variants (any other d or B) carry column / row masks
for the per-step loads and stores of xp, h, hs and the saved gates; at d_pad = 64..256 they
need a few registers more than the 255 a thread has, and ptxas spills up to ~310 bytes per
thread (fp32 at d_pad = 256; to L1, a few accesses per time step). That is tolerated up to
MASKED_SPILL_LIMIT and reported in the table. The inference forward (no saved gates: a separate
compiled variant; checked in float32 and bfloat16 with full tiles) spills a few bytes where the
training one does not (fp32 at d_pad = 64 and 256 on sm_90: 12 and 8 bytes), tolerated up to
INFERENCE_SPILL_LIMIT. The option variants (relu, attention with k = 4, dropout, time decay, all
three, all four, all but attention; ``option_variants``: a representative subset of the variants the
dispatcher runs, with full tiles) are held to the same limits, "fused" and "fused_no_attention" (the mask
hashed from its seed, time decay from rates, the integration inputs: the options formed in the step)
with the configuration the launcher gives them (``config.for_in_step``; the row's ``run_as``). Run it with the Triton a GPU machine
will have (PyTorch's CUDA wheels pin one: 3.6 for torch 2.10-2.13), e.g. from a private copy:
``pip install --target /tmp/triton36 triton==3.6.0 --no-deps`` and ``PYTHONPATH=/tmp/triton36``;
bench/results/triton-compile-3.6.txt is that report.
Approximate instructions: only ``ex2.approx.f32``
and ``div.full.f32`` (what ``tl.exp`` and fp32 ``/`` compile to; ``kernels/_math.py``), the two
that tests/providers/ptx_math.py emulates at their documented 2-ulp bound.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

SHARED_LIMIT = {80: 163 * 1024, 90: 227 * 1024}
#: The approximate PTX instructions the kernels may hold (their error bounds are emulated on CPU).
EMULATED_APPROX = ("div.full.f32", "ex2.approx.f32")
_APPROX_RE = re.compile(r"^\s*(?:@!?%p\d+\s+)?([a-z][a-z0-9]*(?:\.[a-z0-9]+)*\.(?:approx|full)(?:\.[a-z0-9]+)*)\s",
                        re.M)

# Pointer arguments in the accumulation dtype; "len_ptr" is int64; every other pointer has
# the input dtype.
_ACC_POINTERS = {"saved_ptr", "gates_ptr", "h32_ptr", "dh32_ptr", "d_p_ptr", "d_zp_ptr", "d_yp_ptr",
                 "saved_t_ptr", "d_p_t_ptr", "d_zp_t_ptr", "d_yp_t_ptr", "d_yp_prev_ptr",
                 "mask_ptr", "mask_t_ptr", "v_ptr", "decay_ptr", "decay_t_ptr", "decay_next_ptr",
                 "dt_ptr", "dt_t_ptr", "dt_next_ptr", "hd_ptr", "hd_t_ptr", "d_rate_ptr", "d_dt_ptr", "d_dt_t_ptr",
                 "o_ptr", "o_t_ptr"}
#: int32 pointers (compartment_of)
_I32_POINTERS = {"comp_ptr"}

_OFF = dict(RELU=False, NK=0, K_PAD=16, HAS_MASK=False, HAS_DECAY=False, MASK_HASH=False, DECAY_RATE=False,
            WANT_O=False)
#: The in-step forms (the mask from its seed, the decay from rates and gaps, the backward's extended outputs).
_IN_STEP = dict(MASK_HASH=True, DECAY_RATE=True, WANT_O=True)
#: The option variants (kernels/forward.py "Options"): constexpr flags per name; attention with k = 4.
#: "all" is relu + attention + dropout; "all_decay" adds time decay to them (mask and decay as [T, B, d]
#: tensors: the custom ops' path); "fused" is "all_decay" with the mask hashed from its seed and the decay
#: formed from rates and gaps in the step (the eager path, diru_fast.scan.ops.StepOptionsScan).
OPTION_FLAGS = {
    "none": dict(_OFF),
    "relu": dict(_OFF, RELU=True),
    "attention": dict(_OFF, NK=4),
    "dropout": dict(_OFF, HAS_MASK=True),
    "decay": dict(_OFF, HAS_DECAY=True),
    "all": dict(_OFF, RELU=True, NK=4, HAS_MASK=True),
    "all_decay": dict(_OFF, RELU=True, NK=4, HAS_MASK=True, HAS_DECAY=True),
    # more than 8 compartments: the streamed regime's attention products become matrix products
    # relu + dropout + decay: every option but attention (what streamed d_pad 256 runs with options)
    "no_attention": dict(_OFF, RELU=True, HAS_MASK=True, HAS_DECAY=True),
    "attention18": dict(_OFF, NK=18, K_PAD=32),
    "all18": dict(_OFF, RELU=True, NK=18, K_PAD=32, HAS_MASK=True),
    "fused": dict(_OFF, RELU=True, NK=4, HAS_MASK=True, HAS_DECAY=True, **_IN_STEP),
    "fused_no_attention": dict(_OFF, RELU=True, HAS_MASK=True, HAS_DECAY=True, **_IN_STEP),
}


def _dispatched(cfg, dtype: str, flags: Dict) -> bool:
    """Whether ``config.choose`` gives ``cfg`` to a call with the option ``flags`` (some option
    variants run the per-step kernels instead: config.STREAMED_ATTENTION_MAX_D / _MAX_K, _CROWDED_MAX_D)."""
    import importlib

    config = importlib.import_module("diru_fast.kernels.config")  # pure Python: no compiler needed
    d = 2 * config.STREAMED_MAX_D if cfg.mode == "step" else cfg.d_pad
    return config.choose(d, dtype, flags["NK"], flags["HAS_MASK"] and flags["HAS_DECAY"], _in_step(flags)) == cfg


def _in_step(flags: Dict) -> bool:
    """Whether a variant forms an option in the step (launch._Options.in_step)."""
    return flags["MASK_HASH"] or flags["DECAY_RATE"]


def effective_config(cfg, dtype: str, options: str):
    """The configuration the launcher runs variant ``options`` of ``cfg`` with (``config.for_in_step``:
    the resident kernels with options formed in the step get the whole register file, some 8 warps)."""
    import importlib

    config = importlib.import_module("diru_fast.kernels.config")
    flags = OPTION_FLAGS[options]
    return config.for_in_step(cfg, dtype, flags["NK"]) if _in_step(flags) else cfg


def option_variants(cfg, dtype: str, every: bool = False) -> tuple:
    """The option variants compiled for (cfg, dtype) besides "none", only those the dispatcher runs
    with ``cfg`` (attention at streamed d_pad 256, more than 8 compartments at d_pad >= 128, and
    dropout with time decay at fp32 d_pad 256 run the per-step kernels). ``every``: all of them, k = 4 and k = 18 (``--all-options``: about six
    times the plain check's time, not run in CI). Otherwise a representative subset (about the plain
    check's time, run by the test suite): each option alone and all but attention at streamed d_pad =
    256 in fp32 (the tightest register budget); every option with and without time decay at resident
    d_pad = 64, streamed d_pad = 128 and per step in bf16, all but attention at streamed d_pad 256 in
    bf16 (the most work per regime)."""
    names = [name for name in OPTION_FLAGS if name != "none" and _dispatched(cfg, dtype, OPTION_FLAGS[name])]
    if every:
        return tuple(names)
    if cfg.mode == "streamed" and cfg.d_pad == 256 and dtype == "float32":
        wanted = ("relu", "attention", "dropout", "decay", "no_attention", "fused_no_attention")
    elif dtype == "bfloat16" and ((cfg.mode == "resident" and cfg.d_pad == 64) or cfg.d_pad in (128, 256)
                                  or cfg.mode == "step"):
        wanted = (("all", "all_decay", "fused", "no_attention", "fused_no_attention") if cfg.d_pad == 256
                  else ("all", "all_decay", "fused"))
    else:
        wanted = ()
    return tuple(name for name in wanted if name in names)


_PTR_TYPES = {"float32": "*fp32", "bfloat16": "*bf16", "float16": "*fp16", "float64": "*fp64"}


def _kernels():
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("compile_check needs the compiler: run it without TRITON_INTERPRET=1")
    import importlib

    return importlib.import_module("diru_fast.kernels")


def kernel_specs(cfg, dtype: str, even_d: bool = True, options: str = "none") -> List[tuple]:
    """(name, jit function, constexprs) for every kernel ``cfg`` launches (the variants with
    the most work: lengths on, saved gates written); ``even_d``: B and d fill the tiles
    (no masks) or not; ``options``: a key of OPTION_FLAGS."""
    import triton.language as tl

    k = _kernels()
    tl_dt = {"float32": tl.float32, "bfloat16": tl.bfloat16, "float16": tl.float16, "float64": tl.float64}[dtype]
    acc = tl.float64 if dtype == "float64" else tl.float32
    meta = dict(IN_DT=tl_dt, OP_DT=tl_dt, ACC_DT=acc, PRECISION=k.config.dot_precision(dtype),
                HAS_LENGTHS=True, EVEN_B=even_d, EVEN_D=even_d)
    flags = OPTION_FLAGS[options]
    pick = lambda *names: {name: flags[name] for name in names}  # noqa: E731
    nk = pick("NK")
    decay = pick("HAS_DECAY", "DECAY_RATE")
    gates = pick("RELU", "NK", "K_PAD", "HAS_MASK", "MASK_HASH")
    if cfg.persistent:
        blocks = dict(RESIDENT=cfg.mode == "resident", BLOCK_B=cfg.block_b, D_PAD=cfg.d_pad, BLOCK_K=cfg.block_k,
                      **{key: v for key, v in flags.items() if key != "WANT_O"})
        specs = [("fwd_persistent", k.forward.diru_fwd_persistent, dict(meta, NEED_SAVED=True, **blocks)),
                 ("bwd_persistent", k.backward.diru_bwd_persistent, dict(meta, **blocks))]
        if even_d and dtype in ("float32", "bfloat16"):  # the inference forward (float16 compiles as bfloat16)
            specs.insert(1, ("fwd_persistent_infer", k.forward.diru_fwd_persistent,
                             dict(meta, NEED_SAVED=False, **blocks)))
        if flags["WANT_O"]:  # the backward's integration inputs, one elementwise launch after it
            specs.append(("bwd_integration", k.backward.diru_integration_inputs,
                          dict(pick("NK", "K_PAD", "HAS_MASK", "MASK_HASH"), BLOCK_R=k.launch.INTEGRATION_ROWS,
                               D_PAD=cfg.d_pad)))
        return specs
    blocks = dict(BLOCK_M=cfg.block_b, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k)
    s = k.step
    specs = [("fwd_step_gates", s.diru_fwd_step_gates, dict(meta, **blocks, **gates)),
             ("fwd_step_int", s.diru_fwd_step_int, dict(meta, **blocks, **nk)),
             ("fwd_step_out", s.diru_fwd_step_out, dict(meta, **blocks, **decay)),
             ("bwd_step_dq", s.diru_bwd_step_dq, dict(meta, **blocks, **nk)),
             ("bwd_step_do", s.diru_bwd_step_do, dict(meta, **blocks, **gates, WANT_O=flags["WANT_O"])),
             ("bwd_step_dh", s.diru_bwd_step_dh, dict(meta, HAS_DOT=True, FINAL=False, **blocks, **nk, **decay)),
             ("bwd_step_dh_final", s.diru_bwd_step_dh,
              dict(meta, HAS_DOT=True, FINAL=True, **blocks, **nk, **decay))]
    if flags["NK"]:
        att = {key: meta[key] for key in ("HAS_LENGTHS", "EVEN_B", "EVEN_D", "ACC_DT")}
        specs.insert(5, ("bwd_step_att", s.diru_bwd_step_att,
                         dict(att, NK=flags["NK"], K_PAD=flags["K_PAD"], BLOCK_M=cfg.block_b, BLOCK_K=cfg.block_k)))
    return specs


def compile_kernel(fn, constexprs: Dict, dtype: str, arch: int, num_warps: int, num_stages: int,
                   maxnreg: Optional[int] = None):
    """triton.compile one kernel for sm_<arch> as the launcher's calls specialise it: pointers
    16-byte aligned (as torch allocates), and D divisible by 16 when d fills the tiles."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*i64" if name == "len_ptr" else "*i32" if name in _I32_POINTERS else (
                "*fp64" if dtype == "float64" else "*fp32") if name in _ACC_POINTERS else _PTR_TYPES[dtype]
            attrs[(i,)] = [["tt.divisibility", 16]]
        else:
            signature[name] = "i32"
            if name == "D" and constexprs.get("EVEN_D"):
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn, signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", arch, 32),
                          options={"num_warps": num_warps, "num_stages": num_stages, "maxnreg": maxnreg})


def _ptxas(arch: int) -> str:
    """Triton's own ptxas (it reads the PTX version Triton emits); else the one on PATH."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        return get_ptxas(arch).path
    except Exception:  # noqa: BLE001  (an install without the bundled binary)
        found = shutil.which("ptxas")
        if not found:
            raise FileNotFoundError("no ptxas: neither Triton's bundled one nor one on PATH") from None
        return found


def ptxas_usage(ptx: str) -> Dict[str, int]:
    """Registers per thread and spill bytes from ``ptxas -v`` on the kernel's PTX."""
    arch = re.search(r"^\.target\s+(sm_\w+)", ptx, re.M).group(1)
    cc = int(re.match(r"sm_(\d+)", arch).group(1))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "k.ptx"
        path.write_text(ptx)
        out = subprocess.run([_ptxas(cc), "-v", "--regAllocOptLevel=2", f"--gpu-name={arch}", str(path),
                              "-o", str(path.with_suffix(".cubin"))], capture_output=True, text=True, check=True)
    log = out.stderr + out.stdout
    regs = re.search(r"Used (\d+) registers", log)
    stores = re.search(r"(\d+) bytes spill stores", log)
    loads = re.search(r"(\d+) bytes spill loads", log)
    return dict(registers=int(regs.group(1)) if regs else -1,
                spill_stores=int(stores.group(1)) if stores else 0,
                spill_loads=int(loads.group(1)) if loads else 0)


def approx_instructions(ptx: str) -> List[str]:
    """The distinct approximate-math instructions (``*.approx.*``, ``*.full.*``) in ``ptx``."""
    return sorted(set(_APPROX_RE.findall(ptx)))


def tf32x3_ptx_counts(arch: int = 90) -> Dict[str, int]:
    """How Triton lowers a 3xTF32 ``tl.dot`` (16 x 16 x 16, one warp): counts of ``cvt.rna.tf32.f32``,
    ``sub.f32``, ``mma.sync`` (tf32) and ``wgmma`` in its PTX. tests/providers/ptx_math.py emulates what
    this shows: one cvt.rna per operand element (the high part only), the low part a plain fp32
    subtraction that the MMA reads truncated, three products of mma.sync (no wgmma)."""
    import triton
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    ptx = triton.compile(ASTSource(_tf32x3_dot(triton, tl), {"a_ptr": "*fp32", "b_ptr": "*fp32", "c_ptr": "*fp32"},
                                   constexprs={}),
                         target=GPUTarget("cuda", arch, 32), options={"num_warps": 1}).asm["ptx"]
    ops = re.findall(r"^\s*(?:@!?%p\d+\s+)?([a-z][\w.]*)", ptx, re.M)
    return dict(cvt_rna_tf32=sum(op == "cvt.rna.tf32.f32" for op in ops), sub_f32=sum(op == "sub.f32" for op in ops),
                mma_tf32=sum(op.startswith("mma.sync") and ".tf32" in op for op in ops),
                wgmma=sum(op.startswith("wgmma") for op in ops), elements_per_thread=2 * 16 * 16 // 32)


_TF32X3_DOT = None


def _tf32x3_dot(triton, tl):
    global _TF32X3_DOT
    if _TF32X3_DOT is None:
        @triton.jit
        def tf32x3_dot(a_ptr, b_ptr, c_ptr):
            i = tl.arange(0, 16)
            a = tl.load(a_ptr + i[:, None] * 16 + i[None, :])
            b = tl.load(b_ptr + i[:, None] * 16 + i[None, :])
            tl.store(c_ptr + i[:, None] * 16 + i[None, :], tl.dot(a, b, input_precision="tf32x3"))

        _TF32X3_DOT = tf32x3_dot
    return _TF32X3_DOT


def _compile_job(job) -> List[Dict]:
    cfg, dtype, even, arch, with_ptxas, options = job
    run = effective_config(cfg, dtype, options)  # what the launcher runs (the row keeps the dispatcher's label)
    rows = []
    for name, fn, constexprs in kernel_specs(run, dtype, even, options):
        start = time.perf_counter()
        stages = run.stages_bwd if name.startswith("bwd") else run.num_stages
        if name == "bwd_integration":  # launched as launch.py does: 4 warps, one stage, no register cap
            compiled = compile_kernel(fn, constexprs, dtype, arch, 4, 1)
        else:
            compiled = compile_kernel(fn, constexprs, dtype, arch, run.num_warps, stages, run.maxnreg)
        row = dict(config=cfg.label(), run_as=run.label(), mode=cfg.mode, dtype=dtype, even=even, options=options,
                   kernel=name, arch=arch,
                   shared=int(compiled.metadata.shared), shared_limit=SHARED_LIMIT[arch],
                   ptx_bytes=len(compiled.asm["ptx"]), cubin_bytes=len(compiled.asm["cubin"]),
                   approx=approx_instructions(compiled.asm["ptx"]))
        if with_ptxas:
            row.update(ptxas_usage(compiled.asm["ptx"]))
        row["seconds"] = round(time.perf_counter() - start, 2)
        rows.append(row)
    return rows


def jobs_for(archs=(80, 90), configs=None, with_ptxas: bool = True, every_option: bool = False) -> List[tuple]:
    """One job per (config, dtype, masks, arch, options): the dispatcher's configs with d and B filling
    the tiles (no masks), and for 16-bit also the masked variant (odd d / B; the mask code
    does not depend on the dtype, the register budget does); the option variants of
    ``option_variants`` with full tiles."""
    k = _kernels()
    jobs = []
    for cfg, dtype in (configs if configs is not None else k.all_configs()):
        for even in ((True, False) if dtype == "bfloat16" else (True,)):
            for arch in archs:
                jobs.append((cfg, dtype, even, arch, with_ptxas, "none"))
        for options in option_variants(cfg, dtype, every_option):
            for arch in archs:
                jobs.append((cfg, dtype, True, arch, with_ptxas, options))
    return jobs


def check_all(archs=(80, 90), configs=None, with_ptxas: bool = True, workers: int = 1,
              every_option: bool = False) -> List[Dict]:
    """Compile every job of ``jobs_for``; one result row per kernel."""
    jobs = jobs_for(archs, configs, with_ptxas, every_option)
    if workers <= 1:
        return [row for job in jobs for row in _compile_job(job)]
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return [row for rows in pool.map(_compile_job, jobs, chunksize=1) for row in rows]


MASKED_SPILL_LIMIT = 320  # bytes per thread tolerated in the masked variants (see the module docstring)
INFERENCE_SPILL_LIMIT = 32  # bytes per thread tolerated in the inference forward with full tiles


def problems(rows: List[Dict]) -> List[str]:
    """What breaks the limits: shared memory over the arch's limit; any spill where d and B fill
    the tiles (INFERENCE_SPILL_LIMIT in the inference forward); more than MASKED_SPILL_LIMIT bytes of
    spills in a masked variant; an approximate
    instruction that is not in EMULATED_APPROX."""
    bad = []
    for r in rows:
        tag = (f"{r['config']} {r['dtype']} {'even' if r['even'] else 'masked'} {r['kernel']} sm_{r['arch']}"
               f" options={r.get('options', 'none')}")
        if r["shared"] > r["shared_limit"]:
            bad.append(f"{tag}: shared memory {r['shared']} B > {r['shared_limit']} B")
        spill = max(r.get("spill_stores", 0), r.get("spill_loads", 0))
        limit = MASKED_SPILL_LIMIT if not r["even"] else INFERENCE_SPILL_LIMIT if r["kernel"].endswith("_infer") else 0
        if spill > limit:
            bad.append(f"{tag}: spills {r['spill_stores']} B stores / {r['spill_loads']} B loads")
        unknown = sorted(set(r.get("approx", ())) - set(EMULATED_APPROX))
        if unknown:
            bad.append(f"{tag}: approximate instructions {unknown} (only {list(EMULATED_APPROX)} are emulated)")
    return bad


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", type=int, nargs="+", default=[80, 90])
    parser.add_argument("--json", help="write the result rows here")
    parser.add_argument("--no-ptxas", action="store_true", help="skip the ptxas -v register report")
    parser.add_argument("--workers", type=int, default=1, help="compile in this many processes")
    parser.add_argument("--all-options", action="store_true",
                        help="every option variant (k = 4 and k = 18) for every config, not the test suite's subset")
    args = parser.parse_args(argv)
    rows = check_all(tuple(args.arch), with_ptxas=not args.no_ptxas, workers=args.workers,
                     every_option=args.all_options)
    print(f"{'config':32} {'dtype':9} {'masks':5} {'options':9} {'kernel':18} {'sm':>3} {'smem':>7} {'regs':>5} "
          f"{'spill':>6}")
    for r in rows:
        print(f"{r['config']:32} {r['dtype']:9} {'no' if r['even'] else 'yes':5} {r['options']:9} {r['kernel']:18} "
              f"{r['arch']:>3} "
              f"{r['shared']:>7} {r.get('registers', -1):>5} {r.get('spill_stores', 0):>6}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    bad = problems(rows)
    for line in bad:
        print("PROBLEM:", line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
