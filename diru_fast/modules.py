"""The fast modules: ``DIRUCell`` (one step), ``DIRULayer`` (``nn.GRU``-style), ``DIRU`` (the seed's model).

They keep the seed's parameter structure (so the seed's ``state_dict`` keys, see
:mod:`diru_fast.reference`) and run through :mod:`diru_fast.functional` on the backend
chosen by ``backend=`` (see :mod:`diru_fast.backends`).
"""

from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from . import functional as Fd
from . import reference
from .backends import check_backend_name
from .functional import Lengths
from .weights import CellWeights, fuse_cell_weights

__all__ = ["DIRUCell", "DIRULayer", "DIRU"]


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class DIRUCell(reference.DIRUCell):
    """One DIRU step with the ``torch.nn.GRUCell`` conventions.

    ``forward(input [B, n] or [n], hx [B, d] or None) -> h' [B, d]``. Parameters are the
    seed's (``compartments.{c}.W_x`` ...), so ``state_dict`` keys match the reference cell.
    """

    def __init__(self, input_size: int, hidden_size: int, num_compartments: int = 4, bias: bool = True,
                 *, backend: str = "auto", device=None, dtype=None):
        super().__init__(input_size, hidden_size, num_compartments, bias=bias)
        self.backend = check_backend_name(backend)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def fused_weights(self) -> CellWeights:
        return fuse_cell_weights(self)

    def forward(self, input: Tensor, hx: Optional[Tensor] = None) -> Tensor:  # type: ignore[override]
        return Fd.diru_cell(input, self.fused_weights(), hx,
                            num_compartments=self.num_compartments, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_compartments={self.num_compartments}, "
                f"backend={self.backend!r}")


def _make_cells(input_size: int, hidden_size: int, num_layers: int, directions: int,
                num_compartments: int, bias: bool) -> nn.ModuleList:
    return nn.ModuleList(
        DIRUCell(input_size if layer == 0 else hidden_size * directions, hidden_size, num_compartments, bias)
        for layer in range(num_layers)
    )


class DIRULayer(nn.Module):
    """A (multi-layer, optionally bidirectional) DIRU with the ``torch.nn.GRU`` conventions.

    ``forward(input, h0=None, lengths=None) -> (output, h_n)``:

    - input ``[T, B, n]`` (``[B, T, n]`` if ``batch_first``), unbatched ``[T, n]``, or a
      ``PackedSequence``; output likewise with ``directions * hidden_size`` features.
    - ``h0`` / ``h_n``: ``[num_layers * directions, B, hidden_size]``.
    - ``lengths`` (or a PackedSequence): padded steps leave the state unchanged and give
      zero outputs; ``h_n`` is each sequence's state at its own last step.

    Parameters: ``cells.{l}.…`` (forward direction) and ``cells_reverse.{l}.…`` (reverse),
    each a :class:`DIRUCell` with the seed's parameter names.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 num_compartments: int = 4, *, backend: str = "auto", check_finite: bool = False,
                 device=None, dtype=None):
        super().__init__()
        reference.check_sizes(input_size, hidden_size, num_compartments)
        _check_positive_int("num_layers", num_layers)
        if not (isinstance(dropout, (int, float)) and 0.0 <= dropout <= 1.0):
            raise ValueError(f"dropout must be a number in [0, 1], got {dropout!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.num_compartments = num_compartments
        self.backend = check_backend_name(backend)
        self.check_finite = check_finite
        directions = 2 if bidirectional else 1
        self.cells = _make_cells(input_size, hidden_size, num_layers, directions, num_compartments, bias)
        if bidirectional:
            self.cells_reverse = _make_cells(input_size, hidden_size, num_layers, directions,
                                             num_compartments, bias)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def fused_weights(self) -> List[List[CellWeights]]:
        """``[layer][direction]`` weights in the fused layout (differentiable)."""
        stacks = [self.cells] + ([self.cells_reverse] if self.bidirectional else [])
        return [[fuse_cell_weights(cells[layer]) for cells in stacks] for layer in range(self.num_layers)]

    def forward(self, input: Union[Tensor, PackedSequence], h0: Optional[Tensor] = None,
                lengths: Lengths = None) -> Tuple[Union[Tensor, PackedSequence], Tensor]:
        return Fd.diru(input, self.fused_weights(), h0, lengths, batch_first=self.batch_first,
                       dropout=self.dropout, training=self.training,
                       num_compartments=self.num_compartments, backend=self.backend,
                       check_finite=self.check_finite)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        s += f", num_compartments={self.num_compartments}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s + f", backend={self.backend!r}"


class DIRU(nn.Module):
    """The seed's model on the fast path: stacked DIRU layers and a linear head.

    ``model(x)`` with ``x: [B, T, n]`` returns ``[B, output_size]`` from the last layer's
    last state, or ``[B, T, output_size]`` with ``return_sequences=True`` (constructor
    default, overridable per call). ``lengths`` takes each sequence's own last state.
    ``state_dict`` keys are the seed's: ``cells.{l}.…`` and ``fc_out.{weight,bias}``.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, num_compartments: int = 4,
                 num_layers: int = 1, return_sequences: bool = False, *, backend: str = "auto",
                 check_finite: bool = False, device=None, dtype=None):
        super().__init__()
        reference.check_sizes(input_size, hidden_size, num_compartments)
        _check_positive_int("num_layers", num_layers)
        _check_positive_int("output_size", output_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.output_size = output_size
        self.num_compartments = num_compartments
        self.num_layers = num_layers
        self.return_sequences = return_sequences
        self.backend = check_backend_name(backend)
        self.check_finite = check_finite
        self.cells = _make_cells(input_size, hidden_size, num_layers, 1, num_compartments, True)
        self.fc_out = nn.Linear(hidden_size, output_size)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    def forward(self, x: Tensor, lengths: Lengths = None,
                return_sequences: Optional[bool] = None) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 3:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"DIRU expects x of shape (batch, seq, input_size), got {shape}")
        weights = [[fuse_cell_weights(cell)] for cell in self.cells]
        output, h_n = Fd.diru(x, weights, None, lengths, batch_first=True,
                              num_compartments=self.num_compartments, backend=self.backend,
                              check_finite=self.check_finite)
        if self.return_sequences if return_sequences is None else return_sequences:
            return self.fc_out(output)  # [B, T, output_size]
        return self.fc_out(h_n[-1])  # [B, output_size]

    def extra_repr(self) -> str:
        return f"backend={self.backend!r}"
