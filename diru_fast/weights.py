"""The fused weight layout every fast path uses, and how it maps to the prototype's parameters.

A DIRU cell's math does not depend on how its d units are split into compartments (docs/THEORY.md §4): the k
dendrites stacked are one d-unit dendrite with block-stacked weights. So one layer is
described by seven tensors (n: input size, d: hidden size)::

    weight_ih   [3d, n]  rows [0, d): W_x of every compartment, stacked in compartment order
                         rows [d, 2d): the x-columns of every compartment's gate
                         rows [2d, 3d): the x-columns of the global gate W_G
    weight_hh   [3d, d]  the same three blocks for the h-columns (W_h; gate h-columns; W_G h-columns)
    bias_ih     [3d]     [b_0..b_{k-1}; g_0..g_{k-1}; b_G]
    weight_int  [d, d],  bias_int [d]   somatic integration W_I, b_I
    weight_out  [d, d],  bias_out [d]   output projection W_O, b_O

(without bias, the three bias tensors are absent). With attention over the k compartments
(``compartment_attention=True``, docs/THEORY.md §1.2–1.6), the prototype's ``nn.Linear(n + d, k)``
``compartment_attention`` appends k rows: ``weight_ih [3d+k, n]`` (its x-columns), ``weight_hh
[3d+k, d]`` (its h-columns), ``bias_ih [3d+k]`` (its bias). The modules hold exactly these tensors as their
parameters; :class:`CellWeights` carries them to the functional ops. The math they feed is stated in
``docs/THEORY.md``.

The prototype keeps the same numbers in per-compartment modules; its ``state_dict`` keys, relative
to one cell, are (m_c = d / k rows per compartment)::

    compartments.{c}.W_x.weight    [m, n]       compartments.{c}.W_h.weight   [m, d]
    compartments.{c}.bias          [m]          compartments.{c}.gate.weight  [m, n + d]  (x first)
    compartments.{c}.gate.bias     [m]
    integration.{weight,bias}      [d, d], [d]  global_gate.{weight,bias}     [d, n + d], [d]
    output_proj.{weight,bias}      [d, d], [d]
    compartment_attention.{weight,bias}  [k, n + d], [k]   (with attention only; x first)

Compartments may have unequal sizes m_c (summing to d): the rows of compartment c are the c-th
block of m_c rows in each of the first two blocks.

:func:`to_prototype` and :func:`from_prototype` convert between the two (differentiably, so the
"reference" backend can step the prototype's cell on the fused parameters), and
:func:`init_prototype_` draws the fused tensors exactly as the prototype's modules draw theirs.
"""

from __future__ import annotations

import math
from typing import Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["CellWeights", "ROLES", "to_prototype", "from_prototype", "prototype_shapes", "init_prototype_",
           "init_decay_rate_"]

# The fused tensors of one cell, in the order CellWeights holds them.
ROLES: Tuple[str, ...] = ("weight_ih", "bias_ih", "weight_hh", "weight_int", "bias_int", "weight_out", "bias_out")
BIAS_ROLES: Tuple[str, ...] = ("bias_ih", "bias_int", "bias_out")


class CellWeights(NamedTuple):
    """One layer and direction's parameters in the fused layout (see the module docstring)."""

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

    @property
    def bias(self) -> bool:
        return self.b_ih is not None


def attention_rows(w: CellWeights) -> int:
    """k when ``w`` holds attention rows (``w_hh [3d+k, d]``), else 0."""
    return w.w_hh.shape[0] - 3 * w.hidden_size


def fused_shapes(input_size: int, hidden_size: int, attention: int = 0) -> Dict[str, Tuple[int, ...]]:
    """Shape of each fused role (``attention``: k attention rows, 0 without attention)."""
    n, d, k = input_size, hidden_size, attention
    return {"weight_ih": (3 * d + k, n), "bias_ih": (3 * d + k,), "weight_hh": (3 * d + k, d), "weight_int": (d, d),
            "bias_int": (d,), "weight_out": (d, d), "bias_out": (d,)}


def prototype_shapes(input_size: int, hidden_size: int, compartment_sizes: Sequence[int],
                     bias: bool = True, attention: bool = False) -> Dict[str, Tuple[int, ...]]:
    """The prototype's keys of one cell (relative to the cell) and their shapes, in its
    ``state_dict`` order (``attention``: with the ``compartment_attention`` keys)."""
    n, d = input_size, hidden_size
    shapes: Dict[str, Tuple[int, ...]] = {}
    for c, m in enumerate(compartment_sizes):
        if bias:
            shapes[f"compartments.{c}.bias"] = (m,)
        shapes[f"compartments.{c}.W_x.weight"] = (m, n)
        shapes[f"compartments.{c}.W_h.weight"] = (m, d)
        shapes[f"compartments.{c}.gate.weight"] = (m, n + d)
        if bias:
            shapes[f"compartments.{c}.gate.bias"] = (m,)
    for name, cols in (("integration", d), ("global_gate", n + d), ("output_proj", d)):
        shapes[f"{name}.weight"] = (d, cols)
        if bias:
            shapes[f"{name}.bias"] = (d,)
    if attention:
        k = len(compartment_sizes)
        shapes["compartment_attention.weight"] = (k, n + d)
        if bias:
            shapes["compartment_attention.bias"] = (k,)
    return shapes


def _blocks(sizes: Sequence[int]) -> List[slice]:
    bounds = [0]
    for m in sizes:
        bounds.append(bounds[-1] + m)
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def to_prototype(w: CellWeights, compartment_sizes: Sequence[int]) -> Dict[str, Tensor]:
    """The prototype's tensors of one cell (keys relative to the cell) from fused weights.

    Differentiable: W_x, W_h and the biases are row views of the fused tensors; the gate weights,
    which span both the x- and the h-columns, are concatenations.
    """
    d = w.hidden_size
    out: Dict[str, Tensor] = {}
    for c, rows in enumerate(_blocks(compartment_sizes)):
        gate = slice(d + rows.start, d + rows.stop)
        if w.b_ih is not None:
            out[f"compartments.{c}.bias"] = w.b_ih[rows]
        out[f"compartments.{c}.W_x.weight"] = w.w_ih[rows]
        out[f"compartments.{c}.W_h.weight"] = w.w_hh[rows]
        out[f"compartments.{c}.gate.weight"] = torch.cat([w.w_ih[gate], w.w_hh[gate]], dim=1)
        if w.b_ih is not None:
            out[f"compartments.{c}.gate.bias"] = w.b_ih[gate]
    out["integration.weight"] = w.w_int
    if w.b_int is not None:
        out["integration.bias"] = w.b_int
    out["global_gate.weight"] = torch.cat([w.w_ih[2 * d:3 * d], w.w_hh[2 * d:3 * d]], dim=1)
    if w.b_ih is not None:
        out["global_gate.bias"] = w.b_ih[2 * d:3 * d]
    out["output_proj.weight"] = w.w_out
    if w.b_out is not None:
        out["output_proj.bias"] = w.b_out
    if attention_rows(w):
        out["compartment_attention.weight"] = torch.cat([w.w_ih[3 * d:], w.w_hh[3 * d:]], dim=1)
        if w.b_ih is not None:
            out["compartment_attention.bias"] = w.b_ih[3 * d:]
    return out


def from_prototype(tensors: Mapping[str, Tensor], input_size: int, compartment_sizes: Sequence[int],
                   bias: bool = True) -> CellWeights:
    """Fused weights from the prototype's tensors of one cell (keys relative to the cell); with
    ``compartment_attention.*`` keys, the attention rows are appended."""
    n = input_size
    k = len(compartment_sizes)
    comp = [f"compartments.{c}." for c in range(k)]
    attention = "compartment_attention.weight" in tensors
    gates = [tensors[p + "gate.weight"] for p in comp] + [tensors["global_gate.weight"]]  # [m_c | d, n + d]
    if attention:
        gates.append(tensors["compartment_attention.weight"])  # [k, n + d]
    w_ih = torch.cat([tensors[p + "W_x.weight"] for p in comp] + [g[:, :n] for g in gates])
    w_hh = torch.cat([tensors[p + "W_h.weight"] for p in comp] + [g[:, n:] for g in gates])
    b_ih = b_int = b_out = None
    if bias:
        b_ih = torch.cat([tensors[p + "bias"] for p in comp] + [tensors[p + "gate.bias"] for p in comp]
                         + [tensors["global_gate.bias"]]
                         + ([tensors["compartment_attention.bias"]] if attention else []))
        b_int, b_out = tensors["integration.bias"], tensors["output_proj.bias"]
    return CellWeights(w_ih, b_ih, w_hh, tensors["integration.weight"], b_int, tensors["output_proj.weight"], b_out)


@torch.no_grad()
def init_prototype_(w: CellWeights, compartment_sizes: Sequence[int]) -> None:
    """Fill fused weights in place exactly as the prototype initialises its modules.

    Each of the prototype's ``nn.Linear`` layers draws its weight with ``nn.init.kaiming_uniform_(a=√5)``
    and its bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the compartments' own biases start at zero.
    The draws are made in the prototype's module order and shapes, on the parameters' device and
    dtype, so ``torch.manual_seed(s)`` gives the same numbers as the prototype's (and
    ``diru_fast.reference``'s) cell built after the same seed. Attention rows, if any, are the
    ``nn.Linear(n + d, k)`` that :class:`diru_fast.reference.DIRUCell` builds last (after
    ``output_proj``), so they are drawn last.
    """
    n, d = w.input_size, w.hidden_size
    like = w.w_hh

    def linear(rows: int, fan_in: int, bias: bool = w.bias) -> Tuple[Tensor, Optional[Tensor]]:
        """What nn.Linear(fan_in, rows, bias) draws."""
        weight = torch.empty(rows, fan_in, device=like.device, dtype=like.dtype)
        torch.nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        if not bias:
            return weight, None
        bound = 1 / math.sqrt(fan_in)
        return weight, torch.empty(rows, device=like.device, dtype=like.dtype).uniform_(-bound, bound)

    for rows in _blocks(compartment_sizes):
        m = rows.stop - rows.start
        gate = slice(d + rows.start, d + rows.stop)
        w.w_ih[rows] = linear(m, n, bias=False)[0]  # W_x
        w.w_hh[rows] = linear(m, d, bias=False)[0]  # W_h
        gate_w, gate_b = linear(m, n + d)
        w.w_ih[gate], w.w_hh[gate] = gate_w[:, :n], gate_w[:, n:]
        if w.b_ih is not None:
            w.b_ih[rows] = 0.0  # the compartment's own bias
            w.b_ih[gate] = gate_b
    for weight, bias, fan_in in ((w.w_int, w.b_int, d), (None, None, n + d), (w.w_out, w.b_out, d)):
        drawn_w, drawn_b = linear(d, fan_in)
        if weight is None:  # the global gate W_G over [x; h]
            w.w_ih[2 * d:3 * d], w.w_hh[2 * d:3 * d] = drawn_w[:, :n], drawn_w[:, n:]
            if w.b_ih is not None:
                w.b_ih[2 * d:3 * d] = drawn_b
            continue
        weight.copy_(drawn_w)
        if bias is not None:
            bias.copy_(drawn_b)
    k = attention_rows(w)
    if k:  # compartment_attention: nn.Linear(n + d, k), built after the cell's other modules
        drawn_w, drawn_b = linear(k, n + d)
        w.w_ih[3 * d:], w.w_hh[3 * d:] = drawn_w[:, :n], drawn_w[:, n:]
        if w.b_ih is not None:
            w.b_ih[3 * d:] = drawn_b


#: The time constants a fresh ``decay_rate`` spans: rates softplus(lambda) from 1e-2 to 1 per unit of dt.
DECAY_RATE_RANGE: Tuple[float, float] = (1e-2, 1.0)


def init_decay_rate_(decay_rate: Tensor) -> None:
    """Initialise time decay's ``decay_rate`` (lambda, ``[d]``) in place, without the RNG: the rates
    ``softplus(lambda_j)`` spread geometrically over :data:`DECAY_RATE_RANGE`, so the units start with
    memories from about 1 to about 100 units of dt (each unit keeps ``exp(-rate_j dt)`` of its state;
    docs/THEORY.md §1.6)."""
    lo, hi = DECAY_RATE_RANGE
    d = decay_rate.shape[0]
    with torch.no_grad():
        rates = torch.logspace(math.log10(lo), math.log10(hi), d, dtype=torch.float64) if d > 1 else (
            torch.full((d,), math.sqrt(lo * hi), dtype=torch.float64))
        decay_rate.copy_(torch.log(torch.expm1(rates)))  # the inverse of softplus
