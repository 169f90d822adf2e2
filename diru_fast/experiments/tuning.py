"""Equal tuning for every model: a learning-rate grid, picked on validation with tuning seeds.

The protocol (the same budget for every model): each learning rate of a log-spaced grid is tried
on a few *tuning seeds* (disjoint from the seeds whose test MSEs are reported); a trial trains with
gradient clipping and early stopping on the validation split (up to an epoch cap) and scores its
best validation loss; the picked learning rate is the one with the lowest **median** best
validation loss over the tuning seeds (a diverged trial, NaN or inf, counts as +inf; ties go to
the smaller rate). The curve of validation loss against learning rate (median and range over the
tuning seeds) is a result in itself: where a cell trains at all.

- :func:`log_grid`: ``n`` log-spaced values from ``low`` to ``high``
- :func:`tune_lr`: run ``fit(lr, seed) -> best validation loss`` over grid × seeds, pick the rate
- :func:`pick_lr`, :func:`lr_curve`: the picking rule and the curve, from trial rows
  ``{"lr": float, "seed": int, "val": float}`` (so a caller may run the trials its own way: in
  worker processes, resumed from disk)
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterable, List, Sequence, Tuple


class SeedPlan:
    """Test seeds and tuning seeds of a study's config (a mixin for dataclasses with the fields
    ``first_seed``, ``seeds``, ``tune_first_seed``, ``tune_seeds`` and ``lr_grid``)."""

    @property
    def seed_list(self) -> List[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    @property
    def tuned(self) -> bool:
        """True if the learning rate is picked from a grid (more than one value)."""
        return len(self.lr_grid) > 1

    @property
    def tune_seed_list(self) -> List[int]:
        return list(range(self.tune_first_seed, self.tune_first_seed + self.tune_seeds)) if self.tuned else []

    def check_seeds_apart(self) -> None:
        """Tuning seeds must not overlap the test seeds."""
        if self.tuned and set(self.tune_seed_list) & set(self.seed_list):
            raise ValueError(f"tuning seeds {self.tune_seed_list} overlap the test seeds {self.seed_list}: "
                             "move tune_first_seed")


__all__ = ["DEFAULT_LR_GRID", "DEFAULT_CLIP_NORM", "DEFAULT_PATIENCE", "log_grid", "median", "pick_lr", "lr_curve", "tune_lr"]

# Adam learning rates, half a decade apart: 3e-4 .. 3e-2 (5 values)
DEFAULT_LR_GRID: Tuple[float, ...] = (3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
DEFAULT_CLIP_NORM = 1.0  # gradient clipping (global L2 norm), the same for every model
DEFAULT_PATIENCE = 12  # early stopping: epochs without a better validation loss (memory tasks plateau first)


def log_grid(low: float, high: float, n: int) -> Tuple[float, ...]:
    """``n`` log-spaced values from ``low`` to ``high`` (both included), 3 significant digits."""
    if not (0 < low < high) or n < 2:
        raise ValueError(f"need 0 < low < high and n >= 2, got {low}, {high}, {n}")
    step = (math.log(high) - math.log(low)) / (n - 1)
    return tuple(float(f"{math.exp(math.log(low) + i * step):.3g}") for i in range(n))


def _finite_or_inf(v: float) -> float:
    return v if isinstance(v, (int, float)) and math.isfinite(v) else math.inf


def median(values: Sequence[float]) -> float:
    """The median (nan for no values; the mean of the middle two, where inf + x stays inf)."""
    s = sorted(values)
    n = len(s)
    if n == 0:
        return math.nan
    mid = n // 2
    if n % 2:
        return s[mid]
    a, b = s[mid - 1], s[mid]
    return a if a == b else (a + b) / 2  # inf + inf stays inf; inf + x = inf


def lr_curve(rows: Iterable[Dict[str, Any]], key: str = "val") -> List[Dict[str, Any]]:
    """Per learning rate (ascending): ``{"lr", "median", "low", "high", "n", "diverged"}`` of ``row[key]``
    over the rows (seeds); a NaN/inf value counts as +inf and as diverged."""
    by: Dict[float, List[float]] = {}
    for r in rows:
        by.setdefault(float(r["lr"]), []).append(_finite_or_inf(r[key]))
    return [{"lr": lr, "median": median(v), "low": min(v), "high": max(v), "n": len(v),
             "diverged": sum(1 for x in v if math.isinf(x))} for lr, v in sorted(by.items())]


def pick_lr(rows: Iterable[Dict[str, Any]], key: str = "val") -> float:
    """The learning rate with the lowest median ``row[key]`` over seeds (ties: the smaller rate).
    ValueError if there are no rows; if every rate diverged, the smallest rate."""
    curve = lr_curve(rows, key)
    if not curve:
        raise ValueError("no tuning trials to pick a learning rate from")
    return min(curve, key=lambda c: (c["median"], c["lr"]))["lr"]


def tune_lr(fit: Callable[[float, int], float], lr_grid: Sequence[float],
            seeds: Sequence[int]) -> Tuple[float, List[Dict[str, Any]]]:
    """Run ``fit(lr, seed)`` (train with that rate on that tuning seed; return the best validation loss)
    for every rate of ``lr_grid`` and every seed; return ``(picked lr, trial rows)``."""
    if not lr_grid or not seeds:
        raise ValueError("tune_lr needs at least one learning rate and one seed")
    rows = [{"lr": float(lr), "seed": int(seed), "val": float(fit(float(lr), int(seed)))}
            for lr in lr_grid for seed in seeds]
    return pick_lr(rows), rows
