"""Helpers shared by the tests: backend lists, random cells, an independent statement of the math."""

from __future__ import annotations

import torch

import diru_fast


def cpu_backends():
    """Every backend name that runs on CPU tensors here, plus the contract plumbing."""
    return [b for b in diru_fast.available_backends("cpu")] + ["contract"]


def random_cell(n, d, k=1, dtype=torch.float64, bias=True, seed=0, scale=1.0):
    """A DIRUCell with random parameters (biases included) at a given scale."""
    g = torch.Generator().manual_seed(seed)
    cell = diru_fast.DIRUCell(n, d, k, bias=bias).to(dtype)
    with torch.no_grad():
        for p in cell.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * scale / max(1, p.shape[-1]) ** 0.5)
    return cell


def spec_step(x, h, cell):
    """SPEC §1 written out from the raw parameters, independently of every package path.

    x: [B, n], h: [B, d] -> h': [B, d]
    """
    outs = []
    for comp in cell.compartments:
        a = x @ comp.W_x.weight.t() + h @ comp.W_h.weight.t()
        if comp.bias is not None:
            a = a + comp.bias
        g = torch.cat([x, h], -1) @ comp.gate.weight.t()
        if comp.gate.bias is not None:
            g = g + comp.gate.bias
        outs.append(torch.tanh(a) * torch.sigmoid(g))
    o = torch.cat(outs, -1)

    def lin(mod, v):
        y = v @ mod.weight.t()
        return y if mod.bias is None else y + mod.bias

    z = torch.tanh(lin(cell.integration, o))
    r = torch.sigmoid(lin(cell.global_gate, torch.cat([x, h], -1)))
    return torch.tanh(lin(cell.output_proj, z * r) + h)


def spec_sequence(x, h0, cell, lengths=None, reverse=False):
    """Run ``spec_step`` over x: [T, B, n], sequence by sequence honouring lengths.

    Returns (hs [T, B, d] with zeros on padded steps, h_last [B, d]). reverse=True runs
    each sequence from its own last valid step back to step 0.
    """
    steps, batch, _ = x.shape
    d = cell.hidden_size
    hs = x.new_zeros(steps, batch, d)
    h_last = []
    for b in range(batch):
        length = steps if lengths is None else int(lengths[b])
        h = h0[b:b + 1]
        order = range(length - 1, -1, -1) if reverse else range(length)
        for t in order:
            h = spec_step(x[t, b:b + 1], h, cell)
            hs[t, b] = h[0]
        h_last.append(h[0])
    return hs, torch.stack(h_last)


def contract_inputs(T, B, d, dtype=torch.float64, seed=0):
    """Random inputs of the kernel contract's scan_fwd (xp, h0, weights), drawn in float64 then cast."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    scale = d ** -0.5
    a = dict(xp=r(T, B, 3 * d), h0=r(B, d) * 0.5, w_hh=r(3 * d, d) * scale, w_int=r(d, d) * scale,
             b_int=r(d) * 0.1, w_out=r(d, d) * scale, b_out=r(d) * 0.1)
    return {key: v.to(dtype) for key, v in a.items()}
