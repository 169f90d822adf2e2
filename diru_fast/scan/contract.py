"""The kernel contract, stated in plain PyTorch: the recurrence of one layer and one direction.

Every compiled backend (C++ CPU, CUDA, Triton) implements exactly these two functions;
:mod:`diru_fast.scan.ops` runs them under one autograd formula that turns the per-step
pre-activation gradients of ``scan_bwd`` into weight gradients with large GEMMs over all T*B
rows. Kernels are tested output for output against this file, and it serves twice more:

- the ``"torch"`` backend is :func:`scan_fwd` differentiated by autograd;
- double backward (``create_graph=True``) on a compiled backend differentiates :func:`scan_bwd`,
  which is written with differentiable operations only.

Notation (d hidden size, T steps, B batch rows; acc = float32 for 16-bit inputs, else the
input dtype; all arithmetic in acc, the state h kept in acc between steps; docs/THEORY.md §1–2 has the
derivation and names the function that computes each term)::

    P_t   = xp_t + h_{t-1} W_hh^T                      = [a | s_pre | r_pre]     [B, 3d]
    u = tanh(a)   s = sigmoid(s_pre)   r = sigmoid(r_pre)
    z = tanh((u*s) W_int^T + b_int)
    h_t = tanh((z*r) W_out^T + b_out + h_{t-1})

Options (docs/THEORY.md §1.2–1.6; the defaults give the plain cell above)::

    activation="relu":       u = relu(a) instead of tanh(a)
    compartment_of [d] long: attention over the k compartments. P_t has k more columns, the
                             attention logits e (their x part in xp, their h part in W_hh's last
                             k rows): P_t = [a | s_pre | r_pre | e]  [B, 3d+k],
                             alpha = softmax(e) [B, k], and unit j's compartment output is scaled
                             by k * alpha[compartment_of[j]] (zero logits: the plain cell)
    mask [T, B, d]:          compartment dropout, o_t <- o_t * mask_t (values 0 or 1/(1-p), drawn
                             by the caller), after the attention scaling
    o = u * s * k * alpha[:, compartment_of] * mask_t        (each factor only where its option is on)
    z = tanh(o W_int^T + b_int)
    decay [T, B, d]:         time decay (irregular series): each step first decays the state,
                             hd_t = decay_t * h_{t-1} (decay_t = exp(-softplus(lambda) dt_t), computed by
                             the caller), and uses hd_t wherever the plain step uses h_{t-1}: in P_t
                             and in the residual. On padded steps the state is kept undecayed
                             (docs/THEORY.md §1.6).

Variable lengths: where ``t >= lengths[b]`` row b's step is skipped: ``h_t = h_{t-1}``
(selected, never blended arithmetically, so a NaN in a padded step cannot leak), its saved
gates are written as zeros, and in the backward its per-step gradients are exactly zero while
the state gradient passes through unchanged.

scan_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, need_saved,
         activation="tanh", compartment_of=None, mask=None, decay=None) -> (hs, saved)
    xp     [T, B, 3d+k] the input projections of all steps (x W_ih^T + b_ih), any float dtype;
                        k = 0 without attention
    h0     [B, d]       initial state (dtype of xp)
    w_hh   [3d+k, d]
    hs     [T, B, d]    h_1..h_T, dtype of xp
    saved  [T, B, 4d+k] acc dtype: [u | s | z | r | alpha] per step, for the backward;
                        shape [0] when need_saved is False (inference)
    mask   [T, B, d]    acc dtype, or None
    decay  [T, B, d]    acc dtype, or None

scan_bwd(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths,
         activation="tanh", compartment_of=None, mask=None, decay=None) -> (d_p, d_zp, d_yp, d_h0)
    grad_hs [T, B, d]  dL/dh_t from outside the recurrence (dtype of hs)
    d_p     [T, B, 3d+k] acc: dL/dP_t (= dL/dxp_t, and the rows of the w_hh gradient)
    d_zp    [T, B, d]  acc: dL/d(o W_int^T + b_int)           (integration pre-activation)
    d_yp    [T, B, d]  acc: dL/d((z*r) W_out^T + b_out + h)   (output pre-activation)
    d_h0    [B, d]     dtype of h0
    With decay, the state gradient carried to step t-1 is decay_t * dL/dhd_t (live rows), where
    dL/dhd_t = d_yp_t + d_p_t W_hh; the gradient of decay itself, dL/dhd_t * h_{t-1}, and the w_hh
    gradient sum_t d_p_t^T hd_t are formed from the outputs (:func:`decayed_states`), not by the kernel
    (docs/THEORY.md §2.3).
    Beyond the kernels' interface, this statement also takes ``grad_saved [T, B, 4d+k]``, a
    gradient w.r.t. the saved gates (second-order terms reach the forward through them).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import Tensor


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulation / state dtype for inputs of ``dtype``."""
    return torch.promote_types(dtype, torch.float32)


def live_steps(lengths: Optional[Tensor], steps: int) -> Optional[Tuple[Tensor, ...]]:
    """Per step, which rows are live: ``T x [B, 1]`` bool (None: all of them)."""
    if lengths is None:
        return None
    t = torch.arange(steps, device=lengths.device)
    return (t.unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(2).unbind(0)


ACTIVATIONS = ("tanh", "relu")


def activate(activation: str, a: Tensor) -> Tensor:
    """The compartment nonlinearity ``u = act(a)``."""
    if activation == "tanh":
        return torch.tanh(a)
    if activation == "relu":
        return torch.relu(a)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


def activation_slope(activation: str, u: Tensor) -> Tensor:
    """``act'(a)`` from ``u = act(a)``: ``1 - u^2`` (tanh), ``[u > 0]`` (relu, 0 at a = 0 as in torch)."""
    if activation == "tanh":
        return 1 - u * u
    return (u > 0).to(u.dtype)


def compartment_scale(alpha: Tensor, compartment_of: Tensor) -> Tensor:
    """Per unit, ``k * alpha[compartment_of[j]]``: ``alpha [..., k] -> [..., d]``."""
    return alpha.shape[-1] * alpha.index_select(-1, compartment_of)


def compartment_sum(v: Tensor, compartment_of: Tensor, k: int) -> Tensor:
    """Per compartment, the sum of ``v``'s units: ``[B, d] -> [B, k]`` (differentiable)."""
    return v.new_zeros(v.shape[0], k).index_add(1, compartment_of, v)


def integration_input(saved: Tensor, d: int, compartment_of: Optional[Tensor], mask: Optional[Tensor]) -> Tensor:
    """The compartment outputs ``o = u * s (* k alpha_c) (* mask)`` of every step from ``saved``:
    ``[T, B, 4d+k] -> [T, B, d]`` (zero on padded steps, whose saved gates are zero)."""
    o = saved[..., :d] * saved[..., d:2 * d]
    if compartment_of is not None:
        o = o * compartment_scale(saved[..., 4 * d:], compartment_of)
    if mask is not None:
        o = o * mask.to(o.dtype)
    return o


def decay_factor(decay_rate: Tensor, dt: Tensor) -> Tensor:
    """Time decay's per-step factors, the caller's part of the option: ``exp(-softplus(lambda) * dt)``,
    ``decay_rate [d]`` (lambda) and ``dt [T, B]`` -> ``[T, B, d]`` (``dt`` 0 on padded steps: factor 1;
    docs/THEORY.md §1.6)."""
    return torch.exp(-torch.nn.functional.softplus(decay_rate) * dt.unsqueeze(-1))


def decayed_states(h0: Tensor, hs: Tensor, decay: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
    """The state each step starts from, before and after its decay: ``(h_prev, hd)``, both
    ``[T, B, d]`` (``h_prev_t = h_{t-1}``, ``hd_t = decay_t * h_{t-1}``; ``hd is h_prev`` without decay).
    With them, the gradients the kernels leave to the caller (differentiable; docs/THEORY.md §2.3)::

        dL/dhd_t    = d_yp_t + d_p_t W_hh          (zero on padded steps: d_p, d_yp are zero there)
        dL/ddecay_t = dL/dhd_t * h_{t-1}
        dL/dW_hh    = sum_t d_p_t^T hd_t
    """
    h_prev = torch.cat([h0.unsqueeze(0).to(hs.dtype), hs[:-1]]) if hs.shape[0] > 1 else h0.unsqueeze(0).to(hs.dtype)
    if decay is None:
        return h_prev, h_prev
    return h_prev, h_prev * decay.to(h_prev.dtype)


def step(xp_t: Tensor, h: Tensor, w_hh_t: Tensor, w_int_t: Tensor, b_int: Tensor, w_out_t: Tensor,
         b_out: Tensor, activation: str = "tanh", compartment_of: Optional[Tensor] = None,
         mask_t: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Optional[Tensor]]:
    """One step, all in acc: ``(xp_t [B, 3d+k], h_{t-1} [B, d])`` and the transposed weights
    (``w_hh_t [d, 3d+k]``, ``w_int_t``, ``w_out_t [d, d]``) -> ``(h_t, u, s, z, r, alpha)``, each
    ``[B, d]`` but ``alpha [B, k]`` (None without attention). :func:`scan_fwd` loops over it;
    :mod:`diru_fast.scan.loop` runs it as the body of one traced loop."""
    d = h.shape[-1]
    p = torch.addmm(xp_t, h, w_hh_t)  # [B, 3d+k]
    a, s_pre, r_pre = p[:, :d], p[:, d:2 * d], p[:, 2 * d:3 * d]
    u, s, r = activate(activation, a), torch.sigmoid(s_pre), torch.sigmoid(r_pre)
    o = u * s
    alpha = None
    if compartment_of is not None:
        alpha = torch.softmax(p[:, 3 * d:], dim=1)  # [B, k]
        o = o * compartment_scale(alpha, compartment_of)
    if mask_t is not None:
        o = o * mask_t
    z = torch.tanh(torch.addmm(b_int, o, w_int_t))
    h_new = torch.tanh(torch.addmm(b_out, z * r, w_out_t) + h)
    return h_new, u, s, z, r, alpha


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
    activation: str = "tanh",
    compartment_of: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
    decay: Optional[Tensor] = None,
    *,
    acc: Optional[torch.dtype] = None,
) -> Tuple[Tensor, Tensor]:
    """``acc`` overrides the accumulation dtype (tests: PyTorch's own path in a 16-bit dtype)."""
    steps = xp.shape[0]
    acc = acc or acc_dtype(xp.dtype)
    w_hh_t, w_int_t, w_out_t = w_hh.to(acc).t(), w_int.to(acc).t(), w_out.to(acc).t()
    b_int, b_out = b_int.to(acc), b_out.to(acc)
    live = live_steps(lengths, steps)
    h = h0.to(acc)
    hs: List[Tensor] = []
    saved: List[Tensor] = []
    for t, xp_t in enumerate(xp.unbind(0)):  # unbind: per-step views whose gradients autograd stacks once
        mask_t = None if mask is None else mask[t].to(acc)
        hd = h if decay is None else h * decay[t].to(acc)  # the decayed state the step reads
        h_new, u, s, z, r, alpha = step(xp_t.to(acc), hd, w_hh_t, w_int_t, b_int, w_out_t, b_out, activation,
                                        compartment_of, mask_t)
        if live is not None:
            h_new = torch.where(live[t], h_new, h)  # a padded step keeps the undecayed state
        if need_saved:
            gates = torch.cat([u, s, z, r] + ([] if alpha is None else [alpha]), dim=1)  # [B, 4d+k]
            saved.append(gates if live is None else torch.where(live[t], gates, torch.zeros_like(gates)))
        hs.append(h_new)
        h = h_new
    saved_t = torch.stack(saved) if need_saved else xp.new_empty(0, dtype=acc)
    return torch.stack(hs).to(xp.dtype), saved_t


def scan_bwd(
    grad_hs: Tensor,
    h0: Tensor,
    hs: Tensor,
    saved: Tensor,
    w_hh: Tensor,
    w_int: Tensor,
    w_out: Tensor,
    lengths: Optional[Tensor],
    activation: str = "tanh",
    compartment_of: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
    decay: Optional[Tensor] = None,
    grad_saved: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    steps, batch, d = hs.shape
    k = saved.shape[-1] - 4 * d if compartment_of is not None else 0
    acc = saved.dtype
    w_hh, w_int, w_out = w_hh.to(acc), w_int.to(acc), w_out.to(acc)
    live = live_steps(lengths, steps)
    d_p: List[Tensor] = []
    d_zp: List[Tensor] = []
    d_yp: List[Tensor] = []
    dh = grad_hs.new_zeros(batch, d, dtype=acc)
    for t in range(steps - 1, -1, -1):
        dh = dh + grad_hs[t].to(acc)
        h_new = hs[t].to(acc)
        u, s, z, r = saved[t, :, :4 * d].split(d, dim=1)
        dyp = dh * (1 - h_new * h_new)
        dq = dyp @ w_out  # dL/d(z*r)
        dz, dr = dq * r, dq * z
        if grad_saved is not None:
            g_u, g_s, g_z, g_r = grad_saved[t, :, :4 * d].to(acc).split(d, dim=1)
            dz, dr = dz + g_z, dr + g_r
        dzp = dz * (1 - z * z)
        dr_pre = dr * r * (1 - r)
        do = dzp @ w_int  # dL/do, o = u*s*(k alpha_c)*mask
        if mask is not None:
            do = do * mask[t].to(acc)
        dus = do  # dL/d(u*s)
        if k:
            alpha = saved[t, :, 4 * d:]
            dus = do * compartment_scale(alpha, compartment_of)
            d_alpha = k * compartment_sum(do * u * s, compartment_of, k)  # [B, k]
            if grad_saved is not None:
                d_alpha = d_alpha + grad_saved[t, :, 4 * d:].to(acc)
            de = alpha * (d_alpha - (alpha * d_alpha).sum(dim=1, keepdim=True))  # softmax backward
        du, ds = dus * s, dus * u
        if grad_saved is not None:
            du, ds = du + g_u, ds + g_s
        parts = [du * activation_slope(activation, u), ds * s * (1 - s), dr_pre]
        dp = torch.cat(parts + [de] if k else parts, dim=1)  # [B, 3d+k]
        dh_prev = dyp + dp @ w_hh  # dL/dhd_t, the gradient of the (decayed) state the step read
        if decay is not None:
            dh_prev = dh_prev * decay[t].to(acc)
        if live is not None:
            dp = torch.where(live[t], dp, torch.zeros_like(dp))
            dzp = torch.where(live[t], dzp, torch.zeros_like(dzp))
            dyp = torch.where(live[t], dyp, torch.zeros_like(dyp))
            dh_prev = torch.where(live[t], dh_prev, dh)
        d_p.append(dp)
        d_zp.append(dzp)
        d_yp.append(dyp)
        dh = dh_prev
    return (torch.stack(d_p[::-1]), torch.stack(d_zp[::-1]), torch.stack(d_yp[::-1]), dh.to(h0.dtype))


def scan_jvp(
    primals: Tuple[Tensor, ...],
    tangents: Tuple[Optional[Tensor], ...],
    lengths: Optional[Tensor],
    activation: str = "tanh",
    compartment_of: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
    decay: Optional[Tensor] = None,
    t_decay: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    """Forward mode: the tangents of ``scan_fwd``'s ``(hs, saved)`` along ``tangents``.

    ``primals`` and ``tangents`` are ``(xp, h0, w_hh, w_int, b_int, w_out, b_out)`` (a tangent may be
    None: zero). The kernels do not implement it; :class:`diru_fast.scan.ops.TransformableScan` runs it
    for ``torch.func.jvp`` / ``jacfwd`` / ``torch.autograd.forward_ad``. Written with differentiable
    operations, by the chain rule through each step (docs/THEORY.md §2.6)::

        dP  = dxp_t + dh W_hh^T + h dW_hh^T                  = [da | ds_pre | dr_pre | de]
        du  = act'(a) da    ds = s (1 - s) ds_pre    dr = r (1 - r) dr_pre
        dalpha = alpha (de - <alpha, de>)        (attention; g = k alpha_c * mask per unit)
        do  = ((du s + u ds) g + u s dg)
        dz  = (1 - z^2) (do W_int^T + o dW_int^T + db_int)
        dh' = (1 - h'^2) ((dz r + z dr) W_out^T + (z r) dW_out^T + db_out + dh)

    With time decay the step reads ``hd = decay_t h`` with tangent ``dhd = decay_t dh + h t_decay_t``
    in place of ``h`` and ``dh`` above (``t_decay``: the tangent of ``decay``, None: zero).
    The tangent of ``saved_t`` is ``[du | ds | dz | dr | dalpha]``. Padded steps keep the state's
    tangent and have zero gate tangents. The dropout mask is a constant.
    """
    xp, h0, w_hh, w_int, b_int, w_out, b_out = primals
    acc = acc_dtype(xp.dtype)
    t_xp, t_h0, t_w_hh, t_w_int, t_b_int, t_w_out, t_b_out = (
        torch.zeros_like(p, dtype=acc) if t is None else t.to(acc) for p, t in zip(primals, tangents))
    steps, d = xp.shape[0], h0.shape[-1]
    w_hh_t, w_int_t, w_out_t = w_hh.to(acc).t(), w_int.to(acc).t(), w_out.to(acc).t()
    t_w_hh_t, t_w_int_t, t_w_out_t = t_w_hh.t(), t_w_int.t(), t_w_out.t()
    b_int, b_out = b_int.to(acc), b_out.to(acc)
    live = live_steps(lengths, steps)
    h, dh = h0.to(acc), t_h0
    d_hs: List[Tensor] = []
    d_saved: List[Tensor] = []
    for t in range(steps):
        mask_t = None if mask is None else mask[t].to(acc)
        hd, dhd = h, dh  # the state the step reads and its tangent
        if decay is not None:
            hd, dhd = h * decay[t].to(acc), dh * decay[t].to(acc)
            if t_decay is not None:
                dhd = dhd + h * t_decay[t].to(acc)
        h_new, u, s, z, r, alpha = step(xp[t].to(acc), hd, w_hh_t, w_int_t, b_int, w_out_t, b_out, activation,
                                        compartment_of, mask_t)
        dp = t_xp[t] + dhd @ w_hh_t + hd @ t_w_hh_t  # [B, 3d+k]
        da, ds_pre, dr_pre = dp[:, :d], dp[:, d:2 * d], dp[:, 2 * d:3 * d]
        du, ds, dr = activation_slope(activation, u) * da, s * (1 - s) * ds_pre, r * (1 - r) * dr_pre
        o, do = u * s, du * s + u * ds
        tangent_gates = [du, ds]
        if alpha is not None:
            de = dp[:, 3 * d:]
            d_alpha = alpha * (de - (alpha * de).sum(dim=1, keepdim=True))
            g, dg = compartment_scale(alpha, compartment_of), compartment_scale(d_alpha, compartment_of)
            o, do = o * g, do * g + o * dg
        if mask_t is not None:
            o, do = o * mask_t, do * mask_t
        dz = (1 - z * z) * (do @ w_int_t + o @ t_w_int_t + t_b_int)
        q = z * r
        dh_new = (1 - h_new * h_new) * ((dz * r + z * dr) @ w_out_t + q @ t_w_out_t + t_b_out + dhd)
        tangent_gates += [dz, dr] + ([] if alpha is None else [d_alpha])
        gates = torch.cat(tangent_gates, dim=1)  # [B, 4d+k]
        if live is not None:
            h_new = torch.where(live[t], h_new, h)
            dh_new = torch.where(live[t], dh_new, dh)
            gates = torch.where(live[t], gates, torch.zeros_like(gates))
        d_hs.append(dh_new)
        d_saved.append(gates)
        h, dh = h_new, dh_new
    return torch.stack(d_hs).to(xp.dtype), torch.stack(d_saved)
