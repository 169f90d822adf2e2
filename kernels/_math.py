"""Elementwise helpers shared by the DIRU Triton kernels.

tanh is written as ``2 * sigmoid(2x) - 1`` (no libdevice call), which the Triton interpreter
runs on CPU and which is exact to a few ulp in absolute terms on the GPU. Both helpers
saturate cleanly: exp overflows to inf, 1/inf = 0, so no NaN for large |x|.
"""

import triton
import triton.language as tl


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0


@triton.jit
def operand(x, IN_DT: tl.constexpr, OP_DT: tl.constexpr):
    """A matmul operand: rounded to the storage dtype, then held in the dtype the dot runs in.

    On the GPU OP_DT == IN_DT (a bf16/fp16 MMA with fp32 accumulation); under the interpreter,
    whose dot cannot multiply bf16, OP_DT is fp32 and the products are the same numbers.
    """
    return x.to(IN_DT).to(OP_DT)
