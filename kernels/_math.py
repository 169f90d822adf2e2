"""Elementwise helpers shared by the DIRU Triton kernels.

No libdevice call: every helper is plain ``triton.language`` arithmetic, which the interpreter
runs on CPU and which compiles, for fp32 on the GPU, to the PTX ``mul.f32``/``fma.rn.f32``,
``ex2.approx.f32`` (``tl.exp`` is ``ex2.approx(x * log2 e)``) and ``div.full.f32`` (fp32 ``/``).
The two approximate instructions are documented to within 2 ulp;
tests/providers/test_triton_math.py checks that the compiled PTX holds exactly these
instructions and emulates them at those bounds.

- ``sigmoid(x) = 1 / (1 + exp(-x))``: no cancellation anywhere, a few ulp relative where the
  result is near 1/2 and 1, tiny absolute error where it is near 0.
- ``tanh``, fp32 (the accumulation dtype of fp32, bf16 and fp16 inputs): the textbook
  ``2 / (1 + exp(-2x)) - 1`` loses everything near 0 to the final subtraction (its absolute error
  stays ~1e-7 while tanh(x) -> 0, against PyTorch's relative ~1 ulp), so it is split at
  ``|x| = TANH_SPLIT`` (tanh = 0.537 there):

      |x| <  0.6:  tanh|x| = |x| + |x| y P(y),  y = x^2, P of degree 4 (TANH_POLY), Horner in FMAs
      |x| >= 0.6:  tanh|x| = 1 - 2 / (exp(2|x|) + 1)   (result >= 0.537: no cancellation)
      tanh x = sign(x) tanh|x|

  P is a weighted least-squares fit (Lawson-iterated towards minimax, on 6000 Chebyshev nodes of
  y in [0, 0.36]) of (tanh(x)/x - 1)/y, relative to tanh; its coefficients rounded to fp32 keep
  the approximation error below 0.05 ulp, and the fp32 evaluation within 0.75 ulp. Both branches
  saturate and propagate NaN: exp overflows to inf, 2/inf = 0.
- ``tanh``, fp64 (the interpreter only): ``2 / (1 + exp(-2x)) - 1``, whose absolute error of
  ~1e-16 is what the float64 tests' 1e-12 needs (a degree-4 polynomial would not be).

The options formed inside the step (docs/THEORY.md §1.5, §1.6):

- ``dropout_mask``: compartment dropout's counter-based mask, the 32-bit hash of
  ``diru_fast/scan/dropout.py`` (integer multiplies, shifts and xors on uint32: ``mul.lo``, ``shr.u32``,
  ``xor.b32``), so one seed gives the same mask as the CPU kernel and the torch backend.
- ``decay_factors``: time decay's ``exp(-rate * dt)`` from the rates ``softplus(lambda) [d]`` and the
  gaps ``dt [B]`` of one step (one ``ex2.approx.f32`` per element in fp32).
"""

import triton
import triton.language as tl

from .compat import interpreting

#: True when triton runs kernels in its interpreter (TRITON_INTERPRET=1 when triton was imported).
INTERPRETED = interpreting(triton)


def device_fn(fn):
    """``@triton.jit`` for the device helpers the kernels call. Under the interpreter the plain
    Python function instead: the calling kernel has already patched ``triton.language`` for its
    run, and a nested interpreted call re-patches it on every call (about half of the
    interpreter's time in these kernels). On the GPU this is exactly ``triton.jit``."""
    return fn if INTERPRETED else triton.jit(fn)


@device_fn
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


#: Where the fp32 tanh switches from the odd polynomial to the exp form.
TANH_SPLIT = 0.6
#: P(y) = TANH_POLY[0] + TANH_POLY[1] y + ... (fp32 values): tanh|x| = |x| + |x| y P(y) below TANH_SPLIT.
TANH_POLY = tuple(float.fromhex(c) for c in
                  ("-0x1.55553ep-2", "0x1.1109aep-3", "-0x1.b898dcp-5", "0x1.54b896p-6", "-0x1.825826p-8"))
_SPLIT = tl.constexpr(TANH_SPLIT)
_P0, _P1, _P2, _P3, _P4 = (tl.constexpr(c) for c in TANH_POLY)


@device_fn
def tanh(x):
    if x.dtype == tl.float64:  # resolved when the kernel is built (the interpreter's float64 runs)
        return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0
    # on |x|, one sign select at the end (the form that keeps the fp32 d_pad = 256 forward free
    # of register spills; both branches are odd, so this is exactly sign(x) * tanh|x|)
    ax = tl.abs(x)
    y = ax * ax
    p = (((_P4 * y + _P3) * y + _P2) * y + _P1) * y + _P0
    t = tl.where(ax < _SPLIT, ax + ax * (y * p), 1.0 - 2.0 / (tl.exp(2.0 * ax) + 1.0))
    return tl.where(x < 0.0, -t, t)


@device_fn
def softmax_rows(e, lane_ok):
    """Row softmax of ``e [R, C]`` over the lanes where ``lane_ok [C]`` holds (the others: exact 0)."""
    e = tl.where(lane_ok[None, :], e, float("-inf"))
    p = tl.exp(e - tl.max(e, axis=1)[:, None])
    return p / tl.sum(p, axis=1)[:, None]


#: Up to this many compartments the streamed kernels form the attention rows' products with h
#: (forward) and de (backward) as NK row dot products / rank-1 updates on registers, not as an MMA in
#: the K-chunk loop (which made the fp32 d_pad = 256 forward spill ~4 KB); beyond, an MMA.
SELECT_MAX_K = tl.constexpr(8)


@device_fn
def spread(alpha, comp):
    """Per unit j, ``alpha[:, comp[j]]``: ``alpha [R, K_PAD]``, ``comp [C]`` int32 -> ``[R, C]`` (a
    gather; lanes with comp = -1, the padded units, read compartment 0: their u, hence o, is 0)."""
    idx = tl.maximum(comp, 0)[None, :] + tl.zeros([alpha.shape[0], comp.shape[0]], tl.int32)
    return tl.gather(alpha, idx, 1)


@device_fn
def segment_sums(v, comp, kc):
    """Per compartment c, the sum of ``v [R, C]`` over the units j with ``comp[j] == c`` -> ``[R, K_PAD]``
    (0 in the lanes no unit belongs to): one product with the one-hot ``[C, K_PAD]`` matrix, exact
    0/1 factors with IEEE fp32 (or fp64) FMAs (its operands in shared memory: no hoisted masks)."""
    onehot = (comp[:, None] == kc[None, :]).to(v.dtype)  # [C, K_PAD]
    return tl.dot(v, onehot, input_precision="ieee", out_dtype=v.dtype)


@device_fn
def mix32(x):
    """The 32-bit finalizer of the dropout hash (uint32 in, uint32 out; products mod 2^32)."""
    x = x ^ (x >> 16)
    x = x * 0x7FEB352D
    x = x ^ (x >> 15)
    x = x * 0x846CA68B
    return x ^ (x >> 16)


@device_fn
def dropout_mask(rows, cols, t, B, seed_lo, seed_hi, threshold, scale):
    """Compartment dropout's mask of step ``t`` for batch ``rows [R]`` and units ``cols [C]``: ``scale``
    where ``hash(seed, t*B + row, unit) >= threshold``, else 0 (``[R, C]``, the dtype of ``scale``).
    ``seed_lo``, ``seed_hi`` (the seed's 32-bit halves) and ``threshold`` arrive as int32 scalars holding
    the uint32 bits; the hash is diru_fast/scan/dropout.py's, row key first (two mixes per row), then
    one mix per element."""
    r = tl.cast(t, tl.int64) * B + rows  # [R] int64 row-step index
    key = mix32(seed_lo.to(tl.uint32, bitcast=True) ^ r.to(tl.uint32))
    key = mix32(key ^ seed_hi.to(tl.uint32, bitcast=True) ^ (r >> 32).to(tl.uint32))  # [R]
    unit = cols.to(tl.uint32) * 0x9E3779B9  # [C]
    keep = mix32(key[:, None] ^ unit[None, :]) >= threshold.to(tl.uint32, bitcast=True)
    return tl.where(keep, scale, 0.0)


@device_fn
def decay_factors(rate_ptr, dt_t_ptr, rows, cols, row_ok, col_ok):
    """Time decay's factors of one step, ``exp(-rate[cols] * dt_t[rows])`` ``[R, C]`` (rate: the
    ``softplus(lambda) [d]`` the launcher formed, dt_t: the step's gaps ``[B]``, both ACC_DT; masked lanes
    get factor 1)."""
    rate = tl.load(rate_ptr + cols, mask=col_ok, other=0.0)
    dt = tl.load(dt_t_ptr + rows, mask=row_ok, other=0.0)
    return tl.exp(-rate[None, :] * dt[:, None])


if INTERPRETED:
    def rn(x, DT):
        """``x.to(DT)``, rounded to nearest even. The interpreter truncates fp32 -> bf16 (its numpy
        has no bf16), where the GPU's ``cvt.rn.bf16.f32`` rounds to nearest even: round the fp32
        bits first (add 0x7FFF plus the lowest kept bit, clear the 16 dropped bits), so the
        interpreter's bf16 numbers are the GPU's. Other conversions are numpy's, already RTNE."""
        if DT == tl.bfloat16 and x.dtype == tl.float32:
            bits = x.to(tl.uint32, bitcast=True)
            bits = bits + (0x7FFF + ((bits >> 16) & 1))
            x = ((bits >> 16) << 16).to(tl.float32, bitcast=True)
        return x.to(DT)
else:
    @triton.jit
    def rn(x, DT: tl.constexpr):
        """``x.to(DT)`` (round to nearest even on the GPU)."""
        return x.to(DT)


@device_fn
def operand(x, IN_DT: tl.constexpr, OP_DT: tl.constexpr):
    """A matmul operand: rounded to the storage dtype, then held in the dtype the dot runs in.

    On the GPU OP_DT == IN_DT (a bf16/fp16 MMA with fp32 accumulation); under the interpreter,
    whose dot cannot multiply bf16, OP_DT is fp32 and the products are the same numbers.
    """
    return rn(x, IN_DT).to(OP_DT)
