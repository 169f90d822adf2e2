"""DIRU vs LSTM vs GRU at equal parameter count on two real data sets that ship with their packages
(no download at run time). The prototype: "For Researchers: 1. Validate on real-world benchmarks".

- ``digits``: scikit-learn's handwritten digits (1,797 images of 8×8 pixels, 10 classes), each image
  read row by row as a sequence (T = 8 steps of n = 8 pixels, scaled by 1/16 to [0, 1]); a random
  80/20 split per seed; classification with cross-entropy; reported: validation cross-entropy and
  accuracy (error rate = 1 - accuracy).
- ``sunspots``: statsmodels' yearly sunspot numbers 1700-2008 (309 years); windows of the past
  ``window`` years -> the next year; chronological split (the last 20% of target years are the
  validation set); scaled with the mean and standard deviation of the training years only;
  regression with MSE (on the scaled series). Two naive forecasts are shown for scale: persistence
  (next year = this year) and the training mean.

Models: DIRU at hidden size d with k compartments, LSTM and GRU resized to DIRU's parameter count
(:func:`~diru_fast.experiments.models.matched_hidden_size`). Each seed fixes the split (digits),
the initialisation and the shuffling; runs are paired by seed. Training: Adam, batch 32, fixed
epochs, no early stopping, the same for every model. Report format as the study: mean ± std over
seeds, DIRU's relative improvement (1 - geometric-mean ratio of the metric, 95% t-interval over
seeds on the log ratios) and the verdict "DIRU beats it": holds if the interval lies above 0, does
not hold if it lies at or below 0, else inconclusive (:func:`~diru_fast.experiments.claims.verdict_above_zero`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import TensorDataset

from ..experiments.claims import verdict_above_zero
from ..experiments.models import BASELINES, count_params, diru_params, matched_hidden_size
from ..experiments.options import DIRUOptions
from ..experiments.stats import mean_std, relative_improvement
from ..experiments.study import derive_seed
from ..experiments.training import predict
from .common import Timer, build, fit

__all__ = ["DATASETS", "load_digits_sequences", "sunspot_windows", "load_sunspots", "RealDataConfig",
           "run_real_data", "summarize", "CLAIM"]

CLAIM = "\"For Researchers: 1. Validate on real-world benchmarks\" (prototype README, Next Steps)"
DATASETS = ("digits", "sunspots")


def load_digits_sequences(seed: int, val_fraction: float = 0.2) -> Tuple[TensorDataset, TensorDataset, Dict[str, Any]]:
    """scikit-learn's digits read row by row: ``x [N, 8, 8]`` float32 in [0, 1], ``y [N]`` int64 (0..9).

    A random split (a permutation from ``seed``) puts ``round(val_fraction * N)`` images in validation.
    Pixels are divided by 16, their fixed maximum (no statistic of any split is used).
    """
    from sklearn.datasets import load_digits

    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    digits = load_digits()
    x = torch.as_tensor(digits.images, dtype=torch.float32) / 16.0  # [N, 8 rows, 8 pixels]
    y = torch.as_tensor(digits.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_val = round(val_fraction * len(y))
    val_idx, train_idx = order[:n_val], order[n_val:]
    info = {"n_train": len(train_idx), "n_val": len(val_idx), "seq_len": 8, "input_size": 8, "classes": 10}
    return TensorDataset(x[train_idx], y[train_idx]), TensorDataset(x[val_idx], y[val_idx]), info


def sunspot_windows(series: Sequence[float], window: int, val_fraction: float = 0.2
                    ) -> Tuple[TensorDataset, TensorDataset, Dict[str, Any]]:
    """Forecasting windows of a yearly series: past ``window`` values -> the next one.

    Target positions ``window .. N-1`` are split chronologically: the first ``1 - val_fraction`` go to
    training. Scaling: mean and standard deviation of ``series[:first validation target]`` (every
    value a training window touches, nothing later). ``x [W, window, 1]``, ``y [W, 1]`` float32.
    """
    s = torch.as_tensor(list(series), dtype=torch.float64)
    n = len(s)
    if window < 1 or n - window < 2:
        raise ValueError(f"need window >= 1 and at least two targets; got window {window} for {n} values")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    targets = torch.arange(window, n)  # positions of the targets
    n_train = len(targets) - max(1, round(val_fraction * len(targets)))
    split = int(targets[n_train])  # the first validation target's position
    mean, std = float(s[:split].mean()), float(s[:split].std())
    z = (s - mean) / std
    x = torch.stack([z[i - window:i] for i in targets.tolist()]).unsqueeze(-1).float()  # [W, window, 1]
    y = z[targets].unsqueeze(-1).float()  # [W, 1]
    info = {"split_index": split, "mean": mean, "std": std, "n_train": n_train, "n_val": len(targets) - n_train,
            "seq_len": window, "input_size": 1}
    return TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:]), info


def load_sunspots(window: int = 20, val_fraction: float = 0.2) -> Tuple[TensorDataset, TensorDataset, Dict[str, Any]]:
    """statsmodels' yearly sunspot numbers as :func:`sunspot_windows`; ``info`` adds the years and the
    validation MSE of two naive forecasts (persistence, and the training mean)."""
    from statsmodels.datasets import sunspots

    data = sunspots.load_pandas().data
    years = [int(y) for y in data["YEAR"]]
    train_set, val_set, info = sunspot_windows(data["SUNACTIVITY"].tolist(), window, val_fraction)
    info.update(first_year=years[0], last_year=years[-1], first_val_year=years[info["split_index"]],
                train_target_years=[years[window], years[info["split_index"] - 1]], **_naive_forecasts(val_set))
    return train_set, val_set, info


# ------------------------------------------------------------------------------------ the study


@dataclass
class RealDataConfig:
    datasets: Tuple[str, ...] = DATASETS
    seeds: int = 5
    first_seed: int = 0
    num_compartments: int = 4
    digits_hidden: int = 64
    digits_epochs: int = 30
    sunspots_hidden: int = 32
    sunspots_epochs: int = 100
    sunspots_window: int = 20
    val_fraction: float = 0.2
    batch_size: int = 32
    lr: float = 1e-3
    backend: str = "auto"
    options: DIRUOptions = DIRUOptions()  # DIRU's cell options (the baselines ignore them)

    def __post_init__(self):
        self.datasets = tuple(self.datasets)
        for name in self.datasets:
            if name in ("digits", "sunspots"):
                self.options.check(getattr(self, f"{name}_hidden"), self.num_compartments)
        unknown = [d for d in self.datasets if d not in DATASETS]
        if unknown or not self.datasets:
            raise ValueError(f"datasets must be among {DATASETS}, got {list(self.datasets)}")
        for name in ("seeds", "digits_epochs", "sunspots_epochs", "digits_hidden", "sunspots_hidden"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["datasets"] = list(self.datasets)
        return d


def _variants(n: int, d: int, out: int, k: int, options: Optional[DIRUOptions] = None) -> List[Dict[str, Any]]:
    target = diru_params(n, d, out, k, options)
    return [{"key": "diru", "kind": "diru", "hidden_size": d, "label": f"DIRU (d={d}, k={k})"}] + [
        {"key": f"{b}_matched", "kind": b, "hidden_size": (h := matched_hidden_size(b, target, n, out)),
         "label": f"{b.upper()} (d={h}, matched)"} for b in BASELINES]


def _naive_forecasts(val_set: TensorDataset) -> Dict[str, float]:
    x, y = val_set.tensors
    return {"persistence_mse": float((x[:, -1] - y).double().pow(2).mean()),
            "train_mean_mse": float(y.double().pow(2).mean())}  # the scaled series has training mean 0


def run_real_data(config: RealDataConfig, progress=None) -> Dict[str, Any]:
    """Train every (dataset, model, seed); return runs, the data descriptions and the summary."""
    runs: List[Dict[str, Any]] = []
    data_info: Dict[str, Any] = {}
    variants: Dict[str, List[Dict[str, Any]]] = {}
    for name in config.datasets:
        classify = name == "digits"
        d = config.digits_hidden if classify else config.sunspots_hidden
        epochs = config.digits_epochs if classify else config.sunspots_epochs
        for seed in range(config.first_seed, config.first_seed + config.seeds):
            if classify:
                train_set, val_set, info = load_digits_sequences(derive_seed(name, seed, "split"), config.val_fraction)
            else:
                train_set, val_set, info = load_sunspots(config.sunspots_window, config.val_fraction)
            data_info[name] = info
            n, out = info["input_size"], (10 if classify else 1)
            variants[name] = _variants(n, d, out, config.num_compartments, config.options)
            for v in variants[name]:
                torch.manual_seed(derive_seed(name, seed, "init"))
                model = build(v["kind"], n, v["hidden_size"], out, num_compartments=config.num_compartments,
                              backend=config.backend, options=config.options)
                with Timer() as timer:
                    history = fit(model, train_set, val_set, epochs=epochs, batch_size=config.batch_size, lr=config.lr,
                                  shuffle_seed=derive_seed(name, seed, "shuffle"),
                                  loss="cross_entropy" if classify else "mse")
                run = {"dataset": name, "model": v["key"], "kind": v["kind"], "label": v["label"], "seed": seed,
                       "hidden_size": v["hidden_size"], "params": count_params(model),
                       "final_val_loss": history.val_loss[-1], "best_val_loss": min(history.val_loss),
                       "final_train_loss": history.train_loss[-1], "val_loss_curve": history.val_loss,
                       "train_loss_curve": history.train_loss, "seconds": timer.seconds}
                if classify:
                    logits, targets = predict(model, val_set)
                    run["accuracy"] = float((logits.argmax(-1) == targets).double().mean())
                runs.append(run)
                if progress is not None:
                    extra = f", accuracy {run['accuracy']:.4f}" if classify else ""
                    progress(f"{name} {v['label']} seed {seed}: val {'CE' if classify else 'MSE'} "
                             f"{run['final_val_loss']:.4g}{extra} ({timer.seconds:.0f} s)")
    return {"analysis": "real_data", "config": config.to_dict(), "data": data_info, "variants": variants,
            "runs": runs, "summary": summarize(runs, variants)}


def _metrics(dataset: str) -> List[Tuple[str, str]]:
    """(key, label) of the compared metrics, lower is better."""
    if dataset == "digits":
        return [("final_val_loss", "cross-entropy"), ("error", "error rate (1 - accuracy)")]
    return [("final_val_loss", "MSE (scaled)")]


def _value(run: Dict[str, Any], key: str) -> float:
    return 1.0 - run["accuracy"] if key == "error" else run[key]


def summarize(runs: List[Dict[str, Any]], variants: Dict[str, List[Dict[str, Any]]]) -> Dict[str, Any]:
    """Per dataset: rows per model (mean ± std) and DIRU's relative improvement over each baseline."""
    out: Dict[str, Any] = {}
    for dataset, vs in variants.items():
        rows, comps = [], []
        by_model = {v["key"]: sorted([r for r in runs if r["dataset"] == dataset and r["model"] == v["key"]],
                                     key=lambda r: r["seed"]) for v in vs}
        for v in vs:
            rs = by_model[v["key"]]
            if not rs:
                continue
            row = {"model": v["key"], "label": v["label"], "params": rs[0]["params"], "n": len(rs),
                   "final": mean_std([r["final_val_loss"] for r in rs]), "best": mean_std([r["best_val_loss"] for r in rs]),
                   "seconds": mean_std([r["seconds"] for r in rs])}
            if dataset == "digits":
                row["accuracy"] = mean_std([r["accuracy"] for r in rs])
            rows.append(row)
        diru = {r["seed"]: r for r in by_model.get("diru", [])}
        for v in vs:
            if v["key"] == "diru":
                continue
            base = {r["seed"]: r for r in by_model[v["key"]]}
            seeds = sorted(set(diru) & set(base))
            for key, label in _metrics(dataset):
                a, b = [_value(diru[s], key) for s in seeds], [_value(base[s], key) for s in seeds]
                comp = {"baseline": v["key"], "label": v["label"], "metric": label, "n": len(seeds),
                        "diru": mean_std(a)[0] if a else math.nan, "base": mean_std(b)[0] if b else math.nan}
                if len(seeds) >= 2 and all(x > 0 for x in a + b):
                    imp = relative_improvement(a, b)
                    comp["improvement"] = [imp.estimate, imp.low, imp.high]
                    comp["verdict"] = verdict_above_zero(imp.low, imp.high)
                else:
                    comp["improvement"] = None
                    comp["verdict"] = "inconclusive"
                    comp["note"] = "needs >= 2 seeds and nonzero values on both sides"
                comps.append(comp)
        out[dataset] = {"rows": rows, "comparisons": comps}
    return out
