"""Triton kernels for the DIRU recurrence, the package ``diru_fast.kernels``.

This folder sits at the top of the repository; ``setup.py`` installs it as ``diru_fast.kernels``
(``package_dir``; an editable install maps it there too), so ``import diru_fast.kernels`` works
wherever the package is installed. Importing it imports triton; ``diru_fast`` itself never
imports this package at import time. The "triton" backend
(``diru_fast.providers.triton``) calls :func:`scan_fwd` / :func:`scan_bwd`, which implement the
kernel contract of ``diru_fast.scan.contract`` for one layer and one direction. The input
projections of all steps arrive as one precomputed tensor ``xp [T, B, 3d]`` (one GEMM outside);
the weight gradients are GEMMs over all T*B rows afterwards (``diru_fast.scan.ops``).

Design
------
Files: ``forward.py`` (persistent forward), ``backward.py`` (reverse-time backward),
``step.py`` (per-step fallback kernels), ``tiles.py`` (addressing, masked loads, the K-chunked
product), ``_math.py`` (tanh, sigmoid, operand rounding), ``config.py`` (size classes),
``launch.py`` (allocation, weight padding, grids, launches), ``compile_check.py`` (sm_80/sm_90
compile + register/shared-memory report, no GPU needed).

Persistent kernels (one launch per layer and direction for the whole sequence):

- Grid ``(cdiv(B, 16),)``. Program i owns batch rows ``[16 i, 16 i + 16)`` (BLOCK_B = 16, the
  smallest MMA tile: the most programs, i.e. SMs, for a given batch) for all T steps.
- The state ``h [16, d_pad]`` (forward) or ``dh`` (backward) stays in registers in fp32 for the
  whole loop; hs[t] is written in the input dtype, the gates u|s|z|r in fp32.
- Per step: three dependent products (``h W_hh^T`` for the three gates at once, ``o W_int^T``,
  ``q W_out^T``; backward ``dyp W_out``, ``dzp W_int``, ``[da|ds|dr] W_hh``) with all
  elementwise work fused around them; masked steps (t >= len) select the old state and write
  zero gates / gradients.
- Weights: the launcher zero-pads them to ``d_pad`` (no copy when d is a power of two >= 16),
  so no weight load is masked and padded lanes are exact zeros.
  *resident* class: the five ``d_pad x d_pad`` tiles are loaded once before the time loop
  (the compiler keeps them in shared memory: 45 KB at d_pad = 64 in bf16) and the products
  take h, o, q straight from registers.
  *streamed* class: each product runs in BLOCK_K column chunks (16; 32 in 16 bit at d_pad >= 128,
  so that a chunk of the left operand is 4 bytes a thread, the least cp.async moves: every chunk is
  prefetched); the left operand is
  written (rounded to the storage dtype) to a per-program scratch block and read back after a
  CTA barrier (forward: h from hs[t-1] itself; three barriers per step), and the weight chunks
  stream from L2 every step. Scratch alternates between two buffers by step parity and all
  in-loop addresses are built from a moving scalar base + 1-D offsets, so no 2-D address
  tensor is loop invariant (hoisted ones cost ~160 registers in the first version).
- Dtypes: float32 (products as 3xTF32 on tensor cores; TF32 when PyTorch allows TF32),
  bfloat16 / float16 (bf16/fp16 MMA, fp32 accumulation, state and gates); float64 only under
  the interpreter. tanh / sigmoid are plain ``tl`` arithmetic (no libdevice, so the interpreter
  runs them): the fp32 tanh is an odd polynomial near 0 and the exp form beyond (``_math.py``).

Options (docs/THEORY.md §1.2–1.6): every regime takes them as constexpr flags, so the plain cell
compiles exactly as before. RELU (``u = relu(a)``, slope ``[u > 0]``); NK > 0, attention over NK
compartments: xp / d_p rows ``3d+NK`` wide, saved ``4d+NK`` (alpha last), the logits' h part a
``[BLOCK_B, d] x [d, K_PAD]`` product (K_PAD = power of two >= max(NK, 16), lanes >= NK masked),
softmax, per-unit scale ``NK * alpha[compartment_of[j]]`` (a gather from the int32 [d] vector);
backward: segment sums of ``do*u*s`` per compartment (a one-hot product), the softmax backward and
``de @ W_hh[3d:]`` into dh (the per-step fallback adds one small launch per step for the
cross-tile segment sums); HAS_MASK: ``o *= mask[t]`` forward, ``do *= mask[t]`` backward; HAS_DECAY
(time decay, ``decay [T, B, d]`` in ACC_DT): the step reads ``hd = decay[t] * h`` in its W_hh products
and its residual (the streamed forward writes the rounded hd to a third scratch slot in place of
reading hs[t-1]; per step, fwd_out writes the next step's rounded hd for the gates to read), masked
steps keep the undecayed h, and the backward carries ``decay[t] * dL/dhd`` to step t-1 on live rows.
Formed in the step instead of read (the eager path, ``diru_fast.scan.ops.StepOptionsScan``, as the C++
CPU kernel does): MASK_HASH, the dropout mask from its seed (``_math.dropout_mask``: the counter-based
hash of ``diru_fast/scan/dropout.py``, bitwise the mask of every other backend); DECAY_RATE, the factors
``exp(-rate * dt[t])`` from the rates ``softplus(lambda) [d]`` and gaps ``dt [T, B]`` (``_math.decay_factors``),
with the backward writing the decayed states ``hd`` (W_hh's gradient rows), ``dL/ddt`` and per-program
``dL/drate`` (no ``[T*B, 3d+k] x [3d+k, d]`` product afterwards); WANT_O, the integration inputs ``o``
(W_int's gradient rows: ``backward.diru_integration_inputs`` after the persistent backward, bwd_do per
step). Their register budget: ``config.for_in_step`` and ``choose(..., in_step=True)``.

Triton versions (``compat.py``): the kernels need Triton >= 3.0, attention 3.3 (``tl.gather``;
older ones leave it out of ``OPTIONS``); the interpreter's float64 needs 3.5, and under NumPy >= 2.4 the interpreter needs 3.7. Importing this package with an
older one raises ImportError saying so (the "triton" backend then reports it as unavailable).
Every ``tl.dot`` names ``out_dtype=ACC_DT``: Triton 3.5 and 3.7 (checked) take a float64 accumulator only then.

Dispatcher (``config.choose``): d_pad = next power of two >= max(d, 16).

==============  ==========================================  ==========================================
d_pad           16-bit                                      float32 (and float64)
==============  ==========================================  ==========================================
16              resident, 2 warps                           resident, 2 warps
32              resident, 4 warps                           resident, 4 warps
64              resident, 4 warps                           streamed K16, 4 warps, 3 stages
128             streamed K32, 8 warps, 3 stages, maxnreg    streamed K16, 8 warps, 3 stages, maxnreg
256             streamed K32, 8 warps, 3 stages, maxnreg    streamed K16, 8 warps, 4 stages (backward 3),
                                                            maxnreg
> 256           per-step kernels (below)                    per-step kernels
==============  ==========================================  ==========================================

"stages" software-pipelines the K-chunk loops (cp.async prefetch of the next chunks; without
it every chunk waits a full L2 round trip); "maxnreg" = 255 lets an 8-warp program use 255
registers (ptxas otherwise caps it at 128 to fit two programs per SM, and spills).

fp32 at d_pad = 64 streams because 3xTF32 keeps two copies of each operand: resident weights
would take 172 KB of shared memory (> 163 KB on sm_80). The full-width fp32 accumulators cap
the persistent class at d_pad = 256.

Per-step fallback (d > 256, and attention at d_pad 256 or with more than 8 compartments at d_pad >= 128,
where the streamed kernels would spill: ``config.choose``; ``step.py``): three launches per time step (forward: gates, integration,
output; backward: dq, do, dh), each a tiled GEMM with its epilogue fused; grid
``(cdiv(B, 32), cdiv(d, 64))``, K chunks of 32, 8 warps, 3 stages; state and dh carried in fp32
buffers.

Verified without a GPU: every kernel and regime against the float64 contract under
``TRITON_INTERPRET=1`` (odd shapes, lengths, masks, full-mode gradcheck; tests/providers/
test_triton.py and the conformance suite tests/scan/test_ops.py); every configuration the
dispatcher can pick compiles for sm_80 and sm_90 with shared memory in bounds and no register
spills where d and B fill the tiles, and with no approximate instruction but ``ex2.approx.f32``
and ``div.full.f32`` (tests/providers/test_triton_compile.py); the fp32 math on the GPU (those two
at their documented 2-ulp bounds, 3xTF32 products) emulated on CPU and run through the contract
within the float32 rule (tests/providers/test_triton_math.py).

Unverified without a GPU: that the compiled kernels run correctly on a device (the CTA
barriers around the scratch, 3xTF32 accuracy, the interpreter-vs-compiler differences), their
speed, and the block sizes (not tuned: ``bench/gpu_bench.py --tune``). ``bench/gpu_check.sh``
checks all of it in one call on a GPU machine.
"""

import triton as _triton

from . import compat

# First: an unusable Triton is an ImportError naming the version and the fix (kernels/compat.py).
compat.check(_triton.__version__, compat.interpreting(_triton), compat.installed_numpy())

from . import config  # noqa: E402
from .config import KernelConfig, all_configs, choose, pad_hidden  # noqa: E402
from .launch import (ATTENTION_PROBLEM, FLOAT64_PROBLEM, INTERPRETED, OPTIONS, SUPPORTED_DTYPES,  # noqa: E402
                     scan_bwd, scan_fwd, tf32_allowed)

__all__ = ["KernelConfig", "all_configs", "choose", "compat", "config", "pad_hidden", "INTERPRETED",
           "SUPPORTED_DTYPES", "FLOAT64_PROBLEM", "ATTENTION_PROBLEM", "OPTIONS", "scan_fwd", "scan_bwd",
           "tf32_allowed"]
