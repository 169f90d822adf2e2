"""The fast modules: the prototype's model and cell against the reference, fused parameters, GRU
conventions, torch.compile."""

import warnings

import pytest
import torch

import diru_fast
from diru_fast import DIRU, DIRUCell, DIRULayer, reference
from diru_fast.weights import CellWeights, to_prototype
from tests.helpers import cpu_backends, random_cell, reference_cell

BACKENDS = cpu_backends()


def _named_grads(model, loss):
    names, params = zip(*model.named_parameters())
    return dict(zip(names, torch.autograd.grad(loss, params)))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("layers", [1, 2])
def test_diru_matches_reference_model_and_grads(backend, layers):
    torch.manual_seed(layers)
    ref = reference.DIRU(1, 16, 2, num_compartments=4, num_layers=layers).double()
    fast = DIRU(1, 16, 2, num_compartments=4, num_layers=layers, backend=backend).double()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(3, 9, 1, dtype=torch.float64)
    y_ref, y_fast = ref(x), fast(x)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-12, atol=1e-12)
    g_ref = _named_grads(ref, y_ref.square().sum())
    g_fast = _named_grads(fast, y_fast.square().sum())
    for layer in range(layers):  # the fast gradients, read in the prototype's layout
        fused = CellWeights(*(g_fast["rnn." + name] for name in fast.rnn._names[layer][0]))
        for key, g in to_prototype(fused, [4] * 4).items():
            torch.testing.assert_close(g, g_ref[f"cells.{layer}.{key}"], rtol=1e-11, atol=1e-12, msg=lambda m: f"{key}: {m}")
    for key in ("fc_out.weight", "fc_out.bias"):
        torch.testing.assert_close(g_fast[key], g_ref[key], rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_diru_float32_close_to_float64_reference(backend):
    torch.manual_seed(0)
    ref = reference.DIRU(3, 48, 2, num_compartments=3).double()
    fast = DIRU(3, 48, 2, num_compartments=3, backend=backend)
    fast.load_state_dict({k: v.float() for k, v in ref.state_dict().items()})
    x = torch.randn(5, 20, 3, dtype=torch.float64)
    torch.testing.assert_close(fast(x.float()).double(), ref(x), rtol=0, atol=2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cell_matches_reference_cell(backend):
    cell = random_cell(5, 12, 3, seed=9, backend=backend)
    ref = reference_cell(cell, 3)
    x = torch.randn(4, 5, dtype=torch.float64)
    h = torch.randn(4, 12, dtype=torch.float64)
    want = ref(x, h)
    torch.testing.assert_close(cell(x, h), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cell(x[0], h[0]), want[0], rtol=1e-12, atol=1e-12)  # unbatched
    torch.testing.assert_close(cell(x), ref(x, torch.zeros_like(h)), rtol=1e-12, atol=1e-12)
    no_bias = random_cell(5, 12, 3, bias=False, seed=1, backend=backend)
    assert no_bias.bias_ih is None and no_bias.bias_int is None and no_bias.bias_out is None
    torch.testing.assert_close(no_bias(x, h), reference_cell(no_bias, 3)(x, h), rtol=1e-12, atol=1e-12)


def test_parameters_are_the_fused_tensors_the_kernels_read():
    """One tensor per role (an optimizer sees 7 per cell, 9 for the prototype's model with its head),
    and the forward hands those very tensors on: nothing is concatenated per call."""
    model = DIRU(1, 64, 1)
    assert len(list(model.parameters())) == 9
    names = [n for n, _ in model.rnn.named_parameters()]
    assert names == ["weight_ih_l0", "weight_hh_l0", "weight_int_l0", "weight_out_l0", "bias_ih_l0",
                     "bias_int_l0", "bias_out_l0"]
    w = model.rnn.cell_weights(0)
    assert w.w_ih is model.rnn.weight_ih_l0 and w.w_hh is model.rnn.weight_hh_l0 and w.b_out is model.rnn.bias_out_l0
    seen = []
    original = diru_fast.functional._run_layer

    def spy(x, weights, *args, **kwargs):
        seen.append(weights)
        return original(x, weights, *args, **kwargs)

    diru_fast.functional._run_layer = spy
    try:
        model(torch.randn(2, 3, 1))
    finally:
        diru_fast.functional._run_layer = original
    assert all(a is b for a, b in zip(seen[0], w))


def test_layer_shapes_follow_gru_conventions():
    T, B, n, d, L = 7, 3, 5, 8, 2
    for bi in (False, True):
        D = 2 if bi else 1
        gru = torch.nn.GRU(n, d, L, bidirectional=bi)
        layer = DIRULayer(n, d, L, bidirectional=bi, num_compartments=2)
        x = torch.randn(T, B, n)
        (o1, h1), (o2, h2) = gru(x), layer(x)
        assert o1.shape == o2.shape == (T, B, D * d) and h1.shape == h2.shape == (L * D, B, d)
        lb = DIRULayer(n, d, L, batch_first=True, bidirectional=bi, num_compartments=2)
        lb.load_state_dict(layer.state_dict())
        ob, hb = lb(x.transpose(0, 1))
        assert ob.shape == (B, T, D * d)
        torch.testing.assert_close(ob.transpose(0, 1), o2)
        torch.testing.assert_close(hb, h2)
        ou, hu = layer(x[:, 0])  # unbatched [T, n]
        assert ou.shape == (T, D * d) and hu.shape == (L * D, d)
        torch.testing.assert_close(ou, o2[:, 0], rtol=1e-5, atol=1e-6)
        ou2, _ = layer(x[:, 0], h2[:, 0])
        torch.testing.assert_close(ou2, layer(x[:, :1], h2[:, :1])[0][:, 0], rtol=1e-5, atol=1e-6)


def test_layer_hx_is_used_and_h_n_is_last_output():
    torch.manual_seed(0)
    layer = DIRULayer(3, 8, 2, num_compartments=2)
    x = torch.randn(5, 2, 3)
    h0 = torch.randn(2, 2, 8)
    out0, hn0 = layer(x)
    out1, hn1 = layer(x, h0)
    assert not torch.allclose(out0, out1)
    torch.testing.assert_close(out1[-1], hn1[-1])
    out2, hn2 = layer(x, hx=h0)
    assert torch.equal(out2, out1) and torch.equal(hn2, hn1)
    with pytest.warns(FutureWarning, match="h0=.* deprecated"):
        out3, _ = layer(x, h0=h0)
    assert torch.equal(out3, out1)
    with pytest.raises(ValueError, match="not both"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer(x, h0, h0=h0)


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(0)
    layer = DIRULayer(3, 8, 3, dropout=0.5, num_compartments=2)
    x = torch.randn(5, 4, 3)
    layer.eval()
    a, _ = layer(x)
    b, _ = layer(x)
    assert torch.equal(a, b)
    layer.train()
    c, _ = layer(x)
    assert not torch.allclose(a, c)
    with pytest.warns(UserWarning, match="num_layers=1"):
        single = DIRULayer(3, 8, 1, dropout=0.5, num_compartments=2).train()
    single.load_state_dict({k: v for k, v in layer.state_dict().items() if k.endswith("_l0")})
    s1, _ = single(x)
    s2, _ = single(x)
    assert torch.equal(s1, s2)  # no dropout after the last layer


def test_no_bias_layer_has_no_bias_parameters_and_runs():
    layer = DIRULayer(3, 8, 2, bias=False, num_compartments=2)
    assert not any("bias" in name for name, _ in layer.named_parameters())
    assert len(layer._flat_weights_names) == 8 and all(len(w) == 4 for w in layer.all_weights)
    out, h = layer(torch.randn(4, 2, 3))
    assert out.shape == (4, 2, 8) and torch.isfinite(out).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_diru_lengths_take_each_sequences_last_state(backend):
    torch.manual_seed(0)
    model = DIRU(2, 8, 1, num_compartments=2, backend=backend).double()
    x = torch.randn(3, 6, 2, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 4])
    y = model(x, lengths=lengths)
    for b, length in enumerate(lengths.tolist()):
        torch.testing.assert_close(y[b], model(x[b:b + 1, :length])[0], rtol=1e-12, atol=1e-12)


def test_factory_kwargs_type_checks_and_repr():
    layer = DIRULayer(3, 8, num_compartments=2, dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in layer.parameters())
    assert "num_compartments=2" in repr(layer)
    cell = DIRUCell(3, 8, False, dtype=torch.float64, num_compartments=2)  # nn.GRUCell's positional order
    assert not cell.bias and cell.weight_int.dtype == torch.float64 and "bias=False" in repr(cell)
    model = DIRU(1, 8, 1, dtype=torch.float64)
    assert model.fc_out.weight.dtype == torch.float64 and model.rnn.weight_hh_l0.dtype == torch.float64
    for bad in (dict(batch_first="False"), dict(bias=1), dict(bidirectional=None)):
        with pytest.raises(TypeError, match="must be a bool"):
            DIRULayer(3, 8, **bad)
    with pytest.raises(TypeError, match="must be a bool"):
        DIRUCell(3, 8, 4)  # the former (input, hidden, num_compartments) order reads 4 as bias
    model.backend = "torch"
    assert model.rnn.backend == "torch"
    with pytest.raises(ValueError, match="unknown backend"):
        model.backend = "fast"


@pytest.mark.no_poison
@pytest.mark.parametrize("backend", ["torch", "contract"] + [b for b in diru_fast.available_backends("cpu") if b == "cpu"])
def test_torch_compile_fullgraph_matches_eager(backend):
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = DIRU(2, 8, 1, num_compartments=2, num_layers=2, backend=backend)
    x = torch.randn(3, 5, 2)
    # inductor on the real kernel path; the plain-PyTorch paths only need the graph to be whole
    compiled = torch.compile(model, fullgraph=True, backend="inductor" if backend == "cpu" else "aot_eager")
    y_eager, y_comp = model(x), compiled(x)
    torch.testing.assert_close(y_comp, y_eager, rtol=1e-5, atol=1e-6)
    g_eager = torch.autograd.grad(y_eager.sum(), list(model.parameters()))
    g_comp = torch.autograd.grad(y_comp.sum(), list(model.parameters()))
    for a, b in zip(g_comp, g_eager):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.no_poison
@pytest.mark.parametrize("backend", ["torch"] + [b for b in diru_fast.available_backends("cpu") if b == "cpu"])
def test_torch_compile_fullgraph_with_lengths(backend):
    """Variable lengths compile without graph breaks; their range check runs inside the graph."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    layer = DIRULayer(2, 8, 2, bidirectional=True, batch_first=True, num_compartments=2, backend=backend)
    x = torch.randn(3, 5, 2)
    lengths = torch.tensor([5, 2, 4])
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    (o_e, h_e), (o_c, h_c) = layer(x, lengths=lengths), compiled(x, lengths=lengths)
    torch.testing.assert_close(o_c, o_e, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h_c, h_e, rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match=r"lengths must lie in \[1, T\]"):
        compiled(x, lengths=torch.tensor([5, 2, 9]))
