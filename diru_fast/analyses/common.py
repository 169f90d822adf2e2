"""Pieces the analyses share: the standardised memory task, model building (the study's models, a
vanilla tanh RNN, an LSTM with forget-gate bias 1), the prototype-structured copy of a DIRU, quiet
training with gradient clipping, the tests every verdict uses (paired t-tests, Holm's correction,
power, Fisher's combination of p-values), and the metadata and JSON files they write.

Tests and corrections (:func:`paired_test`, :func:`holm`, :func:`decide`). A rule "the 95% t-interval
of a paired difference lies above c" is the two-sided t-test of mean = c at level 0.05 (rejected with
the estimate above c). With several comparisons in one analysis (its *family*), each comparison's
decisive p-value (the test that would settle its verdict) is Holm-adjusted over the family, and the
verdict is settled only when the adjusted p is below 0.05; the 95% intervals shown stay unadjusted.
With a single comparison Holm changes nothing and the rule is the interval rule.

The standardised memory task is the prototype's variable-delay memory task (the second of its three
toy tasks, :class:`~diru_fast.experiments.datasets.MemoryDataset`) with its input
divided by the vocabulary size V = 8 (values 1..7 become 0.125..0.875, the recall marker 1) and
its target z-scored with the *training* split's mean and standard deviation. A model that
predicts the training mean then has a validation MSE of about 1, so the MSE reads as the
fraction of the target's variance left unexplained (NMSE). It is the same data for every model.
On the prototype's raw scale (targets ~20 ± 7, inputs up to 8) DIRU and LSTM stay at the
predict-the-mean level for 50 epochs at T = 50 (the study's memory rows), which leaves nothing
to compare across delays or architectures.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .. import reference
from ..baselines import RNNModel
from ..experiments.datasets import MemoryDataset
from ..experiments.io import atomic_write_text
from ..experiments.models import build_model
from ..experiments.options import DIRUOptions
from ..experiments.stats import holm, t_cdf_two_sided, t_interval, t_power
from ..experiments.study import derive_seed
from ..experiments.training import evaluate
from ..experiments.tuning import pick_lr
from ..modules import DIRU

__all__ = ["RNNModel", "ANALYSIS_MODELS", "CLIP_NORM", "build", "rnn_params", "matched_rnn_hidden",
           "set_forget_bias", "model_options", "prototype_copy", "memory_delay", "standardised_memory", "fit",
           "FitHistory", "first_epoch_below", "fisher_combined_p", "paired_test", "holm", "decide", "power_paired_t",
           "detectable_effect", "environment", "write_json", "read_json", "Timer", "standardise_splits",
           "standardised_memory_splits", "mean_mse", "tune_trials", "scored_fit", "learned_summary"]

# The models the analyses train: the study's three, the vanilla tanh RNN, and two controls: an LSTM with
# forget-gate bias 1 ("lstm_fb1") and a tanh RNN resized to DIRU's parameter count ("rnn_matched", sized
# by the analysis: build() takes the hidden size it is given).
ANALYSIS_MODELS = ("diru", "lstm", "lstm_fb1", "gru", "rnn", "rnn_matched")
CLIP_NORM = 1.0  # every analysis clips every model's gradient to this global L2 norm


def build(kind: str, input_size: int, hidden_size: int, output_size: int, *, num_compartments: int = 4,
          backend: str = "auto", options: Optional[DIRUOptions] = None) -> nn.Module:
    """A fresh model: the study's ``diru``/``lstm``/``gru`` (:func:`~..experiments.models.build_model`)
    or the vanilla tanh ``rnn`` (also ``rnn_matched``: the same model at the hidden size given), or
    ``lstm_fb1``: the LSTM with its forget-gate bias set to 1 after the default initialisation
    (:func:`set_forget_bias`); initialisation draws from torch's global RNG. ``options`` (DIRU's cell
    options) go to DIRU only."""
    if kind in ("rnn", "rnn_matched"):
        return RNNModel(input_size, hidden_size, output_size)
    if kind == "lstm_fb1":
        return set_forget_bias(build_model("lstm", input_size, hidden_size, output_size), 1.0)
    return build_model(kind, input_size, hidden_size, output_size, num_compartments=num_compartments,
                       backend=backend, options=options)


def set_forget_bias(model: nn.Module, value: float) -> nn.Module:
    """Set an LSTM model's forget-gate bias to ``value`` (b_ih's forget rows = value, b_hh's = 0: their
    sum is what the gate sees). torch orders the gates i, f, g, o."""
    lstm = model.lstm
    d = lstm.hidden_size
    with torch.no_grad():
        for layer in range(lstm.num_layers):
            getattr(lstm, f"bias_ih_l{layer}")[d:2 * d].fill_(value)
            getattr(lstm, f"bias_hh_l{layer}")[d:2 * d].zero_()
    return model


def rnn_params(input_size: int, hidden_size: int, output_size: int) -> int:
    """Parameters of :class:`RNNModel`: d(n + d + 2) for the recurrence, (d + 1)·out for the head."""
    return hidden_size * (input_size + hidden_size + 2) + (hidden_size + 1) * output_size


def matched_rnn_hidden(target_params: int, input_size: int, output_size: int) -> int:
    """The tanh RNN hidden size whose parameter count is closest to ``target_params``."""
    best = min(range(1, 4 * int(math.sqrt(target_params)) + 2),
               key=lambda h: (abs(rnn_params(input_size, h, output_size) - target_params), h))
    return best


def model_options(model: nn.Module) -> DIRUOptions:
    """The cell options of a DIRU (fast: its layer's; reference: its first cell's)."""
    if isinstance(model, reference.DIRU):
        cell = model.cells[0]
        sizes = tuple(cell.compartment_sizes)
        return DIRUOptions(cell.activation, None if cell.compartment_size is not None else sizes,
                           cell.compartment_attention is not None, float(cell.dropout.p))
    layer = model.rnn
    sizes = tuple(layer.compartment_sizes)
    return DIRUOptions(layer.activation, None if len(set(sizes)) == 1 else sizes,
                       bool(layer.compartment_attention), float(layer.compartment_dropout))


def prototype_copy(model: nn.Module) -> reference.DIRU:
    """``model`` itself if it is a :class:`diru_fast.reference.DIRU`; for a fast :class:`diru_fast.DIRU`,
    a reference DIRU (the prototype's module structure: ``cells[l].compartments[c]``, ...) with the
    same weights, on the same device and dtype, loaded from the fast model's ``state_dict`` (which
    writes the prototype's keys). The copy shares no tensor with ``model`` and draws no random numbers."""
    if isinstance(model, reference.DIRU):
        return model
    if not isinstance(model, DIRU):
        raise TypeError(f"expected a DIRU (fast or reference), got {type(model).__name__}")
    like = model.fc_out.weight
    # On the meta device nothing is drawn (every tensor is loaded below); fork_rng keeps the global
    # generator as it was even where a tensor is made elsewhere.
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        opts = model.rnn
        copy = reference.DIRU(model.input_size, model.hidden_size, model.output_size,
                              num_compartments=None, num_layers=model.num_layers,
                              return_sequences=model.return_sequences, activation=opts.activation,
                              compartment_sizes=list(opts.compartment_sizes),
                              compartment_attention=bool(opts.compartment_attention),
                              compartment_dropout=float(opts.compartment_dropout))
    copy = copy.to_empty(device=like.device).to(dtype=like.dtype)
    copy.load_state_dict(model.state_dict())
    return copy


def memory_delay(seq_len: int) -> int:
    """Steps between the first stored value (step 0) and the recall marker (step T - 5)."""
    return seq_len - MemoryDataset.MARKER_FROM_END


def standardised_memory(n_train: int, n_val: int, seq_len: int, seed: int,
                        label: str = "memory") -> Tuple[MemoryDataset, MemoryDataset, Dict[str, float]]:
    """(train, validation, scaling) of the standardised memory task (see the module docstring).

    Data seeds derive from ``(label, seed, seq_len)``; scaling uses the training split only.
    """
    train_set = MemoryDataset(n_train, seq_len, derive_seed(label, seed, seq_len, "train"))
    val_set = MemoryDataset(n_val, seq_len, derive_seed(label, seed, seq_len, "val"))
    mean, std = float(train_set.y.mean()), float(train_set.y.std())
    for ds in (train_set, val_set):
        ds.x = ds.x / MemoryDataset.VOCAB
        ds.y = (ds.y - mean) / std
    return train_set, val_set, {"target_mean": mean, "target_std": std, "input_scale": 1.0 / MemoryDataset.VOCAB}


def standardised_memory_splits(n_train: int, n_val: int, n_test: int, seq_len: int, seed: int, label: str = "memory"
                               ) -> Tuple[MemoryDataset, MemoryDataset, MemoryDataset, Dict[str, float]]:
    """(train, validation, test, scaling): :func:`standardised_memory` plus a test split drawn from
    ``(label, seed, seq_len, "test")``, scaled with the same training statistics."""
    train_set, val_set, scaling = standardised_memory(n_train, n_val, seq_len, seed, label)
    test_set = MemoryDataset(n_test, seq_len, derive_seed(label, seed, seq_len, "test"))
    test_set.x = test_set.x * scaling["input_scale"]
    test_set.y = (test_set.y - scaling["target_mean"]) / scaling["target_std"]
    return train_set, val_set, test_set, scaling


def standardise_splits(train_set, *others) -> Dict[str, float]:
    """Standardise datasets in place as the study does: ``x <- (x - mx) / sx``, ``y <- (y - my) / sy``
    with one scalar each from the *training* split (every step of its inputs, its targets); returns
    the statistics. MSEs are then in units of the training target's variance."""
    x, y = train_set.x.double(), train_set.y.double()
    stats = {"input_mean": float(x.mean()), "input_std": float(x.std()),
             "target_mean": float(y.mean()), "target_std": float(y.std())}
    for ds in (train_set,) + tuple(others):
        ds.x = (ds.x - stats["input_mean"]) / stats["input_std"]
        ds.y = (ds.y - stats["target_mean"]) / stats["target_std"]
    return stats


def mean_mse(train_set, dataset) -> float:
    """MSE on ``dataset`` of always predicting ``train_set``'s mean target (the predict-the-mean baseline)."""
    mean = train_set.y.double().mean(0)
    return float((dataset.y.double() - mean).pow(2).mean())


@dataclass
class FitHistory:
    train_loss: List[float] = field(default_factory=list)  # per epoch: mean training loss over samples
    val_loss: List[float] = field(default_factory=list)  # per epoch: validation loss after the epoch
    clipped: List[float] = field(default_factory=list)  # per epoch: share of steps whose gradient was clipped
    best_epoch: Optional[int] = None  # 1-based epoch of the lowest validation loss (None: none finite)
    stopped_early: bool = False  # patience ran out (or the validation loss went NaN/inf) before the cap
    restored: bool = False  # the model holds the weights of ``best_epoch`` (``restore_best=True``)

    @property
    def best_val(self) -> float:
        """The lowest validation loss over the epochs run (inf if none was finite)."""
        finite = [v for v in self.val_loss if math.isfinite(v)]
        return min(finite) if finite else math.inf

    @property
    def hit_cap(self) -> bool:
        """Ran every epoch allowed without early stopping: the cap, not convergence, ended training."""
        return not self.stopped_early


def fit(model: nn.Module, train_set, val_set, *, epochs: int, batch_size: int = 32, lr: float = 1e-3,
        shuffle_seed: int = 0, loss: str = "mse", clip: Optional[float] = CLIP_NORM,
        patience: Optional[int] = None, restore_best: bool = False) -> FitHistory:
    """Adam (torch's defaults) + ``loss`` ("mse" or "cross_entropy") on shuffled mini-batches for at most
    ``epochs`` epochs; before every step the gradient is clipped to global L2 norm ``clip`` (``None``: no
    clipping). The order of samples depends only on ``shuffle_seed`` and the epoch.

    Early stopping (the study's protocol, :mod:`diru_fast.experiments.tuning`): with ``patience``, training
    stops after that many epochs without a lower validation loss, or at once when it is NaN/inf
    (``history.stopped_early``); ``epochs`` is then the cap (``history.hit_cap`` when reached).
    ``restore_best`` loads the weights of the best validation epoch at the end."""
    if patience is not None and patience < 1:
        raise ValueError(f"patience must be a positive number of epochs or None, got {patience!r}")
    if loss not in ("mse", "cross_entropy"):
        raise ValueError(f"loss must be 'mse' or 'cross_entropy', got {loss!r}")
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be positive or None, got {clip!r}")
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = FitHistory()
    best, since_best, best_state = math.inf, 0, None
    for epoch in range(epochs):
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(
            derive_seed("fit", shuffle_seed, epoch))).tolist()
        model.train()
        total, seen, clipped, steps = 0.0, 0, 0, 0
        for x, y in DataLoader(train_set, batch_size=batch_size, sampler=order):
            optimizer.zero_grad(set_to_none=True)
            out = model(x)
            value = F.cross_entropy(out, y) if loss == "cross_entropy" else F.mse_loss(out, y)
            value.backward()
            if clip is not None:
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                clipped += int(float(norm) > clip)
            optimizer.step()
            total += float(value.detach()) * len(x)
            seen += len(x)
            steps += 1
        history.train_loss.append(total / seen)
        val = evaluate(model, val_set, batch_size, loss=loss)
        history.val_loss.append(val)
        history.clipped.append(clipped / steps)
        if math.isfinite(val) and val < best:
            best, since_best, history.best_epoch = val, 0, epoch + 1
            if restore_best:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since_best += 1
        if patience is not None and (since_best >= patience or not math.isfinite(val)):
            history.stopped_early = True
            break
    if restore_best and best_state is not None:
        model.load_state_dict(best_state)
        history.restored = True
    return history


def scored_fit(model: nn.Module, train_set, val_set, test_set=None, *, lr: float, epochs: int, patience: int,
               shuffle_seed: int, batch_size: int = 32, clip: Optional[float] = CLIP_NORM) -> Dict[str, Any]:
    """Train with the study's protocol (:func:`fit` with early stopping after ``patience`` epochs
    without a better validation loss, ``epochs`` the cap, the best validation epoch's weights kept)
    and score it: ``best_val_mse``, ``val_ratio`` (over predicting the training mean on validation),
    ``best_epoch``, ``epochs_run``, ``hit_cap``, the validation curve; with ``test_set`` also
    ``test_mse``, ``mean_predictor_test_mse`` and ``test_ratio`` (the learned rule's ratio)."""
    history = fit(model, train_set, val_set, epochs=epochs, batch_size=batch_size, lr=lr, shuffle_seed=shuffle_seed,
                  clip=clip, patience=patience, restore_best=True)
    mean_val = mean_mse(train_set, val_set)
    out: Dict[str, Any] = {"lr": lr, "best_val_mse": history.best_val, "mean_predictor_val_mse": mean_val,
                           "val_ratio": history.best_val / mean_val if mean_val > 0 else math.inf,
                           "best_epoch": history.best_epoch, "epochs_run": len(history.val_loss),
                           "hit_cap": history.hit_cap, "val_mse_curve": history.val_loss}
    if test_set is not None:
        test_mse = evaluate(model, test_set, 256)
        mean_test = mean_mse(train_set, test_set)
        out.update(test_mse=test_mse, mean_predictor_test_mse=mean_test,
                   test_ratio=test_mse / mean_test if mean_test > 0 else math.inf)
    return out


def tune_trials(trial: Callable[[float, int], Dict[str, Any]], lr_grid: Sequence[float],
                seeds: Sequence[int]) -> Tuple[float, List[Dict[str, Any]]]:
    """Equal tuning (:mod:`diru_fast.experiments.tuning`): ``trial(lr, seed)`` trains one model at that
    rate on that tuning seed and returns :func:`scored_fit`'s dict (its ``val_ratio`` is the score).
    Returns (the picked rate: lowest median ``val_ratio`` over the seeds, ties to the smaller rate;
    the trial rows without their curves). A one-value grid is no tuning: that rate, no rows."""
    if len(lr_grid) == 1:
        return float(lr_grid[0]), []
    if not lr_grid or not seeds:
        raise ValueError("tuning needs a learning-rate grid and at least one tuning seed")
    rows = []
    for lr in lr_grid:
        for seed in seeds:
            row = {k: v for k, v in trial(float(lr), int(seed)).items() if k != "val_mse_curve"}
            rows.append(dict(row, lr=float(lr), seed=int(seed)))
    return pick_lr(rows, key="val_ratio"), rows


def learned_summary(ratios: Sequence[float]) -> Dict[str, Any]:
    """The learned rule over seeds (:mod:`diru_fast.experiments.claims`): the median of the per-seed
    test MSE / predict-the-mean ratios, whether it is at most ``LEARNED_RATIO``, and how many seeds are."""
    from ..experiments.claims import learned

    vals = sorted(float(r) if math.isfinite(float(r)) else math.inf for r in ratios)  # NaN: not learned
    if not vals:
        return {"median_ratio": math.nan, "learned": False, "seeds_learned": 0, "n": 0}
    n = len(vals)
    median = vals[n // 2] if n % 2 else 0.5 * (vals[n // 2 - 1] + vals[n // 2])
    return {"median_ratio": median, "learned": learned(median), "seeds_learned": sum(learned(v) for v in vals), "n": n}


def first_epoch_below(curve: Sequence[float], threshold: float) -> Optional[int]:
    """The first epoch (1-based) whose value is below ``threshold``; None if none is."""
    return next((i + 1 for i, v in enumerate(curve) if v < threshold), None)


def fisher_combined_p(p_values: Sequence[float]) -> float:
    """Fisher's method: P(chi2 with 2n degrees of freedom >= -2 sum log p) for n independent p-values.

    Closed form for even degrees of freedom: exp(-x/2) * sum_{i<n} (x/2)^i / i!.
    """
    if not p_values:
        raise ValueError("fisher_combined_p needs at least one p-value")
    if any(not 0.0 < p <= 1.0 for p in p_values):
        raise ValueError(f"p-values must lie in (0, 1], got {list(p_values)}")
    half = -sum(math.log(p) for p in p_values)  # x / 2
    term, total = 1.0, 1.0
    for i in range(1, len(p_values)):
        term *= half / i
        total += term
    return min(1.0, math.exp(-half) * total)


def paired_test(values: Sequence[float], null: float = 0.0) -> Dict[str, float]:
    """Two-sided one-sample t-test of mean(values) = ``null`` (values: paired differences, one per seed).

    Returns the mean, the 95% t-interval, t, the degrees of freedom and p; p is nan with fewer than
    two values and 0 when every value equals the mean but not ``null``. The 95% interval excludes
    ``null`` exactly when p < 0.05.
    """
    n = len(values)
    if n < 2:
        mean = float(values[0]) if values else math.nan
        return {"mean": mean, "low": math.nan, "high": math.nan, "n": n, "t": math.nan, "df": 0, "p": math.nan}
    iv = t_interval(list(values))
    sd = math.sqrt(sum((v - iv.estimate) ** 2 for v in values) / (n - 1))
    se = sd / math.sqrt(n)
    if se == 0:
        t = 0.0 if iv.estimate == null else math.copysign(math.inf, iv.estimate - null)
    else:
        t = (iv.estimate - null) / se
    p = 0.0 if math.isinf(t) else max(0.0, 1.0 - t_cdf_two_sided(t, n - 1))
    return {"mean": iv.estimate, "low": iv.low, "high": iv.high, "n": n, "t": t, "df": n - 1, "p": p}


def decide(tests: Sequence[Dict[str, Any]], alpha: float = 0.05) -> List[str]:
    """Verdicts of a family: each test has ``p`` (its decisive p-value) and ``if_significant`` (the
    verdict it settles when significant); Holm-adjusts the p's over the family (stored in each test as
    ``p_holm``) and returns ``if_significant`` where ``p_holm < alpha``, else "inconclusive"."""
    adjusted = holm([t["p"] for t in tests])
    out = []
    for t, p in zip(tests, adjusted):
        t["p_holm"] = p
        out.append(t["if_significant"] if math.isfinite(p) and p < alpha else "inconclusive")
    return out


def power_paired_t(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided one-sample t-test (level ``alpha``, n values of standard deviation
    ``sd``) against a true mean difference ``effect`` (:func:`diru_fast.experiments.stats.t_power` of
    the standardised effect ``effect / sd``); nan with fewer than two values or no spread."""
    if n < 2 or not sd > 0:
        return math.nan
    return t_power(effect / sd, n, alpha)


def detectable_effect(sd: float, n: int, power: float = 0.8, alpha: float = 0.05) -> float:
    """The smallest mean difference the test of :func:`power_paired_t` detects with ``power``
    (bisection on the effect); nan without a spread."""
    if n < 2 or not sd > 0:
        return math.nan
    lo, hi = 0.0, sd
    while power_paired_t(hi, sd, n, alpha) < power:
        hi *= 2
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if power_paired_t(mid, sd, n, alpha) < power else (lo, mid)
    return hi


def environment(command: str, threads: int) -> Dict[str, Any]:
    """Where and with what a result was made (the bench suite's environment plus the command)."""
    from ..benchmarking import environment as bench_environment

    env = bench_environment()
    env.update(command=command, threads=threads if threads > 0 else torch.get_num_threads())
    return env


def write_json(path: Path, obj: Dict[str, Any]) -> Path:
    """Compact JSON (numbers to 6 significant digits), written atomically."""
    return atomic_write_text(Path(path), json.dumps(_short(obj), separators=(",", ":"), allow_nan=True) + "\n")


def read_json(path: Path) -> Dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _short(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if not math.isfinite(obj) else float(f"{obj:.6g}")
    if isinstance(obj, dict):
        return {k: _short(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_short(v) for v in obj]
    return obj


class Timer:
    """``with Timer() as t: ...; t.seconds``."""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        self.seconds: Optional[float] = None
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start
