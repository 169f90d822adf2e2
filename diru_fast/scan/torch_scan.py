"""Backend "torch": the recurrence vectorized in pure PyTorch, differentiated by autograd.

The x-dependent projections of all steps arrive precomputed (``xp``, one GEMM outside);
each step does one [B, d] x [d, 3d] product for the three h-dependent projections, then
the two d x d products of integration and output. ``unbind`` hands out per-step views
whose gradients autograd stacks once, instead of indexing ``xp[t]`` (whose backward
would build a full-size zero gradient per step).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def torch_scan(
    xp: Tensor,  # [T, B, 3d] = x W_ih^T + b_ih
    h0: Tensor,  # [B, d]
    w_hh: Tensor,  # [3d, d]
    w_int: Tensor,  # [d, d]
    b_int: Optional[Tensor],  # [d]
    w_out: Tensor,  # [d, d]
    b_out: Optional[Tensor],  # [d]
    lengths: Optional[Tensor] = None,  # [B] int64
) -> Tensor:  # hs: [T, B, d]
    d = h0.shape[-1]
    w_hh_t, w_int_t, w_out_t = w_hh.t(), w_int.t(), w_out.t()
    keep = None
    if lengths is not None:
        steps = torch.arange(xp.shape[0], device=xp.device)
        keep = (steps.unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(2).unbind(0)  # T x [B, 1]
    h = h0
    outputs = []
    for t, xp_t in enumerate(xp.unbind(0)):
        p = torch.addmm(xp_t, h, w_hh_t)  # [B, 3d]
        a, s_pre, r_pre = p.split(d, dim=1)
        o = torch.tanh(a) * torch.sigmoid(s_pre)
        z = torch.tanh(o @ w_int_t if b_int is None else torch.addmm(b_int, o, w_int_t))
        q = z * torch.sigmoid(r_pre)
        y = q @ w_out_t if b_out is None else torch.addmm(b_out, q, w_out_t)
        h_new = torch.tanh(y + h)
        if keep is not None:
            h_new = torch.where(keep[t], h_new, h)
        outputs.append(h_new)
        h = h_new
    return torch.stack(outputs)
