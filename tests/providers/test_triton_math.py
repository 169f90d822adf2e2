"""The Triton kernels' fp32 math on the GPU, checked on CPU by emulating its PTX instructions.

``kernels/_math.py`` compiles, for fp32, to correctly rounded mul/add/fma plus two approximate
instructions, ``ex2.approx.f32`` and ``div.full.f32`` (tests/providers/test_triton_compile.py
checks there are no others); tests/providers/ptx_math.py emulates those at their documented bound
of 2 ulp, and 3xTF32 products. Here:

- the emulation restates the kernels' helpers (against the interpreter on CPU, the compiled
  kernels on a GPU);
- tanh and sigmoid stay within a few ulp at every point of the instructions' error bounds, and
  tanh keeps its relative accuracy near 0 (the textbook ``2/(1+exp(-2x))-1`` does not);
- the kernel contract run with that math (forward and backward) meets the rule of the GPU float32
  tests (tests/providers/test_cuda_gpu.py: error <= 2x PyTorch's own float32 error + 8 ulp of the
  scale) on their shapes, with the approximate instructions at random points of their bounds and
  systematically at either end; the textbook tanh fails it (so the emulation can see the defect).
"""

import warnings

import pytest
import torch

import diru_fast
from diru_fast.scan import contract
from tests.providers import ptx_math as pm

try:
    import triton
    import triton.language as tl

    from diru_fast.kernels import INTERPRETED
    from diru_fast.kernels._math import sigmoid as kernel_sigmoid, tanh as kernel_tanh
except ImportError:  # no triton: every test here skips (pytestmark)
    triton = None

pytestmark = pytest.mark.skipif("triton" not in diru_fast.available_backends("cpu")
                                and "triton" not in diru_fast.available_backends("cuda"),
                                reason="triton is not installed (or TRITON_INTERPRET=1 was not set before import)")

EPS32 = torch.finfo(torch.float32).eps


def _grid():
    """float32 points: dense over [-12, 12], log-spaced magnitudes down to 1e-30, both sides of the
    tanh split, the saturation range, and the specials."""
    from diru_fast.kernels import _math

    split = torch.tensor(_math.TANH_SPLIT, dtype=torch.float32)
    near = torch.stack([torch.nextafter(split, torch.tensor(0.0)), split, torch.nextafter(split, torch.tensor(1.0))])
    mags = torch.cat([torch.logspace(-30, 0, 3001), near, torch.linspace(0.5, 0.7, 2001),
                      torch.tensor([9.0, 20.0, 44.0, 89.0, 1e30])]).float()
    return torch.cat([torch.linspace(-12, 12, 48001), mags, -mags]).float()


def _ulps(got: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    return (got.double() - exact).abs() / pm.ulp(exact)


# ------------------------------------------------------------------ the emulation is the kernels' math

if triton is not None:
    @triton.jit
    def _helpers_kernel(x_ptr, t_ptr, s_ptr, N, BLOCK: tl.constexpr):
        i = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        v = tl.load(x_ptr + i, mask=i < N, other=0.0)
        tl.store(t_ptr + i, kernel_tanh(v), mask=i < N)
        tl.store(s_ptr + i, kernel_sigmoid(v), mask=i < N)


def _apply_kernel_helpers(x: torch.Tensor):
    """tanh(x) and sigmoid(x) [N] float32 by the kernels' own device helpers, in one launch:
    on CPU tensors under the interpreter, else compiled on the GPU."""
    device = "cpu" if INTERPRETED else "cuda"
    xd = x.to(device)
    t, s = torch.empty_like(xd), torch.empty_like(xd)
    block = 1 << 17
    with warnings.catch_warnings():  # the interpreter's numpy warns where exp overflows to inf, as it should
        warnings.simplefilter("ignore", RuntimeWarning)
        _helpers_kernel[(triton.cdiv(x.numel(), block),)](xd, t, s, x.numel(), BLOCK=block)
    return t.cpu(), s.cpu(), device


def test_emulation_restates_the_kernel_helpers():
    """The emulated tanh / sigmoid agree with the kernels' helpers as Triton runs them. Under the
    interpreter (numpy's float32 exp of x, IEEE division, no FMA) they differ from the emulation
    (exp2 of the rounded x log2 e) by the rounding of exp's argument, which grows like |x| 2^-24
    relative; on a GPU the real ex2.approx / div.full may sit anywhere in their 2-ulp bound (+4).
    A different formula (the textbook tanh, other coefficients or split) is off by far more."""
    x = _grid()
    x = x[torch.isfinite(x)]
    t, s, device = _apply_kernel_helpers(x)
    extra = 0.0 if device == "cpu" else 4.0
    exact = pm.Primitives("exact")
    t_ulps = _ulps(t, pm.tanh(x, exact).double())
    assert t_ulps.max() <= 3.0 + extra, f"tanh differs by {t_ulps.max():.1f} ulp at x={x[t_ulps.argmax()]}"
    s_ref = pm.sigmoid(x, exact)
    live = s_ref > 1e-30  # below, the relative difference of two underflowing values means nothing
    s_ulps = _ulps(s[live], s_ref[live].double())
    assert (s_ulps <= 4.0 + extra + 1.5 * x[live].abs()).all(), f"sigmoid differs by {s_ulps.max():.1f} ulp"
    nan = _apply_kernel_helpers(torch.tensor([float("nan")]))
    assert torch.isnan(nan[0]).all() and torch.isnan(nan[1]).all()


# ------------------------------------------------------------------ elementwise accuracy at the bounds

@pytest.mark.parametrize("mode", pm.MODES)
def test_tanh_and_sigmoid_within_a_few_ulp_at_the_instruction_bounds(mode):
    x = _grid()
    p = pm.Primitives(mode, seed=1)
    exact = torch.tanh(x.double())
    t = pm.tanh(x, p)
    assert torch.equal(torch.isnan(t), torch.isnan(exact))
    finite = torch.isfinite(x)
    err = _ulps(t[finite], exact[finite])
    # polynomial branch: only correctly rounded instructions (0.75 ulp measured); exp branch: the
    # division's 2 ulp of w <= 0.463 and exp's 2 ulp, against a result >= 0.537
    small = x[finite].abs() < 0.6
    assert err[small].max() <= 1.0, f"tanh near 0: {err[small].max():.2f} ulp"
    assert err.max() <= 3.5, f"tanh: {err.max():.2f} ulp"
    assert torch.equal(pm.tanh(torch.tensor([-1e30, 1e30, 89.0]), p), torch.tensor([-1.0, 1.0, 1.0]))
    # sigmoid 1/(1+exp(-x)): exp's argument x*log2(e) is rounded, so its relative error grows like
    # |x| 2^-24 (CUDA documents the same for __expf); the division and exp add 2 ulp each
    s = pm.sigmoid(x, p)
    s_exact = torch.sigmoid(x.double())
    live = finite & (s_exact > 1e-30)
    rel = (s[live].double() - s_exact[live]).abs() / s_exact[live]
    assert (rel <= (10 + 1.5 * x[live].abs()) * 2.0 ** -24).all()
    assert (s[finite].double() - s_exact[finite]).abs().max() <= 4 * EPS32


def test_textbook_tanh_loses_relative_accuracy_near_zero():
    """Why the kernels' tanh has a polynomial branch: near 0, 2/(1+exp(-2x))-1 keeps an absolute
    error of about ulp(1) while tanh(x) -> 0 (PyTorch's own float32 tanh stays within 1 ulp)."""
    x = torch.logspace(-6, -2, 401).float()
    exact = torch.tanh(x.double())
    for mode in ("exact", "high"):
        p = pm.Primitives(mode)
        assert _ulps(pm.tanh_textbook(x, p), exact).max() > 100
        assert _ulps(pm.tanh(x, p), exact).max() <= 1.0
    assert _ulps(torch.tanh(x), exact).max() <= 1.0


# ------------------------------------------------------------------ the recurrence under the GPU math

def _inputs(T, B, d, seed):
    """The inputs of tests/providers/test_cuda_gpu.py::_inputs, on CPU, float32."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    scale = d ** -0.5
    a = dict(xp=r(T, B, 3 * d), h0=r(B, d) * 0.5, w_hh=r(3 * d, d) * scale, w_int=r(d, d) * scale,
             b_int=r(d) * 0.1, w_out=r(d, d) * scale, b_out=r(d) * 0.1)
    return {k: v.float() for k, v in a.items()}


def _run(a, lengths, grad):
    """The contract's forward and backward: hs and the per-step gradients the kernels produce."""
    hs, saved = contract.scan_fwd(**a, lengths=lengths, need_saved=True)
    d_p, d_zp, d_yp, d_h0 = contract.scan_bwd(grad.to(hs.dtype), a["h0"], hs, saved, a["w_hh"], a["w_int"],
                                              a["w_out"], lengths)
    return dict(hs=hs, saved=saved, d_p=d_p, d_zp=d_zp, d_yp=d_yp, d_h0=d_h0)


def _worst_rule_ratio(shape, modes, tanh_fn=pm.tanh):
    """max over outputs and modes of err / (2 torch_err + 8 ulp of the scale): <= 1 meets the rule."""
    T, B, d = shape
    a32 = _inputs(T, B, d, seed=T + d)
    lengths = torch.tensor([max(1, T - (7 * b) % T) for b in range(B)])
    grad = torch.randn(T, B, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = _run({k: v.double() for k, v in a32.items()}, lengths, grad)
    torch_fp32 = _run(a32, lengths, grad)  # PyTorch's own float32 path
    worst = (0.0, "")
    for mode in modes:
        with pm.KernelMath(pm.Primitives(mode, seed=T * B + d), tanh_fn):
            got = _run(a32, lengths, grad)
        for name, r in ref.items():
            err = (got[name].double() - r).abs().max().item()
            torch_err = (torch_fp32[name].double() - r).abs().max().item()
            ratio = err / (2 * torch_err + 8 * EPS32 * r.abs().max().item())
            worst = max(worst, (ratio, f"{name} ({mode}): err {err:.3g}, PyTorch's {torch_err:.3g}"))
    return worst


# the float32 shapes of tests/providers/test_cuda_gpu.py (each size class, masked d and B, d=100
# streamed with masks, d=256 with full tiles)
GPU_SHAPES = [(50, 64, 64), (50, 16, 128), (20, 24, 256), (10, 8, 300), (30, 9, 48), (12, 16, 100), (12, 32, 256)]


@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "T{}-B{}-d{}".format(*s))
def test_recurrence_meets_the_float32_rule_under_emulated_gpu_math(shape):
    ratio, where = _worst_rule_ratio(shape, ("random", "high", "low"))
    assert ratio <= 1.0, f"rule broken by {ratio:.2f}x at {where}"


def test_emulation_sees_the_textbook_tanh_break_the_rule():
    """The same check with the previous tanh, the approximate instructions biased to one end of
    their bound: it fails, so the test above can tell a good formula from a bad one."""
    ratio, where = _worst_rule_ratio((30, 9, 48), ("high",), tanh_fn=pm.tanh_textbook)
    assert ratio > 1.5, where


def test_tf32x3_emulation_rounds_the_high_part_and_truncates_the_low_part():
    """3xTF32 as the PTX computes it (tests/providers/ptx_math.py): ``cvt.rna`` on the high part only;
    the low part is read truncated by the MMA, so a low part whose dropped bits exceed half a TF32 ulp
    rounds down, where rounding to nearest would round it up; the result still carries fp32-level
    accuracy (within a few float32 ulp of the exact product at K = 256)."""
    one_and_bits = torch.tensor([0x3F800000 | 0x1800], dtype=torch.int32).view(torch.float32)  # 1 + 0x1800 ulp
    assert pm.tf32_hi(one_and_bits).view(torch.int32).item() == 0x3F800000 | 0x2000  # ties away / nearest: up
    assert pm.tf32_trunc(one_and_bits).view(torch.int32).item() == 0x3F800000  # truncated: down
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, 256, generator=g), torch.randn(256, 48, generator=g)
    acc = torch.randn(16, 48, generator=g)
    got = pm.tf32x3_addmm(acc, a, b)
    exact = acc.double() + a.double() @ b.double()
    scale = (acc.double().abs() + a.double().abs() @ b.double().abs())
    assert ((got.double() - exact).abs() / scale).max() <= 8 * EPS32
    lo_error = (pm.tf32_trunc(a - pm.tf32_hi(a)) - (a - pm.tf32_hi(a))).abs().max()  # truncation is visible
    assert lo_error > 0
