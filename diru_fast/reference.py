"""Reference modules: the prototype's DIRU, line by line, in plain PyTorch.

These are the readable statement of the published math (docs/MATH.md) that every fast path is
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
    fc_out.{weight,bias}                      [out, d], [out]

Nothing here is fast on purpose: one Python step per time step, one per compartment.
"""

from __future__ import annotations

import torch
from torch import nn

from .baselines import LSTMModel  # the prototype's baseline; defined with the other baselines

__all__ = ["DendriteCompartment", "DIRUCell", "DIRU", "LSTMModel", "check_sizes"]


def check_sizes(input_size: int, hidden_size: int, num_compartments: int) -> int:
    """Validate the cell's sizes; return the compartment size ``m = d / k``."""
    for name, value in (
        ("input_size", input_size),
        ("hidden_size", hidden_size),
        ("num_compartments", num_compartments),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if hidden_size % num_compartments != 0:
        raise ValueError(
            f"hidden_size ({hidden_size}) must be divisible by num_compartments "
            f"({num_compartments}): each compartment has hidden_size / num_compartments units"
        )
    return hidden_size // num_compartments


class DendriteCompartment(nn.Module):
    """One dendrite c with m units.

    a_c = W_x x + W_h h + b          (local pre-activation)
    u_c = tanh(a_c)                  (local nonlinearity)
    s_c = sigmoid(gate([x; h]))      (voltage-gated channel)
    o_c = u_c * s_c
    """

    def __init__(self, input_size: int, compartment_size: int, hidden_size: int, bias: bool = True):
        super().__init__()
        self.W_x = nn.Linear(input_size, compartment_size, bias=False)
        self.W_h = nn.Linear(hidden_size, compartment_size, bias=False)
        if bias:
            self.bias = nn.Parameter(torch.zeros(compartment_size))
        else:
            self.register_parameter("bias", None)
        self.gate = nn.Linear(input_size + hidden_size, compartment_size, bias=bias)
        self.activation = nn.Tanh()

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

    o   = [o_0; ...; o_{k-1}]
    z   = tanh(W_I o + b_I)
    r   = sigmoid(W_G [x; h] + b_G)
    h'  = tanh(W_O (z * r) + b_O + h)
    """

    def __init__(self, input_size: int, hidden_size: int, num_compartments: int = 4, bias: bool = True):
        super().__init__()
        m = check_sizes(input_size, hidden_size, num_compartments)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_compartments = num_compartments
        self.compartment_size = m
        self.compartments = nn.ModuleList(
            [DendriteCompartment(input_size, m, hidden_size, bias=bias) for _ in range(num_compartments)]
        )
        self.integration = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.global_gate = nn.Linear(input_size + hidden_size, hidden_size, bias=bias)
        self.output_proj = nn.Linear(hidden_size, hidden_size, bias=bias)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        # x: [B, n], h: [B, d] -> h': [B, d]
        o = torch.cat([compartment(x, h) for compartment in self.compartments], dim=-1)
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
        num_compartments: int = 4,
        num_layers: int = 1,
        return_sequences: bool = False,
    ):
        super().__init__()
        check_sizes(input_size, hidden_size, num_compartments)
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers <= 0:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.return_sequences = return_sequences
        self.cells = nn.ModuleList(
            [
                DIRUCell(input_size if layer == 0 else hidden_size, hidden_size, num_compartments)
                for layer in range(num_layers)
            ]
        )
        self.fc_out = nn.Linear(hidden_size, output_size)

    def forward(self, x: torch.Tensor, return_sequences: bool | None = None) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"DIRU expects x of shape (batch, seq, input), got {tuple(x.shape)}")
        batch, steps, _ = x.shape
        h = [x.new_zeros(batch, self.hidden_size) for _ in self.cells]
        outputs = []
        for t in range(steps):
            inp = x[:, t]
            for layer, cell in enumerate(self.cells):
                h[layer] = cell(inp, h[layer])
                inp = h[layer]
            outputs.append(inp)
        if self.return_sequences if return_sequences is None else return_sequences:
            return self.fc_out(torch.stack(outputs, dim=1))
        return self.fc_out(h[-1])
