"""Backend "reference": the prototype's own cell, :class:`diru_fast.reference.DIRUCell`, stepped in time.

The fused weights are handed to the cell as its parameters (:func:`diru_fast.weights.to_prototype`
views, through ``torch.func.functional_call``), so gradients reach the fused parameters and the
numbers are the prototype's, step by step and compartment by compartment. The options reach the
cell as its constructor's (``activation``, ``compartment_sizes``, attention when the weights hold
attention rows); compartment dropout is the caller's mask ``[T, B, d]``, one row of it per step, so
the numbers are those of the fast paths under the same draw.
"""

from __future__ import annotations

import copy
import threading
from functools import lru_cache
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .. import reference
from ..weights import CellWeights, attention_rows, to_prototype


class _Stepper(nn.Module):
    """The time loop around one reference cell; padded steps keep the state (selected, as in
    the kernel contract)."""

    def __init__(self, cell: reference.DIRUCell):
        super().__init__()
        self.cell = cell

    def forward(self, x: Tensor, h: Tensor, lengths: Optional[Tensor], mask: Optional[Tensor] = None,
                dt: Optional[Tensor] = None) -> Tensor:
        # x: [T, B, n], h: [B, d], mask: [T, B, d] or None, dt: [T, B] (time decay) or None -> hs: [T, B, d];
        # steps past a sequence's length repeat its last state (undecayed)
        outputs = []
        for t in range(x.shape[0]):
            h_new = self.cell(x[t], h, None if mask is None else mask[t], None if dt is None else dt[t])
            if lengths is not None:
                h_new = torch.where((t < lengths).unsqueeze(1), h_new, h)
            outputs.append(h_new)
            h = h_new
        return torch.stack(outputs)


_build_lock = threading.Lock()
_per_thread = threading.local()


def _stepper(*key) -> _Stepper:
    """This thread's shell for ``key`` (the arguments of :func:`_shell`). functional_call swaps the
    parameters into the module it runs, so a module shared by threads would run one thread's
    forward on another's (or on the shell's meta) tensors: each thread steps its own copy."""
    shells = _per_thread.__dict__.setdefault("shells", {})
    stepper = shells.get(key)
    if stepper is None:
        with _build_lock, torch._C._DisableFuncTorch():
            stepper = shells[key] = copy.deepcopy(_shell(*key))
    return stepper


@lru_cache(maxsize=None)
def _shell(input_size: int, hidden_size: int, compartment_sizes: Tuple[int, ...], bias: bool, activation: str,
           attention: bool, time_decay: bool = False) -> _Stepper:
    # A shell: functional_call supplies every parameter. Built outside any torch.func transform the
    # first call may run under (vmap refuses the random initialisation, even of meta tensors). The
    # CPU RNG is forked: building the shell must not move the stream the dropout masks are drawn from.
    with torch.random.fork_rng(devices=[]), torch.device("meta"), torch._C._DisableFuncTorch():
        return _Stepper(reference.DIRUCell(input_size, hidden_size, bias=bias, activation=activation,
                                           compartment_sizes=compartment_sizes, compartment_attention=attention,
                                           time_decay=time_decay))


def reference_scan(
    x: Tensor,  # [T, B, n]
    weights: CellWeights,
    h0: Tensor,  # [B, d]
    lengths: Optional[Tensor],  # [B] int64, 1 <= lengths <= T, or None
    compartment_sizes: Sequence[int],
    activation: str = "tanh",
    mask: Optional[Tensor] = None,  # [T, B, d]: compartment dropout, or None
    decay_rate: Optional[Tensor] = None,  # [d]: time decay's lambda, or None
    dt: Optional[Tensor] = None,  # [T, B]: the gap each step decays by (0 on padded steps)
) -> Tensor:  # hs: [T, B, d]
    """``compartment_sizes``: the k sizes (an int k: k equal ones); attention is on when the weights
    hold its rows (:func:`diru_fast.weights.attention_rows`); time decay when ``decay_rate`` is given
    (the cell decays the state by its own statement of the decay)."""
    d = weights.hidden_size
    if isinstance(compartment_sizes, int):
        compartment_sizes = [d // compartment_sizes] * compartment_sizes
    sizes = tuple(compartment_sizes)
    decays = decay_rate is not None
    stepper = _stepper(weights.input_size, d, sizes, weights.bias, activation, attention_rows(weights) > 0, decays)
    params = {"cell." + key: value for key, value in to_prototype(weights, sizes).items()}
    if decays:
        params["cell.decay_rate"] = decay_rate
        if dt is None:
            dt = x.new_ones(x.shape[0], x.shape[1], dtype=decay_rate.dtype)
    return torch.func.functional_call(stepper, params, (x, h0, lengths, mask, dt if decays else None))
