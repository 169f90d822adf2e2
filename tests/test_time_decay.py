"""Time decay (irregular series, docs/THEORY.md §1.6, §2.3): the kernel contract's statement, the
autograd formula around the kernels, and the modules on every backend that runs on CPU here.

Expected numbers come from the package's two statements of the math: the prototype-faithful
``diru_fast.reference`` cell with ``time_decay=True`` (it decays the state itself) and the kernel
contract ``diru_fast.scan.contract`` differentiated by autograd, in float64. The kernels' own
float32 paths are tested in tests/providers (test_cpu_options.py, test_triton_*, the CUDA harness).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence

import diru_fast
from diru_fast import backends, reference
from diru_fast.backends import BackendUnavailableError, provider_options
from diru_fast.functional import diru_scan
from diru_fast.scan import contract, ops
from diru_fast.weights import CellWeights
from tests.helpers import contract_inputs, cpu_backends, randomize_

F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)
NAMES = ("xp", "h0", "w_hh", "w_int", "b_int", "w_out", "b_out")
BACKENDS = cpu_backends()


def _fuses(backend, needed=frozenset({"time_decay"})):
    return backend in ("torch", "reference") or set(needed) <= provider_options(backend)


DECAY_BACKENDS = [b for b in BACKENDS if _fuses(b)]
# Triton runs in its interpreter here (~50 ms a launch): its kernels are tested against the contract
# in tests/providers/test_triton_decay.py; at the module level it takes the reference-model test only
MODULE_BACKENDS = [b for b in DECAY_BACKENDS if b != "triton"]


@pytest.fixture(autouse=True)
def fresh_warnings():
    backends._warned.clear()
    yield
    backends._warned.clear()


def _gaps(*shape, seed=0):
    """Exponential gaps (mean 1), as an irregularly sampled series has them."""
    return torch.empty(*shape, dtype=F64).exponential_(generator=torch.Generator().manual_seed(seed))


# --- the contract and the autograd formula ------------------------------------------------------

@pytest.mark.parametrize("options", [{}, dict(sizes=[5, 7, 12], dropout=0.3, activation="relu")],
                         ids=["decay", "decay+all"])
def test_autograd_formula_matches_autograd_of_the_contract(options):
    """Scan (the kernels' autograd formula, here on the contract provider) against the contract's
    forward differentiated by autograd: hs and the gradients of the seven inputs and of decay,
    including decay's own (``ops.decay_grad``) and w_hh's over the decayed states."""
    T, B, d = 5, 3, 24
    a, o = contract_inputs(T, B, d, sizes=options.get("sizes"), dropout=options.get("dropout"),
                           activation=options.get("activation"), decay=True)
    lengths = torch.tensor([5, 1, 3])
    p1 = [a[k].clone().requires_grad_(True) for k in NAMES] + [o["decay"].clone().requires_grad_(True)]
    p2 = [t.detach().clone().requires_grad_(True) for t in p1]
    hs1 = ops.scan(*p1[:7], lengths, "contract", o["activation"], o["compartment_of"], o["mask"], p1[7])
    hs2 = contract.scan_fwd(*p2[:7], lengths, False, o["activation"], o["compartment_of"], o["mask"], p2[7])[0]
    torch.testing.assert_close(hs1, hs2, rtol=1e-12, atol=1e-12)
    g = torch.randn(hs1.shape, dtype=F64)
    got, want = torch.autograd.grad(hs1, p1, g), torch.autograd.grad(hs2, p2, g)
    for name, x1, x2 in zip(NAMES + ("decay",), got, want):
        torch.testing.assert_close(x1, x2, rtol=1e-12, atol=1e-12, msg=lambda m, name=name: f"{name}: {m}")
    for b, length in enumerate(lengths.tolist()):  # padded steps: no decay, so no gradient to it
        assert torch.all(got[7][length:, b] == 0)


def test_decay_of_one_is_the_plain_cell_bit_for_bit():
    a = contract_inputs(6, 3, 24)
    lengths = torch.tensor([6, 2, 4])
    plain = contract.scan_fwd(**a, lengths=lengths, need_saved=True)
    ones = contract.scan_fwd(**a, lengths=lengths, need_saved=True, decay=torch.ones(6, 3, 24, dtype=F64))
    assert torch.equal(plain[0], ones[0]) and torch.equal(plain[1], ones[1])


def test_contract_scan_is_one_step_on_the_decayed_state():
    """The contract's scan with decay is its plain step applied to decay_t * h_{t-1}."""
    a, o = contract_inputs(4, 2, 12, decay=True)
    hs = contract.scan_fwd(**a, lengths=None, need_saved=False, decay=o["decay"])[0]
    h = a["h0"]
    for t in range(4):
        h = contract.scan_fwd(a["xp"][t:t + 1], h * o["decay"][t], *(a[k] for k in NAMES[2:]), None, False)[0][0]
        torch.testing.assert_close(hs[t], h, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("backend", [b for b in ("contract", "cpu") if b in DECAY_BACKENDS])
def test_gradcheck_and_gradgradcheck_through_scan(backend):
    a, o = contract_inputs(4, 2, 6, decay=True)
    lengths = torch.tensor([4, 2])
    inputs = [a[k].clone().requires_grad_(True) for k in NAMES] + [o["decay"].clone().requires_grad_(True)]

    def fn(*p):
        return ops.Scan.apply(*p[:7], lengths, backend, "tanh", None, None, p[7])[0]

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=True)


def test_vmap_and_jvp_through_the_rules():
    a, o = contract_inputs(3, 2, 12, sizes=[5, 7], decay=True)
    rest = [a[k] for k in NAMES[1:]]
    lengths = torch.tensor([3, 2])
    decays = torch.stack([o["decay"], o["decay"] ** 2])  # [V, T, B, d]

    def run(xp, decay):
        return ops.scan(xp, *rest, lengths, "contract", "tanh", o["compartment_of"], None, decay)

    got = torch.func.vmap(run, in_dims=(None, 0))(a["xp"], decays)
    for v in range(2):
        want = contract.scan_fwd(a["xp"], *rest, lengths, False, "tanh", o["compartment_of"], None, decays[v])[0]
        torch.testing.assert_close(got[v], want, rtol=1e-12, atol=1e-12)
    tangents = (torch.randn_like(a["xp"]), torch.randn_like(o["decay"]))
    _, jvp = torch.func.jvp(run, (a["xp"], o["decay"]), tangents)
    _, want = torch.func.jvp(lambda xp, dec: contract.scan_fwd(xp, *rest, lengths, False, "tanh", o["compartment_of"],
                                                               None, dec)[0], (a["xp"], o["decay"]), tangents)
    torch.testing.assert_close(jvp, want, rtol=1e-11, atol=1e-12)


def test_custom_ops_with_decay_pass_opcheck():
    a, o = contract_inputs(3, 2, 12, decay=True)
    lengths = torch.tensor([3, 1])
    fwd = (*[a[k] for k in NAMES], lengths, "contract", True, "tanh", None, None, o["decay"])
    torch.library.opcheck(torch.ops.diru_fast.scan_fwd, fwd)
    hs, saved = torch.ops.diru_fast.scan_fwd(*fwd)
    bwd = (torch.randn_like(hs), a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths, "contract", "tanh",
           None, None, o["decay"])
    torch.library.opcheck(torch.ops.diru_fast.scan_bwd, bwd)


# --- the modules on every backend ---------------------------------------------------------------

def _model(backend, seed=0, **kw):
    return randomize_(diru_fast.DIRU(2, 12, 1, dtype=F64, backend=backend, time_decay=True, **kw), seed=seed)


def _reference_of(model, **kw):
    ref = reference.DIRU(model.input_size, model.hidden_size, model.output_size, time_decay=True, **kw).double()
    ref.load_state_dict(model.state_dict())
    return ref


@pytest.mark.parametrize("backend", DECAY_BACKENDS)
@pytest.mark.parametrize("kw", [dict(num_compartments=3), dict(compartment_sizes=[3, 4, 5], compartment_attention=True,
                                                                activation="relu")], ids=["k3", "attention-relu"])
def test_model_matches_the_reference_model(backend, kw):
    """DIRU(time_decay=True) with dt against the prototype-faithful model (which decays the state in
    its own cell): outputs and every parameter gradient, decay_rate's included, and dt's gradient."""
    model = _model(backend, **kw)
    ref = _reference_of(model, **kw)
    x = torch.randn(3, 7, 2, dtype=F64)
    dt = _gaps(3, 7).requires_grad_(True)
    dt_ref = dt.detach().clone().requires_grad_(True)
    y, y_ref = model(x, dt=dt, return_sequences=True), ref(x, return_sequences=True, dt=dt_ref)
    torch.testing.assert_close(y, y_ref, **TOL)
    g = torch.randn(y.shape, dtype=F64)
    (y * g).sum().backward()
    (y_ref * g).sum().backward()
    torch.testing.assert_close(dt.grad, dt_ref.grad, **TOL)
    ref_grads = {k: p.grad for k, p in ref.named_parameters()}
    torch.testing.assert_close(model.rnn.decay_rate_l0.grad, ref_grads["cells.0.decay_rate"], **TOL)
    torch.testing.assert_close(model.fc_out.weight.grad, ref_grads["fc_out.weight"], **TOL)


@pytest.mark.parametrize("backend", MODULE_BACKENDS)
def test_padded_steps_do_not_decay(backend):
    """A padded sequence gives the numbers of the same sequence run alone at its own length (its
    padding and the dt there are not read: NaN gaps in the padding change nothing)."""
    layer = randomize_(diru_fast.DIRULayer(2, 12, num_layers=2, batch_first=True, dtype=F64, backend=backend,
                                           num_compartments=3, time_decay=True))
    x, dt = torch.randn(3, 6, 2, dtype=F64), _gaps(3, 6)
    lengths = torch.tensor([6, 2, 4])
    dt_padded = dt.clone()
    for b, length in enumerate(lengths.tolist()):
        dt_padded[b, length:] = float("nan")
    out, h_n = layer(x, lengths=lengths, dt=dt_padded)
    for b, length in enumerate(lengths.tolist()):
        alone, h_alone = layer(x[b:b + 1, :length], dt=dt[b:b + 1, :length])
        torch.testing.assert_close(out[b:b + 1, :length], alone, **TOL)
        torch.testing.assert_close(h_n[:, b:b + 1], h_alone, **TOL)
        assert torch.all(out[b, length:] == 0)


@pytest.mark.parametrize("backend", MODULE_BACKENDS)
def test_bidirectional_reverse_direction_crosses_the_gaps_backwards(backend):
    """The reverse direction of a bidirectional layer is a forward layer run on the reversed
    sequence whose gap at reversed step i is the one it crosses: dt_{t+1}, and 0 at its first step."""
    layer = randomize_(diru_fast.DIRULayer(2, 12, bidirectional=True, batch_first=True, dtype=F64, backend=backend,
                                           num_compartments=2, time_decay=True))
    forward = diru_fast.DIRULayer(2, 12, batch_first=True, dtype=F64, backend=backend, num_compartments=2,
                                  time_decay=True)
    with torch.no_grad():
        for name, p in forward.named_parameters():
            p.copy_(getattr(layer, name + "_reverse"))
    x, dt = torch.randn(3, 5, 2, dtype=F64), _gaps(3, 5)
    lengths = torch.tensor([5, 3, 1])
    out, h_n = layer(x, lengths=lengths, dt=dt)
    for b, length in enumerate(lengths.tolist()):
        xr = x[b:b + 1, :length].flip(1)
        gaps = torch.cat([dt[b, 1:length], dt.new_zeros(1)]).flip(0).unsqueeze(0)  # dt_{t+1}, reversed
        assert gaps[0, 0] == 0
        rev, h_rev = forward(xr, dt=gaps)
        torch.testing.assert_close(out[b:b + 1, :length, 12:], rev.flip(1), **TOL)
        torch.testing.assert_close(h_n[1, b], h_rev[0, 0], **TOL)


@pytest.mark.parametrize("backend", MODULE_BACKENDS)
def test_cell_steps_equal_the_layer(backend):
    """DIRUCell(time_decay) stepped with dt equals DIRULayer(time_decay) over the sequence (the cell
    decays its hx first, then runs the plain step: the fused inference step where there is one)."""
    cell = randomize_(diru_fast.DIRUCell(3, 12, dtype=F64, backend=backend, num_compartments=3, time_decay=True))
    layer = diru_fast.DIRULayer(3, 12, dtype=F64, backend=backend, num_compartments=3, time_decay=True)
    layer.load_state_dict({k + "_l0": v for k, v in cell.state_dict().items()})
    x, dt = torch.randn(5, 2, 3, dtype=F64), _gaps(5, 2)
    h0 = torch.randn(2, 12, dtype=F64)
    want, _ = layer(x, h0.unsqueeze(0), dt=dt)
    h = h0
    for t in range(5):
        with torch.no_grad():
            h = cell(x[t], h, dt[t])
        torch.testing.assert_close(h, want[t], **TOL)
    unbatched = cell(x[0, 0], h0[0], dt[0, 0])  # unbatched: dt a scalar
    torch.testing.assert_close(unbatched, want[0, 0], **TOL)


@pytest.mark.parametrize("backend", MODULE_BACKENDS)
def test_gradcheck_layer_with_dt(backend):
    layer = randomize_(diru_fast.DIRULayer(2, 6, dtype=F64, backend=backend, num_compartments=2, time_decay=True))
    x = torch.randn(4, 2, 2, dtype=F64, requires_grad=True)
    dt = (_gaps(4, 2) + 0.1).requires_grad_(True)
    params = [p for _, p in layer.named_parameters()]
    names = [n for n, _ in layer.named_parameters()]
    lengths = torch.tensor([4, 3])

    def fn(x, dt, *p):
        return torch.func.functional_call(layer, dict(zip(names, p)), (x,), {"lengths": lengths, "dt": dt})[0]

    assert torch.autograd.gradcheck(fn, (x, dt, *params))


@pytest.mark.parametrize("backend", MODULE_BACKENDS)
def test_inference_paths_equal_the_training_path(backend):
    """Under no_grad the cpu kernel projects x inside the time loop (scan_fwd_x, decay fused there too)
    and a one-step call decays hx before the fused step: the same numbers as the autograd path."""
    layer = randomize_(diru_fast.DIRULayer(2, 12, dtype=F64, backend=backend, num_compartments=3, time_decay=True))
    x, dt, lengths = torch.randn(6, 3, 2, dtype=F64), _gaps(6, 3), torch.tensor([6, 2, 5])
    h0 = torch.randn(1, 3, 12, dtype=F64)
    for args in ((x, h0), (x[:1], h0)):
        for kw in (dict(dt=dt[:args[0].shape[0]]), dict(dt=dt[:args[0].shape[0]], lengths=lengths.clamp(max=args[0].shape[0]))):
            train_out, train_h = layer(*args, **kw)
            with torch.no_grad():
                out, h = layer(*args, **kw)
            torch.testing.assert_close(out, train_out, **TOL)
            torch.testing.assert_close(h, train_h, **TOL)


def test_dt_none_means_one_everywhere():
    model = _model("torch")
    x = torch.randn(2, 5, 2, dtype=F64)
    torch.testing.assert_close(model(x), model(x, dt=torch.ones(2, 5, dtype=F64)), rtol=0, atol=0)


def test_packed_sequence_with_packed_dt():
    layer = randomize_(diru_fast.DIRULayer(2, 12, dtype=F64, num_compartments=3, time_decay=True, backend="torch"))
    x, dt = torch.randn(5, 3, 2, dtype=F64), _gaps(5, 3)
    lengths = torch.tensor([5, 2, 4])
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    packed_dt = pack_padded_sequence(dt, lengths, enforce_sorted=False)
    out, h_n = layer(packed, dt=packed_dt)
    want_out, want_h = layer(x, lengths=lengths, dt=dt)
    torch.testing.assert_close(h_n, want_h, **TOL)
    with pytest.raises(ValueError, match="PackedSequence"):
        layer(packed, dt=dt)


# --- parameters, checkpoints, init, bad input ---------------------------------------------------

def test_parameters_keys_and_init():
    model = diru_fast.DIRU(2, 8, 1, num_layers=2, time_decay=True)
    keys = list(model.state_dict())
    assert [k for k in keys if "decay" in k] == ["cells.0.decay_rate", "cells.1.decay_rate"]
    assert model.rnn.decay_rate_l1.shape == (8,)
    rates = F.softplus(model.rnn.decay_rate_l0.detach().double())
    torch.testing.assert_close(rates[0], torch.tensor(1e-2, dtype=F64), rtol=1e-6, atol=0)
    torch.testing.assert_close(rates[-1], torch.tensor(1.0, dtype=F64), rtol=1e-6, atol=0)
    assert torch.all(rates[1:] > rates[:-1])
    plain = diru_fast.DIRU(2, 8, 1, num_layers=2)
    torch.manual_seed(0)
    a = diru_fast.DIRU(2, 8, 1, time_decay=True)
    torch.manual_seed(0)
    b = diru_fast.DIRU(2, 8, 1)
    for k, v in b.state_dict().items():  # the other parameters keep their draws
        assert torch.equal(a.state_dict()[k], v)
    assert not any("decay" in k for k in plain.state_dict())
    assert "time_decay=True" in repr(model.rnn)
    layer = diru_fast.DIRULayer(2, 8, bidirectional=True, time_decay=True)
    assert {"decay_rate_l0", "decay_rate_l0_reverse"} <= dict(layer.named_parameters()).keys()


def test_checkpoints_round_trip_and_name_the_missing_key():
    model = _model("torch")
    ref = _reference_of(model)
    again = diru_fast.DIRU(2, 12, 1, dtype=F64, time_decay=True)
    again.load_state_dict(ref.state_dict())  # the prototype-style keys
    assert torch.equal(again.rnn.decay_rate_l0, model.rnn.decay_rate_l0)
    again.load_state_dict(dict(model.named_parameters()))  # the fused names
    plain = diru_fast.DIRU(2, 12, 1, dtype=F64).state_dict()
    with pytest.raises(RuntimeError, match=r"cells\.0\.decay_rate"):
        again.load_state_dict(plain)
    cell = diru_fast.DIRUCell(2, 12, time_decay=True)
    layer = diru_fast.DIRULayer(2, 12, time_decay=True)
    layer.load_state_dict({"cells.0." + k: v for k, v in reference.DIRUCell(2, 12, time_decay=True).state_dict().items()})
    cell.load_state_dict(reference.DIRUCell(2, 12, time_decay=True).state_dict())


def test_meta_device_init_then_reset():
    with torch.device("meta"):
        layer = diru_fast.DIRULayer(2, 8, time_decay=True)
    layer.to_empty(device="cpu")
    layer.reset_parameters()
    torch.testing.assert_close(F.softplus(layer.decay_rate_l0[-1].double()), torch.tensor(1.0, dtype=F64),
                               rtol=1e-6, atol=0)


@pytest.mark.parametrize("bad, match", [
    (lambda dt: -dt, "finite and >= 0"),
    (lambda dt: dt.masked_fill(dt > 1, float("nan")), "finite and >= 0"),
    (lambda dt: dt.masked_fill(dt > 1, float("inf")), "finite and >= 0"),
    (lambda dt: dt[:, :3], r"shape \(2, 5\)"),
    (lambda dt: dt.t(), r"shape \(2, 5\)"),
    (lambda dt: dt.tolist(), "torch.Tensor"),
    (lambda dt: dt > 1, "real numbers"),
])
def test_bad_dt_is_a_value_error(bad, match):
    model = _model("torch")
    x, dt = torch.randn(2, 5, 2, dtype=F64), _gaps(2, 5)
    with pytest.raises(ValueError, match=match):
        model(x, dt=bad(dt))


def test_dt_without_time_decay_is_a_value_error():
    x, dt = torch.randn(2, 5, 2), _gaps(2, 5).float()
    with pytest.raises(ValueError, match="time_decay"):
        diru_fast.DIRU(2, 8, 1)(x, dt=dt)
    with pytest.raises(ValueError, match="time_decay"):
        diru_fast.DIRUCell(2, 8)(x[:, 0], None, dt[:, 0])
    with pytest.raises(ValueError, match="time_decay"):
        reference.DIRUCell(2, 8)(x[:, 0], torch.zeros(2, 8), dt=dt[:, 0])
    with pytest.raises(TypeError, match="time_decay"):
        diru_fast.DIRULayer(2, 8, time_decay=1)


def test_dt_gradient_and_zero_gap_keep_the_state():
    """dt = 0 everywhere is the plain cell (no decay), and dt receives a gradient."""
    model = _model("torch")
    plain = diru_fast.DIRU(2, 12, 1, dtype=F64, num_compartments=4, backend="torch")
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if "decay" not in k})
    x = torch.randn(2, 5, 2, dtype=F64)
    dt = torch.zeros(2, 5, dtype=F64, requires_grad=True)
    torch.testing.assert_close(model(x, dt=dt), plain(x), **TOL)
    model(x, dt=dt).sum().backward()
    assert dt.grad is not None and torch.isfinite(dt.grad).all() and dt.grad.abs().sum() > 0


def test_auto_falls_back_and_explicit_raises_where_not_fused(monkeypatch):
    from diru_fast.providers import cpu

    monkeypatch.setattr(cpu, "OPTIONS", frozenset({"relu", "attention", "dropout"}))
    x, dt = torch.randn(2, 4, 2, dtype=F64), _gaps(2, 4)
    model = _model("cpu")
    with pytest.raises(BackendUnavailableError, match="time_decay"):
        model(x, dt=dt)
    model.backend = "auto"
    with pytest.warns(RuntimeWarning, match="time_decay"):
        got = model(x, dt=dt)
    model.backend = "torch"
    torch.testing.assert_close(got, model(x, dt=dt), **TOL)


def test_functional_scan_with_decay_rate():
    w = CellWeights(*(randomize_(diru_fast.DIRUCell(2, 6, dtype=F64, num_compartments=1)).cell_weights()))
    x, dt = torch.randn(4, 3, 2, dtype=F64), _gaps(4, 3)
    rate = torch.randn(6, dtype=F64)
    hs = diru_scan(x, w, dt=dt, decay_rate=rate, backend="torch")
    xp = F.linear(x, w.w_ih, w.b_ih)
    want = contract.scan_fwd(xp, torch.zeros(3, 6, dtype=F64), w.w_hh, w.w_int, w.b_int, w.w_out, w.b_out, None, False,
                             decay=contract.decay_factor(rate, dt))[0]
    torch.testing.assert_close(hs, want, **TOL)
    with pytest.raises(ValueError, match="decay_rate"):
        diru_scan(x, w, dt=dt, decay_rate=rate[:3])


@pytest.mark.parametrize("backend", [b for b in ("cpu",) if b in DECAY_BACKENDS])
def test_compile_and_export_with_dt(backend):
    model = _model(backend).float()
    x, dt = torch.randn(2, 6, 2), _gaps(2, 6).float()
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    torch.testing.assert_close(compiled(x, dt=dt), model(x, dt=dt), rtol=1e-5, atol=1e-6)
    exported = torch.export.export(copy.deepcopy(model), (x,), {"dt": dt})
    torch.testing.assert_close(exported.module()(x, dt=dt), model(x, dt=dt), rtol=1e-5, atol=1e-6)


@pytest.mark.no_poison
def test_onnx_export_with_dt(tmp_path):
    """DIRU(time_decay) with dt as a second graph input: the ONNX loop run by onnxruntime at several
    B and T against the eager model."""
    import warnings

    import onnxruntime

    model = randomize_(diru_fast.DIRU(2, 8, 1, num_compartments=2, time_decay=True, backend="cpu"), seed=4).eval()
    path = tmp_path / "decay.onnx"
    dims = {0: torch.export.Dim("B"), 1: torch.export.Dim("T")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (torch.randn(3, 5, 2),), kwargs={"dt": _gaps(3, 5).float()}, dynamo=True,
                                    verbose=False, dynamic_shapes={"x": dims, "dt": dims})
    program.save(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    for B, T in [(1, 1), (3, 5), (2, 9)]:
        x, dt = torch.randn(B, T, 2), _gaps(B, T, seed=T).float()
        (got,) = session.run(None, dict(zip(names, (x.numpy(), dt.numpy()))))
        torch.testing.assert_close(torch.from_numpy(got), model(x, dt=dt), rtol=1e-5, atol=1e-5)
