"""Memory capacity: the standardised task, equal parameter counts across k, and the k-effect statistics
and verdict on synthetic results with known effects."""

import math
import random

import pytest
import torch

from diru_fast.analyses.common import memory_delay, standardised_memory
from diru_fast.analyses.memory_capacity import k_effect, predicted_band, verdict
from diru_fast.experiments.claims import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
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


def test_parameter_count_does_not_depend_on_k():
    assert len({diru_params(1, 64, 1, k) for k in (1, 2, 4, 8)}) == 1


def synthetic(b_per_doubling_k, noise=0.3, seed=0):
    rng = random.Random(seed)
    return [{"k": k, "delay": d, "seed": s,
             "val_nmse": math.exp(-4 + 1.5 * math.log2(d / 10) + b_per_doubling_k * math.log2(k) + rng.gauss(0, noise))}
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
