"""The C++ CPU kernel with the contract's options fused (relu, attention over compartments, the
compartment dropout mask, time decay; docs/THEORY.md §1.2–1.6): scan_fwd / scan_bwd, scan_fwd_x and cell_step
against diru_fast.scan.contract, float64 to ~1e-12 and float32 by the float32 rule of
test_cpu_isa.py, on every instruction set and threading path this machine runs. Outputs are
NaN-poisoned (the conftest sets DIRU_FAST_POISON=1).
"""

from __future__ import annotations

import pytest
import torch

from diru_fast.providers import cpu
from diru_fast.scan import contract
from tests.helpers import contract_inputs, cpu_isa

HAVE_KERNEL = cpu.unavailable_reason() is None
pytestmark = pytest.mark.skipif(not HAVE_KERNEL, reason=f"C++ CPU kernel unavailable here: {cpu.unavailable_reason()}")
ISAS = cpu.extension().supported_isas() if HAVE_KERNEL else []

# name: (sizes, dropout, activation[, decay]) for contract_inputs; sizes must sum to the case's d
OPTION_SETS = {
    "relu": (None, None, "relu"),
    "attention": ("unequal", None, None),
    "dropout": (None, 0.3, None),
    "relu+attention": ("unequal", None, "relu"),
    "all": ("unequal", 0.3, "relu"),
    "attention+dropout-scattered": ("scattered", 0.25, None),
    "decay": (None, None, None, True),
    "decay+all": ("unequal", 0.3, "relu", True),
}

# (T, B, d, threads): which path a float32 call takes (test_cpu_isa.py)
CASES = {
    "packed-rows": (9, 5, 24, 2),        # batch slices, packed weights
    "packed-B3-d48": (5, 3, 48, 2),
    "unpacked-T1": (1, 3, 48, 2),        # T*B < 8: the weights as they are
    "unpacked-B1": (4, 1, 24, 1),
    "column-split": (12, 1, 128, 2),     # B < threads, d >= 96
    "column-split-d100": (7, 1, 100, 2),  # units not a multiple of the panel width
    "single-row": (10, 1, 64, 1),
}


def _sizes(d):
    """Compartment sizes summing to d: [5, 7, 12] at d = 24, else three unequal ones (k = 3)."""
    if d == 24:
        return [5, 7, 12]
    return [d // 4, d // 3, d - d // 4 - d // 3]


def _inputs(T, B, d, option_set, seed, dtype=torch.float64):
    kind, dropout, activation, *decay = OPTION_SETS[option_set]
    sizes = None if kind is None else _sizes(d)
    a, opts = contract_inputs(T, B, d, seed=seed, sizes=sizes, dropout=dropout, activation=activation,
                              decay=bool(decay))
    if kind == "scattered":  # units of a compartment not contiguous
        perm = torch.randperm(d, generator=torch.Generator().manual_seed(seed))
        opts["compartment_of"] = opts["compartment_of"][perm].contiguous()
    a = {k: v.to(dtype) for k, v in a.items()}
    for name in ("mask", "decay"):
        if opts.get(name) is not None:
            opts[name] = opts[name].to(dtype)
    return a, opts


def _lengths(T, B):
    return torch.tensor([max(1, T - (3 * b) % T) for b in range(B)])


def _cpu(a, opts, lengths, grad, need_saved=True):
    hs, saved = cpu.scan_fwd(a["xp"], a["h0"], a["w_hh"], a["w_int"], a["b_int"], a["w_out"], a["b_out"], lengths,
                             need_saved, **opts)
    if not need_saved:
        return (hs,)
    return (hs, saved) + cpu.scan_bwd(grad, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths, **opts)


def _contract(a, opts, lengths, grad):
    hs, saved = contract.scan_fwd(**a, lengths=lengths, need_saved=True, **opts)
    return (hs, saved) + contract.scan_bwd(grad, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths,
                                           **opts)


NAMES = ("hs", "saved", "d_p", "d_zp", "d_yp", "d_h0")


def _assert_float32_rule(name, ours, pytorch32, want, small_batch=False):
    """RMS error at most twice PyTorch's own float32 error, the worst element at most four times.
    An output of fewer than 256 elements (d_h0 of one row) gets 2.5x on the RMS: over so few
    elements the ratio is noisy (single-row attention, 13 seeds: median 1.1, one seed 2.0). So does
    the state of a column-split call with options: PyTorch's own error there depends on its BLAS,
    which differs between CPUs (attention + scattered dropout, hs: 2.09x on an Intel AVX-512 Xeon,
    under 2x on AMD Zen 4)."""
    e_ours, e_torch = ours.double() - want, pytorch32.double() - want
    rms_ours, rms_torch = e_ours.pow(2).mean().sqrt().item(), e_torch.pow(2).mean().sqrt().item()
    factor = 2.0 if ours.numel() >= 256 and not small_batch else 2.5
    assert rms_ours <= factor * rms_torch + 1e-12, f"{name}: RMS error {rms_ours:.3g} vs PyTorch float32 {rms_torch:.3g}"
    assert e_ours.abs().max() <= 4 * e_torch.abs().max() + 1e-12, name


@pytest.mark.parametrize("option_set", list(OPTION_SETS))
@pytest.mark.parametrize("shape", [(6, 3, 24), (1, 3, 48), (5, 1, 48), (7, 2, 100)], ids=lambda s: "T{}-B{}-d{}".format(*s))
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("threads", [1, 2])
def test_float64_matches_the_contract(option_set, shape, with_lengths, threads):
    T, B, d = shape
    a, opts = _inputs(T, B, d, option_set, seed=T + B + d)
    lengths = _lengths(T, B) if with_lengths else None
    h0_grad = torch.randn(T, B, d, dtype=torch.float64, generator=torch.Generator().manual_seed(d))
    want = _contract(a, opts, lengths, h0_grad)
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = _cpu(a, opts, lengths, h0_grad)
    finally:
        torch.set_num_threads(old)
    for name, g, w in zip(NAMES, got, want):
        assert g.dtype == torch.float64 and g.shape == w.shape, name
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12, msg=name)
    if opts["compartment_of"] is not None:  # alpha is saved, dL/de returned
        k = a["w_hh"].shape[0] - 3 * d
        assert got[1].shape[-1] == 4 * d + k and got[2].shape[-1] == 3 * d + k


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("option_set", ["relu", "attention", "dropout", "all", "attention+dropout-scattered", "decay",
                                        "decay+all"])
def test_float32_paths_meet_the_float32_rule(isa, case, option_set):
    T, B, d, threads = CASES[case]
    a64, opts64 = _inputs(T, B, d, option_set, seed=T * 7 + d)
    a32, opts32 = _inputs(T, B, d, option_set, seed=T * 7 + d, dtype=torch.float32)
    lengths = _lengths(T, B)
    g64 = torch.randn(T, B, d, dtype=torch.float64, generator=torch.Generator().manual_seed(d))
    want = _contract(a64, opts64, lengths, g64)
    pytorch32 = _contract(a32, opts32, lengths, g64.float())
    with cpu_isa(isa, threads):
        ours = _cpu(a32, opts32, lengths, g64.float())
        again = _cpu(a32, opts32, lengths, g64.float())
        inference = _cpu(a32, opts32, lengths, None, need_saved=False)
    for name, o, o2, p, w in zip(NAMES, ours, again, pytorch32, want):
        assert o.dtype == torch.float32 and torch.equal(o, o2), f"{name}: not deterministic"
        _assert_float32_rule(name, o, p, w, small_batch=case.startswith("column-split"))
    assert torch.equal(inference[0], ours[0])
    for b, length in enumerate(lengths.tolist()):
        assert torch.all(ours[1][length:, b] == 0) and torch.all(ours[2][length:, b] == 0)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("option_set", ["all", "decay+all"])
def test_options_column_split_equals_batch_slices_to_rounding(isa, option_set):
    T, B, d = 20, 1, 160
    a, opts = _inputs(T, B, d, option_set, seed=5, dtype=torch.float32)
    args = [a[k] for k in ("xp", "h0", "w_hh", "w_int", "b_int", "w_out", "b_out")]
    with cpu_isa(isa, 2):
        split = cpu.scan_fwd(*args, None, True, **opts)
    with cpu_isa(isa, 1):
        single = cpu.scan_fwd(*args, None, True, **opts)
    for s, o in zip(split, single):  # hs, saved (alpha included)
        torch.testing.assert_close(s, o, rtol=0, atol=1e-6)


@pytest.mark.parametrize("isa", ISAS + ["float64"])
def test_options_off_are_the_plain_cell_bit_for_bit(isa):
    """The defaults passed explicitly, a mask of ones, and attention with zero logits over k = 4
    compartments (k alpha = 1 exactly) all give the plain kernel's results bit for bit."""
    T, B, d, k = 6, 3, 48, 4
    dtype = torch.float64 if isa == "float64" else torch.float32
    a = {key: v.to(dtype) for key, v in contract_inputs(T, B, d, seed=3).items()}
    grad = torch.randn(T, B, d, dtype=dtype, generator=torch.Generator().manual_seed(1))
    zero_logits = dict(a, xp=torch.cat([a["xp"], a["xp"].new_zeros(T, B, k)], 2),
                       w_hh=torch.cat([a["w_hh"], a["w_hh"].new_zeros(k, d)], 0))
    with cpu_isa("blas" if isa == "float64" else isa, 2):
        plain = _cpu(a, {}, None, grad)
        explicit = _cpu(a, dict(activation="tanh", compartment_of=None, mask=None), None, grad)
        ones = _cpu(a, dict(mask=torch.ones(T, B, d, dtype=dtype)), None, grad)
        attn = _cpu(zero_logits, dict(compartment_of=torch.arange(d) % k), None, grad)
    for name, p, e, o in zip(NAMES, plain, explicit, ones):
        assert torch.equal(p, e) and torch.equal(p, o), name
    assert torch.equal(attn[0], plain[0]) and torch.equal(attn[1][..., :4 * d], plain[1])
    assert torch.all(attn[1][..., 4 * d:] == 1 / k)
    assert torch.equal(attn[2][..., :3 * d], plain[2])
    for name, p, q in zip(NAMES[3:], plain[3:], attn[3:]):
        assert torch.equal(p, q), name


def _projected_inputs(T, B, d, n, option_set, seed):
    """Inference inputs: x [T, B, n], w_ih [3d+k, n], b_ih [3d+k] and the rest (float64)."""
    a, opts = _inputs(T, B, d, option_set, seed=seed)
    k = a["w_hh"].shape[0] - 3 * d
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(T, B, n, dtype=torch.float64, generator=g)
    w_ih = torch.randn(3 * d + k, n, dtype=torch.float64, generator=g) * n ** -0.5
    b_ih = torch.randn(3 * d + k, dtype=torch.float64, generator=g) * 0.1
    opts = {key: v for key, v in opts.items() if key != "mask"}  # inference: no dropout
    rest = {key: v for key, v in a.items() if key != "xp"}
    return x, w_ih, b_ih, rest, opts


INFERENCE_OPTIONS = ["relu", "attention", "relu+attention", "attention+dropout-scattered", "decay+all"]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("case", ["packed-rows", "unpacked-T1", "column-split-d100", "single-row"])
@pytest.mark.parametrize("option_set", INFERENCE_OPTIONS)
def test_scan_fwd_x_with_options(isa, case, option_set):
    T, B, d, threads = CASES[case]
    n = 5
    x, w_ih, b_ih, rest, opts = _projected_inputs(T, B, d, n, option_set, seed=T + d)
    lengths = _lengths(T, B)
    want = contract.scan_fwd(x @ w_ih.t() + b_ih, lengths=lengths, need_saved=False, **rest, **opts)[0]
    r32 = {key: v.float() for key, v in rest.items()}
    pytorch32 = contract.scan_fwd((x @ w_ih.t() + b_ih).float(), lengths=lengths, need_saved=False, **r32, **opts)[0]
    names = ("w_hh", "w_int", "b_int", "w_out", "b_out")
    opts32 = {key: v.float() if key == "decay" else v for key, v in opts.items()}
    with cpu_isa(isa, threads):
        got = cpu.scan_fwd_x(x.float(), r32["h0"], w_ih.float(), b_ih.float(), *(r32[k] for k in names), lengths,
                             **opts32)
    _assert_float32_rule("hs", got, pytorch32, want)
    got64 = cpu.scan_fwd_x(x, rest["h0"], w_ih, b_ih, *(rest[k] for k in names), lengths, **opts)
    torch.testing.assert_close(got64, want, rtol=1e-12, atol=1e-12)
    no_bias = cpu.scan_fwd_x(x, rest["h0"], w_ih, None, *(rest[k] for k in names), lengths, **opts)
    want_no_bias = contract.scan_fwd(x @ w_ih.t(), lengths=lengths, need_saved=False, **rest, **opts)[0]
    torch.testing.assert_close(no_bias, want_no_bias, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("option_set", [o for o in INFERENCE_OPTIONS if "decay" not in o])  # the cell decays hx itself
@pytest.mark.parametrize("B", [1, 3])
def test_cell_step_with_options(option_set, B):
    d, n = 48, 7
    x, w_ih, b_ih, rest, opts = _projected_inputs(1, B, d, n, option_set, seed=B)
    names = ("w_hh", "w_int", "b_int", "w_out", "b_out")
    want = contract.scan_fwd(x @ w_ih.t() + b_ih, lengths=None, need_saved=False, **rest, **opts)[0][0]
    got = cpu.cell_step(x[0], rest["h0"], w_ih, b_ih, *(rest[k] for k in names), **opts)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    zero = dict(rest, h0=torch.zeros(B, d, dtype=torch.float64))
    got0 = cpu.cell_step(x[0], None, w_ih, None, rest["w_hh"], rest["w_int"], None, rest["w_out"], None, **opts)
    want0 = contract.scan_fwd(x @ w_ih.t(), lengths=None, need_saved=False,
                              **dict(zero, b_int=zero["b_int"] * 0, b_out=zero["b_out"] * 0), **opts)[0][0]
    torch.testing.assert_close(got0, want0, rtol=1e-12, atol=1e-12)
    x32, r32 = x.float(), {key: v.float() for key, v in rest.items()}
    pytorch32 = contract.scan_fwd((x @ w_ih.t() + b_ih).float(), lengths=None, need_saved=False, **r32, **opts)[0][0]
    for isa in ISAS:
        with cpu_isa(isa, 2):
            got32 = cpu.cell_step(x32[0], r32["h0"], w_ih.float(), b_ih.float(), *(r32[k] for k in names), **opts)
        _assert_float32_rule(f"h' on {isa}", got32, pytorch32, want)


def test_bad_options_are_refused():
    d = 24
    a, opts = _inputs(3, 2, d, "all", seed=0)
    args = [a[k] for k in ("xp", "h0", "w_hh", "w_int", "b_int", "w_out", "b_out")]
    with pytest.raises(RuntimeError, match="activation"):  # the kernel's own check (the provider maps names)
        cpu.extension().scan_fwd(*args, None, True, 2, opts["compartment_of"], None)
    bad = opts["compartment_of"].clone()
    bad[0] = 3
    with pytest.raises(RuntimeError, match="compartment_of"):
        cpu.scan_fwd(*args, None, True, compartment_of=bad)
    with pytest.raises(RuntimeError, match="mask"):
        cpu.scan_fwd(*args, None, True, compartment_of=opts["compartment_of"], mask=opts["mask"][:, :1])
    with pytest.raises(RuntimeError, match="xp"):  # attention logits given, but no compartment_of
        cpu.scan_fwd(*args, None, True)
    decay = torch.ones(3, 2, d, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="decay"):
        cpu.scan_fwd(*args, None, True, compartment_of=opts["compartment_of"], decay=decay[:, :1])
    with pytest.raises(RuntimeError, match="decay"):  # the call's dtype
        cpu.scan_fwd(*args, None, True, compartment_of=opts["compartment_of"], decay=decay.float())
    assert cpu.OPTIONS == {"relu", "attention", "dropout", "time_decay"}


@pytest.mark.parametrize("isa", ISAS)
def test_float32_gates_saturate_to_exactly_zero_and_one_at_extreme_inputs(isa):
    """sigmoid and tanh at inputs far past exp's range are 0 and +-1 exactly, as torch's (no floor of
    exp(-87): relu(1e36) * sigmoid(-1e36) once gave 0.0061 where torch gives 0)."""
    T, B, d = 2, 3, 16
    a, opts = _inputs(T, B, d, "relu", seed=7, dtype=torch.float32)
    big = torch.tensor([1e36, -1e36, 1e30, -1e30, 100.0, -100.0, 89.0, -89.0, 88.8, -88.8, 87.5, -87.5])
    xp = torch.zeros(T, B, 3 * d)
    xp[..., :big.numel()] = big  # u = relu(a): 1e36, 0, ...
    xp[..., d:d + big.numel()] = -big  # s = sigmoid(-a): 0 where u is huge
    xp[..., 2 * d:2 * d + big.numel()] = big.flip(0)
    a = dict(a, xp=xp, w_hh=a["w_hh"] * 0, h0=a["h0"] * 0)
    want_hs, want_saved = contract.scan_fwd(**a, lengths=None, need_saved=True, activation="relu")
    with cpu_isa(isa, 1):
        hs, saved = cpu.scan_fwd(a["xp"], a["h0"], a["w_hh"], a["w_int"], a["b_int"], a["w_out"], a["b_out"], None,
                                 True, activation="relu")
    u, s, r = saved[..., :d], saved[..., d:2 * d], saved[..., 3 * d:4 * d]
    torch.testing.assert_close(s, want_saved[..., d:2 * d], rtol=1e-6, atol=0)  # 0 exactly where torch's is 0
    torch.testing.assert_close(r, want_saved[..., 3 * d:4 * d], rtol=1e-6, atol=0)
    assert (u * s)[..., 0].eq(0).all() and (u * s)[..., 2].eq(0).all()  # relu(1e36) * sigmoid(-1e36) = 0
    torch.testing.assert_close(hs, want_hs, rtol=1e-5, atol=1e-6)


def _rate_inputs(T, B, d, option_set, seed, lengths):
    """Inputs with time decay as lambda [d] and dt [T, B] (0 on padded steps) instead of factors."""
    a, opts = _inputs(T, B, d, option_set, seed)
    g = torch.Generator().manual_seed(seed + 11)
    decay_rate = torch.randn(d, generator=g, dtype=torch.float64)
    dt = torch.rand(T, B, generator=g, dtype=torch.float64) * 2
    if lengths is not None:
        dt = dt.masked_fill(torch.arange(T).unsqueeze(1) >= lengths.unsqueeze(0), 0.0)
    opts.pop("decay", None)
    return a, opts, decay_rate, dt


def _rate_contract(a, opts, lengths, grad, decay_rate, dt):
    """The contract on the factors decay_factor(lambda, dt), differentiated by autograd to lambda and dt."""
    lam, gaps = decay_rate.clone().requires_grad_(True), dt.clone().requires_grad_(True)
    decay = contract.decay_factor(lam, gaps)
    hs, saved = contract.scan_fwd(**a, lengths=lengths, need_saved=True, **opts, decay=decay)
    step = contract.scan_bwd(grad, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths, **opts,
                             decay=decay.detach())
    h_prev, hd = contract.decayed_states(a["h0"], hs, decay.detach())
    g_decay = (step[2] + step[0] @ a["w_hh"]) * h_prev  # dL/ddecay (docs/THEORY.md §2.3)
    g_lam, g_dt = torch.autograd.grad(decay, (lam, gaps), g_decay)
    return (hs.detach(), saved.detach()) + tuple(step) + (hd, g_lam, g_dt)


RATE_NAMES = NAMES + ("hd", "d_decay_rate", "d_dt")


@pytest.mark.parametrize("option_set", ["decay", "decay+all"])
@pytest.mark.parametrize("case", ["packed-rows", "unpacked-T1", "column-split-d100", "single-row"])
def test_time_decay_from_rates_matches_the_contract(case, option_set):
    """Time decay as lambda and dt, its factors formed inside the step and the gradients of lambda and
    dt (and the decayed states) written by the backward: float64 to 1e-12 on one and two threads, float32
    by the float32 rule on every instruction set."""
    T, B, d, threads = CASES[case]
    lengths = _lengths(T, B)
    a, opts, lam, dt = _rate_inputs(T, B, d, option_set, T + B + d, lengths)
    grad = torch.randn(T, B, d, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    want = _rate_contract(a, opts, lengths, grad, lam, dt)

    def run(a, opts, lam, dt, grad):
        hs, saved = cpu.scan_fwd(*(a[k] for k in ("xp", "h0", "w_hh", "w_int", "b_int", "w_out", "b_out")), lengths,
                                 True, **opts, decay_rate=lam, dt=dt)
        inference = cpu.scan_fwd(*(a[k] for k in ("xp", "h0", "w_hh", "w_int", "b_int", "w_out", "b_out")), lengths,
                                 False, **opts, decay_rate=lam, dt=dt)[0]
        torch.testing.assert_close(inference, hs, rtol=0, atol=0)
        return (hs, saved) + cpu.scan_bwd(grad, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths,
                                          **opts, decay_rate=lam, dt=dt, extended=True)[:7]

    for n in (1, 2):
        with cpu_isa(ISAS[-1], n):
            got = run(a, opts, lam, dt, grad)
        for name, g, w in zip(RATE_NAMES, got, want):
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12, msg=f"{name}, {n} threads")
    a32 = {k: v.float() for k, v in a.items()}
    o32 = {k: v.float() if k == "mask" and v is not None else v for k, v in opts.items()}
    pytorch32 = _rate_contract(a32, o32, lengths, grad.float(), lam.float(), dt.float())
    for isa in ISAS:
        with cpu_isa(isa, threads):
            got = run(a32, o32, lam.float(), dt.float(), grad.float())
        for name, g, p, w in zip(RATE_NAMES, got, pytorch32, want):
            if g.numel() < 256 and name in ("d_decay_rate", "d_dt"):  # a few sums of d or T*B terms:
                scale = w.abs().max().item()  # float32 rounding, not the rule's statistics, there
                torch.testing.assert_close(g.double(), w, rtol=1e-5, atol=1e-5 * scale, msg=f"{name} on {isa}")
            else:
                _assert_float32_rule(f"{name} on {isa}", g, p, w, small_batch=B == 1)


@pytest.mark.parametrize("option_set", ["dropout", "all", "decay+all"])
@pytest.mark.parametrize("case", ["packed-rows", "unpacked-T1", "column-split-d100", "single-row"])
def test_dropout_mask_from_its_seed_matches_the_contract(case, option_set):
    """The dropout mask as its seed (a CompartmentMask, evaluated in the kernel's step) against the
    contract on the mask's tensor: float64 to 1e-12 on one and two threads, float32 by the float32 rule
    on every instruction set; and the backward's extended outputs (the integration inputs o)."""
    from diru_fast.scan.dropout import CompartmentMask

    T, B, d, threads = CASES[case]
    lengths = _lengths(T, B)
    a, opts = _inputs(T, B, d, option_set, seed=T + d)
    torch.manual_seed(T * B)
    seeded = CompartmentMask.draw(T, B, d, 0.3, torch.float64, "cpu")
    grad = torch.randn(T, B, d, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    want = _contract(a, dict(opts, mask=seeded.tensor()), lengths, grad)
    want_o = contract.integration_input(want[1], d, opts["compartment_of"], seeded.tensor())
    for n in (1, 2):
        with cpu_isa(ISAS[-1], n):
            got = _cpu(a, dict(opts, mask=seeded), lengths, grad)
            ext = cpu.scan_bwd(grad, a["h0"], got[0], got[1], a["w_hh"], a["w_int"], a["w_out"], lengths,
                               **dict(opts, mask=seeded), extended=True)
        for name, g, w in zip(NAMES, got, want):
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12, msg=f"{name}, {n} threads")
        torch.testing.assert_close(ext[7], want_o, rtol=1e-12, atol=1e-12)
        assert all(e is None for e in ext[4:7]) and all(torch.equal(e, g) for e, g in zip(ext[:4], got[2:]))
    a32 = {k: v.float() for k, v in a.items()}
    seeded32 = seeded._replace(dtype=torch.float32)
    o32 = {k: v.float() if k == "decay" and v is not None else v for k, v in opts.items()}
    pytorch32 = _contract(a32, dict(o32, mask=seeded32.tensor()), lengths, grad.float())
    for isa in ISAS:
        with cpu_isa(isa, threads):
            got = _cpu(a32, dict(o32, mask=seeded32), lengths, grad.float())
        for name, g, p, w in zip(NAMES, got, pytorch32, want):
            _assert_float32_rule(f"{name} on {isa}", g, p, w, small_batch=B == 1)
