"""Trivial baselines of the study's tasks, against answers known by construction."""

import math

import pytest
import torch

from diru_fast.experiments import trivial
from diru_fast.experiments.datasets import LorenzDataset, MemoryDataset, SineDataset


class _Fake:
    def __init__(self, x, y):
        self.x, self.y = x.float().unsqueeze(-1), y.float().unsqueeze(-1)  # [N, T, 1], [N, 1]
        self.seq_len = x.shape[1]


def test_mean_predictor_by_hand():
    train = _Fake(torch.zeros(4, 3), torch.tensor([1.0, 2.0, 3.0, 6.0]))  # mean 3
    test = _Fake(torch.zeros(2, 3), torch.tensor([2.0, 5.0]))
    assert trivial.mean_predictor_mse(train, test) == pytest.approx((1 + 4) / 2)


def test_least_squares_recovers_an_affine_target():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 12, generator=g)
    y = 2.0 * x[:, -1] - 0.5 * x[:, -3] + 1.0  # an affine map of the last 3 inputs: exact
    train, test = _Fake(x[:40], y[:40]), _Fake(x[40:], y[40:])
    assert trivial.least_squares_mse(train, test, last=10) < 1e-10
    assert trivial.least_squares_mse(train, test, last=0) < 1e-10
    far = _Fake(x[:40], x[:40, 0]), _Fake(x[40:], x[40:, 0])  # depends on the first input only
    assert trivial.least_squares_mse(*far, last=10) > 0.5  # ~var(x0) = 1: the last 10 cannot see it


def test_memory_is_linear_in_all_inputs():
    # the target is the sum of the first inputs: least squares on all inputs is exact (the marker
    # column is constant, collinear with the intercept: the minimum-norm solution handles it)
    train, test = MemoryDataset(300, 20, 1), MemoryDataset(100, 20, 2)
    assert trivial.least_squares_mse(train, test, 0) < 1e-8
    assert trivial.least_squares_mse(train, test, 10) == pytest.approx(trivial.mean_predictor_mse(train, test),
                                                                        rel=0.02)  # last 10: zeros and marker


def test_sine_floor_and_oracle():
    assert trivial.SINE_NOISE_FLOOR == pytest.approx(0.1 ** 2 / 10)
    ds = SineDataset(4000, 50, 3)
    # the oracle's error is the mean of 10 iid N(0, 0.01) values: variance 0.001, and the mean of N
    # such squared errors has sd 0.001 * sqrt(2 / N)
    se = trivial.SINE_NOISE_FLOOR * math.sqrt(2 / 4000)
    assert abs(trivial.sine_oracle_mse(ds) - trivial.SINE_NOISE_FLOOR) < 4 * se


def test_sine_fit_recovers_frequencies_without_noise():
    ds = SineDataset(40, 50, 5)
    t = torch.linspace(0.0, 4.0 * math.pi, 60, dtype=torch.float64)[:50]
    amp = torch.tensor(SineDataset.AMPLITUDES, dtype=torch.float64)
    clean = (amp * torch.sin(ds.freqs.unsqueeze(1) * t.view(1, -1, 1))).sum(-1)  # [N, T]
    fitted = trivial.fit_sine_frequencies(clean)
    assert torch.allclose(fitted, ds.freqs, atol=1e-6)
    noisy = trivial.sine_fit_mse(ds)
    assert trivial.SINE_NOISE_FLOOR * 0.5 < noisy < 3 * trivial.SINE_NOISE_FLOOR


def test_trivial_baselines_per_task():
    train, test = LorenzDataset(200, 30, 1), LorenzDataset(50, 30, 2)
    names = [b["name"] for b in trivial.trivial_baselines("lorenz", train, test)]
    assert names == ["mean", "ls_last10", "ls_all"]
    sine = trivial.trivial_baselines("sine", SineDataset(100, 30, 1), SineDataset(20, 30, 2))
    assert [b["name"] for b in sine] == ["mean", "ls_last10", "ls_all", "sine_fit", "sine_oracle"]
    assert all(b["label"] == trivial.TRIVIAL_LABELS[b["name"]] and b["mse"] >= 0 for b in sine)
