"""Regression tests of hardening fixes, each on every CPU backend where it applies:

- input checks under ``torch.func.vmap`` (per-sample gradients over ``(x, dt)``), where an invalid
  ``dt`` gives that sample NaN instead of a silently wrong number;
- every backend from several Python threads on one module gives the serial numbers;
- a ``dt`` PackedSequence must be packed like the input (same lengths in the same order);
- ``torch.export`` with a dynamic T of a bidirectional layer with time decay;
- the dtype rule of ``dt`` (converted to the parameters' dtype; bool refused);
- meta-device init, ``to_empty`` / ``assign=True``, then ``load_state_dict``: the compartment index is
  rebuilt; whole-module pickles load with ``torch.load`` (``weights_only``) and only the classes allowed;
- any hidden size (near-equal default compartments) against the prototype's modules, ``proj_size`` and
  ``mode``; NumPy numbers wherever Python numbers are; one version string.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from torch import Tensor
from torch.export import Dim
from torch.nn.utils.rnn import pack_padded_sequence

import diru_fast
from diru_fast import DIRULayer
from diru_fast.weights import to_prototype
from tests.helpers import randomize_

F64 = torch.float64
BACKENDS = [b for b in ("cpu", "torch", "reference") if b in diru_fast.available_backends("cpu")]


def _layer(backend, **kw):
    kw.setdefault("time_decay", True)
    kw.setdefault("num_compartments", 2)
    return randomize_(DIRULayer(3, 4, batch_first=True, backend=backend, dtype=F64, **kw), seed=3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_vmap_per_sample_grads_over_x_and_dt(backend):
    layer = _layer(backend, bidirectional=True)
    params = {k: p.detach() for k, p in layer.named_parameters()}
    x, dt = torch.randn(3, 4, 3, dtype=F64), torch.rand(3, 4, dtype=F64)

    def loss(p, xi, dti):  # one sample: xi [T, n], dti [T]
        out, _ = torch.func.functional_call(layer, p, (xi[None],), {"dt": dti[None]})
        return out.square().sum()

    grads = torch.func.vmap(torch.func.grad(loss, argnums=(1, 2)), in_dims=(None, 0, 0))(params, x, dt)
    for i in range(3):
        want = torch.func.grad(loss, argnums=(1, 2))(params, x[i], dt[i])
        torch.testing.assert_close(grads[0][i], want[0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grads[1][i], want[1], rtol=1e-10, atol=1e-12)
    # under vmap the values cannot raise: an invalid gap poisons its own sample only
    bad = dt.clone()
    bad[1, 2] = -1.0
    out = torch.func.vmap(lambda xi, dti: layer(xi[None], dt=dti[None])[0][0])(x, bad)
    assert out[1].isnan().any() and not out[0].isnan().any() and not out[2].isnan().any()
    with pytest.raises(ValueError, match="finite and >= 0"):
        layer(x, dt=bad)
    # vmap over the lengths, and the older vmap of jacobian(vectorize=True) over dt
    lengths = torch.tensor([[4, 2, 3], [1, 4, 4]])
    batched = torch.func.vmap(lambda n: layer(x, None, n, dt=dt)[1])(lengths)
    for i in range(2):
        torch.testing.assert_close(batched[i], layer(x, None, lengths[i], dt=dt)[1], rtol=1e-12, atol=1e-12)
    jac = torch.autograd.functional.jacobian(lambda g: layer(x, dt=g)[1].sum(), dt, vectorize=True)
    torch.testing.assert_close(jac, torch.func.grad(lambda g: layer(x, dt=g)[1].sum())(dt), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_is_thread_safe(backend):
    layer = _layer(backend, compartment_attention=True, compartment_sizes=[1, 3], num_compartments=None)
    g = torch.Generator().manual_seed(0)
    inputs = [(torch.randn(2, 3, 3, dtype=F64, generator=g), torch.rand(2, 3, dtype=F64, generator=g))
              for _ in range(4)]
    serial = [layer(x, dt=dt)[0] for x, dt in inputs]
    results, errors = {}, []

    def work(i):
        try:
            for r in range(6):
                j = (i + r) % len(inputs)
                results[(i, r)] = (j, layer(inputs[j][0], dt=inputs[j][1])[0])
        except Exception as exc:  # reported below, with the thread's error
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 24
    for j, out in results.values():
        assert torch.equal(out, serial[j])


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_dt_must_be_packed_like_the_input(backend):
    layer = randomize_(DIRULayer(3, 4, num_compartments=2, backend=backend, dtype=F64, time_decay=True), seed=3)
    x, dt = torch.randn(5, 3, 3, dtype=F64), torch.rand(5, 3, dtype=F64)
    lengths = [5, 2, 4]
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out, _ = layer(packed, dt=pack_padded_sequence(dt, lengths, enforce_sorted=False))
    want, _ = layer(x, None, torch.tensor(lengths), dt=dt)
    torch.testing.assert_close(torch.nn.utils.rnn.pad_packed_sequence(out)[0], want, rtol=1e-12, atol=1e-12)
    for other in ([2, 5, 4], [5, 4, 2], [5, 2, 3]):  # same batch_sizes but another order; other lengths
        with pytest.raises(ValueError, match="packed the same way"):
            layer(packed, dt=pack_padded_sequence(dt, other, enforce_sorted=False))
    # sorted input packed without a permutation: a dt packed with the identity permutation matches
    ordered = [5, 4, 2]
    sorted_packed = pack_padded_sequence(x, ordered)
    a = layer(sorted_packed, dt=pack_padded_sequence(dt, ordered))[0].data
    b = layer(sorted_packed, dt=pack_padded_sequence(dt, ordered, enforce_sorted=False))[0].data
    torch.testing.assert_close(a, b)


class _WithDt(torch.nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, dt, lengths):
        return self.layer(x, None, lengths, dt=dt)


@pytest.mark.no_poison
@pytest.mark.parametrize("backend", BACKENDS)
def test_export_dynamic_length_of_a_bidirectional_layer_with_time_decay(backend):
    model = _WithDt(randomize_(DIRULayer(3, 4, bidirectional=True, time_decay=True, backend=backend, dtype=F64,
                                         check_finite=True), seed=2)).eval()  # every check traces
    B, T = Dim("B"), Dim("T")
    example = (torch.randn(5, 2, 3, dtype=F64), torch.rand(5, 2, dtype=F64), torch.tensor([5, 3]))
    program = torch.export.export(model, example, dynamic_shapes=({0: T, 1: B}, {0: T, 1: B}, {0: B}))
    for steps, batch in ((2, 1), (7, 3)):
        args = (torch.randn(steps, batch, 3, dtype=F64), torch.rand(steps, batch, dtype=F64),
                torch.tensor([steps - b % steps for b in range(batch)]))
        for got, want in zip(program.module()(*args), model(*args)):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(RuntimeError, match="dt must be finite"):  # the checks run inside the program
        program.module()(example[0], -example[1], example[2])
    with pytest.raises(RuntimeError, match="NaN or Inf"):
        program.module()(example[0] / 0, example[1], example[2])


@pytest.mark.parametrize("backend", BACKENDS)
def test_dt_is_converted_to_the_parameters_dtype(backend):
    layer = _layer(backend)
    x = torch.randn(2, 4, 3, dtype=F64)
    gaps = torch.tensor([[1, 2, 0, 3], [4, 1, 1, 2]])
    want = layer(x, dt=gaps.to(F64))[0]
    for dt in (gaps, gaps.to(torch.int32), gaps.float(), gaps.half()):  # exact in float64
        assert torch.equal(layer(x, dt=dt)[0], want)
    with pytest.raises(TypeError, match="real numbers"):
        layer(x, dt=gaps.bool())


def _build(cls, backend, **kw):
    options = dict(compartment_sizes=[1, 3, 4], compartment_attention=True, backend=backend, **kw)
    if cls is diru_fast.DIRU:
        return cls(3, 8, 2, num_layers=2, **options)
    if cls is diru_fast.DIRULayer:
        return cls(3, 8, 2, bidirectional=True, **options)
    return cls(3, 8, **options)


def _run(module, x):
    out = module(x if not isinstance(module, diru_fast.DIRUCell) else x[0])
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cls", [diru_fast.DIRUCell, diru_fast.DIRULayer, diru_fast.DIRU])
def test_meta_init_to_empty_then_load_rebuilds_the_compartment_index(cls, backend):
    source = randomize_(_build(cls, backend), seed=4)
    state, x = source.state_dict(), torch.randn(4, 2, 3)
    want = _run(source, x)
    for assign in (False, True):
        with torch.device("meta"):
            module = _build(cls, backend)
        if not assign:
            module.to_empty(device="cpu")
            for buffer in module.buffers():
                buffer.fill_(1 << 40)  # what uninitialised memory may hold
        module.load_state_dict(state, assign=assign)
        assert [b.device.type for b in module.buffers()] == ["cpu"] * len(list(module.buffers()))
        assert torch.equal(_run(module, x), want)


def test_a_misplaced_compartment_index_is_a_clear_error():
    cell = diru_fast.DIRUCell(3, 8, compartment_attention=True, backend="torch")
    index = diru_fast.functional.compartment_index(cell.compartment_sizes)
    x = torch.randn(2, 3)
    for bad, match in ((index.to("meta"), "compartment_of is on meta but the weights are on cpu"),
                       (index[:4], r"shape \(8,\)"), (index.int(), "int64")):
        with pytest.raises(ValueError, match=match) as info:
            diru_fast.functional.diru_cell(x, cell.cell_weights(), num_compartments=4, compartment_of=bad)
        assert "cuda" not in str(info.value) and "triton" not in str(info.value)


def _public_modules():
    """(what is allow-listed, the module, its inputs) for every public module class."""
    ref, x, h = diru_fast.reference, torch.randn(2, 5, 3), torch.zeros(2, 8)
    return {
        "DIRUCell": ([diru_fast.DIRUCell], lambda: diru_fast.DIRUCell(3, 8, compartment_attention=True,
                                                                      time_decay=True), (x[:, 0],)),
        "DIRULayer": ([diru_fast.DIRULayer], lambda: diru_fast.DIRULayer(3, 8, 2, bidirectional=True,
                                                                         compartment_sizes=[3, 5]), (x,)),
        "DIRU": ([diru_fast.DIRU, diru_fast.DIRULayer, torch.nn.Linear],
                 lambda: diru_fast.DIRU(3, 8, 2, compartment_attention=True, time_decay=True), (x,)),
        "LSTMModel": (diru_fast.SAFE_GLOBALS, lambda: diru_fast.LSTMModel(3, 8, 2), (x,)),
        "reference.DIRU": (diru_fast.SAFE_GLOBALS, lambda: ref.DIRU(3, 8, 2, compartment_attention=True,
                                                                    compartment_dropout=0.1), (x,)),
        "reference.DIRUCell": (diru_fast.SAFE_GLOBALS, lambda: ref.DIRUCell(3, 8, activation="relu", time_decay=True),
                               (x[:, 0], h)),
        "reference.DendriteCompartment": (diru_fast.SAFE_GLOBALS, lambda: ref.DendriteCompartment(3, 2, 8),
                                          (x[:, 0], h)),
    }


@pytest.mark.parametrize("name", list(_public_modules()))
def test_whole_module_pickles_load_with_weights_only(name, tmp_path):
    allowed, make, args = _public_modules()[name]
    model = make().eval()
    model.load_state_dict(model.state_dict())  # a load leaves nothing behind that would enter the pickle
    path = tmp_path / "model.pt"
    torch.save(model, path)
    with pytest.raises(Exception, match="Unsupported global"):
        torch.load(path)  # weights_only=True by default: the classes are not allowed yet
    with torch.serialization.safe_globals(allowed):
        loaded = torch.load(path)
    assert type(loaded) is type(model)
    state, again = model.state_dict(), loaded.state_dict()
    assert list(state) == list(again) and all(torch.equal(state[k], again[k]) for k in state)
    want, got = model(*args), loaded(*args)
    for a, b in zip(*((w,) if isinstance(w, Tensor) else w for w in (want, got))):
        assert torch.equal(a, b)
    if isinstance(model, diru_fast.DIRU):  # the methods that read and write the prototype's keys came back
        assert "cells.0.compartments.0.W_x.weight" in again
        prototype = diru_fast.reference.DIRU(3, 8, 2, compartment_attention=True, time_decay=True)
        loaded.load_state_dict(prototype.state_dict())
        torch.testing.assert_close(loaded(args[0]), prototype(args[0]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n, d", [(1, 51), (8, 10), (2, 1), (2, 2), (2, 3)])
@pytest.mark.parametrize("attention", [False, True], ids=["plain", "attention"])
def test_any_hidden_size_gives_the_prototypes_numbers(backend, n, d, attention):
    """Without num_compartments, min(4, d) near-equal compartments; each backend computes what the
    prototype's modules compute with those compartments (float64)."""
    sizes = diru_fast.reference.default_compartment_sizes(d)
    assert len(sizes) == min(4, d) and sum(sizes) == d and max(sizes) - min(sizes) <= 1
    model = randomize_(diru_fast.DIRU(n, d, 2, return_sequences=True, backend=backend, dtype=F64,
                                      compartment_attention=attention), seed=d)
    assert model.rnn.compartment_sizes == sizes and model.num_compartments == len(sizes)
    prototype = diru_fast.reference.DIRU(n, d, 2, return_sequences=True, compartment_attention=attention).to(F64)
    prototype.load_state_dict(model.state_dict())
    x = torch.randn(3, 4, n, dtype=F64)
    torch.testing.assert_close(model(x), prototype(x), rtol=1e-12, atol=1e-12)
    cell = randomize_(diru_fast.DIRUCell(n, d, backend=backend, dtype=F64, compartment_attention=attention), seed=d)
    ref_cell = diru_fast.reference.DIRUCell(n, d, compartment_attention=attention).to(F64)
    ref_cell.load_state_dict({k: w.detach() for k, w in to_prototype(cell.cell_weights(), sizes).items()})
    torch.testing.assert_close(cell(x[:, 0], x.new_zeros(3, d) + 0.1), ref_cell(x[:, 0], x.new_zeros(3, d) + 0.1),
                               rtol=1e-12, atol=1e-12)


def test_explicit_num_compartments_must_divide_and_proj_size_and_mode_are_there():
    with pytest.raises(ValueError, match="divisible by num_compartments"):
        DIRULayer(8, 10, num_compartments=4)
    with pytest.raises(ValueError, match="divisible by num_compartments"):
        diru_fast.reference.DIRUCell(8, 10, 4)
    layer = DIRULayer(8, 10, proj_size=0)
    gru = torch.nn.GRU(8, 10)
    assert (layer.proj_size, layer.mode) == (gru.proj_size, "DIRU")
    with pytest.raises(ValueError, match="proj_size"):
        DIRULayer(8, 10, proj_size=5)
    assert DIRULayer(8, 6, num_compartments=3).compartment_sizes == (2, 2, 2)


def test_numpy_numbers_are_accepted_where_python_numbers_are(tmp_path):
    np = pytest.importorskip("numpy")
    layer = DIRULayer(np.int64(3), np.int32(10), np.int64(2), dropout=np.float64(0.2), bidirectional=True,
                      compartment_dropout=np.float32(0.1), compartment_sizes=[np.int64(4), np.int16(6)])
    plain = DIRULayer(3, 10, 2, dropout=0.2, bidirectional=True, compartment_dropout=float(np.float32(0.1)),
                      compartment_sizes=[4, 6])
    for name in ("input_size", "hidden_size", "num_layers", "dropout", "compartment_dropout", "compartment_sizes"):
        assert getattr(layer, name) == getattr(plain, name)
        assert type(getattr(layer, name)) is type(getattr(plain, name))  # Python numbers: the pickle needs no numpy
    assert all(type(m) is int for m in layer.compartment_sizes)
    torch.save(layer, tmp_path / "layer.pt")
    with torch.serialization.safe_globals([DIRULayer]):
        torch.load(tmp_path / "layer.pt")
    model = diru_fast.DIRU(np.int64(3), np.int64(8), np.int64(2), num_compartments=np.int64(2),
                           num_layers=np.int64(2), compartment_dropout=np.float32(0.25))
    assert (model.num_compartments, model.output_size, model.rnn.compartment_dropout) == (2, 2, 0.25)
    cell = diru_fast.DIRUCell(np.int64(3), np.int64(8), compartment_sizes=np.array([3, 5]))
    assert cell.compartment_sizes == (3, 5)
    ref = diru_fast.reference.DIRU(np.int64(3), np.int64(8), np.int64(1), compartment_dropout=np.float32(0.1),
                                   num_layers=np.int64(1))
    assert ref.cells[0].dropout.p == pytest.approx(0.1) and type(ref.cells[0].dropout.p) is float
    with pytest.raises(TypeError, match="ints"):
        DIRULayer(3, 8, compartment_sizes=[4.0, 4.0])
    with pytest.raises(ValueError, match="compartment_dropout"):
        DIRULayer(3, 8, compartment_dropout=np.float32(1.5))
    with pytest.raises(TypeError):
        DIRULayer(3, np.float32(8))


def test_one_version_for_pip_and_the_package():
    """setup.py reads diru_fast.__version__ from the package's text (what `pip show` reports)."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, DIRU_FAST_NO_EXTENSIONS="1")  # metadata only: no extension is configured
    result = subprocess.run([sys.executable, "setup.py", "--version"], cwd=root, env=env, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip().splitlines()[-1] == diru_fast.__version__


def _guide_block(marker):
    """The Python block that follows ``marker`` in USAGE_GUIDE.md."""
    text = (Path(__file__).resolve().parents[1] / "USAGE_GUIDE.md").read_text(encoding="utf-8")
    after = text[text.index(marker):]
    start = after.index("```python\n") + len("```python\n")
    return after[start:after.index("```", start)]


def test_the_guides_adapter_for_libraries_that_subclass_gru():
    """The adapter of USAGE_GUIDE.md behaves as pytorch-forecasting's GRU: zero-length sequences keep
    the initial state and output zeros, the output is as long as the longest sequence."""
    namespace = {}
    exec(compile(_guide_block("<!-- adapter:"), "USAGE_GUIDE.md", "exec"), namespace)
    rnn = randomize_(namespace["ForecastingDIRU"](3, 10, 2, batch_first=True, backend="torch", dtype=F64), seed=5)
    plain = randomize_(DIRULayer(3, 10, 2, batch_first=True, backend="torch", dtype=F64), seed=5)
    x, hx = torch.randn(4, 6, 3, dtype=F64), torch.randn(2, 4, 10, dtype=F64)
    lengths = torch.tensor([5, 0, 3, 2])
    for h0 in (None, hx):
        out, h_n = rnn(x, h0, lengths=lengths, enforce_sorted=False)
        want_out, want_h = plain(x, h0, torch.tensor([5, 1, 3, 2]))
        assert out.shape == (4, 5, 10) and h_n.shape == (2, 4, 10)
        keep = [0, 2, 3]
        torch.testing.assert_close(out[keep], want_out[keep, :5])
        torch.testing.assert_close(h_n[:, keep], want_h[:, keep])
        assert torch.equal(out[1], torch.zeros(5, 10, dtype=F64))
        assert torch.equal(h_n[:, 1], torch.zeros(2, 10, dtype=F64) if h0 is None else hx[:, 1])
    out, h_n = rnn(x, hx, lengths=torch.zeros(4, dtype=torch.int64))
    assert torch.equal(out, torch.zeros(4, 6, 10, dtype=F64)) and torch.equal(h_n, hx)
    assert rnn.init_hidden_state(x).shape == (2, 4, 10)
    assert rnn.repeat_interleave(hx, 3).shape == (2, 12, 10)
    torch.testing.assert_close(rnn(x)[0], plain(x)[0])
