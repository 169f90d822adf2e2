"""Pieces the analyses share: the standardised memory task, model building (the study's models and
a vanilla tanh RNN), the prototype-structured copy of a DIRU, quiet training, Fisher's combination
of p-values, and the metadata and JSON files they write.

The standardised memory task is the prototype's variable-delay memory task (the second of its three
toy tasks, :class:`~diru_fast.experiments.datasets.MemoryDataset`) with its input
divided by the vocabulary size V = 8 (values 1..7 become 0.125..0.875, the recall marker 1) and
its target z-scored with the *training* split's mean and standard deviation. A model that
predicts the training mean then has a validation MSE of about 1, so the MSE reads as the
fraction of the target's variance left unexplained (NMSE). It is the same data for every model.
On the prototype's raw scale (targets ~20 ± 7, inputs up to 8) DIRU and LSTM stay at the
predict-the-mean level for 50 epochs at T = 50 (the study's memory rows), which leaves nothing
to compare across delays or architectures.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from .. import reference
from ..baselines import RNNModel
from ..experiments.datasets import MemoryDataset
from ..experiments.io import atomic_write_text
from ..experiments.models import build_model
from ..experiments.options import DIRUOptions
from ..experiments.study import derive_seed
from ..experiments.training import History, TrainConfig, train
from ..modules import DIRU

__all__ = ["RNNModel", "ANALYSIS_MODELS", "build", "model_options", "prototype_copy", "memory_delay",
           "standardised_memory", "fit", "fisher_combined_p", "environment", "write_json", "read_json", "Timer"]

ANALYSIS_MODELS = ("diru", "lstm", "gru", "rnn")


def build(kind: str, input_size: int, hidden_size: int, output_size: int, *, num_compartments: int = 4,
          backend: str = "auto", options: Optional[DIRUOptions] = None) -> nn.Module:
    """A fresh model: the study's ``diru``/``lstm``/``gru`` (:func:`~..experiments.models.build_model`)
    or the vanilla tanh ``rnn``; initialisation draws from torch's global RNG. ``options`` (DIRU's
    cell options) go to DIRU only."""
    if kind == "rnn":
        return RNNModel(input_size, hidden_size, output_size)
    return build_model(kind, input_size, hidden_size, output_size, num_compartments=num_compartments,
                       backend=backend, options=options)


def model_options(model: nn.Module) -> DIRUOptions:
    """The cell options of a DIRU (fast: its layer's; reference: its first cell's)."""
    if isinstance(model, reference.DIRU):
        cell = model.cells[0]
        sizes = tuple(cell.compartment_sizes)
        return DIRUOptions(cell.activation, None if cell.compartment_size is not None else sizes,
                           cell.compartment_attention is not None, float(cell.dropout.p))
    layer = model.rnn
    sizes = tuple(layer.compartment_sizes)
    return DIRUOptions(layer.activation, None if len(set(sizes)) == 1 else sizes,
                       bool(layer.compartment_attention), float(layer.compartment_dropout))


def prototype_copy(model: nn.Module) -> reference.DIRU:
    """``model`` itself if it is a :class:`diru_fast.reference.DIRU`; for a fast :class:`diru_fast.DIRU`,
    a reference DIRU (the prototype's module structure: ``cells[l].compartments[c]``, ...) with the
    same weights, on the same device and dtype, loaded from the fast model's ``state_dict`` (which
    writes the prototype's keys). The copy shares no tensor with ``model`` and draws no random numbers."""
    if isinstance(model, reference.DIRU):
        return model
    if not isinstance(model, DIRU):
        raise TypeError(f"expected a DIRU (fast or reference), got {type(model).__name__}")
    like = model.fc_out.weight
    # On the meta device nothing is drawn (every tensor is loaded below); fork_rng keeps the global
    # generator as it was even where a tensor is made elsewhere.
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        opts = model.rnn
        copy = reference.DIRU(model.input_size, model.hidden_size, model.output_size,
                              num_compartments=None, num_layers=model.num_layers,
                              return_sequences=model.return_sequences, activation=opts.activation,
                              compartment_sizes=list(opts.compartment_sizes),
                              compartment_attention=bool(opts.compartment_attention),
                              compartment_dropout=float(opts.compartment_dropout))
    copy = copy.to_empty(device=like.device).to(dtype=like.dtype)
    copy.load_state_dict(model.state_dict())
    return copy


def memory_delay(seq_len: int) -> int:
    """Steps between the first stored value (step 0) and the recall marker (step T - 5)."""
    return seq_len - MemoryDataset.MARKER_FROM_END


def standardised_memory(n_train: int, n_val: int, seq_len: int, seed: int,
                        label: str = "memory") -> Tuple[MemoryDataset, MemoryDataset, Dict[str, float]]:
    """(train, validation, scaling) of the standardised memory task (see the module docstring).

    Data seeds derive from ``(label, seed, seq_len)``; scaling uses the training split only.
    """
    train_set = MemoryDataset(n_train, seq_len, derive_seed(label, seed, seq_len, "train"))
    val_set = MemoryDataset(n_val, seq_len, derive_seed(label, seed, seq_len, "val"))
    mean, std = float(train_set.y.mean()), float(train_set.y.std())
    for ds in (train_set, val_set):
        ds.x = ds.x / MemoryDataset.VOCAB
        ds.y = (ds.y - mean) / std
    return train_set, val_set, {"target_mean": mean, "target_std": std, "input_scale": 1.0 / MemoryDataset.VOCAB}


def fit(model: nn.Module, train_set, val_set, *, epochs: int, batch_size: int = 32, lr: float = 1e-3,
        shuffle_seed: int = 0, loss: str = "mse") -> History:
    """Adam + ``loss`` for ``epochs`` epochs, no progress bar (the study's :func:`train`)."""
    return train(model, train_set, val_set, TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr,
                                                        shuffle_seed=shuffle_seed, progress=False, loss=loss))


def fisher_combined_p(p_values: Sequence[float]) -> float:
    """Fisher's method: P(chi2 with 2n degrees of freedom >= -2 sum log p) for n independent p-values.

    Closed form for even degrees of freedom: exp(-x/2) * sum_{i<n} (x/2)^i / i!.
    """
    if not p_values:
        raise ValueError("fisher_combined_p needs at least one p-value")
    if any(not 0.0 < p <= 1.0 for p in p_values):
        raise ValueError(f"p-values must lie in (0, 1], got {list(p_values)}")
    half = -sum(math.log(p) for p in p_values)  # x / 2
    term, total = 1.0, 1.0
    for i in range(1, len(p_values)):
        term *= half / i
        total += term
    return min(1.0, math.exp(-half) * total)


def environment(command: str, threads: int) -> Dict[str, Any]:
    """Where and with what a result was made (the bench suite's environment plus the command)."""
    from ..benchmarking import environment as bench_environment

    env = bench_environment()
    env.update(command=command, threads=threads if threads > 0 else torch.get_num_threads())
    return env


def write_json(path: Path, obj: Dict[str, Any]) -> Path:
    """Compact JSON (numbers to 6 significant digits), written atomically."""
    return atomic_write_text(Path(path), json.dumps(_short(obj), separators=(",", ":"), allow_nan=True) + "\n")


def read_json(path: Path) -> Dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _short(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if not math.isfinite(obj) else float(f"{obj:.6g}")
    if isinstance(obj, dict):
        return {k: _short(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_short(v) for v in obj]
    return obj


class Timer:
    """``with Timer() as t: ...; t.seconds``."""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        self.seconds: Optional[float] = None
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
