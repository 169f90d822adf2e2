"""Backends "torch" and "reference" against the independent statement of SPEC §1, in float64."""

import pytest
import torch

from diru_fast import CellWeights
from diru_fast.functional import diru_layer
from tests.helpers import random_cell, spec_sequence

SHAPES = [  # (T, B, n, d, k)
    (1, 1, 1, 4, 4),
    (1, 3, 5, 48, 3),
    (7, 3, 1, 8, 4),
    (13, 2, 5, 12, 6),
    (5, 4, 3, 16, 1),
]


def _ids(shape):
    return "T{}-B{}-n{}-d{}-k{}".format(*shape)


@pytest.mark.parametrize("backend", ["torch", "reference"])
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_matches_spec_math_float64(backend, shape):
    T, B, n, d, k = shape
    cell = random_cell(n, d, k, seed=T * 31 + d)
    x = torch.randn(T, B, n, dtype=torch.float64)
    h0 = torch.randn(B, d, dtype=torch.float64)
    expected, _ = spec_sequence(x, h0, cell)
    got = diru_layer(x, cell.fused_weights(), h0, num_compartments=k, backend=backend)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_lengths_keep_state_on_padded_steps(backend):
    T, B, n, d = 6, 4, 3, 8
    cell = random_cell(n, d, 2, seed=3)
    x = torch.randn(T, B, n, dtype=torch.float64)
    h0 = torch.randn(B, d, dtype=torch.float64)
    lengths = torch.tensor([6, 1, 3, 5])
    got = diru_layer(x, cell.fused_weights(), h0, lengths, num_compartments=2, backend=backend)
    expected, last = spec_sequence(x, h0, cell, lengths)
    for b, length in enumerate(lengths.tolist()):
        torch.testing.assert_close(got[:length, b], expected[:length, b], rtol=1e-12, atol=1e-12)
        for t in range(length, T):  # padded steps repeat the state at the sequence's own end
            assert torch.equal(got[t, b], got[length - 1, b])
        torch.testing.assert_close(got[-1, b], last[b], rtol=1e-12, atol=1e-12)


def test_torch_scan_gradients_match_reference_float64():
    T, B, n, d, k = 5, 3, 4, 8, 2
    cell = random_cell(n, d, k, seed=5)
    x = torch.randn(T, B, n, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, d, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 2, 4])
    params = [x, h0] + list(cell.parameters())
    grads = {}
    for backend in ("torch", "reference"):
        out = diru_layer(x, cell.fused_weights(), h0, lengths, num_compartments=k, backend=backend)
        weights = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).reshape(out.shape)
        grads[backend] = torch.autograd.grad((out * weights).sum(), params)
    for g_fast, g_ref in zip(grads["torch"], grads["reference"]):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-12, atol=1e-12)


def fused_leaves(cell):
    """The cell's fused weights as fresh float64 leaves (gradcheck differentiates these)."""
    return [t.detach().clone().requires_grad_() for t in cell.fused_weights()]


@pytest.mark.parametrize("with_lengths", [False, True])
def test_torch_scan_gradcheck(with_lengths):
    T, B, n, d, k = 4, 3, 2, 4, 2
    cell = random_cell(n, d, k, seed=7)
    x = torch.randn(T, B, n, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, d, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 1, 3]) if with_lengths else None

    def run(x, h0, *weights):
        return diru_layer(x, CellWeights(*weights), h0, lengths, num_compartments=k, backend="torch")

    assert torch.autograd.gradcheck(run, [x, h0] + fused_leaves(cell))
