"""Time decay in the Triton kernels under TRITON_INTERPRET=1, every regime the dispatcher can pick
(resident, streamed, per-step; forced as in tests/providers/test_triton_options.py), against the kernel
contract (diru_fast.scan.contract, ``decay [T, B, d]``: the step reads ``hd = decay_t * h_{t-1}``):
float64 to 1e-12 (forward, inference forward, backward; T=1, B=1, B=3, B=17, d=48, k=3, lengths),
alone and with relu, attention and dropout; float32 / bfloat16 within the rule of test_triton.py
(error <= 2x PyTorch's own error in that dtype); decay = 1 gives the plain kernels' numbers bit for
bit; padded steps never let their decay in; float64 gradcheck through ``ops.Scan`` w.r.t. every input
and the decay."""

import importlib

import pytest
import torch

import diru_fast
from diru_fast.scan import contract, ops
from tests.helpers import assert_kernel_matches_contract, assert_kernel_within_twice_torch_error, contract_inputs

pytestmark = pytest.mark.skipif("triton" not in diru_fast.available_backends("cpu"),
                                reason="triton is not installed (or TRITON_INTERPRET=1 was not set before import)")

REGIMES = ["resident", "streamed", "step"]
# decay alone, with each option, with all three
OPTION_SETS = {"decay": dict(), "relu": dict(activation="relu"), "attention": dict(attention=True),
               "dropout": dict(dropout=0.3), "all": dict(activation="relu", attention=True, dropout=0.3)}
# (T, B, d, compartment sizes): T=1 B=1; k=3 at d=48 (masked lanes); B=17 (two row tiles);
# B=16 d=32 (no masks at all)
CASES = [(1, 1, 24, [5, 7, 12]), (4, 3, 48, [10, 17, 21]), (3, 17, 24, [5, 7, 12]), (2, 16, 32, [16, 16])]
D48 = CASES[1]


def _kernels():
    return importlib.import_module("diru_fast.kernels")


def _config(regime, d):
    k = _kernels()
    return {"resident": k.KernelConfig("resident", k.pad_hidden(d), block_b=16, block_k=k.pad_hidden(d)),
            "streamed": k.KernelConfig("streamed", k.pad_hidden(d), block_b=16, block_k=16),
            "step": k.KernelConfig("step", 0, block_b=16, block_k=16, block_n=16)}[regime]


def _lengths(T, B):
    return torch.tensor([max(1, T - (3 * b) % T) for b in range(B)])


def _decay(T, B, d, dtype=torch.float64, seed=0):
    """``exp(-softplus(lambda) dt)`` as a caller forms it: a rate per unit, irregular gaps per row
    and step (some zero: decay exactly 1)."""
    g = torch.Generator().manual_seed(100 + seed)
    lam = torch.randn(d, generator=g, dtype=torch.float64)
    dt = torch.rand(T, B, 1, generator=g, dtype=torch.float64) * 2
    if T * B > 1:
        dt[0, 0] = 0.0
    return torch.exp(-torch.nn.functional.softplus(lam) * dt).to(contract.acc_dtype(dtype))


def _inputs(T, B, d, sizes, option_set, dtype=torch.float64, seed=0):
    """(inputs, options) of scan_fwd with ``decay`` among the options."""
    o = OPTION_SETS[option_set]
    a, opts = contract_inputs(T, B, d, dtype=dtype, seed=seed, sizes=sizes if o.get("attention") else None,
                              dropout=o.get("dropout"), activation=o.get("activation") or "tanh")
    return a, dict(opts, decay=_decay(T, B, d, dtype, seed))


def _check_float64(regime, case, option_set, lengths, poison_padded=False):
    k = _kernels()
    T, B, d, sizes = case
    a, opts = _inputs(T, B, d, sizes, option_set, seed=T * B + d)
    if poison_padded:  # a padded step keeps the undecayed state: its decay must never be read into it
        padded = torch.arange(T)[:, None] >= lengths[None, :]
        opts["decay"] = opts["decay"].masked_fill(padded[..., None], float("nan"))
    hs, saved, got = assert_kernel_matches_contract(k, a, opts, lengths, _config(regime, d))
    if lengths is not None:
        for b, length in enumerate(lengths.tolist()):
            if length < T:  # padded steps: the state and its gradient pass through undecayed
                assert torch.equal(hs[length:, b], hs[length - 1, b].expand(T - length, d))
    # the decay is in effect: the plain cell's states differ
    plain = {key: v for key, v in opts.items() if key != "decay"}
    assert not torch.allclose(contract.scan_fwd(**a, lengths=lengths, need_saved=False, **plain)[0], hs)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "T{}-B{}-d{}-k{}".format(c[0], c[1], c[2], len(c[3])))
@pytest.mark.parametrize("regime", REGIMES)
def test_decay_alone_matches_contract_float64(regime, case):
    _check_float64(regime, case, "decay", None)


# the NaN decay of padded steps runs through their (discarded) arithmetic: numpy says so
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("case", CASES, ids=lambda c: "T{}-B{}-d{}-k{}".format(c[0], c[1], c[2], len(c[3])))
@pytest.mark.parametrize("regime", REGIMES)
def test_decay_with_every_option_and_lengths_matches_contract_float64(regime, case):
    """relu + attention + dropout + decay, lengths; the padded steps' decay is NaN (never used)."""
    T, B = case[:2]
    _check_float64(regime, case, "all", _lengths(T, B), poison_padded=True)


@pytest.mark.parametrize("option_set", ["relu", "attention", "dropout"])
@pytest.mark.parametrize("regime", REGIMES)
def test_decay_with_each_option_matches_contract_float64(regime, option_set):
    T, B = D48[:2]
    _check_float64(regime, D48, option_set, _lengths(T, B))


@pytest.mark.parametrize("d, mode", [(20, "resident"), (100, "streamed"), (300, "step")])
def test_dispatcher_choice_with_decay_matches_contract_float64(d, mode):
    """The dispatcher's own configuration (no override) at a d of each size class, masked lanes."""
    k = _kernels()
    T, B = 2, 2
    assert k.choose(d, "float64").mode == mode
    a = contract_inputs(T, B, d, seed=d)
    decay = _decay(T, B, d, seed=d)
    lengths = torch.tensor([2, 1])
    hs, saved = k.scan_fwd(**a, lengths=lengths, need_saved=True, decay=decay)
    hs_ref, saved_ref = contract.scan_fwd(**a, lengths=lengths, need_saved=True, decay=decay)
    torch.testing.assert_close(hs, hs_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(saved, saved_ref, rtol=1e-12, atol=1e-12)
    grad_hs = torch.randn(T, B, d, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    got = k.scan_bwd(grad_hs, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths, decay=decay)
    want = contract.scan_bwd(grad_hs, a["h0"], hs_ref, saved_ref, a["w_hh"], a["w_int"], a["w_out"], lengths,
                             decay=decay)
    for name, g, w in zip(("d_p", "d_zp", "d_yp", "d_h0"), got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("regime", REGIMES)
def test_decay_low_precision_within_twice_torch_error(regime, dtype):
    """decay + relu + attention + dropout, lengths: hs, dL/dxp (all 3d+k columns of d_p), dL/dh0 within
    2x the error of PyTorch's own path in ``dtype`` (the contract run in that dtype), both against
    float64 on the same rounded inputs (the rule of tests/providers/test_triton.py)."""
    k = _kernels()
    T, B, d, sizes = 5, 3, 24, [5, 7, 12]
    a, opts = _inputs(T, B, d, sizes, "all", dtype=dtype, seed=3)
    assert opts["decay"].dtype == torch.float32  # the accumulation dtype, as the contract states
    assert_kernel_within_twice_torch_error(k, a, opts, _lengths(T, B), _config(regime, d), dtype)


@pytest.mark.parametrize("regime", REGIMES)
def test_decay_of_one_is_the_plain_kernels_bit_for_bit(regime):
    """decay = 1 everywhere (float32, lengths): exactly the numbers of the call without decay (hd = h)."""
    k = _kernels()
    T, B, d = 3, 5, 20
    a = contract_inputs(T, B, d, dtype=torch.float32, seed=7)
    lengths = _lengths(T, B)
    cfg = _config(regime, d)
    ones = torch.ones(T, B, d)
    hs, saved = k.scan_fwd(**a, lengths=lengths, need_saved=True, config=cfg)
    hs1, saved1 = k.scan_fwd(**a, lengths=lengths, need_saved=True, config=cfg, decay=ones)
    assert torch.equal(hs, hs1) and torch.equal(saved, saved1)
    grad = torch.randn(T, B, d, generator=torch.Generator().manual_seed(0))
    plain = k.scan_bwd(grad, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths, config=cfg)
    decayed = k.scan_bwd(grad, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths, config=cfg,
                         decay=ones)
    assert all(torch.equal(x, y) for x, y in zip(plain, decayed))


@pytest.mark.parametrize("regime, fast", [("resident", False), ("streamed", True), ("step", True)],
                         ids=["resident-full", "streamed-fast", "step-fast"])
def test_decay_gradcheck_float64(regime, fast):
    """gradcheck through ``ops.Scan`` on the "triton" provider (its kernel backward) w.r.t. xp, h0,
    every weight and the decay, with attention (k = 2), a dropout mask and lengths: full mode (every
    input perturbed) in the resident regime, fast mode (random projections) in the slower two, whose
    kernel gradients the float64 tests above hold to the contract's."""
    k = _kernels()
    T, B, d, sizes = 2, 2, 2, [1, 1]  # tiny: full mode perturbs every input, and the interpreter is slow
    a, opts = _inputs(T, B, d, sizes, "all", seed=11)
    lengths = torch.tensor([2, 1])
    leaves = [v.detach().clone().requires_grad_() for v in list(a.values()) + [opts["decay"]]]

    def run(xp, h0, w_hh, w_int, b_int, w_out, b_out, decay):
        return ops.Scan.apply(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, "triton", opts["activation"],
                              opts["compartment_of"], opts["mask"], decay)[0]

    with k.config.override(_config(regime, d)):
        assert torch.autograd.gradcheck(run, leaves, fast_mode=fast)


def test_provider_fuses_time_decay_and_passes_it_through():
    from diru_fast.providers import triton as provider

    assert "time_decay" in provider.OPTIONS
    T, B, d = 3, 2, 12
    a, opts = _inputs(T, B, d, [3, 4, 5], "all", seed=2)
    lengths = torch.tensor([3, 2])
    hs, saved = provider.scan_fwd(*a.values(), lengths, True, *opts.values())
    hs_ref, saved_ref = contract.scan_fwd(*a.values(), lengths, True, *opts.values())
    torch.testing.assert_close(hs, hs_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(saved, saved_ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn(T, B, d, dtype=torch.float64)
    got = provider.scan_bwd(grad, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths, *opts.values())
    want = contract.scan_bwd(grad, a["h0"], hs_ref, saved_ref, a["w_hh"], a["w_int"], a["w_out"], lengths,
                             *opts.values())
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_dispatcher_sends_attention_at_d256_to_the_per_step_kernels():
    """Attention at d_pad 256 spills in the streamed kernels with Triton 3.6 (fp32 and 16 bit; with
    decay and dropout most: bench/results/triton-compile-3.6.txt): the dispatcher runs those calls per
    step, and so do dropout with decay in fp32 at d_pad 256 (Triton 3.9); without them, or at d_pad
    128, the streamed kernels stay. The routed call with every option on matches the contract."""
    k = _kernels()
    for dtype in ("float32", "float64", "bfloat16", "float16"):
        assert k.choose(200, dtype, 3).mode == "step", dtype
        assert k.choose(200, dtype).mode == "streamed" and k.choose(100, dtype, 3).mode == "streamed", dtype
    # dropout with decay at fp32 d_pad 256 spills on Triton 3.9 (triton-compile-3.9.txt): per step too
    assert k.choose(200, "float32", crowded=True).mode == k.choose(200, "float64", crowded=True).mode == "step"
    assert k.choose(200, "bfloat16", crowded=True).mode == k.choose(100, "float32", crowded=True).mode == "streamed"
    T, B, d = 2, 2, 200
    a, opts = _inputs(T, B, d, [60, 70, 70], "all")
    lengths = torch.tensor([2, 1])
    hs, saved = k.scan_fwd(**a, lengths=lengths, need_saved=True, **opts)
    hs_ref, saved_ref = contract.scan_fwd(**a, lengths=lengths, need_saved=True, **opts)
    torch.testing.assert_close(hs, hs_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(saved, saved_ref, rtol=1e-12, atol=1e-12)


# ---- the options formed in the step: time decay from lambda and dt, the dropout mask from its seed ----

def _in_step_inputs(T, B, d, seed):
    """Inputs with relu, attention (k = 3), lengths, time decay as lambda [d] and dt [T, B] (0 on padded
    steps) and a seeded dropout mask (p = 0.3)."""
    from diru_fast.scan.dropout import CompartmentMask

    sizes = [d // 4, d // 4, d - 2 * (d // 4)]
    a, opts = contract_inputs(T, B, d, seed=seed, sizes=sizes, activation="relu")
    lengths = _lengths(T, B)
    g = torch.Generator().manual_seed(seed + 1)
    lam = torch.randn(d, generator=g, dtype=torch.float64)
    dt = (torch.rand(T, B, generator=g, dtype=torch.float64) * 2).masked_fill(
        torch.arange(T)[:, None] >= lengths[None, :], 0.0)
    torch.manual_seed(seed)
    mask = CompartmentMask.draw(T, B, d, 0.3, torch.float64, "cpu")
    grad = torch.randn(T, B, d, generator=g, dtype=torch.float64)
    return a, opts, lengths, lam, dt, mask, grad


def _in_step_contract(a, opts, lengths, lam, dt, mask, grad):
    """The contract on the factors decay_factor(lambda, dt) and the mask's tensor, differentiated to lambda
    and dt by autograd: (hs, saved, d_p, d_zp, d_yp, d_h0, hd, d_lambda, d_dt, o)."""
    lam, gaps = lam.clone().requires_grad_(True), dt.clone().requires_grad_(True)
    decay = contract.decay_factor(lam, gaps)
    opts = dict(opts, mask=mask.tensor())
    hs, saved = contract.scan_fwd(**a, lengths=lengths, need_saved=True, **opts, decay=decay)
    step = contract.scan_bwd(grad, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths, **opts,
                             decay=decay.detach())
    h_prev, hd = contract.decayed_states(a["h0"], hs, decay.detach())
    g_lam, g_dt = torch.autograd.grad(decay, (lam, gaps), (step[2] + step[0] @ a["w_hh"]) * h_prev)
    o = contract.integration_input(saved, a["h0"].shape[-1], opts["compartment_of"], opts["mask"])
    return (hs.detach(), saved.detach()) + tuple(step) + (hd, g_lam, g_dt, o.detach())


IN_STEP_NAMES = ("hs", "saved", "d_p", "d_zp", "d_yp", "d_h0", "hd", "d_decay_rate", "d_dt", "o")


# (T, B, d): masked lanes, three rows; two row tiles (the rate gradient summed over programs) and, per
# step, two column tiles (the gap gradient summed over them)
@pytest.mark.parametrize("shape", [(3, 3, 24), (2, 17, 20)], ids=lambda s: "T{}-B{}-d{}".format(*s))
@pytest.mark.parametrize("regime", REGIMES)
def test_in_step_decay_and_seeded_mask_match_contract_float64(regime, shape):
    """Time decay from lambda and dt formed in the step, the dropout mask hashed from its seed, with relu,
    attention and lengths: every output of the provider's forward (training and inference) and extended
    backward (the decayed states, the gradients of lambda and dt, the integration inputs) against the
    contract on the factors and the mask's tensor, to 1e-12."""
    from diru_fast.providers import triton as provider

    T, B, d = shape
    a, opts, lengths, lam, dt, mask, grad = _in_step_inputs(T, B, d, seed=T + B + d)
    want = _in_step_contract(a, opts, lengths, lam, dt, mask, grad)
    args = [a[n] for n in ("xp", "h0", "w_hh", "w_int", "b_int", "w_out", "b_out")]
    with _kernels().config.override(_config(regime, d)):
        hs, saved = provider.scan_fwd(*args, lengths, True, **dict(opts, mask=mask), decay_rate=lam, dt=dt)
        inference = provider.scan_fwd(*args, lengths, False, **dict(opts, mask=mask), decay_rate=lam, dt=dt)[0]
        out = provider.scan_bwd(grad, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths,
                                **dict(opts, mask=mask), decay_rate=lam, dt=dt, extended=True)
    assert torch.equal(inference, hs)
    for name, g, w in zip(IN_STEP_NAMES, (hs, saved) + tuple(out), want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12, msg=lambda m, name=name: f"{regime} {name}: {m}")


def test_in_step_options_gradcheck_float64():
    """gradcheck through ``ops.StepOptionsScan`` on the "triton" provider (the kernels' extended backward)
    w.r.t. xp, h0, every weight, lambda and dt, with attention, a seeded mask and lengths (fast mode,
    resident regime; the float64 test above holds every regime's outputs to the contract's)."""
    from diru_fast.scan.dropout import CompartmentMask

    T, B, d = 2, 2, 2
    a, opts = contract_inputs(T, B, d, seed=13, sizes=[1, 1], activation="relu")
    lengths = torch.tensor([2, 1])
    g = torch.Generator().manual_seed(14)
    lam = torch.randn(d, generator=g, dtype=torch.float64)
    dt = 0.25 + torch.rand(T, B, generator=g, dtype=torch.float64)  # the padded step's gap too: no effect
    torch.manual_seed(13)
    mask = CompartmentMask.draw(T, B, d, 0.3, torch.float64, "cpu")
    leaves = [v.detach().clone().requires_grad_() for v in list(a.values()) + [lam, dt]]

    def run(xp, h0, w_hh, w_int, b_int, w_out, b_out, decay_rate, gaps):
        return ops.StepOptionsScan.apply(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, "triton", "relu",
                                         opts["compartment_of"], mask, decay_rate, gaps)[0]

    with _kernels().config.override(_config("resident", d)):
        assert torch.autograd.gradcheck(run, leaves, fast_mode=True)


def test_layer_on_triton_fuses_the_options_and_matches_torch_float64(monkeypatch):
    """A DIRULayer with every option (relu, attention, compartment dropout, time decay) on the "triton"
    backend runs the in-step path (the provider gets lambda, dt and the mask's seed, never a [T, B, d]
    tensor) and gives the "torch" backend's outputs and gradients (parameters, input, dt) for one seed."""
    from diru_fast.providers import triton as provider
    from diru_fast.scan.dropout import CompartmentMask

    calls = []
    real = provider.scan_fwd

    def spy(*args, **kw):
        calls.append((isinstance(args[11] if len(args) > 11 else kw.get("mask"), CompartmentMask),
                      kw.get("decay_rate") is not None, (args[12] if len(args) > 12 else kw.get("decay")) is None))
        return real(*args, **kw)

    monkeypatch.setattr(provider, "scan_fwd", spy)
    T, B, n, d = 3, 2, 3, 8
    x = torch.randn(T, B, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    dt = torch.rand(T, B, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2
    results = []
    for backend in ("triton", "torch"):
        torch.manual_seed(0)
        layer = diru_fast.DIRULayer(n, d, backend=backend, dtype=torch.float64, activation="relu",
                                    compartment_sizes=[3, 5], compartment_attention=True, compartment_dropout=0.3,
                                    time_decay=True).train()
        xs, gaps = x.clone().requires_grad_(), dt.clone().requires_grad_()
        torch.manual_seed(1)  # the dropout mask's seed
        out, h_n = layer(xs, lengths=torch.tensor([3, 2]), dt=gaps)
        (out.square().sum() + h_n.sum()).backward()
        results.append([out.detach(), xs.grad, gaps.grad] + [p.grad for p in layer.parameters()])
    assert calls and all(c == (True, True, True) for c in calls), calls
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_dispatcher_configures_the_in_step_options():
    """With options formed in the step the resident kernels get the whole register file (8 warps at d_pad
    64 in 16 bit with attention) and dropout with time decay at d_pad 256 runs per step in every dtype
    (kernels/config.py; their compile check: tests/providers/test_triton_compile.py); the launcher runs
    them with that configuration."""
    k = _kernels()
    config = k.config
    for dtype in ("float32", "bfloat16"):
        assert k.choose(200, dtype, crowded=True, in_step=True).mode == "step"
        assert k.choose(100, dtype, crowded=True, in_step=True).mode == "streamed"
    assert k.choose(200, "bfloat16", crowded=True).mode == "streamed"  # the [T, B, d] tensors: as before
    wide = config.for_in_step(k.choose(64, "bfloat16"), "bfloat16", 3)
    assert (wide.num_warps, wide.maxnreg) == (8, 255)
    assert config.for_in_step(k.choose(64, "bfloat16"), "bfloat16", 0).num_warps == 4
    assert config.for_in_step(k.choose(16, "float32"), "float32", 0).maxnreg == 255
    assert config.for_in_step(k.choose(64, "float32"), "float32", 0).num_warps == 8
    streamed = k.choose(128, "float32")
    assert config.for_in_step(streamed, "float32", 3) == streamed
