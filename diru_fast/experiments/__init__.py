"""The prototype's study, made honest: datasets, training, multi-seed comparison, report, plots, DDP.

Modules (one job each):

- :mod:`.datasets`     the three seeded toy tasks (sine, memory, lorenz) as torch Datasets
- :mod:`.models`       DIRU / LSTM / GRU by name, parameter counts and matching
- :mod:`.training`     Adam + MSE training loop, evaluation, checkpoints
- :mod:`.distributed`  DistributedDataParallel under torchrun (gloo on CPU, nccl on GPU)
- :mod:`.study`        tasks × models × seeds, results.json / results.csv, process pool
- :mod:`.stats`        mean ± std, t-intervals, paired relative improvement
- :mod:`.claims`       the prototype's claims and the verdict rules
- :mod:`.report`       numbers and verdicts from results, report.md
- :mod:`.plots`        curves.png, predictions.png, summary.png
- :mod:`.io`           atomic file writes
- :mod:`.cli`          the subcommands ``demo``, ``study`` and ``train``

The command line (``python -m diru_fast demo|study|train|bench|...``) is :mod:`diru_fast.cli`.
"""

from .datasets import TASKS, LorenzDataset, MemoryDataset, SineDataset, make_dataset
from .models import GRUModel, ModelSpec, build_model, count_params, matched_hidden_size
from .study import StudyConfig, run_study
from .training import History, TrainConfig, evaluate, load_checkpoint, save_checkpoint, train

__all__ = [
    "TASKS", "SineDataset", "MemoryDataset", "LorenzDataset", "make_dataset",
    "GRUModel", "ModelSpec", "build_model", "count_params", "matched_hidden_size",
    "StudyConfig", "run_study",
    "TrainConfig", "History", "train", "evaluate", "save_checkpoint", "load_checkpoint",
]
