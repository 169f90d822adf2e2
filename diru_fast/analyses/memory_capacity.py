"""Memory capacity against the number of compartments k (the prototype: "Memory Capacity: ... ~k×
capacity of standard RNN").

Measurement
-----------
The standardised variable-delay memory task (:mod:`.common`: the prototype's task, inputs / 8, target
z-scored with training statistics) at growing delay: sequence length T in ``seq_lens``; the delay
is T - 5, the steps from the first stored value (step 0) to the recall marker (step T - 5). For
each delay, seed and k in {1, 2, 4, 8} a DIRU with the same hidden size d is trained with the
comparison study's protocol: at every delay, each model's Adam learning rate is picked from a grid on
tuning seeds disjoint from the test seeds (DIRU at one k: the plain cell's math does not depend on k);
gradient clipping; early stopping on validation with an epoch cap; the best validation epoch's weights
scored on a test split. At fixed d the parameter count does not depend on k (m·n·k = d·n), so the
budget is fixed by construction (the counts are recorded). Error: the test NMSE (test MSE of the
standardised target over predicting the training mean: 1 = nothing remembered, 0 = perfect). Two vanilla
tanh RNNs, tuned the same way, run beside them as the "standard RNN" of the claim (reference curves, not
in the tests): one of the same d (far fewer parameters) and one resized to DIRU's parameter count
(``rnn_matched``). Least squares on all inputs solves the task exactly (the target is linear in the
inputs); the task measures whether a recurrent network carries the values over the delay.

Learned (:mod:`diru_fast.experiments.claims`): a model has learned the task at a delay when its median
test NMSE over seeds is at most 0.3. The statistics use the delays at which DIRU learned at every k.

Statistics on y = ln test NMSE (:func:`k_effect`), blocks = (delay, seed) cells, which share their data:

- F-test of "no effect of k at any delay": ``y ~ C(cell)`` against ``y ~ C(cell) + C(k) + C(k):C(delay)``;
  and Friedman's rank test across k within the cells (robust to the uneven spread of ln NMSE).
- b: the change of y per doubling of k, ``y ~ C(cell) + log2 k`` (OLS, HC3 errors, 95% CI).
- g: the change of y per doubling of the delay, ``y ~ C(k, seed) + log2 delay`` (same).

Verdict rule for "capacity grows about k×" (:func:`verdict`): k× capacity means doubling k undoes a
doubling of the delay, so it predicts b ≈ -g. As for the study's "~X" claims, "about" is a factor
of two: the band [-2g, -g/2]. If DIRU learned the task at no delay for every k: **not learned**.
If the error grows with the delay in the tested range (g's CI above 0): **holds** if b's CI lies
inside the band, **does not hold** if it lies entirely outside, else **inconclusive**; if the error
does not grow with the delay, the test has no power: **inconclusive**. The verdict rests on this one
interval (a family of one test: no multiple-comparison correction); the F-test and Friedman's test of
"no effect of k" are descriptive and do not enter it (a non-significant F is not evidence that k has
no effect).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ..experiments.claims import INCONCLUSIVE, NOT_LEARNED, verdict_within_band
from ..experiments.models import count_params, diru_params
from ..experiments.options import DIRUOptions
from ..experiments.study import derive_seed
from ..experiments.trivial import trivial_baselines
from ..experiments.tuning import DEFAULT_LR_GRID, DEFAULT_PATIENCE, SeedPlan
from .common import (CLIP_NORM, Timer, build, learned_summary, matched_rnn_hidden, memory_delay, scored_fit,
                     standardised_memory_splits, tune_trials)

__all__ = ["MemoryCapacityConfig", "run_memory_capacity", "k_effect", "verdict", "predicted_band", "CLAIM"]

CLAIM = "\"Memory Capacity: ... ~k× capacity of standard RNN\" (prototype README, Theoretical Highlights)"


@dataclass
class MemoryCapacityConfig(SeedPlan):
    """Settings of :func:`run_memory_capacity`, with the study's protocol: for every delay, each model's
    learning rate is picked from ``lr_grid`` on ``tune_seeds`` tuning seeds (``tune_first_seed`` on, disjoint
    from the test seeds), DIRU at ``tune_k`` compartments (0: at every k); early stopping after ``patience``
    epochs without a better validation loss, ``epochs`` the cap, the best epoch's weights scored on a test split."""

    ks: Tuple[int, ...] = (1, 2, 4, 8)
    seq_lens: Tuple[int, ...] = (15, 25, 35, 45)  # delays T - 5: 10, 20, 30, 40
    seeds: int = 10  # test seeds (a run takes seconds: ten, as in the study)
    first_seed: int = 0
    n_train: int = 512
    n_val: int = 200
    n_test: int = 200
    hidden_size: int = 64
    epochs: int = 50  # the cap
    patience: int = DEFAULT_PATIENCE
    batch_size: int = 32
    lr_grid: Tuple[float, ...] = DEFAULT_LR_GRID  # one value: no tuning
    tune_seeds: int = 1  # per delay and model (4 delays x 5 rates: the budget of one core)
    tune_first_seed: int = 1000
    tune_k: int = 4  # DIRU is tuned at this k (the plain cell's math does not depend on k); 0: at every k
    clip: float = CLIP_NORM  # gradient clipping (global L2 norm), every model
    rnn_reference: bool = True  # also train vanilla tanh RNNs: of the same d, and of DIRU's parameter count
    backend: str = "auto"
    options: DIRUOptions = DIRUOptions()  # DIRU's cell options (not the RNN reference's)

    def __post_init__(self):
        self.ks, self.seq_lens = tuple(self.ks), tuple(self.seq_lens)
        self.lr_grid = tuple(float(v) for v in self.lr_grid)
        sizes = self.options.compartment_sizes
        if sizes is not None:
            if self.ks != (len(sizes),):
                raise ValueError(f"compartment sizes {','.join(map(str, sizes))} fix k = {len(sizes)}: pass ks "
                                 f"{len(sizes)} alone, got {list(self.ks)}")
            self.options.check(self.hidden_size, len(sizes))
        for k in self.ks:
            if k < 1 or (sizes is None and self.hidden_size % k):
                raise ValueError(f"every k must be positive and divide hidden_size {self.hidden_size}; got {k}")
        for name in ("seeds", "n_train", "n_val", "n_test", "epochs", "patience", "tune_seeds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.ks or not self.seq_lens or not self.lr_grid:
            raise ValueError("need at least one k, one sequence length and one learning rate")
        self.check_seeds_apart()

    @property
    def tuned_ks(self) -> Tuple[int, ...]:
        """The k at which DIRU's rate is tuned: ``tune_k`` (if it is one of ``ks``, else the first k), or every k."""
        if self.tune_k == 0:
            return self.ks
        return (self.tune_k,) if self.tune_k in self.ks else self.ks[:1]

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["ks"], d["seq_lens"], d["lr_grid"] = list(self.ks), list(self.seq_lens), list(self.lr_grid)
        return d


def _key(kind: str, k: Optional[int]) -> str:
    return f"diru_k{k}" if kind == "diru" else kind


def run_memory_capacity(config: MemoryCapacityConfig, progress=None) -> Dict[str, Any]:
    """Per delay: tune every model's rate on the tuning seeds, then train every (seed, k) (and the RNN
    references) at its rate; record test NMSE, its ratio to predicting the mean, parameters, epochs."""
    runs: List[Dict[str, Any]] = []
    trials: List[Dict[str, Any]] = []
    baselines: List[Dict[str, Any]] = []
    picked: Dict[str, Dict[str, float]] = {}
    kinds = [("diru", k) for k in config.ks] + ([("rnn", None), ("rnn_matched", None)] if config.rnn_reference else [])
    k_ref = config.ks[0] if config.options.compartment_sizes is None else len(config.options.compartment_sizes)
    matched = matched_rnn_hidden(diru_params(1, config.hidden_size, 1, k_ref, config.options), 1, 1)

    def model_for(kind: str, k: Optional[int], seq_len: int, seed: int):
        torch.manual_seed(derive_seed("memory-capacity", seed, seq_len, "init"))
        hidden = matched if kind == "rnn_matched" else config.hidden_size
        return hidden, build(kind, 1, hidden, 1, num_compartments=k or 1, backend=config.backend,
                             options=config.options)

    def train(kind, k, seq_len, seed, splits, lr, test):
        hidden, model = model_for(kind, k, seq_len, seed)
        with Timer() as timer:
            out = scored_fit(model, splits[0], splits[1], splits[2] if test else None, lr=lr, epochs=config.epochs,
                             patience=config.patience, batch_size=config.batch_size, clip=config.clip,
                             shuffle_seed=derive_seed("memory-capacity", seed, seq_len, "shuffle"))
        return dict(out, hidden_size=hidden, params=count_params(model), seconds=timer.seconds)

    for seq_len in config.seq_lens:
        delay = memory_delay(seq_len)
        cache: Dict[int, Any] = {}

        def splits_of(seed: int, seq_len: int = seq_len):
            if seed not in cache:
                cache[seed] = standardised_memory_splits(config.n_train, config.n_val, config.n_test, seq_len, seed)
            return cache[seed]

        picked[str(delay)] = {}
        tuned = [("diru", k) for k in config.tuned_ks] + [kk for kk in kinds if kk[0] != "diru"]
        for kind, k in tuned:
            def trial(lr: float, seed: int, kind=kind, k=k) -> Dict[str, Any]:
                out = train(kind, k, seq_len, seed, splits_of(seed), lr, test=False)
                if progress is not None:
                    progress(f"tuning delay {delay} {_key(kind, k)} lr={lr:g} seed={seed}: val / mean "
                             f"{out['val_ratio']:.3g}, {out['epochs_run']} epochs, {out['seconds']:.0f} s")
                return out

            lr, rows = tune_trials(trial, config.lr_grid, config.tune_seed_list)
            picked[str(delay)][_key(kind, k)] = lr
            trials += [dict(r, model=kind, k=k, seq_len=seq_len, delay=delay) for r in rows]
        for kind, k in kinds:  # DIRU at a k that was not tuned trains at the tuned k's rate
            key = _key(kind, k)
            if key not in picked[str(delay)]:
                picked[str(delay)][key] = picked[str(delay)][_key("diru", config.tuned_ks[0])]
        for seed in config.seed_list:
            splits = splits_of(seed)
            baselines += [dict(b, seed=seed, delay=delay, seq_len=seq_len)
                          for b in trivial_baselines("memory", splits[0], splits[2])]
            for kind, k in kinds:
                out = train(kind, k, seq_len, seed, splits, picked[str(delay)][_key(kind, k)], test=True)
                out["test_nmse"] = out["test_ratio"]  # the standardised target: MSE / predict-the-mean
                runs.append(dict(out, model=kind, k=k, seq_len=seq_len, delay=delay, seed=seed))
                if progress is not None:
                    name = f"DIRU k={k}" if kind == "diru" else f"{kind} (d={out['hidden_size']})"
                    progress(f"delay {delay} seed {seed} {name}: test MSE / mean {out['test_ratio']:.3g}, "
                             f"{out['epochs_run']} epochs ({out['seconds']:.0f} s)")
    diru_rows = [r for r in runs if r["model"] == "diru"]
    return {"analysis": "memory_capacity", "config": config.to_dict(), "runs": runs, "tuning": trials,
            "picked_lr": picked, "baselines": baselines,
            "params_by_k": {str(k): sorted({r["params"] for r in diru_rows if r["k"] == k}) for k in config.ks},
            "learned": learned_cells(runs, baselines), "summary": k_effect(diru_rows)}


def learned_cells(runs: Sequence[Dict[str, Any]], baselines: Sequence[Dict[str, Any]] = ()) -> Dict[str, Any]:
    """The learned rule per (model, delay): :func:`~.common.learned_summary` of the per-seed test ratios
    (``{"diru_k4": {"40": {...}}}``); and each trivial baseline's median test MSE / predict-the-mean per delay."""
    models: Dict[str, Dict[str, Any]] = {}
    for r in runs:
        models.setdefault(_key(r["model"], r["k"]), {}).setdefault(str(r["delay"]), []).append(r["test_ratio"])
    out = {key: {d: learned_summary(v) for d, v in by.items()} for key, by in models.items()}
    means = {(b["delay"], b["seed"]): b["mse"] for b in baselines if b["name"] == "mean"}
    trivial: Dict[str, Dict[str, float]] = {}
    for b in baselines:
        if b["name"] != "mean" and means.get((b["delay"], b["seed"])):
            trivial.setdefault(b["name"], {}).setdefault(str(b["delay"]), []).append(b["mse"] / means[(b["delay"], b["seed"])])
    return {"models": out, "trivial": {n: {d: learned_summary(v)["median_ratio"] for d, v in by.items()}
                                       for n, by in trivial.items()}}


def _ols_slope(formula: str, data, term: str) -> Optional[List[float]]:
    import statsmodels.formula.api as smf

    fit_ = smf.ols(formula, data=data).fit(cov_type="HC3")
    if term not in fit_.params or not math.isfinite(float(fit_.bse[term])):
        return None
    low, high = fit_.conf_int().loc[term]
    return [float(fit_.params[term]), float(low), float(high)]


def k_effect(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """The statistics of the module docstring over DIRU runs (``k``, ``delay``, ``seed``, ``test_nmse``).

    The tests use the delays at which DIRU learned the task at every k (``learned_delays``: median test
    NMSE over seeds at most ``LEARNED_RATIO``); ``per_k_delay`` describes every cell."""
    import numpy as np
    import pandas as pd

    data = pd.DataFrame({"k": [r["k"] for r in rows], "delay": [r["delay"] for r in rows],
                         "seed": [r["seed"] for r in rows],
                         "y": [math.log(max(r["test_nmse"], 1e-12)) if math.isfinite(r["test_nmse"]) else math.inf
                               for r in rows]})
    data["cell"] = data["delay"].astype(str) + "/" + data["seed"].astype(str)
    data["kseed"] = data["k"].astype(str) + "/" + data["seed"].astype(str)
    data["log2k"] = np.log2(data["k"])
    data["log2delay"] = np.log2(data["delay"])
    ks, delays = sorted(data["k"].unique().tolist()), sorted(data["delay"].unique().tolist())
    out: Dict[str, Any] = {"n": len(data), "ks": ks, "delays": delays}
    out["per_k_delay"] = []
    for k in ks:
        for dl in delays:
            cell = data[(data.k == k) & (data.delay == dl)].sort_values("seed")
            if not len(cell):
                continue
            ys = cell["y"].tolist()
            nmse = [float(math.exp(v)) for v in ys]
            mean = sum(ys) / len(ys)
            sd = (math.sqrt(sum((v - mean) ** 2 for v in ys) / (len(ys) - 1)) if len(ys) > 1 and math.isfinite(mean)
                  else math.nan)
            out["per_k_delay"].append({"k": int(k), "delay": int(dl), "mean_log_nmse": mean, "sd_log_nmse": sd,
                                       "geo_mean_nmse": math.exp(mean), "nmse": nmse,
                                       **learned_summary(nmse)})
    learned_at = {(c["k"], c["delay"]): c["learned"] for c in out["per_k_delay"]}
    out["learned_delays"] = [dl for dl in delays if all(learned_at.get((k, dl), False) for k in ks)]
    data = data[data["delay"].isin(out["learned_delays"]) & np.isfinite(data["y"])]
    out["n_tested"] = len(data)
    several_k, several_d = data["k"].nunique() > 1, data["delay"].nunique() > 1
    out["f_test"] = _f_test(data) if several_k and len(data) else None
    out["friedman"] = _friedman(data) if data["k"].nunique() >= 3 else None
    out["b_per_doubling_k"] = _ols_slope("y ~ C(cell) + log2k", data, "log2k") if several_k else None
    out["g_per_doubling_delay"] = (_ols_slope("y ~ C(kseed) + log2delay", data, "log2delay")
                                   if several_d else None)
    out["verdict"] = (verdict(out["b_per_doubling_k"], out["g_per_doubling_delay"]) if out["learned_delays"]
                      else NOT_LEARNED)
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
