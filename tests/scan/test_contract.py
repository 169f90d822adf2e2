"""The kernel contract (backend "torch") against the prototype's cell (backend "reference"), and the
contract's hand-written backward against autograd of its own forward, in float64."""

import pytest
import torch

from diru_fast import CellWeights
from diru_fast.functional import diru_scan
from diru_fast.scan import contract
from tests.helpers import contract_inputs, random_cell, reference_cell, reference_sequence

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
def test_matches_the_prototypes_cell_float64(backend, shape):
    T, B, n, d, k = shape
    cell = random_cell(n, d, k, seed=T * 31 + d)
    x = torch.randn(T, B, n, dtype=torch.float64)
    h0 = torch.randn(B, d, dtype=torch.float64)
    expected, _ = reference_sequence(x, h0, reference_cell(cell, k))
    got = diru_scan(x, cell.cell_weights(), h0, num_compartments=k, backend=backend)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_lengths_keep_state_on_padded_steps(backend):
    T, B, n, d = 6, 4, 3, 8
    cell = random_cell(n, d, 2, seed=3)
    x = torch.randn(T, B, n, dtype=torch.float64)
    h0 = torch.randn(B, d, dtype=torch.float64)
    lengths = torch.tensor([6, 1, 3, 5])
    got = diru_scan(x, cell.cell_weights(), h0, lengths, num_compartments=2, backend=backend)
    expected, last = reference_sequence(x, h0, reference_cell(cell, 2), lengths)
    for b, length in enumerate(lengths.tolist()):
        torch.testing.assert_close(got[:length, b], expected[:length, b], rtol=1e-12, atol=1e-12)
        for t in range(length, T):  # padded steps repeat the state at the sequence's own end
            assert torch.equal(got[t, b], got[length - 1, b])
        torch.testing.assert_close(got[-1, b], last[b], rtol=1e-12, atol=1e-12)


def test_torch_and_reference_gradients_agree_float64():
    T, B, n, d, k = 5, 3, 4, 8, 2
    cell = random_cell(n, d, k, seed=5)
    x = torch.randn(T, B, n, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, d, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 2, 4])
    params = [x, h0] + list(cell.parameters())
    grads = {}
    for backend in ("torch", "reference"):
        out = diru_scan(x, cell.cell_weights(), h0, lengths, num_compartments=k, backend=backend)
        weights = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).reshape(out.shape)
        grads[backend] = torch.autograd.grad((out * weights).sum(), params)
    for g_fast, g_ref in zip(grads["torch"], grads["reference"]):
        torch.testing.assert_close(g_fast, g_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("with_grad_saved", [False, True], ids=["hs", "hs+saved"])
def test_hand_written_backward_is_autograd_of_the_forward(with_lengths, with_grad_saved):
    """scan_bwd's per-step gradients (and, given grad_saved, the terms through the saved gates)
    equal what autograd makes of scan_fwd: d_p = dL/dxp and d_h0 = dL/dh0."""
    T, B, d = 6, 3, 12
    a = contract_inputs(T, B, d, seed=2)
    lengths = torch.tensor([6, 2, 4]) if with_lengths else None
    xp = a["xp"].clone().requires_grad_()
    h0 = a["h0"].clone().requires_grad_()
    hs, saved = contract.scan_fwd(xp, h0, a["w_hh"], a["w_int"], a["b_int"], a["w_out"], a["b_out"], lengths, True)
    g = torch.Generator().manual_seed(3)
    grad_hs = torch.randn(T, B, d, dtype=torch.float64, generator=g)
    grad_saved = torch.randn(T, B, 4 * d, dtype=torch.float64, generator=g) if with_grad_saved else None
    outputs, grads = [hs], [grad_hs]
    if with_grad_saved:
        outputs.append(saved)
        grads.append(grad_saved)
    want_xp, want_h0 = torch.autograd.grad(outputs, [xp, h0], grads)
    d_p, d_zp, d_yp, d_h0 = contract.scan_bwd(grad_hs, a["h0"], hs.detach(), saved.detach(), a["w_hh"], a["w_int"],
                                              a["w_out"], lengths, grad_saved=grad_saved)
    torch.testing.assert_close(d_p, want_xp, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d_h0, want_h0, rtol=1e-12, atol=1e-12)
    b_int = a["b_int"].clone().requires_grad_()
    b_out = a["b_out"].clone().requires_grad_()
    hs, saved = contract.scan_fwd(a["xp"], a["h0"], a["w_hh"], a["w_int"], b_int, a["w_out"], b_out, lengths, True)
    outputs[0] = hs
    if with_grad_saved:
        outputs[1] = saved
    want_b_int, want_b_out = torch.autograd.grad(outputs, [b_int, b_out], grads)
    torch.testing.assert_close(d_zp.sum((0, 1)), want_b_int, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d_yp.sum((0, 1)), want_b_out, rtol=1e-12, atol=1e-12)


def fused_leaves(cell):
    """The cell's fused weights as fresh float64 leaves (gradcheck differentiates these)."""
    return [t.detach().clone().requires_grad_() for t in cell.cell_weights()]


@pytest.mark.parametrize("with_lengths", [False, True])
def test_torch_backend_gradcheck_and_gradgradcheck(with_lengths):
    T, B, n, d, k = 4, 3, 2, 4, 2
    cell = random_cell(n, d, k, seed=7)
    x = torch.randn(T, B, n, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, d, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 1, 3]) if with_lengths else None

    def run(x, h0, *weights):
        return diru_scan(x, CellWeights(*weights), h0, lengths, num_compartments=k, backend="torch")

    assert torch.autograd.gradcheck(run, [x, h0] + fused_leaves(cell))
    assert torch.autograd.gradgradcheck(run, [x, h0] + fused_leaves(cell))


OPTION_CASES = {  # name -> (activation, compartment sizes (None: no attention), dropout p)
    "relu": ("relu", None, 0.0),
    "attention": ("tanh", [3, 4, 5], 0.0),
    "dropout": ("tanh", None, 0.3),
    "relu+attention+dropout": ("relu", [5, 7], 0.5),
}


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("with_grad_saved", [False, True], ids=["hs", "hs+saved"])
@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_options_backward_is_autograd_of_the_forward(case, with_grad_saved, with_lengths):
    """With every option, scan_bwd (and the terms through the saved gates, alpha included) equals
    autograd of scan_fwd; the integration input it implies gives the w_int gradient."""
    activation, sizes, p = OPTION_CASES[case]
    T, B, d = 5, 3, 12
    a, opts = contract_inputs(T, B, d, seed=4, sizes=sizes, dropout=p, activation=activation)
    lengths = torch.tensor([5, 1, 3]) if with_lengths else None
    xp = a["xp"].clone().requires_grad_()
    h0 = a["h0"].clone().requires_grad_()
    w_int = a["w_int"].clone().requires_grad_()
    hs, saved = contract.scan_fwd(xp, h0, a["w_hh"], w_int, a["b_int"], a["w_out"], a["b_out"], lengths, True,
                                  **opts)
    k = 0 if sizes is None else len(sizes)
    assert saved.shape == (T, B, 4 * d + k) and xp.shape[-1] == 3 * d + k
    g = torch.Generator().manual_seed(5)
    grad_hs = torch.randn(T, B, d, dtype=torch.float64, generator=g)
    grad_saved = torch.randn(T, B, 4 * d + k, dtype=torch.float64, generator=g) if with_grad_saved else None
    outputs, grads = ([hs, saved], [grad_hs, grad_saved]) if with_grad_saved else ([hs], [grad_hs])
    want_xp, want_h0, want_w_int = torch.autograd.grad(outputs, [xp, h0, w_int], grads)
    d_p, d_zp, d_yp, d_h0 = contract.scan_bwd(grad_hs, a["h0"], hs.detach(), saved.detach(), a["w_hh"], a["w_int"],
                                              a["w_out"], lengths, grad_saved=grad_saved, **opts)
    torch.testing.assert_close(d_p, want_xp, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d_h0, want_h0, rtol=1e-12, atol=1e-12)
    o = contract.integration_input(saved.detach(), d, opts["compartment_of"], opts["mask"])  # [T, B, d]
    torch.testing.assert_close(d_zp.reshape(-1, d).t() @ o.reshape(-1, d), want_w_int, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_options_forward_mode_is_the_jvp_of_the_forward(case):
    activation, sizes, p = OPTION_CASES[case]
    T, B, d = 4, 2, 12
    a, opts = contract_inputs(T, B, d, seed=6, sizes=sizes, dropout=p, activation=activation)
    lengths = torch.tensor([4, 2])
    primals = tuple(a[key] for key in ("xp", "h0", "w_hh", "w_int", "b_int", "w_out", "b_out"))
    g = torch.Generator().manual_seed(7)
    tangents = tuple(torch.randn(t.shape, dtype=torch.float64, generator=g) for t in primals)

    def fwd(*args):
        return contract.scan_fwd(*args, lengths, True, **opts)

    _, want = torch.func.jvp(fwd, primals, tangents)
    got = contract.scan_jvp(primals, tangents, lengths, **opts)
    for g_t, w_t in zip(got, want):
        torch.testing.assert_close(g_t, w_t, rtol=1e-12, atol=1e-12)


def test_zero_attention_logits_and_an_all_ones_mask_give_the_plain_cell():
    T, B, d = 6, 3, 12
    a, opts = contract_inputs(T, B, d, seed=8, sizes=[2, 4, 6], dropout=0.5)
    a["xp"][..., 3 * d:] = 0  # attention logits: x part and h part zero
    a["w_hh"][3 * d:] = 0
    opts["mask"] = torch.ones(T, B, d, dtype=torch.float64)
    plain = {key: (v[..., :3 * d] if key == "xp" else v[:3 * d] if key == "w_hh" else v) for key, v in a.items()}
    got = contract.scan_fwd(**a, lengths=None, need_saved=True, **opts)
    want = contract.scan_fwd(**plain, lengths=None, need_saved=True)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1][..., :4 * d], want[1], rtol=0, atol=0)
    assert torch.allclose(got[1][..., 4 * d:], torch.full((T, B, 3), 1 / 3, dtype=torch.float64))


def test_relu_units_at_zero_have_zero_slope():
    u = torch.tensor([-0.0, 0.0, 1e-30, 2.0])
    assert contract.activation_slope("relu", torch.relu(u)).tolist() == [0.0, 0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="activation"):
        contract.activate("gelu", u)
