"""The compared models, built by name, and parameter matching.

- ``diru``: :class:`diru_fast.DIRU` (k compartments, the fast path on ``backend``)
- ``lstm``: :class:`diru_fast.baselines.LSTMModel` (``nn.LSTM`` + linear head, the prototype's baseline)
- ``lstm_fb1``: the same LSTM with its forget-gate bias started at 1 (how practitioners configure it)
- ``gru``:  :class:`diru_fast.baselines.GRUModel` (``nn.GRU`` + linear head, an extra baseline)

All map ``x [B, T, n] -> [B, out]`` from the last state. :func:`matched_hidden_size` picks the
hidden size that brings a baseline's parameter count closest to a target (DIRU's), so a
comparison at equal size is one flag away (``--match-params``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn

from ..baselines import GRUModel, LSTMModel
from ..modules import DIRU
from .options import DIRUOptions

__all__ = ["GRUModel", "MODELS", "BASELINES", "KIND_LABELS", "ModelSpec", "build_model", "count_params",
           "matched_hidden_size", "diru_params"]


MODELS = ("diru", "lstm", "lstm_fb1", "gru")
BASELINES = ("lstm", "lstm_fb1", "gru")
# how a report names each kind
KIND_LABELS = {"diru": "DIRU", "lstm": "LSTM", "lstm_fb1": "LSTM fb1", "gru": "GRU"}


def build_model(name: str, input_size: int, hidden_size: int, output_size: int, *,
                num_compartments: int = 4, backend: str = "auto",
                options: Optional[DIRUOptions] = None) -> nn.Module:
    """A fresh model ``name`` (one of MODELS); initialisation draws from torch's global RNG.
    ``options`` (the cell options) go to DIRU only; the baselines ignore them."""
    diru_kwargs = (options or DIRUOptions()).kwargs()
    if "compartment_sizes" in diru_kwargs:  # the sizes give k
        num_compartments = None
    builders: Dict[str, Callable[[], nn.Module]] = {
        "diru": lambda: DIRU(input_size, hidden_size, output_size, num_compartments=num_compartments,
                             backend=backend, **diru_kwargs),
        "lstm": lambda: LSTMModel(input_size, hidden_size, output_size),
        "lstm_fb1": lambda: LSTMModel(input_size, hidden_size, output_size, forget_bias=1.0),
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
    gates = {"lstm": 4, "lstm_fb1": 4, "gru": 3}[name]
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


def diru_params(input_size: int, hidden_size: int, output_size: int, num_compartments: int = 4,
                options: Optional[DIRUOptions] = None) -> int:
    """DIRU's parameter count, counted on a model built on the meta device (no memory, no RNG); with
    cell options (whose unit-to-compartment index is built from real tensors) on the CPU, the global
    RNG left as it was."""
    def count() -> int:
        return count_params(build_model("diru", input_size, hidden_size, output_size,
                                        num_compartments=num_compartments, backend="torch", options=options))

    if options is None or options.plain:
        with torch.device("meta"):
            return count()
    with torch.random.fork_rng(devices=[]):
        return count()


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model (stored in checkpoints and results)."""

    kind: str  # one of MODELS
    input_size: int = 1
    hidden_size: int = 64
    output_size: int = 1
    num_compartments: int = 4
    backend: str = "auto"  # DIRU's backend= (ignored by the baselines)
    # DIRU's cell options (DIRUOptions; ignored by the baselines, and left at their defaults for them)
    activation: str = "tanh"
    compartment_sizes: Optional[Tuple[int, ...]] = None
    compartment_attention: bool = False
    compartment_dropout: float = 0.0

    def __post_init__(self):
        if self.compartment_sizes is not None:  # a list read back from a checkpoint's dict
            object.__setattr__(self, "compartment_sizes", tuple(self.compartment_sizes))

    @property
    def options(self) -> DIRUOptions:
        return DIRUOptions(self.activation, self.compartment_sizes, self.compartment_attention,
                           self.compartment_dropout)

    @classmethod
    def create(cls, kind: str, input_size: int, hidden_size: int, output_size: int, num_compartments: int,
               backend: str = "auto", options: Optional[DIRUOptions] = None) -> "ModelSpec":
        """A spec with ``options`` recorded for DIRU (a baseline's spec keeps the defaults)."""
        opts = (options or DIRUOptions()) if kind == "diru" else DIRUOptions()
        return cls(kind, input_size, hidden_size, output_size, num_compartments, backend, opts.activation,
                   opts.compartment_sizes, opts.compartment_attention, opts.compartment_dropout)

    def build(self) -> nn.Module:
        return build_model(self.kind, self.input_size, self.hidden_size, self.output_size,
                           num_compartments=self.num_compartments, backend=self.backend, options=self.options)

    def to_dict(self) -> dict:
        return asdict(self)
