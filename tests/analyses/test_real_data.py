"""Real-data loaders (shapes, splits, scaling from the training part only) and cross-entropy training."""

import math

import pytest
import torch
import torch.nn.functional as F

from diru_fast.analyses import real_data as R
from diru_fast.analyses.common import paired_test
from diru_fast.experiments.training import TrainConfig, evaluate, train


def test_digits_read_row_by_row():
    train_set, val_set, test_set, info = R.digits_splits(seed=0)
    (xt, yt), (xv, yv) = train_set.tensors, val_set.tensors
    assert xt.shape[1:] == (8, 8) and xt.dtype == torch.float32 and yt.dtype == torch.int64
    assert len(xt) + len(xv) + len(test_set) == 1797 and len(xv) == round(0.2 * 1797) == info["n_val"]
    assert set(torch.cat([yt, yv]).tolist()) == set(range(10))
    from sklearn.datasets import load_digits

    images = torch.as_tensor(load_digits().images, dtype=torch.float32) / 16
    rows = {tuple(img.flatten().round(decimals=4).tolist()) for img in images}
    pixels = xv[:20] * info["input_std"] + info["input_mean"]
    assert all(tuple(img.flatten().round(decimals=4).tolist()) in rows for img in pixels)  # whole images, rows in order
    again, other = R.digits_splits(seed=0), R.digits_splits(seed=1)
    assert torch.equal(again[1].tensors[1], yv) and not torch.equal(other[1].tensors[1], yv)


def test_sunspots_ship_with_statsmodels():
    train_set, val_set, test_set, info = R.load_sunspot_splits(20, test_start=289, test_len=20)
    assert info["first_year"] == 1700 and len(train_set) + len(val_set) + len(test_set) == 309 - 20
    assert info["train_target_years"][1] < info["val_years"][0] <= info["val_years"][1] < info["first_val_year"]
    assert float(train_set.tensors[1].mean()) == pytest.approx(0.0, abs=0.15)  # the scaling's own years, nearly
    assert info["persistence_mse_test"] > 0 and info["mean_mse_test"] > 0


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


def _run(dataset, model, seed, value, block=None, ratio=0.1, **extra):
    run = {"dataset": dataset, "model": model, "seed": seed, "params": 10, "lr": 1e-3, "test_loss": value,
           "test_ratio": ratio, "seconds": 1.0, "epochs_run": 5, "hit_cap": False, "persistence_ratio": 0.5}
    if block is not None:
        run["block"] = block
    return dict(run, **extra)


def test_summary_pairs_seeds_and_reports_the_improvement():
    variants = {"sunspots": [{"key": "diru", "label": "DIRU"}, {"key": "lstm_matched", "label": "LSTM"}]}
    runs = [_run("sunspots", m, s, v) for s in range(3) for m, v in (("diru", 0.5 + 0.01 * s), ("lstm_matched", 1.0 + 0.01 * s))]
    out = R.summarize(runs, variants)["sunspots"]
    (comp,) = out["comparisons"]
    assert comp["improvement"][0] == pytest.approx(0.5, abs=0.01) and comp["verdict"] == "holds"
    assert comp["n"] == 3 and comp["p_holm"] == comp["p"]  # a family of one (no block: each seed its own)
    assert [row["model"] for row in out["rows"]] == ["diru", "lstm_matched"]
    assert all(row["learned"]["learned"] for row in out["rows"])


def test_comparisons_need_both_models_to_have_learned():
    """The same significant difference: where the baseline did not learn (test MSE > 0.3x the mean
    predictor), "only DIRU learned", untested and out of Holm's family; where neither did, "not learned"."""
    variants = {"sunspots": [{"key": "diru", "label": "DIRU (d=4)"}, {"key": "lstm_matched", "label": "LSTM (d=4)"},
                             {"key": "gru_matched", "label": "GRU (d=5)"}]}
    runs = [_run("sunspots", m, s, v + 0.01 * s, ratio=r) for s in range(3)
            for m, v, r in (("diru", 0.5, 0.1), ("lstm_matched", 1.0, 0.9), ("gru_matched", 1.0, 0.2))]
    out = R.summarize(runs, variants)["sunspots"]
    lstm, gru = out["comparisons"]
    assert lstm["verdict"] == "only DIRU learned" and not lstm["tested"] and "p_holm" not in lstm
    assert gru["verdict"] == "holds" and gru["tested"] and gru["p_holm"] == gru["p"]  # alone in the family
    runs = [dict(r, test_ratio=0.8) for r in runs]
    summary = R.summarize(runs, variants)
    assert [c["verdict"] for c in summary["sunspots"]["comparisons"]] == ["not learned", "not learned"]
    assert R.overall_verdict(summary) == ("not learned", ["not learned", "not learned"])


def test_digits_splits_are_disjoint_and_standardised_with_training_images_only():
    train_set, val_set, test_set, info = R.digits_splits(seed=0)
    xs = [d.tensors[0] for d in (train_set, val_set, test_set)]
    assert [len(x) for x in xs] == [1797 - 2 * 359, 359, 359] and info["n_test"] == 359
    assert float(xs[0].double().mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(xs[0].double().std()) == pytest.approx(1.0, abs=1e-5)
    images = torch.cat(xs) * info["input_std"] + info["input_mean"]  # back to pixels / 16
    rows = {tuple(img.flatten().round(decimals=4).tolist()) for img in images}
    assert len(rows) > 1700  # the parts are disjoint (a handful of duplicate images in the data set)
    freq = torch.bincount(train_set.tensors[1], minlength=10).double() / len(train_set)
    expect = float(-freq.log()[test_set.tensors[1]].mean())
    assert info["const_ce_test"] == pytest.approx(expect, rel=1e-12) and 2.2 < expect < 2.4
    assert 0.85 < info["majority_error_test"] < 0.95


def test_sunspot_splits_are_chronological_and_scaled_with_training_years_only():
    series = [float(v) for v in range(100)]
    train_set, val_set, test_set, info = R.sunspot_splits(series, window=5, test_start=80, test_len=10,
                                                          val_fraction=0.2)
    raw = lambda z: z * info["std"] + info["mean"]  # noqa: E731
    assert (len(train_set), len(val_set), len(test_set)) == (60, 15, 10) and info["split_index"] == 65
    assert float(raw(train_set.tensors[1]).max()) == pytest.approx(64, abs=1e-3)
    assert float(raw(val_set.tensors[1]).min()) == pytest.approx(65, abs=1e-3)
    assert float(raw(test_set.tensors[1]).min()) == pytest.approx(80, abs=1e-3)
    assert info["mean"] == pytest.approx(sum(series[:65]) / 65)  # training years only
    changed = series[:65] + [1e6] * 35  # validation, test and later years never enter the scaling
    assert R.sunspot_splits(changed, 5, 80, 10)[3]["mean"] == info["mean"]
    assert info["persistence_mse_test"] == pytest.approx((1 / info["std"]) ** 2, rel=1e-5)  # a step of 1 per year
    with pytest.raises(ValueError, match="needs"):
        R.sunspot_splits(series, 5, 7, 10)  # one target before the block: none left to train


def test_tuning_picks_per_model_on_tuning_seeds_and_sunspots_tunes_before_the_first_block():
    config = R.RealDataConfig(datasets=("sunspots",), seeds=1, sunspots_hidden=4, sunspots_epochs=2, patience=1,
                              sunspots_origins=2, lr_grid=(1e-3, 1e-2), tune_seeds=1, backend="torch")
    result = R.run_real_data(config)
    assert set(result["picked_lr"]["sunspots"]) == {"diru", "lstm_matched", "lstm_fb1_matched", "gru_matched"}
    assert {(t["lr"], t["seed"]) for t in result["tuning"]} == {(1e-3, 1000), (1e-2, 1000)}
    assert all(r["lr"] == result["picked_lr"]["sunspots"][r["model"]] for r in result["runs"])
    blocks = result["data"]["sunspots"]["blocks"]
    assert sorted(blocks) == ["1969", "1989"] and all(r["epochs_run"] <= 2 for r in result["runs"])
    with pytest.raises(ValueError, match="overlap"):
        R.RealDataConfig(seeds=3, tune_first_seed=1)


def test_rolling_origin_blocks_train_on_every_earlier_year_only():
    series = [float(v) for v in range(60)]
    starts = R.sunspot_origins(60, window=5, origins=3, test_len=10)
    assert starts == [30, 40, 50]
    for start in starts:
        train_set, val_set, test_set, info = R.sunspot_splits(series, 5, test_start=start, test_len=10)
        raw = lambda z: z * info["std"] + info["mean"]  # noqa: E731
        assert len(train_set) + len(val_set) == start - 5 and len(test_set) == 10
        assert float(raw(val_set.tensors[1]).max()) == pytest.approx(start - 1, abs=1e-3)
        assert float(raw(test_set.tensors[1]).min()) == pytest.approx(start, abs=1e-3)
        split = info["split_index"]
        assert info["mean"] == pytest.approx(sum(series[:split]) / split)  # training years only
    with pytest.raises(ValueError, match="fit"):
        R.sunspot_origins(60, window=5, origins=6, test_len=10)


def test_sunspots_rolling_origin_blocks_cover_the_last_years():
    starts = R.sunspot_origins(309, 20, 5, 20)
    _, _, test_set, info = R.load_sunspot_splits(20, test_start=starts[-1], test_len=20)
    assert (info["first_val_year"], info["last_val_year"]) == (1989, 2008) and len(test_set) == 20
    _, _, _, first = R.load_sunspot_splits(20, test_start=starts[0], test_len=20)
    assert (first["first_val_year"], first["last_val_year"]) == (1909, 1928)


def test_summary_averages_seeds_within_a_block_and_applies_holm():
    """Blocks 0 and 1 (two seeds each), log ratios by hand; the block is the unit of the t-test."""
    variants = {"sunspots": [{"key": "diru", "label": "DIRU"}, {"key": "lstm_matched", "label": "LSTM"},
                             {"key": "gru_matched", "label": "GRU"}]}
    values = {("diru", 0): (1.0, 2.0), ("lstm_matched", 0): (2.0, 2.0), ("gru_matched", 0): (1.0, 2.0),
              ("diru", 1): (1.0, 1.0), ("lstm_matched", 1): (4.0, 1.0), ("gru_matched", 1): (1.1, 0.9),
              ("diru", 2): (1.0, 1.0), ("lstm_matched", 2): (2.0, 2.0), ("gru_matched", 2): (0.9, 1.1)}
    runs = [_run("sunspots", m, s, v[s], block=b) for (m, b), v in values.items() for s in (0, 1)]
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
    runs = [_run("digits", m, s, v + 0.01 * s, block=s, accuracy=a - 0.001 * s, error_ratio=0.05)
            for s in range(4) for m, v, a in (("diru", 0.2, 0.95), ("gru_matched", 0.1, 0.97))]
    summary = R.summarize(runs, variants)
    comps = summary["digits"]["comparisons"]
    assert [c["primary"] for c in comps] == [True, False] and "p_holm" not in comps[1] and "verdict" not in comps[1]
    verdict, verdicts = R.overall_verdict(summary)
    assert verdicts == ["does not hold"] and verdict == "does not hold"  # one comparison counted once
