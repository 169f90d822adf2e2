"""The baselines DIRU is compared with, each a PyTorch recurrent layer (batch first) and a linear head
on its last state, ``x [B, T, n] -> [B, out]``:

- :class:`LSTMModel`: ``torch.nn.LSTM``, the prototype's own baseline (also ``diru_fast.LSTMModel``
  and ``diru_fast.reference.LSTMModel``); ``return_sequences=True`` gives ``[B, T, out]``;
  ``forget_bias=1.0`` starts the forget gate's total bias at 1 (``b_ih`` 1, ``b_hh`` 0 in the forget
  chunk), the common practice (Jozefowicz et al. 2015) that keeps the cell's memory open early in training
- :class:`GRUModel`: ``torch.nn.GRU``, an extra baseline of the study
- :class:`RNNModel`: ``torch.nn.RNN`` with tanh, the vanilla recurrence of the gradient-flow analysis

Each registers the recurrent layer first and the head second, so a seed gives the same weights
wherever the model is built.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["LSTMModel", "GRUModel", "RNNModel"]


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
