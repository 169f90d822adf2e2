"""``DIRULayer`` as an ``nn.GRU`` drop-in and ``DIRUCell`` as an ``nn.GRUCell`` drop-in.

The cases are adapted from PyTorch's own recurrent-module tests (``test/test_nn.py``: the RNN/GRU
cases, ``test/nn/test_packed_sequence.py``, ``test/nn/test_pruning.py`` and the GRU/GRUCell entries
of ``torch/testing/_internal/common_modules.py``), rewritten here. Every case runs on
``nn.GRU`` / ``nn.GRUCell`` as a control *and* on the DIRU module (parametrized over a factory,
ids ``gru`` / ``diru``; a few numeric cases also run DIRU on its pure-PyTorch backend,
``diru-torch``), so a failing case shows at once whether PyTorch itself behaves that way.

The math differs from a GRU's, so numbers are only ever compared module-against-itself (batched
vs unbatched, packed vs padded, batch-first vs time-major, strided vs contiguous, layer vs its
cell unrolled, one backend vs another, finite differences vs autograd), never DIRU against GRU.

Where DIRU differs from ``nn.GRU`` by design, the DIRU parametrization is a strict xfail naming
the difference (so the case still runs, and fails loudly if the behaviour ever changes).

Documented differences from nn.GRU
----------------------------------
1. The recurrence itself (dendritic compartments, somatic integration, output projection): DIRU's
   numbers are not a GRU's.
2. Parameters: per layer and direction DIRU has ``weight_ih_l{k}`` [3d, n], ``weight_hh_l{k}``
   [3d, d] and ``bias_ih_l{k}`` [3d] with nn.GRU's names and shapes, plus its own
   ``weight_int_l{k}``, ``weight_out_l{k}`` [d, d], ``bias_int_l{k}``, ``bias_out_l{k}`` [d]
   (7 tensors, not 4). There is no ``bias_hh_l{k}`` (``bias_hh`` for the cell): one bias per
   pre-activation. ``reset_parameters`` draws the prototype's initialisation, not
   U(-1/sqrt(d), 1/sqrt(d)).
3. ``mode`` is ``"DIRU"`` (nn.GRU: ``"GRU"``). ``proj_size`` is 0, and another value raises
   ValueError, as in nn.GRU (an LSTM-only option there).
4. Any ``hidden_size >= 1``: without ``num_compartments`` the cell has ``min(4, hidden_size)``
   near-equal compartments; an explicit ``num_compartments`` must divide ``hidden_size``.
   ``nn.GRUCell(10, 0)`` builds a zero-width cell; ``DIRUCell`` rejects ``hidden_size=0``
   (ValueError), as ``nn.GRU`` does for the layer.
5. Stricter constructor checks: ``DIRULayer`` also type-checks ``bidirectional`` (TypeError for
   ``bidirectional="False"``, which nn.GRU silently reads as True); ``DIRUCell`` type-checks
   ``bias`` and the sizes (``nn.GRUCell(3, 4, bias=1)`` is accepted, ``nn.GRUCell(-1, 4)`` fails
   only inside ``torch.empty``).
6. Error classes: bad inputs raise ``diru_fast.InvalidInputError``, a ValueError *and* a
   RuntimeError (a dtype problem: ``InvalidInputTypeError``, also a TypeError), so code catching
   either of nn.GRU's classes keeps working; the messages are DIRU's own.
7. Extras nn.GRU does not have: ``forward(..., lengths=...)``, ``num_compartments=``,
   ``backend=``, ``check_finite=``; ``flatten_parameters()`` is a no-op (the parameters already
   are the tensors the kernels read).
8. Low-precision CPU tensors (bfloat16, float16) keep a float32 state (the kernel contract's rule);
   where no C++ kernel can be built they run on the "torch" backend under ``backend="auto"``, which
   says so once with a warning (nn.GRU is silent).

Not differences (checked here, same as nn.GRU): an empty batch (B=0) returns empty outputs and
backpropagates; an empty sequence (T=0) raises a RuntimeError; ``hx`` of a PackedSequence is in
the caller's batch order and ``h_n`` comes back in it.
"""

from __future__ import annotations

import copy
import io
import itertools
import pickle
import warnings
from dataclasses import dataclass

import pytest
import torch
import torch.nn.utils.rnn as rnn_utils
from torch import nn
from torch.autograd import gradcheck, gradgradcheck
from torch.nn.utils import parametrize, prune

import diru_fast

# --------------------------------------------------------------------------------------------
# The factories: each case takes an ``impl`` and builds its layer / cell through it.


@dataclass(frozen=True)
class Impl:
    name: str
    backend: str | None = None  # None: torch.nn's own GRU

    @property
    def is_diru(self) -> bool:
        return self.backend is not None

    def _diru_kwargs(self, args, kwargs, hidden_pos=1):
        hidden = kwargs.get("hidden_size", args[hidden_pos] if len(args) > hidden_pos else None)
        # 4 compartments where the size allows (the default), else 1 (sizes PyTorch's tests use)
        ok = isinstance(hidden, int) and not isinstance(hidden, bool) and hidden > 0 and hidden % 4 == 0
        extra = {"backend": self.backend}
        if "num_compartments" not in kwargs:
            extra["num_compartments"] = 4 if ok else 1
        return extra

    def layer(self, *args, **kwargs) -> nn.Module:
        if not self.is_diru:
            return nn.GRU(*args, **kwargs)
        return diru_fast.DIRULayer(*args, **kwargs, **self._diru_kwargs(args, kwargs))

    def cell(self, *args, **kwargs) -> nn.Module:
        if not self.is_diru:
            return nn.GRUCell(*args, **kwargs)
        return diru_fast.DIRUCell(*args, **kwargs, **self._diru_kwargs(args, kwargs))


GRU = Impl("gru")
DIRU = Impl("diru", "auto")
DIRU_TORCH = Impl("diru-torch", "torch")


def impls(*, diru_differs: str | None = None, raises=None, torch_backend: bool = False,
          gru_differs: str | None = None):
    """The parametrization: [gru, diru] (+ diru-torch). ``diru_differs`` names a documented design
    difference: the DIRU cases become strict xfails (``raises``: the exception they must fail
    with). ``gru_differs`` does the same for the control, where DIRU is stricter than PyTorch."""
    def marks(reason):
        if reason is None:
            return ()
        return (pytest.mark.xfail(strict=True, raises=raises, reason=reason),)

    params = [pytest.param(GRU, id="gru", marks=marks(gru_differs and f"nn.GRU: {gru_differs}")),
              pytest.param(DIRU, id="diru", marks=marks(diru_differs and f"documented difference: {diru_differs}"))]
    if torch_backend:
        params.append(pytest.param(DIRU_TORCH, id="diru-torch",
                                   marks=marks(diru_differs and f"documented difference: {diru_differs}")))
    return params


BOTH = impls()
NUMERIC = impls(torch_backend=True)


# --------------------------------------------------------------------------------------------
# Helpers


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny shapes on one thread: on a shared 2-core machine two OpenMP threads splitting a batch
    of 2 make each call ~50x slower (as tests/conftest.py does for the training suites)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def copy_params_(dst: nn.Module, src: nn.Module, rename=lambda name: name) -> None:
    """dst's parameters := src's (looked up by ``rename(dst_name)``)."""
    source = dict(src.named_parameters())
    with torch.no_grad():
        for name, p in dst.named_parameters():
            p.copy_(source[rename(name)])


def make_noncontig(t: torch.Tensor) -> torch.Tensor:
    """The same values, laid out with a stride of 2 in the last dimension."""
    nd = t.dim()
    out = torch.stack([torch.zeros_like(t), t], nd).select(nd, 1)
    assert not out.is_contiguous() or t.numel() <= 1
    return out


def n_flat_parameters(rnn) -> int:
    return sum(isinstance(p, nn.Parameter) for p in rnn._flat_weights)


def outputs_differ(a, b) -> bool:
    return not torch.allclose(a, b)


# ============================================================================================
# Cell: nn.GRUCell conventions (test_RNN_cell*, module_inputs/error_inputs of GRUCell)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("impl", BOTH)
def test_cell_smoke_steps_and_backward(impl, bias):
    # test_RNN_cell: six steps from a given state, then backward
    torch.manual_seed(0)
    cell = impl.cell(10, 20, bias=bias)
    x = torch.randn(3, 10)
    hx = torch.randn(3, 20)
    for _ in range(6):
        hx = cell(x, hx)
    assert hx.shape == (3, 20)
    hx.sum().backward()
    assert all(p.grad is not None for p in cell.parameters())


@pytest.mark.parametrize("impl", BOTH)
def test_cell_bias_false_positional(impl):
    cell = impl.cell(10, 20, False)  # third positional argument is bias, as in nn.GRUCell
    assert cell.bias is False
    assert cell.bias_ih is None
    assert not any(name.startswith("bias") for name, _ in cell.named_parameters())
    assert cell(torch.randn(2, 10)).shape == (2, 20)


@pytest.mark.parametrize("impl", BOTH)
def test_cell_parameter_shapes(impl):
    cell = impl.cell(10, 20)
    assert cell.input_size == 10 and cell.hidden_size == 20
    assert cell.weight_ih.shape == (60, 10)
    assert cell.weight_hh.shape == (60, 20)
    assert cell.bias_ih.shape == (60,)


@pytest.mark.parametrize("impl", impls(diru_differs="no bias_hh: one bias per pre-activation", raises=AttributeError))
def test_cell_has_bias_hh(impl):
    assert impl.cell(10, 20).bias_hh.shape == (60,)


@pytest.mark.parametrize("impl", BOTH)
def test_cell_no_broadcasting(impl):
    # test_RNN_cell_no_broadcasting + module_error_inputs_torch_nn_RNN_GRU_Cell
    cell = impl.cell(10, 20)
    x = torch.randn(3, 10)
    good_hx = torch.randn(3, 20)
    with pytest.raises(RuntimeError):
        cell(x, torch.randn(1, 20))  # hx batch 1 is not broadcast to 3
    with pytest.raises(RuntimeError):
        cell(x, torch.randn(5, 20))  # batch 3 vs 5
    with pytest.raises(RuntimeError):
        cell(x, torch.randn(3, 1))  # hidden size 1 is not broadcast to 20
    with pytest.raises(RuntimeError):
        cell(x, torch.randn(3, 21))
    with pytest.raises(RuntimeError):
        cell(torch.randn(3, 1), good_hx)  # input size 1 is not broadcast to 10
    with pytest.raises(RuntimeError):
        cell(torch.randn(3, 11), good_hx)
    with pytest.raises(RuntimeError):
        cell(torch.randn(10), torch.randn(1, 20))  # unbatched input, batched hx
    with pytest.raises(ValueError):
        cell(x, torch.randn(3, 1, 1, 20))  # "Expected hidden to be 1D or 2D"
    with pytest.raises(ValueError):
        cell(torch.randn(3, 1, 10), good_hx)  # "Expected input to be 1D or 2D"


@pytest.mark.parametrize("impl", BOTH)
def test_cell_dtype_mismatch_raises(impl):
    cell = impl.cell(10, 20)
    with pytest.raises(RuntimeError):
        cell(torch.randn(3, 10, dtype=torch.float64), torch.randn(3, 20))
    with pytest.raises(RuntimeError):
        cell(torch.randn(3, 10), torch.randn(3, 20, dtype=torch.float64))


@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("impl", BOTH)
def test_cell_unbatched_matches_batch_of_one(impl, bias, with_hx):
    # module_inputs_torch_nn_RNN_GRU_Cell: (5,) input, (10,) state, no_batch_dim_reference_fn
    torch.manual_seed(1)
    cell = impl.cell(5, 8, bias=bias)  # 8: divisible by DIRU's 4 compartments
    x = torch.randn(5)
    hx = torch.randn(8) if with_hx else None
    out = cell(x, hx)
    ref = cell(x.unsqueeze(0), None if hx is None else hx.unsqueeze(0))
    assert out.shape == (8,)
    torch.testing.assert_close(out, ref.squeeze(0))


@pytest.mark.parametrize("impl", BOTH)
def test_cell_hx_none_is_zeros_and_hx_keyword(impl):
    torch.manual_seed(2)
    cell = impl.cell(10, 20)
    x = torch.randn(3, 10)
    h = torch.randn(3, 20)
    torch.testing.assert_close(cell(x), cell(x, torch.zeros(3, 20)))
    torch.testing.assert_close(cell(x, hx=h), cell(x, h))
    torch.testing.assert_close(cell(input=x, hx=h), cell(x, h))
    torch.testing.assert_close(cell(x[0]), cell(x[0], torch.zeros(20)))


@pytest.mark.parametrize("impl", impls(diru_differs="hidden_size must be positive",
                                       raises=ValueError))
def test_cell_zero_hidden_size(impl):
    # test_RNN_cell_forward_zero_hidden_size
    cell = impl.cell(10, 0)
    assert cell(torch.randn(3, 10), torch.randn(3, 0)).shape == (3, 0)


@pytest.mark.parametrize("impl", BOTH)
def test_cell_empty_batch(impl):
    cell = impl.cell(10, 20)
    x = torch.randn(0, 10, requires_grad=True)
    h = cell(x)
    assert h.shape == (0, 20)
    h.sum().backward()
    assert x.grad.shape == (0, 10)


@pytest.mark.parametrize("impl", BOTH)
def test_cell_factory_kwargs_and_conversions(impl):
    cell = impl.cell(4, 8, device="cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 and p.device.type == "cpu" for p in cell.parameters())
    assert cell(torch.randn(2, 4, dtype=torch.float64)).dtype == torch.float64
    cell.float()
    assert all(p.dtype == torch.float32 for p in cell.parameters())
    assert cell(torch.randn(2, 4)).dtype == torch.float32
    meta = impl.cell(4, 8, device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters())


@pytest.mark.parametrize("impl", BOTH)
def test_cell_state_dict_copy_and_pickle(impl):
    torch.manual_seed(3)
    cell = impl.cell(4, 8)
    x, h = torch.randn(2, 4), torch.randn(2, 8)
    want = cell(x, h)
    fresh = impl.cell(4, 8)
    fresh.load_state_dict(cell.state_dict())
    assert list(fresh.state_dict()) == list(cell.state_dict())
    for other in (fresh, copy.deepcopy(cell), pickle.loads(pickle.dumps(cell))):
        torch.testing.assert_close(other(x, h), want, rtol=0, atol=0)


@pytest.mark.parametrize("impl", NUMERIC)
def test_cell_gradcheck_and_gradgradcheck(impl):
    torch.manual_seed(4)
    cell = impl.cell(3, 4, dtype=torch.float64)
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    names, params = zip(*cell.named_parameters())

    def f(x, h, *ps):
        return torch.func.functional_call(cell, dict(zip(names, ps)), (x, h))

    inputs = (x, h, *(p.detach().clone().requires_grad_() for p in params))
    assert gradcheck(f, inputs, check_batched_grad=False)
    assert gradgradcheck(f, inputs, check_batched_grad=False)


# ============================================================================================
# Layer: constructor (module_error_inputs_torch_nn_RNN_GRU, test_invalid_dropout_p,
# test_projections_errors_on_gru_and_rnn, dropout warning)

_CTOR_ERRORS = [
    ((10, 0, 1), {}, ValueError),  # hidden_size must be greater than zero
    ((10, 10, 0), {}, ValueError),  # num_layers must be greater than zero
    ((3, 5), {"bias": 0}, TypeError),
    ((3, 5), {"bias": 1}, TypeError),
    ((3, 5), {"bias": "True"}, TypeError),
    ((3, 5), {"batch_first": 0}, TypeError),
    ((3, 5), {"batch_first": 1}, TypeError),
    ((3, 5), {"batch_first": "False"}, TypeError),
    ((3.0, 5), {}, TypeError),
    (("10", 5), {}, TypeError),
    ((0, 5), {}, ValueError),
    ((-1, 5), {}, ValueError),
    ((3, 5.0), {}, TypeError),
    ((3, 5), {"dropout": -0.1}, ValueError),
    ((3, 5), {"dropout": 1.1}, ValueError),
    ((3, 5), {"dropout": True}, ValueError),
    ((3, 5), {"dropout": "0.5"}, ValueError),
]


@pytest.mark.parametrize("args, kwargs, error", _CTOR_ERRORS,
                         ids=[f"{a}-{k}" for a, k, _ in _CTOR_ERRORS])
@pytest.mark.parametrize("impl", BOTH)
def test_layer_constructor_errors(impl, args, kwargs, error):
    with pytest.raises(error):
        impl.layer(*args, **kwargs)


@pytest.mark.parametrize("impl", impls(gru_differs="does not type-check bidirectional (reads 'False' as True)",
                                       raises=pytest.fail.Exception))
def test_layer_bidirectional_must_be_bool(impl):
    with pytest.raises(TypeError):
        impl.layer(3, 8, bidirectional="False")


@pytest.mark.parametrize("impl", BOTH)
def test_layer_proj_size_rejected(impl):
    # test_projections_errors_on_gru_and_rnn
    with pytest.raises(ValueError):
        impl.layer(30, 20, 2, proj_size=10)


@pytest.mark.parametrize("impl", BOTH)
def test_layer_mode_and_proj_size_attributes(impl):
    # code written for nn.RNNBase reads them (e.g. to pick the state's form: a tuple only for LSTM)
    layer = impl.layer(5, 10)
    assert layer.proj_size == 0
    assert layer.mode == ("DIRU" if impl.is_diru else "GRU")


@pytest.mark.parametrize("impl", BOTH)
@pytest.mark.parametrize("hidden", [1, 3, 5, 10, 51])
def test_layer_and_cell_any_hidden_size(impl, hidden):
    # the examples and libraries written for nn.GRU use sizes such as 51, 5, 10
    out, h_n = impl.layer(2, hidden, 2)(torch.randn(3, 2, 2))
    assert out.shape == (3, 2, hidden) and h_n.shape == (2, 2, hidden)
    assert impl.cell(2, hidden)(torch.randn(2, 2)).shape == (2, hidden)


@pytest.mark.parametrize("impl", BOTH)
def test_layer_dropout_with_one_layer_warns(impl):
    with pytest.warns(UserWarning, match="dropout"):
        impl.layer(8, 8, num_layers=1, dropout=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        impl.layer(8, 8, num_layers=2, dropout=0.5)


@pytest.mark.parametrize("impl", BOTH)
def test_layer_factory_kwargs_and_conversions(impl):
    rnn = impl.layer(4, 8, 2, device="cpu", dtype=torch.float64)
    assert all(p.dtype == torch.float64 and p.device.type == "cpu" for p in rnn.parameters())
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    out, h = rnn(x)
    assert out.dtype == h.dtype == torch.float64
    rnn.float()
    assert all(p.dtype == torch.float32 for p in rnn.parameters())
    assert rnn(x.float())[0].dtype == torch.float32
    rnn.to(torch.float64)
    assert rnn(x)[0].dtype == torch.float64
    rnn.double()
    assert all(p.dtype == torch.float64 for p in rnn._flat_weights)


@pytest.mark.parametrize("impl", BOTH)
def test_layer_meta_device_then_to_empty(impl):
    rnn = impl.layer(4, 8, 2, bidirectional=True, device="meta")
    assert all(p.device.type == "meta" for p in rnn.parameters())
    out, h = rnn(torch.randn(3, 2, 4, device="meta"))
    assert out.shape == (3, 2, 16) and h.shape == (4, 2, 8)
    rnn = rnn.to_empty(device="cpu")
    rnn.reset_parameters()
    out, _ = rnn(torch.randn(3, 2, 4))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("impl", BOTH)
def test_layer_reset_parameters_follows_the_seed(impl):
    torch.manual_seed(5)
    a = impl.layer(4, 8, 2)
    torch.manual_seed(5)
    b = impl.layer(4, 8, 2)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    before = [p.detach().clone() for p in a.parameters()]
    a.reset_parameters()
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), before))


# ============================================================================================
# Layer: parameters (names, shapes, all_weights, _flat_weights, flatten_parameters)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("impl", BOTH)
def test_layer_gru_parameter_names_and_shapes(impl, bias):
    d, n = 8, 5
    rnn = impl.layer(n, d, num_layers=2, bias=bias, bidirectional=True)
    for layer, suffix in itertools.product(range(2), ("", "_reverse")):
        n_in = n if layer == 0 else 2 * d
        assert getattr(rnn, f"weight_ih_l{layer}{suffix}").shape == (3 * d, n_in)
        assert getattr(rnn, f"weight_hh_l{layer}{suffix}").shape == (3 * d, d)
        if bias:
            assert getattr(rnn, f"bias_ih_l{layer}{suffix}").shape == (3 * d,)
        else:
            assert not hasattr(rnn, f"bias_ih_l{layer}{suffix}")
    assert rnn.weight_ih_l0.requires_grad


@pytest.mark.parametrize("impl", impls(diru_differs="no bias_hh_l{k}: one bias per pre-activation",
                                       raises=AttributeError))
def test_layer_has_bias_hh(impl):
    assert impl.layer(5, 8).bias_hh_l0.shape == (24,)


@pytest.mark.parametrize("impl", BOTH)
def test_layer_flat_weights_and_all_weights(impl):
    rnn = impl.layer(5, 8, num_layers=2, bidirectional=True)
    names = [name for name, _ in rnn.named_parameters()]
    assert rnn._flat_weights_names == names
    assert all(w is p for w, p in zip(rnn._flat_weights, rnn.parameters()))
    assert len(rnn.all_weights) == 4  # layers * directions
    flat = [w for per_cell in rnn.all_weights for w in per_cell]
    assert all(w is p for w, p in zip(flat, rnn.parameters())) and len(flat) == len(names)
    assert all(isinstance(w, nn.Parameter) for w in flat)


@pytest.mark.parametrize("impl", BOTH)
def test_layer_flatten_parameters_keeps_results(impl):
    torch.manual_seed(6)
    rnn = impl.layer(5, 8, num_layers=2)
    x = torch.randn(4, 3, 5)
    want = rnn(x)
    rnn.flatten_parameters()
    got = rnn(x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


# ============================================================================================
# Layer: forward argument checks (test_rnn_args_check, test_cudnn_forward_exception,
# module_error_inputs_torch_nn_RNN_GRU)

_ARGS_CHECK = {  # test_rnn_args_check: seq 6, batch 4, input 3, hidden 5, 2 layers; 7 is "bad"
    "input_batch": ((6, 7, 3), (2, 4, 5)),
    "hidden_batch": ((6, 4, 3), (2, 7, 5)),
    "input_size": ((6, 4, 7), (2, 4, 5)),
    "hidden_size": ((6, 4, 3), (2, 4, 7)),
    "hidden_layers": ((6, 4, 3), (7, 4, 5)),
}


@pytest.mark.parametrize("case", sorted(_ARGS_CHECK))
@pytest.mark.parametrize("impl", BOTH)
def test_rnn_args_check(impl, case):
    input_shape, hidden_shape = _ARGS_CHECK[case]
    rnn = impl.layer(3, 5, 2)
    x, h = torch.randn(input_shape), torch.randn(hidden_shape)
    with pytest.raises(RuntimeError):
        rnn(x, h)


@pytest.mark.parametrize("impl", BOTH)
def test_forward_exception_batch_first(impl):
    # test_cudnn_forward_exception (nn.GRU(10, 20, batch_first=True)), on CPU
    rnn = impl.layer(10, 20, batch_first=True)
    with pytest.raises(RuntimeError):
        rnn(torch.randn(2, 3, 10), torch.zeros(1, 2, 19))
    with pytest.raises(RuntimeError):
        rnn(torch.randn(2, 3, 3))


@pytest.mark.parametrize("impl", BOTH)
def test_forward_rank_and_hx_rank_errors(impl):
    rnn = impl.layer(8, 8, num_layers=2)
    with pytest.raises(ValueError):
        rnn(torch.randn(6, 4, 8, 1))  # "Expected input to be 2D or 3D"
    with pytest.raises(ValueError):
        rnn(torch.randn(8))
    with pytest.raises(RuntimeError):
        rnn(torch.randn(6, 4, 8), torch.randn(2, 8))  # batched input, 2-D hx
    with pytest.raises(RuntimeError):
        rnn(torch.randn(6, 8), torch.randn(2, 1, 8))  # unbatched input, 3-D hx


@pytest.mark.parametrize("impl", BOTH)
def test_forward_dtype_mismatch(impl):
    rnn = impl.layer(3, 8)
    with pytest.raises(ValueError):  # "RNN input dtype ... does not match weight dtype"
        rnn(torch.randn(2, 4, 3, dtype=torch.float64))
    with pytest.raises(RuntimeError):
        rnn(torch.randn(2, 4, 3), torch.randn(1, 4, 8, dtype=torch.float64))


@pytest.mark.parametrize("impl", BOTH)
def test_forward_device_mismatch_on_cpu(impl):
    # test_rnn_check_device without a second GPU: parameters on cpu, input / hx on "meta"
    rnn = impl.layer(3, 8)
    with pytest.raises(RuntimeError):
        rnn(torch.randn(6, 4, 3, device="meta"))
    with pytest.raises(RuntimeError):
        rnn(torch.randn(6, 4, 3), torch.randn(1, 4, 8, device="meta"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("impl", BOTH)
def test_rnn_check_device_cuda(impl):
    rnn = impl.layer(3, 8, 2)
    rnn_cuda = copy.deepcopy(rnn).cuda()
    x, h = torch.randn(6, 4, 3), torch.randn(2, 4, 8)
    with pytest.raises(RuntimeError):
        rnn(x.cuda())
    with pytest.raises(RuntimeError):
        rnn_cuda(x)
    with pytest.raises(RuntimeError):
        rnn(x, h.cuda())
    with pytest.raises(RuntimeError):
        rnn_cuda(x.cuda(), h)


# ============================================================================================
# Layer: shapes and states (test_rnn_initial_hidden_state, module_inputs_torch_nn_RNN_GRU)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("impl", BOTH)
def test_rnn_initial_hidden_state(impl, bidirectional):
    torch.manual_seed(7)
    rnn = impl.layer(12, 8, 2, bidirectional=bidirectional)
    x = torch.randn(5, 6, 12)
    hidden = torch.zeros(2 * (2 if bidirectional else 1), 6, 8)
    out1, h1 = rnn(x, hidden)
    out2, h2 = rnn(x)
    torch.testing.assert_close(out1, out2)
    torch.testing.assert_close(h1, h2)
    for out3, h3 in (rnn(x, hx=hidden), rnn(input=x, hx=hidden)):  # by keyword
        torch.testing.assert_close(out3, out1, rtol=0, atol=0)
        torch.testing.assert_close(h3, h1, rtol=0, atol=0)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("impl", BOTH)
def test_output_shapes(impl, batch_first, bidirectional):
    D = 2 if bidirectional else 1
    rnn = impl.layer(5, 8, 3, batch_first=batch_first, bidirectional=bidirectional)
    x = torch.randn((2, 7, 5) if batch_first else (7, 2, 5))
    out, h = rnn(x)
    assert out.shape == ((2, 7, D * 8) if batch_first else (7, 2, D * 8))
    assert h.shape == (3 * D, 2, 8)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("impl", BOTH)
def test_h_n_is_the_last_output(impl, bidirectional):
    torch.manual_seed(8)
    rnn = impl.layer(5, 8, 2, bidirectional=bidirectional)
    out, h = rnn(torch.randn(6, 3, 5), torch.randn(4 if bidirectional else 2, 3, 8))
    torch.testing.assert_close(h[-1 - bidirectional], out[-1, :, :8], rtol=0, atol=0)
    if bidirectional:
        torch.testing.assert_close(h[-1], out[0, :, 8:], rtol=0, atol=0)  # the reverse direction ends at t=0


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("impl", BOTH)
def test_batch_first_matches_time_major(impl, bidirectional):
    torch.manual_seed(9)
    tm = impl.layer(5, 8, 2, bidirectional=bidirectional)
    bf = impl.layer(5, 8, 2, bidirectional=bidirectional, batch_first=True)
    copy_params_(bf, tm)
    x = torch.randn(6, 3, 5)
    h0 = torch.randn(4 if bidirectional else 2, 3, 8)
    out_tm, h_tm = tm(x, h0)
    out_bf, h_bf = bf(x.transpose(0, 1), h0)  # hx stays [L*D, B, d] under batch_first
    torch.testing.assert_close(out_bf.transpose(0, 1), out_tm)
    torch.testing.assert_close(h_bf, h_tm)


@pytest.mark.parametrize("hidden, with_hx", [(4, False), (3, True)], ids=["d4-no-hx", "d3-hx"])
@pytest.mark.parametrize("bias, batch_first, bidirectional", list(itertools.product([False, True], repeat=3)))
@pytest.mark.parametrize("impl", BOTH)
def test_unbatched_matches_batch_of_one(impl, bias, batch_first, bidirectional, hidden, with_hx):
    # module_inputs_torch_nn_RNN_GRU with no_batch_dim_reference_rnn_gru: input (3, 2), 2 layers,
    # hx (2 * directions, hidden)
    torch.manual_seed(10)
    rnn = impl.layer(input_size=2, hidden_size=hidden, num_layers=2, batch_first=batch_first, bias=bias,
                     bidirectional=bidirectional)
    D = 2 if bidirectional else 1
    x = torch.randn(3, 2)
    hx = torch.randn(2 * D, hidden) if with_hx else None
    out, h = rnn(x, hx)
    assert out.shape == (3, D * hidden) and h.shape == (2 * D, hidden)
    ref_out, ref_h = rnn(x.unsqueeze(0 if batch_first else 1), None if hx is None else hx.unsqueeze(1))
    torch.testing.assert_close(out, ref_out.squeeze(0 if batch_first else 1))
    torch.testing.assert_close(h, ref_h.squeeze(1))


# ============================================================================================
# Layer: empty inputs (test_RNN_input_size_zero, test_error_RNN_seq_len_zero)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("impl", BOTH)
def test_rnn_empty_batch(impl, bidirectional):
    rnn = impl.layer(input_size=3, hidden_size=4, num_layers=2, bidirectional=bidirectional)
    D = 2 if bidirectional else 1
    x = torch.zeros(5, 0, 3, requires_grad=True)
    out, h = rnn(x)
    assert out.shape == (5, 0, 4 * D) and h.shape == (2 * D, 0, 4)
    (out.sum() + h.sum()).backward()  # no hard error
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("impl", BOTH)
def test_rnn_empty_sequence_raises(impl, bidirectional):
    # nn.GRU raises RuntimeError("Expected sequence length to be larger than 0 in RNN")
    rnn = impl.layer(5, 8, bidirectional=bidirectional)
    with pytest.raises(RuntimeError):
        rnn(torch.ones(0, 10, 5))
    with pytest.raises(RuntimeError):
        rnn(torch.ones(0, 5))  # unbatched


# ============================================================================================
# Layer: packed sequences (test_variable_sequence, test/nn/test_packed_sequence.py)


def _per_sequence(rnn, seqs, hx):
    """Run each sequence alone (unbatched) with its own column of hx."""
    return [rnn(s, None if hx is None else hx[:, i]) for i, s in enumerate(seqs)]


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("impl", NUMERIC)
def test_variable_sequence(impl, bidirectional):
    # test_variable_sequence: a packed batch (sorted lengths) against each sequence alone,
    # outputs, final states and gradients
    torch.manual_seed(11)
    lengths = [5, 3, 3, 1]
    D = 2 if bidirectional else 1
    rnn = impl.layer(3, 4, 2, bidirectional=bidirectional, dtype=torch.float64)
    padded = torch.randn(max(lengths), len(lengths), 3, dtype=torch.float64, requires_grad=True)
    hx = torch.randn(2 * D, len(lengths), 4, dtype=torch.float64)
    packed = rnn_utils.pack_padded_sequence(padded, lengths)
    out_packed, h_packed = rnn(packed, hx)
    out, out_lengths = rnn_utils.pad_packed_sequence(out_packed)
    assert out_lengths.tolist() == lengths
    (out.square().sum() + h_packed.sum()).backward()
    grad_x = padded.grad.clone()
    grads = [p.grad.clone() for p in rnn.parameters()]

    rnn.zero_grad()
    x_alone = padded.detach().clone().requires_grad_()
    total = 0
    for i, length in enumerate(lengths):
        o, h = rnn(x_alone[:length, i], hx[:, i])
        torch.testing.assert_close(out[:length, i], o)
        torch.testing.assert_close(h_packed[:, i], h)
        assert torch.all(out[length:, i] == 0)
        total = total + o.square().sum() + h.sum()
    total.backward()
    torch.testing.assert_close(x_alone.grad, grad_x)
    for p, g in zip(rnn.parameters(), grads):
        torch.testing.assert_close(p.grad, g)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("impl", BOTH)
def test_packed_unsorted_hx_in_caller_order(impl, bidirectional):
    torch.manual_seed(12)
    D = 2 if bidirectional else 1
    rnn = impl.layer(8, 8, 2, bidirectional=bidirectional)
    lengths = [3, 7, 1, 5]
    seqs = [torch.randn(n, 8) for n in lengths]
    hx = torch.randn(2 * D, 4, 8, requires_grad=True)  # in the caller's order of seqs
    packed = rnn_utils.pack_sequence(seqs, enforce_sorted=False)
    out_packed, h = rnn(packed, hx)
    weights = torch.arange(1.0, 5.0).view(1, 4, 1)  # a different weight per sequence
    grad_hx, = torch.autograd.grad((h * weights).sum(), hx, retain_graph=True)
    assert isinstance(out_packed, rnn_utils.PackedSequence)
    assert torch.equal(out_packed.batch_sizes, packed.batch_sizes)
    assert torch.equal(out_packed.sorted_indices, packed.sorted_indices)
    assert torch.equal(out_packed.unsorted_indices, packed.unsorted_indices)
    assert h.shape == (2 * D, 4, 8)
    out, out_lengths = rnn_utils.pad_packed_sequence(out_packed)
    assert out_lengths.tolist() == lengths
    for i, (o, hi) in enumerate(_per_sequence(rnn, seqs, hx)):
        torch.testing.assert_close(out[:lengths[i], i], o, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(h[:, i], hi, rtol=1e-5, atol=1e-6)
        g, = torch.autograd.grad(hi.sum() * (i + 1), hx)  # the gradient reaches hx[:, i] only
        torch.testing.assert_close(grad_hx[:, i], g[:, i], rtol=1e-5, atol=1e-6)
    for i, o in enumerate(rnn_utils.unpack_sequence(out_packed)):
        torch.testing.assert_close(o, out[:lengths[i], i], rtol=0, atol=0)


@pytest.mark.parametrize("impl", BOTH)
def test_packed_enforce_sorted(impl):
    torch.manual_seed(13)
    rnn = impl.layer(8, 8, 2, bidirectional=True)
    lengths = [7, 5, 3, 1]
    seqs = [torch.randn(n, 8) for n in lengths]
    hx = torch.randn(4, 4, 8)
    sorted_packed = rnn_utils.pack_sequence(seqs, enforce_sorted=True)
    out_sorted, h_sorted = rnn(sorted_packed, hx)
    assert out_sorted.sorted_indices is None and out_sorted.unsorted_indices is None
    unsorted_packed = rnn_utils.pack_sequence(seqs, enforce_sorted=False)  # already sorted: identity order
    out_unsorted, h_unsorted = rnn(unsorted_packed, hx)
    torch.testing.assert_close(out_unsorted.data, out_sorted.data)
    torch.testing.assert_close(h_unsorted, h_sorted)
    with pytest.raises(RuntimeError):
        rnn_utils.pack_sequence(seqs[::-1], enforce_sorted=True)  # test_wrong_order
    with pytest.raises(RuntimeError):
        rnn(sorted_packed, torch.randn(4, 3, 8))  # hx batch 3 for 4 sequences


@pytest.mark.parametrize("impl", BOTH)
def test_packed_batch_first_and_lengths_as_tensor(impl):
    # batch_first modules take a PackedSequence as is; pack_padded_sequence with list or tensor
    # lengths gives the same; pad_packed_sequence(total_length) pads the output further
    torch.manual_seed(14)
    tm = impl.layer(4, 8)
    bf = impl.layer(4, 8, batch_first=True)
    copy_params_(bf, tm)
    lengths = [2, 6, 4]
    padded_bf = torch.randn(3, 6, 4)
    a = rnn_utils.pack_padded_sequence(padded_bf, lengths, batch_first=True, enforce_sorted=False)
    b = rnn_utils.pack_padded_sequence(padded_bf, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
    out_bf, h_bf = bf(a)
    out_tm, h_tm = tm(b)
    torch.testing.assert_close(out_bf.data, out_tm.data)
    torch.testing.assert_close(h_bf, h_tm)
    unpacked, out_lengths = rnn_utils.pad_packed_sequence(out_bf, batch_first=True, total_length=9)
    assert unpacked.shape == (3, 9, 8) and out_lengths.tolist() == lengths
    assert torch.all(unpacked[0, 2:] == 0)


@pytest.mark.parametrize("impl", BOTH)
def test_packed_sequence_type_cast(impl):
    # test_type_casts: a packed input cast with .double() runs on a .double() module
    torch.manual_seed(15)
    rnn = impl.layer(4, 8).double()
    packed = rnn_utils.pack_sequence([torch.randn(5, 4), torch.randn(2, 4)]).double()
    out, h = rnn(packed)
    assert out.data.dtype == h.dtype == torch.float64


# ============================================================================================
# Layer: numerics against the module itself


@pytest.mark.parametrize("impl", NUMERIC)
def test_noncontiguous_matches_contiguous(impl):
    # TestModule.test_non_contiguous_tensors / the "contig" axis of test_RNN_cpu_vs_cudnn
    torch.manual_seed(16)
    rnn = impl.layer(5, 8, 2, bidirectional=True, batch_first=True)
    x = torch.randn(3, 6, 5)
    h = torch.randn(4, 3, 8)
    go = torch.randn(3, 6, 16)
    gh = torch.randn(4, 3, 8)

    def run(x, h, go, gh):
        x = x.detach().requires_grad_()
        h = h.detach().requires_grad_()
        rnn.zero_grad()
        out, hn = rnn(x, h)
        torch.autograd.backward([out, hn], [go, gh])
        return out, hn, x.grad, h.grad, [p.grad.clone() for p in rnn.parameters()]

    want = run(x, h, go, gh)
    xs = make_noncontig(x)
    got = run(xs, make_noncontig(h), make_noncontig(go), make_noncontig(gh))
    # a transposed (time-major view of a batch-first) input as well
    got_t = run(x.transpose(0, 1).contiguous().transpose(0, 1), h, go, gh)
    for result in (got, got_t):
        for a, b in zip(result[:4], want[:4]):
            torch.testing.assert_close(a, b)
        for a, b in zip(result[4], want[4]):
            torch.testing.assert_close(a, b)


_CPU_VS_OTHER = [  # (bias, bidirectional, batch_first, contig, variable_len, lens_as_tensor)
    (True, False, False, True, False, False),
    (False, True, False, True, True, True),
    (True, True, True, False, True, False),
    (False, False, True, False, False, False),
    (True, True, False, False, False, False),
    (True, False, True, True, True, True),
]


def _forward_backward(rnn, device, weights, tensors, contig, variable_len, lens_as_tensor):
    """PyTorch's forward_backward: copy ``weights`` in through ``all_weights``, run forward and
    backward on ``device``; return the outputs and every gradient."""
    x, hx, grad_out, grad_hy = tensors
    layout = (lambda t: t.clone()) if contig else make_noncontig
    for mine, theirs in zip(rnn.all_weights, weights):
        for w, v in zip(mine, theirs):
            w.data.copy_(v.data)
    rnn.to(device).train()
    inp = layout(x.to(device)).requires_grad_()  # fresh leaves: no gradient is shared between runs
    h0 = layout(hx.to(device)).requires_grad_()
    assert inp.is_contiguous() == contig
    go = layout(grad_out.to(device))
    arg = inp
    if variable_len:
        lengths = [7, 5, 5, 2, 1, 1]
        if lens_as_tensor:
            lengths = torch.tensor(lengths)
        arg = rnn_utils.pack_padded_sequence(inp, lengths, batch_first=rnn.batch_first)
        go = rnn_utils.pack_padded_sequence(go, lengths, batch_first=rnn.batch_first).data
    out, hy = rnn(arg, h0)
    if variable_len:
        out = out.data
    torch.autograd.backward([out, hy], [go, layout(grad_hy.to(device))])
    return {"output": out, "hy": hy, "grad_input": inp.grad, "grad_hx": h0.grad,
            "grad_weights": [w.grad for per_cell in rnn.all_weights for w in per_cell]}


@pytest.mark.parametrize("case", _CPU_VS_OTHER,
                         ids=["-".join(f"{k}{int(v)}" for k, v in zip(("bias", "bidir", "bf", "contig", "var", "lens_t"), c))
                              for c in _CPU_VS_OTHER])
@pytest.mark.parametrize("dropout", [0.0, 1.0])  # dropout=1 is deterministic (test_RNN_cpu_vs_cudnn_with_dropout)
@pytest.mark.parametrize("impl", BOTH)
def test_rnn_cpu_vs_second_path_via_all_weights(impl, dropout, case):
    # test_RNN_cpu_vs_cudnn_{no,with}_dropout: for DIRU the fused CPU kernel against the pure-PyTorch
    # backend; for the nn.GRU control, nn.GRU again (on CUDA when there is one). float64 throughout.
    bias, bidir, batch_first, contig, variable_len, lens_as_tensor = case
    torch.manual_seed(17)
    n, d, layers, steps, batch = 5, 8, 2, 7, 6
    D = 2 if bidir else 1
    shape = (batch, steps) if batch_first else (steps, batch)
    f64 = torch.float64
    tensors = (torch.randn(*shape, n, dtype=f64), torch.randn(layers * D, batch, d, dtype=f64),
               torch.randn(*shape, D * d, dtype=f64), torch.randn(layers * D, batch, d, dtype=f64))
    kwargs = {"bias": bias, "dropout": dropout, "bidirectional": bidir, "batch_first": batch_first, "dtype": f64}
    first = impl.layer(n, d, layers, **kwargs)
    second = (DIRU_TORCH if impl.is_diru else GRU).layer(n, d, layers, **kwargs)
    device = "cuda" if (torch.cuda.is_available() and not impl.is_diru) else "cpu"
    flags = (contig, variable_len, lens_as_tensor)
    a = _forward_backward(first, "cpu", first.all_weights, tensors, *flags)
    b = _forward_backward(second, device, first.all_weights, tensors, *flags)
    tol = {} if device == "cpu" else {"atol": 5e-5, "rtol": 0}  # cuDNN: PyTorch's own tolerance
    for key in ("output", "hy", "grad_input", "grad_hx"):
        torch.testing.assert_close(b[key].cpu(), a[key], msg=key, **tol)
    for ga, gb in zip(a["grad_weights"], b["grad_weights"]):
        torch.testing.assert_close(gb.cpu(), ga, **tol)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("impl", NUMERIC)
def test_layer_matches_unrolled_cell(impl, bias):
    # test_rnn_fused's idea (the layer against the cell stepped by hand), both directions
    torch.manual_seed(18)
    rnn = impl.layer(5, 8, bidirectional=True, bias=bias)
    fwd, rev = impl.cell(5, 8, bias=bias), impl.cell(5, 8, bias=bias)
    copy_params_(fwd, rnn, lambda name: name + "_l0")
    copy_params_(rev, rnn, lambda name: name + "_l0_reverse")
    x = torch.randn(6, 3, 5)
    h0 = torch.randn(2, 3, 8)
    out, h_n = rnn(x, h0)
    h, steps = h0[0], []
    for t in range(6):
        h = fwd(x[t], h)
        steps.append(h)
    torch.testing.assert_close(out[..., :8], torch.stack(steps), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h_n[0], h, rtol=1e-5, atol=1e-6)
    h, steps = h0[1], []
    for t in reversed(range(6)):
        h = rev(x[t], h)
        steps.append(h)
    torch.testing.assert_close(out[..., 8:], torch.stack(steps[::-1]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h_n[1], h, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("impl", BOTH)  # the "torch" backend is plain autograd: its cell case suffices
def test_GRU_grad_and_gradgrad(impl, bias):
    # test_GRU_grad_and_gradgrad / TestModule.test_grad, test_gradgrad: float64, tiny shapes.
    # One bidirectional layer: gradients with respect to the input, hx and every parameter;
    # second derivatives with respect to input and hx (the parameters stay in the graph)
    torch.manual_seed(19)
    rnn = impl.layer(3, 4, bias=bias, bidirectional=True, dtype=torch.float64)
    x = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    h = torch.randn(2, 2, 4, dtype=torch.float64, requires_grad=True)
    names, params = zip(*rnn.named_parameters())

    def f(x, h, *ps):
        return torch.func.functional_call(rnn, dict(zip(names, ps)), (x, h))

    inputs = (x, h, *(p.detach().clone().requires_grad_() for p in params))
    assert gradcheck(f, inputs, check_batched_grad=False)
    assert gradgradcheck(rnn, (x, h), check_batched_grad=False)
    # two layers (the layer-1 input is the concatenated directions), first derivatives
    deep = impl.layer(3, 4, 2, bias=bias, bidirectional=True, dtype=torch.float64)
    assert gradcheck(deep, (x, torch.randn(4, 2, 4, dtype=torch.float64, requires_grad=True)),
                     check_batched_grad=False)


@pytest.mark.parametrize("impl", BOTH)
def test_rnn_retain_variables(impl):
    torch.manual_seed(20)
    rnn = impl.layer(5, 8, 2, dtype=torch.float64)
    x = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    out, h = rnn(x)
    (out.sum() + h.sum()).backward(retain_graph=True)
    grads = [x.grad.clone()] + [p.grad.clone() for p in rnn.parameters()]
    for _ in range(2):
        x.grad = None
        rnn.zero_grad()
        (out.sum() + h.sum()).backward(retain_graph=True)
        for a, b in zip([x.grad] + [p.grad for p in rnn.parameters()], grads):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("impl", BOTH)
def test_no_grad_and_inference_mode(impl):
    torch.manual_seed(21)
    rnn = impl.layer(5, 8, 2)
    x = torch.randn(4, 3, 5)
    want, _ = rnn(x)
    assert want.requires_grad
    with torch.no_grad():
        out, h = rnn(x)
    assert not out.requires_grad and not h.requires_grad
    with torch.inference_mode():
        out_i, _ = rnn(x)
    torch.testing.assert_close(out, want.detach(), rtol=0, atol=0)
    torch.testing.assert_close(out_i, want.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("impl", BOTH)
def test_frozen_parameters(impl):
    torch.manual_seed(39)
    rnn = impl.layer(5, 8, 2, bidirectional=True).requires_grad_(False)
    x = torch.randn(4, 3, 5, requires_grad=True)
    out, h = rnn(x)
    (out.sum() + h.sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is None for p in rnn.parameters())
    rnn.requires_grad_(True)
    rnn.weight_ih_l0.requires_grad_(False)  # some frozen, some not
    out, _ = rnn(x.detach())
    out.sum().backward()
    assert rnn.weight_ih_l0.grad is None and rnn.weight_hh_l0.grad is not None


@pytest.mark.parametrize("impl", BOTH)
def test_parameters_to_vector_round_trip(impl):
    torch.manual_seed(40)
    rnn = impl.layer(5, 8)
    x = torch.randn(4, 3, 5)
    want, _ = rnn(x)
    vec = nn.utils.parameters_to_vector(rnn.parameters())
    assert vec.numel() == sum(p.numel() for p in rnn.parameters())
    nn.utils.vector_to_parameters(torch.zeros_like(vec), rnn.parameters())
    assert torch.all(rnn(x)[0] == 0)  # zero weights and biases: the state stays at zero
    nn.utils.vector_to_parameters(vec, rnn.parameters())
    torch.testing.assert_close(rnn(x)[0], want, rtol=0, atol=0)


@pytest.mark.parametrize("impl", NUMERIC)
def test_bfloat16_module(impl):
    # low-precision parameters and input run and stay close to float32
    torch.manual_seed(41)
    rnn = impl.layer(8, 8, 2)
    x = torch.randn(5, 3, 8)
    want, _ = rnn(x)
    low = copy.deepcopy(rnn).to(torch.bfloat16)
    xb = x.to(torch.bfloat16).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DIRU's "auto" says once that it falls back to "torch"
        out, h = low(xb)
    assert out.dtype == h.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), want, atol=0.05, rtol=0.05)
    out.float().sum().backward()
    assert xb.grad.dtype == torch.bfloat16


@pytest.mark.parametrize("impl", NUMERIC)
def test_autocast_cpu_bfloat16(impl):
    # float32 module and input inside torch.autocast: nn.GRU runs (its input check lets the dtype
    # through under autocast); the result must stay close to the float32 one and be differentiable
    torch.manual_seed(42)
    rnn = impl.layer(8, 8, 2)
    cell = impl.cell(8, 8)
    x = torch.randn(5, 3, 8, requires_grad=True)
    h0 = torch.randn(3, 8)
    want, _ = rnn(x)
    want_cell = cell(x[0], h0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = rnn(x)
        out_cell = cell(x[0], h0)
    torch.testing.assert_close(out.float(), want, atol=0.05, rtol=0.05)
    torch.testing.assert_close(out_cell.float(), want_cell, atol=0.05, rtol=0.05)
    (out.float().sum() + out_cell.float().sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# ============================================================================================
# Layer: dropout (test_RNN_dropout, test_RNN_dropout_state, test_RNN_change_dropout)


def _top_layer(impl, rnn, d):
    """A one-layer module holding layer 1 of ``rnn`` (input size d)."""
    top = impl.layer(d, d, 1, bias=rnn.bias)
    copy_params_(top, rnn, lambda name: name.replace("_l0", "_l1"))
    return top


@pytest.mark.parametrize("impl", BOTH)
def test_RNN_dropout(impl):
    # dropout sits between the layers only: layer 0's state never sees it; with p=1 (training) the
    # top layer runs on zeros
    torch.manual_seed(22)
    d = 8
    for p in (0.0, 0.276, 0.731, 1.0):
        for train in (True, False):
            rnn = impl.layer(10, d, 2, bias=False, dropout=p)
            x = torch.randn(3, 2, 10)
            hx = torch.randn(2, 2, d)
            rnn.eval()
            want_out, want_h = rnn(x, hx)
            rnn.train(train)
            out, h = rnn(x, hx)
            torch.testing.assert_close(h[0], want_h[0])  # layer 0's final state: no dropout there
            if p == 0 or not train:
                torch.testing.assert_close(out, want_out)
                torch.testing.assert_close(h, want_h)
            elif p == 1:
                top_out, top_h = _top_layer(impl, rnn, d)(torch.zeros(3, 2, d), hx[1:])
                torch.testing.assert_close(out, top_out)
                torch.testing.assert_close(h[1], top_h[0])
            else:
                assert outputs_differ(out, want_out)
                out2, _ = rnn(x, hx)
                assert outputs_differ(out, out2)


@pytest.mark.parametrize("impl", BOTH)
def test_RNN_dropout_state(impl):
    torch.manual_seed(23)
    for p in (0.0, 0.1234):
        for train in (True, False):
            rnn = impl.layer(16, 16, 2, bias=False, dropout=p)
            rnn.train(train)
            x = torch.rand(1, 1, 16)
            hx = torch.rand(2, 1, 16)
            out1, hy1 = rnn(x, hx)
            out2, hy2 = rnn(x, hx)
            buf = io.BytesIO()
            torch.save(rnn, buf)
            buf.seek(0)
            rnn2 = torch.load(buf, weights_only=False)
            rnn2.flatten_parameters()
            out3, hy3 = rnn2(x, hx)
            if p == 0 or not train:
                torch.testing.assert_close(out1, out2)
                torch.testing.assert_close(out1, out3)
                torch.testing.assert_close(hy1, hy2)
                torch.testing.assert_close(hy1, hy3)
            else:
                assert outputs_differ(out1, out2) and outputs_differ(out1, out3)
                assert outputs_differ(hy1, hy2) and outputs_differ(hy1, hy3)
                torch.manual_seed(99)  # the same seed draws the same masks
                a, _ = rnn(x, hx)
                torch.manual_seed(99)
                b, _ = rnn2(x, hx)
                torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("impl", BOTH)
def test_RNN_change_dropout(impl, train):
    torch.manual_seed(24)
    rnn = impl.layer(16, 16, 2, dropout=0)
    x = torch.rand(3, 2, 16)
    rnn.train(train)
    prev = None
    for p in (0, 0.5, 0, 0.7, 0.2, 1, 0.2, 0):
        rnn.dropout = p  # read at forward time
        out1, hy1 = rnn(x)
        out2, hy2 = rnn(x)
        if p == 0 or p == 1 or not train:
            torch.testing.assert_close(out1, out2)
            torch.testing.assert_close(hy1, hy2)
        else:
            assert outputs_differ(out1, out2) and outputs_differ(hy1, hy2)
        if prev is not None:
            if not train:
                torch.testing.assert_close(out1, prev)
            else:
                assert outputs_differ(out1, prev)
        prev = out1.detach()


# ============================================================================================
# Module tools: weight_norm, pruning, parametrizations, init, hooks


@pytest.mark.parametrize("name", ["weight_ih_l0", "weight_hh_l0"])
@pytest.mark.parametrize("impl", BOTH)
def test_rnn_weight_norm(impl, name):
    # test_rnn_weight_norm + test_RNN_cudnn_weight_norm (on CPU)
    torch.manual_seed(25)
    rnn = impl.layer(8, 8, 2)
    x = torch.randn(5, 3, 8)
    expected, _ = rnn(x)
    num_params = len(rnn._flat_weights)
    rnn = torch.nn.utils.weight_norm(rnn, name=name)
    assert n_flat_parameters(rnn) == num_params - 1  # the normalized weight is a plain tensor now
    out1, _ = rnn(x)
    out2, _ = rnn(x)
    torch.testing.assert_close(out1, expected)
    torch.testing.assert_close(out2, out1, rtol=0, atol=0)
    with torch.no_grad():
        getattr(rnn, name + "_g").mul_(1.5)  # the forward must use the recomputed weight
    scaled, _ = rnn(x)
    assert outputs_differ(scaled, expected)
    scaled.sum().backward()
    assert getattr(rnn, name + "_v").grad is not None and getattr(rnn, name + "_g").grad is not None
    rnn = torch.nn.utils.remove_weight_norm(rnn, name=name)
    assert n_flat_parameters(rnn) == num_params
    assert name in rnn._parameters and rnn._parameters[name] is not None
    assert name + "_v" not in rnn._parameters and name + "_g" not in rnn._parameters
    assert name in dict(rnn.named_parameters())
    torch.testing.assert_close(rnn(x)[0], scaled)


@pytest.mark.parametrize("name", ["weight_hh_l0", "weight_ih_l1_reverse", "bias_ih_l1"])
@pytest.mark.parametrize("impl", BOTH)
def test_rnn_pruning(impl, name):
    # test/nn/test_pruning.py::test_rnn_pruning, plus: the forward uses the pruned weight
    torch.manual_seed(26)
    rnn = impl.layer(8, 8, 2, bidirectional=True)
    x = torch.randn(5, 3, 8)
    unpruned, _ = rnn(x)
    num_params = len(rnn._flat_weights)
    prune.l1_unstructured(rnn, name, 0.5)  # DIRU's init starts a third of bias_ih at zero: prune more
    assert n_flat_parameters(rnn) == num_params - 1
    mask = getattr(rnn, name + "_mask")
    assert int((mask == 0).sum()) == round(0.5 * mask.numel())
    assert torch.all(getattr(rnn, name)[mask == 0] == 0)
    out1, _ = rnn(x)
    out2, _ = rnn(x)
    assert outputs_differ(out1, unpruned)
    torch.testing.assert_close(out2, out1, rtol=0, atol=0)
    ref = impl.layer(8, 8, 2, bidirectional=True)
    copy_params_(ref, rnn, lambda n: n + "_orig" if n == name else n)
    with torch.no_grad():
        getattr(ref, name).mul_(mask)
    torch.testing.assert_close(ref(x)[0], out1)
    out1.sum().backward()  # pruned entries get no gradient
    assert torch.all(getattr(rnn, name + "_orig").grad[mask == 0] == 0)
    prune.remove(rnn, name)
    assert n_flat_parameters(rnn) == num_params
    assert name in rnn._parameters and name + "_orig" not in rnn._parameters
    assert name in dict(rnn.named_parameters())
    torch.testing.assert_close(rnn(x)[0], out1, rtol=0, atol=0)


@pytest.mark.parametrize("impl", BOTH)
def test_pruned_state_dict_round_trips(impl):
    torch.manual_seed(27)
    x = torch.randn(5, 3, 8)
    rnn = impl.layer(8, 8)
    prune.l1_unstructured(rnn, "weight_hh_l0", 0.3)
    sd = rnn.state_dict()
    assert "weight_hh_l0_orig" in sd and "weight_hh_l0_mask" in sd and "weight_hh_l0" not in sd
    other = impl.layer(8, 8)
    prune.identity(other, "weight_hh_l0")
    other.load_state_dict(sd)
    torch.testing.assert_close(other(x)[0], rnn(x)[0], rtol=0, atol=0)
    # a fresh (unpruned) module's state dict, loaded into a pruned one through the pruning names
    fresh = impl.layer(8, 8)
    fresh_sd = {("weight_hh_l0_orig" if k == "weight_hh_l0" else k): v for k, v in fresh.state_dict().items()}
    fresh_sd["weight_hh_l0_mask"] = torch.ones_like(fresh.weight_hh_l0)
    rnn.load_state_dict(fresh_sd)
    torch.testing.assert_close(rnn(x)[0], fresh(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("impl", BOTH)
def test_parametrizations_weight_norm(impl):
    torch.manual_seed(28)
    rnn = impl.layer(8, 8)
    x = torch.randn(5, 3, 8)
    expected, _ = rnn(x)
    torch.nn.utils.parametrizations.weight_norm(rnn, "weight_hh_l0")
    out, _ = rnn(x)
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    originals = rnn.parametrizations.weight_hh_l0
    assert originals.original0.grad is not None and originals.original1.grad is not None
    with torch.no_grad():
        originals.original0.mul_(2.0)  # the magnitude
    assert outputs_differ(rnn(x)[0], expected)


@pytest.mark.parametrize("impl", BOTH)
def test_parametrizations_spectral_norm(impl):
    torch.manual_seed(29)
    rnn = impl.layer(8, 8)
    x = torch.randn(5, 3, 8)
    torch.nn.utils.parametrizations.spectral_norm(rnn, "weight_hh_l0")
    for _ in range(3):  # power iterations run in training mode
        rnn(x)
    rnn.eval()
    w = rnn.weight_hh_l0.detach().clone()
    out, _ = rnn(x)
    torch.testing.assert_close(rnn(x)[0], out, rtol=0, atol=0)  # eval: no more iterations
    plain = impl.layer(8, 8)
    copy_params_(plain, rnn, lambda n: "parametrizations.weight_hh_l0.original" if n == "weight_hh_l0" else n)
    with torch.no_grad():
        plain.weight_hh_l0.copy_(w)
    torch.testing.assert_close(plain(x)[0], out)  # the forward used the normalized weight


@pytest.mark.parametrize("impl", BOTH)
def test_register_parametrization(impl):
    class Masked(nn.Module):
        def forward(self, w):
            return torch.tril(w, diagonal=-4)

    torch.manual_seed(30)
    rnn = impl.layer(8, 8, 2)
    x = torch.randn(5, 3, 8)
    unchanged, _ = rnn(x)
    ref = copy.deepcopy(rnn)
    parametrize.register_parametrization(rnn, "weight_hh_l1", Masked())
    assert parametrize.is_parametrized(rnn, "weight_hh_l1")
    out, h = rnn(x)
    assert outputs_differ(out, unchanged)
    with torch.no_grad():
        ref.weight_hh_l1.copy_(torch.tril(ref.weight_hh_l1, diagonal=-4))
    torch.testing.assert_close(out, ref(x)[0], rtol=0, atol=0)
    (out.sum() + h.sum()).backward()
    assert rnn.parametrizations.weight_hh_l1.original.grad is not None
    parametrize.remove_parametrizations(rnn, "weight_hh_l1", leave_parametrized=True)
    torch.testing.assert_close(rnn(x)[0], out, rtol=0, atol=0)


@pytest.mark.parametrize("impl", BOTH)
def test_init_on_a_weight_changes_the_output(impl):
    torch.manual_seed(31)
    rnn = impl.layer(8, 8)
    x = torch.randn(5, 3, 8)
    before, _ = rnn(x)
    nn.init.orthogonal_(rnn.weight_hh_l0)
    after, _ = rnn(x)
    assert outputs_differ(after, before)
    nn.init.zeros_(rnn.weight_ih_l0)
    out, _ = rnn(x)
    torch.testing.assert_close(out, rnn(torch.randn(5, 3, 8))[0], rtol=0, atol=0)  # the input no longer matters


@pytest.mark.parametrize("impl", BOTH)
def test_forward_hooks_and_pre_hooks(impl):
    torch.manual_seed(32)
    rnn = impl.layer(8, 8)
    x = torch.randn(5, 3, 8)
    h = torch.randn(1, 3, 8)
    calls = []
    pre = rnn.register_forward_pre_hook(lambda m, args: calls.append(("pre", len(args))))
    post = rnn.register_forward_hook(lambda m, args, out: calls.append(("post", type(out).__name__, len(out))))
    want = rnn(x, h)
    assert calls == [("pre", 2), ("post", "tuple", 2)]
    pre.remove()
    post.remove()
    # a pre-hook that rewrites the input, a kwargs pre-hook that rewrites hx, a hook replacing the output
    handle = rnn.register_forward_pre_hook(lambda m, args: (args[0] * 0,) + tuple(args[1:]))
    torch.testing.assert_close(rnn(x, h)[0], rnn.__class__.forward(rnn, x * 0, h)[0])
    handle.remove()

    def zero_hx(module, args, kwargs):
        kwargs["hx"] = torch.zeros_like(kwargs["hx"])
        return args, kwargs

    handle = rnn.register_forward_pre_hook(zero_hx, with_kwargs=True)
    torch.testing.assert_close(rnn(x, hx=h)[0], rnn.__class__.forward(rnn, x)[0])
    handle.remove()
    handle = rnn.register_forward_hook(lambda m, args, out: (out[0] * 2, out[1]))
    torch.testing.assert_close(rnn(x, h)[0], want[0] * 2)
    handle.remove()
    torch.testing.assert_close(rnn(x, h)[0], want[0], rtol=0, atol=0)


@pytest.mark.parametrize("impl", BOTH)
def test_full_backward_hook(impl):
    torch.manual_seed(33)
    rnn = impl.layer(8, 8)
    x = torch.randn(5, 3, 8, requires_grad=True)
    h = torch.randn(1, 3, 8, requires_grad=True)
    seen = []
    rnn.register_full_backward_hook(lambda m, grad_in, grad_out: seen.append((len(grad_in), len(grad_out))))
    out, hn = rnn(x, h)
    (out.sum() + hn.sum()).backward()
    assert seen == [(2, 2)]
    assert x.grad is not None and h.grad is not None


# ============================================================================================
# Serialization, copies, functional_call, weight tying


@pytest.mark.parametrize("impl", BOTH)
def test_state_dict_round_trip_into_fresh_module(impl):
    torch.manual_seed(34)
    rnn = impl.layer(5, 8, 2, bidirectional=True)
    x = torch.randn(4, 3, 5)
    sd = rnn.state_dict()
    assert list(sd) == [name for name, _ in rnn.named_parameters()]
    fresh = impl.layer(5, 8, 2, bidirectional=True)
    assert outputs_differ(fresh(x)[0], rnn(x)[0])
    result = fresh.load_state_dict(sd)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(fresh(x)[0], rnn(x)[0], rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="Missing key"):
        fresh.load_state_dict({k: v for k, v in sd.items() if k != "weight_hh_l1"})
    with pytest.raises(RuntimeError, match="Unexpected key"):
        fresh.load_state_dict({**sd, "nonsense": torch.zeros(1)})
    with pytest.raises(RuntimeError, match="size mismatch"):
        fresh.load_state_dict({**sd, "weight_hh_l0": torch.zeros(3, 3)})
    partial = fresh.load_state_dict({k: v for k, v in sd.items() if k != "weight_hh_l1"}, strict=False)
    assert partial.missing_keys == ["weight_hh_l1"]
    parent = nn.ModuleDict({"encoder": nn.Sequential(rnn)})  # nested: keys carry a prefix
    other_parent = nn.ModuleDict({"encoder": nn.Sequential(impl.layer(5, 8, 2, bidirectional=True))})
    assert all(k.startswith("encoder.0.") for k in parent.state_dict())
    other_parent.load_state_dict(parent.state_dict())
    torch.testing.assert_close(other_parent["encoder"][0](x)[0], rnn(x)[0], rtol=0, atol=0)
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    again = impl.layer(5, 8, 2, bidirectional=True)
    again.load_state_dict(torch.load(buf, weights_only=True))
    torch.testing.assert_close(again(x)[0], rnn(x)[0], rtol=0, atol=0)


@pytest.mark.parametrize("impl", BOTH)
def test_deepcopy_pickle_save(impl):
    # test_container_copy, TestModule.test_pickle / test_save_load
    torch.manual_seed(35)
    rnn = impl.layer(5, 8, 2, dropout=0.5).eval()
    x = torch.randn(4, 3, 5)
    want = rnn(x)
    buf = io.BytesIO()
    torch.save(rnn, buf)
    buf.seek(0)
    copies = [copy.deepcopy(rnn), pickle.loads(pickle.dumps(rnn)), torch.load(buf, weights_only=False)]
    for other in copies:
        assert type(other) is type(rnn) and not other.training
        got = other(x)
        torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
        torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)
    with torch.no_grad():
        copies[0].weight_hh_l0.fill_(0.5)  # a deep copy is independent
    assert outputs_differ(copies[0](x)[0], want[0])
    torch.testing.assert_close(rnn(x)[0], want[0], rtol=0, atol=0)


@pytest.mark.parametrize("impl", BOTH)
def test_functional_call(impl):
    torch.manual_seed(36)
    rnn = impl.layer(5, 8, 2)
    x = torch.randn(4, 3, 5)
    want, _ = rnn(x)
    other = impl.layer(5, 8, 2)
    params = {k: v.detach().clone().requires_grad_() for k, v in other.named_parameters()}
    out, h = torch.func.functional_call(rnn, params, (x,))
    torch.testing.assert_close(out, other(x)[0], rtol=0, atol=0)
    torch.testing.assert_close(rnn(x)[0], want, rtol=0, atol=0)  # the module itself is untouched
    grads = torch.autograd.grad(out.sum() + h.sum(), list(params.values()))
    assert all(g is not None and g.shape == p.shape for g, p in zip(grads, params.values()))
    assert all(p.grad is None for p in rnn.parameters())
    # torch.func.grad over the parameters matches autograd on the module holding them
    g = torch.func.grad(lambda ps: torch.func.functional_call(rnn, ps, (x,))[0].sum())(params)
    other(x)[0].sum().backward()
    for name, p in other.named_parameters():
        torch.testing.assert_close(g[name], p.grad)


@pytest.mark.parametrize("impl", BOTH)
def test_weight_tying(impl):
    # test_cudnn_weight_tying, on CPU: a parameter shared by both directions
    torch.manual_seed(37)
    rnn = impl.layer(8, 8, bidirectional=True, batch_first=True)
    n_before = len(list(rnn.parameters()))
    rnn.bias_ih_l0_reverse = rnn.bias_ih_l0
    assert len(list(rnn.parameters())) == n_before - 1
    x = torch.randn(5, 4, 8)
    h = torch.randn(2, 5, 8)
    opt = torch.optim.SGD(rnn.parameters(), lr=0.1)
    out, _ = rnn(x, h)
    out.sum().backward()
    opt.step()
    assert rnn.bias_ih_l0_reverse is rnn.bias_ih_l0
    out2, _ = rnn(x, h)
    assert outputs_differ(out2, out)
    ref = impl.layer(8, 8, bidirectional=True, batch_first=True)  # untied, same values
    copy_params_(ref, rnn, lambda n: "bias_ih_l0" if n == "bias_ih_l0_reverse" else n)
    torch.testing.assert_close(ref(x, h)[0], out2, rtol=0, atol=0)


@pytest.mark.parametrize("impl", BOTH)
def test_partial_flat_weights(impl):
    # test_partial_flat_weights, with a dtype move instead of a device move
    torch.manual_seed(38)
    rnn = impl.layer(10, 8, 2)
    x = torch.randn(3, 2, 10)
    expected, _ = rnn(x)
    weight = rnn.weight_hh_l0
    del rnn.weight_hh_l0
    assert not hasattr(rnn, "weight_hh_l0")
    rnn.double()  # moving with a weight missing does not raise
    rnn.weight_hh_l0 = weight.double()
    torch.testing.assert_close(rnn(x.double())[0].float(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl", BOTH)
def test_repr_names_the_sizes(impl):
    assert "5, 8" in repr(impl.layer(5, 8))
    assert "num_layers=2" in repr(impl.layer(5, 8, 2))
    assert "bidirectional=True" in repr(impl.layer(5, 8, bidirectional=True))
    assert "5, 8" in repr(impl.cell(5, 8))


@pytest.mark.no_poison  # traced, like the torch.compile tests
@pytest.mark.parametrize("impl", BOTH)
def test_torch_export(impl):
    torch.manual_seed(43)
    rnn = impl.layer(8, 8, 2).eval()
    x = torch.randn(5, 3, 8)
    h = torch.randn(2, 3, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nn.GRU: "_flat_weights ... assigned during export"
        exported = torch.export.export(rnn, (x, h))
    out, hn = exported.module()(x, h)
    want, want_h = rnn(x, h)
    torch.testing.assert_close(out, want)
    torch.testing.assert_close(hn, want_h)
