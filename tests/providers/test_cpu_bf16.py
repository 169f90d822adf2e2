"""bfloat16 and float16 on the C++ CPU kernel (csrc/diru_cpu_bf16.h): float32 state and arithmetic,
16-bit inputs and outputs, bfloat16 products on AMX tiles or AVX512_BF16 where the CPU has them and
float32 products ("upcast") elsewhere.

The rule (as for the GPU kernels): the kernel's error against float64, on the same rounded inputs,
at most twice PyTorch's own error in that dtype (tests.helpers.assert_kernel_within_twice_torch_error
for hs, dL/dxp, dL/dh0; here too for every parameter's gradient through the module). Each bfloat16
product path this CPU runs is checked, and that forcing a narrower float32 instruction set (a CPU
without AVX-512) keeps bfloat16 on the kernel with float32 products.
"""

from __future__ import annotations

import types
import warnings
from contextlib import contextmanager

import pytest
import torch

import diru_fast
from diru_fast import backends
from diru_fast.providers import cpu
from tests.helpers import assert_kernel_within_twice_torch_error, contract_inputs, cpu_isa, randomize_

HAVE_KERNEL = cpu.unavailable_reason() is None
pytestmark = pytest.mark.skipif(not HAVE_KERNEL, reason=f"C++ CPU kernel unavailable here: {cpu.unavailable_reason()}")
BF16_PATHS = cpu.extension().supported_bf16_isas() if HAVE_KERNEL else []

# the provider as the helper's `kernels` module (it passes a launch config, which the CPU kernel has none of)
KERNELS = types.SimpleNamespace(
    scan_fwd=lambda *args, config=None, **kw: cpu.scan_fwd(*args, **kw),
    scan_bwd=lambda *args, config=None, **kw: cpu.scan_bwd(*args, **kw),
)

# (T, B, d, compartment sizes (attention) or None, threads): which path each takes
CASES = {
    "one-step": (1, 1, 48, None, 1),           # T*B < 8: float32 products on the weights as they are
    "packed-b3": (7, 3, 48, None, 2),          # packed, batch slices of 1 and 2 rows
    "attention-k3": (6, 3, 48, [16, 16, 16], 2),
    "column-split": (6, 1, 96, None, 2),       # B < threads, d >= 96
    "tails": (5, 17, 40, None, 1),             # partial panels and row blocks
}



@contextmanager
def bf16_path(name):
    """Run the block with bfloat16 products on ``name`` ('amx', 'avx512bf16' or 'upcast'), restored after."""
    ext = cpu.extension()
    previous = ext.set_bf16_isa(name)
    try:
        yield
    finally:
        ext.set_bf16_isa(previous)


def _inputs(case, dtype):
    T, B, d, sizes, threads = CASES[case]
    drawn = contract_inputs(T, B, d, dtype, seed=T + d, sizes=sizes)
    a, opts = drawn if sizes is not None else (drawn, {})
    lengths = torch.tensor([max(1, T - (3 * b) % T) for b in range(B)]) if B > 1 else None
    return a, opts, lengths, threads


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("path, dtype", [(p, torch.bfloat16) for p in BF16_PATHS] + [("upcast", torch.float16)],
                         ids=str)
def test_16bit_scan_within_twice_torch_error(path, dtype, case):
    a, opts, lengths, threads = _inputs(case, dtype)
    with bf16_path(path), cpu_isa(cpu.extension().isa(), threads):
        assert_kernel_within_twice_torch_error(KERNELS, a, opts, lengths, None, dtype)
        hs, saved = cpu.scan_fwd(*a.values(), lengths, True, **opts)
        hs_inf, _ = cpu.scan_fwd(*a.values(), lengths, False, **opts)
    assert saved.dtype == torch.float32 and torch.equal(hs_inf, hs)  # the inference forward: the same states


@pytest.mark.skipif(len(BF16_PATHS) < 2, reason="this CPU has no bfloat16 products (AVX512_BF16 / AMX)")
@pytest.mark.skipif(HAVE_KERNEL and cpu.extension().isa() != "avx512",
                    reason="the float32 kernels run on a narrower ISA here (DIRU_FAST_CPU_ISA): the bfloat16 products "
                           "are AVX-512 kernels and do not run; the upcasting path is tested by the other tests")
def test_bf16_products_run_and_agree():
    # the bfloat16 paths round the same operands (they differ only in the order of float32 sums), and
    # differ from float32 products: the products really run in bfloat16
    a, _, lengths, threads = _inputs("packed-b3", torch.bfloat16)
    grad = torch.randn(a["xp"].shape[0], a["xp"].shape[1], a["h0"].shape[1]).bfloat16()
    runs = {}
    for path in BF16_PATHS:
        with bf16_path(path), cpu_isa(cpu.extension().isa(), threads):
            hs, saved = cpu.scan_fwd(*a.values(), lengths, True)
            runs[path] = (saved,) + tuple(cpu.scan_bwd(grad, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"],
                                                       lengths)[:3])
    upcast = runs.pop("upcast")
    for path, run in runs.items():
        assert any(not torch.equal(r, u) for r, u in zip(run, upcast)), path
    if len(runs) == 2:
        for r, s in zip(*runs.values()):
            torch.testing.assert_close(r, s, rtol=1e-4, atol=1e-5)


def test_16bit_call_buffers_are_reused_only_when_free():
    # a 16-bit call's float32 tensors (saved, the per-step gradients) come from buffers kept between
    # calls: one still held by the caller is never handed out again, one dropped is (no fresh allocation)
    def inputs(seed):
        return contract_inputs(16, 8, 64, torch.bfloat16, seed=seed)  # saved, d_p: over the pool's minimum size

    a, b = inputs(1), inputs(2)
    grad = torch.randn(16, 8, 64).bfloat16()
    hs_a, saved_a = cpu.scan_fwd(*a.values(), None, True)
    kept = saved_a.clone()
    grads_a = cpu.scan_bwd(grad, a["h0"], hs_a, saved_a, a["w_hh"], a["w_int"], a["w_out"], None)
    kept_grads = [g.clone() for g in grads_a]
    hs_b, saved_b = cpu.scan_fwd(*b.values(), None, True)
    grads_b = cpu.scan_bwd(grad, b["h0"], hs_b, saved_b, b["w_hh"], b["w_int"], b["w_out"], None)
    assert saved_b.data_ptr() != saved_a.data_ptr() and torch.equal(saved_a, kept)
    assert all(torch.equal(g, k) for g, k in zip(grads_a, kept_grads))
    assert not torch.equal(saved_a, saved_b) and not torch.equal(grads_a[0], grads_b[0])
    ptr = saved_a.data_ptr()
    del saved_a, grads_a
    assert cpu.scan_fwd(*b.values(), None, True)[1].data_ptr() == ptr  # dropped: reused


@pytest.mark.parametrize("d, k", [(48, 0), (40, 3)])
def test_gate_products_are_the_rounded_products(d, k):
    # the fused o = u s, q = z r of the bfloat16 backward: bitwise PyTorch's float32 product rounded
    saved = torch.randn(3, 5, 4 * d + k)
    fused = cpu.gate_products(saved, d, torch.bfloat16)
    if fused is None:  # no AVX-512 here: the caller forms them with PyTorch's operations
        assert cpu.extension().isa() != "avx512" or "avx512bf16" not in BF16_PATHS
        return
    pairs = saved[..., :4 * d].reshape(15, 2, 2, d)
    assert torch.equal(fused, (pairs[:, :, 0] * pairs[:, :, 1]).bfloat16())
    assert cpu.gate_products(saved, d, torch.float16) is None


def test_bfloat16_without_avx512_stays_on_the_kernel():
    # a CPU without AVX-512 (forced here) runs bfloat16 on the kernel with float32 products, not on "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        for dtype in (torch.bfloat16, torch.float16):
            assert backends.resolve_backend("auto", torch.device("cpu"), dtype) == "cpu"
    narrower = [isa for isa in cpu.extension().supported_isas() if isa != "avx512"]
    a, _, lengths, threads = _inputs("packed-b3", torch.bfloat16)
    for isa in narrower:
        outs = []
        for path in BF16_PATHS:  # the bfloat16 products need AVX-512: every setting gives float32 products
            with bf16_path(path), cpu_isa(isa, threads):
                outs.append(cpu.scan_fwd(*a.values(), lengths, True))
        for hs, saved in outs[1:]:
            assert torch.equal(hs, outs[0][0]) and torch.equal(saved, outs[0][1]), isa
        with bf16_path(BF16_PATHS[0]), cpu_isa(isa, threads):
            assert_kernel_within_twice_torch_error(KERNELS, a, {}, lengths, None, torch.bfloat16)


def _module_run(model, x, grad):
    """[the no-grad output (the inference forward), the output, the input's and every parameter's gradient]"""
    with torch.no_grad():
        inference = model(x)[0]
    x = x.detach().clone().requires_grad_()
    out, h_n = model(x)
    torch.autograd.backward([out, h_n], [grad.to(out.dtype), torch.zeros_like(h_n)])
    return [inference, out.detach(), x.grad] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("steps, attention", [(1, False), (5, True), (7, False)], ids=["T1", "T5-attention", "T7"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_16bit_module_gradients_within_twice_torch_error(dtype, steps, attention):
    # every parameter's gradient (and the outputs, and the input's gradient) through diru_fast.DIRULayer on
    # the cpu backend, against PyTorch's own path in the same dtype (backend "reference": the prototype's
    # modules, every operation in that dtype; backend "torch" computes in float32 by the contract), both
    # against the float64 model with the same rounded parameters and input
    n, d, batch = 5, 48, 3
    kw = dict(num_compartments=3, compartment_attention=attention)
    ref = randomize_(diru_fast.DIRULayer(n, d, 1, backend="torch", dtype=torch.float64, **kw), seed=steps)
    with torch.no_grad():  # the 16-bit rounding of the parameters, shared by all three runs
        for p in ref.parameters():
            p.copy_(p.to(dtype))
    g = torch.Generator().manual_seed(steps)
    x = torch.randn(steps, batch, n, generator=g, dtype=torch.float64).to(dtype).double()
    grad = torch.randn(steps, batch, d, generator=g, dtype=torch.float64)
    want = _module_run(ref, x, grad)
    runs = {}
    for backend in ("cpu", "reference"):
        model = diru_fast.DIRULayer(n, d, 1, backend=backend, dtype=dtype, **kw)
        model.load_state_dict(ref.state_dict())
        runs[backend] = _module_run(model, x.to(dtype), grad)
    names = ["inference output", "output", "input"] + [name for name, _ in ref.named_parameters()]
    for name, ours, torch_own, w in zip(names, runs["cpu"], runs["reference"], want):
        assert ours.dtype == dtype, name
        err, torch_err = (ours.double() - w).abs().max().item(), (torch_own.double() - w).abs().max().item()
        assert err <= 2 * torch_err + 1e-6, f"{name}: error {err:.3g} > 2x PyTorch's {torch_err:.3g}"




@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_16bit_cell_step_within_twice_torch_error(dtype):
    # one inference step in one call (the kernel's cell_step), against PyTorch's own step in the same
    # dtype (backend "reference"), both against the float64 cell with the same rounded parameters, input
    # and state
    n, d, batch = 4, 48, 3
    ref = randomize_(diru_fast.DIRUCell(n, d, backend="torch", dtype=torch.float64, num_compartments=3), seed=2)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(p.to(dtype))
    x, h = torch.randn(batch, n).to(dtype), torch.randn(batch, d).to(dtype)
    with torch.no_grad():
        want = ref(x.double(), h.double())
        got = {}
        for backend in ("cpu", "reference"):
            cell = diru_fast.DIRUCell(n, d, backend=backend, dtype=dtype, num_compartments=3)
            cell.load_state_dict(ref.state_dict())
            got[backend] = cell(x, h)
    assert got["cpu"].dtype == dtype
    err, torch_err = ((got[b].double() - want).abs().max().item() for b in ("cpu", "reference"))
    assert err <= 2 * torch_err + 1e-6, f"error {err:.3g} > 2x PyTorch's {torch_err:.3g}"
