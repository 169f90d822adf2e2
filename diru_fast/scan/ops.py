"""The one autograd path of the compiled backends, and the ``torch.library`` custom ops it calls.

    diru_fast::scan_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, backend, need_saved,
                        activation="tanh", compartment_of=None, mask=None, decay=None)
        -> (hs [T, B, d], saved [T, B, 4d+k] or [0])
    diru_fast::scan_bwd(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths, backend,
                        activation="tanh", compartment_of=None, mask=None, decay=None)
        -> (d_p [T, B, 3d+k], d_zp [T, B, d], d_yp [T, B, d], d_h0 [B, d])

(k: the attention rows, 0 without attention; the options are the contract's, docs/THEORY.md §1.2–1.6.)

Both dispatch to the kernel provider named by ``backend`` (:mod:`diru_fast.backends`); their
semantics are those of :mod:`diru_fast.scan.contract`. Their fake implementations give shapes and
dtypes, so ``torch.compile`` and ``torch.export`` trace through them without graph breaks.

:class:`Scan` is the autograd formula, the only one: eager mode and compiled graphs both run it.
Its forward and backward call the provider directly in eager mode (the custom-op dispatch costs
~50 us a call, a fifth of the CPU kernel's time at the prototype's shape) and the custom ops while
tracing. The backward turns the per-step pre-activation gradients into weight gradients with one
GEMM per weight over all T*B rows (its steps: docs/THEORY.md §2). When the backward itself must be differentiable
(``create_graph=True``: gradient penalties, Hessian-vector products, MAML) or a gradient reaches
the saved gates (the second-order pass), it runs the contract's differentiable ``scan_bwd`` on the
saved tensors instead of the kernel, so higher derivatives are exact, not silently partial.

:func:`scan` picks how one call runs: the kernel in eager mode; the custom ops while
``torch.compile`` / ``torch.export`` / ``torch.jit.trace`` trace, for backends "torch" and
"reference" too (with the contract as their kernel, so any T is one graph node); one structured loop,
:mod:`diru_fast.scan.loop`, on every backend under the ONNX exporter. ``torch.func`` transforms reach
the kernel through the batching rule (``vmap``) and forward-mode rule (``jvp``, on the contract) of
:class:`TransformableScan`. Under autocast both custom ops run in float32 (float64 stays float64):
DIRU's recurrence is on autocast's float32 list, see :mod:`diru_fast.functional`.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .. import _tracing
from ..backends import get_provider
from . import contract, loop
from .contract import acc_dtype
from .dropout import CompartmentMask, as_tensor


def _provider(backend: str):
    """The kernel provider of ``backend``; the contract itself for "torch", which graphs of backends
    "torch" and "reference" (the same function) name, so their recurrence is one node for any T."""
    return contract if backend == "torch" else get_provider(backend)


def _option_args(activation: str, compartment_of: Optional[Tensor], mask: Optional[Tensor],
                 decay: Optional[Tensor]) -> tuple:
    """The options as a provider's trailing arguments: none for the plain cell (its own call), and
    ``decay`` only when it is on (a provider without time decay keeps its signature)."""
    if decay is not None:
        return activation, compartment_of, mask, decay
    if compartment_of is None and mask is None and activation == "tanh":
        return ()
    return activation, compartment_of, mask


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
    activation: str = "tanh",
    compartment_of: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
    decay: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor]:
    return _provider(backend).scan_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, need_saved,
                                       *_option_args(activation, compartment_of, mask, decay))


@scan_fwd.register_fake
def _scan_fwd_fake(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, backend, need_saved, activation="tanh",
                   compartment_of=None, mask=None, decay=None):
    steps, batch, width = xp.shape
    d = h0.shape[-1]
    hs = xp.new_empty(steps, batch, d)
    if need_saved:  # [u | s | z | r | alpha]: 4d + k, k = width - 3d attention logits
        saved = xp.new_empty(steps, batch, d + width, dtype=acc_dtype(xp.dtype))
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
    activation: str = "tanh",
    compartment_of: Optional[Tensor] = None,
    mask: Optional[Tensor] = None,
    decay: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    return _provider(backend).scan_bwd(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths,
                                       *_option_args(activation, compartment_of, mask, decay))


@scan_bwd.register_fake
def _scan_bwd_fake(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths, backend, activation="tanh",
                   compartment_of=None, mask=None, decay=None):
    steps, batch, d = hs.shape
    return (
        saved.new_empty(steps, batch, w_hh.shape[0]),  # [T, B, 3d+k]
        saved.new_empty(steps, batch, d),
        saved.new_empty(steps, batch, d),
        h0.new_empty(h0.shape),
    )


# Under autocast the recurrence runs in float32 on every device (float64 inputs stay float64): the
# state accumulates over all T steps and every kernel keeps it in float32 anyway. The eager path
# applies the same rule in diru_fast.functional.
for _op in (scan_fwd, scan_bwd):
    for _device_type in ("cpu", "cuda"):
        _op.register_autocast(_device_type, torch.float32)


def kernel_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, backend: str, need_saved: bool,
               activation: str = "tanh", compartment_of: Optional[Tensor] = None, mask: Optional[Tensor] = None,
               decay: Optional[Tensor] = None):
    """The provider's scan_fwd: directly in eager mode, through the custom op while tracing."""
    if torch.compiler.is_compiling():
        return torch.ops.diru_fast.scan_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, backend, need_saved,
                                            activation, compartment_of, mask, decay)
    return _provider(backend).scan_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, need_saved,
                                       *_option_args(activation, compartment_of, mask, decay))


def kernel_bwd(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths, backend: str, activation: str = "tanh",
               compartment_of: Optional[Tensor] = None, mask: Optional[Tensor] = None,
               decay: Optional[Tensor] = None):
    """The provider's scan_bwd: directly in eager mode, through the custom op while tracing."""
    if torch.compiler.is_compiling():
        return torch.ops.diru_fast.scan_bwd(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths, backend,
                                            activation, compartment_of, mask, decay)
    return _provider(backend).scan_bwd(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths,
                                       *_option_args(activation, compartment_of, mask, decay))


class Scan(torch.autograd.Function):
    """``(xp, h0, w_hh, w_int, b_int, w_out, b_out) -> (hs, saved)`` on a kernel provider; the
    options (``activation``, ``compartment_of``, ``mask``, ``decay``) follow ``backend``; of them
    only ``decay`` (time decay, ``[T, B, d]``) gets a gradient."""

    @staticmethod
    def forward(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, backend, activation="tanh", compartment_of=None,
                mask=None, decay=None):
        return kernel_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, backend, True, activation,
                          compartment_of, mask, decay)

    @staticmethod
    def setup_context(ctx, inputs, output):
        xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, backend = inputs[:9]
        activation, compartment_of, mask, decay = _options(inputs)
        hs, saved = output
        ctx.set_materialize_grads(False)  # no zero-filled [T, B, 4d+k] gradient for `saved`
        if torch.compiler.is_compiling():  # compiled graphs have no double backward: saved is a buffer
            ctx.mark_non_differentiable(saved)
        ctx.backend = backend
        ctx.activation = activation
        ctx.xp_dtype = xp.dtype
        ctx.save_for_backward(h0, hs, saved, w_hh, w_int, w_out, lengths, compartment_of, mask, decay)

    @staticmethod
    def backward(ctx, grad_hs: Optional[Tensor], grad_saved: Optional[Tensor]):
        # hs and saved are outputs: under create_graph they come back attached to this node, so the
        # gradients computed below reach the inputs through them (and through h0 and the weights).
        h0, hs, saved, w_hh, w_int, w_out, lengths, compartment_of, mask, decay = ctx.saved_tensors
        options = (ctx.activation, compartment_of, mask, decay)
        if grad_hs is None:
            grad_hs = torch.zeros_like(hs)
        # A compiled graph has no double backward (saved is marked non-differentiable there): its
        # backward is always the kernel's (tracing the contract's loop would fix T in the graph). In
        # eager mode a vmapped backward (jacrev, batched gradients) runs the contract's too.
        if torch.compiler.is_compiling() or (grad_saved is None and not torch.is_grad_enabled()
                                             and not _tracing.transforms_active(grad_hs)):
            step_grads = kernel_bwd(grad_hs.contiguous(), h0, hs, saved, w_hh, w_int, w_out, lengths, ctx.backend,
                                    *options)
        else:
            step_grads = contract.scan_bwd(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths, *options,
                                           grad_saved=grad_saved)
        need = ctx.needs_input_grad
        fused = getattr(_provider(ctx.backend), "gate_products", None)  # the provider's fused o, q (or none)
        grads = input_grads(need, ctx.xp_dtype, step_grads, h0, hs, saved, w_hh, w_int, w_out, compartment_of, mask,
                            decay, gate_products=fused)
        g_decay = None
        if decay is not None and len(need) > 12 and need[12]:
            g_decay = decay_grad(step_grads, h0, hs, w_hh).to(decay.dtype)
        return (*grads, None, None) + (None, None, None, g_decay)[:len(need) - 9]


class TransformableScan(Scan):
    """:class:`Scan` (the same forward and backward) with the rules ``torch.func`` transforms call:
    a batching rule (:meth:`vmap`: ``torch.func.vmap``, model ensembles, ``jacrev``) and a
    forward-mode rule (:meth:`jvp`: ``torch.func.jvp``, ``jacfwd``, ``torch.autograd.forward_ad``).
    Eager mode uses it while such a transform is active; ``torch.compile`` cannot trace a custom
    ``jvp``, so graphs use :class:`Scan`."""

    @staticmethod
    def setup_context(ctx, inputs, output):
        Scan.setup_context(ctx, inputs, output)
        ctx.lengths = inputs[7]  # integer: no tangent
        ctx.options = _options(inputs)[:3]  # no tangents
        ctx.save_for_forward(*inputs[:7], _options(inputs)[3])  # (xp, h0, w_hh, w_int, b_int, w_out, b_out, decay)

    @staticmethod
    def jvp(ctx, *tangents):
        """Forward mode: the tangents of ``(hs, saved)`` from those of the seven tensor inputs, by the
        contract's forward-mode statement (:func:`diru_fast.scan.contract.scan_jvp`, plain PyTorch: the
        kernels have no tangent recurrence of their own; it recomputes the forward alongside)."""
        primals, decay = ctx.saved_tensors[:7], ctx.saved_tensors[7]
        t_decay = tangents[12] if len(tangents) > 12 else None
        return contract.scan_jvp(primals, tangents[:7], ctx.lengths, *ctx.options, decay, t_decay)

    @staticmethod
    def vmap(info, in_dims, xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, backend, activation="tanh",
             compartment_of=None, mask=None, decay=None):
        """The batching rule. A vmapped dimension on the data only (xp, h0, lengths, the dropout mask)
        folds into the kernel's batch rows: one kernel call on ``[T, V*B, ...]``. With batched weights
        (an ensemble of V models) the kernel runs once per member and the results are stacked."""
        size = info.batch_size
        args = (xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths)
        dims = tuple(in_dims[:8]) + (None,) * (8 - len(in_dims[:8]))
        of_dim, mask_dim, decay_dim = (tuple(in_dims[10:13]) + (None, None, None))[:3]
        if all(dim is None for dim in dims[2:7]) and of_dim is None:
            xp_rows = _fold(xp, dims[0], 1, size)  # [T, V*B, 3d+k]
            h0_rows = _fold(h0, dims[1], 0, size)  # [V*B, d]
            len_rows = None if lengths is None else _fold(lengths, dims[7], 0, size)  # [V*B]
            mask_rows = None if mask is None else _fold(mask, mask_dim, 1, size)  # [T, V*B, d]
            decay_rows = None if decay is None else _fold(decay, decay_dim, 1, size)  # [T, V*B, d]
            hs, saved = TransformableScan.apply(xp_rows, h0_rows, w_hh, w_int, b_int, w_out, b_out, len_rows,
                                                backend, activation, compartment_of, mask_rows, decay_rows)
            steps, batch = hs.shape[0], hs.shape[1] // size
            return (hs.view(steps, size, batch, -1), saved.view(steps, size, batch, -1)), (1, 1)

        def member(a: Optional[Tensor], dim: Optional[int], i: int) -> Optional[Tensor]:
            return a if dim is None or a is None else a.select(dim, i).contiguous()

        outs = [TransformableScan.apply(*(member(a, dim, i) for a, dim in zip(args, dims)), backend, activation,
                                        member(compartment_of, of_dim, i), member(mask, mask_dim, i),
                                        member(decay, decay_dim, i))
                for i in range(size)]
        return (torch.stack([o[0] for o in outs]), torch.stack([o[1] for o in outs])), (0, 0)


class StepOptionsScan(torch.autograd.Function):
    """:class:`Scan` with the options in the kernel's step, on a provider with ``STEP_OPTIONS`` (the C++
    CPU kernel): ``(..., compartment_of, mask, decay_rate [d], dt [T, B])`` where time decay comes as
    its rates and gaps (the kernel forms each step's factors ``exp(-softplus(lambda) dt)``) and the
    dropout mask as a :class:`~diru_fast.scan.dropout.CompartmentMask` (its seed: evaluated in the step).
    The backward takes from the kernel what the gradients need (the decayed states, the gradients of
    lambda and dt, the integration inputs ``o``): no ``[T, B, d]`` factors or mask are formed, and neither
    the ``[T*B, 3d+k] x [3d+k, d]`` product of :func:`decay_grad` nor :func:`contract.integration_input`
    runs. Eager mode only; a double backward (or a gradient reaching ``saved``) runs the contract on the
    factors and the mask's tensor, as :class:`Scan`."""

    @staticmethod
    def forward(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, backend, activation, compartment_of, mask,
                decay_rate, dt):
        return get_provider(backend).scan_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, True, activation,
                                              compartment_of, mask, None, decay_rate=decay_rate, dt=dt)

    @staticmethod
    def setup_context(ctx, inputs, output):
        xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, backend, activation, compartment_of, mask, rate, dt = inputs
        hs, saved = output
        ctx.set_materialize_grads(False)
        ctx.backend, ctx.activation, ctx.xp_dtype, ctx.mask = backend, activation, xp.dtype, mask
        ctx.save_for_backward(h0, hs, saved, w_hh, w_int, w_out, lengths, compartment_of, rate, dt)

    @staticmethod
    def backward(ctx, grad_hs: Optional[Tensor], grad_saved: Optional[Tensor]):
        h0, hs, saved, w_hh, w_int, w_out, lengths, compartment_of, rate, dt = ctx.saved_tensors
        need = ctx.needs_input_grad
        if grad_hs is None:
            grad_hs = torch.zeros_like(hs)
        g_rate = g_dt = None
        if grad_saved is None and not torch.is_grad_enabled() and not _tracing.transforms_active(grad_hs):
            *step_grads, hd, g_rate, g_dt, o = get_provider(ctx.backend).scan_bwd(
                grad_hs.contiguous(), h0, hs, saved, w_hh, w_int, w_out, lengths, ctx.activation, compartment_of,
                ctx.mask, None, decay_rate=rate, dt=dt, extended=True)
            grads = input_grads(need, ctx.xp_dtype, step_grads, h0, hs, saved, w_hh, w_int, w_out, compartment_of,
                                ctx.mask, hd=hd, o=o, gate_products=getattr(get_provider(ctx.backend), "gate_products",
                                                                            None))
        else:  # differentiable: the contract on the factors and the mask's tensor, chained to lambda and dt
            mask = as_tensor(ctx.mask)
            decay = None if rate is None else contract.decay_factor(rate, dt)
            options = (ctx.activation, compartment_of, mask, decay)
            step_grads = contract.scan_bwd(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths, *options,
                                           grad_saved=grad_saved)
            grads = input_grads(need, ctx.xp_dtype, step_grads, h0, hs, saved, w_hh, w_int, w_out, compartment_of,
                                mask, decay)
            if rate is not None and (need[12] or need[13]):
                g_decay = decay_grad(step_grads, h0, hs, w_hh) * decay  # dL/d(-softplus(lambda) dt)
                g_rate = -(g_decay * dt.unsqueeze(-1)).sum(dim=(0, 1)) * torch.sigmoid(rate)
                g_dt = -(g_decay * torch.nn.functional.softplus(rate)).sum(-1)
        return (*grads, None, None, None, None, None, g_rate if need[12] else None,
                g_dt.to(dt.dtype) if need[13] else None)


def _fuses_step_options(backend: str, mode: str) -> bool:
    """Whether the options can run in the kernel's step (:class:`StepOptionsScan`)."""
    if mode != "eager" or backend in ("torch", "reference") or _tracing.transforms_active():
        return False
    return bool(getattr(get_provider(backend), "STEP_OPTIONS", False))


def _fold(t: Tensor, dim: Optional[int], where: int, size: int) -> Tensor:
    """Move the vmapped dimension ``dim`` of ``t`` (None: not batched, broadcast it) to ``where`` and
    merge it with the batch-row dimension after it: ``[.., V, B, ..] -> [.., V*B, ..]``."""
    if dim is None:
        t = t.unsqueeze(where).expand(*t.shape[:where], size, *t.shape[where:])
    else:
        t = t.movedim(dim, where)
    return t.reshape(*t.shape[:where], -1, *t.shape[where + 2:]).contiguous()  # the kernels take contiguous


def _options(inputs) -> tuple:
    """``(activation, compartment_of, mask, decay)`` from :class:`Scan`'s inputs (defaults where absent)."""
    return (tuple(inputs[9:]) + ("tanh", None, None, None)[len(inputs) - 9:])[:4]


def decay_grad(step_grads, h0: Tensor, hs: Tensor, w_hh: Tensor) -> Tensor:
    """``dL/ddecay [T, B, d]`` from scan_bwd's per-step gradients: ``(d_yp + d_p W_hh) * h_{t-1}``, one
    GEMM over all T*B rows (:func:`diru_fast.scan.contract.decayed_states`; zero on padded steps;
    docs/THEORY.md §2.3)."""
    d_p, _, d_yp, _ = step_grads
    h_prev, _ = contract.decayed_states(h0, hs, None)
    d_hd = torch.addmm(d_yp.reshape(-1, d_yp.shape[-1]), d_p.reshape(-1, d_p.shape[-1]), w_hh.to(d_p.dtype))
    return d_hd.view_as(d_yp) * h_prev.to(d_hd.dtype)  # [T, B, d]


def input_grads(need, xp_dtype, step_grads, h0, hs, saved, w_hh, w_int, w_out, compartment_of=None, mask=None,
                decay=None, hd=None, o=None, gate_products=None):
    """Gradients of (xp, h0, w_hh, w_int, b_int, w_out, b_out) from scan_bwd's per-step gradients:
    one GEMM per weight over all T*B rows (differentiable, for the double-backward path). With time
    decay the w_hh gradient is over the decayed states ``hd_t = decay_t * h_{t-1}`` (docs/THEORY.md §2.4):
    ``hd [T, B, d]`` where the kernel wrote them, else formed from ``decay``; likewise the integration
    inputs ``o [T, B, d]`` (the w_int gradient's rows) where the kernel wrote them. ``gate_products``: the
    provider's fused ``(saved, d, dtype) -> [T*B, 2, d] | None`` forming o = u s and q = z r in a 16-bit
    GEMM dtype (the same values as the operations below), or None."""
    d_p, d_zp, d_yp, d_h0 = step_grads
    steps, batch, d = hs.shape
    rows = steps * batch
    width = d_p.shape[-1]  # 3d + k
    g_xp = d_p.to(xp_dtype) if need[0] else None
    # The GEMMs' operand dtype: acc (float32 for 16-bit inputs), but bfloat16 for bfloat16 weights, as
    # PyTorch's own bfloat16 path (its bfloat16 GEMMs accumulate in float32; on CPU several times
    # faster than float32 GEMMs); the per-step gradients are rounded to bfloat16 once, here.
    acc = torch.bfloat16 if w_hh.dtype == torch.bfloat16 else d_p.dtype
    g_b_int = d_zp.sum(dim=(0, 1)).to(w_int.dtype) if need[4] else None
    g_b_out = d_yp.sum(dim=(0, 1)).to(w_out.dtype) if need[6] else None
    if d_p.dtype != acc:
        d_p = g_xp if g_xp is not None and g_xp.dtype == acc else d_p.to(acc)
        d_zp, d_yp = d_zp.to(acc), d_yp.to(acc)
    g_w_hh = g_w_int = g_w_out = None
    if need[2] and (decay is not None or hd is not None):  # w_hh: sum_t dP_t^T hd_t
        if hd is None:
            _, hd = contract.decayed_states(h0, hs, decay)
        g_w_hh = (d_p.reshape(rows, width).t() @ hd.reshape(rows, d).to(acc)).to(w_hh.dtype)
    elif need[2]:  # w_hh: sum_t dP_t^T h_{t-1}
        if torch.compiler.is_compiling():
            # one GEMM over [h0; hs][:T]: a view of the T - 1 later steps would make the graph's shape
            # checks tell T = 2 apart from other lengths (a second graph)
            h_prev = torch.cat([h0.unsqueeze(0), hs])[:steps].reshape(rows, d)
            g_w_hh = d_p.reshape(rows, width).t() @ h_prev.to(acc)
        else:  # dP_0^T h0 + sum_{t>0} dP_t^T h_{t-1} (no copy of hs)
            g_w_hh = d_p[0].t() @ h0.to(acc)
            if steps > 1:
                g_w_hh = torch.addmm(g_w_hh, d_p[1:].reshape(rows - batch, width).t(),
                                     hs[:-1].reshape(rows - batch, d).to(acc))
        g_w_hh = g_w_hh.to(w_hh.dtype)
    plain = compartment_of is None and mask is None
    if o is not None:  # the kernel's
        o = o.reshape(rows, d).to(acc)
        q = (saved[..., 2 * d:3 * d] * saved[..., 3 * d:4 * d]).reshape(rows, d).to(acc) if need[5] else None
    elif plain and (need[3] or need[5]):  # o = u*s and q = z*r of every step in one product: [rows, 2, d]
        pairs = saved.reshape(rows, 2, 2, d)  # [u, s], [z, r]
        if acc != saved.dtype and not torch.is_grad_enabled() and not torch.compiler.is_compiling():
            fused = gate_products(saved, d, acc) if gate_products is not None else None
            # else rounded as written: no float32 [rows, 2, d] in between (a fresh allocation's page faults)
            oq = fused if fused is not None else torch.mul(pairs[:, :, 0], pairs[:, :, 1],
                                                           out=saved.new_empty(rows, 2, d, dtype=acc))
        else:
            oq = (pairs[:, :, 0] * pairs[:, :, 1]).to(acc)
        o, q = oq[:, 0], oq[:, 1]
    elif need[3] or need[5]:  # with the options: o = u*s (*k alpha_c) (*mask), q = z*r
        o = contract.integration_input(saved, d, compartment_of, mask).reshape(rows, d).to(acc)
        q = (saved[..., 2 * d:3 * d] * saved[..., 3 * d:4 * d]).reshape(rows, d).to(acc)
    if need[3]:  # w_int: sum_t dZp_t^T o_t
        g_w_int = (d_zp.reshape(rows, d).t() @ o).to(w_int.dtype)
    if need[5]:  # w_out: sum_t dYp_t^T q_t
        g_w_out = (d_yp.reshape(rows, d).t() @ q).to(w_out.dtype)
    g_h0 = d_h0 if need[1] else None
    return g_xp, g_h0, g_w_hh, g_w_int, g_b_int, g_w_out, g_b_out


def scan(
    xp: Tensor,  # [T, B, 3d+k] (k = 0 without attention)
    h0: Tensor,  # [B, d]
    w_hh: Tensor,  # [3d+k, d]
    w_int: Tensor,  # [d, d]
    b_int: Tensor,  # [d]
    w_out: Tensor,  # [d, d]
    b_out: Tensor,  # [d]
    lengths: Optional[Tensor],  # [B] int64
    backend: str,
    activation: str = "tanh",
    compartment_of: Optional[Tensor] = None,  # [d] int64: attention (xp [T, B, 3d+k], w_hh [3d+k, d])
    mask=None,  # [T, B, d] acc, or a CompartmentMask (its seed): compartment dropout
    decay: Optional[Tensor] = None,  # [T, B, d] acc: time decay of the state before each step
    decay_rate: Optional[Tensor] = None,  # [d] acc: time decay as lambda and dt instead of decay
    dt: Optional[Tensor] = None,  # [T, B] acc (0 on padded steps)
) -> Tensor:  # hs: [T, B, d]
    """Run one layer's recurrence on ``backend`` (a kernel provider, "torch", or "reference" while
    tracing); differentiable to any order. The options are the contract's (the caller checked that
    the provider fuses them). Time decay comes as ``decay`` (the factors) or as ``decay_rate`` and ``dt``
    (``decay = contract.decay_factor(decay_rate, dt)``), the dropout mask as a tensor or as a
    :class:`~diru_fast.scan.dropout.CompartmentMask`: formed inside the kernel's step where the provider
    can (:class:`StepOptionsScan`, attention too), else here. By how the call is run
    (:func:`diru_fast._tracing.mode`):

    - eager: the kernel, through :class:`Scan` when a gradient needs it and :class:`TransformableScan`
      under ``torch.func``; for "torch", the contract's loop differentiated by autograd;
    - ``torch.compile`` / ``torch.export``: the custom ops through :class:`Scan`; "torch" and
      "reference" run them with the contract as the kernel, one graph node for any T (their Python
      loop, traced, would unroll at the example's T);
    - ``torch.jit.trace``: the custom op ``scan_fwd`` (inference: the trace has no backward through it);
    - ``torch.onnx.export(dynamo=True)``: one structured loop on every backend (:mod:`.loop`), which
      the exporter writes as an ONNX ``Scan``.
    """
    mode = _tracing.mode()
    in_step = decay_rate is not None or isinstance(mask, CompartmentMask) or compartment_of is not None
    if in_step and decay is None and not isinstance(mask, Tensor) and _fuses_step_options(backend, mode):
        args = (xp.contiguous(), h0.contiguous(), w_hh.contiguous(), w_int.contiguous(), b_int.contiguous(),
                w_out.contiguous(), b_out.contiguous(), lengths)
        dt = None if dt is None else dt.contiguous()
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in args[:7] + (decay_rate, dt)):
            return StepOptionsScan.apply(*args, backend, activation, compartment_of, mask, decay_rate, dt)[0]
        return get_provider(backend).scan_fwd(*args, False, activation, compartment_of, mask, None,
                                              decay_rate=decay_rate, dt=dt)[0]
    mask = as_tensor(mask)  # the other paths take the mask's tensor and the decay factors
    if decay_rate is not None:
        decay = contract.decay_factor(decay_rate, dt)
    if mode == "onnx":  # an ONNX model has no backward: tracing the loop's autograd would only cost time
        args = (t.detach() for t in (xp, h0, w_hh, w_int, b_int, w_out, b_out))
        return loop.contract_scan(*args, lengths, activation, compartment_of, mask,
                                  None if decay is None else decay.detach())
    plain = activation == "tanh" and compartment_of is None and mask is None and decay is None
    if backend in ("torch", "reference"):
        if mode == "eager":
            if plain:
                return contract.scan_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, False)[0]
            return contract.scan_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, False, activation,
                                     compartment_of, mask, decay)[0]
        backend = "torch"  # traced: the contract is the custom ops' kernel (_provider)
    args = (xp.contiguous(), h0.contiguous(), w_hh.contiguous(), w_int.contiguous(), b_int.contiguous(),
            w_out.contiguous(), b_out.contiguous(), lengths)
    # the options ride along only when on, so a plain call's graph and custom-op call are unchanged
    options = () if plain else (activation, compartment_of, None if mask is None else mask.contiguous())
    if decay is not None:
        options += (decay.contiguous(),)
    if mode == "jit":
        return torch.ops.diru_fast.scan_fwd(*args, backend, False, *options)[0]
    if mode == "eager" and _tracing.transforms_active():
        return TransformableScan.apply(*args, backend, *options)[0]
    if torch.is_grad_enabled() and any(t.requires_grad for t in args[:7] + options[3:]):
        return Scan.apply(*args, backend, *options)[0]
    return kernel_fwd(*args, backend, False, *options)[0]  # inference: nothing saved for a backward
