"""The prototype's three toy tasks, seeded: shapes, determinism and the values the prototype defines."""

import math

import pytest
import torch

from diru_fast.experiments.datasets import TASKS, LorenzDataset, MemoryDataset, SineDataset, make_dataset


@pytest.mark.parametrize("task", list(TASKS))
def test_shapes_dtypes_and_items(task):
    ds = make_dataset(task, 37, 20, seed=3)
    assert len(ds) == 37
    assert ds.x.shape == (37, 20, 1) and ds.y.shape == (37, 1)
    assert ds.x.dtype == torch.float32 and ds.y.dtype == torch.float32
    x, y = ds[5]
    assert x.shape == (20, 1) and y.shape == (1,)
    assert torch.equal(x, ds.x[5]) and torch.equal(y, ds.y[5])
    assert torch.isfinite(ds.x).all() and torch.isfinite(ds.y).all()
    assert isinstance(ds, torch.utils.data.Dataset)


@pytest.mark.parametrize("task", list(TASKS))
def test_same_seed_same_data_other_seed_other_data(task):
    a, b, c = make_dataset(task, 50, 16, 7), make_dataset(task, 50, 16, 7), make_dataset(task, 50, 16, 8)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, c.x) and not torch.equal(a.y, c.y)


@pytest.mark.parametrize("T", [12, 13, 50, 63])
def test_memory_values_marker_and_sum(T):
    ds = MemoryDataset(2000, T, seed=1)
    x, y = ds.x[..., 0], ds.y[:, 0]
    assert (x[:, T - 5] == 8).all(), "the recall marker V=8 sits at step T-5"
    head = x[:, :7]
    lengths = (head != 0).sum(1)
    assert torch.equal(lengths, ds.num_values)
    assert set(lengths.tolist()) == {3, 4, 5, 6, 7}, "L ~ U{3..7}"
    for row, n in zip(head, lengths):  # values first, then zeros
        assert (row[:n] >= 1).all() and (row[:n] <= 7).all() and (row[n:] == 0).all()
    rest = torch.cat([x[:, 7:T - 5], x[:, T - 4:]], 1)
    assert (rest == 0).all(), "zeros everywhere but the values and the marker"
    assert torch.equal(y, head.sum(1)), "target = the sum of the stored values"
    assert set(head[head != 0].long().tolist()) == set(range(1, 8))


def test_memory_rejects_too_short_sequences():
    with pytest.raises(ValueError, match="seq_len"):
        MemoryDataset(4, 11, seed=0)


def test_sine_signal_follows_spec():
    T = 40
    ds = SineDataset(600, T, seed=2)
    t = torch.linspace(0, 4 * math.pi, T + 10, dtype=torch.float64)
    f = ds.freqs
    assert (f[:, 0] >= 0.5).all() and (f[:, 0] <= 2).all()
    assert (f[:, 1] >= 3).all() and (f[:, 1] <= 5).all()
    assert (f[:, 2] >= 7).all() and (f[:, 2] <= 10).all()
    clean = (torch.sin(f[:, :1] * t) + 0.5 * torch.sin(f[:, 1:2] * t) + 0.25 * torch.sin(f[:, 2:] * t))
    noise = ds.series - clean
    assert abs(noise.std().item() - 0.1) < 0.003 and abs(noise.mean().item()) < 0.003
    torch.testing.assert_close(ds.x[..., 0], ds.series[:, :T].float())
    torch.testing.assert_close(ds.y[:, 0], ds.series[:, T:].mean(1).float())


def test_lorenz_is_an_euler_trajectory():
    T = 30
    ds = LorenzDataset(400, T, seed=4)
    s = ds.states
    assert s.shape == (400, T + 10, 3)
    x, y, z = s[:, :-1].unbind(-1)
    expected = torch.stack([x + 0.01 * 10 * (y - x), y + 0.01 * (x * (28 - z) - y),
                            z + 0.01 * (x * y - 8 / 3 * z)], -1)
    torch.testing.assert_close(s[:, 1:], expected, rtol=1e-12, atol=1e-12)
    assert abs(s[:, 0].std().item() - 5) < 0.4, "start ~ 5·N(0,1)^3"
    torch.testing.assert_close(ds.x[..., 0], s[:, :T, 0].float())
    torch.testing.assert_close(ds.y[:, 0], s[:, T:, 0].mean(1).float())


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown task"):
        make_dataset("stock", 10, 20, 0)
    with pytest.raises(ValueError, match="num_samples"):
        make_dataset("sine", 0, 20, 0)
    with pytest.raises(TypeError, match="seed"):
        make_dataset("sine", 4, 20, 1.5)
