"""The recurrence as one structured loop, for the ONNX exporter.

An ONNX model cannot call our kernels, and the Python loop over the T steps that backends "torch" and
"reference" run in eager mode would unroll when traced (a graph that grows with T and holds only
for the T it was traced at). Under ``torch.onnx.export(..., dynamo=True)`` every backend therefore
runs the kernel contract's step (:func:`diru_fast.scan.contract.step`) as the body of PyTorch's
higher-order ``scan`` operator, which ``torch.export`` keeps with a symbolic T and the exporter
writes as one ONNX ``Scan``.

(``torch.compile`` and ``torch.export`` take the custom ops instead, see
:func:`diru_fast.scan.ops.scan`: tracing this loop's autograd costs seconds per layer, and in torch
2.13 Inductor fails to lower its backward at some shapes; the custom op is one node for any T.)

Padded steps (``t >= lengths[b]``) keep the state, selected as in the contract.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import contract


def _live(lengths: Optional[Tensor], steps, like: Tensor) -> Tensor:
    """[T, B, 1] bool: which rows are live at each step (all of them without lengths)."""
    if lengths is None:
        return like.new_ones(steps, like.shape[1], 1, dtype=torch.bool)
    t = torch.arange(steps, device=lengths.device)
    return (t.unsqueeze(1) < lengths.unsqueeze(0)).unsqueeze(2)


def _hop_scan():
    from torch._higher_order_ops.scan import scan  # loaded by `import torch`; private path, public op

    return scan


def contract_scan(
    xp: Tensor,  # [T, B, 3d+k]
    h0: Tensor,  # [B, d]
    w_hh: Tensor,  # [3d, d]
    w_int: Tensor,  # [d, d]
    b_int: Tensor,  # [d]
    w_out: Tensor,  # [d, d]
    b_out: Tensor,  # [d]
    lengths: Optional[Tensor],  # [B] int64
    activation: str = "tanh",
    compartment_of: Optional[Tensor] = None,  # [d] int64: attention (xp [T, B, 3d+k])
    mask: Optional[Tensor] = None,  # [T, B, d]: compartment dropout (an exported model is in eval: None)
    decay: Optional[Tensor] = None,  # [T, B, d]: time decay of the state before each step
) -> Tensor:  # hs: [T, B, d], dtype of xp
    """The contract's forward (``scan_fwd(..., need_saved=False)[0]``) as one traced loop."""
    acc = contract.acc_dtype(xp.dtype)
    w_hh_t, w_int_t, w_out_t = w_hh.to(acc).t(), w_int.to(acc).t(), w_out.to(acc).t()
    b_int, b_out = b_int.to(acc), b_out.to(acc)

    def body(h: Tensor, xs):  # h [B, d] acc; xp_t [B, 3d+k], live_t [B, 1] (, mask_t, decay_t [B, d]) -> (h_t, h_t)
        xp_t, live_t = xs[0], xs[1]
        mask_t = xs[2].to(acc) if mask is not None else None
        hd = h * xs[-1].to(acc) if decay is not None else h
        h_new = contract.step(xp_t.to(acc), hd, w_hh_t, w_int_t, b_int, w_out_t, b_out, activation, compartment_of,
                              mask_t)[0]
        h_new = torch.where(live_t, h_new, h)
        return h_new, h_new.clone()  # the carry and the step's output may not alias

    xs = (xp, _live(lengths, xp.shape[0], xp)) + (() if mask is None else (mask,)) + (() if decay is None else (decay,))
    _, hs = _hop_scan()(body, h0.to(acc), xs)
    return hs.to(xp.dtype)
