"""The kernel contract, stated in plain PyTorch.

Every compiled backend (C++ CPU, CUDA, Triton) implements exactly these two functions for
one layer and one direction; ``diru_fast.scan.ops`` wraps them as ``torch.library`` custom
ops and turns their outputs into weight gradients with large GEMMs over all T*B rows. This
file is the executable specification: kernels are tested output-for-output against it.

Notation (d hidden size, T steps, B batch rows; acc = float32 for 16-bit inputs, else the
input dtype; all arithmetic in acc, the state h kept in acc between steps)::

    P_t   = xp_t + h_{t-1} W_hh^T                      = [a | s_pre | r_pre]     [B, 3d]
    u = tanh(a)   s = sigmoid(s_pre)   r = sigmoid(r_pre)
    z = tanh((u*s) W_int^T + b_int)
    h_t = tanh((z*r) W_out^T + b_out + h_{t-1})

Variable lengths: where ``t >= lengths[b]`` row b's step is skipped: ``h_t = h_{t-1}``
(selected, never blended arithmetically, so a NaN in a padded step cannot leak), its saved
gates are written as zeros, and in the backward its per-step gradients are exactly zero while
the state gradient passes through unchanged.

scan_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, need_saved) -> (hs, saved)
    xp     [T, B, 3d]  the input projections of all steps (x W_ih^T + b_ih), any float dtype
    h0     [B, d]      initial state (dtype of xp)
    hs     [T, B, d]   h_1..h_T, dtype of xp
    saved  [T, B, 4d]  acc dtype: [u | s | z | r] per step, for the backward;
                       shape [0] when need_saved is False (inference)

scan_bwd(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths) -> (d_p, d_zp, d_yp, d_h0)
    grad_hs [T, B, d]  dL/dh_t from outside the recurrence (dtype of hs)
    d_p     [T, B, 3d] acc: dL/dP_t (= dL/dxp_t, and the rows of the w_hh gradient)
    d_zp    [T, B, d]  acc: dL/d((u*s) W_int^T + b_int)       (integration pre-activation)
    d_yp    [T, B, d]  acc: dL/d((z*r) W_out^T + b_out + h)   (output pre-activation)
    d_h0    [B, d]     dtype of h0
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulation / state dtype for inputs of ``dtype``."""
    return torch.promote_types(dtype, torch.float32)


def scan_fwd(
    xp: Tensor,
    h0: Tensor,
    w_hh: Tensor,
    w_int: Tensor,
    b_int: Tensor,
    w_out: Tensor,
    b_out: Tensor,
    lengths: Optional[Tensor],
    need_saved: bool,
) -> Tuple[Tensor, Tensor]:
    steps, batch, _ = xp.shape
    d = h0.shape[-1]
    acc = acc_dtype(xp.dtype)
    w_hh_t, w_int_t, w_out_t = w_hh.to(acc).t(), w_int.to(acc).t(), w_out.to(acc).t()
    b_int, b_out = b_int.to(acc), b_out.to(acc)
    hs = torch.empty(steps, batch, d, dtype=xp.dtype, device=xp.device)
    saved = torch.empty(steps if need_saved else 0, batch, 4 * d, dtype=acc, device=xp.device)
    if not need_saved:
        saved = saved.reshape(0)
    h = h0.to(acc)
    for t in range(steps):
        p = xp[t].to(acc) + h @ w_hh_t
        u = torch.tanh(p[:, :d])
        s = torch.sigmoid(p[:, d:2 * d])
        r = torch.sigmoid(p[:, 2 * d:])
        z = torch.tanh((u * s) @ w_int_t + b_int)
        h_new = torch.tanh((z * r) @ w_out_t + b_out + h)
        if lengths is not None:
            h_new = torch.where((t < lengths).unsqueeze(1), h_new, h)
        if need_saved:
            gates = torch.cat([u, s, z, r], dim=1)
            if lengths is not None:
                gates = torch.where((t < lengths).unsqueeze(1), gates, torch.zeros_like(gates))
            saved[t] = gates
        hs[t] = h_new
        h = h_new
    return hs, saved


def scan_bwd(
    grad_hs: Tensor,
    h0: Tensor,
    hs: Tensor,
    saved: Tensor,
    w_hh: Tensor,
    w_int: Tensor,
    w_out: Tensor,
    lengths: Optional[Tensor],
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    steps, batch, d = hs.shape
    acc = saved.dtype
    w_hh, w_int, w_out = w_hh.to(acc), w_int.to(acc), w_out.to(acc)
    d_p = torch.empty(steps, batch, 3 * d, dtype=acc, device=hs.device)
    d_zp = torch.empty(steps, batch, d, dtype=acc, device=hs.device)
    d_yp = torch.empty(steps, batch, d, dtype=acc, device=hs.device)
    dh = torch.zeros(batch, d, dtype=acc, device=hs.device)
    for t in range(steps - 1, -1, -1):
        dh = dh + grad_hs[t].to(acc)
        h_new = hs[t].to(acc)
        u, s, z, r = saved[t].split(d, dim=1)
        dyp = dh * (1 - h_new * h_new)
        dq = dyp @ w_out
        dzp = dq * r * (1 - z * z)
        dr_pre = dq * z * r * (1 - r)
        do = dzp @ w_int
        da = do * s * (1 - u * u)
        ds_pre = do * u * s * (1 - s)
        dp = torch.cat([da, ds_pre, dr_pre], dim=1)
        dh_prev = dyp + dp @ w_hh
        if lengths is not None:
            live = (t < lengths).unsqueeze(1)
            dp = torch.where(live, dp, torch.zeros_like(dp))
            dzp = torch.where(live, dzp, torch.zeros_like(dzp))
            dyp = torch.where(live, dyp, torch.zeros_like(dyp))
            dh_prev = torch.where(live, dh_prev, dh)
        d_p[t], d_zp[t], d_yp[t] = dp, dzp, dyp
        dh = dh_prev
    return d_p, d_zp, d_yp, dh.to(h0.dtype)
