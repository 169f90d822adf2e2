"""The analyses' tests and corrections against hand-computed values: paired t-tests, Holm, power."""

import math

import pytest

from diru_fast.analyses.common import (decide, detectable_effect, first_epoch_below, holm, paired_test,
                                       power_paired_t)


def test_paired_test_by_hand():
    """[1, 2, 3]: mean 2, sd 1, t = 2 / (1/√3) = √12; df 2: two-sided p = 1 - t/√(2 + t²) = 1 - √(12/14)."""
    t = paired_test([1.0, 2.0, 3.0])
    assert t["t"] == pytest.approx(math.sqrt(12)) and t["df"] == 2
    assert t["p"] == pytest.approx(1 - math.sqrt(12 / 14), rel=1e-12)
    shifted = paired_test([1.0, 2.0, 3.0], null=2.0)
    assert shifted["t"] == 0.0 and shifted["p"] == pytest.approx(1.0)


def test_paired_test_p_matches_the_interval():
    """p < 0.05 exactly when the 95% interval excludes the null value."""
    for values in ([0.1, 0.3, 0.2, 0.25], [0.1, -0.3, 0.2, 0.05], [0.01, 0.03, -0.005]):
        t = paired_test(values)
        assert (t["p"] < 0.05) == (t["low"] > 0 or t["high"] < 0)


def test_paired_test_edge_cases():
    assert math.isnan(paired_test([0.5])["p"])
    assert paired_test([0.5, 0.5, 0.5])["p"] == 0.0 and paired_test([0.0, 0.0])["p"] == 1.0


def test_holm_by_hand():
    """m = 3: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04 -> raised to 0.06 (monotone)."""
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    adjusted = holm([0.02, math.nan, 0.01])  # a nan is no test: m = 2
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)


def test_decide_settles_only_significant_tests():
    tests = [{"p": 0.01, "if_significant": "holds"}, {"p": 0.03, "if_significant": "does not hold"},
             {"p": 0.2, "if_significant": "holds"}]
    assert decide(tests) == ["holds", "inconclusive", "inconclusive"]  # 0.03 * 2 = 0.06
    assert [t["p_holm"] for t in tests] == pytest.approx([0.03, 0.06, 0.2])


def test_power_by_hand():
    """At no effect the power is the level; for large n it approaches the normal approximation
    Φ(δ√n/σ - z_{0.975}), and 80% power needs δ ≈ (z_{0.975} + z_{0.8}) σ / √n."""
    assert power_paired_t(0.0, 1.0, 5) == pytest.approx(0.05, abs=1e-9)
    z975, z80 = 1.959964, 0.841621
    assert detectable_effect(1.0, 2000) == pytest.approx((z975 + z80) / math.sqrt(2000), rel=2e-3)
    # with 5 values the t distribution's tails need a larger effect than the normal approximation
    assert detectable_effect(1.0, 5) > (z975 + z80) / math.sqrt(5)
    assert power_paired_t(detectable_effect(0.3, 6), 0.3, 6) == pytest.approx(0.8, abs=1e-6)


def test_first_epoch_below():
    assert first_epoch_below([1.0, 0.9, 0.4, 0.6], 0.5) == 3
    assert first_epoch_below([1.0, 0.9], 0.5) is None
