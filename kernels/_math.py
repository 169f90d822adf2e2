"""Elementwise helpers shared by the DIRU Triton kernels.

tanh is written as ``2 * sigmoid(2x) - 1`` (no libdevice call), which the Triton interpreter
runs on CPU and which is exact to a few ulp in absolute terms on the GPU. Both helpers
saturate cleanly: exp overflows to inf, 1/inf = 0, so no NaN for large |x|.
"""

import triton
import triton.language as tl

#: True when triton runs kernels in its interpreter (TRITON_INTERPRET=1 when triton was imported).
INTERPRETED = bool(triton.knobs.runtime.interpret)


def device_fn(fn):
    """``@triton.jit`` for the device helpers the kernels call. Under the interpreter the plain
    Python function instead: the calling kernel has already patched ``triton.language`` for its
    run, and a nested interpreted call re-patches it on every call (about half of the
    interpreter's time in these kernels). On the GPU this is exactly ``triton.jit``."""
    return fn if INTERPRETED else triton.jit(fn)


@device_fn
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@device_fn
def tanh(x):
    return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0


@device_fn
def operand(x, IN_DT: tl.constexpr, OP_DT: tl.constexpr):
    """A matmul operand: rounded to the storage dtype, then held in the dtype the dot runs in.

    On the GPU OP_DT == IN_DT (a bf16/fp16 MMA with fp32 accumulation); under the interpreter,
    whose dot cannot multiply bf16, OP_DT is fp32 and the products are the same numbers.
    """
    return x.to(IN_DT).to(OP_DT)
