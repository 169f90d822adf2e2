"""DIRU vs LSTM vs GRU at equal parameter count on two real data sets that ship with their packages
(no download at run time). The prototype: "For Researchers: 1. Validate on real-world benchmarks".

- ``digits``: scikit-learn's handwritten digits (1,797 images of 8×8 pixels, 10 classes), each image
  read row by row as a sequence (T = 8 steps of n = 8 pixels); per seed a random split into training,
  validation and test (``val_fraction`` of the images each for validation and test), pixels
  standardised with the training images' mean and standard deviation; classification with
  cross-entropy. Primary metric: test cross-entropy (the trained objective); test error rate
  (1 - accuracy) beside it (secondary: ~18 errors in 359 images is coarse). Trivial baselines:
  predicting the training class frequencies (cross-entropy) and the training majority class (error).
- ``sunspots``: statsmodels' yearly sunspot numbers 1700-2008 (309 years); windows of the past
  ``sunspots_window`` years -> the next year; **rolling origin**: the last ``sunspots_origins`` blocks
  of ``sunspots_test_years`` target years are test blocks in turn; before each block, the last
  ``val_fraction`` of the target years validate and every earlier one trains (chronological: nothing
  after the block's start is seen), scaled with the training years' mean and standard deviation only;
  regression with MSE (on the scaled series). Trivial baselines per block: persistence (next year =
  this year) and the training mean.

Models: DIRU at hidden size d with k compartments, and each baseline of
:data:`~diru_fast.experiments.models.BASELINES` (LSTM, LSTM with forget-gate bias 1, GRU) resized to
DIRU's parameter count (:func:`~diru_fast.experiments.models.matched_hidden_size`). Each seed fixes the
split (digits), the initialisation and the shuffling; runs are paired by seed (and block).

Training (the study's protocol, :mod:`diru_fast.experiments.tuning`): Adam, batch 32, gradient clipping
(global norm ``clip``), early stopping after ``patience`` epochs without a better validation loss (the
``*_epochs`` are caps; runs that reach them are reported), the best validation epoch's weights scored on
the test split. Every model's learning rate is picked from ``lr_grid`` on ``tune_seeds`` tuning seeds
(``tune_first_seed`` on, disjoint from the test seeds) by the lowest median best validation loss / the
trivial baseline's (:func:`tune_models`): on digits each tuning seed has its own random split; on
sunspots the tuning uses the earliest origin (the years before the first test block).

Rules (:func:`summarize`), stated before the numbers:

- *Learned*: regression (sunspots), the median over runs of test MSE / the predict-the-training-mean
  MSE is at most 0.3 (:mod:`diru_fast.experiments.claims`); classification (digits), its twin: the
  median test cross-entropy / the cross-entropy of predicting the training class frequencies (the best
  constant predictor under that loss, as the mean is under MSE) is at most 0.3.
- The unit of replication is the *block*: a seed on digits (its own random split: seed and test-set
  variance together), a test block on sunspots (the log ratios of its seeds averaged: the t-interval
  over blocks carries test-period variance; the blocks share training years, so they are not fully
  independent). DIRU's relative improvement over a baseline = 1 - exp(mean log ratio of the metric),
  95% t-interval over blocks; its two-sided t-test of "no difference" is the decisive test.
- A primary comparison (test cross-entropy on digits, test MSE on sunspots; DIRU vs each baseline) is
  tested only when both models learned; otherwise its verdict is "not learned" or "only X learned" and
  it leaves the family. The tested ones are Holm-adjusted together at 0.05: "DIRU beats it" **holds**
  when significant in DIRU's favour, **does not hold** when significant against, else
  **inconclusive**, reported with the smallest improvement the test detects with 80% power. The digits
  error rate is reported beside with its raw p, no verdict. Overall: holds if every primary comparison
  holds, does not hold if none holds and at least one does not hold, their common verdict if all agree,
  else inconclusive.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from ..experiments.claims import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, pair_verdict
from ..experiments.models import BASELINES, count_params, diru_params, matched_hidden_size
from ..experiments.options import DIRUOptions
from ..experiments.stats import mean_std
from ..experiments.study import derive_seed
from ..experiments.training import predict
from ..experiments.tuning import DEFAULT_LR_GRID, DEFAULT_PATIENCE, SeedPlan, lr_curve, median
from .common import (CLIP_NORM, Timer, build, decide, detectable_effect, fit, learned_summary, paired_test,
                     tune_trials)

__all__ = ["DATASETS", "digits_splits", "sunspot_splits", "sunspot_origins", "load_sunspot_splits", "RealDataConfig", "run_real_data", "tune_models",
           "summarize", "overall_verdict", "CLAIM"]

CLAIM = "\"For Researchers: 1. Validate on real-world benchmarks\" (prototype README, Next Steps)"
DATASETS = ("digits", "sunspots")


def sunspot_origins(n_years: int, window: int, origins: int, test_len: int) -> List[int]:
    """The rolling origins: the first target positions of the last ``origins`` blocks of ``test_len``
    targets of a series of ``n_years`` values (the last block ends with the last year)."""
    starts = [n_years - (origins - i) * test_len for i in range(origins)]
    if origins < 1 or test_len < 1 or starts[0] < window + 2:
        raise ValueError(f"{origins} blocks of {test_len} years do not fit after window {window} in {n_years} years")
    return starts


def digits_splits(seed: int, fraction: float = 0.2) -> Tuple[TensorDataset, TensorDataset, TensorDataset, Dict[str, Any]]:
    """scikit-learn's digits read row by row (``x [N, 8 rows, 8 pixels]`` float32, ``y [N]`` int64 0..9) in
    three random parts (a permutation from ``seed``): ``round(fraction * N)`` images each for validation
    and test, the rest for training. Pixels (/16, their fixed maximum) are then standardised with the *training* images' mean and standard
    deviation (one scalar each). ``info`` adds the trivial baselines on validation and test: the
    cross-entropy of predicting the training class frequencies (``const_ce_*``) and the error of
    predicting the training set's majority class (``majority_error_*``)."""
    from sklearn.datasets import load_digits

    if not 0.0 < fraction < 0.5:
        raise ValueError(f"fraction must lie in (0, 0.5), got {fraction}")
    digits = load_digits()
    x = torch.as_tensor(digits.images, dtype=torch.float32) / 16.0  # [N, 8 rows, 8 pixels]
    y = torch.as_tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_part = round(fraction * len(y))
    test_idx, val_idx, train_idx = order[:n_part], order[n_part:2 * n_part], order[2 * n_part:]
    mean, std = float(x[train_idx].double().mean()), float(x[train_idx].double().std())
    z = (x - mean) / std
    freq = torch.bincount(y[train_idx], minlength=10).double() / len(train_idx)  # training class frequencies
    majority = int(freq.argmax())
    info: Dict[str, Any] = {"n_train": len(train_idx), "n_val": len(val_idx), "n_test": len(test_idx), "seq_len": 8,
                            "input_size": 8, "classes": 10, "input_mean": mean, "input_std": std}
    for name, idx in (("val", val_idx), ("test", test_idx)):
        info[f"const_ce_{name}"] = float(-freq.clamp_min(1e-12).log()[y[idx]].mean())
        info[f"majority_error_{name}"] = float((y[idx] != majority).double().mean())
    return (TensorDataset(z[train_idx], y[train_idx]), TensorDataset(z[val_idx], y[val_idx]),
            TensorDataset(z[test_idx], y[test_idx]), info)


def sunspot_splits(series: Sequence[float], window: int, test_start: int, test_len: int, val_fraction: float = 0.2
                   ) -> Tuple[TensorDataset, TensorDataset, TensorDataset, Dict[str, Any]]:
    """Three chronological parts of forecasting windows (past ``window`` values -> the next one): the
    test block of targets ``test_start .. test_start + test_len - 1``; before it, the last ``val_fraction``
    of the targets for validation, the earlier ones for training. Scaling: mean and standard deviation of
    ``series[:first validation target]`` (every value a training window touches, nothing later). ``info``
    adds, per part, the MSE of the naive forecasts (persistence: next year = this year; the training
    targets' mean)."""
    s = torch.as_tensor(list(series), dtype=torch.float64)
    n = len(s)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    n_before = test_start - window  # targets before the test block
    n_val = max(1, round(val_fraction * n_before))
    if window < 1 or test_len < 1 or n_before - n_val < 2 or test_start + test_len > n:
        raise ValueError(f"test block {test_start}..{test_start + test_len - 1} needs window {window}, two training "
                         f"targets and a validation target before it, and must end by {n - 1}")
    split = test_start - n_val  # the first validation target's position
    mean, std = float(s[:split].mean()), float(s[:split].std())
    z = (s - mean) / std
    parts = [torch.arange(window, split), torch.arange(split, test_start), torch.arange(test_start, test_start + test_len)]
    sets = [TensorDataset(torch.stack([z[i - window:i] for i in p.tolist()]).unsqueeze(-1).float(),  # [W, window, 1]
                          z[p].unsqueeze(-1).float()) for p in parts]  # [W, 1]
    train_mean = float(z[parts[0]].mean())
    info: Dict[str, Any] = {"split_index": split, "test_start": test_start, "mean": mean, "std": std,
                            "n_train": len(parts[0]), "n_val": len(parts[1]), "n_test": len(parts[2]),
                            "seq_len": window, "input_size": 1}
    for name, ds in (("val", sets[1]), ("test", sets[2])):
        x, y = ds.tensors
        info[f"persistence_mse_{name}"] = float((x[:, -1] - y).double().pow(2).mean())
        info[f"mean_mse_{name}"] = float((y.double() - train_mean).pow(2).mean())
    return sets[0], sets[1], sets[2], info


def load_sunspot_splits(window: int, test_start: int, test_len: int, val_fraction: float = 0.2):
    """statsmodels' yearly sunspot numbers as :func:`sunspot_splits`; ``info`` adds the years."""
    from statsmodels.datasets import sunspots

    data = sunspots.load_pandas().data
    years = [int(y) for y in data["YEAR"]]
    train_set, val_set, test_set, info = sunspot_splits(data["SUNACTIVITY"].tolist(), window, test_start, test_len,
                                                        val_fraction)
    info.update(first_year=years[0], last_year=years[-1], n_years=len(years),
                train_target_years=[years[window], years[info["split_index"] - 1]],
                val_years=[years[info["split_index"]], years[test_start - 1]],
                first_val_year=years[test_start], last_val_year=years[test_start + test_len - 1])  # the test block
    return train_set, val_set, test_set, info


# ------------------------------------------------------------------------------------ the study


@dataclass
class RealDataConfig(SeedPlan):
    """Settings of :func:`run_real_data`, with the study's protocol (module docstring): ``lr_grid`` tried
    per model on the tuning seeds, early stopping after ``patience`` epochs (``*_epochs``: the caps)."""

    datasets: Tuple[str, ...] = DATASETS
    seeds: int = 10
    first_seed: int = 0
    num_compartments: int = 4
    digits_hidden: int = 64
    digits_epochs: int = 100  # the cap
    sunspots_hidden: int = 32
    sunspots_epochs: int = 200  # the cap
    sunspots_window: int = 20
    sunspots_origins: int = 5  # rolling-origin test blocks (the last ones)
    sunspots_test_years: int = 20  # target years per test block
    val_fraction: float = 0.2  # digits: the validation share and the test share; sunspots: validation share before a block
    batch_size: int = 32
    patience: int = DEFAULT_PATIENCE
    lr_grid: Tuple[float, ...] = DEFAULT_LR_GRID  # one value: no tuning
    tune_seeds: int = 3  # the median of three: one unstable trial does not pick a rate
    tune_first_seed: int = 1000
    clip: float = CLIP_NORM  # gradient clipping (global L2 norm), every model
    backend: str = "auto"
    options: DIRUOptions = DIRUOptions()  # DIRU's cell options (the baselines ignore them)

    def __post_init__(self):
        self.datasets, self.lr_grid = tuple(self.datasets), tuple(float(v) for v in self.lr_grid)
        for name in self.datasets:
            if name in ("digits", "sunspots"):
                self.options.check(getattr(self, f"{name}_hidden"), self.num_compartments)
        unknown = [d for d in self.datasets if d not in DATASETS]
        if unknown or not self.datasets:
            raise ValueError(f"datasets must be among {DATASETS}, got {list(self.datasets)}")
        for name in ("seeds", "digits_epochs", "sunspots_epochs", "digits_hidden", "sunspots_hidden",
                     "sunspots_origins", "sunspots_test_years", "patience", "tune_seeds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 < self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must lie in (0, 0.5), got {self.val_fraction}")
        if not self.lr_grid:
            raise ValueError("lr_grid needs at least one learning rate")
        self.check_seeds_apart()

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["datasets"], d["lr_grid"] = list(self.datasets), list(self.lr_grid)
        return d


def _variants(n: int, d: int, out: int, k: int, options: Optional[DIRUOptions] = None) -> List[Dict[str, Any]]:
    target = diru_params(n, d, out, k, options)
    return [{"key": "diru", "kind": "diru", "hidden_size": d, "label": f"DIRU (d={d}, k={k})"}] + [
        {"key": f"{b}_matched", "kind": b, "hidden_size": (h := matched_hidden_size(b, target, n, out)),
         "label": f"{_BASE_LABELS.get(b, b.upper())} (d={h}, matched)"} for b in BASELINES]


_BASE_LABELS = {"lstm": "LSTM", "gru": "GRU", "lstm_fb1": "LSTM, forget bias 1"}


def _splits(name: str, config: RealDataConfig, seed: int, start: Optional[int]):
    if name == "digits":
        return digits_splits(derive_seed(name, seed, "split"), config.val_fraction)
    return load_sunspot_splits(config.sunspots_window, start, config.sunspots_test_years, config.val_fraction)


def _origins(config: RealDataConfig) -> List[int]:
    from statsmodels.datasets import sunspots

    n_years = len(sunspots.load_pandas().data)
    return sunspot_origins(n_years, config.sunspots_window, config.sunspots_origins, config.sunspots_test_years)


def _score(name: str, config: RealDataConfig, variant: Dict[str, Any], splits, lr: float, seed: int,
           test: bool) -> Dict[str, Any]:
    """Train one model by the protocol (early stopping, best validation epoch's weights) and score it:
    validation (``val_ratio``: best validation loss / the trivial baseline's) and, with ``test``, the
    test split (``test_loss``, ``test_ratio``: the learned rule's ratio; digits: accuracy, error ratio;
    sunspots: MSE / persistence)."""
    classify = name == "digits"
    train_set, val_set, test_set, info = splits
    n, out = info["input_size"], (10 if classify else 1)
    torch.manual_seed(derive_seed(name, seed, "init"))
    model = build(variant["kind"], n, variant["hidden_size"], out, num_compartments=config.num_compartments,
                  backend=config.backend, options=config.options)
    with Timer() as timer:
        history = fit(model, train_set, val_set, epochs=config.digits_epochs if classify else config.sunspots_epochs,
                      batch_size=config.batch_size, lr=lr, shuffle_seed=derive_seed(name, seed, "shuffle"),
                      loss="cross_entropy" if classify else "mse", clip=config.clip, patience=config.patience,
                      restore_best=True)
    trivial_val = info["const_ce_val"] if classify else info["mean_mse_val"]
    row: Dict[str, Any] = {"lr": lr, "best_val_loss": history.best_val, "val_ratio": history.best_val / trivial_val,
                           "best_epoch": history.best_epoch, "epochs_run": len(history.val_loss),
                           "hit_cap": history.hit_cap, "seconds": timer.seconds, "params": count_params(model)}
    if not test:
        return row
    if classify:
        logits, targets = predict(model, test_set)
        test_loss = float(F.cross_entropy(logits.double(), targets))
        accuracy = float((logits.argmax(-1) == targets).double().mean())
        row.update(test_loss=test_loss, accuracy=accuracy, test_ratio=test_loss / info["const_ce_test"],
                   error_ratio=(1 - accuracy) / info["majority_error_test"])
    else:
        preds, targets = predict(model, test_set)
        test_loss = float((preds.double() - targets.double()).pow(2).mean())
        row.update(test_loss=test_loss, test_mse_raw=test_loss * info["std"] ** 2,
                   test_ratio=test_loss / info["mean_mse_test"], persistence_ratio=test_loss / info["persistence_mse_test"])
    row.update(val_loss_curve=history.val_loss, train_loss_curve=history.train_loss)
    return row


def tune_models(name: str, config: RealDataConfig, variants: List[Dict[str, Any]], progress=None
                ) -> Tuple[Dict[str, float], List[Dict[str, Any]]]:
    """Every model's picked learning rate on one data set and the tuning trials. Digits: each tuning seed
    its own random split; sunspots: the earliest rolling origin (every year before the first test block:
    its validation years precede every test year), the tuning seed fixing initialisation and shuffling."""
    start = _origins(config)[0] if name == "sunspots" else None
    cache: Dict[int, Any] = {}
    picked: Dict[str, float] = {}
    trials: List[Dict[str, Any]] = []
    for v in variants:
        def trial(lr: float, seed: int) -> Dict[str, Any]:
            splits = cache.setdefault(seed, _splits(name, config, seed, start))
            out = _score(name, config, v, splits, lr, seed, test=False)
            if progress is not None:
                progress(f"tuning {name} {v['key']} lr={lr:g} seed={seed}: val / trivial {out['val_ratio']:.3g}, "
                         f"{out['epochs_run']} epochs{' (cap)' if out['hit_cap'] else ''}, {out['seconds']:.0f} s")
            return out

        picked[v["key"]], rows = tune_trials(trial, config.lr_grid, config.tune_seed_list)
        trials += [dict(r, dataset=name, model=v["key"]) for r in rows]
    return picked, trials


def run_real_data(config: RealDataConfig, progress=None) -> Dict[str, Any]:
    """Tune every model's learning rate per data set, then train and test every (dataset, block, model,
    seed); return the runs, the tuning, the data descriptions and the summary."""
    runs: List[Dict[str, Any]] = []
    trials: List[Dict[str, Any]] = []
    picked: Dict[str, Dict[str, float]] = {}
    data_info: Dict[str, Any] = {}
    variants: Dict[str, List[Dict[str, Any]]] = {}
    for name in config.datasets:
        classify = name == "digits"
        n, out = (8, 10) if classify else (1, 1)
        variants[name] = _variants(n, config.digits_hidden if classify else config.sunspots_hidden, out,
                                   config.num_compartments, config.options)
        picked[name], rows = tune_models(name, config, variants[name], progress)
        trials += rows
        jobs = [(None, seed) for seed in config.seed_list] if classify else \
            [(start, seed) for start in _origins(config) for seed in config.seed_list]
        for start, seed in jobs:
            splits = _splits(name, config, seed, start)
            info = splits[3]
            if classify:
                data_info.setdefault(name, {"splits": {}})["splits"][str(seed)] = info
                block = seed
            else:
                data_info.setdefault(name, {"blocks": {}})
                data_info[name].update({k: info[k] for k in ("first_year", "last_year", "seq_len", "input_size")})
                data_info[name]["blocks"][str(info["first_val_year"])] = info
                block = info["first_val_year"]
            for v in variants[name]:
                row = _score(name, config, v, splits, picked[name][v["key"]], seed, test=True)
                runs.append(dict(row, dataset=name, model=v["key"], kind=v["kind"], label=v["label"], seed=seed,
                                 block=block, hidden_size=v["hidden_size"]))
                if progress is not None:
                    extra = f", accuracy {row['accuracy']:.4f}" if classify else f", block {block}"
                    progress(f"{name} {v['label']} seed {seed} lr={row['lr']:g}: test {'CE' if classify else 'MSE'} "
                             f"{row['test_loss']:.4g} ({row['test_ratio']:.3g}x trivial){extra}, {row['epochs_run']} "
                             f"epochs{' (cap)' if row['hit_cap'] else ''} ({row['seconds']:.0f} s)")
    return {"analysis": "real_data", "config": config.to_dict(), "data": data_info, "variants": variants,
            "picked_lr": picked, "tuning": trials, "summary": summarize(runs, variants, trials), "runs": runs}


def _metrics(dataset: str) -> List[Tuple[str, str, bool]]:
    """(key, label, primary) of the compared metrics, lower is better."""
    if dataset == "digits":
        return [("test_loss", "cross-entropy", True), ("error", "error rate (1 - accuracy)", False)]
    return [("test_loss", "MSE (scaled)", True)]


def _value(run: Dict[str, Any], key: str) -> float:
    return 1.0 - run["accuracy"] if key == "error" else run[key]


def _block(run: Dict[str, Any]) -> Any:
    return run.get("block", run["seed"])


def summarize(runs: List[Dict[str, Any]], variants: Dict[str, List[Dict[str, Any]]],
              trials: Sequence[Dict[str, Any]] = ()) -> Dict[str, Any]:
    """Per dataset: rows per model (mean ± std over runs, the learned rule, the ratios to the trivial
    baselines, the validation-vs-learning-rate curve), per-block means, and DIRU's relative improvement
    over each baseline (module docstring). A primary comparison is tested only when both models learned
    (else "not learned" / "only X learned", out of the family); the tested ones are Holm-adjusted
    together (``p_holm``, ``verdict``); the secondary ones are reported with their raw p, no verdict."""
    out: Dict[str, Any] = {}
    primary: List[Dict[str, Any]] = []
    for dataset, vs in variants.items():
        rows, comps = [], []
        by_model = {v["key"]: sorted([r for r in runs if r["dataset"] == dataset and r["model"] == v["key"]],
                                     key=lambda r: (_block(r), r["seed"])) for v in vs}
        for v in vs:
            rs = by_model[v["key"]]
            if not rs:
                continue
            row = {"model": v["key"], "label": v["label"], "params": rs[0]["params"], "n": len(rs), "lr": rs[0]["lr"],
                   "test": mean_std([r["test_loss"] for r in rs]), "seconds": mean_std([r["seconds"] for r in rs]),
                   "epochs_run": mean_std([r["epochs_run"] for r in rs]), "hit_cap": sum(r["hit_cap"] for r in rs),
                   "learned": learned_summary([r["test_ratio"] for r in rs])}
            if dataset == "digits":
                row["accuracy"] = mean_std([r["accuracy"] for r in rs])
                row["error_ratio"] = median([r["error_ratio"] for r in rs])
            else:
                row["persistence_ratio"] = median([r["persistence_ratio"] for r in rs])
                if all("test_mse_raw" in r for r in rs):
                    row["test_raw"] = mean_std([r["test_mse_raw"] for r in rs])
            blocks: Dict[str, List[float]] = {}
            for r in rs:
                blocks.setdefault(str(_block(r)), []).append(r["test_loss"])
            row["per_block"] = {b: sum(v_) / len(v_) for b, v_ in blocks.items()}
            mine = [t for t in trials if t.get("dataset") == dataset and t["model"] == v["key"]]
            if mine:
                row["lr_curve"] = lr_curve(mine, key="val_ratio")
            rows.append(row)
        learned_by = {row["model"]: row["learned"]["learned"] for row in rows}
        diru = {(_block(r), r["seed"]): r for r in by_model.get("diru", [])}
        for v in vs:
            if v["key"] == "diru" or not by_model[v["key"]]:
                continue
            base = {(_block(r), r["seed"]): r for r in by_model[v["key"]]}
            keys = sorted(set(diru) & set(base))
            for key, label, is_primary in _metrics(dataset):
                comp = _compare([_value(diru[k], key) for k in keys], [_value(base[k], key) for k in keys],
                                [k[0] for k in keys])
                comp.update(baseline=v["key"], label=v["label"], metric=label, primary=is_primary, runs=len(keys))
                if is_primary:
                    both = learned_by.get("diru", False) and learned_by.get(v["key"], False)
                    comp["tested"] = both and math.isfinite(comp["p"])
                    if not both:
                        comp["verdict"] = pair_verdict(learned_by.get("diru", False), learned_by.get(v["key"], False),
                                                       "", "DIRU", v["label"].split(" (")[0])
                    elif not comp["tested"]:
                        comp["verdict"] = INCONCLUSIVE  # fewer than two blocks: nothing to test
                    else:
                        primary.append(comp)
                comps.append(comp)
        out[dataset] = {"rows": rows, "comparisons": comps}
    for comp, v in zip(primary, decide(primary)):
        comp["verdict"] = v
    return out


def _compare(a: Sequence[float], b: Sequence[float], blocks: Sequence[Any]) -> Dict[str, Any]:
    """DIRU's values ``a`` against a baseline's ``b`` (paired runs, each in a block): the mean log ratio
    per block, its t-test over blocks, the improvement 1 - exp(mean) with its 95% interval, and the
    improvement the test detects with 80% power."""
    comp: Dict[str, Any] = {"diru": mean_std(list(a))[0] if a else math.nan,
                            "base": mean_std(list(b))[0] if b else math.nan}
    per_block: Dict[Any, List[float]] = {}
    if all(x > 0 for x in list(a) + list(b)):
        for blk, x, y in zip(blocks, a, b):
            per_block.setdefault(blk, []).append(math.log(x / y))
    logs = [sum(v_) / len(v_) for _, v_ in sorted(per_block.items())]
    comp["n"] = len(logs)
    if len(logs) >= 2:
        test = paired_test(logs)
        sd = math.sqrt(sum((x - test["mean"]) ** 2 for x in logs) / (len(logs) - 1))
        # improvement = 1 - exp(mean log ratio): the interval's ends swap
        comp["improvement"] = [1 - math.exp(test["mean"]), 1 - math.exp(test["high"]), 1 - math.exp(test["low"])]
        comp.update(p=test["p"], if_significant=HOLDS if test["mean"] < 0 else DOES_NOT_HOLD,
                    detectable_improvement=1 - math.exp(-detectable_effect(sd, len(logs))))
    else:
        comp.update(improvement=None, p=math.nan, if_significant=INCONCLUSIVE,
                    note="needs >= 2 blocks and nonzero values on both sides")
    return comp


def overall_verdict(summary: Dict[str, Any]) -> Tuple[str, List[str]]:
    """(overall verdict, the primary comparisons' verdicts): holds if every one holds; does not hold if
    none holds and at least one does not; their common verdict if they all agree (e.g. "not learned");
    else inconclusive."""
    verdicts = [c["verdict"] for s in summary.values() for c in s["comparisons"] if c.get("primary", True)]
    if verdicts and all(v == HOLDS for v in verdicts):
        return HOLDS, verdicts
    if verdicts and HOLDS not in verdicts and DOES_NOT_HOLD in verdicts:
        return DOES_NOT_HOLD, verdicts
    if verdicts and len(set(verdicts)) == 1:
        return verdicts[0], verdicts
    return INCONCLUSIVE, verdicts
