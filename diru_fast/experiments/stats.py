"""Small statistics over seeds: mean ± std, Student-t intervals, paired relative improvement,
epochs to reach a target loss. Pure Python (no SciPy needed); the tests check it against SciPy.

The relative improvement of model A over model B from paired runs (same seed -> same data) is
estimated on the log scale, where ratios of MSEs are symmetric and roughly normal:

    r_i = log(mse_A_i / mse_B_i)                 one value per seed i
    improvement = 1 - exp(mean(r))               (1 - the geometric-mean ratio)
    95% CI      = 1 - exp(mean(r) ± t_{0.975, n-1} · sd(r) / √n)

so "+20%" means A's MSE is 0.8× B's. The interval is a Student-t interval over seeds (not a
bootstrap: with 3-5 seeds a bootstrap has too few distinct resamples to be trusted).

Tests and power (for a study's verdicts):

- :func:`paired_t_p`: the two-sided p-value of the one-sample t-test of mean(r) = 0 (the test whose
  acceptance region is the interval above: p < 0.05 exactly when the 95% CI excludes 0).
- :func:`holm`: Holm's step-down adjustment of a family of p-values (controls the probability of any
  false "holds" in the family at alpha, under any dependence between the tests).
- :func:`t_power`: the power of that two-sided t-test for a standardised effect mean/sd at n seeds
  (the noncentral t distribution, integrated numerically); :func:`seeds_for_power`: the fewest seeds
  that reach a power.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

__all__ = ["mean_std", "t_cdf_two_sided", "t_quantile", "t_interval", "Interval", "ratio_interval",
           "relative_improvement", "epochs_to_target", "paired_t_p", "holm", "t_power", "seeds_for_power",
           "normal_cdf"]


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


def paired_t_p(differences: Sequence[float]) -> float:
    """Two-sided p-value of the one-sample t-test that the mean of ``differences`` is 0 (nan for one
    value; with no spread: 1.0 if every difference is 0, else 0.0)."""
    n = len(differences)
    if n < 2:
        return math.nan
    mean, std = mean_std(differences)
    if std == 0.0:
        return 1.0 if mean == 0.0 else 0.0
    return 1.0 - t_cdf_two_sided(mean / (std / math.sqrt(n)), n - 1)


def holm(pvalues: Sequence[float]) -> list:
    """Holm-adjusted p-values, in the order given: sort ascending, multiply the i-th smallest
    (0-based) by (m - i), carry the running maximum, cap at 1. A nan stays nan and does not count
    in m (so does None: no test). Rejecting where the adjusted p < alpha is Holm's procedure at
    level alpha."""
    finite = sorted((p, i) for i, p in enumerate(pvalues) if p is not None and math.isfinite(p))
    m = len(finite)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(finite):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def t_power(effect: float, n: int, alpha: float = 0.05, steps: int = 2000) -> float:
    """Power of the two-sided one-sample t-test at level ``alpha`` with ``n`` values when the true
    mean is ``effect`` standard deviations from 0 (``effect`` = mean / sd of the paired differences).

    T = (Z + effect·√n) / S with S = √(V/ν), V ~ χ²_ν, ν = n - 1, so
    power = E_S[Φ(-c·S - λ) + 1 - Φ(c·S - λ)], λ = effect·√n, c = t_{1-α/2, ν};
    the expectation over the chi distribution of √V is a Simpson sum over ``steps`` intervals.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"power needs n >= 2 values, got {n!r}")
    if not math.isfinite(effect):
        raise ValueError(f"effect must be finite, got {effect!r}")
    nu = n - 1
    c = t_quantile(1.0 - alpha, nu)
    lam = abs(effect) * math.sqrt(n)
    log_norm = (1.0 - nu / 2.0) * math.log(2.0) - math.lgamma(nu / 2.0)  # chi density: 2^(1-ν/2)/Γ(ν/2)

    def integrand(u: float) -> float:  # u = √V, chi density u^(ν-1) e^(-u²/2) · norm
        if u == 0.0:
            dens = math.exp(log_norm) if nu == 1 else 0.0
        else:
            dens = math.exp(log_norm + (nu - 1) * math.log(u) - u * u / 2.0)
        s = u / math.sqrt(nu)
        return dens * (normal_cdf(-c * s - lam) + 1.0 - normal_cdf(c * s - lam))

    upper = math.sqrt(nu) + 12.0  # the chi density is < 1e-30 beyond
    h = upper / steps
    total = integrand(0.0) + integrand(upper)
    for j in range(1, steps):
        total += (4.0 if j % 2 else 2.0) * integrand(j * h)
    return min(1.0, max(0.0, total * h / 3.0))


def seeds_for_power(effect: float, power: float = 0.8, alpha: float = 0.05, max_n: int = 10_000) -> Optional[int]:
    """The fewest values n >= 2 at which :func:`t_power` reaches ``power`` (None: not by ``max_n``,
    e.g. for effect 0)."""
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must lie in (0, 1), got {power}")
    if effect == 0.0 or t_power(effect, max_n, alpha) < power:
        return None
    lo, hi = 2, max_n  # power grows with n: bisect for the first n that reaches it
    if t_power(effect, lo, alpha) >= power:
        return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if t_power(effect, mid, alpha) >= power:
            hi = mid
        else:
            lo = mid
    return hi
