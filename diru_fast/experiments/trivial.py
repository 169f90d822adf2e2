"""Trivial baselines of the study's tasks: closed-form estimators with nothing to train by gradient,
fitted on a seed's training set and scored on its test set (the same data the RNNs see).

- ``mean``: always predict the training targets' mean (the level of "nothing learned").
- ``ls_last10``: least squares (with an intercept) on the last 10 inputs ``x[:, T-10:]``.
- ``ls_all``: least squares (with an intercept) on all T inputs (minimum-norm solution where the
  inputs are collinear, as on the memory task's constant marker).
- ``sine_fit`` (sine only): the generating model fitted to each test sequence on its own,
  ``sum_i a_i sin(f_i t)`` with the task's amplitudes a = (1, 0.5, 0.25) and each f_i inside its
  band, by least squares over the T observed points (a grid search per frequency, two sweeps,
  then Gauss-Newton); the prediction is the fitted curve's mean over the next 10 points.
- ``sine_oracle`` (sine only): the same prediction from the true frequencies: the noise floor plus
  nothing, up to sampling.

The sine target's own noise is the mean of 10 iid N(0, 0.1²) values: its variance,
:data:`SINE_NOISE_FLOOR` = 0.1² / 10 = 0.001, is the lowest MSE any predictor can reach there.
"""

from __future__ import annotations

import math
from typing import Dict, List

import torch
from torch import Tensor

from .datasets import HORIZON, SequenceDataset, SineDataset

__all__ = ["TRIVIAL_LABELS", "SINE_NOISE_FLOOR", "mean_predictor_mse", "least_squares_mse", "fit_sine_frequencies",
           "sine_fit_mse", "sine_oracle_mse", "trivial_baselines"]

SINE_NOISE_FLOOR = SineDataset.NOISE_STD ** 2 / HORIZON
LS_LAST = 10

TRIVIAL_LABELS: Dict[str, str] = {
    "mean": "predict the training mean",
    "ls_last10": f"least squares on the last {LS_LAST} inputs",
    "ls_all": "least squares on all inputs",
    "sine_fit": "generating model fitted per sequence",
    "sine_oracle": "generating model, true frequencies",
}


def _xy(ds: SequenceDataset):
    return ds.x[..., 0].double(), ds.y[:, 0].double()  # [N, T], [N]


def mean_predictor_mse(train: SequenceDataset, test: SequenceDataset) -> float:
    """MSE on ``test`` of always predicting ``train``'s mean target."""
    _, ytr = _xy(train)
    _, yte = _xy(test)
    return float((yte - ytr.mean()).pow(2).mean())


def least_squares_mse(train: SequenceDataset, test: SequenceDataset, last: int = 0) -> float:
    """MSE on ``test`` of the least-squares affine map from the last ``last`` inputs (0: all) to the
    target, fitted on ``train`` (float64, minimum-norm where the inputs are collinear)."""
    xtr, ytr = _xy(train)
    xte, yte = _xy(test)
    if last:
        xtr, xte = xtr[:, -last:], xte[:, -last:]
    design = lambda x: torch.cat([torch.ones(len(x), 1, dtype=x.dtype), x], 1)  # noqa: E731
    coef = torch.linalg.pinv(design(xtr), rtol=1e-10) @ ytr  # [1 + inputs]
    return float((design(xte) @ coef - yte).pow(2).mean())


def _sine_curves(freqs: Tensor, t: Tensor) -> Tensor:
    """freqs [N, 3], t [L] -> sum_i a_i sin(f_i t): [N, L]."""
    amp = torch.tensor(SineDataset.AMPLITUDES, dtype=freqs.dtype)
    return (amp * torch.sin(freqs.unsqueeze(1) * t.view(1, -1, 1))).sum(-1)


def _sine_time(T: int) -> Tensor:
    return torch.linspace(0.0, 4.0 * math.pi, T + HORIZON, dtype=torch.float64)  # as SineDataset


def fit_sine_frequencies(x: Tensor, grid_step: float = 0.005, sweeps: int = 2, newton_steps: int = 30) -> Tensor:
    """Least-squares frequencies of the sine task's generating model for each sequence of
    ``x [N, T]`` (float64): a grid search over each band in turn (the others held), ``sweeps`` times,
    then Gauss-Newton steps kept inside the bands. Returns ``[N, 3]``."""
    x = x.double()
    n, T = x.shape
    t = _sine_time(T)[:T]
    amp = SineDataset.AMPLITUDES
    bands = SineDataset.FREQ_RANGES
    freqs = torch.tensor([[(lo + hi) / 2 for lo, hi in bands]], dtype=torch.float64).repeat(n, 1)
    for _ in range(sweeps):
        for i, (lo, hi) in enumerate(bands):
            others = _sine_curves(freqs, t) - amp[i] * torch.sin(freqs[:, i:i + 1] * t)  # [N, T]
            grid = torch.arange(lo, hi + grid_step / 2, grid_step, dtype=torch.float64)  # [G]
            cand = amp[i] * torch.sin(grid.view(1, -1, 1) * t.view(1, 1, -1))  # [1, G, T]
            sse = (x.unsqueeze(1) - others.unsqueeze(1) - cand).pow(2).sum(-1)  # [N, G]
            freqs[:, i] = grid[sse.argmin(1)]
    lo_b = torch.tensor([b[0] for b in bands], dtype=torch.float64)
    hi_b = torch.tensor([b[1] for b in bands], dtype=torch.float64)
    a = torch.tensor(amp, dtype=torch.float64)
    for _ in range(newton_steps):
        resid = x - _sine_curves(freqs, t)  # [N, T]
        jac = a * t.view(1, -1, 1) * torch.cos(freqs.unsqueeze(1) * t.view(1, -1, 1))  # [N, T, 3]
        jtj = jac.transpose(1, 2) @ jac + 1e-12 * torch.eye(3, dtype=torch.float64)
        step = torch.linalg.solve(jtj, (jac.transpose(1, 2) @ resid.unsqueeze(-1))).squeeze(-1)  # [N, 3]
        new = torch.minimum(torch.maximum(freqs + step, lo_b), hi_b)
        better = (x - _sine_curves(new, t)).pow(2).sum(1) <= resid.pow(2).sum(1)
        freqs = torch.where(better.unsqueeze(1), new, freqs)
    return freqs


def _future_mean(freqs: Tensor, T: int) -> Tensor:
    return _sine_curves(freqs, _sine_time(T)[T:]).mean(1)  # [N]


def sine_fit_mse(test: SineDataset) -> float:
    """MSE of the generating model fitted to each test sequence (see the module docstring)."""
    x, y = _xy(test)
    return float((_future_mean(fit_sine_frequencies(x), test.seq_len) - y).pow(2).mean())


def sine_oracle_mse(test: SineDataset) -> float:
    """MSE of predicting the noise-free future mean from the true frequencies."""
    _, y = _xy(test)
    return float((_future_mean(test.freqs, test.seq_len) - y).pow(2).mean())


def trivial_baselines(task: str, train: SequenceDataset, test: SequenceDataset) -> List[Dict[str, object]]:
    """The trivial baselines of ``task`` fitted on ``train``, scored on ``test``: ``[{name, label, mse}]``."""
    out = {"mean": mean_predictor_mse(train, test),
           "ls_last10": least_squares_mse(train, test, min(LS_LAST, test.seq_len)),
           "ls_all": least_squares_mse(train, test, 0)}
    if task == "sine":
        out["sine_fit"] = sine_fit_mse(test)
        out["sine_oracle"] = sine_oracle_mse(test)
    return [{"name": k, "label": TRIVIAL_LABELS[k], "mse": v} for k, v in out.items()]
