"""Backend "reference": the seed's algorithm, step by step and compartment by compartment.

It reads the fused weights (``diru_fast.weights``) back as per-compartment blocks and
computes exactly what ``diru_fast.reference.DIRUCell`` computes, one time step at a time.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..weights import CellWeights


def _linear(x: Tensor, w: Tensor, b: Optional[Tensor]) -> Tensor:
    y = x @ w.t()
    return y if b is None else y + b


def reference_scan(
    x: Tensor,  # [T, B, n]
    weights: CellWeights,
    h0: Tensor,  # [B, d]
    lengths: Optional[Tensor],  # [B] int64, 1 <= lengths <= T, or None
    num_compartments: int = 1,
) -> Tensor:  # hs: [T, B, d]; steps past a sequence's length repeat its last state
    d = weights.hidden_size
    m = d // num_compartments
    w_ih, b_ih, w_hh = weights.w_ih, weights.b_ih, weights.w_hh

    def rows(block: int, c: int) -> slice:
        return slice(block * d + c * m, block * d + (c + 1) * m)

    def bias(block: int, c: int) -> Optional[Tensor]:
        return None if b_ih is None else b_ih[rows(block, c)]

    h = h0
    outputs = []
    for t in range(x.shape[0]):
        x_t = x[t]
        xh = torch.cat([x_t, h], dim=-1)
        compartments = []
        for c in range(num_compartments):
            a_c = _linear(x_t, w_ih[rows(0, c)], None) + _linear(h, w_hh[rows(0, c)], bias(0, c))
            u_c = torch.tanh(a_c)
            gate_w = torch.cat([w_ih[rows(1, c)], w_hh[rows(1, c)]], dim=1)  # [m, n + d]
            s_c = torch.sigmoid(_linear(xh, gate_w, bias(1, c)))
            compartments.append(u_c * s_c)
        o = torch.cat(compartments, dim=-1)
        z = torch.tanh(_linear(o, weights.w_int, weights.b_int))
        global_w = torch.cat([w_ih[2 * d:], w_hh[2 * d:]], dim=1)  # [d, n + d]
        r = torch.sigmoid(_linear(xh, global_w, None if b_ih is None else b_ih[2 * d:]))
        h_new = torch.tanh(_linear(z * r, weights.w_out, weights.b_out) + h)
        if lengths is not None:
            h_new = torch.where((t < lengths).unsqueeze(1), h_new, h)
        outputs.append(h_new)
        h = h_new
    return torch.stack(outputs)
