"""The baselines DIRU is compared with, each a PyTorch recurrent layer (batch first) and a linear head
on its last state, ``x [B, T, n] -> [B, out]``:

- :class:`LSTMModel`: ``torch.nn.LSTM``, the prototype's own baseline (also ``diru_fast.LSTMModel``
  and ``diru_fast.reference.LSTMModel``); ``return_sequences=True`` gives ``[B, T, out]``;
  ``forget_bias=1.0`` starts the forget gate's total bias at 1 (``b_ih`` 1, ``b_hh`` 0 in the forget
  chunk), the common practice (Jozefowicz et al. 2015) that keeps the cell's memory open early in training
- :class:`GRUModel`: ``torch.nn.GRU``, an extra baseline of the study
- :class:`RNNModel`: ``torch.nn.RNN`` with tanh, the vanilla recurrence of the gradient-flow analysis
- :class:`GRUDecayModel`: a GRU whose state decays with the time since the previous step before each
  step, ``h <- exp(-softplus(lambda) * dt) * h`` (the hidden-state decay of GRU-D, Che et al. 2018),
  with DIRU's time decay's parameterisation and initialisation: the like-for-like baseline of DIRU's
  ``time_decay=True`` on irregularly sampled series

Each registers the recurrent layer first and the head second, so a seed gives the same weights
wherever the model is built.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LSTMModel", "GRUModel", "RNNModel", "GRUDecayModel"]


class LSTMModel(nn.Module):
    """The prototype's baseline: ``torch.nn.LSTM`` (batch first) and a linear head on the last state."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int, num_layers: int = 1,
                 return_sequences: bool = False, forget_bias: float | None = None):
        super().__init__()
        self.return_sequences = return_sequences
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.fc_out = nn.Linear(hidden_size, output_size)
        if forget_bias is not None:  # gate order of nn.LSTM: input, forget, cell, output
            d = hidden_size
            with torch.no_grad():
                for layer in range(num_layers):
                    getattr(self.lstm, f"bias_ih_l{layer}")[d:2 * d].fill_(forget_bias)
                    getattr(self.lstm, f"bias_hh_l{layer}")[d:2 * d].zero_()

    def forward(self, x: Tensor, return_sequences: bool | None = None) -> Tensor:
        out, _ = self.lstm(x)
        if self.return_sequences if return_sequences is None else return_sequences:
            return self.fc_out(out)
        return self.fc_out(out[:, -1])


class GRUModel(nn.Module):
    """``torch.nn.GRU`` (batch first) and a linear head on the last state: ``[B, T, n] -> [B, out]``."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int, num_layers: int = 1):
        super().__init__()
        self.gru = nn.GRU(input_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.fc_out = nn.Linear(hidden_size, output_size)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.gru(x)  # [B, T, d]
        return self.fc_out(out[:, -1])  # [B, out]


class RNNModel(nn.Module):
    """``torch.nn.RNN`` (tanh, batch first) and a linear head on the last state: ``[B, T, n] -> [B, out]``."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.rnn = nn.RNN(input_size, hidden_size, nonlinearity="tanh", batch_first=True)
        self.fc_out = nn.Linear(hidden_size, output_size)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.rnn(x)  # [B, T, d]
        return self.fc_out(out[:, -1])


class GRUDecayModel(nn.Module):
    """A GRU with exponential hidden-state decay (GRU-D style) and a linear head on the last state:
    ``(x [B, T, n], dt [B, T]) -> [B, out]``. Before step t the state becomes
    ``exp(-softplus(decay_rate) * dt[:, t]) * h`` (``decay_rate [d]``, initialised like DIRU's time
    decay: rates spread geometrically), then ``nn.GRUCell`` steps. ``dt=None``: Δt = 1 everywhere."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        from .weights import init_decay_rate_

        self.cell = nn.GRUCell(input_size, hidden_size)
        self.fc_out = nn.Linear(hidden_size, output_size)
        self.decay_rate = nn.Parameter(torch.empty(hidden_size))
        init_decay_rate_(self.decay_rate)

    def forward(self, x: Tensor, dt: Tensor | None = None) -> Tensor:
        B, T, _ = x.shape
        h = x.new_zeros(B, self.cell.hidden_size)  # [B, d]
        rate = nn.functional.softplus(self.decay_rate)  # [d]
        for t in range(T):
            if dt is not None:
                h = torch.exp(-rate * dt[:, t:t + 1]) * h  # [B, d]
            else:
                h = torch.exp(-rate) * h
            h = self.cell(x[:, t], h)
        return self.fc_out(h)  # [B, out]
