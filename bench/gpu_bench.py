"""GPU benchmark grid: DIRU (triton, cuda) against cuDNN nn.LSTM and the reference loop.

    python bench/gpu_bench.py [--out gpu_out] [--budget 240] [--tune]
    python bench/gpu_bench.py --device cpu --tiny          # the same code on CPU (CI smoke test)

One layer, one direction, input size n = d (so the input projection GEMM is part of every
measurement, as in cuDNN), over B in {16, 64, 256} x T in {50, 512} x d in {64, 128, 256},
float32 and bfloat16; "fwd" is an inference forward (no_grad), "fwdbwd" a forward with grad
plus the backward of a fixed random projection of the outputs (input and all weight grads).
Times are CUDA-event medians over repeats after warm-up; peak memory is
torch.cuda.max_memory_allocated during the call minus what was allocated before it.

The reference loop (the prototype's per-step, per-compartment structure, k=4) is measured only
at T=50 and at one T=512 point; the other T=512 reference times are extrapolated linearly in T
from the T=50 measurement and flagged ``extrapolated`` (the one measured T=512 point checks
that extrapolation). ``--budget`` caps the grid's wall time: rows past it are skipped and
listed. Writes ``OUT/gpu_bench.json`` and ``OUT/history_rows.csv`` (the columns of
bench/results/history.csv), prints the summary table last and writes it to ``OUT/summary.txt``.

``--tune`` instead times the candidate Triton configurations per (dtype, d) at B=64, T=512
(fwd+bwd) and prints the fastest, for ``kernels/config.py``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import diru_fast  # noqa: E402
from diru_fast import DIRULayer  # noqa: E402

GRID = dict(B=(16, 64, 256), T=(50, 512), d=(64, 128, 256), dtype=("float32", "bfloat16"))
TINY = dict(B=(2, 3), T=(3,), d=(8,), dtype=("float32",))
MODES = ("fwd", "fwdbwd")
DIRU_BACKENDS = ("triton", "cuda")


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
    if impl == "lstm":
        return torch.nn.LSTM(d, d).to(device=device, dtype=dtype)
    backend = "reference" if impl == "reference" else impl
    return DIRULayer(d, d, num_compartments=4, backend=backend).to(device=device, dtype=dtype)


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


def runnable(impl: str, device: torch.device, dtype: torch.dtype) -> Optional[str]:
    """None if ``impl`` runs here, else why not."""
    if impl in DIRU_BACKENDS:
        return diru_fast.backends.why_unavailable(impl, device, dtype)
    return None


def bench_grid(args, device: torch.device, log) -> Dict:
    grid = TINY if args.tiny else GRID
    timer = Timer(device, warmup=1 if args.tiny else 3, reps=2 if args.tiny else 10, max_seconds=2.0)
    rows, skipped = [], []
    deadline = time.perf_counter() + args.budget
    impls = ["triton", "lstm", "reference", "cuda"]  # most important first, in case the budget runs out
    ref_t50: Dict[tuple, float] = {}
    for dtype_name in grid["dtype"]:
        dtype = getattr(torch, dtype_name)
        for impl in impls:
            reason = runnable(impl, device, dtype)
            if reason is not None:
                skipped.append(dict(impl=impl, dtype=dtype_name, reason=reason))
                log(f"skip {impl} {dtype_name}: {reason}")
                continue
            for T in sorted(grid["T"]):
                for B in grid["B"]:
                    for d in grid["d"]:
                        for mode in MODES:
                            key = (dtype_name, mode, B, d)
                            extrapolated = False
                            if impl == "reference" and T > min(grid["T"]) and not args.tiny:
                                measure_one = (B, d) == (grid["B"][0], grid["d"][0])  # checks the extrapolation
                                if not measure_one:
                                    if key in ref_t50:
                                        rows.append(dict(impl=impl, dtype=dtype_name, mode=mode, B=B, T=T, d=d,
                                                         ms=ref_t50[key] * T / min(grid["T"]), peak_mb=None,
                                                         extrapolated=True))
                                    continue
                            if time.perf_counter() > deadline:
                                skipped.append(dict(impl=impl, dtype=dtype_name, mode=mode, B=B, T=T, d=d,
                                                    reason="time budget"))
                                continue
                            torch.manual_seed(0)
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
                                continue
                            if impl == "reference" and T == min(grid["T"]):
                                ref_t50[key] = ms
                            rows.append(dict(impl=impl, dtype=dtype_name, mode=mode, B=B, T=T, d=d, ms=ms,
                                             peak_mb=mem, extrapolated=extrapolated))
                            log(f"{impl:9} {dtype_name:8} {mode:6} B{B:<4} T{T:<4} d{d:<4} {ms:9.3f} ms"
                                + ("" if mem is None else f"  peak {mem:8.1f} MB"))
                            del model, x, step
    return dict(rows=rows, skipped=skipped)


def summarize(rows: List[Dict]) -> str:
    """The short table: per (dtype, mode, B, T, d): DIRU times and the ratios to cuDNN LSTM and the reference."""
    by = {}
    for r in rows:
        by.setdefault((r["dtype"], r["mode"], r["B"], r["T"], r["d"]), {})[r["impl"]] = r
    lines = [f"{'dtype':8} {'mode':6} {'B':>4} {'T':>4} {'d':>4} | {'triton':>9} {'cuda':>9} {'lstm':>9} "
             f"{'ref':>10} | {'lstm/tri':>8} {'ref/tri':>8} | {'tri MB':>8} {'lstm MB':>8}"]
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
        vs_ref = f"{ref['ms'] / tri['ms']:.1f}" if tri and ref else "-"
        if tri and lstm:
            total += 1
            wins += tri["ms"] <= lstm["ms"]
        if tri and ref:
            ref_total += 1
            ref_ok += ref["ms"] >= 30 * tri["ms"]
        lines.append(f"{key[0]:8} {key[1]:6} {key[2]:>4} {key[3]:>4} {key[4]:>4} | {ms('triton'):>9} {ms('cuda'):>9} "
                     f"{ms('lstm'):>9} {ms('reference'):>10} | {vs_lstm:>8} {vs_ref:>8} | {mb('triton'):>8} "
                     f"{mb('lstm'):>8}")
    lines.append(f"triton no slower than cuDNN LSTM at {wins}/{total} points; >= 30x faster than the reference "
                 f"loop at {ref_ok}/{ref_total} points (* = reference extrapolated linearly in T from T=50)")
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
        env["backends"] = diru_fast.available_backends(device)
    return env


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
    args = parser.parse_args(argv)
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
    return 0 if result["rows"] else 1


if __name__ == "__main__":
    sys.exit(main())
