"""The compared models, built by name, and parameter matching.

- ``diru``: :class:`diru_fast.DIRU` (k compartments, the fast path on ``backend``)
- ``lstm``: :class:`diru_fast.baselines.LSTMModel` (``nn.LSTM`` + linear head, the prototype's baseline)
- ``gru``:  :class:`diru_fast.baselines.GRUModel` (``nn.GRU`` + linear head, an extra baseline)

All map ``x [B, T, n] -> [B, out]`` from the last state. :func:`matched_hidden_size` picks the
hidden size that brings a baseline's parameter count closest to a target (DIRU's), so a
comparison at equal size is one flag away (``--match-params``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Dict

import torch
from torch import nn

from ..baselines import GRUModel, LSTMModel
from ..modules import DIRU

__all__ = ["GRUModel", "MODELS", "BASELINES", "ModelSpec", "build_model", "count_params",
           "matched_hidden_size", "diru_params"]


MODELS = ("diru", "lstm", "gru")
BASELINES = ("lstm", "gru")


def build_model(name: str, input_size: int, hidden_size: int, output_size: int, *,
                num_compartments: int = 4, backend: str = "auto") -> nn.Module:
    """A fresh model ``name`` (one of MODELS); initialisation draws from torch's global RNG."""
    builders: Dict[str, Callable[[], nn.Module]] = {
        "diru": lambda: DIRU(input_size, hidden_size, output_size, num_compartments=num_compartments,
                             backend=backend),
        "lstm": lambda: LSTMModel(input_size, hidden_size, output_size),
        "gru": lambda: GRUModel(input_size, hidden_size, output_size),
    }
    if name not in builders:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return builders[name]()


def count_params(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _baseline_params(name: str, input_size: int, hidden_size: int, output_size: int) -> int:
    # nn.LSTM / nn.GRU keep two bias vectors per gate (b_ih and b_hh); plus the Linear(d, out) head
    gates = {"lstm": 4, "gru": 3}[name]
    d = hidden_size
    return gates * (d * input_size + d * d + 2 * d) + d * output_size + output_size


def matched_hidden_size(name: str, target_params: int, input_size: int, output_size: int) -> int:
    """The hidden size of baseline ``name`` whose parameter count is closest to ``target_params``
    (the smaller size on a tie)."""
    if name not in BASELINES:
        raise ValueError(f"parameter matching sizes a baseline ({', '.join(BASELINES)}), not {name!r}")
    if target_params <= 0:
        raise ValueError(f"target_params must be positive, got {target_params}")
    best, best_gap = 1, None
    d = 1
    while True:
        gap = abs(_baseline_params(name, input_size, d, output_size) - target_params)
        if best_gap is None or gap < best_gap:
            best, best_gap = d, gap
        elif _baseline_params(name, input_size, d, output_size) > target_params:
            return best  # counts grow with d: once past the target and not closer, we are done
        d += 1


def diru_params(input_size: int, hidden_size: int, output_size: int, num_compartments: int = 4) -> int:
    """DIRU's parameter count, counted on a model built on the meta device (no memory, no RNG)."""
    with torch.device("meta"):
        return count_params(build_model("diru", input_size, hidden_size, output_size,
                                        num_compartments=num_compartments, backend="torch"))


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model (stored in checkpoints and results)."""

    kind: str  # one of MODELS
    input_size: int = 1
    hidden_size: int = 64
    output_size: int = 1
    num_compartments: int = 4
    backend: str = "auto"  # DIRU's backend= (ignored by the baselines)

    def build(self) -> nn.Module:
        return build_model(self.kind, self.input_size, self.hidden_size, self.output_size,
                           num_compartments=self.num_compartments, backend=self.backend)

    def to_dict(self) -> dict:
        return asdict(self)
