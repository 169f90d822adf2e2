"""The fp32 GPU math of the Triton kernels, emulated on CPU at the PTX instructions' documented bounds.

For fp32, the kernels' elementwise helpers (``kernels/_math.py``) compile to ``mul.f32``, ``add.f32``,
``fma.rn.f32`` (correctly rounded), ``ex2.approx.f32`` (``tl.exp(v)`` is ``ex2.approx(v * log2 e)``)
and ``div.full.f32`` (fp32 ``/``); the products run as 3xTF32 on tensor cores. Here each of those is
restated on float32 CPU tensors:

- the correctly rounded instructions: float32 torch ops (``fma``: in float64, then rounded once);
- ``ex2.approx.f32`` and ``div.full.f32``: the exact value moved by ``k`` ulp and rounded to
  float32, ``|k| <= 2`` (their documented maximum error): ``mode="exact"`` k = 0, ``"high"`` k = +2
  and ``"low"`` k = -2 everywhere (a systematic bias, the worst case for a recurrence),
  ``"random"`` k uniform in [-2, 2] from a seeded generator;
- 3xTF32 ``acc + a @ b`` (Triton's ``input_precision="tf32x3"``) as its PTX does it (Triton 3.6 and
  3.9, sm_80 and sm_90, read from a compiled 16 x 16 x 16 dot): the high part ``cvt.rna.tf32.f32``
  (round to nearest, ties away, 10 mantissa bits), the low part ``sub.f32`` of the two with no
  conversion, which the ``mma.sync ... .tf32`` instruction then reads truncated (it ignores the 13
  low mantissa bits of a .tf32 operand); two small products chained from zero, the big one on top
  of them, and the accumulator added last: ``acc + ((a_lo b_hi + a_hi b_lo) + a_hi b_hi)``.
  Not emulated: the order in which one MMA sums its K products (torch's float32 matmul picks its
  own); that moves each product by about one float32 rounding per term, far below the 8 ulp of
  slack of the float32 rule the tests apply.

:class:`KernelMath` is a ``TorchFunctionMode`` that sends ``torch.tanh``, ``torch.sigmoid`` and
the float32 matrix products to these, so the kernel contract itself (``diru_fast.scan.contract``)
runs as the GPU kernels would compute it, without a second copy of the recurrence.

tests/providers/test_triton_compile.py checks that the compiled kernels hold no approximate
instruction other than these two; tests/providers/test_triton_math.py checks that
:func:`tanh` / :func:`sigmoid` restate ``kernels/_math.py`` (against the interpreter).
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch.overrides import TorchFunctionMode

LOG2E_F32 = float(torch.tensor(math.log2(math.e), dtype=torch.float32))  # the constant of tl.exp
MODES = ("exact", "random", "high", "low")
APPROX_ULPS = 2.0  # ex2.approx.f32 and div.full.f32: at most 2 ulp


def ulp(x: torch.Tensor) -> torch.Tensor:
    """The spacing of float32 at |x| (float64 tensor); the smallest normal spacing near 0."""
    a = x.abs().to(torch.float32)
    up = torch.nextafter(a, torch.full_like(a, math.inf))
    return torch.clamp((up.double() - a.double()), min=2.0 ** -149)


class Primitives:
    """The fp32 instructions, with the approximate ones at a chosen point of their error bound."""

    def __init__(self, mode: str = "exact", seed: int = 0):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.mode = mode
        self.gen = torch.Generator().manual_seed(seed)

    def _approx(self, exact: torch.Tensor) -> torch.Tensor:  # exact: float64 -> float32 within 2 ulp
        if self.mode == "exact":
            return exact.to(torch.float32)
        if self.mode == "random":
            k = (torch.rand(exact.shape, generator=self.gen, dtype=torch.float64) * 2 - 1) * APPROX_ULPS
        else:
            k = torch.full_like(exact, APPROX_ULPS if self.mode == "high" else -APPROX_ULPS)
        finite = torch.isfinite(exact.to(torch.float32))  # past float32's range: inf, as the hardware
        moved = torch.where(finite, exact + k * ulp(exact), exact).to(torch.float32)
        # rounding the moved value may overshoot the bound by a fraction of an ulp: clamp to 2 ulp
        lo = (exact - APPROX_ULPS * ulp(exact)).to(torch.float32)
        hi = (exact + APPROX_ULPS * ulp(exact)).to(torch.float32)
        return torch.where(finite, torch.minimum(torch.maximum(moved, lo), hi), moved)

    def ex2(self, v: torch.Tensor) -> torch.Tensor:  # ex2.approx.f32
        return self._approx(torch.exp2(v.double()))

    def exp(self, v: torch.Tensor) -> torch.Tensor:  # tl.exp on fp32: mul.f32 by log2 e, ex2.approx.f32
        return self.ex2(v * LOG2E_F32)

    def div(self, a, b: torch.Tensor) -> torch.Tensor:  # div.full.f32
        a = torch.as_tensor(a, dtype=torch.float32)
        return self._approx(a.double() / b.double())

    @staticmethod
    def fma(a, b, c) -> torch.Tensor:  # fma.rn.f32 (float64 holds a*b exactly; one rounding of the sum)
        a, b, c = (torch.as_tensor(t, dtype=torch.float32) for t in (a, b, c))
        return (a.double() * b.double() + c.double()).to(torch.float32)


def tanh(x: torch.Tensor, p: Primitives) -> torch.Tensor:
    """``kernels/_math.py``'s fp32 tanh, instruction by instruction (its PTX: abs, |x|*|x|, the
    Horner FMAs, y*P, fma(|x|, y*P, |x|); |x|+|x|, exp, +1, div.full, 1 - w; the selects)."""
    from diru_fast.kernels import _math

    c0, c1, c2, c3, c4 = _math.TANH_POLY
    x = x.to(torch.float32)
    ax = x.abs()
    y = ax * ax
    poly = p.fma(p.fma(p.fma(p.fma(torch.full_like(x, c4), y, c3), y, c2), y, c1), y, c0)
    small = p.fma(ax, y * poly, ax)
    big = 1.0 - p.div(2.0, p.exp(ax + ax) + 1.0)
    t = torch.where(ax < _math.TANH_SPLIT, small, big)
    return torch.where(x < 0, -t, t)


def tanh_textbook(x: torch.Tensor, p: Primitives) -> torch.Tensor:
    """The previous fp32 tanh of the kernels, ``2 / (1 + exp(-2x)) - 1``, for comparison."""
    x = x.to(torch.float32)
    return p.div(2.0, 1.0 + p.exp(-2.0 * x)) - 1.0


def sigmoid(x: torch.Tensor, p: Primitives) -> torch.Tensor:
    """``kernels/_math.py``'s sigmoid: ``1 / (1 + exp(-x))``."""
    x = x.to(torch.float32)
    return p.div(1.0, 1.0 + p.exp(-x))


def tf32_hi(x: torch.Tensor) -> torch.Tensor:
    """Round float32 to TF32 (10 explicit mantissa bits), to nearest with ties away from zero
    (``cvt.rna.tf32.f32``): add half of the dropped range to the magnitude bits, then truncate."""
    bits = x.contiguous().view(torch.int32)
    rounded = (bits + 0x1000) & ~0x1FFF
    special = ~torch.isfinite(x)
    return torch.where(special, x, rounded.view(torch.float32))


def tf32_trunc(x: torch.Tensor) -> torch.Tensor:
    """What ``mma.sync`` reads of a float32 register given as a .tf32 operand: the 13 low mantissa
    bits dropped (truncation toward zero)."""
    bits = x.contiguous().view(torch.int32)
    special = ~torch.isfinite(x)
    return torch.where(special, x, (bits & ~0x1FFF).view(torch.float32))


def tf32x3_addmm(acc: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``acc + a @ b`` as Triton's 3xTF32 PTX computes it (float32 in, float32 accumulation): high
    parts by ``cvt.rna``, low parts ``a - a_hi`` read truncated by the MMA, the two small products
    from zero, the big one on top, ``acc`` last."""
    a_hi, b_hi = tf32_hi(a), tf32_hi(b)
    a_lo, b_lo = tf32_trunc(a - a_hi), tf32_trunc(b - b_hi)
    small = torch.addmm(torch.zeros_like(acc), a_lo, b_hi)
    small = torch.addmm(small, a_hi, b_lo)
    return acc + torch.addmm(small, a_hi, b_hi)


class KernelMath(TorchFunctionMode):
    """Within the block, float32 tanh / sigmoid / matrix products are the GPU kernels' (above).

    ``tanh_fn`` picks the tanh formula (:func:`tanh` by default, :func:`tanh_textbook` for the
    previous one). Other dtypes and every other operation run unchanged.
    """

    _MATMULS = (torch.matmul, torch.mm, torch.Tensor.matmul, torch.Tensor.mm, torch.Tensor.__matmul__)

    def __init__(self, primitives: Primitives, tanh_fn=tanh):
        super().__init__()
        self.p, self.tanh_fn = primitives, tanh_fn

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        first: Optional[torch.Tensor] = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if first is not None and first.dtype == torch.float32:
            if func in (torch.tanh, torch.Tensor.tanh) and not kwargs:
                return self.tanh_fn(first, self.p)
            if func in (torch.sigmoid, torch.Tensor.sigmoid) and not kwargs:
                return sigmoid(first, self.p)
            if func is torch.addmm and len(args) == 3 and not kwargs:
                acc, a, b = args
                return tf32x3_addmm(acc.expand(a.shape[0], b.shape[1]).contiguous(), a, b)
            if func in self._MATMULS and len(args) == 2 and not kwargs and args[0].dim() == 2 \
                    and args[1].dim() == 2:
                a, b = args
                return tf32x3_addmm(a.new_zeros(a.shape[0], b.shape[1]), a, b)
        return func(*args, **kwargs)
