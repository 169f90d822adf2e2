"""GPU benchmark grid: DIRU (triton, cuda) against cuDNN nn.LSTM and the reference loop.

    python bench/gpu_bench.py [--out gpu_out] [--budget 240] [--tune]
    python bench/gpu_bench.py --device cpu --tiny          # the same code on CPU (CI smoke test)
    python bench/gpu_bench.py --final gpu_out [--dry-run]  # gpu_check.sh's last screen

One layer, one direction, input size n = d, over B in {16, 64, 256} x T in {50, 512} x d in
{64, 128, 256}, float32, bfloat16 and float16. Both sides include their input projection: DIRU's
``DIRULayer`` runs its x W_ih^T GEMM inside the call, as cuDNN runs its own. "fwd" is an
inference forward (no_grad), "fwdbwd" a forward with grad plus the backward of a fixed random
projection of the outputs (input and all weight grads). Times are CUDA-event medians after
warm-up; peak memory is torch.cuda.max_memory_allocated during the call minus what was allocated
before it.

Fair anchors (rows by ``impl``):

- float32: ``triton`` (3xTF32 products, fp32-level accuracy) against ``lstm`` = cuDNN with TF32
  *off* (``torch.backends.cudnn.allow_tf32 = False``: fp32 FFMA); and ``triton_tf32`` (plain TF32,
  what ``torch.backends.cuda.matmul.allow_tf32 = True`` selects) against ``lstm_tf32`` (cuDNN's
  default, TF32 on);
- cuDNN's algorithm: PyTorch asks for CUDNN_RNN_ALGO_PERSIST_STATIC_SMALL_H (every dtype but double,
  hidden size <= 192 forward, <= 128 backward), else CUDNN_RNN_ALGO_PERSIST_STATIC (float16, one
  layer, hidden and input sizes multiples of 128, batch a multiple of 8 and <= 128), else the
  standard algorithm (``gpu_model.cudnn_algo``): rows carry ``cudnn_algo_fwd`` / ``cudnn_algo_bwd``
  by that rule and ``cudnn_kernels``, the CUDA kernel names the profiler saw cuDNN run (one probe per
  dtype, mode, d and batch class), so the first run shows which algorithm really ran;
- bfloat16: whether ``nn.LSTM`` reaches cuDNN is probed once (profiler op names): rows say
  ``lstm_path`` "cudnn" or "native" (PyTorch's slow per-step loop), and if it raises, the rows are
  skipped with the error as the reason.

The reference loop (the prototype's per-step, per-compartment structure, k=4) is measured only
at T=50 and at one T=512 point; the other T=512 reference times are extrapolated linearly in T
from the T=50 measurement and flagged ``extrapolated``. ``--budget`` caps the grid's wall time;
rows are measured most informative first (triton and lstm in every dtype, then cuda, the TF32
pair, the reference loop) and those past the budget are listed as skipped. Writes
``OUT/gpu_bench.json`` and ``OUT/history_rows.csv`` (the columns of bench/results/history.csv),
prints the summary table (with the ratio bench/gpu_model.py predicts beside each measured one)
last and writes it to ``OUT/summary.txt``.

``--tune`` instead times the candidate Triton configurations per (dtype, d) at B=64, T=512
(fwd+bwd) and prints the fastest, for ``kernels/config.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as _dt
import json
import platform
import statistics
import subprocess
import sys
import time
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import diru_fast  # noqa: E402
from diru_fast import DIRULayer  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
import gpu_model  # noqa: E402

sys.path.remove(str(ROOT / "bench"))

GRID = dict(B=(16, 64, 256), T=(50, 512), d=(64, 128, 256), dtype=("bfloat16", "float32", "float16"))
TINY = dict(B=(2, 3), T=(3,), d=(8,), dtype=("float32",))
MODES = ("fwd", "fwdbwd")
DIRU_BACKENDS = ("triton", "cuda")
# the measuring passes, most informative first (the budget may end the grid early)
PASSES = (("triton", "lstm"), ("cuda",), ("triton_tf32", "lstm_tf32"), ("reference",))
FP32_ONLY = ("triton_tf32", "lstm_tf32")


class Timer:
    """Median wall time of ``fn()`` in ms: CUDA events on a GPU, perf_counter on CPU."""

    def __init__(self, device: torch.device, warmup: int, reps: int, max_seconds: float):
        self.device, self.warmup, self.reps, self.max_seconds = device, warmup, reps, max_seconds

    def __call__(self, fn: Callable[[], None]) -> float:
        for _ in range(self.warmup):
            fn()
        self._sync()
        times: List[float] = []
        start_all = time.perf_counter()
        while len(times) < self.reps and (not times or time.perf_counter() - start_all < self.max_seconds):
            if self.device.type == "cuda":
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    def _sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def peak_mb(device: torch.device, fn: Callable[[], None]) -> Optional[float]:
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def make_model(impl: str, d: int, dtype: torch.dtype, device: torch.device) -> torch.nn.Module:
    if impl.startswith("lstm"):
        return torch.nn.LSTM(d, d).to(device=device, dtype=dtype)
    backend = impl.replace("_tf32", "")
    return DIRULayer(d, d, num_compartments=4, backend=backend).to(device=device, dtype=dtype)


@contextlib.contextmanager
def precision(impl: str):
    """TF32 as the row says: ``*_tf32`` rows allow it (cuDNN and matmuls, so also the Triton
    kernels' products and DIRU's input GEMM), every other row forbids it (fp32 = fp32)."""
    tf32 = impl.endswith("_tf32")
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def lstm_probe(dtype: torch.dtype, device: torch.device, B: int = 16, d: int = 128) -> Dict:
    """How nn.LSTM runs this dtype here: {"path": "cudnn" | "native" | "raises", "detail", "kernels"}.
    One forward under the profiler: ``aten::_cudnn_rnn`` among the ops means cuDNN; the CUDA kernel
    names say which algorithm ran (cuDNN's persistent kernels carry "persist" in their names)."""
    lstm = torch.nn.LSTM(d, d).to(device=device, dtype=dtype)
    x = torch.randn(4, B, d, device=device, dtype=dtype)
    try:
        lstm(x)  # a first call outside the profiler (cuDNN picks and caches its plan)
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with torch.no_grad(), profile(activities=acts) as prof:
            lstm(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    except Exception as exc:  # noqa: BLE001  (the point: say plainly that it cannot run)
        return dict(path="raises", detail=f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200]}",
                    kernels=[])
    names = [e.name for e in prof.events()]
    cudnn = any("cudnn_rnn" in n for n in names)
    kernels = sorted({e.name for e in prof.events() if getattr(e, "device_type", None) is not None
                      and "cuda" in str(e.device_type).lower()})[:8]
    return dict(path="cudnn" if cudnn else "native", kernels=kernels,
                detail="aten::_cudnn_rnn" if cudnn else "no aten::_cudnn_rnn: PyTorch's own per-step loop",
                persistent_kernel=any("persist" in k.lower() for k in kernels))


def cuda_kernel_names(step: Callable[[], None], device: torch.device, limit: int = 24) -> List[str]:
    """The CUDA kernels one call of ``step`` launches, by the profiler (for nn.LSTM: which cuDNN
    algorithm really ran; persistent kernels carry "persist" in their names)."""
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize(device)
    except Exception as exc:  # noqa: BLE001  (the names are evidence, not a step of the grid)
        return [f"profiler failed: {type(exc).__name__}"]
    names = sorted({e.name for e in prof.events() if "cuda" in str(getattr(e, "device_type", "")).lower()})
    return names[:limit]


def algo_flags(row: Dict) -> str:
    """Summary flags of an nn.LSTM row: the algorithm PyTorch asks cuDNN for (S = persistent small-h, P =
    persistent static; capital forward, lower-case backward) and "?" when the kernel names the profiler
    recorded disagree (a "persist" kernel where the rule says standard, or none where it says persistent)."""
    fwd, bwd = row.get("cudnn_algo_fwd"), row.get("cudnn_algo_bwd")
    flags = gpu_model.ALGO_FLAG.get(fwd or "standard", "") + gpu_model.ALGO_FLAG.get(bwd or "standard", "").lower()
    kernels = row.get("cudnn_kernels")
    if kernels and not kernels[0].startswith("profiler failed"):
        ran_persistent = any("persist" in k.lower() for k in kernels)
        if ran_persistent != ((fwd or "standard") != "standard" or (bwd or "standard") != "standard"):
            flags += "?"
    return flags


def make_step(model: torch.nn.Module, x: torch.Tensor, mode: str) -> Callable[[], None]:
    params = [p for p in model.parameters()]
    if mode == "fwd":
        def step():
            with torch.no_grad():
                model(x)
        return step
    proj = torch.randn_like(x)

    def step():
        out, _ = model(x)
        grads = torch.autograd.grad((out * proj).sum(), [x] + params)
        del grads
    return step


def runnable(impl: str, device: torch.device, dtype: torch.dtype, probes: Dict) -> Optional[str]:
    """None if ``impl`` runs here in ``dtype``, else why not."""
    if impl in FP32_ONLY and (dtype != torch.float32 or device.type != "cuda"):
        return "a float32-only anchor of the GPU"
    if impl.replace("_tf32", "") in DIRU_BACKENDS:
        return diru_fast.backends.why_unavailable(impl.replace("_tf32", ""), device, dtype)
    if impl.startswith("lstm"):
        probe = probes.get(dtype)
        if probe is None:
            probe = probes[dtype] = lstm_probe(dtype, device) if device.type == "cuda" else dict(
                path="native", detail="CPU", kernels=[])
        if probe["path"] == "raises":
            return f"nn.LSTM cannot run {str(dtype)[6:]} on this PyTorch/cuDNN: {probe['detail']}"
    return None


def bench_grid(args, device: torch.device, log) -> Dict:
    grid = TINY if args.tiny else GRID
    timer = Timer(device, warmup=1 if args.tiny else 3, reps=2 if args.tiny else 10, max_seconds=2.0)
    rows, skipped, probes = [], [], {}
    deadline = time.perf_counter() + args.budget
    ref_t50: Dict[tuple, float] = {}
    for impls in PASSES:
        for dtype_name in grid["dtype"]:
            dtype = getattr(torch, dtype_name)
            for impl in impls:
                reason = runnable(impl, device, dtype, probes)
                if reason is not None:
                    if impl not in FP32_ONLY or (dtype == torch.float32 and device.type == "cuda"):
                        skipped.append(dict(impl=impl, dtype=dtype_name, reason=reason))
                        log(f"skip {impl} {dtype_name}: {reason}")
                    continue
                if impl.startswith("lstm") and device.type == "cuda":
                    probe = probes[dtype]
                    if probe["path"] != "cudnn":
                        log(f"note: nn.LSTM {dtype_name} does not reach cuDNN here ({probe['detail']}): its rows "
                            f"time PyTorch's own loop")
                for T in sorted(grid["T"]):
                    for B in grid["B"]:
                        for d in grid["d"]:
                            for mode in MODES:
                                _measure(args, device, grid, timer, deadline, impl, dtype_name, dtype, T, B, d,
                                         mode, rows, skipped, ref_t50, probes, log)
    return dict(rows=rows, skipped=skipped,
                lstm_probes={str(k)[6:]: v for k, v in probes.items() if isinstance(k, torch.dtype)},
                cudnn_kernels={"/".join(map(str, k[1:])): v for k, v in probes.items() if isinstance(k, tuple)})


def _measure(args, device, grid, timer, deadline, impl, dtype_name, dtype, T, B, d, mode, rows, skipped,
             ref_t50, probes, log) -> None:
    key = (dtype_name, mode, B, d)
    if impl == "reference" and T > min(grid["T"]) and not args.tiny:
        if (B, d) != (grid["B"][0], grid["d"][0]):  # one measured T=512 point checks the extrapolation
            if key in ref_t50:
                rows.append(dict(impl=impl, dtype=dtype_name, mode=mode, B=B, T=T, d=d,
                                 ms=ref_t50[key] * T / min(grid["T"]), peak_mb=None, extrapolated=True))
            return
    if time.perf_counter() > deadline:
        skipped.append(dict(impl=impl, dtype=dtype_name, mode=mode, B=B, T=T, d=d, reason="time budget"))
        return
    torch.manual_seed(0)
    with precision(impl):
        model = make_model(impl, d, dtype, device)
        x = torch.randn(T, B, d, device=device, dtype=dtype, requires_grad=mode == "fwdbwd")
        step = make_step(model, x, mode)
        try:
            ms = timer(step)
            mem = peak_mb(device, step)
        except Exception as exc:  # noqa: BLE001  (record it, keep the grid going)
            log(f"FAILED {impl} {dtype_name} {mode} B{B} T{T} d{d}: {type(exc).__name__}: {exc}")
            skipped.append(dict(impl=impl, dtype=dtype_name, mode=mode, B=B, T=T, d=d,
                                reason=f"error: {type(exc).__name__}: {exc}"))
            return
    if impl == "reference" and T == min(grid["T"]):
        ref_t50[key] = ms
    row = dict(impl=impl, dtype=dtype_name, mode=mode, B=B, T=T, d=d, ms=ms, peak_mb=mem, extrapolated=False,
               includes_input_projection=True, tf32=impl.endswith("_tf32"))
    if impl.startswith("lstm"):
        row["lstm_path"] = probes.get(dtype, {}).get("path", "native")
        row["cudnn_algo_fwd"] = gpu_model.cudnn_algo(B, d, d, dtype_name, "fwd")
        row["cudnn_algo_bwd"] = gpu_model.cudnn_algo(B, d, d, dtype_name, "bwd") if mode == "fwdbwd" else None
        if device.type == "cuda":
            probe_key = ("kernels", impl, dtype_name, mode, d, B <= 128)
            if probe_key not in probes:
                with precision(impl):
                    probes[probe_key] = cuda_kernel_names(step, device)
            row["cudnn_kernels"] = probes[probe_key]
    rows.append(row)
    log(f"{impl:11} {dtype_name:8} {mode:6} B{B:<4} T{T:<4} d{d:<4} {ms:9.3f} ms"
        + ("" if mem is None else f"  peak {mem:8.1f} MB"))


def summarize(rows: List[Dict]) -> str:
    """The grid table: per (dtype, mode, B, T, d) the times, the ratio cuDNN / triton (> 1: triton
    faster; float32 also for the TF32 pair) beside the one bench/gpu_model.py predicts, the ratio
    to the reference loop, and peak memory. Flags: :func:`algo_flags` (the cuDNN algorithm); n = nn.LSTM
    did not reach cuDNN (PyTorch's own loop); * = reference extrapolated in T."""
    by = {}
    for r in rows:
        by.setdefault((r["dtype"], r["mode"], r["B"], r["T"], r["d"]), {})[r["impl"]] = r
    lines = [f"{'dtype':8} {'mode':6} {'B':>4} {'T':>4} {'d':>4} | {'triton':>9} {'cuda':>9} {'lstm':>9} "
             f"{'ref':>10} | {'lstm/tri':>8} {'model':>6} {'ref/tri':>8} | {'tf32: tri':>9} {'lstm':>9} {'ratio':>6} "
             f"| {'tri MB':>8} {'lstm MB':>8}"]
    wins, total, ref_ok, ref_total = 0, 0, 0, 0
    for key in sorted(by):
        cell = by[key]

        def ms(impl):
            r = cell.get(impl)
            if r is None:
                return "-"
            return f"{r['ms']:.3f}" + ("*" if r.get("extrapolated") else "")

        def mb(impl):
            r = cell.get(impl)
            return "-" if r is None or r.get("peak_mb") is None else f"{r['peak_mb']:.1f}"

        tri, lstm, ref = cell.get("triton"), cell.get("lstm"), cell.get("reference")
        vs_lstm = f"{lstm['ms'] / tri['ms']:.2f}" if tri and lstm else "-"
        model = gpu_model.predicted_ratio(*key)
        vs_ref = f"{ref['ms'] / tri['ms']:.1f}" if tri and ref else "-"
        t32, l32 = cell.get("triton_tf32"), cell.get("lstm_tf32")
        vs_tf32 = f"{l32['ms'] / t32['ms']:.2f}" if t32 and l32 else "-"
        flags = (algo_flags(lstm) if lstm else "") + ("n" if lstm and lstm.get("lstm_path") == "native" else "")
        if tri and lstm:
            total += 1
            wins += tri["ms"] <= lstm["ms"]
        if tri and ref:
            ref_total += 1
            ref_ok += ref["ms"] >= 30 * tri["ms"]
        lstm_txt = ms("lstm") + flags
        lines.append(f"{key[0]:8} {key[1]:6} {key[2]:>4} {key[3]:>4} {key[4]:>4} | {ms('triton'):>9} {ms('cuda'):>9} "
                     f"{lstm_txt:>9} {ms('reference'):>10} | {vs_lstm:>8} "
                     f"{'-' if model is None else f'{model:.2f}':>6} {vs_ref:>8} | {ms('triton_tf32'):>9} "
                     f"{ms('lstm_tf32'):>9} {vs_tf32:>6} | {mb('triton'):>8} {mb('lstm'):>8}")
    lines.append("flags: cuDNN algorithm PyTorch picks, S = persistent small-h (d <= 192 fwd, <= 128 bwd), P = "
                 "persistent static (float16, d and n multiples of 128, B % 8 == 0 and <= 128), capital forward, "
                 "lower-case backward; ? = the profiled kernel names disagree; n = nn.LSTM ran without cuDNN; "
                 "* = reference extrapolated linearly in T from T=50; model = bench/gpu_model.py's prediction of "
                 "lstm/tri")
    lines.append(f"triton no slower than cuDNN LSTM at {wins}/{total} points; >= 30x faster than the reference "
                 f"loop at {ref_ok}/{ref_total} points")
    return "\n".join(lines)


def tune(args, device: torch.device, log) -> Dict:
    """Time candidate Triton configs per (dtype, d) at B=64, T=512 (fwd+bwd)."""
    import importlib

    k = importlib.import_module("diru_fast.kernels")
    B, T = (3, 3) if args.tiny else (64, 512)
    timer = Timer(device, warmup=1 if args.tiny else 2, reps=2 if args.tiny else 5, max_seconds=2.0)
    results = []
    deadline = time.perf_counter() + args.budget
    for dtype_name in (TINY if args.tiny else GRID)["dtype"]:
        dtype = getattr(torch, dtype_name)
        for d in (TINY if args.tiny else GRID)["d"]:
            d_pad = k.pad_hidden(d)
            cands = [k.choose(d, dtype_name)]
            if d_pad <= 64:
                cands += [k.KernelConfig("resident", d_pad, block_b=16, block_k=d_pad, num_warps=w) for w in (2, 4, 8)]
            for block_k in (16, 32):
                for warps in (4, 8):
                    for stages in (2, 3, 4):
                        if block_k <= d_pad:
                            cands.append(k.KernelConfig("streamed", d_pad, block_b=16, block_k=block_k,
                                                        num_warps=warps, num_stages=stages,
                                                        maxnreg=255 if warps == 8 else None))
            for cfg in dict.fromkeys(cands):
                if time.perf_counter() > deadline:
                    break
                torch.manual_seed(0)
                model = make_model("triton", d, dtype, device)
                x = torch.randn(T, B, d, device=device, dtype=dtype, requires_grad=True)
                step = make_step(model, x, "fwdbwd")
                try:
                    with k.config.override(cfg):
                        ms = timer(step)
                except Exception as exc:  # noqa: BLE001
                    log(f"tune {dtype_name} d{d} {cfg.label()}: FAILED {type(exc).__name__}: {exc}")
                    continue
                results.append(dict(dtype=dtype_name, d=d, config=cfg.label(), ms=ms,
                                    default=cfg == cands[0]))
                log(f"tune {dtype_name:8} d{d:<4} {cfg.label():34} {ms:9.3f} ms" + ("  (default)" if cfg == cands[0]
                                                                                     else ""))
    best = {}
    for r in results:
        key = (r["dtype"], r["d"])
        if key not in best or r["ms"] < best[key]["ms"]:
            best[key] = r
    for (dtype_name, d), r in sorted(best.items()):
        log(f"best {dtype_name:8} d{d:<4} {r['config']} {r['ms']:.3f} ms")
    return dict(tune=results)


def environment(device: torch.device) -> Dict:
    env = dict(timestamp=_dt.datetime.now().isoformat(timespec="seconds"), torch=torch.__version__,
               cuda=torch.version.cuda, diru_fast=diru_fast.__version__, python=platform.python_version(),
               device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine(),
               cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
               matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    try:
        import triton

        env["triton"] = triton.__version__
    except ImportError:
        env["triton"] = None
    try:
        env["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       cwd=ROOT, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        env["commit"] = ""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the GPU backends and torch only: asking about "cpu" builds the C++ CPU kernel on the spot
        # where the install left it out (gpu_check.sh installs without extensions): minutes
        env["backends"] = [b for b in ("triton", "cuda", "torch") if diru_fast.backends.why_unavailable(b, device) is None]
    return env


# ------------------------------------------------------------------ gpu_check.sh: the gate and the last screen

def _nvcc_release() -> Optional[str]:
    """nvcc's CUDA release ("12.8"), or None without nvcc on PATH."""
    import re
    import shutil

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"release (\d+\.\d+)", out.stdout + out.stderr)
    return match.group(1) if match else "unknown"


def build_decision(torch_cuda: Optional[str], nvcc: Optional[str]) -> Optional[str]:
    """None if the CUDA extension can be built here, else the cause: torch.utils.cpp_extension refuses
    an nvcc whose major version differs from the CUDA PyTorch was built with."""
    if torch_cuda is None:
        return "this PyTorch has no CUDA (torch.version.cuda is None)"
    if nvcc is None:
        return "nvcc is not on PATH (install the CUDA toolkit, or set PATH / CUDA_HOME)"
    if nvcc.split(".")[0] != torch_cuda.split(".")[0]:
        return (f"nvcc is CUDA {nvcc} but PyTorch was built with CUDA {torch_cuda}: PyTorch's extension builder "
                f"refuses a different major version (put an nvcc {torch_cuda.split('.')[0]}.x first on PATH)")
    return None


def environment_gate(out: Path, dry_run: bool = False) -> str:
    """gpu_check.sh's first step: versions (torch, CUDA, cuDNN, Triton, nvcc, the GPU) and each
    backend's reason for being unavailable, to env.txt / env.json; returns "BUILD" or
    "NO_BUILD <cause>" for the CUDA extension."""
    from importlib import metadata

    info: Dict = dict(python=platform.python_version(), torch=torch.__version__, torch_cuda=torch.version.cuda,
                      cuda_available=torch.cuda.is_available())
    info["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
        info["capability"] = "%d.%d" % torch.cuda.get_device_capability()
    try:
        info["triton"] = metadata.version("triton")
    except metadata.PackageNotFoundError:
        info["triton"] = None
    info["nvcc"] = _nvcc_release()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    reasons = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("triton", "cuda", "torch"):
            reasons[name] = {str(dt)[6:]: diru_fast.backends.why_unavailable(name, device, dt)
                             for dt in (torch.float32, torch.bfloat16, torch.float16, torch.float64)}
    info["backends_on"] = device
    info["why_unavailable"] = reasons
    cause = "dry run: not building" if dry_run else build_decision(info["torch_cuda"], info["nvcc"])
    info["cuda_build"] = "build" if cause is None else f"not built: {cause}"
    (out / "env.json").write_text(json.dumps(info, indent=1))
    lines = [f"python {info['python']} | torch {info['torch']} | torch.version.cuda {info['torch_cuda']} | "
             f"cuDNN {info['cudnn']} | triton {info['triton']} | nvcc {info['nvcc']}",
             f"GPU: {info.get('gpu', 'none visible')}" + (f" (sm_{info['capability'].replace('.', '')})"
                                                         if "capability" in info else "")]
    for name, by_dtype in reasons.items():
        bad = {dt: why for dt, why in by_dtype.items() if why}
        if not bad:
            text = "runs every dtype"
        elif len(set(bad.values())) == 1 and len(bad) == len(by_dtype):
            text = f"unavailable: {next(iter(bad.values()))}"
        else:
            text = "; ".join(f"{dt}: {why}" for dt, why in bad.items())
        lines.append(f"backend {name} on {device}: {text}")
    lines.append(f"CUDA extension: {info['cuda_build']}")
    (out / "env.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return "BUILD" if cause is None else f"NO_BUILD {cause}"


def junit_counts(path: Path) -> Optional[Dict[str, int]]:
    """Tests run / passed / failed / skipped from a pytest --junitxml report (None: no report)."""
    if not path.is_file():
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return None
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = sum(int(x.get("tests", 0)) for x in suites)
    failed = sum(int(x.get("failures", 0)) + int(x.get("errors", 0)) for x in suites)
    skipped = sum(int(x.get("skipped", 0)) for x in suites)
    return dict(run=total - skipped, passed=total - skipped - failed, failed=failed, skipped=skipped)


def _build_status(out: Path) -> Tuple[str, bool]:
    """(what happened to the CUDA extension build, built?) from build_cuda.status / build_cuda.log."""
    status = (out / "build_cuda.status").read_text().strip() if (out / "build_cuda.status").is_file() else ""
    if status == "built":
        return "built", True
    if status.startswith("rc="):
        log = (out / "build_cuda.log").read_text(errors="replace") if (out / "build_cuda.log").is_file() else ""
        if status in ("rc=124", "rc=137"):
            return "build timed out (see build_cuda.log)", False
        errors = [line.strip() for line in log.splitlines()
                  if "error" in line.lower() and not line.strip().startswith("warning")]
        return f"build FAILED ({status}): {errors[0][:150] if errors else 'see build_cuda.log'}", False
    return status or "not built", False


SCREEN_LIMIT = 2000  # characters: the last screen of gpu_check.sh (what a lent GPU machine surely returns)


def final_summary(out: Path, dry_run: bool = False) -> Tuple[str, bool]:
    """gpu_check.sh's final_summary.txt: per backend built / tests run / passed / failed, then the grid
    (time and ratio against cuDNN nn.LSTM per point), then one verdict line. A backend that is
    unavailable or ran zero tests FAILS; so does a step that left no report (timed out)."""
    table, grid, _, verdict, ok = _final_parts(out, dry_run)
    return "\n".join(table + ([grid] if grid else []) + [verdict]), ok


def final_screen(out: Path, dry_run: bool = False) -> Tuple[str, bool]:
    """gpu_check.sh's last screen, at most SCREEN_LIMIT characters: the table of final_summary, the
    grid's headline (the whole grid is in final_summary.txt), where the files are, the verdict last."""
    table, _, headline, verdict, ok = _final_parts(out, dry_run)
    files = "full grid: final_summary.txt; every log and report: gpu_check.tar.gz (in $OUT)"
    lines = [line[:160] for line in table + headline] + [files]
    while len("\n".join(lines + [verdict])) > SCREEN_LIMIT and len(lines) > 1:
        lines.pop(-2)  # never the verdict; the table's rows first come before the grid's headline
    return "\n".join(lines + [verdict]), ok


def _final_parts(out: Path, dry_run: bool = False):
    """(table lines, grid text, grid headline lines, verdict line, ok) of the last screen."""
    env = json.loads((out / "env.json").read_text()) if (out / "env.json").is_file() else {}
    steps = {}
    if (out / "steps.tsv").is_file():
        for line in (out / "steps.tsv").read_text().splitlines():
            name, rc, secs = (line.split("\t") + ["", ""])[:3]
            steps[name] = (rc, secs)
    rows, problems = [], []

    def timed_out(step):
        return steps.get(step, ("", ""))[0] in ("124", "137")

    # selftest
    st_path = out / "selftest.json"
    if st_path.is_file():
        st = json.loads(st_path.read_text())
        n_ok = sum(r["ok"] for r in st["results"])
        failed = [f"{r['backend']} {r['dtype']} on {r['device']}" for r in st["results"] if not r["ok"]]
        missing = st.get("required_missing", [])
        verdict = "passed" if st["ok"] else "FAILED: " + ", ".join(failed + [f"{m} did not run" for m in missing])
        rows.append(("selftest", "-", len(st["results"]), n_ok, len(failed), "-", verdict))
        if not st["ok"]:
            problems.append("selftest")
    else:
        rows.append(("selftest", "-", "-", "-", "-", "-", "FAILED: no report" +
                     (" (timed out)" if timed_out("selftest") else " (see selftest.log)")))
        problems.append("selftest")
    # the two GPU backends
    why = env.get("why_unavailable", {})
    build_text, built = _build_status(out)
    for name, xml in (("triton", "tests_triton.xml"), ("cuda", "tests_cuda.xml")):
        reasons = {dt: r for dt, r in why.get(name, {}).items() if r and dt != "float64"}
        if name == "triton":
            avail = "available" if not reasons else "UNAVAILABLE: " + next(iter(reasons.values()))
            usable = not reasons
        else:
            avail, usable = build_text, built
        counts = junit_counts(out / xml)
        c = counts or dict(run="-", passed="-", failed="-", skipped="-")
        if dry_run:
            # the same path as on a GPU up to the GPU itself: triton's only reason may be the missing GPU
            # (an uninstalled package or an old triton fails here as it would there)
            other = sorted({r for r in reasons.values() if "no CUDA GPU is visible" not in r}) if name == "triton" else []
            verdict = ("FAILED: " + other[0][:120] if other else
                       "dry run (GPU tests collected and skipped)" if counts is not None else "FAILED: no report")
            if other or counts is None:
                problems.append(name)
            rows.append((name, "dry run", c["run"], c["passed"], c["failed"], c["skipped"], verdict))
            continue
        if not usable:
            verdict = "FAILED: " + ("not available" if name == "triton" else "not built")
        elif counts is None:
            verdict = "FAILED: no test report" + (" (timed out)" if timed_out("tests_" + name) else "")
        elif timed_out("tests_" + name):
            verdict = f"FAILED: timed out after {counts['run']} tests"
        elif counts["run"] == 0:
            verdict = "FAILED: ran zero tests"
        elif counts["failed"]:
            verdict = f"FAILED: {counts['failed']} failed (see tests_{name}.log)"
        else:
            verdict = "passed"
        if verdict != "passed":
            problems.append(name)
        rows.append((name, avail, c["run"], c["passed"], c["failed"], c["skipped"], verdict))
    # the benchmark
    bench_path = out / "gpu_bench.json"
    grid = ""
    if bench_path.is_file():
        bench = json.loads(bench_path.read_text())
        errors = [s for s in bench["skipped"] if str(s.get("reason", "")).startswith("error")]
        budget = [s for s in bench["skipped"] if s.get("reason") == "time budget"]
        impls = {r["impl"] for r in bench["rows"]}
        ok = bool(bench["rows"]) and not errors and (dry_run or "triton" in impls)
        what = f"{len(bench['rows'])} rows; {len(budget)} past the time budget; {len(errors)} errors"
        rows.append(("benchmark", what, "-", "-", len(errors), "-",
                     "passed" if ok else "FAILED" + (": no triton rows" if "triton" not in impls else "")))
        if not ok:
            problems.append("benchmark")
        grid = summarize(bench["rows"])
    else:
        rows.append(("benchmark", "-", "-", "-", "-", "-", "FAILED: no gpu_bench.json" +
                     (" (timed out)" if timed_out("bench") else "")))
        problems.append("benchmark")
    head = (f"== gpu_check{' --dry-run' if dry_run else ''}: {env.get('gpu', 'no GPU')} | torch {env.get('torch')} | "
            f"CUDA {env.get('torch_cuda')} | cuDNN {env.get('cudnn')} | triton {env.get('triton')} | "
            f"nvcc {env.get('nvcc')} ==")
    widths = (10, 52, 6, 7, 7, 8)
    table = [head, f"{'':10} {'built / available':52} {'tests':>6} {'passed':>7} {'failed':>7} {'skipped':>8}  verdict"]
    for r in rows:
        table.append(f"{r[0]:{widths[0]}} {str(r[1])[:52]:{widths[1]}} {str(r[2]):>{widths[2]}} "
                     f"{str(r[3]):>{widths[3]}} {str(r[4]):>{widths[4]}} {str(r[5]):>{widths[5]}}  {r[6]}")
    ok = not problems
    verdict = ("VERDICT: passed" if ok else "VERDICT: FAILED (" + ", ".join(problems) + ")") + \
        (" [dry run: no GPU was used]" if dry_run else "")
    headline = [line for line in grid.splitlines() if line.startswith("triton no slower")]
    return table, grid, headline, verdict, ok


def write_history(path: Path, env: Dict, rows: List[Dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "device", "threads", "torch", "diru_fast", "commit", "impl", "shape", "mode",
                    "median_ms"])
        for r in rows:
            if r.get("extrapolated"):
                continue
            w.writerow([env["timestamp"], env["device"], "", env["torch"], env["diru_fast"], env["commit"],
                        f"{r['impl']}-{r['dtype']}", f"B{r['B']}-T{r['T']}-d{r['d']}", r["mode"],
                        f"{r['ms']:.4f}"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu_out"))
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--tiny", action="store_true", help="a 2-point grid (CI smoke test of this script)")
    parser.add_argument("--budget", type=float, default=240.0, help="seconds for the grid; later rows are skipped")
    parser.add_argument("--tune", action="store_true", help="time candidate Triton configs instead of the grid")
    parser.add_argument("--env-gate", action="store_true",
                        help="gpu_check.sh's first step: write OUT/env.txt and env.json, print the build decision")
    parser.add_argument("--final", action="store_true", help="gpu_check.sh's last screen, from the files in OUT")
    parser.add_argument("--dry-run", action="store_true", help="with --env-gate / --final: a CPU smoke test")
    args = parser.parse_args(argv)
    if args.env_gate or args.final:
        args.out.mkdir(parents=True, exist_ok=True)
        if args.env_gate:
            print(environment_gate(args.out, args.dry_run))
            return 0
        text, ok = final_summary(args.out, args.dry_run)
        (args.out / "final_summary.txt").write_text(text + "\n")
        print(final_screen(args.out, args.dry_run)[0])
        return 0 if ok else 1
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_bench: no CUDA GPU visible (torch.cuda.is_available() is False); use --device cpu --tiny "
              "for a dry run", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    logfile = (args.out / ("gpu_tune.log" if args.tune else "gpu_bench.log")).open("w")

    def log(msg: str) -> None:
        print(msg, flush=True)
        logfile.write(msg + "\n")
        logfile.flush()

    env = environment(device)
    log(json.dumps(env))
    if args.tune:
        result = dict(env=env, **tune(args, device, log))
        (args.out / "gpu_tune.json").write_text(json.dumps(result, indent=1))
        return 0
    result = dict(env=env, **bench_grid(args, device, log))
    (args.out / "gpu_bench.json").write_text(json.dumps(result, indent=1))
    write_history(args.out / "history_rows.csv", env, result["rows"])
    table = summarize(result["rows"])
    (args.out / "summary.txt").write_text(f"{env['device']} | torch {env['torch']} | triton {env['triton']} | "
                                          f"commit {env['commit']}\n{table}\n")
    for s in result["skipped"]:
        log(f"skipped: {s}")
    print()
    print((args.out / "summary.txt").read_text())
    errors = [s for s in result["skipped"] if str(s.get("reason", "")).startswith("error")]
    triton_rows = any(r["impl"] == "triton" for r in result["rows"])
    if errors or not result["rows"] or (device.type == "cuda" and not triton_rows):
        print(f"gpu_bench: FAILED: {len(errors)} measurements raised"
              + ("" if triton_rows or device.type != "cuda" else "; no triton rows"), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
