"""The Triton kernels' fused options (relu, attention over compartments, compartment dropout) under
TRITON_INTERPRET=1, every regime the dispatcher can pick (resident, streamed, per-step) forced as in
tests/providers/test_triton.py, against the kernel contract (diru_fast.scan.contract): float64 to
1e-12 (forward, inference forward, backward, lengths, odd shapes and unequal compartments), float32 /
16-bit within the rule test_triton.py uses (error <= 2x PyTorch's own error in that dtype)."""

import importlib

import pytest
import torch

import diru_fast
from diru_fast.scan import contract
from tests.helpers import assert_kernel_matches_contract, assert_kernel_within_twice_torch_error, contract_inputs

pytestmark = pytest.mark.skipif("triton" not in diru_fast.available_backends("cpu"),
                                reason="triton is not installed (or TRITON_INTERPRET=1 was not set before import)")

REGIMES = ["resident", "streamed", "step"]
# option sets: each alone and all three (attention with the sizes of the case)
OPTION_SETS = {"relu": dict(activation="relu"), "attention": dict(attention=True),
               "dropout": dict(dropout=0.3), "all": dict(activation="relu", attention=True, dropout=0.3)}
# (T, B, d, compartment sizes): T=1 B=1 unequal sizes; k=3 at d=48 (masked lanes); B=17 (two row
# tiles); 17 compartments (K_PAD = 32); B=16 d=32 (no masks at all)
CASES = [(1, 1, 24, [5, 7, 12]), (4, 3, 48, [10, 17, 21]), (3, 17, 24, [5, 7, 12]),
         (2, 3, 40, [2] * 17 + [6]), (2, 16, 32, [16, 16])]


def _kernels():
    return importlib.import_module("diru_fast.kernels")


def _config(regime, d):
    k = _kernels()
    return {"resident": k.KernelConfig("resident", k.pad_hidden(d), block_b=16, block_k=k.pad_hidden(d)),
            "streamed": k.KernelConfig("streamed", k.pad_hidden(d), block_b=16, block_k=16),
            "step": k.KernelConfig("step", 0, block_b=16, block_k=16, block_n=16)}[regime]


def _lengths(T, B):
    return torch.tensor([max(1, T - (3 * b) % T) for b in range(B)])


def _inputs(T, B, d, sizes, option_set, dtype=torch.float64, seed=0):
    o = OPTION_SETS[option_set]
    return contract_inputs(T, B, d, dtype=dtype, seed=seed, sizes=sizes if o.get("attention") else None,
                           dropout=o.get("dropout"), activation=o.get("activation"))


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "T{}-B{}-d{}-k{}".format(c[0], c[1], c[2], len(c[3])))
@pytest.mark.parametrize("option_set", list(OPTION_SETS))
@pytest.mark.parametrize("regime", REGIMES)
def test_options_match_contract_float64(regime, option_set, case, with_lengths):
    k = _kernels()
    T, B, d, sizes = case
    a, opts = _inputs(T, B, d, sizes, option_set, seed=T * B + d)
    lengths = _lengths(T, B) if with_lengths else None
    assert_kernel_matches_contract(k, a, opts, lengths, _config(regime, d))


@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_all_options_low_precision_within_twice_torch_error(regime, dtype):
    """relu + attention + dropout: hs and dL/dxp (d_p, all 3d+k columns), dL/dh0 within 2x the error of
    PyTorch's own path in ``dtype`` (the contract run in that dtype), both against float64 on the same
    rounded inputs (the rule of tests/providers/test_triton.py)."""
    k = _kernels()
    T, B, d, sizes = 5, 3, 24, [5, 7, 12]
    a, opts = _inputs(T, B, d, sizes, "all", dtype=dtype, seed=3)
    assert_kernel_within_twice_torch_error(k, a, opts, _lengths(T, B), _config(regime, d), dtype)


@pytest.mark.parametrize("regime", REGIMES)
def test_options_off_are_the_plain_kernels_bit_for_bit(regime):
    """The defaults (tanh, no attention, no mask) spelled out give exactly the plain call's numbers."""
    k = _kernels()
    T, B, d = 3, 5, 20
    a = contract_inputs(T, B, d, dtype=torch.float32, seed=7)
    cfg = _config(regime, d)
    hs, saved = k.scan_fwd(**a, lengths=None, need_saved=True, config=cfg)
    hs2, saved2 = k.scan_fwd(**a, lengths=None, need_saved=True, config=cfg, activation="tanh",
                             compartment_of=None, mask=None)
    assert saved.shape == (T, B, 4 * d) and torch.equal(hs, hs2) and torch.equal(saved, saved2)
    grad = torch.randn(T, B, d, generator=torch.Generator().manual_seed(0))
    plain = k.scan_bwd(grad, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], None, config=cfg)
    spelled = k.scan_bwd(grad, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], None, config=cfg,
                         activation="tanh", compartment_of=None, mask=None)
    assert plain[0].shape == (T, B, 3 * d) and all(torch.equal(x, y) for x, y in zip(plain, spelled))


def test_provider_fuses_every_option_and_passes_them_through():
    from diru_fast.providers import triton as provider

    assert provider.OPTIONS == {"relu", "attention", "dropout", "time_decay"}
    T, B, d = 2, 3, 12
    a, opts = contract_inputs(T, B, d, sizes=[3, 4, 5], dropout=0.25, activation="relu", seed=2)
    hs, saved = provider.scan_fwd(*a.values(), None, True, **opts)
    hs_ref, saved_ref = contract.scan_fwd(*a.values(), None, True, **opts)
    torch.testing.assert_close(hs, hs_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(saved, saved_ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn(T, B, d, dtype=torch.float64)
    got = provider.scan_bwd(grad, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], None, **opts)
    want = contract.scan_bwd(grad, a["h0"], hs_ref, saved_ref, a["w_hh"], a["w_int"], a["w_out"], None, **opts)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_unknown_activation_is_rejected():
    k = _kernels()
    a = contract_inputs(2, 2, 4)
    with pytest.raises(ValueError, match="activation"):
        k.scan_fwd(**a, lengths=None, need_saved=False, activation="gelu")


def test_dispatcher_sends_many_compartments_at_large_d_to_the_per_step_kernels():
    """More than 8 attention compartments at d_pad >= 128 run the per-step kernels (the streamed ones
    would spill: kernels/config.py), and agree with the contract."""
    k = _kernels()
    T, B, d, sizes = 1, 1, 128, [7] * 17 + [9]
    assert k.choose(d, "float64", len(sizes)).mode == "step"
    a, opts = contract_inputs(T, B, d, seed=5, sizes=sizes)
    hs, saved = k.scan_fwd(**a, lengths=None, need_saved=True, **opts)
    hs_ref, saved_ref = contract.scan_fwd(**a, lengths=None, need_saved=True, **opts)
    torch.testing.assert_close(hs, hs_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(saved, saved_ref, rtol=1e-12, atol=1e-12)
    grad_hs = torch.randn(T, B, d, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    got = k.scan_bwd(grad_hs, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], None, **opts)
    want = contract.scan_bwd(grad_hs, a["h0"], hs_ref, saved_ref, a["w_hh"], a["w_int"], a["w_out"], None, **opts)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("regime", REGIMES)
def test_seeded_mask_is_the_mask_tensor_bit_for_bit(regime):
    """The dropout mask hashed from its seed inside the kernels is bitwise the mask every other backend
    applies (``CompartmentMask.tensor()``, torch arithmetic; the cpu kernel's own hash is held to it in
    tests/providers/test_cpu_options.py): float32, attention and lengths, forward, backward and the
    integration inputs equal bit for bit to the same kernels run on the tensor."""
    from diru_fast.scan.dropout import CompartmentMask, threshold

    k = _kernels()
    T, B, d = 3, 5, 20
    a, opts = contract_inputs(T, B, d, dtype=torch.float32, seed=9, sizes=[6, 14])
    lengths = _lengths(T, B)
    torch.manual_seed(3)
    mask = CompartmentMask.draw(T, B, d, 0.4, torch.float32, "cpu")
    seeded = dict(mask_seed=int(mask.seed), mask_threshold=threshold(mask.p), mask_scale=mask.scale)
    cfg = _config(regime, d)
    grad = torch.randn(T, B, d, generator=torch.Generator().manual_seed(0))
    runs = []
    for kw in (seeded, dict(mask=mask.tensor())):
        hs, saved = k.scan_fwd(**a, lengths=lengths, need_saved=True, config=cfg, **dict(opts, **kw))
        back = k.scan_bwd(grad, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths, config=cfg,
                          extended=True, **dict(opts, **kw))
        runs.append((hs, saved) + back[:4] + back[7:])
    assert all(torch.equal(x, y) for x, y in zip(*runs))
    assert 0.2 < float((runs[0][-1] == 0).float().mean()) < 0.7  # the mask is in effect (p = 0.4)


try:  # a kernel of the test's own around the kernels' hash (module level: triton.jit reads its globals)
    import triton
    import triton.language as tl

    from diru_fast.kernels._math import dropout_mask as _dropout_mask

    @triton.jit
    def _keep_kernel(out_ptr, t, B, seed_lo, seed_hi, threshold, R: tl.constexpr, C: tl.constexpr):
        rows, cols = tl.arange(0, R), tl.arange(0, C)
        tl.store(out_ptr + rows[:, None] * C + cols[None, :],
                 _dropout_mask(rows, cols, t, B, seed_lo, seed_hi, threshold, 1.0))
except ImportError:  # no (usable) triton: the module is skipped
    _keep_kernel = None


def test_dropout_hash_matches_dropout_py_for_large_rows_and_seeds():
    """``_math.dropout_mask`` (the kernels' hash) on rows past 2^32 (the row index's high half) and seeds
    with both halves set gives diru_fast/scan/dropout.py's keep decisions exactly."""
    from diru_fast.scan import dropout

    k = _kernels()
    t, B, R, C = 2 ** 31 - 5, 7, 4, 16  # rows t*B + b > 2^34
    for seed, p in ((0x3FFF_FFFF_FFFF_FFFF, 0.25), (0x1234_5678_9ABC_DEF0, 0.6), (5, 0.0)):
        out = torch.empty(R, C, dtype=torch.float32)
        bits = [k.launch._int32_bits(v) for v in (seed & 0xFFFFFFFF, seed >> 32, dropout.threshold(p))]
        _keep_kernel[(1,)](out, t, B, *bits, R=R, C=C)
        row = torch.arange(R, dtype=torch.int64) + t * B
        key = dropout._mix32(dropout._mix32((seed & 0xFFFFFFFF) ^ (row & 0xFFFFFFFF)) ^ (seed >> 32) ^ (row >> 32))
        unit = dropout._mul32(torch.arange(C, dtype=torch.int64), 0x9E3779B9)
        want = dropout._mix32(key[:, None] ^ unit[None, :]) >= dropout.threshold(p)
        assert torch.equal(out == 1.0, want), (seed, p)
