"""Small statistics over seeds: mean ± std, Student-t intervals, paired relative improvement,
epochs to reach a target loss. Pure Python (no SciPy needed); the tests check it against SciPy.

The relative improvement of model A over model B from paired runs (same seed -> same data) is
estimated on the log scale, where ratios of MSEs are symmetric and roughly normal:

    r_i = log(mse_A_i / mse_B_i)                 one value per seed i
    improvement = 1 - exp(mean(r))               (1 - the geometric-mean ratio)
    95% CI      = 1 - exp(mean(r) ± t_{0.975, n-1} · sd(r) / √n)

so "+20%" means A's MSE is 0.8× B's. The interval is a Student-t interval over seeds (not a
bootstrap: with 3-5 seeds a bootstrap has too few distinct resamples to be trusted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

__all__ = ["mean_std", "t_cdf_two_sided", "t_quantile", "t_interval", "Interval", "ratio_interval",
           "relative_improvement", "epochs_to_target"]


def mean_std(values: Sequence[float]) -> tuple:
    """(mean, sample standard deviation with n-1); std is nan for a single value."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_std needs at least one value")
    mean = sum(values) / n
    if n == 1:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def t_cdf_two_sided(t: float, df: int) -> float:
    """P(|T| <= t) for Student's t with integer ``df`` (closed form, Abramowitz & Stegun 26.7.3-4)."""
    if df < 1 or int(df) != df:
        raise ValueError(f"df must be a positive integer, got {df}")
    t = abs(t)
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2 == 1:
        total, term = 0.0, math.cos(theta)
        for j in range(1, (df - 1) // 2 + 1):  # cos θ (1 + 2/3 cos²θ + 2·4/(3·5) cos⁴θ + ...)
            total += term
            term *= c2 * (2 * j) / (2 * j + 1)
        return 2.0 / math.pi * (theta + math.sin(theta) * total)
    total, term = 0.0, 1.0
    for j in range(1, df // 2 + 1):  # 1 + 1/2 cos²θ + 1·3/(2·4) cos⁴θ + ...
        total += term
        term *= c2 * (2 * j - 1) / (2 * j)
    return math.sin(theta) * total


def t_quantile(level: float, df: int) -> float:
    """The t such that P(|T| <= t) = level (e.g. level 0.95 gives the 0.975 quantile)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    lo, hi = 0.0, 1.0
    while t_cdf_two_sided(hi, df) < level:
        hi *= 2.0
    for _ in range(200):  # bisection to machine precision
        mid = 0.5 * (lo + hi)
        if t_cdf_two_sided(mid, df) < level:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    n: int

    def __str__(self) -> str:
        return f"{self.estimate:.4g} [{self.low:.4g}, {self.high:.4g}]"


def t_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Mean of ``values`` with its Student-t confidence interval (nan bounds for one value)."""
    mean, std = mean_std(values)
    n = len(values)
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    half = t_quantile(level, n - 1) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def ratio_interval(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> Interval:
    """Geometric-mean ratio a/b over paired values (``a[i]``, ``b[i]`` from the same seed), with
    the t-interval of the mean log-ratio mapped back through exp."""
    if len(a) != len(b) or not a:
        raise ValueError(f"need equally many paired values, got {len(a)} and {len(b)}")
    if any(not (v > 0 and math.isfinite(v)) for v in list(a) + list(b)):
        raise ValueError("ratios need finite, positive values (did a run diverge?)")
    iv = t_interval([math.log(x / y) for x, y in zip(a, b)], level)
    return Interval(math.exp(iv.estimate), math.exp(iv.low), math.exp(iv.high), iv.n)


def relative_improvement(mse_a: Sequence[float], mse_b: Sequence[float], level: float = 0.95) -> Interval:
    """How much lower A's MSE is than B's, as a fraction (0.2 = 20% lower), with its CI.

    ``mse_a[i]`` and ``mse_b[i]`` must come from the same seed (paired). See the module docstring.
    """
    r = ratio_interval(mse_a, mse_b, level)
    return Interval(1 - r.estimate, 1 - r.high, 1 - r.low, r.n)  # a lower ratio is a larger improvement


def epochs_to_target(curve: Sequence[float], target: float) -> Optional[int]:
    """The first epoch (1-based) whose loss is <= target, or None if the curve never gets there."""
    for epoch, loss in enumerate(curve, start=1):
        if loss <= target:
            return epoch
    return None
