"""Backend "reference": the prototype's own cell, :class:`diru_fast.reference.DIRUCell`, stepped in time.

The fused weights are handed to the cell as its parameters (:func:`diru_fast.weights.to_prototype`
views, through ``torch.func.functional_call``), so gradients reach the fused parameters and the
numbers are the prototype's, step by step and compartment by compartment.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Optional

import torch
from torch import Tensor, nn

from .. import reference
from ..weights import CellWeights, to_prototype


class _Stepper(nn.Module):
    """The time loop around one reference cell; padded steps keep the state (selected, as in
    the kernel contract)."""

    def __init__(self, cell: reference.DIRUCell):
        super().__init__()
        self.cell = cell

    def forward(self, x: Tensor, h: Tensor, lengths: Optional[Tensor]) -> Tensor:
        # x: [T, B, n], h: [B, d] -> hs: [T, B, d]; steps past a sequence's length repeat its last state
        outputs = []
        for t in range(x.shape[0]):
            h_new = self.cell(x[t], h)
            if lengths is not None:
                h_new = torch.where((t < lengths).unsqueeze(1), h_new, h)
            outputs.append(h_new)
            h = h_new
        return torch.stack(outputs)


@lru_cache(maxsize=None)
def _stepper(input_size: int, hidden_size: int, num_compartments: int, bias: bool) -> _Stepper:
    # A shell: functional_call supplies every parameter. Built outside any torch.func transform the
    # first call may run under (vmap refuses the random initialisation, even of meta tensors).
    with torch.device("meta"), torch._C._DisableFuncTorch():
        return _Stepper(reference.DIRUCell(input_size, hidden_size, num_compartments, bias=bias))


def reference_scan(
    x: Tensor,  # [T, B, n]
    weights: CellWeights,
    h0: Tensor,  # [B, d]
    lengths: Optional[Tensor],  # [B] int64, 1 <= lengths <= T, or None
    num_compartments: int,
) -> Tensor:  # hs: [T, B, d]
    d, k = weights.hidden_size, num_compartments
    stepper = _stepper(weights.input_size, d, k, weights.bias)
    params = {"cell." + key: value for key, value in to_prototype(weights, [d // k] * k).items()}
    return torch.func.functional_call(stepper, params, (x, h0, lengths))
