"""The prototype's published claims (prototype README, "Expected Results") and the verdict rules.

The prototype's numbers are single runs with unknown seeds on an unknown machine; we set
them beside multi-seed measurements and say plainly whether each claim holds.

Verdict rules (fixed before any run; every report states them before its numbers):

- **Learned:** a model has learned a task when its test MSE is at most ``LEARNED_RATIO`` (0.3) x
  the MSE of predicting the training mean (per seed; over seeds, the median of the per-seed ratios).
- **A comparison** "DIRU beats <baseline>" is tested only when both models learned the task: HOLDS
  if the Holm-adjusted p of the paired test over seeds is < 0.05 and DIRU is better, DOES NOT HOLD
  if it is < 0.05 and DIRU is worse, otherwise INCONCLUSIVE (not evidence of no effect). Where
  neither learned, the verdict is NOT LEARNED (never "holds"); where only one learned, the verdict
  says which ("only DIRU learned", "only LSTM learned"): a result when both were tuned alike.
- "~25% epoch-time overhead": HOLDS if the 95% CI of the measured overhead lies within a factor
  of two of the claim ([12.5%, 50%]); DOES NOT HOLD if it lies entirely outside that band;
  otherwise INCONCLUSIVE.

:func:`verdict_above_zero` (a CI entirely above zero) is the interval rule of the analyses that
compare two numbers with a bootstrap interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

__all__ = ["PROTOTYPE_SETTINGS", "setting_differences", "HOLDS", "DOES_NOT_HOLD", "INCONCLUSIVE", "NOT_LEARNED",
           "LEARNED_RATIO", "learned", "only_learned", "pair_verdict", "MseClaim",
           "MSE_CLAIMS", "EPOCH_TIME_CLAIM", "verdict_above_zero", "verdict_within_band", "band_for_claim"]

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
INCONCLUSIVE = "inconclusive"
NOT_LEARNED = "not learned"
LEARNED_RATIO = 0.3  # test MSE / predict-the-mean MSE at or below this: the model learned the task


def learned(ratio_to_mean: Optional[float]) -> bool:
    """True if a test MSE of ``ratio_to_mean`` x the predict-the-mean MSE counts as having learned the task."""
    return ratio_to_mean is not None and math.isfinite(ratio_to_mean) and ratio_to_mean <= LEARNED_RATIO


def only_learned(name: str) -> str:
    """The verdict of a comparison where only ``name`` learned the task."""
    return f"only {name} learned"


def pair_verdict(a_learned: bool, b_learned: bool, tested: str, a_name: str = "DIRU", b_name: str = "LSTM") -> str:
    """The verdict of "a beats b": ``tested`` (the statistical verdict) only when both learned the task;
    NOT_LEARNED when neither did; "only <name> learned" when one did."""
    if a_learned and b_learned:
        return tested
    if not a_learned and not b_learned:
        return NOT_LEARNED
    return only_learned(a_name if a_learned else b_name)


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
    """``"name X (prototype: Y)"`` for every study setting that differs from the prototype's, the
    protocol first (scaling, tuning, clipping, early stopping)."""
    out = []
    if config.get("normalize"):
        out.append("standardised data (prototype: raw scale)")
    if len(config.get("lr_grid") or ()) > 1:
        out.append("lr tuned per model from a grid (prototype: 1e-3 for every model)")
    if config.get("clip_norm"):
        out.append(f"gradient clipping at {config['clip_norm']:g} (prototype: none)")
    if config.get("patience"):
        out.append(f"early stopping, patience {config['patience']} (prototype: fixed epochs)")
    tuned = len(config.get("lr_grid") or ()) > 1
    return out + [f"{k} {config[k]:g} (prototype: {v:g})" for k, v in PROTOTYPE_SETTINGS.items()
                  if k in config and config[k] != v and not (k == "lr" and tuned)]


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
