"""The GRU-style stack (layers, directions, lengths, PackedSequence) against the prototype's cell
stepped sequence by sequence."""

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import diru_fast
from diru_fast import DIRULayer
from tests.helpers import cpu_backends, randomize_ as _randomize, reference_cell, reference_sequence

BACKENDS = cpu_backends()


def expected_stack(layer, x, h0, lengths):
    """Layer by layer, direction by direction, sequence by sequence with the prototype's cell (time-major)."""
    D = 2 if layer.bidirectional else 1
    h_n = []
    inp = x
    for l in range(layer.num_layers):
        outs = []
        for direction in range(D):
            cell = reference_cell(layer.cell_weights(l, direction), layer.num_compartments)
            hs, last = reference_sequence(inp, h0[l * D + direction], cell, lengths, reverse=direction == 1)
            outs.append(hs)
            h_n.append(last)
        inp = torch.cat(outs, dim=2)
    return inp, torch.stack(h_n)


CASES = [  # (T, B, n, d, k, layers, bidirectional, with_lengths)
    (1, 1, 1, 4, 4, 1, False, False),
    (5, 3, 5, 48, 3, 1, False, True),
    (6, 3, 2, 8, 2, 2, False, True),
    (6, 4, 3, 12, 6, 2, True, True),
    (4, 2, 3, 8, 4, 3, True, False),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "T{}-B{}-n{}-d{}-k{}-L{}-bi{}-len{}".format(*c))
def test_stack_matches_per_sequence_math(backend, case):
    T, B, n, d, k, L, bi, with_lengths = case
    layer = _randomize(DIRULayer(n, d, L, bidirectional=bi, num_compartments=k, backend=backend).double(), seed=T + d)
    x = torch.randn(T, B, n, dtype=torch.float64)
    D = 2 if bi else 1
    h0 = torch.randn(L * D, B, d, dtype=torch.float64)
    lengths = torch.tensor([T - (b % T) for b in range(B)]) if with_lengths else None
    out, h_n = layer(x, h0, lengths)
    want_out, want_h = expected_stack(layer, x, h0, lengths)
    torch.testing.assert_close(out, want_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_n, want_h, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stack_gradients_match_reference_backend(backend):
    T, B, n, d = 5, 3, 2, 8
    layer = _randomize(DIRULayer(n, d, 2, bidirectional=True, num_compartments=2, backend="reference").double())
    x = torch.randn(T, B, n, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, B, d, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 2, 4])
    grads = []
    for b in ("reference", backend):
        layer.backend = b
        out, h_n = layer(x, h0, lengths)
        loss = (out * torch.arange(out.numel(), dtype=torch.float64).reshape(out.shape).sin()).sum() + h_n.pow(2).sum()
        grads.append(torch.autograd.grad(loss, [x, h0] + list(layer.parameters())))
    for g, r in zip(*grads):
        torch.testing.assert_close(g, r, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_sequence_equals_lengths(backend):
    T, B, n, d = 6, 4, 3, 8
    layer = _randomize(DIRULayer(n, d, 2, bidirectional=True, num_compartments=2, backend=backend).double())
    x = torch.randn(T, B, n, dtype=torch.float64)
    lengths = torch.tensor([3, 6, 1, 4])  # unsorted on purpose
    out_l, h_l = layer(x, None, lengths)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    out_p, h_p = layer(packed)
    assert isinstance(out_p, torch.nn.utils.rnn.PackedSequence)
    assert torch.equal(out_p.sorted_indices, packed.sorted_indices)
    padded, lens = pad_packed_sequence(out_p)
    assert torch.equal(lens, lengths)
    torch.testing.assert_close(padded, out_l[: padded.shape[0]], rtol=0, atol=0)
    torch.testing.assert_close(h_p, h_l, rtol=0, atol=0)
    sorted_packed = pack_padded_sequence(x[:, [1, 3, 0, 2]], lengths[[1, 3, 0, 2]], enforce_sorted=True)
    out_s, h_s = layer(sorted_packed)
    torch.testing.assert_close(h_s, h_l[:, [1, 3, 0, 2]], rtol=1e-12, atol=1e-14)  # batch order changes BLAS blocking


@pytest.mark.parametrize("backend", BACKENDS)
def test_padded_outputs_are_zero_and_inputs_ignored(backend):
    T, B, n, d = 5, 3, 2, 4
    layer = _randomize(DIRULayer(n, d, 2, batch_first=True, bidirectional=True, num_compartments=2, backend=backend).double())
    x = torch.randn(B, T, n, dtype=torch.float64)
    lengths = [5, 2, 3]
    out, h = layer(x, lengths=lengths)
    x2 = x.clone()
    x2[1, 2:] = 123.0
    x2[2, 3:] = -7.0
    out2, h2 = layer(x2, lengths=lengths)
    assert torch.equal(out, out2) and torch.equal(h, h2)
    assert torch.all(out[1, 2:] == 0) and torch.all(out[2, 3:] == 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_layers_one_after_another_equal_interleaved_steps(backend):
    """Running layer by layer over the whole sequence equals the prototype's per-step interleaving."""
    torch.manual_seed(0)
    ref = diru_fast.reference.DIRU(3, 8, 2, num_compartments=4, num_layers=3).double()
    fast = diru_fast.DIRU(3, 8, 2, num_compartments=4, num_layers=3, backend=backend).double()
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(4, 7, 3, dtype=torch.float64)
    torch.testing.assert_close(fast(x), ref(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast(x, return_sequences=True), ref(x, return_sequences=True), rtol=1e-12, atol=1e-12)
