"""The prototype's three toy tasks (multi-frequency sine, variable-delay memory, Lorenz) as seeded
``torch.utils.data.Dataset`` objects.

Every dataset is generated once, in float64, from its own ``torch.Generator`` seeded with
``seed``: the same ``(n, T, seed)`` always gives the same tensors, on any machine; another
seed gives other data. Items are ``(x [T, 1], y [1])`` float32 tensors; the whole set is also
at hand as ``dataset.x [N, T, 1]`` and ``dataset.y [N, 1]``.

1. ``sine``:   ``t = linspace(0, 4π, T+10)``, ``f1~U(0.5,2)``, ``f2~U(3,5)``, ``f3~U(7,10)``,
               ``s = sin(f1 t) + 0.5 sin(f2 t) + 0.25 sin(f3 t) + N(0, 0.1²)``;
               input ``s[:T]``, target ``mean(s[T:])`` (the next 10 points).
2. ``memory``: ``L~U{3..7}`` values from ``U{1..V-1}`` (V=8) at steps ``0..L-1``, zeros after,
               the recall marker ``V`` at step ``T-5``; target: the sum of the values.
3. ``lorenz``: start ``5·N(0,1)³``, Euler steps of dt=0.01 (σ=10, ρ=28, β=8/3), T+10 points
               (the start included); input x of the first T points, target mean x of the last 10.

Targets are not normalized (as in the prototype), so the tasks' MSEs live on different scales.
"""

from __future__ import annotations

import math
from typing import Dict, Tuple, Type

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["SequenceDataset", "SineDataset", "MemoryDataset", "LorenzDataset", "TASKS", "make_dataset"]

HORIZON = 10  # points after the input window that the sine and Lorenz targets average


def _check_size(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


class SequenceDataset(Dataset):
    """A regression set of sequences: ``x [N, T, 1]`` float32, ``y [N, 1]`` float32."""

    task = "base"
    min_seq_len = 1

    def __init__(self, num_samples: int, seq_len: int, seed: int):
        _check_size("num_samples", num_samples, 1)
        _check_size(f"seq_len for the {self.task} task", seq_len, self.min_seq_len)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        self.num_samples = num_samples
        self.seq_len = seq_len
        self.seed = seed
        gen = torch.Generator().manual_seed(seed)
        x, y = self._generate(num_samples, seq_len, gen)  # float64 [N, T], [N]
        self.x = x.to(torch.float32).unsqueeze(-1).contiguous()  # [N, T, 1]
        self.y = y.to(torch.float32).unsqueeze(-1).contiguous()  # [N, 1]

    def _generate(self, n: int, T: int, gen: torch.Generator) -> Tuple[Tensor, Tensor]:
        raise NotImplementedError

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> Tuple[Tensor, Tensor]:
        return self.x[index], self.y[index]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_samples={self.num_samples}, seq_len={self.seq_len}, seed={self.seed})"


class SineDataset(SequenceDataset):
    """Three superimposed sines at random low / medium / high frequencies, plus noise.

    Extra attributes: ``freqs [N, 3]`` (f1, f2, f3) and ``series [N, T+10]`` (the noisy signal).
    """

    task = "sine"
    AMPLITUDES = (1.0, 0.5, 0.25)
    FREQ_RANGES = ((0.5, 2.0), (3.0, 5.0), (7.0, 10.0))
    NOISE_STD = 0.1

    def _generate(self, n, T, gen):
        t = torch.linspace(0.0, 4.0 * math.pi, T + HORIZON, dtype=torch.float64)  # [T+10]
        lo = torch.tensor([r[0] for r in self.FREQ_RANGES], dtype=torch.float64)
        hi = torch.tensor([r[1] for r in self.FREQ_RANGES], dtype=torch.float64)
        self.freqs = lo + (hi - lo) * torch.rand(n, 3, generator=gen, dtype=torch.float64)  # [N, 3]
        amp = torch.tensor(self.AMPLITUDES, dtype=torch.float64)
        clean = (amp * torch.sin(self.freqs.unsqueeze(1) * t.view(1, -1, 1))).sum(-1)  # [N, T+10]
        noise = self.NOISE_STD * torch.randn(n, T + HORIZON, generator=gen, dtype=torch.float64)
        self.series = clean + noise  # [N, T+10]
        return self.series[:, :T], self.series[:, T:].mean(1)


class MemoryDataset(SequenceDataset):
    """Remember a few values from the start; a marker late in the sequence asks for their sum.

    Extra attribute: ``num_values [N]`` (L of each sample).
    """

    task = "memory"
    VOCAB = 8  # values are 1..VOCAB-1; the recall marker is VOCAB
    MIN_VALUES, MAX_VALUES = 3, 7
    MARKER_FROM_END = 5
    min_seq_len = MAX_VALUES + MARKER_FROM_END  # the marker (step T-5) lands after the last value slot

    def _generate(self, n, T, gen):
        self.num_values = torch.randint(self.MIN_VALUES, self.MAX_VALUES + 1, (n,), generator=gen)  # [N]
        values = torch.randint(1, self.VOCAB, (n, self.MAX_VALUES), generator=gen).to(torch.float64)
        keep = torch.arange(self.MAX_VALUES).unsqueeze(0) < self.num_values.unsqueeze(1)  # [N, 7]
        values = values * keep
        x = torch.zeros(n, T, dtype=torch.float64)
        x[:, : self.MAX_VALUES] = values
        x[:, T - self.MARKER_FROM_END] = float(self.VOCAB)
        return x, values.sum(1)


class LorenzDataset(SequenceDataset):
    """Short Euler-integrated Lorenz trajectories; predict the mean x of the next 10 points.

    Extra attribute: ``states [N, T+10, 3]`` (the whole trajectory, start first).
    """

    task = "lorenz"
    SIGMA, RHO, BETA = 10.0, 28.0, 8.0 / 3.0
    DT = 0.01
    START_SCALE = 5.0

    @classmethod
    def euler_step(cls, s: Tensor) -> Tensor:
        """One Euler step of the Lorenz system: ``s [..., 3] -> [..., 3]``."""
        x, y, z = s.unbind(-1)
        ds = torch.stack([cls.SIGMA * (y - x), x * (cls.RHO - z) - y, x * y - cls.BETA * z], -1)
        return s + cls.DT * ds

    def _generate(self, n, T, gen):
        state = self.START_SCALE * torch.randn(n, 3, generator=gen, dtype=torch.float64)
        states = [state]
        for _ in range(T + HORIZON - 1):
            state = self.euler_step(state)
            states.append(state)
        self.states = torch.stack(states, 1)  # [N, T+10, 3]
        xs = self.states[..., 0]
        return xs[:, :T], xs[:, T:].mean(1)


TASKS: Dict[str, Type[SequenceDataset]] = {
    "sine": SineDataset,
    "memory": MemoryDataset,
    "lorenz": LorenzDataset,
}


def make_dataset(task: str, num_samples: int, seq_len: int, seed: int) -> SequenceDataset:
    """The dataset of ``task`` ("sine", "memory" or "lorenz") with ``num_samples`` sequences of ``seq_len``."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return TASKS[task](num_samples, seq_len, seed)
