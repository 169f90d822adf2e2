"""Statistics over seeds, checked against SciPy; the verdict rules."""

import math

import pytest
import scipy.stats as scipy_stats

from diru_fast.experiments import claims as C
from diru_fast.experiments.stats import (epochs_to_target, mean_std, ratio_interval, relative_improvement,
                                         t_cdf_two_sided, t_interval, t_quantile)


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 6, 9, 10, 29, 30, 31, 100, 301])
def test_t_distribution_matches_scipy(df):
    for level in (0.5, 0.9, 0.95, 0.99):
        assert t_quantile(level, df) == pytest.approx(scipy_stats.t.ppf(0.5 + level / 2, df), rel=1e-9)
    for t in (0.0, 0.3, 1.0, 2.5, 8.0):
        assert t_cdf_two_sided(t, df) == pytest.approx(2 * scipy_stats.t.cdf(t, df) - 1, abs=1e-12)


def test_t_interval_matches_scipy():
    values = [0.31, 0.27, 0.45, 0.29, 0.38]
    iv = t_interval(values)
    lo, hi = scipy_stats.t.interval(0.95, len(values) - 1, loc=sum(values) / 5, scale=scipy_stats.sem(values))
    assert (iv.low, iv.high) == (pytest.approx(lo, rel=1e-9), pytest.approx(hi, rel=1e-9))
    assert iv.estimate == pytest.approx(sum(values) / 5)
    one = t_interval([2.0])
    assert one.estimate == 2.0 and math.isnan(one.low) and math.isnan(one.high)


def test_mean_std():
    assert mean_std([1.0, 2.0, 3.0, 4.0]) == (2.5, pytest.approx(1.2909944487358056))
    assert math.isnan(mean_std([3.0])[1])


def test_relative_improvement_exact_ratio():
    base = [0.5, 1.0, 2.0]
    imp = relative_improvement([0.8 * b for b in base], base)
    assert imp.estimate == pytest.approx(0.2) and imp.low == pytest.approx(0.2) and imp.high == pytest.approx(0.2)


def test_relative_improvement_interval_on_log_ratios():
    a, b = [0.9, 1.3, 0.7, 1.1], [1.0, 1.2, 1.0, 1.5]
    logs = [math.log(x / y) for x, y in zip(a, b)]
    m, se = sum(logs) / 4, scipy_stats.sem(logs)
    q = scipy_stats.t.ppf(0.975, 3)
    imp = relative_improvement(a, b)
    assert imp.estimate == pytest.approx(1 - math.exp(m))
    assert imp.low == pytest.approx(1 - math.exp(m + q * se)) and imp.high == pytest.approx(1 - math.exp(m - q * se))
    assert ratio_interval(a, b).estimate == pytest.approx(math.exp(m))


def test_relative_improvement_rejects_bad_runs():
    with pytest.raises(ValueError, match="paired"):
        relative_improvement([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="diverge"):
        relative_improvement([float("nan"), 1.0], [1.0, 1.0])


def test_epochs_to_target():
    assert epochs_to_target([5.0, 3.0, 2.0, 1.0], 2.5) == 3
    assert epochs_to_target([5.0, 3.0], 3.0) == 2
    assert epochs_to_target([5.0, 3.0], 1.0) is None


def test_verdict_rules():
    assert C.verdict_above_zero(0.01, 0.3) == C.HOLDS
    assert C.verdict_above_zero(-0.3, 0.0) == C.DOES_NOT_HOLD
    assert C.verdict_above_zero(-0.1, 0.2) == C.INCONCLUSIVE
    assert C.verdict_above_zero(math.nan, math.nan) == C.INCONCLUSIVE
    band = C.band_for_claim(0.25)
    assert band == (0.125, 0.5)
    assert C.verdict_within_band(0.2, 0.3, band) == C.HOLDS
    assert C.verdict_within_band(1.8, 2.0, band) == C.DOES_NOT_HOLD
    assert C.verdict_within_band(-0.2, 0.05, band) == C.DOES_NOT_HOLD
    assert C.verdict_within_band(0.4, 0.7, band) == C.INCONCLUSIVE


def test_setting_differences():
    same = dict(C.PROTOTYPE_SETTINGS)
    assert C.setting_differences(same) == []
    diffs = C.setting_differences(dict(same, n_train=256, epochs=12))
    assert len(diffs) == 2 and any("n_train 256" in d for d in diffs)


def test_paired_t_p_matches_scipy():
    from diru_fast.experiments.stats import paired_t_p

    for values in ([0.3, -0.1, 0.25, 0.4, 0.05], [-0.2, -0.25, -0.1], [1.0, -1.0, 0.5, -0.4, 0.2, 0.1, -0.3]):
        assert paired_t_p(values) == pytest.approx(scipy_stats.ttest_1samp(values, 0.0).pvalue, rel=1e-9)
    assert paired_t_p([0.0, 0.0, 0.0]) == 1.0 and paired_t_p([2.0, 2.0]) == 0.0
    assert math.isnan(paired_t_p([1.0]))


def test_holm_by_hand():
    from diru_fast.experiments.stats import holm

    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 4 x 0.005 = 0.02, 3 x 0.01 = 0.03, 2 x 0.03 = 0.06,
    # 1 x 0.04 = 0.04 -> raised to the running maximum 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == [pytest.approx(0.03), pytest.approx(0.06), pytest.approx(0.06),
                                              pytest.approx(0.02)]
    assert holm([0.5, 0.9]) == [pytest.approx(1.0), pytest.approx(1.0)]  # capped at 1
    out = holm([0.02, math.nan, 0.01])  # a nan is left out of m
    assert math.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02)
    assert holm([]) == []


@pytest.mark.parametrize("n", [2, 3, 5, 10, 39])
@pytest.mark.parametrize("effect", [0.0, 0.25, -0.9, 1.5])
def test_t_power_matches_the_noncentral_t(n, effect):
    from diru_fast.experiments.stats import t_power

    crit = scipy_stats.t.ppf(0.975, n - 1)
    nc = abs(effect) * math.sqrt(n)
    expected = scipy_stats.nct.sf(crit, n - 1, nc) + scipy_stats.nct.cdf(-crit, n - 1, nc)
    assert t_power(effect, n) == pytest.approx(expected, abs=2e-7)


def test_seeds_for_power():
    from diru_fast.experiments.stats import seeds_for_power, t_power

    # the textbook case: a one-sample t-test needs 10 values for 80% power at effect 1.0 (0.803 at n = 10)
    assert seeds_for_power(1.0) == 10 and t_power(1.0, 9) < 0.8 <= t_power(1.0, 10)
    n = seeds_for_power(-0.46)  # the sign does not matter
    assert t_power(0.46, n - 1) < 0.8 <= t_power(0.46, n)
    assert seeds_for_power(0.0) is None and t_power(0.0, 7) == pytest.approx(0.05, abs=1e-7)
    with pytest.raises(ValueError):
        t_power(1.0, 1)
