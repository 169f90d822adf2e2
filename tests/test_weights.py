"""The fused weight layout maps onto the seed's parameters block by block."""

import torch

from diru_fast import fuse_cell_weights
from tests.helpers import random_cell


def test_fused_blocks_are_the_seed_parameters():
    n, d, k = 3, 8, 4
    m = d // k
    cell = random_cell(n, d, k)
    w = fuse_cell_weights(cell)
    assert w.w_ih.shape == (3 * d, n) and w.w_hh.shape == (3 * d, d) and w.b_ih.shape == (3 * d,)
    for c, comp in enumerate(cell.compartments):
        rows = slice(c * m, (c + 1) * m)
        gate_rows = slice(d + c * m, d + (c + 1) * m)
        assert torch.equal(w.w_ih[rows], comp.W_x.weight)
        assert torch.equal(w.w_hh[rows], comp.W_h.weight)
        assert torch.equal(w.b_ih[rows], comp.bias)
        assert torch.equal(w.w_ih[gate_rows], comp.gate.weight[:, :n])
        assert torch.equal(w.w_hh[gate_rows], comp.gate.weight[:, n:])
        assert torch.equal(w.b_ih[gate_rows], comp.gate.bias)
    assert torch.equal(w.w_ih[2 * d:], cell.global_gate.weight[:, :n])
    assert torch.equal(w.w_hh[2 * d:], cell.global_gate.weight[:, n:])
    assert torch.equal(w.b_ih[2 * d:], cell.global_gate.bias)
    assert w.w_int is cell.integration.weight and w.w_out is cell.output_proj.weight
    assert w.input_size == n and w.hidden_size == d


def test_fused_weights_carry_gradients_to_the_seed_parameters():
    cell = random_cell(2, 4, 2)
    w = fuse_cell_weights(cell)
    (w.w_ih.sum() + w.w_hh.sum() * 2 + w.b_ih.sum() * 3).backward()
    comp = cell.compartments[1]
    assert torch.all(comp.W_x.weight.grad == 1) and torch.all(comp.W_h.weight.grad == 2)
    assert torch.all(comp.gate.weight.grad[:, :2] == 1) and torch.all(comp.gate.weight.grad[:, 2:] == 2)
    assert torch.all(cell.global_gate.bias.grad == 3)


def test_no_bias_cell_fuses_to_none():
    cell = random_cell(2, 4, 2, bias=False)
    w = fuse_cell_weights(cell)
    assert w.b_ih is None and w.b_int is None and w.b_out is None


def test_parametrized_weights_are_fused_through_their_parametrization():
    """fuse_cell_weights reads plain parameters from the module dicts (fast path); a parametrized
    weight must still be read through its parametrization."""
    from torch.nn.utils import parametrize

    class Double(torch.nn.Module):
        def forward(self, w):
            return 2 * w

    cell = random_cell(2, 4, 2)
    comp = cell.compartments[1]
    raw = comp.W_x.weight.detach().clone()
    parametrize.register_parametrization(comp.W_x, "weight", Double())
    w = fuse_cell_weights(cell)
    assert torch.equal(w.w_ih[2:4], 2 * raw)
    w.w_ih.sum().backward()
    assert torch.all(comp.W_x.parametrizations.weight.original.grad == 2)
