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
                                                 "tests/providers/test_triton.py)")
GPU_BACKENDS = ["triton", "cuda"]


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


@pytest.mark.parametrize("backend", GPU_BACKENDS)
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


@pytest.mark.parametrize("backend", GPU_BACKENDS)
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


@pytest.mark.parametrize("backend", GPU_BACKENDS)
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


@pytest.mark.parametrize("backend", GPU_BACKENDS)
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


@pytest.mark.parametrize("backend", GPU_BACKENDS)
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


def test_auto_picks_triton_then_cuda_on_gpu():
    expected = next((b for b in GPU_BACKENDS if diru_fast.backends.why_unavailable(b, "cuda", torch.float32) is None),
                    "torch")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert diru_fast.backends.resolve_backend("auto", torch.device("cuda"), torch.float32) == expected
