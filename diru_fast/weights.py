"""The fused weight layout every fast path uses, and how it maps to the seed's modules.

A DIRU cell's math does not depend on how its d units are split into compartments: the k
dendrites stacked are one d-unit dendrite with block-stacked weights. So one layer is
described by seven tensors (n: input size, d: hidden size)::

    w_ih  [3d, n]   rows [0, d): W_x of every compartment, stacked in compartment order
                    rows [d, 2d): the x-columns of every compartment's gate
                    rows [2d, 3d): the x-columns of the global gate W_G
    b_ih  [3d]      [b_0..b_{k-1}; g_0..g_{k-1}; b_G]                    (None without bias)
    w_hh  [3d, d]   the same three blocks for the h-columns (W_h; gate h-columns; W_G h-columns)
    w_int [d, d],  b_int [d]   somatic integration W_I, b_I
    w_out [d, d],  b_out [d]   output projection W_O, b_O

Per step: P = x W_ih^T + b_ih + h W_hh^T = [a | s_pre | r_pre], then
o = tanh(a) * sigmoid(s_pre), z = tanh(o W_I^T + b_I), r = sigmoid(r_pre),
h' = tanh((z * r) W_O^T + b_O + h).
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = ["CellWeights", "fuse_cell_weights"]


class CellWeights(NamedTuple):
    w_ih: Tensor  # [3d, n]
    b_ih: Optional[Tensor]  # [3d]
    w_hh: Tensor  # [3d, d]
    w_int: Tensor  # [d, d]
    b_int: Optional[Tensor]  # [d]
    w_out: Tensor  # [d, d]
    b_out: Optional[Tensor]  # [d]

    @property
    def input_size(self) -> int:
        return self.w_ih.shape[1]

    @property
    def hidden_size(self) -> int:
        return self.w_hh.shape[1]


def fuse_cell_weights(cell: nn.Module) -> CellWeights:
    """Concatenate a seed-structured cell's parameters into the fused layout (differentiably).

    ``cell`` is any module with the seed's structure (``diru_fast.reference.DIRUCell`` or
    ``diru_fast.DIRUCell``). Gradients flow back to the cell's own parameters.
    """
    n, k = cell.input_size, len(cell.compartments)
    comps = cell.compartments
    params = ([c.W_x.weight for c in comps] + [c.W_h.weight for c in comps]
              + [c.gate.weight for c in comps] + [cell.global_gate.weight])
    if cell.integration.bias is not None:
        params += [c.bias for c in comps] + [c.gate.bias for c in comps] + [cell.global_gate.bias]
    if torch.is_grad_enabled() and any(p.requires_grad for p in params):
        fused = _FuseCell.apply(n, k, *params)
    else:
        fused = _fuse(n, k, params)
    return CellWeights(
        fused[0], fused[2] if len(fused) == 3 else None, fused[1],
        cell.integration.weight, cell.integration.bias,
        cell.output_proj.weight, cell.output_proj.bias,
    )


def _fuse(n: int, k: int, params: Sequence[Tensor]) -> Tuple[Tensor, ...]:
    """(w_ih, w_hh[, b_ih]) from the cell's parameters in ``fuse_cell_weights``'s order:
    W_x[k], W_h[k], gate weights[k], W_G, then (with biases) b[k], gate biases[k], b_G."""
    gates = torch.cat(params[2 * k:3 * k + 1])  # [2d, n + d]: every gate over [x; h], then W_G
    w_ih = torch.cat([*params[:k], gates[:, :n]])  # [3d, n]
    w_hh = torch.cat([*params[k:2 * k], gates[:, n:]])  # [3d, d]
    if len(params) == 3 * k + 1:
        return w_ih, w_hh
    return w_ih, w_hh, torch.cat(params[3 * k + 1:])  # [3d]


class _FuseCell(torch.autograd.Function):
    """``_fuse`` as one autograd node whose backward hands each parameter a view of the fused
    gradient (profiled: the op-by-op graph of slices and cats cost more than the CPU kernel's
    whole recurrence at the seed shape)."""

    @staticmethod
    def forward(ctx, n: int, k: int, *params: Tensor):
        ctx.n, ctx.k = n, k
        ctx.m = params[0].shape[0]
        return _fuse(n, k, params)

    @staticmethod
    def backward(ctx, g_ih: Tensor, g_hh: Tensor, *g_b: Tensor):
        n, k, m = ctx.n, ctx.k, ctx.m
        d = k * m
        grads = list(g_ih[:d].split(m)) + list(g_hh[:d].split(m))
        grads += list(torch.cat([g_ih[d:], g_hh[d:]], dim=1).split([m] * k + [d]))
        if g_b:
            grads += list(g_b[0].split([m] * (2 * k) + [d]))
        return (None, None, *grads)
