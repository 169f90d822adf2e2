"""DIRU vs LSTM vs GRU at equal parameter count on two real data sets that ship with their packages
(no download at run time). The prototype: "For Researchers: 1. Validate on real-world benchmarks".

- ``digits``: scikit-learn's handwritten digits (1,797 images of 8×8 pixels, 10 classes), each image
  read row by row as a sequence (T = 8 steps of n = 8 pixels, scaled by 1/16 to [0, 1]); a random
  80/20 split per seed; classification with cross-entropy; reported: validation cross-entropy (the
  primary metric, fixed in advance: the trained objective) and accuracy (error rate = 1 - accuracy,
  secondary: with ~18 errors in 359 images it is coarse).
- ``sunspots``: statsmodels' yearly sunspot numbers 1700-2008 (309 years); windows of the past
  ``window`` years -> the next year; **rolling origin**: the last ``sunspots_origins`` blocks of
  ``sunspots_test_years`` target years are test blocks in turn, each model trained on every earlier
  target year (chronological: nothing after the block's start is seen) and scaled with the mean and
  standard deviation of those training years only; regression with MSE (on the scaled series). Two
  naive forecasts per block for scale: persistence (next year = this year) and the training mean.

Models: DIRU at hidden size d with k compartments, LSTM and GRU resized to DIRU's parameter count
(:func:`~diru_fast.experiments.models.matched_hidden_size`). Each seed fixes the split (digits),
the initialisation and the shuffling; runs are paired by seed (and block). Training: Adam, batch 32,
fixed epochs, gradient clipping (global norm 1), no early stopping, the same for every model.

Statistics (:func:`summarize`), stated before the numbers. The unit of replication is the *block*:
a seed on digits (its own random split: seed and test-set variance together), a test block on
sunspots (the log ratios of its seeds averaged: the t-interval over blocks carries test-period
variance, which one fixed split leaves out; the blocks share training years, so they are not fully
independent). DIRU's relative improvement over a baseline = 1 - exp(mean log ratio of the metric),
95% t-interval over blocks; its two-sided t-test of "no difference" is the decisive test. The family:
the four primary comparisons (digits cross-entropy and sunspots MSE, each vs LSTM and vs GRU), Holm-
adjusted at 0.05: "DIRU beats it" **holds** when significant in DIRU's favour, **does not hold** when
significant against, else **inconclusive**, reported with the smallest improvement the test detects
with 80% power. The digits error rate is reported beside, not counted. Overall: holds if every primary
comparison holds, does not hold if none holds and at least one does not hold, else inconclusive.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch.utils.data import TensorDataset

from ..experiments.claims import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from ..experiments.models import BASELINES, count_params, diru_params, matched_hidden_size
from ..experiments.options import DIRUOptions
from ..experiments.stats import mean_std
from ..experiments.study import derive_seed
from ..experiments.training import predict
from .common import CLIP_NORM, Timer, build, decide, detectable_effect, fit, paired_test

__all__ = ["DATASETS", "load_digits_sequences", "sunspot_windows", "sunspot_origins", "load_sunspots",
           "RealDataConfig", "run_real_data", "summarize", "overall_verdict", "CLAIM"]

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


def sunspot_windows(series: Sequence[float], window: int, val_fraction: float = 0.2,
                    test_start: Optional[int] = None, test_len: Optional[int] = None
                    ) -> Tuple[TensorDataset, TensorDataset, Dict[str, Any]]:
    """Forecasting windows of a yearly series: past ``window`` values -> the next one.

    Target positions ``window .. N-1`` are split chronologically: the first ``1 - val_fraction`` go to
    training, the rest to validation; or, with ``test_start`` (a target position) and ``test_len``, the
    targets before ``test_start`` train and ``test_start .. test_start + test_len - 1`` are the test
    block. Scaling: mean and standard deviation of ``series[:first validation target]`` (every value a
    training window touches, nothing later). ``x [W, window, 1]``, ``y [W, 1]`` float32.
    """
    s = torch.as_tensor(list(series), dtype=torch.float64)
    n = len(s)
    if window < 1 or n - window < 2:
        raise ValueError(f"need window >= 1 and at least two targets; got window {window} for {n} values")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}")
    if test_start is None:
        targets = torch.arange(window, n)  # positions of the targets
        n_train = len(targets) - max(1, round(val_fraction * len(targets)))
    else:
        test_len = n - test_start if test_len is None else test_len
        if not window + 2 <= test_start and test_len >= 1 and test_start + test_len <= n:
            raise ValueError(f"test block {test_start}..{test_start + test_len - 1} needs two training targets "
                             f"before it and must end by {n - 1}")
        targets = torch.arange(window, test_start + test_len)
        n_train = test_start - window
    split = int(targets[n_train])  # the first validation target's position
    mean, std = float(s[:split].mean()), float(s[:split].std())
    z = (s - mean) / std
    x = torch.stack([z[i - window:i] for i in targets.tolist()]).unsqueeze(-1).float()  # [W, window, 1]
    y = z[targets].unsqueeze(-1).float()  # [W, 1]
    info = {"split_index": split, "mean": mean, "std": std, "n_train": n_train, "n_val": len(targets) - n_train,
            "seq_len": window, "input_size": 1}
    return TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:]), info


def sunspot_origins(n_years: int, window: int, origins: int, test_len: int) -> List[int]:
    """The rolling origins: the first target positions of the last ``origins`` blocks of ``test_len``
    targets of a series of ``n_years`` values (the last block ends with the last year)."""
    starts = [n_years - (origins - i) * test_len for i in range(origins)]
    if origins < 1 or test_len < 1 or starts[0] < window + 2:
        raise ValueError(f"{origins} blocks of {test_len} years do not fit after window {window} in {n_years} years")
    return starts


def load_sunspots(window: int = 20, val_fraction: float = 0.2, test_start: Optional[int] = None,
                  test_len: Optional[int] = None) -> Tuple[TensorDataset, TensorDataset, Dict[str, Any]]:
    """statsmodels' yearly sunspot numbers as :func:`sunspot_windows`; ``info`` adds the years and the
    validation MSE of two naive forecasts (persistence, and the training mean)."""
    from statsmodels.datasets import sunspots

    data = sunspots.load_pandas().data
    years = [int(y) for y in data["YEAR"]]
    train_set, val_set, info = sunspot_windows(data["SUNACTIVITY"].tolist(), window, val_fraction, test_start, test_len)
    last = info["split_index"] + info["n_val"] - 1
    info.update(first_year=years[0], last_year=years[-1], first_val_year=years[info["split_index"]],
                last_val_year=years[last], n_years=len(years),
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
    sunspots_origins: int = 5  # rolling-origin test blocks (the last ones)
    sunspots_test_years: int = 20  # target years per test block
    val_fraction: float = 0.2  # digits' validation share
    batch_size: int = 32
    lr: float = 1e-3
    clip: float = CLIP_NORM  # gradient clipping (global L2 norm), every model
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
        for name in ("seeds", "digits_epochs", "sunspots_epochs", "digits_hidden", "sunspots_hidden",
                     "sunspots_origins", "sunspots_test_years"):
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


def _jobs(name: str, config: RealDataConfig):
    """(block, split seed or test start) per run group: digits, one per seed; sunspots, every origin."""
    if name == "digits":
        return [(None, seed) for seed in range(config.first_seed, config.first_seed + config.seeds)]
    from statsmodels.datasets import sunspots

    n_years = len(sunspots.load_pandas().data)
    starts = sunspot_origins(n_years, config.sunspots_window, config.sunspots_origins, config.sunspots_test_years)
    return [(start, seed) for start in starts for seed in range(config.first_seed, config.first_seed + config.seeds)]


def run_real_data(config: RealDataConfig, progress=None) -> Dict[str, Any]:
    """Train every (dataset, block, model, seed); return runs, the data descriptions and the summary."""
    runs: List[Dict[str, Any]] = []
    data_info: Dict[str, Any] = {}
    variants: Dict[str, List[Dict[str, Any]]] = {}
    for name in config.datasets:
        classify = name == "digits"
        d = config.digits_hidden if classify else config.sunspots_hidden
        epochs = config.digits_epochs if classify else config.sunspots_epochs
        for start, seed in _jobs(name, config):
            if classify:
                train_set, val_set, info = load_digits_sequences(derive_seed(name, seed, "split"), config.val_fraction)
                data_info[name] = info
                block = seed
            else:
                train_set, val_set, info = load_sunspots(config.sunspots_window, test_start=start,
                                                         test_len=config.sunspots_test_years)
                data_info.setdefault(name, {"blocks": {}})
                data_info[name].update({k: info[k] for k in ("first_year", "last_year", "seq_len", "input_size")})
                data_info[name]["blocks"][str(info["first_val_year"])] = info
                block = info["first_val_year"]
            n, out = info["input_size"], (10 if classify else 1)
            variants[name] = _variants(n, d, out, config.num_compartments, config.options)
            for v in variants[name]:
                torch.manual_seed(derive_seed(name, seed, "init"))
                model = build(v["kind"], n, v["hidden_size"], out, num_compartments=config.num_compartments,
                              backend=config.backend, options=config.options)
                with Timer() as timer:
                    history = fit(model, train_set, val_set, epochs=epochs, batch_size=config.batch_size, lr=config.lr,
                                  shuffle_seed=derive_seed(name, seed, "shuffle"),
                                  loss="cross_entropy" if classify else "mse", clip=config.clip)
                run = {"dataset": name, "model": v["key"], "kind": v["kind"], "label": v["label"], "seed": seed,
                       "block": block, "hidden_size": v["hidden_size"], "params": count_params(model),
                       "final_val_loss": history.val_loss[-1], "best_val_loss": min(history.val_loss),
                       "final_train_loss": history.train_loss[-1], "val_loss_curve": history.val_loss,
                       "train_loss_curve": history.train_loss, "seconds": timer.seconds}
                if classify:
                    logits, targets = predict(model, val_set)
                    run["accuracy"] = float((logits.argmax(-1) == targets).double().mean())
                runs.append(run)
                if progress is not None:
                    extra = f", accuracy {run['accuracy']:.4f}" if classify else f", block {block}"
                    progress(f"{name} {v['label']} seed {seed}: val {'CE' if classify else 'MSE'} "
                             f"{run['final_val_loss']:.4g}{extra} ({timer.seconds:.0f} s)")
    return {"analysis": "real_data", "config": config.to_dict(), "data": data_info, "variants": variants,
            "runs": runs, "summary": summarize(runs, variants)}


def _metrics(dataset: str) -> List[Tuple[str, str, bool]]:
    """(key, label, primary) of the compared metrics, lower is better."""
    if dataset == "digits":
        return [("final_val_loss", "cross-entropy", True), ("error", "error rate (1 - accuracy)", False)]
    return [("final_val_loss", "MSE (scaled)", True)]


def _value(run: Dict[str, Any], key: str) -> float:
    return 1.0 - run["accuracy"] if key == "error" else run[key]


def summarize(runs: List[Dict[str, Any]], variants: Dict[str, List[Dict[str, Any]]]) -> Dict[str, Any]:
    """Per dataset: rows per model (mean ± std over runs), per-block means, and DIRU's relative
    improvement over each baseline (module docstring); the primary comparisons are Holm-adjusted
    together (``p_holm``, ``verdict``), the secondary ones keep their raw p (``verdict`` by it)."""
    out: Dict[str, Any] = {}
    primary: List[Dict[str, Any]] = []
    for dataset, vs in variants.items():
        rows, comps = [], []
        by_model = {v["key"]: sorted([r for r in runs if r["dataset"] == dataset and r["model"] == v["key"]],
                                     key=lambda r: (r.get("block", r["seed"]), r["seed"])) for v in vs}
        for v in vs:
            rs = by_model[v["key"]]
            if not rs:
                continue
            row = {"model": v["key"], "label": v["label"], "params": rs[0]["params"], "n": len(rs),
                   "final": mean_std([r["final_val_loss"] for r in rs]), "best": mean_std([r["best_val_loss"] for r in rs]),
                   "seconds": mean_std([r["seconds"] for r in rs])}
            if dataset == "digits":
                row["accuracy"] = mean_std([r["accuracy"] for r in rs])
            blocks: Dict[str, List[float]] = {}
            for r in rs:
                blocks.setdefault(str(r.get("block", r["seed"])), []).append(r["final_val_loss"])
            row["per_block"] = {b: sum(v_) / len(v_) for b, v_ in blocks.items()}
            rows.append(row)
        diru = {(r.get("block", r["seed"]), r["seed"]): r for r in by_model.get("diru", [])}
        for v in vs:
            if v["key"] == "diru":
                continue
            base = {(r.get("block", r["seed"]), r["seed"]): r for r in by_model[v["key"]]}
            keys = sorted(set(diru) & set(base))
            for key, label, is_primary in _metrics(dataset):
                a, b = [_value(diru[k], key) for k in keys], [_value(base[k], key) for k in keys]
                comp: Dict[str, Any] = {"baseline": v["key"], "label": v["label"], "metric": label,
                                        "primary": is_primary, "runs": len(keys),
                                        "diru": mean_std(a)[0] if a else math.nan,
                                        "base": mean_std(b)[0] if b else math.nan}
                per_block: Dict[Any, List[float]] = {}
                if all(x > 0 for x in a + b):
                    for k, x, y in zip(keys, a, b):
                        per_block.setdefault(k[0], []).append(math.log(x / y))
                logs = [sum(v_) / len(v_) for _, v_ in sorted(per_block.items())]
                comp["n"] = len(logs)
                if len(logs) >= 2:
                    test = paired_test(logs)
                    sd = math.sqrt(sum((x - test["mean"]) ** 2 for x in logs) / (len(logs) - 1))
                    # improvement = 1 - exp(mean log ratio): the interval's ends swap
                    comp["improvement"] = [1 - math.exp(test["mean"]), 1 - math.exp(test["high"]),
                                           1 - math.exp(test["low"])]
                    comp.update(p=test["p"], if_significant=HOLDS if test["mean"] < 0 else DOES_NOT_HOLD,
                                detectable_improvement=1 - math.exp(-detectable_effect(sd, len(logs))))
                else:
                    comp.update(improvement=None, p=math.nan, if_significant=INCONCLUSIVE,
                                note="needs >= 2 blocks and nonzero values on both sides")
                if is_primary:
                    primary.append(comp)
                else:
                    comp["verdict"] = comp["if_significant"] if comp["p"] < 0.05 else INCONCLUSIVE
                comps.append(comp)
        out[dataset] = {"rows": rows, "comparisons": comps}
    for comp, v in zip(primary, decide(primary)):
        comp["verdict"] = v
    return out


def overall_verdict(summary: Dict[str, Any]) -> Tuple[str, List[str]]:
    """(overall verdict, the primary comparisons' verdicts): the rule in the module docstring."""
    verdicts = [c["verdict"] for s in summary.values() for c in s["comparisons"] if c.get("primary", True)]
    if verdicts and all(v == HOLDS for v in verdicts):
        return HOLDS, verdicts
    if verdicts and HOLDS not in verdicts and DOES_NOT_HOLD in verdicts:
        return DOES_NOT_HOLD, verdicts
    return INCONCLUSIVE, verdicts
