"""Both GPU backends ("triton" and the CUDA extension "cuda") on CUDA tensors, against the float64
kernel contract. Skipped without a GPU; the CPU twins are tests/scan/test_ops.py (every provider
on CPU tensors, triton under the interpreter) and tests/providers/test_triton.py (every regime).
bench/gpu_check.sh runs this file.

Rules: float64 to 1e-10 where the backend takes float64 (cuda; triton only under the
interpreter) with full-mode gradcheck; float32 / bfloat16 / float16 within 2x the error of
PyTorch's own path in that dtype (the contract run in that dtype), both against float64 on the
same inputs (flash-attention's rule), plus 8 ulp of float32 of slack; the inference forward
gives the training forward's states bit for bit.
"""

import pytest
import torch

import diru_fast
from diru_fast import CellWeights
from diru_fast.functional import diru_scan
from diru_fast.scan import contract, ops
from tests.helpers import random_cell

CUDA = torch.cuda.is_available()
pytestmark = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (CPU twins: tests/scan/test_ops.py, "
                                                 "tests/providers/test_triton.py, tests/providers/test_cuda.py)")
GPU_BACKENDS = ["triton", "cuda"]
# bench/gpu_check.sh runs each backend's tests in its own step: -m gpu_triton, -m gpu_cuda
BACKENDS = [pytest.param("triton", marks=pytest.mark.gpu_triton), pytest.param("cuda", marks=pytest.mark.gpu_cuda)]


def _require(backend, dtype):
    reason = diru_fast.backends.why_unavailable(backend, "cuda", dtype)
    if reason is not None:
        pytest.skip(f"backend {backend!r} does not run CUDA {dtype} here: {reason}")


def _inputs(T, B, d, dtype, seed=0, device="cuda"):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    scale = d ** -0.5
    a = dict(xp=r(T, B, 3 * d), h0=r(B, d) * 0.5, w_hh=r(3 * d, d) * scale, w_int=r(d, d) * scale,
             b_int=r(d) * 0.1, w_out=r(d, d) * scale, b_out=r(d) * 0.1)
    return {k: v.to(device=device, dtype=dtype) for k, v in a.items()}


def _lengths(T, B, device="cuda"):
    return torch.tensor([max(1, T - (7 * b) % T) for b in range(B)], device=device)


# (T, B, d): each size class of the Triton dispatcher (resident, streamed, per-step), odd B and d
SHAPES = [(1, 1, 4), (7, 3, 48), (5, 17, 64), (4, 16, 100), (3, 33, 256), (3, 5, 300)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-B{}-d{}".format(*s))
def test_float64_matches_contract(backend, shape):
    _require(backend, torch.float64)
    T, B, d = shape
    a = _inputs(T, B, d, torch.float64, seed=d)
    lengths = _lengths(T, B)
    hs, saved = torch.ops.diru_fast.scan_fwd(*a.values(), lengths, backend, True)
    hs_ref, saved_ref = contract.scan_fwd(**a, lengths=lengths, need_saved=True)
    torch.testing.assert_close(hs, hs_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(saved, saved_ref, rtol=1e-10, atol=1e-10)
    grad = torch.randn(T, B, d, dtype=torch.float64, device="cuda")
    got = torch.ops.diru_fast.scan_bwd(grad, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths, backend)
    want = contract.scan_bwd(grad, a["h0"], hs_ref, saved_ref, a["w_hh"], a["w_int"], a["w_out"], lengths)
    for name, g, w in zip(("d_p", "d_zp", "d_yp", "d_h0"), got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_float64_full_mode(backend):
    _require(backend, torch.float64)
    T, B, n, d = 3, 2, 2, 4
    cell = random_cell(n, d, 2, seed=2).cuda()
    x = torch.randn(T, B, n, dtype=torch.float64, device="cuda", requires_grad=True)
    h0 = torch.randn(B, d, dtype=torch.float64, device="cuda", requires_grad=True)
    lengths = torch.tensor([3, 1], device="cuda")
    leaves = [t.detach().clone().requires_grad_() for t in cell.cell_weights()]

    def run(x, h0, *weights):
        return diru_scan(x, CellWeights(*weights), h0, lengths, backend=backend)

    assert torch.autograd.gradcheck(run, [x, h0] + leaves, fast_mode=False)


def _scan_and_grads(fn, a, lengths, grad):
    leaves = {k: v.detach().clone().requires_grad_() for k, v in a.items()}
    hs = fn(leaves, lengths)
    grads = torch.autograd.grad((hs.double() * grad).sum(), list(leaves.values()))
    return hs.detach(), grads


def _contract_in_dtype(w, lengths):  # PyTorch's own path in the inputs' dtype
    return contract.scan_fwd(*w.values(), lengths, False, acc=w["xp"].dtype)[0]


# (T, B, d): every size class; d=100 streams with masks; d=256 with full 16-row tiles (B=32: the
# fp32 configuration at 147 KB of shared memory and 255 registers) and with masked rows (B=24)
LOW_PRECISION_SHAPES = [(50, 64, 64), (50, 16, 128), (20, 24, 256), (10, 8, 300), (30, 9, 48), (12, 16, 100),
                        (12, 32, 256)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("shape", LOW_PRECISION_SHAPES, ids=lambda s: "T{}-B{}-d{}".format(*s))
def test_low_precision_within_twice_torch_error(backend, dtype, shape):
    """CPU twins: tests/providers/test_triton.py (interpreter) and test_triton_math.py (these shapes
    in float32 with the GPU's fp32 math emulated)."""
    _require(backend, dtype)
    T, B, d = shape
    a = _inputs(T, B, d, dtype, seed=T + d)
    lengths = _lengths(T, B)
    grad = torch.randn(T, B, d, dtype=torch.float64, device="cuda")
    hs, grads = _scan_and_grads(lambda w, l: ops.scan(*w.values(), l, backend), a, lengths, grad)
    hs_low, grads_low = _scan_and_grads(_contract_in_dtype, a, lengths, grad)
    hs_ref, grads_ref = _scan_and_grads(_contract_in_dtype, {k: v.double() for k, v in a.items()}, lengths, grad)
    for name, got, low, ref in zip(["hs"] + list(a), [hs] + list(grads), [hs_low] + list(grads_low),
                                   [hs_ref] + list(grads_ref)):
        err = (got.double() - ref).abs().max().item()
        torch_err = (low.double() - ref).abs().max().item()
        slack = 8 * torch.finfo(torch.float32).eps * ref.abs().max().item() if dtype == torch.float32 else 1e-6
        assert err <= 2 * torch_err + slack, f"{name}: {backend} error {err:.3g} > 2x PyTorch's {torch_err:.3g}"


# (T, B, d): resident (d=48 in 16 bit, d=16 everywhere), streamed with masks (d=48 fp32, d=100), d=256
# with full tiles (the fp32 forward without saved gates is the variant that spills: not in the
# compile check) and with masked rows, per step (d=300)
# (with lengths; each is its own compiled variant) the benchmark's case: no lengths, full tiles
INFERENCE_SHAPES = [(6, 16, 16, True), (9, 17, 48, True), (5, 16, 100, True), (4, 32, 256, True),
                    (4, 32, 256, False), (4, 24, 256, True), (3, 5, 300, True)]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64], ids=str)
@pytest.mark.parametrize("shape", INFERENCE_SHAPES, ids=lambda s: "T{}-B{}-d{}-{}".format(
    *s[:3], "lengths" if s[3] else "full"))
def test_inference_forward_gives_the_training_states_bit_for_bit(backend, dtype, shape):
    """need_saved=False (inference: no gates written, a different compiled variant) must produce
    exactly the states of the training forward. CPU twin: tests/providers/test_triton.py."""
    _require(backend, dtype)
    T, B, d, with_lengths = shape
    a = _inputs(T, B, d, dtype, seed=B + d)
    lengths = _lengths(T, B) if with_lengths else None
    hs_train, saved = torch.ops.diru_fast.scan_fwd(*a.values(), lengths, backend, True)
    hs_infer, nothing = torch.ops.diru_fast.scan_fwd(*a.values(), lengths, backend, False)
    torch.cuda.synchronize()
    assert nothing.numel() == 0 and saved.shape == (T, B, 4 * d)
    assert torch.isfinite(hs_train).all()
    assert torch.equal(hs_infer, hs_train)


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_end_to_end_matches_cpu_reference(backend):
    """A 2-layer bidirectional DIRULayer with lengths on the GPU against the CPU float64 reference backend."""
    dtype = torch.float64 if diru_fast.backends.why_unavailable(backend, "cuda", torch.float64) is None \
        else torch.float32
    _require(backend, dtype)
    torch.manual_seed(0)
    ref = diru_fast.DIRULayer(5, 32, 2, bidirectional=True, num_compartments=4, backend="reference").double()
    layer = diru_fast.DIRULayer(5, 32, 2, bidirectional=True, num_compartments=4, backend=backend)
    layer.load_state_dict(ref.state_dict())
    layer = layer.to(device="cuda", dtype=dtype)
    x = torch.randn(9, 6, 5, dtype=torch.float64)
    lengths = torch.tensor([9, 1, 4, 9, 7, 2])
    out_ref, h_ref = ref(x, lengths=lengths)
    out, h = layer(x.to(device="cuda", dtype=dtype), lengths=lengths)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(out.double().cpu(), out_ref, rtol=tol, atol=tol)
    torch.testing.assert_close(h.double().cpu(), h_ref, rtol=tol, atol=tol)


@pytest.mark.gpu_triton
def test_auto_picks_triton_then_cuda_on_gpu():
    expected = next((b for b in GPU_BACKENDS if diru_fast.backends.why_unavailable(b, "cuda", torch.float32) is None),
                    "torch")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert diru_fast.backends.resolve_backend("auto", torch.device("cuda"), torch.float32) == expected


# ---- the contract's options (activation, attention over compartments, dropout mask, time decay) ----
# on "cuda", called on the provider itself (diru_fast.providers.cuda), which fuses them all. CPU
# twin: the kernels' source run on the CPU against the contract, tests/providers/test_cuda.py
# (test_kernel_source_on_cpu_matches_contract), at these option sets.

def _option_inputs(T, B, d, dtype, sizes, dropout, activation, decay=False, lengths=None, seed=0):
    """contract_inputs on the GPU in ``dtype`` (the mask in the accumulation dtype); with ``decay``
    also time-decay factors (tests/providers/test_cuda.py's time_decay: NaN on the steps that
    ``lengths`` pads) in the accumulation dtype."""
    from tests.helpers import contract_inputs
    from tests.providers.test_cuda import time_decay

    a, opts = contract_inputs(T, B, d, sizes=sizes, dropout=dropout, activation=activation or "tanh", seed=seed)
    a = {k: v.to(device="cuda", dtype=dtype) for k, v in a.items()}
    opts = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in opts.items()}
    if opts["mask"] is not None:
        opts["mask"] = opts["mask"].to(contract.acc_dtype(dtype))
    if decay:
        opts["decay"] = time_decay(T, B, d, lengths, seed=seed).to(device="cuda", dtype=contract.acc_dtype(dtype))
    return a, opts


# (T, B, d, sizes, dropout, activation, decay): T=1 / B=1, odd B, unequal compartments, each option
# alone and all together, d=300 (a thread owns two units); time decay alone (T=8, B=3: lengths 8,
# 1, 2), with each other option and with all of them
OPTION_CASES = [(1, 1, 4, [1, 3], 0.5, "relu", False), (7, 3, 48, [5, 7, 12, 24], None, None, False),
                (7, 3, 48, None, None, "relu", False), (7, 3, 48, None, 0.3, None, False),
                (5, 17, 64, [16, 16, 32], 0.3, "relu", False), (4, 16, 100, [33, 33, 34], None, None, False),
                (3, 5, 300, [100, 120, 80], 0.2, "relu", False),
                (8, 3, 48, None, None, None, True), (1, 1, 4, None, None, None, True),
                (6, 5, 48, [16, 16, 16], None, None, True), (8, 3, 48, None, None, "relu", True),
                (8, 3, 48, None, 0.3, None, True), (5, 17, 64, [16, 16, 32], 0.3, "relu", True),
                (3, 5, 300, [100, 120, 80], 0.2, "relu", True)]


def _option_id(c):
    return "T{}-B{}-d{}-k{}-p{}-{}{}".format(*c[:3], len(c[3]) if c[3] else 0, c[4], c[5] or "tanh",
                                             "-decay" if c[6] else "")


@pytest.mark.parametrize("case", OPTION_CASES, ids=_option_id)
@pytest.mark.gpu_cuda
def test_cuda_options_float64_match_contract(case):
    from diru_fast.providers import cuda as provider

    _require("cuda", torch.float64)
    T, B, d, sizes, dropout, activation, decay = case
    lengths = _lengths(T, B)
    a, opts = _option_inputs(T, B, d, torch.float64, sizes, dropout, activation, decay, lengths, seed=d)
    hs, saved = provider.scan_fwd(*a.values(), lengths, True, **opts)
    hs_infer, nothing = provider.scan_fwd(*a.values(), lengths, False, **opts)
    hs_ref, saved_ref = contract.scan_fwd(**a, lengths=lengths, need_saved=True, **opts)
    torch.testing.assert_close(hs, hs_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(saved, saved_ref, rtol=1e-10, atol=1e-10)
    assert nothing.numel() == 0 and torch.equal(hs_infer, hs)
    grad = torch.randn(T, B, d, dtype=torch.float64, device="cuda")
    got = provider.scan_bwd(grad, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths, **opts)
    want = contract.scan_bwd(grad, a["h0"], hs_ref, saved_ref, a["w_hh"], a["w_int"], a["w_out"], lengths, **opts)
    for name, g, w in zip(("d_p", "d_zp", "d_yp", "d_h0"), got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10, msg=lambda m, name=name: f"{name}: {m}")


class _ProviderScan(torch.autograd.Function):
    """(xp, h0) -> hs on the cuda provider, its backward the provider's d_p (= dL/dxp) and d_h0:
    gradcheck then compares the kernels' backward with finite differences of their forward."""

    @staticmethod
    def forward(ctx, xp, h0, w, lengths, opts):
        from diru_fast.providers import cuda as provider

        hs, saved = provider.scan_fwd(xp, h0, *w, lengths, True, **opts)
        ctx.save_for_backward(h0, hs, saved)
        ctx.w, ctx.lengths, ctx.opts = w, lengths, opts
        return hs

    @staticmethod
    def backward(ctx, grad_hs):
        from diru_fast.providers import cuda as provider

        h0, hs, saved = ctx.saved_tensors
        w_hh, w_int, _, w_out, _ = ctx.w
        d_p, _, _, d_h0 = provider.scan_bwd(grad_hs.contiguous(), h0, hs, saved, w_hh, w_int, w_out, ctx.lengths,
                                            **ctx.opts)
        return d_p, d_h0, None, None, None


@pytest.mark.parametrize("case", [(3, 2, 6, [2, 4], 0.5, "tanh", False), (3, 3, 5, [1, 3, 1], None, "tanh", False),
                                  (2, 2, 4, None, 0.5, "tanh", False), (3, 3, 5, None, None, "tanh", True),
                                  (3, 3, 6, [2, 4], 0.5, "tanh", True)], ids=_option_id)
@pytest.mark.gpu_cuda
def test_cuda_options_gradcheck_float64_full_mode(case):
    """relu's kink makes finite differences unreliable: tanh here, relu by the contract comparison above.
    The decay factors are constants here (their own gradient: the test below)."""
    _require("cuda", torch.float64)
    T, B, d, sizes, dropout, activation, decay = case
    lengths = torch.tensor([T, 1, 2][:B], device="cuda")
    a, opts = _option_inputs(T, B, d, torch.float64, sizes, dropout, activation, decay, lengths, seed=5)
    w = tuple(a[k] for k in ("w_hh", "w_int", "b_int", "w_out", "b_out"))
    xp, h0 = a["xp"].clone().requires_grad_(), a["h0"].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, h: _ProviderScan.apply(x, h, w, lengths, opts), [xp, h0],
                                    fast_mode=False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case", [(30, 9, 48, [5, 7, 12, 24], 0.3, "relu", False),
                                  (12, 16, 100, [33, 33, 34], None, None, False),
                                  (12, 32, 256, [64, 128, 64], 0.2, "relu", False), (30, 9, 48, None, None, None, True),
                                  (12, 32, 256, [64, 128, 64], 0.2, "relu", True)], ids=_option_id)
@pytest.mark.gpu_cuda
def test_cuda_options_low_precision_within_twice_torch_error(dtype, case):
    """The module's rule (above) on the provider's outputs: hs, and the backward's d_p and d_h0 from
    each path's own forward, against the float64 contract on the same inputs."""
    from diru_fast.providers import cuda as provider

    _require("cuda", dtype)
    T, B, d, sizes, dropout, activation, decay = case
    lengths = _lengths(T, B)
    a, opts = _option_inputs(T, B, d, dtype, sizes, dropout, activation, decay, lengths, seed=T + d)
    grad = torch.randn(T, B, d, dtype=torch.float64, device="cuda")
    a64 = {k: v.double() for k, v in a.items()}
    opts64 = {k: v.double() if k in ("mask", "decay") and v is not None else v for k, v in opts.items()}
    w = ("w_hh", "w_int", "w_out")

    def outputs(fwd, bwd, inp, o):
        hs, saved = fwd(*inp.values(), lengths, True, **o)
        d_p, _, _, d_h0 = bwd(grad.to(hs.dtype), inp["h0"], hs, saved, *(inp[k] for k in w), lengths, **o)
        return hs, d_p, d_h0

    got = outputs(provider.scan_fwd, provider.scan_bwd, a, opts)
    low = outputs(lambda *x, **o: contract.scan_fwd(*x, **o, acc=dtype), contract.scan_bwd, a, opts)
    ref = outputs(contract.scan_fwd, contract.scan_bwd, a64, opts64)
    for name, g, lo, r in zip(("hs", "d_p", "d_h0"), got, low, ref):
        err = (g.double() - r).abs().max().item()
        torch_err = (lo.double() - r).abs().max().item()
        slack = 8 * torch.finfo(torch.float32).eps * r.abs().max().item() if dtype == torch.float32 else 1e-6
        assert err <= 2 * torch_err + slack, f"{name}: cuda error {err:.3g} > 2x PyTorch's {torch_err:.3g}"



@pytest.mark.parametrize("case", [(3, 3, 5, None, None, "tanh", True), (3, 3, 6, [2, 4], 0.5, "tanh", True)],
                         ids=_option_id)
@pytest.mark.gpu_cuda
def test_cuda_time_decay_gradcheck_through_the_autograd_formula(case):
    """ops.Scan on "cuda" with time decay: every weight, xp, h0 and the decay factors themselves (their
    gradient formed from the kernels' outputs) against finite differences, full mode, and the second
    order. Decay finite everywhere here (finite differences perturb every entry). CPU twin: the same
    formula on the contract, tests/scan/test_ops.py."""
    from tests.providers.test_cuda import time_decay

    _require("cuda", torch.float64)
    T, B, d, sizes, dropout, activation, _ = case
    lengths = torch.tensor([T, 1, 2][:B], device="cuda")
    a, opts = _option_inputs(T, B, d, torch.float64, sizes, dropout, activation, seed=7)
    decay = time_decay(T, B, d, None, seed=7).cuda().requires_grad_()
    leaves = [v.clone().requires_grad_() for v in a.values()]

    def run(*args):
        return ops.Scan.apply(*args[:7], lengths, "cuda", opts["activation"], opts["compartment_of"], opts["mask"],
                              args[7])[0]

    assert torch.autograd.gradcheck(run, leaves + [decay], fast_mode=False)
    assert torch.autograd.gradgradcheck(run, leaves + [decay])


@pytest.mark.gpu_cuda
def test_cuda_checks_the_decay_argument():
    """The bindings refuse a decay of the wrong shape or dtype (acc: float32 for float32 inputs)."""
    from diru_fast.providers import cuda as provider

    _require("cuda", torch.float32)
    T, B, d = 3, 2, 8
    a = _inputs(T, B, d, torch.float32)
    for bad, match in ((torch.rand(T, B, d + 1, device="cuda"), "decay must have shape"),
                       (torch.rand(T, B, d, device="cuda", dtype=torch.float16), "decay must be")):
        with pytest.raises(RuntimeError, match=match):
            provider.scan_fwd(*a.values(), None, True, decay=bad)


# ---- the contract's options on "triton" (relu, attention with tl.gather and the segment sums, dropout,
# time decay with its scratch slot; the dispatcher's routing to the per-step kernels). CPU twins: the
# same kernels under the interpreter, tests/providers/test_triton_options.py and test_triton_decay.py.

# (T, B, d, sizes, dropout, activation, decay): every option at d=48 (bf16: resident d_pad 64; fp32:
# streamed); attention + dropout + decay streamed at d_pad 128 with masked lanes (bf16: 32-column
# chunks); every option but attention at d_pad 256 with full tiles (bf16 streamed; fp32 per step: dropout
# with decay); attention at d_pad 256 and 18 compartments at d_pad 128 (both routed to the per-step
# kernels); every option at d=300 (per step)
TRITON_OPTION_CASES = [(30, 9, 48, [5, 7, 12, 24], 0.3, "relu", True), (12, 16, 100, [33, 33, 34], 0.2, None, True),
                       (12, 32, 256, None, 0.2, "relu", True), (12, 32, 256, [64, 128, 64], 0.2, "relu", True),
                       (8, 16, 128, [7] * 17 + [9], None, None, False), (5, 5, 300, [100, 120, 80], 0.2, "relu", True)]


@pytest.mark.gpu_triton
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", TRITON_OPTION_CASES, ids=_option_id)
def test_triton_options_within_twice_torch_error(dtype, case):
    """hs, dL/dxp (every column: the attention logits' too) and dL/dh0 of the compiled kernels with the
    options on, within 2x the error of PyTorch's own path in ``dtype`` against the float64 contract
    (tests/helpers.py); the inference forward gives the training states bit for bit."""
    import importlib

    from tests.helpers import assert_kernel_within_twice_torch_error, contract_inputs

    _require("triton", dtype)
    kernels = importlib.import_module("diru_fast.kernels")
    T, B, d, sizes, dropout, activation, decay = case
    if sizes is not None and "attention" not in kernels.OPTIONS:
        pytest.skip(kernels.ATTENTION_PROBLEM)
    a, opts = contract_inputs(T, B, d, dtype=dtype, seed=T + d, sizes=sizes, dropout=dropout, activation=activation,
                              decay=decay)
    a = {key: v.cuda() for key, v in a.items()}
    opts = {key: v.cuda() if isinstance(v, torch.Tensor) else v for key, v in opts.items()}
    lengths = _lengths(T, B)
    assert_kernel_within_twice_torch_error(kernels, a, opts, lengths, None, dtype)
    hs, saved = kernels.scan_fwd(**a, lengths=lengths, need_saved=True, **opts)
    hs_infer, nothing = kernels.scan_fwd(**a, lengths=lengths, need_saved=False, **opts)
    torch.cuda.synchronize()
    assert nothing.numel() == 0 and torch.equal(hs_infer, hs)


# ---- the options formed in the step: time decay from lambda and dt, the dropout mask from its seed --------
# CPU twins: tests/providers/test_triton_decay.py (interpreter, every regime, to 1e-12) and the harness cases
# of tests/providers/test_cuda.py (the CUDA kernel source on the CPU, to 1e-12).

# (T, B, d, compartment sizes), dtype: d=48 resident in 16 bit / streamed in fp32 (triton), B=9 partial blocks
# and row tiles; d=256 with every option runs the per-step Triton kernels. The shapes of the self test's
# options cases (diru_fast/selftest.py OPTIONS_GPU), which bench/gpu_check.sh runs first: the Triton kernels
# they compile are in Triton's cache here (d=256 in fp32 only: a new set of per-step variants).
IN_STEP_CASES = [((7, 9, 48, [5, 7, 12, 24]), dtype) for dtype in (torch.float64, torch.float32, torch.bfloat16)] + [
    ((4, 32, 256, [64, 128, 64]), dtype) for dtype in (torch.float64, torch.float32)]


def _in_step_run(backend, a, opts, lengths, lam, dt, mask, grad):
    """(hs, saved, d_p, d_zp, d_yp, d_h0, hd, d_lambda, d_dt, o) of the provider, options in the step."""
    provider = diru_fast.backends.get_provider(backend)
    args = [a[k] for k in ("xp", "h0", "w_hh", "w_int", "b_int", "w_out", "b_out")]
    hs, saved = provider.scan_fwd(*args, lengths, True, **opts, mask=mask, decay_rate=lam, dt=dt)
    out = provider.scan_bwd(grad, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths, **opts, mask=mask,
                            decay_rate=lam, dt=dt, extended=True)
    return (hs, saved) + tuple(out)


def _in_step_contract(a, opts, lengths, lam, dt, mask, grad):
    """The same outputs from the contract (in the inputs' dtype) on the factors and the mask's tensor."""
    lam, gaps = lam.detach().clone().requires_grad_(), dt.detach().clone().requires_grad_()
    decay = contract.decay_factor(lam, gaps)
    opts = dict(opts, mask=mask.tensor())
    hs, saved = contract.scan_fwd(**a, lengths=lengths, need_saved=True, **opts, decay=decay.detach(),
                                  acc=a["xp"].dtype)
    step = contract.scan_bwd(grad.to(hs.dtype), a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths,
                             **opts, decay=decay.detach())
    h_prev, hd = contract.decayed_states(a["h0"], hs, decay.detach())
    g_lam, g_dt = torch.autograd.grad(decay, (lam, gaps), ((step[2] + step[0] @ a["w_hh"]) * h_prev).to(decay.dtype))
    o = contract.integration_input(saved, a["h0"].shape[-1], opts["compartment_of"], opts["mask"])
    return (hs, saved) + tuple(step) + (hd, g_lam, g_dt, o)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case, dtype", IN_STEP_CASES, ids=lambda c: "T{}-B{}-d{}".format(*c[:3])
                         if isinstance(c, tuple) else str(c))
def test_in_step_options_match_contract(backend, case, dtype):
    """Every option, time decay from lambda and dt and the mask hashed from its seed, on the GPU: the
    provider's forward and extended backward (the decayed states, the gradients of lambda and dt, the
    integration inputs) against the float64 contract on the factors and the mask's tensor: float64 to
    1e-10; other dtypes within 2x the error of PyTorch's own path in that dtype plus 8 ulp of float32."""
    from diru_fast.scan.dropout import CompartmentMask

    _require(backend, dtype)
    T, B, d, sizes = case
    g = torch.Generator().manual_seed(T + B + d)
    a = _inputs(T, B, d, torch.float64, seed=d, device="cpu")
    k = len(sizes)
    a["xp"] = torch.cat([a["xp"], torch.randn(T, B, k, generator=g, dtype=torch.float64)], -1)
    a["w_hh"] = torch.cat([a["w_hh"], torch.randn(k, d, generator=g, dtype=torch.float64) * d ** -0.5])
    opts = dict(activation="relu", compartment_of=torch.repeat_interleave(torch.arange(k), torch.tensor(sizes)))
    lengths = _lengths(T, B, device="cpu")
    lam = torch.randn(d, generator=g, dtype=torch.float64)
    dt = (torch.rand(T, B, generator=g, dtype=torch.float64) * 2).masked_fill(
        torch.arange(T)[:, None] >= lengths[None, :], 0.0)
    grad = torch.randn(T, B, d, generator=g, dtype=torch.float64)
    seed = torch.randint(0, 2 ** 62, (), generator=g)
    # every run on the same inputs: rounded to dtype once
    a = {k_: v.to(dtype).double() for k_, v in a.items()}
    lam, dt = lam.to(dtype).double(), dt.to(dtype).double()

    def on(device, dt_):
        cast = lambda t: t.to(device=device, dtype=dt_)  # noqa: E731
        mask = CompartmentMask(seed, 0.3, (T, B, d), contract.acc_dtype(dt_), torch.device(device))
        return ({k_: cast(v) for k_, v in a.items()}, {k_: v if not torch.is_tensor(v) else v.to(device)
                                                         for k_, v in opts.items()},
                lengths.to(device), cast(lam), cast(dt), mask, cast(grad))

    got = _in_step_run(backend, *on("cuda", dtype))
    ref = _in_step_contract(*on("cpu", torch.float64))
    low = None if dtype == torch.float64 else _in_step_contract(*on("cuda", dtype))
    names = ("hs", "saved", "d_p", "d_zp", "d_yp", "d_h0", "hd", "d_decay_rate", "d_dt", "o")
    for i, name in enumerate(names):
        x, r = got[i].double().cpu(), ref[i].double()
        if low is None:
            torch.testing.assert_close(x, r, rtol=1e-10, atol=1e-10, msg=lambda m, name=name: f"{name}: {m}")
            continue
        err = (x - r).abs().max().item()
        torch_err = (low[i].double().cpu() - r).abs().max().item()
        slack = 8 * torch.finfo(torch.float32).eps * r.abs().max().item()
        assert err <= 2 * torch_err + slack, f"{name}: {backend} error {err:.3g} > 2x PyTorch's {torch_err:.3g}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeded_mask_is_the_mask_tensor_bit_for_bit_on_gpu(backend):
    """The mask hashed in the kernels from its seed is bitwise the mask tensor every other backend applies:
    the same kernels on ``CompartmentMask.tensor()`` give the same float32 numbers bit for bit (CPU twins:
    tests/providers/test_triton_options.py, and the cpu kernel's in tests/providers/test_cpu_options.py)."""
    from diru_fast.scan.dropout import CompartmentMask

    _require(backend, torch.float32)
    provider = diru_fast.backends.get_provider(backend)
    T, B, d = 5, 19, 48
    a = _inputs(T, B, d, torch.float32, seed=4)
    lengths = _lengths(T, B)
    torch.manual_seed(0)
    mask = CompartmentMask.draw(T, B, d, 0.3, torch.float32, "cuda")
    grad = torch.randn(T, B, d, device="cuda")
    runs = []
    for m in (mask, mask.tensor()):
        hs, saved = provider.scan_fwd(*a.values(), lengths, True, mask=m)
        out = provider.scan_bwd(grad, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths, mask=m,
                                extended=True)
        runs.append((hs, saved) + tuple(out[:4]) + (out[7],))
    for x, y in zip(*runs):
        assert torch.equal(x, y)
