"""The prototype's published claims (prototype README, "Expected Results") and the verdict rules.

The prototype's numbers are single runs with unknown seeds on an unknown machine; we set
them beside multi-seed measurements and say plainly whether each claim holds.

Verdict rules (stated in every report):

- "DIRU beats <baseline> [by X%]": HOLDS if the 95% CI of DIRU's relative improvement lies
  entirely above 0; DOES NOT HOLD if it lies entirely at or below 0; otherwise INCONCLUSIVE.
  The claimed X is shown beside the measured improvement (and whether X lies in the CI).
- "faster convergence": the same rule on the paired difference (baseline's epochs to reach the
  target loss) - (DIRU's): HOLDS if the CI is entirely above 0 (DIRU needs fewer epochs).
- "~25% epoch-time overhead": HOLDS if the 95% CI of the measured overhead lies within a factor
  of two of the claim ([12.5%, 50%]); DOES NOT HOLD if it lies entirely outside that band;
  otherwise INCONCLUSIVE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List

__all__ = ["PROTOTYPE_SETTINGS", "setting_differences", "HOLDS", "DOES_NOT_HOLD", "INCONCLUSIVE", "MseClaim",
           "MSE_CLAIMS", "EPOCH_TIME_CLAIM", "verdict_above_zero", "verdict_within_band", "band_for_claim"]

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class MseClaim:
    diru_mse: float
    lstm_mse: float
    improvement: float  # as printed by the prototype (its own rounding)


MSE_CLAIMS: Dict[str, MseClaim] = {
    "sine": MseClaim(0.024, 0.031, 0.249),
    "memory": MseClaim(1.235, 1.568, 0.213),
    "lorenz": MseClaim(0.457, 0.523, 0.127),
}

# The settings the prototype's numbers come from (its README's); claims are only comparable at these.
PROTOTYPE_SETTINGS: Dict[str, Any] = dict(n_train=800, n_val=200, seq_len=50, hidden_size=64, num_compartments=4,
                                          batch_size=32, lr=1e-3, epochs=50)


def setting_differences(config: Dict[str, Any]) -> List[str]:
    """``"name X (prototype: Y)"`` for every study setting that differs from the prototype's."""
    return [f"{k} {config[k]:g} (prototype: {v:g})" for k, v in PROTOTYPE_SETTINGS.items()
            if k in config and config[k] != v]


# "Average Epoch Time (CPU): DIRU ~0.15s, LSTM ~0.12s, Overhead ~25%"
EPOCH_TIME_CLAIM = {"diru_s": 0.15, "lstm_s": 0.12, "overhead": 0.25}


def verdict_above_zero(low: float, high: float) -> str:
    """HOLDS if [low, high] > 0 entirely, DOES NOT HOLD if <= 0 entirely, else INCONCLUSIVE."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return INCONCLUSIVE  # e.g. a single seed: no interval
    if low > 0:
        return HOLDS
    if high <= 0:
        return DOES_NOT_HOLD
    return INCONCLUSIVE


def band_for_claim(claimed: float) -> tuple:
    """The band an approximate claim "~X" is held to: within a factor of two of X."""
    return (claimed / 2, claimed * 2) if claimed >= 0 else (claimed * 2, claimed / 2)


def verdict_within_band(low: float, high: float, band: tuple) -> str:
    """HOLDS if [low, high] lies inside band, DOES NOT HOLD if entirely outside, else INCONCLUSIVE."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return INCONCLUSIVE
    lo, hi = band
    if lo <= low and high <= hi:
        return HOLDS
    if high < lo or low > hi:
        return DOES_NOT_HOLD
    return INCONCLUSIVE
