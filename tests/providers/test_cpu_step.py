"""The C++ kernel's one-call inference step (``cell_step``): what ``DIRUCell`` and a one-step
``DIRULayer`` run on the "cpu" backend when no autograd graph is needed."""

from __future__ import annotations

import pytest
import torch

import diru_fast
from diru_fast import DIRUCell, DIRULayer
from diru_fast.providers import cpu
from tests.helpers import random_cell, randomize_, reference_cell

HAVE_KERNEL = cpu.unavailable_reason() is None
pytestmark = pytest.mark.skipif(not HAVE_KERNEL, reason=f"C++ CPU kernel unavailable here: {cpu.unavailable_reason()}")


@pytest.fixture
def steps(monkeypatch):
    """Count the calls of the fused step."""
    calls = []
    real = cpu.cell_step
    monkeypatch.setattr(cpu, "cell_step", lambda *args: calls.append(args) or real(*args))
    return calls


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(1, 1, 4, 4), (3, 5, 48, 3), (2, 3, 8, 2)], ids=lambda s: "B{}-n{}-d{}-k{}".format(*s))
def test_cell_step_matches_the_prototypes_cell_float64(steps, shape, bias):
    B, n, d, k = shape
    cell = random_cell(n, d, k, bias=bias, seed=B + d, backend="cpu")
    ref = reference_cell(cell, k)
    x = torch.randn(B, n, dtype=torch.float64)
    h = torch.randn(B, d, dtype=torch.float64)
    with torch.inference_mode():
        got, got0, got1 = cell(x, h), cell(x), cell(x[0], h[0])
    with torch.no_grad():
        want, want0 = ref(x, h), ref(x, torch.zeros_like(h))
        got_nograd = cell(x, h)
    assert len(steps) == 4
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got0, want0, rtol=1e-12, atol=1e-12)  # hx=None is the zero state
    torch.testing.assert_close(got1, want[0], rtol=1e-12, atol=1e-12)  # unbatched
    assert torch.equal(got_nograd, got)


def test_cell_step_float32_on_every_instruction_set(steps):
    torch.manual_seed(0)
    cell = DIRUCell(16, 48, num_compartments=3, backend="cpu")
    x, h = torch.randn(3, 16), torch.randn(3, 48)
    with torch.no_grad():
        want = reference_cell(cell.double(), 3)(x.double(), h.double())
    cell.float()
    ext = cpu.extension()
    for isa in ext.supported_isas():
        previous = ext.set_isa(isa)
        try:
            with torch.inference_mode():
                got = cell(x, h)
        finally:
            ext.set_isa(previous)
        torch.testing.assert_close(got.double(), want, rtol=0, atol=2e-6)
    assert len(steps) == len(ext.supported_isas())


def test_training_steps_keep_the_autograd_path(steps):
    cell = random_cell(3, 8, 2, seed=1, backend="cpu")
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    h = cell(x)
    assert not steps and h.requires_grad
    (g,) = torch.autograd.grad(h.sum(), x)
    cell.backend = "torch"
    (want,) = torch.autograd.grad(cell(x).sum(), x)
    torch.testing.assert_close(g, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_one_step_layer_uses_the_fused_step(steps, bidirectional):
    torch.manual_seed(0)
    layer = randomize_(DIRULayer(5, 12, 2, bidirectional=bidirectional, num_compartments=3, backend="cpu").double())
    D = 2 if bidirectional else 1
    x = torch.randn(1, 3, 5, dtype=torch.float64)
    hx = torch.randn(2 * D, 3, 12, dtype=torch.float64)
    with torch.no_grad():
        out, h_n = layer(x, hx)
        layer.backend = "torch"
        want_out, want_h = layer(x, hx)
    assert len(steps) == 2 * D
    torch.testing.assert_close(out, want_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_n, want_h, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
def test_inference_forward_of_a_layer_projects_inside_the_kernel(monkeypatch, bias):
    """No autograd graph: each layer and direction runs scan_fwd_x (no [T, B, 3d] projections in
    memory); numbers as on the torch backend, lengths and both directions included."""
    calls = []
    real = cpu.scan_fwd_x
    monkeypatch.setattr(cpu, "scan_fwd_x", lambda *args: calls.append(1) or real(*args))
    torch.manual_seed(1)
    layer = randomize_(DIRULayer(3, 8, 2, bias=bias, bidirectional=True, num_compartments=2, backend="cpu").double())
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    lengths = torch.tensor([6, 2, 4])
    with torch.no_grad():
        out, h_n = layer(x, lengths=lengths)
    assert len(calls) == 4
    layer.backend = "torch"
    with torch.no_grad():
        want_out, want_h = layer(x, lengths=lengths)
    torch.testing.assert_close(out, want_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_n, want_h, rtol=1e-12, atol=1e-12)


def test_fused_step_checks_its_inputs():
    w = random_cell(3, 8, 2, seed=2).cell_weights()
    ext = cpu.extension()
    with pytest.raises(RuntimeError, match=r"h has shape \[4, 7\], expected \[4, 8\]"):
        ext.cell_step(torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 7, dtype=torch.float64), *w)
    with pytest.raises(RuntimeError, match="w_ih has dtype Float, expected Double"):
        ext.cell_step(torch.randn(4, 3, dtype=torch.float64), None, w.w_ih.float(), *w[1:])
    assert diru_fast.DIRUCell(3, 8, num_compartments=2)(torch.randn(0, 3)).shape == (0, 8)
