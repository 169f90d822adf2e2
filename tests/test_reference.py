"""The seed-faithful reference modules: parameter counts, state_dict keys, the published math."""

import pytest
import torch

from diru_fast import reference
from tests.helpers import random_cell, spec_step


@pytest.mark.parametrize("d, diru_count, lstm_count", [(32, 5409, 4513), (64, 21057, 17217), (128, 83073, 67201)])
def test_parameter_counts_match_spec(d, diru_count, lstm_count):
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(reference.DIRU(1, d, 1, num_compartments=4)) == diru_count
    assert count(reference.LSTMModel(1, d, 1)) == lstm_count


def test_state_dict_keys_are_the_seeds():
    model = reference.DIRU(3, 8, 2, num_compartments=2, num_layers=2)
    expected = set()
    for layer in range(2):
        for c in range(2):
            for name in ("W_x.weight", "W_h.weight", "bias", "gate.weight", "gate.bias"):
                expected.add(f"cells.{layer}.compartments.{c}.{name}")
        for mod in ("integration", "global_gate", "output_proj"):
            expected |= {f"cells.{layer}.{mod}.weight", f"cells.{layer}.{mod}.bias"}
    expected |= {"fc_out.weight", "fc_out.bias"}
    sd = model.state_dict()
    assert set(sd) == expected
    assert sd["cells.0.compartments.1.gate.weight"].shape == (4, 3 + 8)  # over [x; h]
    assert sd["cells.1.global_gate.weight"].shape == (8, 8 + 8)
    assert sd["cells.0.compartments.0.W_x.weight"].shape == (4, 3)


@pytest.mark.parametrize("n, d, k", [(1, 8, 4), (5, 12, 3), (3, 6, 6)])
def test_reference_cell_is_the_spec_math(n, d, k):
    cell = random_cell(n, d, k, seed=n + d)
    ref = reference.DIRUCell(n, d, k).double()
    ref.load_state_dict(cell.state_dict())
    x = torch.randn(4, n, dtype=torch.float64)
    h = torch.randn(4, d, dtype=torch.float64)
    torch.testing.assert_close(ref(x, h), spec_step(x, h, cell), rtol=0, atol=1e-14)


def test_reference_gate_takes_x_first():
    """The gate's first n columns act on x: zeroing x changes only through them."""
    torch.manual_seed(0)
    cell = reference.DIRUCell(2, 4, 2).double()
    x = torch.randn(3, 2, dtype=torch.float64)
    h = torch.randn(3, 4, dtype=torch.float64)
    before = cell(x, h)
    with torch.no_grad():
        for comp in cell.compartments:
            comp.gate.weight[:, 2:] = 0  # h columns
        cell.global_gate.weight[:, 2:] = 0
    after_h_cut = cell(x, h)
    assert not torch.allclose(before, after_h_cut)
    with torch.no_grad():
        for comp in cell.compartments:
            comp.gate.weight[:, :2] = 0  # x columns too: gates no longer see anything
        cell.global_gate.weight.zero_()
    for comp in cell.compartments:
        g = torch.sigmoid(comp.gate(torch.cat([x, h], -1)))
        torch.testing.assert_close(g, torch.sigmoid(comp.gate.bias).expand_as(g))


def test_reference_diru_shapes_and_return_sequences():
    torch.manual_seed(0)
    model = reference.DIRU(2, 8, 3, num_compartments=4, num_layers=2)
    x = torch.randn(5, 7, 2)
    assert model(x).shape == (5, 3)
    seq = model(x, return_sequences=True)
    assert seq.shape == (5, 7, 3)
    torch.testing.assert_close(seq[:, -1], model(x))
    assert reference.DIRU(2, 8, 3, return_sequences=True)(x).shape == (5, 7, 3)


def test_reference_lstm_model_shapes():
    model = reference.LSTMModel(2, 8, 3)
    x = torch.randn(5, 7, 2)
    assert model(x).shape == (5, 3)
    assert model(x, return_sequences=True).shape == (5, 7, 3)


@pytest.mark.parametrize("n, d, k", [(1, 7, 4), (2, 8, 0), (0, 8, 2), (2, -4, 2)])
def test_bad_sizes_raise(n, d, k):
    with pytest.raises(ValueError):
        reference.DIRUCell(n, d, k)


def test_compartment_split_does_not_change_the_function():
    """A k-compartment cell equals a 1-compartment cell with the same stacked weights (SPEC §1)."""
    cell4 = random_cell(3, 8, 4, seed=1)
    cell1 = reference.DIRUCell(3, 8, 1).double()
    with torch.no_grad():
        comps = cell4.compartments
        cell1.compartments[0].W_x.weight.copy_(torch.cat([c.W_x.weight for c in comps]))
        cell1.compartments[0].W_h.weight.copy_(torch.cat([c.W_h.weight for c in comps]))
        cell1.compartments[0].bias.copy_(torch.cat([c.bias for c in comps]))
        cell1.compartments[0].gate.weight.copy_(torch.cat([c.gate.weight for c in comps]))
        cell1.compartments[0].gate.bias.copy_(torch.cat([c.gate.bias for c in comps]))
        for name in ("integration", "global_gate", "output_proj"):
            getattr(cell1, name).load_state_dict(getattr(cell4, name).state_dict())
    x = torch.randn(5, 3, dtype=torch.float64)
    h = torch.randn(5, 8, dtype=torch.float64)
    torch.testing.assert_close(cell1(x, h), reference.DIRUCell.forward(cell4, x, h), rtol=0, atol=1e-14)
