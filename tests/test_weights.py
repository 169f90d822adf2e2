"""The fused weight layout maps onto the prototype's parameters block by block, both ways, and the
fused parameters are drawn exactly as the prototype draws its own."""

import pytest
import torch

from diru_fast import DIRU, DIRUCell, DIRULayer, reference
from diru_fast.weights import CellWeights, from_prototype, init_prototype_, prototype_shapes, to_prototype
from tests.helpers import randomize_


def _reference_cell(n, d, k, bias=True, seed=0):
    return randomize_(reference.DIRUCell(n, d, k, bias=bias).double(), seed)


@pytest.mark.parametrize("bias", [True, False])
def test_fused_blocks_are_the_prototype_parameters(bias):
    n, d, k = 3, 8, 4
    m = d // k
    cell = _reference_cell(n, d, k, bias)
    w = from_prototype(cell.state_dict(), n, [m] * k, bias)
    assert w.w_ih.shape == (3 * d, n) and w.w_hh.shape == (3 * d, d) and w.bias == bias
    for c, comp in enumerate(cell.compartments):
        rows = slice(c * m, (c + 1) * m)
        gate_rows = slice(d + c * m, d + (c + 1) * m)
        assert torch.equal(w.w_ih[rows], comp.W_x.weight)
        assert torch.equal(w.w_hh[rows], comp.W_h.weight)
        assert torch.equal(w.w_ih[gate_rows], comp.gate.weight[:, :n])
        assert torch.equal(w.w_hh[gate_rows], comp.gate.weight[:, n:])
        if bias:
            assert torch.equal(w.b_ih[rows], comp.bias)
            assert torch.equal(w.b_ih[gate_rows], comp.gate.bias)
    assert torch.equal(w.w_ih[2 * d:], cell.global_gate.weight[:, :n])
    assert torch.equal(w.w_hh[2 * d:], cell.global_gate.weight[:, n:])
    assert torch.equal(w.w_int, cell.integration.weight) and torch.equal(w.w_out, cell.output_proj.weight)
    if bias:
        assert torch.equal(w.b_ih[2 * d:], cell.global_gate.bias)
        assert torch.equal(w.b_int, cell.integration.bias) and torch.equal(w.b_out, cell.output_proj.bias)
    else:
        assert w.b_ih is None and w.b_int is None and w.b_out is None
    assert w.input_size == n and w.hidden_size == d


@pytest.mark.parametrize("sizes", [[2, 2, 2, 2], [8], [5, 7, 12]], ids=str)
def test_to_prototype_inverts_from_prototype(sizes):
    n, d = 3, sum(sizes)
    shapes = prototype_shapes(n, d, sizes)
    g = torch.Generator().manual_seed(len(sizes))
    state = {key: torch.randn(shape, generator=g, dtype=torch.float64) for key, shape in shapes.items()}
    back = to_prototype(from_prototype(state, n, sizes), sizes)
    assert list(back) == list(state)  # the prototype's key order, too
    for key in state:
        assert torch.equal(back[key], state[key]), key


def test_prototype_keys_are_the_reference_cells():
    for bias in (True, False):
        cell = reference.DIRUCell(3, 8, 4, bias=bias)
        want = {key: tuple(v.shape) for key, v in cell.state_dict().items()}
        assert prototype_shapes(3, 8, [2] * 4, bias) == want


def test_to_prototype_carries_gradients_to_the_fused_tensors():
    n, d = 2, 4
    leaves = CellWeights(*(torch.randn(*s, dtype=torch.float64, requires_grad=True)
                           for s in [(3 * d, n), (3 * d,), (3 * d, d), (d, d), (d,), (d, d), (d,)]))
    proto = to_prototype(leaves, [2, 2])
    (proto["compartments.1.W_x.weight"].sum() + 2 * proto["compartments.1.gate.weight"].sum()
     + 3 * proto["global_gate.bias"].sum()).backward()
    assert torch.all(leaves.w_ih.grad[2:4] == 1) and torch.all(leaves.w_ih.grad[d + 2:d + 4] == 2)
    assert torch.all(leaves.w_hh.grad[d + 2:d + 4] == 2) and torch.all(leaves.w_hh.grad[:d] == 0)
    assert torch.all(leaves.b_ih.grad[2 * d:] == 3) and torch.all(leaves.b_ih.grad[:2 * d] == 0)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_initialisation_draws_the_prototypes_numbers(bias, dtype):
    """After the same seed, a fast cell holds exactly the numbers the prototype's cell draws (in the
    same dtype), and leaves the random generator where the prototype leaves it."""
    n, d, k = 3, 12, 3
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # the prototype's modules draw in the default dtype
    try:
        torch.manual_seed(7)
        proto = reference.DIRUCell(n, d, k, bias=bias)
        after_proto = torch.rand(1, dtype=torch.float32)
    finally:
        torch.set_default_dtype(default)
    torch.manual_seed(7)
    fast = DIRUCell(n, d, bias, dtype=dtype, num_compartments=k)
    assert torch.equal(torch.rand(1, dtype=torch.float32), after_proto)
    want = proto.state_dict()
    got = to_prototype(fast.cell_weights(), [d // k] * k)
    assert list(got) == list(want)
    for key, value in got.items():
        assert value.dtype == dtype and torch.equal(value, want[key]), key


def test_models_draw_the_prototypes_numbers():
    torch.manual_seed(11)
    proto = reference.DIRU(2, 8, 3, num_compartments=2, num_layers=2)
    torch.manual_seed(11)
    fast = DIRU(2, 8, 3, num_compartments=2, num_layers=2)
    want, got = proto.state_dict(), fast.state_dict()
    assert list(got) == list(want)
    for key in want:
        assert torch.equal(got[key], want[key]), key


def test_layer_initialisation_keeps_the_per_block_distribution():
    """Each block's bound is 1/sqrt(fan_in) of its prototype module; compartment biases start at zero."""
    n, d = 5, 64
    torch.manual_seed(0)
    layer = DIRULayer(n, d, num_compartments=4)
    w = layer.cell_weights()
    bounds = [(w.w_ih[:d], n ** -0.5), (w.w_ih[d:], (n + d) ** -0.5), (w.w_hh[:d], d ** -0.5),
              (w.w_hh[d:], (n + d) ** -0.5), (w.b_ih[d:], (n + d) ** -0.5), (w.w_int, d ** -0.5),
              (w.b_int, d ** -0.5), (w.w_out, d ** -0.5), (w.b_out, d ** -0.5)]
    for block, bound in bounds:
        assert block.abs().max() <= bound and block.abs().max() > 0.8 * bound
    assert torch.all(w.b_ih[:d] == 0)


@pytest.mark.no_poison  # the poisoned torch.empty is not a factory torch.device() knows
def test_init_on_the_meta_device_allocates_nothing():
    with torch.device("meta"):
        layer = DIRULayer(4, 8, 2, num_compartments=2)
    assert all(p.device.type == "meta" for p in layer.parameters())
    init_prototype_(layer.cell_weights(1), [4, 4])  # a no-op on meta tensors, not an error
