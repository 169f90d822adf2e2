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

    This runs on every forward, so it is written for speed (profiled at the seed shape: reading
    26 parameters through ``nn.Module.__getattr__`` and slicing each gate took longer than the
    CPU kernel's per-step work): parameters are read from the modules' dicts when they are plain
    parameters, and the gate weights are concatenated once, then split into x- and h-columns.
    """
    n = cell.input_size
    comps = list(_sub(cell, "compartments"))
    gate_mods = [_sub(c, "gate") for c in comps]
    global_gate, integration, output = _sub(cell, "global_gate"), _sub(cell, "integration"), _sub(cell, "output_proj")
    gates = torch.cat([_param(g, "weight") for g in gate_mods] + [_param(global_gate, "weight")])  # [2d, n + d]
    w_ih = torch.cat([_param(_sub(c, "W_x"), "weight") for c in comps] + [gates[:, :n]])  # [3d, n]
    w_hh = torch.cat([_param(_sub(c, "W_h"), "weight") for c in comps] + [gates[:, n:]])  # [3d, d]
    b_int = _param(integration, "bias")
    if b_int is not None:
        b_ih = torch.cat([_param(c, "bias") for c in comps] + [_param(g, "bias") for g in gate_mods]
                         + [_param(global_gate, "bias")])  # [3d]
    else:
        b_ih = None
    return CellWeights(w_ih, b_ih, w_hh, _param(integration, "weight"), b_int,
                       _param(output, "weight"), _param(output, "bias"))


def _sub(module: nn.Module, name: str) -> nn.Module:
    """``getattr(module, name)`` for a submodule, without ``nn.Module.__getattr__`` when it is a plain one."""
    sub = module._modules.get(name)
    return sub if sub is not None else getattr(module, name)


def _param(module: nn.Module, name: str) -> Optional[Tensor]:
    """``getattr(module, name)`` for a parameter; a dict lookup when it is a plain parameter
    (parametrized or hooked weights go through ``getattr``)."""
    p = module._parameters.get(name)
    return p if p is not None else getattr(module, name)
