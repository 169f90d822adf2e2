"""Memory capacity against the number of compartments k (the prototype: "Memory Capacity: ... ~k×
capacity of standard RNN").

Measurement
-----------
The standardised variable-delay memory task (:mod:`.common`: the prototype's task, inputs / 8, target
z-scored with training statistics) at growing delay: sequence length T in ``seq_lens``; the delay
is T - 5, the steps from the first stored value (step 0) to the recall marker (step T - 5). For
each delay, seed and k in {1, 2, 4, 8} a DIRU with the same hidden size d is trained with the
same recipe (gradient clipping included: without it some runs learned the task and then fell back
to predicting the mean). At fixed d the parameter count does not depend on k (m·n·k = d·n), so the
budget is fixed by construction (the counts are recorded). Error: the validation NMSE after the last
epoch (MSE of the standardised target: 1 = nothing remembered, 0 = perfect). Two vanilla tanh RNNs
run beside them as the "standard RNN" of the claim (reference curves, not in the tests): one of the
same d (far fewer parameters) and one resized to DIRU's parameter count (``rnn_matched``).

Statistics on y = ln NMSE (:func:`k_effect`), blocks = (delay, seed) cells, which share their data:

- F-test of "no effect of k at any delay": ``y ~ C(cell)`` against ``y ~ C(cell) + C(k) + C(k):C(delay)``;
  and Friedman's rank test across k within the cells (robust to the uneven spread of ln NMSE).
- b: the change of y per doubling of k, ``y ~ C(cell) + log2 k`` (OLS, HC3 errors, 95% CI).
- g: the change of y per doubling of the delay, ``y ~ C(k, seed) + log2 delay`` (same).

Verdict rule for "capacity grows about k×" (:func:`verdict`): k× capacity means doubling k undoes a
doubling of the delay, so it predicts b ≈ -g. As for the study's "~X" claims, "about" is a factor
of two: the band [-2g, -g/2]. If the error grows with the delay in the tested range (g's CI above
0): **holds** if b's CI lies inside the band, **does not hold** if it lies entirely outside, else
**inconclusive**; if the error does not grow with the delay, the test has no power: **inconclusive**.
The verdict rests on this one interval (a family of one test: no multiple-comparison correction);
the F-test and Friedman's test of "no effect of k" are descriptive and do not enter it (a
non-significant F is not evidence that k has no effect).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..experiments.claims import INCONCLUSIVE, verdict_within_band
from ..experiments.models import count_params, diru_params
from ..experiments.options import DIRUOptions
from ..experiments.study import derive_seed
from .common import CLIP_NORM, Timer, build, fit, matched_rnn_hidden, memory_delay, standardised_memory

__all__ = ["MemoryCapacityConfig", "run_memory_capacity", "k_effect", "verdict", "predicted_band", "CLAIM"]

CLAIM = "\"Memory Capacity: ... ~k× capacity of standard RNN\" (prototype README, Theoretical Highlights)"


@dataclass
class MemoryCapacityConfig:
    ks: Tuple[int, ...] = (1, 2, 4, 8)
    seq_lens: Tuple[int, ...] = (15, 25, 35, 45)  # delays T - 5: 10, 20, 30, 40
    seeds: int = 3
    first_seed: int = 0
    n_train: int = 512
    n_val: int = 200
    hidden_size: int = 64
    epochs: int = 25
    batch_size: int = 32
    lr: float = 1e-3
    clip: float = CLIP_NORM  # gradient clipping (global L2 norm), every model
    rnn_reference: bool = True  # also train vanilla tanh RNNs: of the same d, and of DIRU's parameter count
    backend: str = "auto"
    options: DIRUOptions = DIRUOptions()  # DIRU's cell options (not the RNN reference's)

    def __post_init__(self):
        self.ks, self.seq_lens = tuple(self.ks), tuple(self.seq_lens)
        sizes = self.options.compartment_sizes
        if sizes is not None:
            if self.ks != (len(sizes),):
                raise ValueError(f"compartment sizes {','.join(map(str, sizes))} fix k = {len(sizes)}: pass ks "
                                 f"{len(sizes)} alone, got {list(self.ks)}")
            self.options.check(self.hidden_size, len(sizes))
        for k in self.ks:
            if k < 1 or (sizes is None and self.hidden_size % k):
                raise ValueError(f"every k must be positive and divide hidden_size {self.hidden_size}; got {k}")
        for name in ("seeds", "n_train", "n_val", "epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.ks or not self.seq_lens:
            raise ValueError("need at least one k and one sequence length")

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["ks"], d["seq_lens"] = list(self.ks), list(self.seq_lens)
        return d


def run_memory_capacity(config: MemoryCapacityConfig, progress=None) -> Dict[str, Any]:
    """Train every (seq_len, seed, k) (and the RNN reference); record validation NMSE and parameters."""
    runs: List[Dict[str, Any]] = []
    kinds = [("diru", k) for k in config.ks] + ([("rnn", None), ("rnn_matched", None)] if config.rnn_reference else [])
    k_ref = config.ks[0] if config.options.compartment_sizes is None else len(config.options.compartment_sizes)
    matched = matched_rnn_hidden(diru_params(1, config.hidden_size, 1, k_ref, config.options), 1, 1)
    for seq_len in config.seq_lens:
        for seed in range(config.first_seed, config.first_seed + config.seeds):
            train_set, val_set, _ = standardised_memory(config.n_train, config.n_val, seq_len, seed)
            for kind, k in kinds:
                torch.manual_seed(derive_seed("memory-capacity", seed, seq_len, "init"))
                hidden = matched if kind == "rnn_matched" else config.hidden_size
                model = build(kind, 1, hidden, 1, num_compartments=k or 1, backend=config.backend,
                              options=config.options)
                with Timer() as timer:
                    history = fit(model, train_set, val_set, epochs=config.epochs, batch_size=config.batch_size,
                                  lr=config.lr, shuffle_seed=derive_seed("memory-capacity", seed, seq_len, "shuffle"),
                                  clip=config.clip)
                runs.append({"model": kind, "k": k, "seq_len": seq_len, "delay": memory_delay(seq_len), "seed": seed,
                             "hidden_size": hidden, "params": count_params(model), "val_nmse": history.val_loss[-1],
                             "best_val_nmse": min(history.val_loss), "val_nmse_curve": history.val_loss,
                             "seconds": timer.seconds})
                if progress is not None:
                    name = f"DIRU k={k}" if kind == "diru" else f"{kind} (d={hidden})"
                    progress(f"delay {memory_delay(seq_len)} seed {seed} {name}: val NMSE {history.val_loss[-1]:.3g} "
                             f"({timer.seconds:.0f} s)")
    diru_rows = [r for r in runs if r["model"] == "diru"]
    return {"analysis": "memory_capacity", "config": config.to_dict(), "runs": runs,
            "params_by_k": {str(k): sorted({r["params"] for r in diru_rows if r["k"] == k}) for k in config.ks},
            "summary": k_effect(diru_rows)}


def _ols_slope(formula: str, data, term: str) -> Optional[List[float]]:
    import statsmodels.formula.api as smf

    fit_ = smf.ols(formula, data=data).fit(cov_type="HC3")
    if term not in fit_.params or not math.isfinite(float(fit_.bse[term])):
        return None
    low, high = fit_.conf_int().loc[term]
    return [float(fit_.params[term]), float(low), float(high)]


def k_effect(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """The statistics of the module docstring over DIRU runs (``k``, ``delay``, ``seed``, ``val_nmse``)."""
    import numpy as np
    import pandas as pd

    data = pd.DataFrame({"k": [r["k"] for r in rows], "delay": [r["delay"] for r in rows],
                         "seed": [r["seed"] for r in rows],
                         "y": [math.log(max(r["val_nmse"], 1e-12)) for r in rows]})
    data["cell"] = data["delay"].astype(str) + "/" + data["seed"].astype(str)
    data["kseed"] = data["k"].astype(str) + "/" + data["seed"].astype(str)
    data["log2k"] = np.log2(data["k"])
    data["log2delay"] = np.log2(data["delay"])
    out: Dict[str, Any] = {"n": len(data), "ks": sorted(data["k"].unique().tolist()),
                           "delays": sorted(data["delay"].unique().tolist())}
    table = data.pivot_table(index="k", columns="delay", values="y", aggfunc=["mean", "std", "count"])
    out["per_k_delay"] = [
        {"k": int(k), "delay": int(dl), "mean_log_nmse": float(table["mean"].loc[k, dl]),
         "sd_log_nmse": float(table["std"].loc[k, dl]) if table["count"].loc[k, dl] > 1 else math.nan,
         "geo_mean_nmse": float(math.exp(table["mean"].loc[k, dl])),
         "nmse": [float(math.exp(v)) for v in data[(data.k == k) & (data.delay == dl)].sort_values("seed")["y"]]}
        for k in table.index for dl in table["mean"].columns]
    several_k, several_d = data["k"].nunique() > 1, data["delay"].nunique() > 1
    out["f_test"] = _f_test(data) if several_k else None
    out["friedman"] = _friedman(data) if data["k"].nunique() >= 3 else None
    out["b_per_doubling_k"] = _ols_slope("y ~ C(cell) + log2k", data, "log2k") if several_k else None
    out["g_per_doubling_delay"] = (_ols_slope("y ~ C(kseed) + log2delay", data, "log2delay")
                                   if several_d else None)
    out["verdict"] = verdict(out["b_per_doubling_k"], out["g_per_doubling_delay"])
    return out


def _f_test(data) -> Optional[Dict[str, float]]:
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    reduced = smf.ols("y ~ C(cell)", data=data).fit()
    with warnings.catch_warnings():  # C(k):C(delay) overlaps C(cell); the rank (and df) are right
        warnings.simplefilter("ignore")
        full = smf.ols("y ~ C(cell) + C(k) + C(k):C(delay)", data=data).fit()
    if full.df_resid < 1:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = anova_lm(reduced, full)
    return {"F": float(table["F"].iloc[1]), "df_num": float(table["df_diff"].iloc[1]),
            "df_den": float(full.df_resid), "p": float(table["Pr(>F)"].iloc[1])}


def _friedman(data) -> Optional[Dict[str, float]]:
    from scipy.stats import friedmanchisquare

    wide = data.pivot_table(index="cell", columns="k", values="y").dropna()
    if len(wide) < 2:
        return None
    stat, p = friedmanchisquare(*[wide[c].to_numpy() for c in wide.columns])
    return {"chi2": float(stat), "p": float(p), "blocks": int(len(wide))}


def verdict(b: Optional[List[float]], g: Optional[List[float]]) -> str:
    """The rule in the module docstring (b, g: [estimate, low, high])."""
    if b is None or g is None or not all(math.isfinite(v) for v in b + g) or g[1] <= 0:
        return INCONCLUSIVE
    return verdict_within_band(b[1], b[2], predicted_band(g))


def predicted_band(g: List[float]) -> Tuple[float, float]:
    """The b that "about k×" capacity predicts: -g within a factor of two, ``(-2g, -g/2)``."""
    return (-2.0 * g[0], -0.5 * g[0])
