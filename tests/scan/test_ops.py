"""The custom ops, the autograd formula, and every kernel provider that runs on CPU here, against
the kernel contract.

Providers: "contract" (plain PyTorch, always) plus whichever compiled backends run on CPU
tensors here ("cpu"; "triton" under TRITON_INTERPRET=1). Each must reproduce the contract's
outputs (hs, saved, d_p, d_zp, d_yp, d_h0) in float64 to 1e-12, and give exact second
derivatives (double backward).
"""

import pytest
import torch

import diru_fast
from diru_fast import CellWeights
from diru_fast.backends import KERNEL_BACKENDS
from diru_fast.functional import diru_scan
from diru_fast.scan import contract, ops
from tests.helpers import contract_inputs, random_cell

PROVIDERS = [b for b in diru_fast.available_backends("cpu") if b in KERNEL_BACKENDS] + ["contract"]
SHAPES = [(1, 1, 4), (1, 3, 48), (6, 3, 8), (9, 2, 12), (4, 5, 16)]  # (T, B, d)


def _call_fwd(backend, a, lengths, need_saved=True):
    return torch.ops.diru_fast.scan_fwd(a["xp"], a["h0"], a["w_hh"], a["w_int"], a["b_int"], a["w_out"],
                                        a["b_out"], lengths, backend, need_saved)


def _lengths(T, B):
    return torch.tensor([max(1, T - (3 * b) % T) for b in range(B)])


@pytest.mark.parametrize("backend", PROVIDERS)
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-B{}-d{}".format(*s))
def test_provider_matches_contract_float64(backend, shape, with_lengths):
    T, B, d = shape
    a = contract_inputs(T, B, d, seed=T + B + d)
    lengths = _lengths(T, B) if with_lengths else None
    hs, saved = _call_fwd(backend, a, lengths)
    hs_ref, saved_ref = contract.scan_fwd(**a, lengths=lengths, need_saved=True)
    torch.testing.assert_close(hs, hs_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(saved, saved_ref, rtol=1e-12, atol=1e-12)
    grad_hs = torch.randn(T, B, d, dtype=torch.float64)
    got = torch.ops.diru_fast.scan_bwd(grad_hs, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"],
                                       lengths, backend)
    want = contract.scan_bwd(grad_hs, a["h0"], hs_ref, saved_ref, a["w_hh"], a["w_int"], a["w_out"], lengths)
    for name, g, w in zip(("d_p", "d_zp", "d_yp", "d_h0"), got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12, msg=lambda m: f"{name}: {m}")
    if lengths is not None:  # padded steps: zero saved gates and zero per-step gradients
        for b, length in enumerate(lengths.tolist()):
            assert torch.all(saved[length:, b] == 0)
            assert torch.all(got[0][length:, b] == 0) and torch.all(got[2][length:, b] == 0)


@pytest.mark.parametrize("backend", PROVIDERS)
def test_provider_inference_skips_saved(backend):
    a = contract_inputs(5, 3, 8)
    hs, saved = _call_fwd(backend, a, None, need_saved=False)
    assert saved.numel() == 0
    torch.testing.assert_close(hs, contract.scan_fwd(**a, lengths=None, need_saved=False)[0],
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", PROVIDERS)
def test_provider_float32_within_rounding(backend):
    T, B, d = 12, 3, 16
    a64 = contract_inputs(T, B, d, seed=11)
    a32 = {k: v.float() for k, v in a64.items()}
    hs64, saved64 = contract.scan_fwd(**a64, lengths=None, need_saved=True)
    hs32, saved32 = _call_fwd(backend, a32, None)
    assert hs32.dtype == torch.float32 and saved32.dtype == torch.float32
    torch.testing.assert_close(hs32.double(), hs64, rtol=0, atol=2e-6)
    g = torch.randn(T, B, d, dtype=torch.float64)
    got = torch.ops.diru_fast.scan_bwd(g.float(), a32["h0"], hs32, saved32, a32["w_hh"], a32["w_int"],
                                       a32["w_out"], None, backend)
    want = contract.scan_bwd(g, a64["h0"], hs64, saved64, a64["w_hh"], a64["w_int"], a64["w_out"], None)
    for x, y in zip(got, want):
        torch.testing.assert_close(x.double(), y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", PROVIDERS)
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
def test_gradcheck_and_gradgradcheck(backend, with_lengths):
    """Full-mode gradcheck through the autograd formula, and exact double backward: second
    derivatives w.r.t. the input, the state and every weight."""
    T, B, n, d = 3, 2, 2, 4
    cell = random_cell(n, d, 2, seed=2)
    x = torch.randn(T, B, n, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, d, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([3, 1]) if with_lengths else None
    leaves = [t.detach().clone().requires_grad_() for t in cell.cell_weights()]

    def run(x, h0, *weights):
        return diru_scan(x, CellWeights(*weights), h0, lengths, backend=backend)

    assert torch.autograd.gradcheck(run, [x, h0] + leaves, fast_mode=False)
    assert torch.autograd.gradgradcheck(run, [x, h0] + leaves, fast_mode=backend == "triton")


@pytest.mark.parametrize("backend", PROVIDERS)
def test_opcheck(backend):
    a = contract_inputs(3, 2, 4)
    lengths = torch.tensor([3, 2])
    fwd_args = (a["xp"], a["h0"], a["w_hh"], a["w_int"], a["b_int"], a["w_out"], a["b_out"], lengths, backend, True)
    torch.library.opcheck(torch.ops.diru_fast.scan_fwd, fwd_args)
    hs, saved = torch.ops.diru_fast.scan_fwd(*fwd_args)
    bwd_args = (torch.randn_like(hs), a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths, backend)
    torch.library.opcheck(torch.ops.diru_fast.scan_bwd, bwd_args)


@pytest.mark.parametrize("backend", PROVIDERS)
def test_nan_in_padded_steps_does_not_leak(backend):
    T, B, n, d = 5, 3, 2, 4
    cell = random_cell(n, d, 2, seed=4)
    x = torch.randn(T, B, n, dtype=torch.float64)
    x[3:, 1] = float("nan")
    x[2:, 2] = float("inf")
    x.requires_grad_(True)
    lengths = torch.tensor([5, 3, 2])
    out = diru_scan(x, cell.cell_weights(), None, lengths, num_compartments=2, backend=backend)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in cell.parameters())
    assert torch.isfinite(x.grad).all() and torch.all(x.grad[3:, 1] == 0)


@pytest.mark.parametrize("backend", PROVIDERS)
def test_second_order_terms_match_the_torch_backend(backend):
    """A gradient penalty and a Hessian-vector product (what create_graph=True is for) give the
    torch backend's numbers, including the terms w.r.t. the input that a partial graph drops."""
    T, B, n, d = 5, 3, 3, 8
    cell = random_cell(n, d, 2, seed=8)
    x0 = torch.randn(T, B, n, dtype=torch.float64)
    lengths = torch.tensor([5, 2, 4])
    v = torch.randn(T, B, n, dtype=torch.float64)
    results = {}
    for name in ("torch", backend):
        x = x0.clone().requires_grad_()
        params = [t.detach().clone().requires_grad_() for t in cell.cell_weights()]
        out = diru_scan(x, CellWeights(*params), None, lengths, backend=name)
        grads = torch.autograd.grad(out.sin().sum(), [x] + params, create_graph=True)
        penalty = sum(g.pow(2).sum() for g in grads)
        hvp = torch.autograd.grad((grads[0] * v).sum(), [x] + params, retain_graph=True)
        results[name] = list(grads) + list(torch.autograd.grad(penalty, [x] + params)) + list(hvp)
    for got, want in zip(results[backend], results["torch"]):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", PROVIDERS)
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
def test_eager_and_traced_runs_share_one_autograd_formula(backend, with_lengths, monkeypatch):
    """ops.Scan calls the provider directly in eager mode and the custom ops while tracing; its
    backward is the same code either way (forced here by pretending to trace)."""
    T, B, d = 4, 3, 8
    a = contract_inputs(T, B, d, seed=21)
    lengths = _lengths(T, B) if with_lengths else None
    names = ("xp", "h0", "w_hh", "w_int", "b_int", "w_out", "b_out")
    grad_out = torch.randn(T, B, d, dtype=torch.float64)
    results = []
    for traced in (False, True):
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: traced)
        calls = []
        for op in ("scan_fwd", "scan_bwd"):
            real = getattr(torch.ops.diru_fast, op)
            monkeypatch.setattr(torch.ops.diru_fast, op, lambda *args, _real=real, _op=op: calls.append(_op) or _real(*args))
        leaves = [a[k].clone().requires_grad_() for k in names]
        hs = ops.scan(*leaves, lengths, backend)
        results.append((hs, torch.autograd.grad(hs, leaves, grad_out)))
        assert calls == (["scan_fwd", "scan_bwd"] if traced else [])
        monkeypatch.undo()
    (hs_eager, g_eager), (hs_op, g_op) = results
    torch.testing.assert_close(hs_eager, hs_op, rtol=0, atol=0)
    for name, x, y in zip(names, g_eager, g_op):
        # w_hh's gradient is one GEMM over [h0; hs] while tracing and h0's term plus a GEMM over hs
        # in eager mode (ops.input_grads): the BLAS may round the two sums differently (seen on
        # Intel AVX-512, not on AMD Zen 4), so it is compared to float64 rounding, the rest exactly
        tol = {"rtol": 1e-13, "atol": 1e-15} if name == "w_hh" else {"rtol": 0, "atol": 0}
        torch.testing.assert_close(x, y, **tol, msg=lambda m: f"{name}: {m}")


@pytest.mark.skipif("cpu" not in KERNEL_BACKENDS or diru_fast.backends.get_provider("cpu") is None,
                    reason="the C++ CPU kernel is unavailable here")
def test_time_decay_from_rates_gradcheck_and_gradgradcheck():
    """ops.scan with time decay as (lambda, dt) on the kernel that forms the factors in its step
    (RateDecayScan): first derivatives from the kernel, second from the contract on the factors, both
    to every input, lambda and dt included; and the same numbers as the factors given."""
    from diru_fast.providers import cpu

    if cpu.unavailable_reason() is not None:
        pytest.skip(cpu.unavailable_reason())
    a, o = contract_inputs(4, 2, 6, sizes=[2, 4], dropout=0.3, activation="relu")
    lengths = torch.tensor([4, 2])
    g = torch.Generator().manual_seed(3)
    lam = torch.randn(6, generator=g, dtype=torch.float64)
    dt = (torch.rand(4, 2, generator=g, dtype=torch.float64) * 2).masked_fill(torch.tensor([[0, 0], [0, 0], [0, 1],
                                                                                           [0, 1]]).bool(), 0.0)
    names = ("xp", "h0", "w_hh", "w_int", "b_int", "w_out", "b_out")
    inputs = [a[k].clone().requires_grad_(True) for k in names] + [lam.requires_grad_(True), dt.requires_grad_(True)]

    def fn(*p):
        return ops.scan(*p[:7], lengths, "cpu", o["activation"], o["compartment_of"], o["mask"], decay_rate=p[7],
                        dt=p[8])

    want = ops.scan(*(a[k] for k in names), lengths, "cpu", o["activation"], o["compartment_of"], o["mask"],
                    contract.decay_factor(lam.detach(), dt.detach()))
    torch.testing.assert_close(fn(*inputs), want, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=True)
