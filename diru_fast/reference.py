"""Reference modules: the prototype's DIRU, line by line, in plain PyTorch.

These are the readable statement of the published math (docs/THEORY.md) that every fast path is
tested against. They keep the prototype's module structure, so their ``state_dict`` keys are
the prototype's keys, and a checkpoint moves freely between them, the fast modules and the
prototype's own code::

    cells.{l}.compartments.{c}.W_x.weight     [m, n]
    cells.{l}.compartments.{c}.W_h.weight     [m, d]
    cells.{l}.compartments.{c}.bias           [m]
    cells.{l}.compartments.{c}.gate.weight    [m, n + d]   (over [x; h], x first)
    cells.{l}.compartments.{c}.gate.bias      [m]
    cells.{l}.integration.{weight,bias}       [d, d], [d]
    cells.{l}.global_gate.{weight,bias}       [d, n + d], [d]
    cells.{l}.output_proj.{weight,bias}       [d, d], [d]
    cells.{l}.compartment_attention.{weight,bias}  [k, n + d], [k]   (compartment_attention=True)
    fc_out.{weight,bias}                      [out, d], [out]

The options (docs/THEORY.md §1.2–1.6), as the prototype's README describes them:
``activation="relu"`` (``nn.ReLU`` instead of ``nn.Tanh`` in each dendrite), ``compartment_sizes``
(unequal compartments), ``compartment_attention`` (an ``nn.Linear(n + d, k)`` whose softmax over the
k compartments scales each compartment's output by ``k * alpha_c``) and ``compartment_dropout``
(dropout on the concatenated compartment outputs, after the attention scaling).

Nothing here is fast on purpose: one Python step per time step, one per compartment.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from ._validation import as_int, as_real
from .baselines import LSTMModel  # the prototype's baseline; defined with the other baselines
from .weights import init_decay_rate_

__all__ = ["DendriteCompartment", "DIRUCell", "DIRU", "LSTMModel", "check_sizes", "check_options",
           "default_compartment_sizes", "DEFAULT_NUM_COMPARTMENTS"]

ACTIVATIONS = ("tanh", "relu")


#: The number of compartments when neither ``num_compartments`` nor ``compartment_sizes`` is given
#: (fewer when ``hidden_size`` is smaller: one unit each).
DEFAULT_NUM_COMPARTMENTS = 4


def default_compartment_sizes(hidden_size: int) -> Tuple[int, ...]:
    """The compartments of a cell built without ``num_compartments`` or ``compartment_sizes``:
    ``k = min(4, d)`` of near-equal sizes, the first ``d mod k`` one unit larger (``d = 10``:
    ``(3, 3, 2, 2)``; ``d = 51``: ``(13, 13, 13, 12)``; ``d = 3``: ``(1, 1, 1)``); ``d / 4`` each
    when 4 divides d. For the plain cell the split does not change the function (the k dendrites
    are one d-unit dendrite with block-stacked weights, docs/THEORY.md §4); it decides the blocks of
    attention and the prototype's checkpoint keys."""
    k = min(DEFAULT_NUM_COMPARTMENTS, hidden_size)
    q, r = divmod(hidden_size, k)
    return (q + 1,) * r + (q,) * (k - r)


def check_options(hidden_size: int, num_compartments: Optional[int], compartment_sizes: Optional[Sequence[int]],
                  activation: str = "tanh", compartment_dropout: float = 0.0,
                  compartment_attention: bool = False) -> Tuple[int, ...]:
    """Validate the options; return the compartment sizes (Python ints). ``num_compartments`` k: k
    equal ones, ``d / k`` each (ValueError if k does not divide d); ``compartment_sizes``: those
    (``num_compartments``, if given, must be their number); neither: :func:`default_compartment_sizes`.
    Sizes and probabilities may be NumPy numbers."""
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    if not isinstance(compartment_attention, bool):
        raise TypeError(f"compartment_attention must be a bool, got {type(compartment_attention).__name__}")
    p = as_real(compartment_dropout)
    if p is None or not 0.0 <= p < 1.0:
        raise ValueError(f"compartment_dropout must be a number in [0, 1), got {compartment_dropout!r}")
    if compartment_sizes is None:
        if num_compartments is None:
            check_sizes(1, hidden_size, 1)
            return default_compartment_sizes(int(hidden_size))
        m = check_sizes(1, hidden_size, num_compartments)
        return (m,) * int(num_compartments)
    if isinstance(compartment_sizes, (str, bytes)) or not hasattr(compartment_sizes, "__len__"):
        raise TypeError(f"compartment_sizes must be a sequence of ints, got {type(compartment_sizes).__name__}")
    sizes = tuple(as_int(m) for m in compartment_sizes)
    if not sizes:
        raise ValueError("compartment_sizes must hold at least one size")
    if any(m is None for m in sizes):
        raise TypeError(f"compartment_sizes must hold ints, got {compartment_sizes!r}")
    if any(m <= 0 for m in sizes):
        raise ValueError(f"compartment_sizes must be positive, got {list(sizes)}")
    if sum(sizes) != hidden_size:
        raise ValueError(f"compartment_sizes {list(sizes)} sum to {sum(sizes)}, not hidden_size ({hidden_size})")
    if num_compartments is not None and num_compartments != len(sizes):
        raise ValueError(f"num_compartments ({num_compartments}) disagrees with compartment_sizes {list(sizes)} "
                         f"({len(sizes)} compartments); pass one of them")
    return sizes


def check_sizes(input_size: int, hidden_size: int, num_compartments: int) -> int:
    """Validate the cell's sizes (Python or NumPy ints); return the compartment size ``m = d / k``."""
    values = {}
    for name, value in (
        ("input_size", input_size),
        ("hidden_size", hidden_size),
        ("num_compartments", num_compartments),
    ):
        number = as_int(value)
        if number is None:
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if number <= 0:
            raise ValueError(f"{name} must be positive, got {number}")
        values[name] = number
    d, k = values["hidden_size"], values["num_compartments"]
    if d % k != 0:
        raise ValueError(
            f"hidden_size ({d}) must be divisible by num_compartments ({k}): each compartment has "
            f"hidden_size / num_compartments units (leave num_compartments out for near-equal compartments, "
            f"or pass compartment_sizes)"
        )
    return d // k


class DendriteCompartment(nn.Module):
    """One dendrite c with m units.

    a_c = W_x x + W_h h + b          (local pre-activation)
    u_c = tanh(a_c)                  (local nonlinearity; relu with activation="relu")
    s_c = sigmoid(gate([x; h]))      (voltage-gated channel)
    o_c = u_c * s_c
    """

    def __init__(self, input_size: int, compartment_size: int, hidden_size: int, bias: bool = True,
                 activation: str = "tanh"):
        super().__init__()
        self.W_x = nn.Linear(input_size, compartment_size, bias=False)
        self.W_h = nn.Linear(hidden_size, compartment_size, bias=False)
        if bias:
            self.bias = nn.Parameter(torch.zeros(compartment_size))
        else:
            self.register_parameter("bias", None)
        self.gate = nn.Linear(input_size + hidden_size, compartment_size, bias=bias)
        self.activation = nn.ReLU() if activation == "relu" else nn.Tanh()

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        # x: [B, n], h: [B, d] -> o_c: [B, m]
        a = self.W_x(x) + self.W_h(h)
        if self.bias is not None:
            a = a + self.bias
        u = self.activation(a)
        s = torch.sigmoid(self.gate(torch.cat([x, h], dim=-1)))
        return u * s


class DIRUCell(nn.Module):
    """One DIRU step: k dendrites, somatic integration, global gate, output projection.

    o     = [o_0; ...; o_{k-1}]
    (attention)  alpha = softmax(A [x; h] + a) over the k compartments;  o_c <- k * alpha_c * o_c
    (dropout)    o <- dropout(o)  (training only)
    z   = tanh(W_I o + b_I)
    r   = sigmoid(W_G [x; h] + b_G)
    h'  = tanh(W_O (z * r) + b_O + h)

    ``forward(x, h, mask=None, dt=None)``: ``mask [B, d]`` (values 0 or 1/(1-p)), when given, is the
    dropout applied instead of drawing one (the "reference" backend passes the mask the fast paths use).

    With ``time_decay=True`` (irregular series, docs/THEORY.md §1.6) the state first decays with the time
    ``dt [B]`` (None: 1) since the previous observation, ``h <- exp(-softplus(decay_rate) * dt) * h``,
    and the step above runs on the decayed state; ``decay_rate [d]`` is the cell's parameter.
    """

    def __init__(self, input_size: int, hidden_size: int, num_compartments: Optional[int] = None, bias: bool = True,
                 *, activation: str = "tanh", compartment_sizes: Optional[Sequence[int]] = None,
                 compartment_attention: bool = False, compartment_dropout: float = 0.0, time_decay: bool = False):
        super().__init__()
        check_sizes(input_size, hidden_size, 1)
        if not isinstance(time_decay, bool):
            raise TypeError(f"time_decay must be a bool, got {type(time_decay).__name__}")
        sizes = check_options(hidden_size, num_compartments, compartment_sizes, activation, compartment_dropout,
                              compartment_attention)
        input_size, hidden_size = int(input_size), int(hidden_size)  # a NumPy int stays out of the module
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_compartments = len(sizes)
        self.compartment_sizes = sizes
        self.compartment_size = sizes[0] if len(set(sizes)) == 1 else None  # None: unequal sizes
        self.activation = activation
        self.compartments = nn.ModuleList(
            [DendriteCompartment(input_size, m, hidden_size, bias=bias, activation=activation) for m in sizes]
        )
        self.integration = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.global_gate = nn.Linear(input_size + hidden_size, hidden_size, bias=bias)
        self.output_proj = nn.Linear(hidden_size, hidden_size, bias=bias)
        if compartment_attention:  # built last: its draws follow those of the plain cell
            self.compartment_attention = nn.Linear(input_size + hidden_size, len(sizes), bias=bias)
        else:
            self.compartment_attention = None
        self.dropout = nn.Dropout(float(compartment_dropout))
        self.time_decay = time_decay
        if time_decay:  # drawn without the RNG: the other parameters keep their draws
            self.decay_rate = nn.Parameter(torch.empty(hidden_size))
            init_decay_rate_(self.decay_rate)
        else:
            self.register_parameter("decay_rate", None)

    def forward(self, x: torch.Tensor, h: torch.Tensor, mask: Optional[torch.Tensor] = None,
                dt: Optional[torch.Tensor] = None) -> torch.Tensor:
        # x: [B, n], h: [B, d], mask: [B, d] or None, dt: [B] or None -> h': [B, d]
        if self.decay_rate is not None:
            gap = torch.ones_like(h[:, :1]) if dt is None else dt.to(h.dtype).unsqueeze(-1)  # [B, 1]
            h = torch.exp(-torch.nn.functional.softplus(self.decay_rate) * gap) * h
        elif dt is not None:
            raise ValueError("dt was given to a cell without time_decay (construct it with time_decay=True)")
        outputs = [compartment(x, h) for compartment in self.compartments]  # k x [B, m_c]
        if self.compartment_attention is not None:
            k = len(outputs)
            alpha = torch.softmax(self.compartment_attention(torch.cat([x, h], dim=-1)), dim=-1)  # [B, k]
            outputs = [k * alpha[:, c:c + 1] * o_c for c, o_c in enumerate(outputs)]
        o = torch.cat(outputs, dim=-1)
        if mask is not None:
            o = o * mask.to(o.dtype)
        elif self.dropout.p > 0:
            o = self.dropout(o)
        z = torch.tanh(self.integration(o))
        r = torch.sigmoid(self.global_gate(torch.cat([x, h], dim=-1)))
        return torch.tanh(self.output_proj(z * r) + h)


class DIRU(nn.Module):
    """The prototype's model: stacked DIRU cells, stepped together, and a linear head.

    ``x: [B, T, n]`` -> ``[B, output]`` from the last layer's last state, or
    ``[B, T, output]`` with ``return_sequences=True``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        num_compartments: Optional[int] = None,
        num_layers: int = 1,
        return_sequences: bool = False,
        *,
        activation: str = "tanh",
        compartment_sizes: Optional[Sequence[int]] = None,
        compartment_attention: bool = False,
        compartment_dropout: float = 0.0,
        time_decay: bool = False,
    ):
        super().__init__()
        options = dict(activation=activation, compartment_sizes=compartment_sizes,
                       compartment_attention=compartment_attention, compartment_dropout=compartment_dropout,
                       time_decay=time_decay)
        check_sizes(input_size, hidden_size, 1)
        check_options(hidden_size, num_compartments, compartment_sizes, activation, compartment_dropout,
                      compartment_attention)
        if as_int(num_layers) is None or num_layers <= 0:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        input_size, hidden_size, num_layers = int(input_size), int(hidden_size), int(num_layers)
        if as_int(output_size) is None:
            raise TypeError(f"output_size must be an int, got {type(output_size).__name__}")
        output_size = int(output_size)
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.return_sequences = return_sequences
        self.cells = nn.ModuleList(
            [
                DIRUCell(input_size if layer == 0 else hidden_size, hidden_size, num_compartments, **options)
                for layer in range(num_layers)
            ]
        )
        self.fc_out = nn.Linear(hidden_size, output_size)

    def forward(self, x: torch.Tensor, return_sequences: bool | None = None,
                dt: Optional[torch.Tensor] = None) -> torch.Tensor:
        # x: [B, T, n], dt: [B, T] (time decay: the gap before each observation) or None
        if x.dim() != 3:
            raise ValueError(f"DIRU expects x of shape (batch, seq, input), got {tuple(x.shape)}")
        batch, steps, _ = x.shape
        h = [x.new_zeros(batch, self.hidden_size) for _ in self.cells]
        outputs = []
        for t in range(steps):
            inp = x[:, t]
            for layer, cell in enumerate(self.cells):
                h[layer] = cell(inp, h[layer]) if dt is None else cell(inp, h[layer], dt=dt[:, t])
                inp = h[layer]
            outputs.append(inp)
        if self.return_sequences if return_sequences is None else return_sequences:
            return self.fc_out(torch.stack(outputs, dim=1))
        return self.fc_out(h[-1])
