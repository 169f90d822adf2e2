"""The options (activation, unequal compartment sizes, attention over compartments, compartment
dropout) in the module layer, on every backend that runs on CPU here.

Expected numbers come from the package's two statements of the math: the prototype-faithful modules
of ``diru_fast.reference`` (backend "reference", and the modules themselves) and the kernel contract
``diru_fast.scan.contract`` in float64. A provider that does not list an option in its ``OPTIONS``
must refuse it (explicit backend) or hand the call to "torch" with one warning ("auto").
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F

import diru_fast
from diru_fast import backends, reference
from diru_fast.backends import BackendUnavailableError, provider_options
from diru_fast.functional import compartment_index, diru_cell, diru_scan, draw_compartment_mask
from diru_fast.scan import contract, ops
from diru_fast.weights import CellWeights, to_prototype
from tests.helpers import contract_inputs, cpu_backends, randomize_

F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)

# (id, module keywords, hidden size, the options the backend must fuse)
CONFIGS = [
    ("relu", dict(activation="relu", num_compartments=2), 12, {"relu"}),
    ("sizes", dict(compartment_sizes=[5, 7, 12]), 24, set()),
    ("attention-sizes", dict(compartment_sizes=[5, 7, 12], compartment_attention=True), 24, {"attention"}),
    ("attention-k3-d48", dict(num_compartments=3, compartment_attention=True), 48, {"attention"}),
    ("dropout", dict(compartment_dropout=0.3, num_compartments=2), 12, {"dropout"}),
    ("relu-attention-dropout", dict(activation="relu", compartment_sizes=[5, 7, 12], compartment_attention=True,
                                    compartment_dropout=0.25), 24, {"relu", "attention", "dropout"}),
]
BACKENDS = cpu_backends()


def _fuses(backend, needed):
    return backend in ("torch", "reference") or set(needed) <= provider_options(backend)


def _layer(n, d, backend, seed=0, **kw):
    return randomize_(diru_fast.DIRULayer(n, d, dtype=F64, backend=backend, **kw), seed=seed)


def _run(module, x, seed, **call):
    """Forward and backward under a fixed seed (the dropout draws): outputs and every gradient."""
    x = x.detach().clone().requires_grad_(True)
    torch.manual_seed(seed)
    out = module(x, **call)
    y, h = out if isinstance(out, tuple) else (out, out)
    g = torch.Generator().manual_seed(seed + 1)
    loss = (y * torch.randn(y.shape, generator=g, dtype=F64)).sum() + (h * torch.randn(h.shape, generator=g,
                                                                                       dtype=F64)).sum()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    module.zero_grad()
    return y.detach(), h.detach(), x.grad, grads


def _same_as(module, backend):
    """A copy of ``module`` (the same parameters) on ``backend``."""
    other = copy.deepcopy(module)
    other.backend = backend
    return other


def _assert_runs_equal(a, b):
    ya, ha, gxa, gpa = a
    yb, hb, gxb, gpb = b
    torch.testing.assert_close(ya, yb, **TOL)
    torch.testing.assert_close(ha, hb, **TOL)
    torch.testing.assert_close(gxa, gxb, **TOL)
    assert gpa.keys() == gpb.keys()
    for name in gpa:
        torch.testing.assert_close(gpa[name], gpb[name], **TOL, msg=lambda m, name=name: f"{name}: {m}")


@pytest.fixture(autouse=True)
def fresh_warnings():
    backends._warned.clear()
    yield
    backends._warned.clear()


# --- every backend against the reference modules ------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_layer_matches_reference(backend, cfg):
    """2 layers, bidirectional, lengths, training mode (dropout on): outputs, h_n and all gradients
    equal the reference backend's (the prototype's cells) under the same seed."""
    _, kw, d, needed = cfg
    module = _layer(5, d, "reference", num_layers=2, bidirectional=True, **kw)
    x = torch.randn(4, 3, 5, dtype=F64, generator=torch.Generator().manual_seed(3))
    lengths = torch.tensor([4, 1, 3])
    expected = _run(module, x, 11, lengths=lengths)
    fast = _same_as(module, backend)
    if not _fuses(backend, needed):
        with pytest.raises(BackendUnavailableError, match="|".join(sorted(needed))):
            fast(x, lengths=lengths)
        fast.backend = "auto"  # falls back (to "torch" where auto would pick this provider)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            got = _run(fast, x, 11, lengths=lengths)
        _assert_runs_equal(got, expected)
        return
    _assert_runs_equal(_run(fast, x, 11, lengths=lengths), expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cfg", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_cell_matches_reference_cell(backend, cfg):
    """DIRUCell at B=1 and unbatched, against the prototype's cell holding the same weights."""
    _, kw, d, needed = cfg
    cell = randomize_(diru_fast.DIRUCell(5, d, dtype=F64, backend=backend, **kw), seed=2)
    cell.eval()  # the prototype's cell draws its own dropout; in eval both are the identity
    ref = reference.DIRUCell(5, d, **kw).to(F64).eval()
    ref.load_state_dict({k: v.detach() for k, v in to_prototype(cell.cell_weights(), cell.compartment_sizes).items()})
    x, h = torch.randn(1, 5, dtype=F64), torch.randn(1, d, dtype=F64)
    if not _fuses(backend, needed - {"dropout"}):
        with pytest.raises(BackendUnavailableError):
            cell(x, h)
        return
    torch.testing.assert_close(cell(x, h), ref(x, h), **TOL)
    torch.testing.assert_close(cell(x[0], h[0]), ref(x, h)[0], **TOL)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if _fuses(b, {"relu", "attention", "dropout"})])
def test_cell_dropout_in_training_matches_reference_backend(backend):
    kw = dict(activation="relu", compartment_sizes=[5, 7, 12], compartment_attention=True, compartment_dropout=0.4)
    cell = randomize_(diru_fast.DIRUCell(5, 24, dtype=F64, backend="reference", **kw), seed=4)
    x, h = torch.randn(3, 5, dtype=F64), torch.randn(3, 24, dtype=F64)
    expected = _run(cell, x, 5, hx=h)
    fast = _same_as(cell, backend)
    _assert_runs_equal(_run(fast, x, 5, hx=h), expected)


# --- the functional layer against the float64 contract -------------------------------------------

def _weights(n, d, k, seed):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=F64) * s[-1] ** -0.5  # noqa: E731
    return CellWeights(r(3 * d + k, n), r(3 * d + k) * 0.3, r(3 * d + k, d), r(d, d), r(d) * 0.1, r(d, d),
                       r(d) * 0.1)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(1, 1), (5, 3)], ids=["T1-B1", "T5-B3"])
def test_diru_scan_matches_contract(backend, shape):
    T, B = shape
    sizes, d, n, p = [5, 7, 12], 24, 4, 0.3
    w = _weights(n, d, len(sizes), seed=T + B)
    x = torch.randn(T, B, n, dtype=F64, generator=torch.Generator().manual_seed(1))
    lengths = None if T == 1 else torch.tensor([5, 2, 4])
    opts = dict(activation="relu", compartment_sizes=sizes, compartment_dropout=p, training=True)
    if not _fuses(backend, {"relu", "attention", "dropout"}):
        with pytest.raises(BackendUnavailableError, match="attention"):
            diru_scan(x, w, lengths=lengths, backend=backend, **opts)
        return
    params = [t.clone().requires_grad_(True) for t in w]
    xg = x.clone().requires_grad_(True)
    torch.manual_seed(9)
    hs = diru_scan(xg, CellWeights(*params), lengths=lengths, backend=backend, **opts)
    # the statement: one mask drawn as documented, the contract on xp = x W_ih^T + b_ih
    cparams = [t.clone().requires_grad_(True) for t in w]
    cx = x.clone().requires_grad_(True)
    torch.manual_seed(9)
    mask = draw_compartment_mask(T, B, d, p, F64, "cpu")
    xin = cx if lengths is None else cx.masked_fill((torch.arange(T)[:, None] >= lengths)[..., None], 0.0)
    xp = F.linear(xin, cparams[0], cparams[1])
    want, _ = contract.scan_fwd(xp, torch.zeros(B, d, dtype=F64), cparams[2], cparams[3], cparams[4], cparams[5],
                                cparams[6], lengths, False, "relu", compartment_index(sizes), mask)
    torch.testing.assert_close(hs, want, rtol=1e-12, atol=1e-12)
    g = torch.randn(hs.shape, dtype=F64, generator=torch.Generator().manual_seed(2))
    got_grads = torch.autograd.grad(hs, [xg, *params], g)
    want_grads = torch.autograd.grad(want, [cx, *cparams], g)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if _fuses(b, {"relu", "attention", "dropout"})])
def test_gradcheck(backend):
    sizes, d, n = [2, 4], 6, 3
    w = [t.requires_grad_(True) for t in _weights(n, d, len(sizes), seed=0)]
    x = torch.randn(3, 2, n, dtype=F64, requires_grad=True)
    lengths = torch.tensor([3, 2])

    def fn(x, *params):
        torch.manual_seed(0)  # the same mask on every evaluation
        return diru_scan(x, CellWeights(*params), lengths=lengths, backend=backend, activation="relu",
                         compartment_sizes=sizes, compartment_dropout=0.3, training=True)

    assert torch.autograd.gradcheck(fn, (x, *w))


def test_provider_ops_match_contract_with_options():
    """The custom ops and the autograd formula (Scan) on the contract provider, with every option,
    against the contract differentiated by autograd: outputs, all seven input gradients."""
    a, o = contract_inputs(4, 3, 24, sizes=[5, 7, 12], dropout=0.3, activation="relu")
    names = ["xp", "h0", "w_hh", "w_int", "b_int", "w_out", "b_out"]
    lengths = torch.tensor([4, 1, 3])
    p1 = [a[k].clone().requires_grad_(True) for k in names]
    p2 = [a[k].clone().requires_grad_(True) for k in names]
    hs1 = ops.scan(*p1, lengths, "contract", o["activation"], o["compartment_of"], o["mask"])
    hs2 = contract.scan_fwd(*p2, lengths, False, **o)[0]
    torch.testing.assert_close(hs1, hs2, rtol=1e-12, atol=1e-12)
    g = torch.randn(hs1.shape, dtype=F64)
    for x1, x2 in zip(torch.autograd.grad(hs1, p1, g), torch.autograd.grad(hs2, p2, g)):
        torch.testing.assert_close(x1, x2, rtol=1e-12, atol=1e-12)
    fwd = (*[a[k] for k in names], lengths, "contract", True, o["activation"], o["compartment_of"], o["mask"])
    torch.library.opcheck(torch.ops.diru_fast.scan_fwd, fwd)
    hs, saved = torch.ops.diru_fast.scan_fwd(*fwd)
    assert saved.shape == (4, 3, 4 * 24 + 3)
    bwd = (torch.randn_like(hs), a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths, "contract",
           o["activation"], o["compartment_of"], o["mask"])
    torch.library.opcheck(torch.ops.diru_fast.scan_bwd, bwd)
    assert torch.ops.diru_fast.scan_bwd(*bwd)[0].shape == (4, 3, 3 * 24 + 3)


def test_vmap_and_jvp_with_options():
    a, o = contract_inputs(3, 2, 24, sizes=[5, 7, 12], dropout=0.2, activation="relu")
    names = ["xp", "h0", "w_hh", "w_int", "b_int", "w_out", "b_out"]
    xs = torch.stack([a["xp"], a["xp"] * 0.5])  # [V, T, B, 3d+k]
    rest = [a[k] for k in names[1:]]

    def run(xp):
        return ops.scan(xp, *rest, None, "contract", o["activation"], o["compartment_of"], o["mask"])

    got = torch.func.vmap(run)(xs)
    for v in range(2):
        torch.testing.assert_close(got[v], contract.scan_fwd(xs[v], *rest, None, False, **o)[0], rtol=1e-12,
                                   atol=1e-12)
    tangent = torch.randn_like(a["xp"])
    _, jvp = torch.func.jvp(run, (a["xp"],), (tangent,))
    _, want = torch.func.jvp(lambda xp: contract.scan_fwd(xp, *rest, None, False, **o)[0], (a["xp"],), (tangent,))
    torch.testing.assert_close(jvp, want, rtol=1e-11, atol=1e-12)


@pytest.mark.no_poison
def test_onnx_export_with_options(tmp_path):
    """Eval mode (no mask): relu and attention over unequal compartments in the ONNX loop, run by
    onnxruntime against the eager model."""
    import onnxruntime
    from torch.export import Dim

    layer = diru_fast.DIRULayer(3, 12, batch_first=True, activation="relu", compartment_sizes=[5, 7],
                                compartment_attention=True, backend="torch")
    model = randomize_(layer, seed=3).eval()
    path = tmp_path / "options.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (torch.randn(2, 5, 3),), dynamo=True, verbose=False,
                                    dynamic_shapes=({0: Dim("B"), 1: Dim("T")},),
                                    input_names=["x"], output_names=["output", "h_n"])
    program.save(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for T, B in [(1, 1), (7, 3)]:
        x = torch.randn(B, T, 3)
        output, h_n = session.run(None, {"x": x.numpy()})
        want_out, want_h = model(x)
        torch.testing.assert_close(torch.from_numpy(output), want_out, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.from_numpy(h_n), want_h, rtol=1e-5, atol=1e-5)


# --- dropout -----------------------------------------------------------------------------------

def test_dropout_eval_is_identity_and_seeded():
    kw = dict(num_layers=2, num_compartments=2)
    plain = _layer(5, 12, "torch", **kw)
    drop = _layer(5, 12, "torch", compartment_dropout=0.5, **kw)
    x = torch.randn(6, 2, 5, dtype=F64)
    drop.eval()
    plain.eval()
    assert torch.equal(drop(x)[0], plain(x)[0])
    drop.train()
    torch.manual_seed(3)
    a = drop(x)[0]
    torch.manual_seed(3)
    b = drop(x)[0]
    torch.manual_seed(4)
    c = drop(x)[0]
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    assert not torch.allclose(a, plain(x)[0])


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_mask_values_and_kept_fraction(p):
    torch.manual_seed(0)
    mask = draw_compartment_mask(50, 40, 100, p, torch.float32, "cpu")  # 200000 elements
    assert mask.shape == (50, 40, 100) and mask.dtype == torch.float32
    kept = mask != 0
    assert torch.all(mask[kept] == torch.tensor(1.0 / (1.0 - p), dtype=torch.float32))
    assert abs(kept.double().mean().item() - (1 - p)) < 0.005  # ~4.5 sigma at p = 0.5


def test_dropout_p0_draws_nothing():
    layer = _layer(5, 12, "torch", num_compartments=2, compartment_dropout=0.0)
    torch.manual_seed(0)
    layer(torch.randn(3, 2, 5, dtype=F64))
    after = torch.rand(1)
    torch.manual_seed(0)
    torch.randn(3, 2, 5, dtype=F64)
    assert torch.equal(after, torch.rand(1))  # no RNG draw besides the input's


# --- attention ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sizes", [[6, 6], [3, 3, 3, 3], [5, 7, 12]], ids=["k2", "k4", "k3-unequal"])
def test_zero_attention_weights_give_the_plain_cell(sizes):
    d = sum(sizes)
    k = len(sizes)
    att = _layer(5, d, "torch", compartment_sizes=sizes, compartment_attention=True, num_layers=2)
    plain = diru_fast.DIRULayer(5, d, dtype=F64, backend="torch", compartment_sizes=sizes, num_layers=2)
    with torch.no_grad():
        for (name, p), (_, q) in zip(att.named_parameters(), plain.named_parameters()):
            rows = q.shape[0]
            if p.shape != q.shape:
                p[rows:] = 0.0  # the attention rows: zero logits
            q.copy_(p[:rows])
    x = torch.randn(4, 3, 5, dtype=F64)
    got, want = att(x)[0], plain(x)[0]
    if k in (2, 4):  # k * (1/k) is exact
        assert torch.equal(got, want)
    else:
        torch.testing.assert_close(got, want, rtol=1e-15, atol=1e-15)


def test_attention_parameters_and_buffer():
    cell = diru_fast.DIRUCell(5, 24, compartment_sizes=[5, 7, 12], compartment_attention=True)
    assert cell.weight_ih.shape == (75, 5) and cell.weight_hh.shape == (75, 24) and cell.bias_ih.shape == (75,)
    assert torch.equal(cell.compartment_of, torch.tensor([0] * 5 + [1] * 7 + [2] * 12))
    assert "compartment_of" in dict(cell.named_buffers()) and "compartment_of" not in cell.state_dict()
    assert cell.to(F64).compartment_of.dtype == torch.int64
    plain = diru_fast.DIRUCell(5, 24)
    assert plain.compartment_of is None and list(plain.buffers()) == []


def test_init_matches_the_prototype_draws():
    kw = dict(activation="relu", compartment_sizes=[5, 7, 12], compartment_attention=True)
    torch.manual_seed(0)
    fast = diru_fast.DIRUCell(5, 24, **kw)
    torch.manual_seed(0)
    ref = reference.DIRUCell(5, 24, **kw)
    for key, value in to_prototype(fast.cell_weights(), fast.compartment_sizes).items():
        assert torch.equal(value, ref.state_dict()[key]), key


# --- checkpoints -------------------------------------------------------------------------------

def test_prototype_checkpoint_round_trip():
    kw = dict(compartment_sizes=[5, 7, 12], compartment_attention=True, activation="relu")
    fast = randomize_(diru_fast.DIRU(5, 24, 3, num_layers=2, dtype=F64, **kw), seed=1).eval()
    sd = fast.state_dict()
    assert sd["cells.0.compartment_attention.weight"].shape == (3, 29)
    assert sd["cells.1.compartment_attention.weight"].shape == (3, 48)
    assert sd["cells.1.compartment_attention.bias"].shape == (3,)
    assert sd["cells.0.compartments.1.W_x.weight"].shape == (7, 5)
    ref = reference.DIRU(5, 24, 3, num_layers=2, **kw).to(F64).eval()
    ref.load_state_dict(sd)  # strict
    x = torch.randn(2, 4, 5, dtype=F64)
    torch.testing.assert_close(fast(x), ref(x), **TOL)
    back = diru_fast.DIRU(5, 24, 3, num_layers=2, dtype=F64, **kw)
    back.load_state_dict(ref.state_dict())
    for (name, p), q in zip(fast.named_parameters(), back.parameters()):
        assert torch.equal(p, q), name
    layer = diru_fast.DIRULayer(5, 24, num_layers=2, dtype=F64, batch_first=True, **kw)
    layer.load_state_dict({k: v for k, v in sd.items() if k.startswith("cells.")})
    torch.testing.assert_close(layer(x)[0], fast.rnn(x)[0], rtol=0, atol=0)
    cell = diru_fast.DIRUCell(5, 24, dtype=F64, **kw)
    cell.load_state_dict({k[len("cells.0."):]: v for k, v in sd.items() if k.startswith("cells.0.")})
    assert torch.equal(cell.weight_hh, fast.rnn.weight_hh_l0)
    plain = diru_fast.DIRU(5, 24, 3, num_layers=2, compartment_sizes=[5, 7, 12])
    with pytest.raises(RuntimeError, match="compartment_attention"):
        plain.load_state_dict(sd)


def test_defaults_keep_keys_and_repr():
    layer = diru_fast.DIRULayer(5, 8, num_compartments=2)
    assert "activation" not in repr(layer) and "compartment_" not in repr(layer)
    assert layer.weight_hh_l0.shape == (24, 8)
    r = repr(diru_fast.DIRULayer(5, 24, compartment_sizes=[5, 7, 12], compartment_attention=True,
                                 compartment_dropout=0.2, activation="relu"))
    for part in ("activation='relu'", "compartment_sizes=[5, 7, 12]", "compartment_attention=True",
                 "compartment_dropout=0.2", "num_compartments=3"):
        assert part in r


# --- dispatch ----------------------------------------------------------------------------------

def test_auto_falls_back_once_and_explicit_raises(monkeypatch):
    import tests.contract_provider as cp

    monkeypatch.setattr(cp, "OPTIONS", frozenset({"relu"}))
    monkeypatch.setenv("DIRU_FAST_BACKEND", "")
    monkeypatch.setitem(backends._AUTO_ORDER, "cpu", ("contract",))
    cell = randomize_(diru_fast.DIRUCell(5, 12, dtype=F64, num_compartments=2, compartment_attention=True,
                                         activation="relu", backend="auto"))
    x = torch.randn(2, 5, dtype=F64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y1 = cell(x)
        y2 = cell(x)
    messages = [str(w.message) for w in caught if "do not fuse" in str(w.message)]
    assert len(messages) == 1 and "'attention'" in messages[0] and "'contract'" in messages[0]
    assert "'relu'" not in messages[0]
    cell.backend = "torch"
    assert torch.equal(y1, cell(x)) and torch.equal(y2, y1)
    cell.backend = "contract"
    with pytest.raises(BackendUnavailableError, match="'attention'"):
        cell(x)


# --- bad values --------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [
    dict(activation="gelu"),
    dict(compartment_sizes=[5, 8]),
    dict(compartment_sizes=[0, 12]),
    dict(compartment_sizes=[-2, 14]),
    dict(compartment_sizes=[]),
    dict(compartment_sizes=[5, 7], num_compartments=3),
    dict(compartment_dropout=1.0),
    dict(compartment_dropout=-0.1),
    dict(num_compartments=5),
], ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
@pytest.mark.parametrize("cls", ["DIRUCell", "DIRULayer", "DIRU", "reference.DIRUCell"])
def test_bad_values_raise(cls, kw):
    build = {"DIRUCell": lambda: diru_fast.DIRUCell(5, 12, **kw),
             "DIRULayer": lambda: diru_fast.DIRULayer(5, 12, **kw),
             "DIRU": lambda: diru_fast.DIRU(5, 12, 2, **kw),
             "reference.DIRUCell": lambda: reference.DIRUCell(5, 12, **kw)}[cls]
    with pytest.raises(ValueError):
        build()


def test_functional_bad_values_raise():
    w = _weights(3, 12, 0, seed=0)
    x = torch.randn(2, 1, 3, dtype=F64)
    with pytest.raises(ValueError, match="activation"):
        diru_scan(x, w, activation="sigmoid")
    with pytest.raises(ValueError, match="compartment_dropout"):
        diru_cell(x[0], w, compartment_dropout=1.5)
    with pytest.raises(ValueError, match="attention rows"):
        diru_scan(x, _weights(3, 12, 3, seed=0), num_compartments=2)


@pytest.mark.parametrize("make", [lambda **kw: diru_fast.DIRUCell(3, 12, **kw), lambda **kw: diru_fast.DIRULayer(3, 12, **kw)],
                         ids=["cell", "layer"])
def test_meta_device_init_then_to_empty_and_reset_restores_the_compartment_index(make):
    """Meta-device init (no memory), to_empty, reset_parameters: the same module as built directly."""
    built = make(compartment_attention=True, compartment_sizes=[5, 7])
    meta = make(compartment_attention=True, compartment_sizes=[5, 7], device="meta")
    assert meta.compartment_of.is_meta
    real = meta.to_empty(device="cpu")
    real.compartment_of.fill_(99)  # what uninitialised memory may hold
    real.reset_parameters()
    assert torch.equal(real.compartment_of, built.compartment_of)
