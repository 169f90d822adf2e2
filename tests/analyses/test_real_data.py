"""Real-data loaders (shapes, splits, scaling from the training part only) and cross-entropy training."""

import math

import pytest
import torch
import torch.nn.functional as F

from diru_fast.analyses import real_data as R
from diru_fast.analyses.common import paired_test
from diru_fast.experiments.training import TrainConfig, evaluate, train


def test_digits_read_row_by_row():
    train_set, val_set, info = R.load_digits_sequences(seed=0)
    (xt, yt), (xv, yv) = train_set.tensors, val_set.tensors
    assert xt.shape[1:] == (8, 8) and xt.dtype == torch.float32 and yt.dtype == torch.int64
    assert len(xt) + len(xv) == 1797 and len(xv) == round(0.2 * 1797) == info["n_val"]
    assert float(torch.cat([xt, xv]).min()) == 0.0 and float(torch.cat([xt, xv]).max()) == 1.0
    assert set(torch.cat([yt, yv]).tolist()) == set(range(10))
    from sklearn.datasets import load_digits

    images = torch.as_tensor(load_digits().images, dtype=torch.float32) / 16
    rows = {tuple(img.flatten().tolist()) for img in images}
    assert all(tuple(img.flatten().tolist()) in rows for img in xv[:20])  # whole images, rows kept in order
    again, other = R.load_digits_sequences(seed=0), R.load_digits_sequences(seed=1)
    assert torch.equal(again[1].tensors[1], yv) and not torch.equal(other[1].tensors[1], yv)


def test_sunspot_windows_are_chronological_and_scaled_with_training_years_only():
    series = [float(v) for v in range(100)]
    train_set, val_set, info = R.sunspot_windows(series, window=5, val_fraction=0.2)
    (xt, yt), (xv, yv) = train_set.tensors, val_set.tensors
    assert len(xt) + len(xv) == 95 and len(xv) == 19 and xt.shape[1:] == (5, 1)
    split = info["split_index"]
    assert split == 5 + len(xt)
    mean, std = info["mean"], info["std"]
    raw = lambda z: z * std + mean  # noqa: E731
    assert float(raw(yt).max()) < float(raw(yv).min())  # every training target precedes every validation target
    assert float(raw(yt[-1])) == pytest.approx(split - 1, abs=1e-3)
    torch.testing.assert_close(raw(xv[0, :, 0]), torch.arange(split - 5, split, dtype=torch.float32), atol=1e-3, rtol=0)
    assert mean == pytest.approx(sum(series[:split]) / split)
    # the validation years never enter the scaling
    changed = series[:split] + [1e6] * (100 - split)
    train2, _, info2 = R.sunspot_windows(changed, window=5, val_fraction=0.2)
    assert (info2["mean"], info2["std"]) == (mean, std)
    assert torch.equal(train2.tensors[0], xt) and torch.equal(train2.tensors[1], yt)


def test_sunspots_ship_with_statsmodels():
    train_set, val_set, info = R.load_sunspots(window=20)
    assert info["first_year"] == 1700 and len(train_set) + len(val_set) == 309 - 20
    assert info["train_target_years"][1] < info["first_val_year"]
    assert float(train_set.tensors[1].mean()) == pytest.approx(0.0, abs=0.15)  # the scaling's own years, nearly
    assert info["persistence_mse"] > 0 and info["train_mean_mse"] > 0


def test_cross_entropy_training_and_evaluation():
    torch.manual_seed(0)
    x = torch.randn(64, 4, 3)
    y = (x[:, -1, 0] > 0).long()
    data = torch.utils.data.TensorDataset(x, y)
    model = R.build("gru", 3, 8, 2)
    history = train(model, data, data, TrainConfig(epochs=15, batch_size=16, lr=1e-2, progress=False,
                                                   loss="cross_entropy"))
    assert history.val_loss[-1] < history.val_loss[0]
    with torch.no_grad():
        expect = float(F.cross_entropy(model(x).double(), y))
    assert evaluate(model, data, 16, loss="cross_entropy") == pytest.approx(expect, rel=1e-9)
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="hinge")
    with pytest.raises(ValueError, match="loss"):
        evaluate(model, data, loss="hinge")


def test_summary_pairs_seeds_and_reports_the_improvement():
    variants = {"sunspots": [{"key": "diru", "label": "DIRU"}, {"key": "lstm_matched", "label": "LSTM"}]}
    runs = [{"dataset": "sunspots", "model": m, "seed": s, "params": 10, "final_val_loss": v,
             "best_val_loss": v, "seconds": 1.0}
            for s in range(3) for m, v in (("diru", 0.5 + 0.01 * s), ("lstm_matched", 1.0 + 0.01 * s))]
    out = R.summarize(runs, variants)["sunspots"]
    (comp,) = out["comparisons"]
    assert comp["improvement"][0] == pytest.approx(0.5, abs=0.01) and comp["verdict"] == "holds"
    assert comp["n"] == 3 and comp["p_holm"] == comp["p"]  # a family of one (no block: each seed its own)
    assert [row["model"] for row in out["rows"]] == ["diru", "lstm_matched"]


def test_rolling_origin_blocks_train_on_every_earlier_year_only():
    series = [float(v) for v in range(60)]
    starts = R.sunspot_origins(60, window=5, origins=3, test_len=10)
    assert starts == [30, 40, 50]
    for start in starts:
        train_set, test_set, info = R.sunspot_windows(series, 5, test_start=start, test_len=10)
        raw = lambda z: z * info["std"] + info["mean"]  # noqa: E731
        assert len(train_set) == start - 5 and len(test_set) == 10 and info["split_index"] == start
        assert float(raw(train_set.tensors[1]).max()) == pytest.approx(start - 1, abs=1e-3)
        assert float(raw(test_set.tensors[1]).min()) == pytest.approx(start, abs=1e-3)
        assert info["mean"] == pytest.approx(sum(series[:start]) / start)  # training years only
    with pytest.raises(ValueError, match="fit"):
        R.sunspot_origins(60, window=5, origins=6, test_len=10)


def test_sunspots_rolling_origin_blocks_cover_the_last_years():
    starts = R.sunspot_origins(309, 20, 5, 20)
    _, test_set, info = R.load_sunspots(20, test_start=starts[-1], test_len=20)
    assert (info["first_val_year"], info["last_val_year"]) == (1989, 2008) and len(test_set) == 20
    _, _, first = R.load_sunspots(20, test_start=starts[0], test_len=20)
    assert (first["first_val_year"], first["last_val_year"]) == (1909, 1928)


def test_summary_averages_seeds_within_a_block_and_applies_holm():
    """Blocks 0 and 1 (two seeds each), log ratios by hand; the block is the unit of the t-test."""
    variants = {"sunspots": [{"key": "diru", "label": "DIRU"}, {"key": "lstm_matched", "label": "LSTM"},
                             {"key": "gru_matched", "label": "GRU"}]}
    values = {("diru", 0): (1.0, 2.0), ("lstm_matched", 0): (2.0, 2.0), ("gru_matched", 0): (1.0, 2.0),
              ("diru", 1): (1.0, 1.0), ("lstm_matched", 1): (4.0, 1.0), ("gru_matched", 1): (1.1, 0.9),
              ("diru", 2): (1.0, 1.0), ("lstm_matched", 2): (2.0, 2.0), ("gru_matched", 2): (0.9, 1.1)}
    runs = [{"dataset": "sunspots", "model": m, "seed": s, "block": b, "params": 10, "final_val_loss": v[s],
             "best_val_loss": v[s], "seconds": 1.0} for (m, b), v in values.items() for s in (0, 1)]
    out = R.summarize(runs, variants)["sunspots"]
    lstm = next(c for c in out["comparisons"] if c["baseline"] == "lstm_matched")
    # per block: mean over seeds of ln(DIRU / LSTM): (ln .5 + ln 1)/2, (ln .25 + ln 1)/2, (ln .5 + ln .5)/2
    logs = [math.log(0.5) / 2, math.log(0.25) / 2, math.log(0.5)]
    assert lstm["n"] == 3 and lstm["runs"] == 6
    assert lstm["improvement"][0] == pytest.approx(1 - math.exp(sum(logs) / 3), rel=1e-12)
    assert lstm["p"] == pytest.approx(paired_test(logs)["p"], rel=1e-12)
    gru = next(c for c in out["comparisons"] if c["baseline"] == "gru_matched")
    smaller, larger = sorted([lstm["p"], gru["p"]])
    expect = {smaller: 2 * smaller, larger: max(2 * smaller, larger)}  # Holm over the two, by hand
    assert (lstm["p_holm"], gru["p_holm"]) == pytest.approx((expect[lstm["p"]], expect[gru["p"]]), rel=1e-12)
    verdict, verdicts = R.overall_verdict(R.summarize(runs, variants))
    assert len(verdicts) == 2


def test_digits_error_rate_is_secondary_and_not_counted():
    variants = {"digits": [{"key": "diru", "label": "DIRU"}, {"key": "gru_matched", "label": "GRU"}]}
    runs = [{"dataset": "digits", "model": m, "seed": s, "block": s, "params": 10, "final_val_loss": v + 0.01 * s,
             "best_val_loss": v, "accuracy": a - 0.001 * s, "seconds": 1.0}
            for s in range(4) for m, v, a in (("diru", 0.2, 0.95), ("gru_matched", 0.1, 0.97))]
    summary = R.summarize(runs, variants)
    comps = summary["digits"]["comparisons"]
    assert [c["primary"] for c in comps] == [True, False] and "p_holm" not in comps[1]
    verdict, verdicts = R.overall_verdict(summary)
    assert verdicts == ["does not hold"] and verdict == "does not hold"  # one comparison counted once
