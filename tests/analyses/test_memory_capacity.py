"""Memory capacity: the standardised task, equal parameter counts across k, and the k-effect statistics
and verdict on synthetic results with known effects."""

import math
import random

import pytest
import torch

from diru_fast.analyses.common import (build, learned_summary, mean_mse, memory_delay, scored_fit, standardised_memory,
                                       standardised_memory_splits, tune_trials)
from diru_fast.analyses.memory_capacity import k_effect, predicted_band, verdict
from diru_fast.experiments.claims import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, NOT_LEARNED
from diru_fast.experiments.models import diru_params



def test_standardised_memory_uses_training_statistics():
    train, val, scaling = standardised_memory(64, 32, 20, seed=0)
    assert float(train.y.mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(train.y.std()) == pytest.approx(1.0, abs=1e-6)
    assert float(val.x.max()) == 1.0 and float(val.x.min()) == 0.0  # inputs / 8: the marker becomes 1
    assert bool((val.x[:, memory_delay(20), 0] == 1.0).all())
    raw_val = val.y * scaling["target_std"] + scaling["target_mean"]
    torch.testing.assert_close(raw_val, raw_val.round(), atol=1e-4, rtol=0)  # sums of integers, scaled by train stats
    again = standardised_memory(64, 32, 20, seed=0)
    assert torch.equal(again[0].x, train.x) and torch.equal(again[1].y, val.y)


def test_the_test_split_is_scaled_with_training_statistics_only():
    train, val, test, scaling = standardised_memory_splits(64, 32, 40, 20, seed=0)
    again, _, _ = standardised_memory(64, 32, 20, seed=0)
    assert torch.equal(train.y, again.y) and len(test) == 40  # train/val as standardised_memory
    raw = test.y * scaling["target_std"] + scaling["target_mean"]
    torch.testing.assert_close(raw, raw.round(), atol=1e-4, rtol=0)  # the training mean/std, not the test's
    assert float(test.y.mean()) != pytest.approx(0.0, abs=1e-6) and float(test.x.max()) == 1.0
    assert mean_mse(train, test) == pytest.approx(float((test.y - train.y.mean()).pow(2).mean()), rel=1e-6)


def test_tuning_picks_the_lowest_median_validation_ratio_on_the_tuning_seeds():
    scores = {(1e-3, 7): 0.5, (1e-3, 8): 0.1, (1e-2, 7): 0.2, (1e-2, 8): 0.3, (1e-1, 7): float("nan"), (1e-1, 8): 0.0}
    seen = []

    def trial(lr, seed):
        seen.append((lr, seed))
        return {"val_ratio": scores[(lr, seed)], "val_mse_curve": [1.0]}

    lr, rows = tune_trials(trial, (1e-3, 1e-2, 1e-1), (7, 8))
    assert lr == 1e-2 and sorted(seen) == sorted(scores)  # medians 0.3, 0.25, inf (a NaN trial counts as +inf)
    assert all("val_mse_curve" not in r for r in rows) and {r["seed"] for r in rows} == {7, 8}
    assert tune_trials(trial, (3e-3,), (7, 8)) == (3e-3, [])  # one value: no tuning, no trial


def test_learned_rule_over_seeds_is_the_median_ratio():
    assert learned_summary([0.1, 0.2, 0.9]) == {"median_ratio": 0.2, "learned": True, "seeds_learned": 2, "n": 3}
    out = learned_summary([0.1, 0.35, float("nan"), 0.2])  # median of 0.1, 0.2, 0.35, inf
    assert out["median_ratio"] == pytest.approx(0.275) and out["learned"] and out["seeds_learned"] == 2
    assert not learned_summary([0.31, 0.5])["learned"] and not learned_summary([])["learned"]


def test_scored_fit_keeps_the_best_validation_epoch_and_scores_the_test_split():
    train, val, test, _ = standardised_memory_splits(32, 16, 16, 12, seed=1)
    torch.manual_seed(0)
    model = build("rnn", 1, 4, 1)
    out = scored_fit(model, train, val, test, lr=1e-2, epochs=4, patience=2, shuffle_seed=0)
    assert out["best_val_mse"] == min(out["val_mse_curve"]) and out["epochs_run"] == len(out["val_mse_curve"])
    assert out["val_ratio"] == pytest.approx(out["best_val_mse"] / mean_mse(train, val))
    assert out["test_ratio"] == pytest.approx(out["test_mse"] / out["mean_predictor_test_mse"])
    assert out["hit_cap"] == (out["epochs_run"] == 4 and out["best_epoch"] > 4 - 2)


def test_parameter_count_does_not_depend_on_k():
    assert len({diru_params(1, 64, 1, k) for k in (1, 2, 4, 8)}) == 1


def synthetic(b_per_doubling_k, noise=0.3, seed=0):
    rng = random.Random(seed)
    return [{"k": k, "delay": d, "seed": s,
             "test_nmse": math.exp(-4 + 1.5 * math.log2(d / 10) + b_per_doubling_k * math.log2(k) + rng.gauss(0, noise))}
            for k in (1, 2, 4, 8) for d in (10, 20, 40) for s in range(3)]


def test_no_effect_of_k_is_seen_as_none():
    out = k_effect(synthetic(0.0))
    assert out["f_test"]["p"] > 0.05 and out["friedman"]["p"] > 0.05
    b, g = out["b_per_doubling_k"], out["g_per_doubling_delay"]
    assert b[1] < 0 < b[2] and g[0] == pytest.approx(1.5, abs=0.2)
    assert out["verdict"] == DOES_NOT_HOLD
    assert len(out["per_k_delay"]) == 12 and len(out["per_k_delay"][0]["nmse"]) == 3


def test_a_k_times_capacity_is_seen_as_holding():
    out = k_effect(synthetic(-1.5))  # doubling k undoes a doubling of the delay
    assert out["f_test"]["p"] < 1e-6
    assert out["b_per_doubling_k"][0] == pytest.approx(-1.5, abs=0.2)
    assert out["verdict"] == HOLDS


def test_verdict_needs_a_delay_effect():
    assert verdict([0.0, -0.1, 0.1], [0.01, -0.2, 0.2]) == INCONCLUSIVE  # error flat in the delay: no power
    assert verdict([-0.5, -1.5, 0.1], [1.0, 0.8, 1.2]) == INCONCLUSIVE  # CI overlaps the band and 0
    assert predicted_band([1.0, 0.8, 1.2]) == (-2.0, -0.5)


def test_the_k_effect_uses_only_delays_where_every_k_learned():
    rows = synthetic(0.0)
    for r in rows:  # k = 8 forgets at delay 40: NMSE about 1 there
        if r["k"] == 8 and r["delay"] == 40:
            r["test_nmse"] = 1.0
    out = k_effect(rows)
    assert out["learned_delays"] == [10, 20] and out["n_tested"] == 24
    cell = next(c for c in out["per_k_delay"] if c["k"] == 8 and c["delay"] == 40)
    assert not cell["learned"] and cell["median_ratio"] == pytest.approx(1.0)
    none = k_effect([dict(r, test_nmse=0.9) for r in rows])
    assert none["learned_delays"] == [] and none["verdict"] == NOT_LEARNED
