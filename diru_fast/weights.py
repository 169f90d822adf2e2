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

from typing import NamedTuple, Optional

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
    n = cell.input_size
    comps = cell.compartments
    gates = [c.gate.weight for c in comps]  # each [m, n + d]
    w_ih = torch.cat(
        [c.W_x.weight for c in comps] + [g[:, :n] for g in gates] + [cell.global_gate.weight[:, :n]], dim=0
    )
    w_hh = torch.cat(
        [c.W_h.weight for c in comps] + [g[:, n:] for g in gates] + [cell.global_gate.weight[:, n:]], dim=0
    )
    if cell.integration.bias is not None:
        b_ih = torch.cat([c.bias for c in comps] + [c.gate.bias for c in comps] + [cell.global_gate.bias])
    else:
        b_ih = None
    return CellWeights(
        w_ih, b_ih, w_hh,
        cell.integration.weight, cell.integration.bias,
        cell.output_proj.weight, cell.output_proj.bias,
    )
