"""Which kernel and block sizes a call gets: the dispatcher's size classes (pure Python).

``d_pad = next power of two >= max(d, 16)`` (``tl.arange`` needs powers of two, ``tl.dot``
needs every dim >= 16 on the GPU; the weights are zero-padded to it). Classes (block sizes per
d_pad and dtype: the table in ``kernels/__init__.py``):

==========  ======================  ==========================================================
class       d_pad                   kernel
==========  ======================  ==========================================================
resident    16..64 (fp32: 16..32)   persistent; the five d x d weight tiles loaded once per
                                    launch and kept in shared memory by the compiler
streamed    up to 256               persistent; weights streamed from L2 in BLOCK_K-row chunks
step        > 256                   three per-step fused GEMM+epilogue launches per time step
==========  ======================  ==========================================================

Persistent kernels own BLOCK_B = 16 batch rows per program (the smallest tile an MMA takes:
the most programs, i.e. SMs, for a given batch); the full-width fp32 accumulators
``[BLOCK_B, d_pad]`` are what caps the persistent class at d_pad = 256. fp32 runs its
products as 3xTF32, which keeps two copies of each operand in shared memory: resident
fp32 weights at d_pad = 64 would take 172 KB (> 163 KB on sm_80), so fp32 streams from 64.

The block sizes and warp counts are the spill-free choices of ``compile_check.py`` (ptxas
-v, sm_80 and sm_90); they are not tuned on a GPU yet (``bench/gpu_bench.py --tune`` does
that). ``all_configs()`` lists every configuration
``choose()`` can return, so the compile check builds each one for sm_80 and sm_90.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple

RESIDENT_MAX_D = {"float32": 32, "float64": 32, "bfloat16": 64, "float16": 64}
STREAMED_MAX_D = 256
DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class KernelConfig:
    mode: str  # "resident" | "streamed" | "step"
    d_pad: int  # padded hidden size (persistent modes); 0 for "step" (any d)
    block_b: int  # batch rows per program (BLOCK_B; BLOCK_M for "step")
    block_k: int  # K chunk of the streamed products (== d_pad for "resident")
    block_n: int = 0  # hidden units per program ("step" only)
    num_warps: int = 4
    num_stages: int = 1
    maxnreg: Optional[int] = None  # ptxas register cap; 255 lets 8-warp programs use 255 (1 program / SM)
    bwd_stages: Optional[int] = None  # num_stages of the backward kernels, where it differs

    def __post_init__(self):
        if self.mode not in ("resident", "streamed", "step"):
            raise ValueError(f"unknown kernel mode {self.mode!r}")
        for name in ("block_b", "block_k") + (("block_n",) if self.mode == "step" else ("d_pad",)):
            value = getattr(self, name)
            if value < 16 or value & (value - 1):
                raise ValueError(f"{name}={value}: must be a power of two >= 16 (tl.dot and tl.arange need it)")

    @property
    def persistent(self) -> bool:
        return self.mode != "step"

    @property
    def stages_bwd(self) -> int:
        """num_stages of the backward kernels."""
        return self.bwd_stages or self.num_stages

    def label(self) -> str:
        if self.mode == "step":
            return f"step-m{self.block_b}-n{self.block_n}-k{self.block_k}-w{self.num_warps}-s{self.num_stages}"
        return f"{self.mode}-d{self.d_pad}-b{self.block_b}-k{self.block_k}-w{self.num_warps}-s{self.num_stages}" + (
            f"-r{self.maxnreg}" if self.maxnreg else "") + (f"-sb{self.bwd_stages}" if self.bwd_stages else "")


def dot_precision(dtype: str, interpreted: bool = False, allow_tf32: bool = False) -> str:
    """``tl.dot`` input_precision for fp32 operands: 3xTF32 (fp32-level accuracy on tensor
    cores) by default, plain TF32 when PyTorch allows TF32 matmuls, IEEE under the
    interpreter (numpy). Irrelevant for 16-bit and fp64 operands."""
    if dtype != "float32" or interpreted:
        return "ieee"
    return "tf32" if allow_tf32 else "tf32x3"


def pad_hidden(d: int) -> int:
    """The power of two >= max(d, 16) the persistent kernels tile the hidden size to."""
    return max(16, 1 << (int(d) - 1).bit_length())


def pad_compartments(k: int) -> int:
    """The power of two >= max(k, 16) the kernels tile the k attention logits to (tl.dot needs 16)."""
    return max(16, 1 << (int(k) - 1).bit_length()) if k > 1 else 16


_OVERRIDE: Optional[KernelConfig] = None


@contextmanager
def override(cfg: Optional[KernelConfig]) -> Iterator[None]:
    """Within the block every launch uses ``cfg`` (tests force a regime; tuning tries configs)."""
    global _OVERRIDE
    previous, _OVERRIDE = _OVERRIDE, cfg
    try:
        yield
    finally:
        _OVERRIDE = previous


#: Attention over more compartments than this turns the streamed kernels' attention products into
#: matrix products, which spill about 1 KB per thread at d_pad >= 128 (compile_check.py
#: --all-options): such calls run the per-step kernels instead.
STREAMED_ATTENTION_MAX_K = 8

#: Attention at a larger d_pad (256) spills in the streamed kernels with Triton 3.6 (what PyTorch's
#: CUDA wheels ship): 8-40 B per thread in the fp32 and 16-bit forward, 40-130 B in the fp32 backward
#: (bench/results/triton-compile-3.6.txt): such calls run the per-step kernels instead.
STREAMED_ATTENTION_MAX_D = 128

#: Dropout and time decay together in the float32/float64 streamed forward at a larger d_pad (256) spill
#: 8 B per thread on sm_90 with Triton 3.9 (bench/results/triton-compile-3.9.txt): such calls run the
#: per-step kernels instead.
STREAMED_CROWDED_MAX_D = 128
#: With both formed in the step (the seeded mask, time decay from rates), the 16-bit streamed backward at
#: d_pad 256 spills too (32 B per thread on sm_90, Triton 3.9): those calls also run the per-step kernels.


def choose(d: int, dtype: str, compartments: int = 0, crowded: bool = False, in_step: bool = False) -> KernelConfig:
    """The configuration for hidden size ``d``, input dtype name ``dtype`` and ``compartments``
    attention compartments (0: no attention); ``crowded``: dropout and time decay are both on;
    ``in_step``: an option is formed in the step (the seeded mask or time decay from rates; see
    :func:`for_in_step` for the resident kernels). The batch size does not change it: a launch takes as
    many 16-row programs as the batch needs."""
    if _OVERRIDE is not None:
        return _OVERRIDE
    d_pad = pad_hidden(d)
    if d_pad <= RESIDENT_MAX_D[dtype]:
        return KernelConfig("resident", d_pad, block_b=16, block_k=d_pad, num_warps=2 if d_pad == 16 else 4)
    spills = compartments > 0 and (d_pad > STREAMED_ATTENTION_MAX_D or (
        d_pad >= 128 and compartments > STREAMED_ATTENTION_MAX_K))
    spills = spills or (crowded and (dtype in ("float32", "float64") or in_step) and d_pad > STREAMED_CROWDED_MAX_D)
    if d_pad <= STREAMED_MAX_D and not spills:
        # num_stages = 3 software-pipelines the K-chunk loops: cp.async prefetches the next two weight
        # and operand chunks (the streamed products are L2-latency bound without it). cp.async moves
        # at least 4 bytes a thread: a 16 x BLOCK_K operand chunk over 8 warps is 16 * 16 * 2 / 256 = 2
        # bytes in 16 bit at BLOCK_K = 16, which Triton then loads synchronously (ld.global, st.shared,
        # a barrier: one exposed L2 round trip per chunk), so 16-bit takes BLOCK_K = 32 (4 bytes a
        # thread: every chunk prefetched); fp32's 16 x 16 chunk is already 4 bytes a thread.
        # fp32 at d_pad 256: the forward four stages (with three, Triton 3.9 spills 4-12 B on sm_90), the
        # backward three (with four, Triton 3.6 spills 56 B on sm_90).
        sixteen = dtype in ("bfloat16", "float16")
        if d_pad <= 64:
            return KernelConfig("streamed", d_pad, block_b=16, block_k=16, num_warps=4, num_stages=3)
        wide32 = not sixteen and d_pad == 256
        return KernelConfig("streamed", d_pad, block_b=16, block_k=32 if sixteen else 16, num_warps=8,
                            num_stages=4 if wide32 else 3, maxnreg=255, bwd_stages=3 if wide32 else None)
    # 8 warps: with 4, Triton 3.6 spills 8 B in the backward dh kernel with every option on
    return KernelConfig("step", 0, block_b=32, block_k=32, block_n=64, num_warps=8, num_stages=3)


def for_in_step(cfg: KernelConfig, dtype: str, compartments: int = 0) -> KernelConfig:
    """The configuration ``cfg`` for a call with options formed in the step (Triton 3.9, sm_90): the
    resident kernels get the whole register file (``maxnreg`` 255: without it ptxas capped the fp32 d_pad
    16 backward at 168 registers and spilled 24 B), with 8 warps at d_pad 64 in 16 bit with attention (4
    spilled 56 B in the backward); the streamed d_pad 64 kernels (fp32) 8 warps and 255 registers (4 warps
    spilled 12 B in the backward without attention). Other configurations are returned as they are."""
    if cfg.mode == "streamed" and cfg.d_pad == 64:
        return dataclasses.replace(cfg, num_warps=8, maxnreg=255)
    if cfg.mode != "resident":
        return cfg
    wide = cfg.d_pad == 64 and compartments > 0 and dtype in ("bfloat16", "float16")
    return dataclasses.replace(cfg, maxnreg=255, num_warps=8 if wide else cfg.num_warps)


def all_configs() -> Iterator[Tuple[KernelConfig, str]]:
    """Every (config, dtype) ``choose`` can return (one representative d per d_pad)."""
    seen = set()
    d = 16
    while d <= 2 * STREAMED_MAX_D:
        for dtype in DTYPES:
            cfg = choose(d, dtype)
            if (cfg, dtype) not in seen:
                seen.add((cfg, dtype))
                yield cfg, dtype
        d *= 2
