"""The one autograd path of the compiled backends, and the ``torch.library`` custom ops it calls.

    diru_fast::scan_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, backend, need_saved)
        -> (hs [T, B, d], saved [T, B, 4d] or [0])
    diru_fast::scan_bwd(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths, backend)
        -> (d_p [T, B, 3d], d_zp [T, B, d], d_yp [T, B, d], d_h0 [B, d])

Both dispatch to the kernel provider named by ``backend`` (:mod:`diru_fast.backends`); their
semantics are those of :mod:`diru_fast.scan.contract`. Their fake implementations give shapes and
dtypes, so ``torch.compile`` and ``torch.export`` trace through them without graph breaks.

:class:`Scan` is the autograd formula, the only one: eager mode and compiled graphs both run it.
Its forward and backward call the provider directly in eager mode (the custom-op dispatch costs
~50 us a call, a fifth of the CPU kernel's time at the prototype's shape) and the custom ops while
tracing. The backward turns the per-step pre-activation gradients into weight gradients with one
GEMM per weight over all T*B rows. When the backward itself must be differentiable
(``create_graph=True``: gradient penalties, Hessian-vector products, MAML) or a gradient reaches
the saved gates (the second-order pass), it runs the contract's differentiable ``scan_bwd`` on the
saved tensors instead of the kernel, so higher derivatives are exact, not silently partial.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ..backends import get_provider
from . import contract
from .contract import acc_dtype


@torch.library.custom_op("diru_fast::scan_fwd", mutates_args=())
def scan_fwd(
    xp: Tensor,
    h0: Tensor,
    w_hh: Tensor,
    w_int: Tensor,
    b_int: Tensor,
    w_out: Tensor,
    b_out: Tensor,
    lengths: Optional[Tensor],
    backend: str,
    need_saved: bool,
) -> Tuple[Tensor, Tensor]:
    return get_provider(backend).scan_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, need_saved)


@scan_fwd.register_fake
def _scan_fwd_fake(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, backend, need_saved):
    steps, batch, _ = xp.shape
    d = h0.shape[-1]
    hs = xp.new_empty(steps, batch, d)
    if need_saved:
        saved = xp.new_empty(steps, batch, 4 * d, dtype=acc_dtype(xp.dtype))
    else:
        saved = xp.new_empty(0, dtype=acc_dtype(xp.dtype))
    return hs, saved


@torch.library.custom_op("diru_fast::scan_bwd", mutates_args=())
def scan_bwd(
    grad_hs: Tensor,
    h0: Tensor,
    hs: Tensor,
    saved: Tensor,
    w_hh: Tensor,
    w_int: Tensor,
    w_out: Tensor,
    lengths: Optional[Tensor],
    backend: str,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    return get_provider(backend).scan_bwd(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths)


@scan_bwd.register_fake
def _scan_bwd_fake(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths, backend):
    steps, batch, d = hs.shape
    return (
        saved.new_empty(steps, batch, 3 * d),
        saved.new_empty(steps, batch, d),
        saved.new_empty(steps, batch, d),
        h0.new_empty(h0.shape),
    )


def kernel_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, backend: str, need_saved: bool):
    """The provider's scan_fwd: directly in eager mode, through the custom op while tracing."""
    if torch.compiler.is_compiling():
        return torch.ops.diru_fast.scan_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, backend, need_saved)
    return get_provider(backend).scan_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, need_saved)


def kernel_bwd(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths, backend: str):
    """The provider's scan_bwd: directly in eager mode, through the custom op while tracing."""
    if torch.compiler.is_compiling():
        return torch.ops.diru_fast.scan_bwd(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths, backend)
    return get_provider(backend).scan_bwd(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths)


class Scan(torch.autograd.Function):
    """``(xp, h0, w_hh, w_int, b_int, w_out, b_out) -> (hs, saved)`` on a kernel provider."""

    @staticmethod
    def forward(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, backend):
        return kernel_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, backend, True)

    @staticmethod
    def setup_context(ctx, inputs, output):
        xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, backend = inputs
        hs, saved = output
        ctx.set_materialize_grads(False)  # no zero-filled [T, B, 4d] gradient for `saved`
        if torch.compiler.is_compiling():  # compiled graphs have no double backward: saved is a buffer
            ctx.mark_non_differentiable(saved)
        ctx.backend = backend
        ctx.xp_dtype = xp.dtype
        ctx.save_for_backward(h0, hs, saved, w_hh, w_int, w_out, lengths)

    @staticmethod
    def backward(ctx, grad_hs: Optional[Tensor], grad_saved: Optional[Tensor]):
        # hs and saved are outputs: under create_graph they come back attached to this node, so the
        # gradients computed below reach the inputs through them (and through h0 and the weights).
        h0, hs, saved, w_hh, w_int, w_out, lengths = ctx.saved_tensors
        if grad_hs is None:
            grad_hs = torch.zeros_like(hs)
        if grad_saved is None and not torch.is_grad_enabled():
            step_grads = kernel_bwd(grad_hs.contiguous(), h0, hs, saved, w_hh, w_int, w_out, lengths, ctx.backend)
        else:
            step_grads = contract.scan_bwd(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths, grad_saved)
        return (*input_grads(ctx.needs_input_grad, ctx.xp_dtype, step_grads, h0, hs, saved, w_hh, w_int, w_out),
                None, None)


def input_grads(need, xp_dtype, step_grads, h0, hs, saved, w_hh, w_int, w_out):
    """Gradients of (xp, h0, w_hh, w_int, b_int, w_out, b_out) from scan_bwd's per-step gradients:
    one GEMM per weight over all T*B rows (differentiable, for the double-backward path)."""
    d_p, d_zp, d_yp, d_h0 = step_grads
    steps, batch, d = hs.shape
    rows = steps * batch
    acc = d_p.dtype
    g_w_hh = g_w_int = g_b_int = g_w_out = g_b_out = None
    if need[2]:  # w_hh: sum_t dP_t^T h_{t-1} = dP_0^T h0 + sum_{t>0} dP_t^T h_{t-1} (no copy of hs)
        g_w_hh = d_p[0].t() @ h0.to(acc)
        if steps > 1:
            g_w_hh = torch.addmm(g_w_hh, d_p[1:].reshape(rows - batch, 3 * d).t(),
                                 hs[:-1].reshape(rows - batch, d).to(acc))
        g_w_hh = g_w_hh.to(w_hh.dtype)
    if need[3] or need[5]:  # o = u*s and q = z*r of every step in one product: [rows, 2, d]
        pairs = saved.reshape(rows, 2, 2, d)  # [u, s], [z, r]
        oq = pairs[:, :, 0] * pairs[:, :, 1]
    if need[3]:  # w_int: sum_t dZp_t^T o_t
        g_w_int = (d_zp.reshape(rows, d).t() @ oq[:, 0]).to(w_int.dtype)
    if need[4]:
        g_b_int = d_zp.sum(dim=(0, 1)).to(w_int.dtype)
    if need[5]:  # w_out: sum_t dYp_t^T q_t
        g_w_out = (d_yp.reshape(rows, d).t() @ oq[:, 1]).to(w_out.dtype)
    if need[6]:
        g_b_out = d_yp.sum(dim=(0, 1)).to(w_out.dtype)
    g_xp = d_p.to(xp_dtype) if need[0] else None
    g_h0 = d_h0 if need[1] else None
    return g_xp, g_h0, g_w_hh, g_w_int, g_b_int, g_w_out, g_b_out


def scan(
    xp: Tensor,  # [T, B, 3d]
    h0: Tensor,  # [B, d]
    w_hh: Tensor,  # [3d, d]
    w_int: Tensor,  # [d, d]
    b_int: Tensor,  # [d]
    w_out: Tensor,  # [d, d]
    b_out: Tensor,  # [d]
    lengths: Optional[Tensor],  # [B] int64
    backend: str,
) -> Tensor:  # hs: [T, B, d]
    """Run one layer's recurrence on kernel provider ``backend``; differentiable to any order."""
    args = (xp.contiguous(), h0.contiguous(), w_hh.contiguous(), w_int.contiguous(), b_int.contiguous(),
            w_out.contiguous(), b_out.contiguous(), lengths)
    if torch.is_grad_enabled() and any(t.requires_grad for t in args[:7]):
        return Scan.apply(*args, backend)[0]
    return kernel_fwd(*args, backend, False)[0]  # inference: nothing saved for a backward
