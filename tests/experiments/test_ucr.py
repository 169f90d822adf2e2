"""UCR/UEA classification (diru_fast.experiments.ucr) at tiny sizes, without aeon: the arrays here are
in aeon's layouts (an ndarray (N, C, T), or a list of (C, T_i) arrays for unequal lengths), and a stand-in
aeon.datasets module checks the loader's plumbing."""

import argparse
import json
import sys
import types

import numpy as np
import pytest
import torch

from diru_fast.experiments import ucr


def _unequal(n, channels, seed):
    """n multivariate series of lengths 3..9 in aeon's list layout; class = sign of channel 0's mean."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for i in range(n):
        label = i % 2
        x = rng.normal(size=(channels, int(rng.integers(3, 10)))) * 0.3
        x[0] += 1.0 if label else -1.0
        X.append(x)
        y.append(str(label + 1))
    return X, np.array(y)


def test_from_arrays_unequal_multivariate_and_equal_layout():
    Xtr, ytr = _unequal(8, 3, 0)
    Xte, yte = _unequal(6, 3, 1)
    d = ucr.from_arrays("toy", Xtr, ytr, Xte, yte)
    assert d.classes == ["1", "2"] and d.channels == 3 and not d.equal_length
    assert [x.shape for x in d.train_x] == [(x.shape[1], 3) for x in Xtr]  # [T_i, C]
    assert torch.equal(d.train_x[2], torch.tensor(Xtr[2].T, dtype=torch.float32))
    assert d.train_y.tolist() == [0, 1] * 4
    eq = ucr.from_arrays("eq", np.zeros((4, 2, 5)), np.array(["a", "b", "a", "b"]), np.ones((2, 2, 5)), np.array(["b", "b"]))
    assert eq.equal_length and eq.train_x[0].shape == (5, 2) and eq.test_y.tolist() == [1, 1]
    assert ucr.majority_accuracy(eq) == 1.0
    with pytest.raises(ValueError, match="never occur"):
        ucr.from_arrays("bad", np.zeros((2, 1, 3)), np.array(["a", "a"]), np.zeros((1, 1, 3)), np.array(["z"]))


def test_standardize_pad_split():
    a = [torch.tensor([[1.0, 10.0], [3.0, 30.0]]), torch.tensor([[5.0, 50.0]])]
    (sa, sb) = ucr.standardize(a, [torch.tensor([[3.0, 30.0]])])
    cat = torch.cat(sa)
    assert torch.allclose(cat.mean(0), torch.zeros(2), atol=1e-6) and torch.allclose(cat.std(0), torch.ones(2))
    assert torch.allclose(sb[0], torch.zeros(1, 2), atol=1e-6)  # training statistics, applied to the other split
    x, lengths = ucr.pad(a)
    assert x.shape == (2, 2, 2) and lengths.tolist() == [2, 1] and x[1, 1].abs().sum() == 0
    labels = torch.tensor([0] * 8 + [1] * 4)
    tr, va = ucr.stratified_split(labels, 0.25, seed=3)
    assert sorted(tr.tolist() + va.tolist()) == list(range(12)) and labels[va].tolist() == [0, 0, 1]


@pytest.mark.parametrize("cell", ucr.CELLS)
def test_classifier_ignores_padding(cell):
    """A series' logits do not depend on the padding after it (PackedSequence; h_n at its own last step)."""
    torch.manual_seed(0)
    model = ucr.RNNClassifier(cell, 3, 8, 4).eval()
    series = [torch.randn(t, 3) for t in (5, 2, 7)]
    x, lengths = ucr.pad(series)
    batched = model(x, lengths)
    for i, s in enumerate(series):
        alone = model(s[None], torch.tensor([s.shape[0]]))
        torch.testing.assert_close(batched[i], alone[0], atol=1e-5, rtol=1e-5)
    x2 = torch.cat([x, torch.randn(3, 4, 3)], dim=1)  # longer padding, garbage in it
    torch.testing.assert_close(model(x2, lengths), batched, atol=1e-5, rtol=1e-5)


def test_train_classifier_learns_a_separable_toy():
    Xtr, ytr = _unequal(32, 2, 0)
    Xte, yte = _unequal(16, 2, 1)
    d = ucr.from_arrays("toy", Xtr, ytr, Xte, yte)
    r = ucr.train_classifier("diru", d, 0.03, seed=0, hidden=8, epochs=15, batch_size=8, patience=15)
    assert r.test_acc >= 0.9 and 1 <= r.best_epoch <= 15 and 0 <= r.val_acc <= 1


def test_load_ucr_and_the_cli_with_a_stand_in_aeon(monkeypatch, tmp_path):
    aeon = types.ModuleType("aeon")
    datasets = types.ModuleType("aeon.datasets")
    data = {"train": _unequal(16, 2, 0), "test": _unequal(8, 2, 1)}
    datasets.load_japanese_vowels = lambda split: data[split]
    aeon.datasets = datasets
    monkeypatch.setitem(sys.modules, "aeon", aeon)
    monkeypatch.setitem(sys.modules, "aeon.datasets", datasets)
    monkeypatch.setattr("diru_fast._subcommand.require", lambda modules, what: None)
    d = ucr.load_ucr("JapaneseVowels")
    assert d.name == "JapaneseVowels" and len(d.train_x) == 16 and d.channels == 2 and not d.equal_length
    with pytest.raises(ValueError, match="unknown set"):
        ucr.load_ucr("NoSuchSet")
    p = argparse.ArgumentParser()
    ucr.add_arguments(p)
    args = p.parse_args(["--out", str(tmp_path), "--datasets", "JapaneseVowels", "--lrs", "0.01,0.03", "--hidden", "4",
                         "--epochs", "2", "--seeds", "0,1", "--no-minirocket"])
    assert ucr.run(args) == 0
    report = (tmp_path / "report.md").read_text()
    assert report.index("## Rules") < report.index("## Sets") < report.index("## Test accuracy") < report.index("## Verdicts")
    runs = [json.loads(x) for x in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == 3 * (2 + 2)  # 3 cells x (2 tuning lrs + 2 test seeds)
    assert "| JapaneseVowels | DIRU vs LSTM |" in report and "| 16 | 8 | 2 | 3-9 | 2 |" in report
