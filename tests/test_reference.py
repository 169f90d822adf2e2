"""The prototype's own modules (diru_fast.reference): parameter counts, state_dict keys, and their
agreement with the kernel contract, the package's other statement of the math."""

import pytest
import torch

from diru_fast import reference
from diru_fast.scan import contract
from diru_fast.weights import from_prototype
from tests.helpers import randomize_


@pytest.mark.parametrize("d, diru_count, lstm_count", [(32, 5409, 4513), (64, 21057, 17217), (128, 83073, 67201)])
def test_parameter_counts_match_spec(d, diru_count, lstm_count):
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(reference.DIRU(1, d, 1, num_compartments=4)) == diru_count
    assert count(reference.LSTMModel(1, d, 1)) == lstm_count


def test_state_dict_keys_are_the_prototypes():
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


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("n, d, k", [(1, 8, 4), (5, 12, 3), (3, 6, 6), (2, 48, 3)])
def test_the_two_statements_of_the_math_agree(n, d, k, bias):
    """One step of the prototype's cell equals one step of the kernel contract on the same
    parameters in the fused layout (xp = x W_ih^T + b_ih), gates included."""
    ref = randomize_(reference.DIRUCell(n, d, k, bias=bias).double(), seed=n + d)
    w = from_prototype(ref.state_dict(), n, [d // k] * k, bias)
    zeros = torch.zeros(d, dtype=torch.float64)
    x = torch.randn(4, n, dtype=torch.float64)
    h = torch.randn(4, d, dtype=torch.float64)
    xp = x @ w.w_ih.t() + (w.b_ih if bias else 0)
    hs, saved = contract.scan_fwd(xp.unsqueeze(0), h, w.w_hh, w.w_int, w.b_int if bias else zeros, w.w_out,
                                  w.b_out if bias else zeros, None, True)
    torch.testing.assert_close(hs[0], ref(x, h), rtol=0, atol=1e-14)
    u, s, z, r = saved[0].split(d, dim=1)
    o = torch.cat([comp(x, h) for comp in ref.compartments], dim=1)
    torch.testing.assert_close(u * s, o, rtol=0, atol=1e-14)
    torch.testing.assert_close(z, torch.tanh(ref.integration(o)), rtol=0, atol=1e-14)
    torch.testing.assert_close(r, torch.sigmoid(ref.global_gate(torch.cat([x, h], -1))), rtol=0, atol=1e-14)


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
    """A k-compartment cell equals a 1-compartment cell with the same stacked weights."""
    cell4 = randomize_(reference.DIRUCell(3, 8, 4).double(), seed=1)
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
    torch.testing.assert_close(cell1(x, h), cell4(x, h), rtol=0, atol=1e-14)
