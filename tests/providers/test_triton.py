"""The Triton kernels on CPU under TRITON_INTERPRET=1, every regime, against the kernel contract.

The conformance suite (tests/scan/test_ops.py) runs the "triton" provider with the
dispatcher's own choice (resident or streamed at its small sizes). Here each regime the
dispatcher can pick (resident, streamed, per-step) is forced with ``config.override`` and
checked in float64 to 1e-12 (forward, backward, lengths, masks, odd shapes), 16-bit within
the flash-attention rule (error <= 2x PyTorch's own error in that dtype), and by float64
gradcheck in full mode.
"""

import importlib

import pytest
import torch

import diru_fast
from diru_fast import CellWeights
from diru_fast.functional import diru_scan
from diru_fast.scan import contract, ops
from tests.helpers import contract_inputs, random_cell

pytestmark = pytest.mark.skipif("triton" not in diru_fast.available_backends("cpu"),
                                reason="triton is not installed (or TRITON_INTERPRET=1 was not set before import)")


def _kernels():
    return importlib.import_module("diru_fast.kernels")


def _regimes():
    k = _kernels()
    return {
        "resident": lambda d: k.KernelConfig("resident", k.pad_hidden(d), block_b=16, block_k=k.pad_hidden(d)),
        "streamed": lambda d: k.KernelConfig("streamed", k.pad_hidden(d), block_b=16, block_k=16),
        "step": lambda d: k.KernelConfig("step", 0, block_b=16, block_k=16, block_n=16),
    }


REGIMES = ["resident", "streamed", "step"]
# (T, B, d): T=1; B=1; d=48 (masked lanes); B=17 (two row tiles, ragged); B=16, d=32 (no masks at all)
SHAPES = [(1, 1, 4), (4, 3, 48), (3, 17, 20), (3, 16, 32)]




def _config(regime, d):
    return _regimes()[regime](d)


def _lengths(T, B):
    return torch.tensor([max(1, T - (3 * b) % T) for b in range(B)])


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-B{}-d{}".format(*s))
@pytest.mark.parametrize("regime", REGIMES)
def test_regime_matches_contract_float64(regime, shape, with_lengths):
    k = _kernels()
    T, B, d = shape
    a = contract_inputs(T, B, d, seed=T * B + d)
    lengths = _lengths(T, B) if with_lengths else None
    cfg = _config(regime, d)
    hs, saved = k.scan_fwd(**a, lengths=lengths, need_saved=True, config=cfg)
    hs_ref, saved_ref = contract.scan_fwd(**a, lengths=lengths, need_saved=True)
    torch.testing.assert_close(hs, hs_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(saved, saved_ref, rtol=1e-12, atol=1e-12)
    hs_inf, saved_inf = k.scan_fwd(**a, lengths=lengths, need_saved=False, config=cfg)
    assert saved_inf.numel() == 0 and torch.equal(hs_inf, hs)
    grad_hs = torch.randn(T, B, d, dtype=torch.float64)
    got = k.scan_bwd(grad_hs, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths, config=cfg)
    want = contract.scan_bwd(grad_hs, a["h0"], hs_ref, saved_ref, a["w_hh"], a["w_int"], a["w_out"], lengths)
    for name, g, w in zip(("d_p", "d_zp", "d_yp", "d_h0"), got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12, msg=lambda m: f"{name}: {m}")
    if lengths is not None:
        for b, length in enumerate(lengths.tolist()):
            assert torch.all(saved[length:, b] == 0) and torch.all(got[0][length:, b] == 0)


def _scan_and_grads(scan_fn, a, lengths, grad):
    """hs and the gradients of <hs, grad> w.r.t. every input of one layer's scan."""
    leaves = {key: v.detach().clone().requires_grad_() for key, v in a.items()}
    hs = scan_fn(**leaves, lengths=lengths)
    grads = torch.autograd.grad((hs.double() * grad).sum(), list(leaves.values()))
    return hs.detach(), grads


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_regime_low_precision_within_twice_torch_error(regime, dtype):
    """Flash-attention rule: hs and the gradients of every input (xp, h0, all weights) are within 2x
    the error of PyTorch's own path in ``dtype`` (backend "torch"), both against float64 on the
    same (rounded) inputs."""
    k = _kernels()
    T, B, d = 6, 5, 40
    a = contract_inputs(T, B, d, dtype=dtype, seed=3)
    lengths = _lengths(T, B)
    # its own generator: the outcome must not depend on which tests ran before (the global RNG)
    grad = torch.randn(T, B, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def triton_scan(lengths, **w):
        return ops.scan(*w.values(), lengths, "triton")

    def torch_path(lengths, **w):
        return contract.scan_fwd(*w.values(), lengths, False, acc=w["xp"].dtype)[0]

    with k.config.override(_config(regime, d)):
        hs, grads = _scan_and_grads(triton_scan, a, lengths, grad)
    hs_low, grads_low = _scan_and_grads(torch_path, a, lengths, grad)
    hs_ref, grads_ref = _scan_and_grads(torch_path, {key: v.double() for key, v in a.items()}, lengths, grad)
    assert hs.dtype == dtype and all(g.dtype == dtype for g in grads)
    for name, got, low, ref in zip(["hs"] + list(a), [hs] + list(grads), [hs_low] + list(grads_low),
                                   [hs_ref] + list(grads_ref)):
        err = (got.double() - ref).abs().max().item()
        torch_err = (low.double() - ref).abs().max().item()
        # float32: the kernels' tanh and sigmoid (kernels/_math.py) are good to a few ulp, not 1: 8 ulp of the scale
        slack = 8 * torch.finfo(torch.float32).eps * ref.abs().max().item() if dtype == torch.float32 else 1e-6
        assert err <= 2 * torch_err + slack, f"{name}: kernel error {err:.3g} > 2x PyTorch's {torch_err:.3g}"


@pytest.mark.parametrize("regime", ["streamed", "step"])
def test_regime_gradcheck_float64_full_mode(regime):
    """Full-mode gradcheck through the custom ops with a forced regime (resident: tests/scan/test_ops.py)."""
    k = _kernels()
    T, B, n, d = 2, 2, 1, 2  # tiny: full mode perturbs every input, and the interpreter is slow
    cell = random_cell(n, d, 2, seed=5)
    x = torch.randn(T, B, n, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, d, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([2, 1])
    leaves = [t.detach().clone().requires_grad_() for t in cell.cell_weights()]

    def run(x, h0, *weights):
        return diru_scan(x, CellWeights(*weights), h0, lengths, backend="triton")

    with k.config.override(_config(regime, d)):
        assert torch.autograd.gradcheck(run, [x, h0] + leaves, fast_mode=False)


def test_multilayer_bidirectional_layer_every_regime():
    """End to end: a 2-layer bidirectional DIRULayer with lengths, forward and gradients, per regime."""
    k = _kernels()
    T, B, n, d = 4, 3, 3, 8
    torch.manual_seed(0)
    layer = diru_fast.DIRULayer(n, d, 2, bidirectional=True, num_compartments=2, backend="torch").double()
    x = torch.randn(T, B, n, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 1, 3])
    out_ref, h_ref = layer(x, lengths=lengths)
    grads_ref = torch.autograd.grad(out_ref.square().sum() + h_ref.sum(), [x] + list(layer.parameters()))
    layer.backend = "triton"
    for regime in REGIMES:
        with k.config.override(_config(regime, d)):
            out, h = layer(x, lengths=lengths)
            grads = torch.autograd.grad(out.square().sum() + h.sum(), [x] + list(layer.parameters()))
        torch.testing.assert_close(out, out_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(h, h_ref, rtol=1e-12, atol=1e-12)
        for g, r in zip(grads, grads_ref):
            torch.testing.assert_close(g, r, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_dispatcher_choice_at_d100_and_inference_states_bit_for_bit(dtype):
    """CPU twin of tests/providers/test_cuda_gpu.py's checks of a d that is not a power of two on the
    streamed path (d_pad = 128: masked lanes and K chunks) and of the inference forward (no gates
    written: its own compiled variant), with the dispatcher's own configuration for each dtype."""
    k = _kernels()
    T, B, d = 2, 17, 100
    a = contract_inputs(T, B, d, dtype=dtype, seed=11)
    lengths = _lengths(T, B)
    assert k.choose(d, str(dtype)[6:]).mode == "streamed"
    hs, saved = k.scan_fwd(**a, lengths=lengths, need_saved=True)
    hs_inf, nothing = k.scan_fwd(**a, lengths=lengths, need_saved=False)
    assert nothing.numel() == 0 and torch.equal(hs_inf, hs)
    if dtype == torch.float64:
        hs_ref, saved_ref = contract.scan_fwd(**a, lengths=lengths, need_saved=True)
        torch.testing.assert_close(hs, hs_ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(saved, saved_ref, rtol=1e-12, atol=1e-12)
        grad_hs = torch.randn(T, B, d, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        got = k.scan_bwd(grad_hs, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths)
        want = contract.scan_bwd(grad_hs, a["h0"], hs_ref, saved_ref, a["w_hh"], a["w_int"], a["w_out"], lengths)
        for name, g, w in zip(("d_p", "d_zp", "d_yp", "d_h0"), got, want):
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12, msg=lambda m: f"{name}: {m}")


def test_interpreter_rounds_bfloat16_to_nearest_like_the_gpu():
    """The kernels' conversions to bf16 (kernels/_math.py ``rn``) round to nearest even under the
    interpreter too (whose own fp32 -> bf16 cast truncates), so the interpreter's bf16 numbers are
    the GPU's: the stored states equal PyTorch's rounding of the float32 states."""
    k = _kernels()
    T, B, d = 3, 5, 20
    a = contract_inputs(T, B, d, dtype=torch.bfloat16, seed=4)
    hs, _ = k.scan_fwd(**a, lengths=None, need_saved=False)
    # step 1 from h0 exactly as the kernel computes it (fp32 state, bf16 operand), rounded by torch
    f = {key: v.float() for key, v in a.items()}
    p = f["xp"][0] + f["h0"].bfloat16().float() @ f["w_hh"].t()
    u, s_, r = torch.tanh(p[:, :d]), torch.sigmoid(p[:, d:2 * d]), torch.sigmoid(p[:, 2 * d:])
    z = torch.tanh((u * s_).bfloat16().float() @ f["w_int"].t() + f["b_int"])
    h1 = torch.tanh((z * r).bfloat16().float() @ f["w_out"].t() + f["b_out"] + f["h0"])
    rounded, truncated = h1.bfloat16(), (h1.view(torch.int32) & ~0xFFFF).view(torch.float32).bfloat16()
    differ = rounded != truncated  # about half the elements: there the two roundings tell apart
    assert differ.sum() >= 10
    # (not all of them: an fp32 state within float noise of a rounding tie may land either way)
    assert (hs[0][differ] == rounded[differ]).float().mean() >= 0.9


def test_nan_in_padded_steps_does_not_leak_streamed():
    k = _kernels()
    T, B, d = 4, 3, 8
    a = contract_inputs(T, B, d)
    a["xp"][2:, 1] = float("nan")
    lengths = torch.tensor([4, 2, 3])
    with k.config.override(_config("streamed", d)):
        hs, saved = k.scan_fwd(**a, lengths=lengths, need_saved=True)
    assert torch.isfinite(hs).all() and torch.all(saved[2:, 1] == 0)
    torch.testing.assert_close(hs[2:, 1], hs[1, 1].expand(2, d), rtol=0, atol=0)  # state kept, exactly


def test_dispatcher_size_classes():
    k = _kernels()
    assert k.choose(48, "bfloat16").mode == "resident" and k.choose(48, "bfloat16").d_pad == 64
    assert k.choose(32, "float32").mode == "resident"
    assert k.choose(48, "float32").mode == "streamed"  # 3xTF32 resident weights would not fit sm_80
    # attention over more than 8 compartments at d_pad >= 128: the per-step kernels (no spills)
    assert k.choose(100, "float32", 8).mode == "streamed" and k.choose(100, "float32", 18).mode == "step"
    assert k.choose(200, "float32", 2).mode == "step"  # attention at d_pad 256: per step (no spills)
    # 16 bit streams in 32-column chunks from d_pad 128 (4 bytes a thread: cp.async), fp32 in 16
    assert k.choose(100, "bfloat16").block_k == 32 and k.choose(256, "float16").block_k == 32
    assert k.choose(100, "float32").block_k == 16 and k.choose(64, "float32").block_k == 16
    # every streamed chunk of the left operand (16 rows x BLOCK_K) is at least the 4 bytes a thread that
    # cp.async moves: else Triton loads it synchronously every chunk (ld.global, st.shared, a barrier)
    for cfg, dtype in k.all_configs():
        if cfg.mode == "streamed":
            size = 4 if dtype == "float32" else 2
            assert cfg.block_b * cfg.block_k * size / (32 * cfg.num_warps) >= 4, (cfg.label(), dtype)
    # fp32 at d_pad 256: four stages forward, three backward (each the spill-free choice on Triton 3.6 and 3.9)
    wide = k.choose(256, "float32")
    assert (wide.num_stages, wide.stages_bwd) == (4, 3) and k.choose(256, "bfloat16").stages_bwd == 3
    assert k.choose(64, "float32", 18).mode == "streamed" and k.choose(32, "bfloat16", 18).mode == "resident"
    assert k.choose(1, "bfloat16").d_pad == 16
    assert k.choose(100, "bfloat16").mode == "streamed"
    assert k.choose(256, "bfloat16").mode == "streamed"
    assert k.choose(257, "bfloat16").mode == "step"
    picks = set(k.all_configs())
    for d in (1, 16, 17, 48, 64, 65, 128, 200, 256, 300, 1024):
        for dtype in ("float32", "bfloat16", "float16"):
            assert (k.choose(d, dtype), dtype) in picks, (d, dtype)  # the compile check covers it


def test_config_validation_and_override_restores():
    k = _kernels()
    with pytest.raises(ValueError, match="power of two"):
        k.KernelConfig("streamed", 48, block_b=16, block_k=16)
    with pytest.raises(ValueError, match="unknown kernel mode"):
        k.KernelConfig("fast", 64, block_b=16, block_k=16)
    cfg = k.KernelConfig("step", 0, block_b=16, block_k=16, block_n=16)
    with k.config.override(cfg):
        assert k.choose(64, "float32") is cfg
    assert k.choose(64, "bfloat16").mode == "resident"
    with pytest.raises(ValueError, match="holds d <= 16"):
        k.scan_fwd(**contract_inputs(2, 2, 20), lengths=None, need_saved=False,
                   config=k.KernelConfig("resident", 16, block_b=16, block_k=16))


def test_launcher_rejects_bad_tensors_with_the_fix():
    k = _kernels()
    a = contract_inputs(2, 2, 4)
    with pytest.raises(TypeError, match="take torch.float32"):
        k.scan_fwd(**{key: v.to(torch.int32) for key, v in a.items()}, lengths=None, need_saved=False)
    bad = dict(a, xp=a["xp"].transpose(0, 1).contiguous().transpose(0, 1))
    with pytest.raises(ValueError, match="contiguous"):
        k.scan_fwd(**bad, lengths=None, need_saved=False)


def test_provider_reports_what_it_supports():
    from diru_fast.providers import triton as provider

    assert provider.unavailable_reason() is None
    assert provider.unsupported_reason(torch.device("cpu"), torch.float64) is None
    assert "not supported" in provider.unsupported_reason(torch.device("cpu"), torch.int64)
    assert "do not run on meta" in provider.unsupported_reason(torch.device("meta"), torch.float32)


@pytest.mark.parametrize("setting", ["global", "matmul", "legacy"])
def test_runs_under_every_tf32_api(setting):
    """torch.backends.fp32_precision = "tf32" (PyTorch >= 2.9's API) made the legacy allow_tf32 read
    raise in every Triton call; the launcher reads the new API where it is set, the legacy flag
    otherwise. Each case sets and restores through one API only (PyTorch refuses to read a mix)."""
    k = _kernels()
    backends = torch.backends
    new = setting != "legacy"
    saved = (backends.fp32_precision, backends.cuda.matmul.fp32_precision) if new else backends.cuda.matmul.allow_tf32
    try:
        if setting == "global":
            backends.fp32_precision = "tf32"
        elif setting == "matmul":
            backends.cuda.matmul.fp32_precision = "tf32"
        else:
            backends.cuda.matmul.allow_tf32 = True
        assert k.tf32_allowed() is True
        a = contract_inputs(2, 1, 4)
        hs, _ = k.scan_fwd(**a, lengths=None, need_saved=False)
        want = contract.scan_fwd(**{n: v.double() for n, v in a.items()}, lengths=None, need_saved=False)[0]
        torch.testing.assert_close(hs.double(), want)
    finally:
        if new:
            backends.fp32_precision, backends.cuda.matmul.fp32_precision = saved
        else:
            backends.cuda.matmul.allow_tf32 = saved
    assert k.tf32_allowed() is False
