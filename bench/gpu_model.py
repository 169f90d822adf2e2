"""A per-step latency model of the DIRU Triton kernels and of cuDNN's LSTM on an H100/H200 SXM.

    python bench/gpu_model.py                 # the tables of bench/GPU_MODEL.md (markdown)
    python bench/gpu_model.py --check gpu_out/gpu_bench.json   # model vs a measured grid

Written before any GPU run; bench/GPU_MODEL.md explains every term and lists which inputs are
datasheet figures and which are assumptions the first run calibrates. ``gpu_bench.py`` prints
the model's ratio beside each measured one. Pure Python (no torch), times in microseconds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from typing import Dict, Optional

GRID = dict(B=(16, 64, 256), T=(50, 512), d=(64, 128, 256), dtype=("float32", "bfloat16", "float16"))


@dataclass(frozen=True)
class Hardware:
    name: str = "H100 SXM"
    # datasheet figures (NVIDIA H100 / H200 SXM)
    sms: int = 132
    tc16_tflops: float = 989.4  # dense bf16/fp16 tensor core
    tf32_tflops: float = 494.7  # dense TF32 tensor core
    fp32_tflops: float = 66.9  # FFMA (non-tensor)
    hbm_tbs: float = 3.35  # H100 SXM; H200: 4.8
    l2_mb: float = 50.0
    smem_kb: float = 228.0  # per SM (227 KB for one block)
    # derived: the clock the datasheet TFLOPS imply at 4096 dense 16-bit FLOP per SM per clock
    clock_ghz: float = 1.83
    # assumptions (not on a datasheet; the first GPU run calibrates them)
    l2_tbs: float = 5.5  # aggregate L2 -> SM bandwidth
    l2_bytes_per_clk_sm: float = 64.0  # one SM's share of it at most
    smem_bytes_per_clk_sm: float = 128.0
    l2_latency_us: float = 0.30  # load-to-use under load, ~550 cycles
    hbm_latency_us: float = 0.60
    cta_barrier_us: float = 0.03  # bar.sync of 8 warps, with the store before it
    grid_barrier_us: float = 1.0  # cuDNN persistent (both kinds): one grid-wide barrier per step
    launch_us: float = 2.5  # back-to-back kernels on one stream
    mma_efficiency: float = 0.5  # of peak, M = 16-row tiles with short K chains
    # every tl.dot of the kernels compiles to mma.sync (Ampere's instruction; no wgmma: see
    # kernels/compile_check.py tf32x3_ptx_counts), which reaches only part of H100's datasheet peak
    # (that peak is wgmma's)
    mma_sync_fraction: float = 0.6
    fp32_lanes_per_clk_sm: float = 128.0
    mufu_per_clk_sm: float = 16.0  # ex2 / rcp
    fixed_fwd_us: float = 40.0  # Python, autograd, input GEMM launch: one DIRULayer / nn.LSTM call
    fixed_bwd_us: float = 80.0


H100 = Hardware()
H200 = Hardware(name="H200 SXM", hbm_tbs=4.8)

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def kernel_class(d: int, dtype: str) -> str:
    """The Triton dispatcher's class (kernels/config.py): resident, streamed or step."""
    d_pad = max(16, 1 << (d - 1).bit_length())
    if d_pad <= (32 if dtype == "float32" else 64):
        return "resident"
    return "streamed" if d_pad <= 256 else "step"


def block_k(d: int, dtype: str) -> int:
    """The streamed kernels' K chunk (kernels/config.py): 32 in 16 bit from d_pad 128, else 16."""
    d_pad = max(16, 1 << (d - 1).bit_length())
    return 32 if dtype != "float32" and d_pad >= 128 else 16


#: CTA barriers (bar.sync) of one time step of the resident kernels, counted in their PTX (Triton 3.6,
#: sm_90, bf16 d_pad 64: the whole loop body; Triton 3.9's backward has 42)
RESIDENT_BARRIERS = {"fwd": 24, "bwd": 58}


def barriers(d: int, dtype: str, direction: str) -> int:
    """CTA barriers per step: the resident count, plus one per K-chunk iteration in the streamed kernels
    (the pipelined loop hands its shared buffer over at each): 3 d / BLOCK_K forward (three products
    over K = d), 5 d / BLOCK_K backward (K = d, d and 3 d). At d = 256, K16: 72 forward, 138 backward."""
    klass = kernel_class(d, dtype)
    base = RESIDENT_BARRIERS[direction]
    if klass != "streamed":
        return base
    return base + (3 if direction == "fwd" else 5) * d // block_k(d, dtype)


def _mma_us(flop: float, dtype: str, hw: Hardware) -> float:
    """Tensor-core time of ``flop`` on one SM with mma.sync: fp32 runs 3xTF32 (three TF32 MMAs, half
    the 16-bit rate each: 6x the 16-bit time)."""
    per_sm = hw.tc16_tflops / hw.sms * 1e6  # FLOP per microsecond
    slow = 6.0 if dtype == "float32" else 1.0
    return flop * slow / (per_sm * hw.mma_efficiency * hw.mma_sync_fraction)


def diru_step(B: int, d: int, dtype: str, direction: str, hw: Hardware = H100) -> Dict[str, float]:
    """One time step of the persistent kernel (``direction`` "fwd" or "bwd"), per program (16 rows):
    what it moves and computes, and the resulting latency."""
    klass = kernel_class(d, dtype)
    nbytes = BYTES[dtype]
    programs = math.ceil(B / 16)
    flop = 2 * 16 * 5 * d * d  # three dependent products: [16,d]x[d,3d], [16,d]x[d,d] twice
    weights = 5 * d * d * nbytes  # every weight element once per step
    l2 = 0.0 if klass == "resident" else weights
    smem = weights  # resident: the tiles; streamed: the cp.async-staged chunks, read once more
    # elementwise work per row: fwd u, s, r, z, h (tanh/sigmoid: ~25 instructions, 2 MUFU each);
    # bwd dyp, dzp, dr, da, ds, dh (~10 instructions, no MUFU)
    instr = 16 * d * (5 * 25 if direction == "fwd" else 6 * 10)
    mufu = 16 * d * 5 * 2 if direction == "fwd" else 0
    per_clk = hw.clock_ghz * 1e3  # clocks per microsecond
    t_mma = _mma_us(flop, dtype, hw)
    t_l2_sm = l2 / (hw.l2_bytes_per_clk_sm * per_clk)
    t_l2_all = programs * l2 / (hw.l2_tbs * 1e6)
    t_smem = smem / (hw.smem_bytes_per_clk_sm * per_clk)
    t_elem = instr / (hw.fp32_lanes_per_clk_sm * per_clk) + mufu / (hw.mufu_per_clk_sm * per_clk)
    # 3xTF32 splits every fp32 operand on the CUDA cores (cvt.rna.tf32 for the high part, sub.f32 for
    # the low: two instructions an element): streamed, the 5 d^2 weights each step and the [16, d]
    # left operands; resident, the weights once per launch, so only the left operands
    split = 0.0
    if dtype == "float32":
        split = 2 * ((5 * d * d if klass == "streamed" else 0) + 16 * 5 * d) / (hw.fp32_lanes_per_clk_sm * per_clk)
    n_bar = barriers(d, dtype, direction)
    # dependency latency: each step first waits for its per-step inputs (xp[t] fwd, the saved gates
    # bwd: not prefetched across steps) and, streamed, for the first weight chunk of each product
    t_lat = hw.hbm_latency_us + (3 * hw.l2_latency_us if klass == "streamed" else 0.0) \
        + n_bar * hw.cta_barrier_us
    bound = max(t_mma, t_l2_sm, t_l2_all, t_smem)
    limiter = {t_mma: "tensor cores", t_l2_sm: "L2 stream (one SM)", t_l2_all: "L2 (all SMs)",
               t_smem: "shared memory"}[bound]
    return dict(klass=klass, programs=programs, sms=min(programs, hw.sms), flop=flop, l2_bytes=l2,
                smem_bytes=smem, barriers=n_bar, t_mma=t_mma, t_l2=max(t_l2_sm, t_l2_all), t_smem=t_smem,
                t_elem=t_elem + split, t_split=split, t_lat=t_lat, limiter=limiter, us=bound + t_elem + split + t_lat)


def cudnn_step(B: int, d: int, dtype: str, direction: str, algo: str, hw: Hardware = H100,
               tf32: bool = False) -> float:
    """One LSTM step of cuDNN by algorithm (:func:`cudnn_algo`): "standard" = per step a recurrent GEMM
    [B,d]x[d,4d] and a pointwise kernel (two launches; the backward three); "persist_static" and
    "persist_small_h" = weights resident across the SMs, one grid barrier and an L2 round trip of h
    per step (the same form for both: assumed, the first GPU run calibrates it)."""
    flop = 2 * B * d * 4 * d
    if algo in ("persist_static", "persist_small_h"):
        # the step's GEMM spread over every SM: tensor cores in 16 bit and TF32, FFMA in fp32 with TF32 off
        peak = hw.tc16_tflops if dtype != "float32" else hw.tf32_tflops if tf32 else hw.fp32_tflops
        efficiency = hw.mma_efficiency if dtype != "float32" or tf32 else 0.5
        return hw.grid_barrier_us + hw.l2_latency_us + flop / (peak * 1e6 * efficiency)
    if dtype == "float32" and not tf32:
        t_gemm = flop / (hw.fp32_tflops * 1e6 * 0.5)
    else:
        peak = hw.tf32_tflops if dtype == "float32" else hw.tc16_tflops
        t_gemm = flop / (peak * 1e6 * 0.3)  # a small GEMM: far from peak
    weights = 4 * d * d * BYTES[dtype]
    t_gemm = max(t_gemm, weights / (hw.l2_tbs * 1e6)) + hw.l2_latency_us
    launches = 2 if direction == "fwd" else 3
    return launches * hw.launch_us + t_gemm


def persistent_eligible(B: int, n: int, d: int, dtype: str, layers: int = 1) -> bool:
    """cuDNN's persistent algorithm: float16, one layer, hidden and input sizes multiples of 128,
    batch a multiple of 8 and at most 128 (PyTorch's heuristic for CUDNN_RNN_ALGO_PERSIST_STATIC)."""
    return dtype == "float16" and layers == 1 and d % 128 == 0 and n % 128 == 0 and B % 8 == 0 and B <= 128


#: PyTorch's use_rnn_persist_small_h for LSTM (aten/src/ATen/native/cudnn/RNN.cpp, cuDNN >= 8.2.1,
#: compute capability >= 6): hidden size at most this, by direction
SMALL_H_MAX = {"fwd": 192, "bwd": 128}


def cudnn_algo(B: int, n: int, d: int, dtype: str, direction: str, layers: int = 1) -> str:
    """The algorithm PyTorch's ``get_algo`` asks cuDNN for (unpacked input, no projections), in order:
    CUDNN_RNN_ALGO_PERSIST_STATIC_SMALL_H for every dtype but double when the hidden size is <= 192
    (forward) / <= 128 (backward); CUDNN_RNN_ALGO_PERSIST_STATIC for float16 by
    :func:`persistent_eligible`; else CUDNN_RNN_ALGO_STANDARD. Returns "persist_small_h",
    "persist_static" or "standard"."""
    if dtype != "float64" and d <= SMALL_H_MAX[direction]:
        return "persist_small_h"
    if persistent_eligible(B, n, d, dtype, layers):
        return "persist_static"
    return "standard"


ALGO_FLAG = {"persist_small_h": "S", "persist_static": "P", "standard": ""}


def _gemm_us(flop: float, dtype: str, hw: Hardware) -> float:
    """A large GEMM over all T*B rows (input projection, weight gradients) at 60% of peak: fp32 ones
    run in fp32 (TF32 off), 16-bit ones on tensor cores."""
    peak = hw.fp32_tflops if dtype == "float32" else hw.tc16_tflops
    return flop / (peak * 1e6 * 0.6) + hw.launch_us


def predict(B: int, T: int, d: int, dtype: str, mode: str, hw: Hardware = H100) -> Dict[str, float]:
    """Whole-call times (us) of one layer, one direction, input size n = d (the input projection
    included on both sides) for mode "fwd" (inference) or "fwdbwd"."""
    rows = T * B
    fwd = diru_step(B, d, dtype, "fwd", hw)
    diru = hw.fixed_fwd_us + _gemm_us(2 * rows * d * 3 * d, dtype, hw) + T * fwd["us"]
    algo_fwd, algo_bwd = cudnn_algo(B, d, d, dtype, "fwd"), cudnn_algo(B, d, d, dtype, "bwd")
    std = hw.fixed_fwd_us + _gemm_us(2 * rows * d * 4 * d, dtype, hw) \
        + T * cudnn_step(B, d, dtype, "fwd", "standard", hw)
    lstm = hw.fixed_fwd_us + _gemm_us(2 * rows * d * 4 * d, dtype, hw) + T * cudnn_step(B, d, dtype, "fwd", algo_fwd, hw)
    if mode == "fwdbwd":
        bwd = diru_step(B, d, dtype, "bwd", hw)
        # weight gradients (5 d^2 over T*B rows) + input projection backward (dx and dW_ih)
        diru += hw.fixed_bwd_us + T * bwd["us"] + _gemm_us(2 * rows * 5 * d * d + 2 * 2 * rows * 3 * d * d, dtype, hw)
        lstm_grads = _gemm_us(2 * rows * 4 * d * d * 3, dtype, hw)
        std += hw.fixed_bwd_us + T * cudnn_step(B, d, dtype, "bwd", "standard", hw) + lstm_grads
        lstm += hw.fixed_bwd_us + T * cudnn_step(B, d, dtype, "bwd", algo_bwd, hw) + lstm_grads
    return dict(diru_us=diru, cudnn_us=lstm, cudnn_standard_us=std, ratio=lstm / diru, algo_fwd=algo_fwd,
                algo_bwd=algo_bwd, step_fwd_us=fwd["us"], limiter=fwd["limiter"], klass=fwd["klass"])


def predicted_ratio(dtype: str, mode: str, B: int, T: int, d: int, hw: Hardware = H100) -> Optional[float]:
    """cuDNN time / DIRU time (> 1: DIRU faster) for a grid point, or None outside the model."""
    if dtype not in BYTES or mode not in ("fwd", "fwdbwd") or B not in GRID["B"] or T not in GRID["T"] \
            or d not in GRID["d"]:
        return None
    return predict(B, T, d, dtype, mode, hw)["ratio"]


# ------------------------------------------------------------------ tables

def step_table(hw: Hardware = H100) -> str:
    lines = ["| dtype | d | class | B (programs = SMs) | FLOP / step / SM | L2 bytes / step / SM "
             "| smem bytes / step / SM | barriers fwd / bwd | tensor us | L2 us | elementwise us (3xTF32 split) "
             "| latency us | fwd step us | bound by |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for dtype in GRID["dtype"]:
        for d in GRID["d"]:
            for B in GRID["B"]:
                s = diru_step(B, d, dtype, "fwd", hw)
                split = f" ({s['t_split']:.2f})" if dtype == "float32" else ""
                lines.append(f"| {dtype} | {d} | {s['klass']} | {B} ({s['sms']}) | {s['flop'] / 1e6:.2f} M | "
                             f"{s['l2_bytes'] / 1024:.0f} KB | {s['smem_bytes'] / 1024:.0f} KB | {s['barriers']} / "
                             f"{barriers(d, dtype, 'bwd')} | {s['t_mma']:.2f} | {s['t_l2']:.2f} | {s['t_elem']:.2f}{split} | "
                             f"{s['t_lat']:.2f} | {s['us']:.2f} | {s['limiter']} |")
    return "\n".join(lines)


def ratio_table(hw: Hardware = H100) -> str:
    lines = ["| dtype | d | B | cuDNN algorithm fwd / bwd | cuDNN fwd step us | T=50 fwd | T=50 fwd+bwd | T=512 fwd "
             "| T=512 fwd+bwd |", "|---|---|---|---|---|---|---|---|---|"]
    for dtype in GRID["dtype"]:
        for d in GRID["d"]:
            for B in GRID["B"]:
                algo_fwd, algo_bwd = cudnn_algo(B, d, d, dtype, "fwd"), cudnn_algo(B, d, d, dtype, "bwd")
                step = cudnn_step(B, d, dtype, "fwd", algo_fwd, hw)
                cells = []
                for T in GRID["T"]:
                    for mode in ("fwd", "fwdbwd"):
                        r = predict(B, T, d, dtype, mode, hw)["ratio"]
                        cells.append(f"{r:.2f}" + ("" if r >= 1 else " ✗"))
                lines.append(f"| {dtype} | {d} | {B} | {algo_fwd} / {algo_bwd} | {step:.1f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown(hw: Hardware = H100) -> str:
    return (f"<!-- generated by: python bench/gpu_model.py ({hw.name}) -->\n\n### Per step, per program\n\n"
            f"{step_table(hw)}\n\n### Predicted ratio: cuDNN time / DIRU Triton time (> 1: DIRU faster; "
            f"✗: falls short)\n\n{ratio_table(hw)}\n")


def check(path: str, hw: Hardware = H100) -> str:
    """Measured (gpu_bench.json) against predicted ratios, one line per grid point."""
    result = json.loads(open(path).read())
    by = {}
    for r in result["rows"]:
        by.setdefault((r["dtype"], r["mode"], r["B"], r["T"], r["d"]), {})[r["impl"]] = r["ms"]
    out = [f"{'dtype':8} {'mode':6} {'B':>4} {'T':>4} {'d':>4} {'measured':>9} {'model':>7}"]
    for key in sorted(by):
        cell = by[key]
        if "triton" in cell and "lstm" in cell:
            model = predicted_ratio(*key, hw=hw)
            out.append(f"{key[0]:8} {key[1]:6} {key[2]:>4} {key[3]:>4} {key[4]:>4} "
                       f"{cell['lstm'] / cell['triton']:>9.2f} {model if model is None else f'{model:7.2f}'}")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", metavar="GPU_BENCH_JSON", help="compare a measured grid with the model")
    parser.add_argument("--h200", action="store_true", help="H200 figures (HBM 4.8 TB/s) instead of H100")
    args = parser.parse_args(argv)
    hw = H200 if args.h200 else H100
    print(check(args.check, hw) if args.check else markdown(hw))
    return 0


if __name__ == "__main__":
    sys.exit(main())
