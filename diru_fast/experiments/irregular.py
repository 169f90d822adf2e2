"""Irregularly sampled series: DIRU with Δt as an input feature vs DIRU's time decay vs LSTM/GRU.

The task (``python -m diru_fast irregular``)
---------------------------------------------
A continuous-time signal is observed at ``T`` random times with exponential gaps, and the model
predicts the observation at one more random time. In units of the mean gap,

    g_0 = 0,  g_1, ..., g_T ~ Exp(1) i.i.d.,   τ_i = g_0 + ... + g_i      (i = 0..T)

observations ``v_i = s(τ_i)`` for ``i < T``; the target is ``y = v_T = s(τ_T)``, the next
observation, ``g_T`` (the query gap) after the last one. Each sequence has ``T + 1`` steps: ``T``
observation steps and a final *query step* at ``τ_T`` that carries no value. Per step ``i`` the
inputs are

    value_i    = v_i on observation steps, 0 on the query step
    observed_i = 1 on observation steps, 0 on the query step
    Δt_i       = g_i  (time since the previous step; 0 on the first)

as ``x [N, T+1, 3]`` (value, observed, Δt) and ``dt [N, T+1]`` (= Δt). Every model reads the
sequence and predicts ``y`` from its last state (after the query step). Signals:

- ``sine``:   the sine task's signal (:class:`~.datasets.SineDataset`: ``f1~U(0.5,2)``, ``f2~U(3,5)``,
  ``f3~U(7,10)``, ``s(t) = sin(f1 t) + 0.5 sin(f2 t) + 0.25 sin(f3 t)``) in its own time ``t = h τ``
  with ``h = 4π/59`` (that task's grid step at T = 50, so the mean gap is its regular spacing), each
  observation (the target too) plus independent ``N(0, 0.1²)`` noise: no predictor beats MSE 0.01.
- ``lorenz``: the Lorenz system of :class:`~.datasets.LorenzDataset` (σ=10, ρ=28, β=8/3, start
  ``5·N(0,1)³``) integrated by RK4 from each observation time to the next in equal substeps of at
  most 0.01, the mean gap 0.05 time units (5 of that task's Euler steps); the value is ``x / 10``
  (no noise).

The compared models (every one fed Δt, in one way or another)
--------------------------------------------------------------
- ``diru_feature``: DIRU (``time_decay=False``) reading (value, observed, Δt).
- ``diru_decay``:   DIRU with ``time_decay=True`` reading (value, observed); Δt reaches it only as
  ``dt=``: the state decays by ``exp(-softplus(λ) Δt)`` before each step (λ learned per unit).
- ``diru_both``:    DIRU with ``time_decay=True`` reading (value, observed, Δt), and ``dt=``.
- ``lstm``, ``gru``: ``nn.LSTM`` / ``nn.GRU`` and a linear head reading (value, observed, Δt), their
  hidden sizes chosen to bring their parameter counts closest to ``diru_feature``'s.
- ``gru_decay``:    a GRU with the same exponential hidden-state decay (GRU-D style,
  :class:`~diru_fast.baselines.GRUDecayModel`) reading (value, observed), Δt as ``dt=``: the like-for-like
  baseline of ``diru_decay``.
- Trivial predictors (no training by gradient): ``mean`` (the training targets' mean), ``last``
  (the last observed value) and ``least_squares`` (linear least squares, fitted on the training
  split, on the last K = 5 values, the last K gaps including the query gap, each of the K values
  times the query gap, and a constant).

The protocol and the comparison rule (fixed before any run)
-----------------------------------------------------------
Data standardised with training-split statistics (the value column over observed steps and the
target; Δt stays in units of the mean gap); MSEs in standardised units, raw beside. Every model is
tuned alike (:mod:`.tuning`): the Adam learning rate picked from ``lr_grid`` by the best validation
MSE over ``tune_seeds`` tuning seeds (disjoint from the test seeds), gradient clipping at
``clip_norm``, early stopping (``patience``, at most ``max_epochs`` epochs; runs at the cap are
counted). Primary metric: test MSE of the best-validation weights. A model has *learned* a task when
its median test MSE over seeds is at most 0.3x that of predicting the training mean
(:func:`~.claims.learned`). For each pair in :data:`COMPARISONS` in which both models learned, the
paired log ratios ``log(MSE_A / MSE_B)`` over seeds give A's relative improvement ``1 - exp(mean)``
with a 95% Student-t interval and a two-sided paired t-test; those p-values are Holm-corrected
together (family-wise α = 0.05). Verdict: "A better" / "B better" when the Holm-adjusted p < 0.05,
else "no significant difference"; "not learned" where neither learned and "only <model> learned"
where one did (:func:`~.claims.pair_verdict`).
"""

from __future__ import annotations

import argparse
import copy
import csv
import io
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..baselines import GRUDecayModel, GRUModel, LSTMModel
from . import claims as C
from ..modules import DIRU
from .datasets import LorenzDataset, SineDataset
from .io import atomic_path, atomic_write_text
from .models import count_params, matched_hidden_size
from .stats import Interval, holm, mean_std, paired_t_p, relative_improvement, t_interval
from .study import derive_seed
from .tuning import DEFAULT_CLIP_NORM, DEFAULT_LR_GRID, SeedPlan, lr_curve, pick_lr

__all__ = ["IrregularDataset", "IRREGULAR_TASKS", "MODEL_VARIANTS", "TRIVIAL", "COMPARISONS", "IrregularConfig",
           "IrregularModel", "build_variant", "paired_test", "trivial_predictions", "run_one",
           "run_irregular", "comparisons", "markdown_report", "add_arguments", "main"]

IRREGULAR_TASKS = ("sine", "lorenz")
SINE_TIME_UNIT = 4.0 * math.pi / 59.0  # the sine task's grid step at T = 50
LORENZ_TIME_UNIT = 0.05  # 5 Euler steps of the Lorenz task
LORENZ_SCALE = 10.0  # the value is x / 10
LORENZ_MAX_SUBSTEP = 0.01
LS_WINDOW = 5  # K of the least-squares predictor
GAP_BINS = (0.5, 1.5)  # query gap bins (units of the mean gap): < 0.5, 0.5..1.5, >= 1.5
RESULTS_JSON, RESULTS_CSV, REPORT_MD, PLOT_PNG = "results.json", "results.csv", "report.md", "irregular.png"


# ------------------------------------------------------------------------------------------- data


class IrregularDataset(Dataset):
    """``num_samples`` sequences of ``seq_len`` observations and a query step (see the module docstring).

    Attributes: ``x [N, T+1, 3]`` (value, observed, Δt) float32, ``dt [N, T+1]`` float32,
    ``y [N, 1]`` float32 (the value at the query step), ``gaps [N, T+1]`` and ``times [N, T+1]``
    (float64, units of the mean gap), ``values [N, T+1]`` (float64, the target last). Items are
    ``(x [T+1, 3], dt [T+1], y [1])``.
    """

    def __init__(self, task: str, num_samples: int, seq_len: int, seed: int):
        if task not in IRREGULAR_TASKS:
            raise ValueError(f"unknown irregular task {task!r}; choose one of {', '.join(IRREGULAR_TASKS)}")
        for name, value, low in (("num_samples", num_samples, 1), ("seq_len", seq_len, LS_WINDOW)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        self.task, self.num_samples, self.seq_len, self.seed = task, num_samples, seq_len, seed
        gen = torch.Generator().manual_seed(seed)
        n, steps = num_samples, seq_len + 1
        u = torch.rand(n, steps, generator=gen, dtype=torch.float64)
        self.gaps = -torch.log1p(-u)  # [N, T+1] ~ Exp(1)
        self.gaps[:, 0] = 0.0
        self.times = self.gaps.cumsum(1)  # [N, T+1]
        self.values = (self._sine if task == "sine" else self._lorenz)(gen)  # [N, T+1]
        observed = torch.ones(n, steps, dtype=torch.float64)
        observed[:, -1] = 0.0
        value_in = self.values.clone()
        value_in[:, -1] = 0.0
        self.x = torch.stack([value_in, observed, self.gaps], -1).to(torch.float32).contiguous()  # [N, T+1, 3]
        self.dt = self.gaps.to(torch.float32).contiguous()  # [N, T+1]
        self.y = self.values[:, -1:].to(torch.float32).contiguous()  # [N, 1]

    def _sine(self, gen: torch.Generator) -> Tensor:
        lo = torch.tensor([r[0] for r in SineDataset.FREQ_RANGES], dtype=torch.float64)
        hi = torch.tensor([r[1] for r in SineDataset.FREQ_RANGES], dtype=torch.float64)
        self.freqs = lo + (hi - lo) * torch.rand(self.num_samples, 3, generator=gen, dtype=torch.float64)
        amp = torch.tensor(SineDataset.AMPLITUDES, dtype=torch.float64)
        t = SINE_TIME_UNIT * self.times  # [N, T+1]
        clean = (amp * torch.sin(self.freqs.unsqueeze(1) * t.unsqueeze(-1))).sum(-1)  # [N, T+1]
        return clean + SineDataset.NOISE_STD * torch.randn(clean.shape, generator=gen, dtype=torch.float64)

    def _lorenz(self, gen: torch.Generator) -> Tensor:
        state = LorenzDataset.START_SCALE * torch.randn(self.num_samples, 3, generator=gen, dtype=torch.float64)
        xs = [state[:, 0]]
        for i in range(1, self.seq_len + 1):
            h = LORENZ_TIME_UNIT * self.gaps[:, i:i + 1]  # [N, 1]
            m = max(1, math.ceil(float(h.max()) / LORENZ_MAX_SUBSTEP))
            for _ in range(m):
                state = _rk4(state, h / m)
            xs.append(state[:, 0])
        return torch.stack(xs, 1) / LORENZ_SCALE

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, index: int) -> Tuple[Tensor, Tensor, Tensor]:
        return self.x[index], self.dt[index], self.y[index]

    def __repr__(self) -> str:
        return (f"IrregularDataset(task={self.task!r}, num_samples={self.num_samples}, seq_len={self.seq_len}, "
                f"seed={self.seed})")


def _lorenz_rate(s: Tensor) -> Tensor:
    x, y, z = s.unbind(-1)
    c = LorenzDataset
    return torch.stack([c.SIGMA * (y - x), x * (c.RHO - z) - y, x * y - c.BETA * z], -1)


def _rk4(s: Tensor, h: Tensor) -> Tensor:
    """One classical Runge-Kutta step of the Lorenz system: ``s [N, 3]``, step ``h [N, 1]`` per row."""
    k1 = _lorenz_rate(s)
    k2 = _lorenz_rate(s + 0.5 * h * k1)
    k3 = _lorenz_rate(s + 0.5 * h * k2)
    k4 = _lorenz_rate(s + h * k3)
    return s + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)


# ----------------------------------------------------------------------------------------- models

# key: (label, reads Δt as a feature, time_decay)
MODEL_VARIANTS: Dict[str, Tuple[str, bool, bool]] = {
    "diru_feature": ("DIRU, Δt feature", True, False),
    "diru_decay": ("DIRU, time decay", False, True),
    "diru_both": ("DIRU, Δt feature + time decay", True, True),
    "lstm": ("LSTM, Δt feature", True, False),
    "gru": ("GRU, Δt feature", True, False),
    "gru_decay": ("GRU-D-style decay", False, True),
}
TRIVIAL: Dict[str, str] = {"mean": "training mean", "last": "last value",
                           "least_squares": f"least squares (last {LS_WINDOW} values, gaps)"}
# (A, B): "is A's test MSE lower than B's", per task; all of them Holm-corrected together
COMPARISONS: Tuple[Tuple[str, str], ...] = (
    ("diru_decay", "diru_feature"), ("diru_decay", "gru_decay"), ("gru_decay", "gru"), ("diru_both", "diru_feature"),
    ("diru_feature", "lstm"), ("diru_feature", "gru"), ("diru_decay", "lstm"), ("diru_decay", "gru"),
    ("diru_both", "lstm"), ("diru_both", "gru"))


class IrregularModel(nn.Module):
    """A recurrent model on ``(x [B, T, 3], dt [B, T]) -> [B, 1]``: it reads the input columns its
    variant uses (value and observed; Δt too if ``dt_feature``) and, with ``time_decay``, passes ``dt=``."""

    def __init__(self, net: nn.Module, dt_feature: bool, time_decay: bool):
        super().__init__()
        self.net, self.dt_feature, self.time_decay = net, dt_feature, time_decay

    def forward(self, x: Tensor, dt: Tensor) -> Tensor:
        x = x if self.dt_feature else x[..., :2]
        if isinstance(self.net, GRUDecayModel):
            return self.net(x, dt)
        return self.net(x, dt=dt) if self.time_decay else self.net(x)


def _diru_net(n_in: int, hidden: int, k: int, backend: str, time_decay: bool) -> nn.Module:
    kwargs = {"time_decay": True} if time_decay else {}
    return DIRU(n_in, hidden, 1, num_compartments=k, backend=backend, **kwargs)


def variant_hidden_sizes(hidden: int, k: int) -> Dict[str, int]:
    """Hidden size per variant: ``hidden`` for the DIRUs, the baselines matched to ``diru_feature``."""
    with torch.device("meta"):
        target = count_params(_diru_net(3, hidden, k, "torch", False))
    # gru_decay: matched as a GRU on (value, observed) (its d decay rates aside)
    return {key: (hidden if key.startswith("diru") else matched_hidden_size(key.split("_")[0], target,
                                                                            3 if MODEL_VARIANTS[key][1] else 2, 1))
            for key in MODEL_VARIANTS}


def build_variant(key: str, hidden: int, k: int = 4, backend: str = "auto") -> IrregularModel:
    """A fresh model of variant ``key`` at its (matched) hidden size; initialisation from torch's global RNG."""
    if key not in MODEL_VARIANTS:
        raise ValueError(f"unknown model {key!r}; choose one of {', '.join(MODEL_VARIANTS)}")
    _, dt_feature, time_decay = MODEL_VARIANTS[key]
    d = variant_hidden_sizes(hidden, k)[key]
    n_in = 3 if dt_feature else 2
    net = {"lstm": lambda: LSTMModel(n_in, d, 1), "gru": lambda: GRUModel(n_in, d, 1),
           "gru_decay": lambda: GRUDecayModel(n_in, d, 1)}.get(key, lambda: _diru_net(n_in, d, k, backend, time_decay))()
    return IrregularModel(net, dt_feature, time_decay)


def decay_rates(model: nn.Module) -> Optional[List[float]]:
    """``softplus(λ)`` of every unit of a time-decay model (None without one)."""
    rates = [F.softplus(p.detach()).flatten() for name, p in model.named_parameters() if "decay_rate" in name]
    return torch.cat(rates).tolist() if rates else None


# ------------------------------------------------------------------------------- trivial predictors


def _ls_features(ds: IrregularDataset) -> Tensor:
    K = LS_WINDOW
    v = ds.values[:, -K - 1:-1]  # [N, K] the last K observed values
    g = ds.gaps[:, -K:]  # [N, K] the gaps between them and up to the query (query gap last)
    q = ds.gaps[:, -1:]  # [N, 1]
    return torch.cat([v, g, v * q, torch.ones_like(q)], 1)  # [N, 3K+1]


def trivial_predictions(train_set: IrregularDataset, test_set: IrregularDataset) -> Dict[str, Tensor]:
    """Each trivial predictor's predictions on ``test_set`` (float64 ``[N]``), fitted on ``train_set``."""
    y = train_set.values[:, -1]
    a, b = _ls_features(train_set), _ls_features(test_set)
    ridge = 1e-8 * torch.eye(a.shape[1], dtype=torch.float64)
    coef = torch.linalg.solve(a.T @ a + ridge, a.T @ y)
    return {"mean": torch.full((len(test_set),), float(y.mean()), dtype=torch.float64),
            "last": test_set.values[:, -2].clone(), "least_squares": b @ coef}


# ------------------------------------------------------------------------------------------ train


@dataclass
class IrregularConfig(SeedPlan):
    tasks: Tuple[str, ...] = IRREGULAR_TASKS
    models: Tuple[str, ...] = tuple(MODEL_VARIANTS)
    seeds: int = 5
    first_seed: int = 0
    n_train: int = 800
    n_val: int = 200
    n_test: int = 500
    seq_len: int = 50  # observations; the sequence has seq_len + 1 steps
    hidden_size: int = 32
    num_compartments: int = 4
    batch_size: int = 32
    lr: float = 1e-3  # used without a grid
    max_epochs: int = 80
    patience: int = 10
    backend: str = "auto"
    normalize: bool = True  # standardise the value column and the target (training-split statistics)
    lr_grid: Tuple[float, ...] = DEFAULT_LR_GRID  # () or one value: no tuning
    tune_seeds: int = 1
    tune_first_seed: int = 1000
    clip_norm: float = DEFAULT_CLIP_NORM  # 0: off

    def __post_init__(self):
        self.tasks, self.models = tuple(self.tasks), tuple(self.models)
        unknown = ([t for t in self.tasks if t not in IRREGULAR_TASKS]
                   + [m for m in self.models if m not in MODEL_VARIANTS])
        if unknown or not self.tasks or not self.models:
            raise ValueError(f"tasks from {IRREGULAR_TASKS} and models from {tuple(MODEL_VARIANTS)} needed, "
                             f"got {self.tasks} / {self.models}")
        for name in ("seeds", "n_train", "n_val", "n_test", "hidden_size", "num_compartments", "batch_size",
                     "max_epochs", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.seq_len < LS_WINDOW:
            raise ValueError(f"seq_len must be >= {LS_WINDOW}, got {self.seq_len}")
        if self.hidden_size % self.num_compartments:
            raise ValueError(f"num_compartments {self.num_compartments} must divide hidden_size {self.hidden_size}")

        self.lr_grid = tuple(float(v) for v in self.lr_grid)
        self.check_seeds_apart()

    def to_dict(self) -> Dict[str, Any]:
        return dict(asdict(self), tasks=list(self.tasks), models=list(self.models), lr_grid=list(self.lr_grid))

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "IrregularConfig":
        """From :meth:`to_dict`; a config from before the tuning protocol had none (raw, one lr, no clipping)."""
        d = dict(d)
        if "lr_grid" not in d:
            d.update(lr_grid=(), normalize=False, clip_norm=0.0)
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})


def _seeds(task: str, seed: int) -> Dict[str, int]:
    return {part: derive_seed("irregular", task, seed, part) for part in ("train", "val", "test", "init", "shuffle")}


def _squared_errors(model: nn.Module, ds: IrregularDataset, batch: int = 500) -> Tensor:
    """Per-sample squared error (float64 ``[N]``) of ``model`` on ``ds``."""
    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(ds), batch):
            pred = model(ds.x[i:i + batch], ds.dt[i:i + batch])  # [b, 1]
            out.append((pred.double() - ds.y[i:i + batch].double()).pow(2).squeeze(1))
    model.train()
    return torch.cat(out)


def gap_bin_mse(sq_err: Tensor, query_gaps: Tensor) -> List[float]:
    """MSE within each query-gap bin of :data:`GAP_BINS` (nan for an empty bin)."""
    edges = (0.0,) + GAP_BINS + (math.inf,)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (query_gaps >= lo) & (query_gaps < hi)
        out.append(float(sq_err[sel].mean()) if bool(sel.any()) else math.nan)
    return out


def standardisation(train_set: IrregularDataset) -> Tuple[float, float, float, float]:
    """(mean, std) of the training split's observed values and of its targets."""
    v, y = train_set.values[:, :-1], train_set.values[:, -1]
    return float(v.mean()), float(v.std()), float(y.mean()), float(y.std())


def standardised(ds: IrregularDataset, stats: Tuple[float, float, float, float]) -> IrregularDataset:
    """A copy of ``ds`` whose model inputs (the value column on observed steps) and targets are scaled
    with ``stats`` (the training split's); ``values`` and ``gaps`` stay raw (the trivial predictors')."""
    mv, sv, my, sy = stats
    out = copy.copy(ds)
    x = ds.x.clone()
    x[:, :-1, 0] = (x[:, :-1, 0] - mv) / sv  # the query step's value stays 0 (observed = 0 marks it)
    out.x, out.y = x.contiguous(), ((ds.y - my) / sy).contiguous()
    return out


def run_one(config: IrregularConfig, task: str, key: str, seed: int,
            data: Optional[Tuple[IrregularDataset, IrregularDataset, IrregularDataset]] = None,
            lr: Optional[float] = None, tuning: bool = False) -> Dict[str, Any]:
    """Train variant ``key`` on ``task`` with ``seed`` at learning rate ``lr`` (default ``config.lr``; early
    stopping on validation); a JSON-ready summary (``tuning``: validation only)."""
    lr = config.lr if lr is None else float(lr)
    seeds = _seeds(task, seed)
    train_set, val_set, test_set = data or _data(config, task, seed)
    var = 1.0  # MSE in training units -> raw units
    raw_train = train_set
    if config.normalize:
        stats = standardisation(train_set)
        var = stats[3] ** 2
        train_set, val_set, test_set = (standardised(d, stats) for d in (train_set, val_set, test_set))
    mean_mse = lambda ds: float((ds.values[:, -1] - raw_train.values[:, -1].mean()).pow(2).mean()) / var  # noqa: E731
    torch.manual_seed(seeds["init"])
    model = build_variant(key, config.hidden_size, config.num_compartments, config.backend)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seeds["shuffle"])
    best, best_state, best_epoch, since = math.inf, None, 0, 0
    train_loss: List[float] = []
    val_loss: List[float] = []
    epoch_s: List[float] = []
    for epoch in range(1, config.max_epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(len(train_set), generator=gen)
        total = 0.0
        for i in range(0, len(order), config.batch_size):
            idx = order[i:i + config.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = F.mse_loss(model(train_set.x[idx], train_set.dt[idx]), train_set.y[idx])
            loss.backward()
            if config.clip_norm:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            opt.step()
            total += float(loss.detach()) * len(idx)
        val = float(_squared_errors(model, val_set).mean())
        train_loss.append(total / len(train_set))
        val_loss.append(val)
        epoch_s.append(time.perf_counter() - start)
        if not math.isfinite(val):
            break
        if val < best:
            best, best_state, best_epoch, since = val, copy.deepcopy(model.state_dict()), epoch, 0
        else:
            since += 1
            if since >= config.patience:
                break
    val_mean = mean_mse(val_set)
    common = {"task": task, "model": key, "seed": seed, "lr": lr, "best_val_mse": best, "best_epoch": best_epoch,
              "epochs": len(val_loss), "stopped_early": len(val_loss) < config.max_epochs,
              "mean_predictor_val_mse": val_mean}
    if tuning:
        return dict(common, val_ratio=best / val_mean)
    if best_state is not None:
        model.load_state_dict(best_state)
    sq = _squared_errors(model, test_set)
    rates = decay_rates(model)
    return {
        **common, "label": MODEL_VARIANTS[key][0], "seeds": seeds,
        "hidden_size": variant_hidden_sizes(config.hidden_size, config.num_compartments)[key],
        "params": count_params(model), "backend": _backend_of(model), "test_mse": float(sq.mean()),
        "test_mse_raw": float(sq.mean()) * var, "mean_predictor_test_mse": mean_mse(test_set),
        "units": "standardized" if config.normalize else "raw", "mean_epoch_s": sum(epoch_s) / len(epoch_s),
        "gap_bin_mse": gap_bin_mse(sq, test_set.gaps[:, -1]),
        "decay_rate": None if rates is None else _rate_summary(rates),
        "history": {"train_loss": _short(train_loss), "val_loss": _short(val_loss)},
    }


def _backend_of(model: IrregularModel) -> str:
    if isinstance(model.net, DIRU):
        from ..backends import resolve_backend

        opts = frozenset({"time_decay"} if model.time_decay else ())
        return resolve_backend(model.net.backend, torch.device("cpu"), torch.float32, opts)
    if isinstance(model.net, GRUDecayModel):
        return "nn.GRUCell loop"
    return f"nn.{type(model.net).__name__.replace('Model', '').upper()}"


def _rate_summary(rates: Sequence[float]) -> Dict[str, float]:
    s = sorted(rates)
    return {"mean": sum(s) / len(s), "median": s[len(s) // 2], "min": s[0], "max": s[-1]}


def _short(values: Sequence[float]) -> List[float]:
    return [float(f"{v:.6g}") for v in values]


def _data(config: IrregularConfig, task: str, seed: int):
    s = _seeds(task, seed)
    return tuple(IrregularDataset(task, n, config.seq_len, s[part])
                 for part, n in (("train", config.n_train), ("val", config.n_val), ("test", config.n_test)))


def _trivial_rows(task: str, seed: int, train_set, test_set, normalize: bool = True) -> List[Dict[str, Any]]:
    """Each trivial predictor's test MSE, in the study's units (``test_mse``) and raw."""
    var = standardisation(train_set)[3] ** 2 if normalize else 1.0
    rows = []
    for name, pred in trivial_predictions(train_set, test_set).items():
        sq = (pred - test_set.values[:, -1]).pow(2) / var
        rows.append({"task": task, "model": name, "label": TRIVIAL[name], "seed": seed, "params": 0,
                     "test_mse": float(sq.mean()), "test_mse_raw": float(sq.mean()) * var,
                     "gap_bin_mse": gap_bin_mse(sq, test_set.gaps[:, -1])})
    return rows


# ------------------------------------------------------------------------------------------ stats


def paired_test(a: Sequence[float], b: Sequence[float]) -> Tuple[Interval, float]:
    """A's relative improvement over B (paired by seed, 95% CI) and the two-sided paired t-test's
    p-value on the same log ratios (:func:`~.stats.paired_t_p`; nan with one pair)."""
    return relative_improvement(a, b), paired_t_p([math.log(x / y) for x, y in zip(a, b)])


def _by(runs: Sequence[Dict[str, Any]], task: str, model: str) -> Dict[int, float]:
    return {r["seed"]: r["test_mse"] for r in runs if r["task"] == task and r["model"] == model}


def ratio_to_mean(results: Dict[str, Any], task: str, model: str) -> Optional[float]:
    """Median over seeds of the model's test MSE / predicting the training mean's (same seed, same units)."""
    mean = _by(results["trivial"], task, "mean")
    mine = _by(results["runs"], task, model)
    v = sorted(mine[s] / mean[s] for s in mine if s in mean and mean[s] > 0)
    if not v:
        return None
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def comparisons(results: Dict[str, Any], alpha: float = 0.05) -> List[Dict[str, Any]]:
    """Every pair of :data:`COMPARISONS` that ran, per task, with CI, p, Holm-adjusted p (over the pairs in
    which both models learned the task) and the verdict."""
    out = []
    for task in results["config"]["tasks"]:
        for a, b in COMPARISONS:
            ma, mb = _by(results["runs"], task, a), _by(results["runs"], task, b)
            seeds = sorted(set(ma) & set(mb))
            if not seeds:
                continue
            imp, p = paired_test([ma[s] for s in seeds], [mb[s] for s in seeds])
            learned = (C.learned(ratio_to_mean(results, task, a)), C.learned(ratio_to_mean(results, task, b)))
            out.append({"task": task, "a": a, "b": b, "n": len(seeds), "improvement": imp, "p": p,
                        "learned": learned, "in_family": all(learned)})
    family = [c for c in out if c["in_family"]]
    for c, adj in zip(family, holm([c["p"] for c in family])):
        c["p_holm"] = adj
    for c in out:
        c.setdefault("p_holm", math.nan)
        tested = ("no significant difference" if not c["p_holm"] < alpha else
                  f"{MODEL_VARIANTS[c['a']][0]} better" if c["improvement"].estimate > 0 else
                  f"{MODEL_VARIANTS[c['b']][0]} better")
        c["verdict"] = C.pair_verdict(*c["learned"], tested, MODEL_VARIANTS[c["a"]][0], MODEL_VARIANTS[c["b"]][0])
    return out


# ----------------------------------------------------------------------------------------- runner


def _environment(command: str) -> Dict[str, Any]:
    from ..benchmarking import environment

    return dict(environment(), command=command, device_type="cpu")


def results_csv(results: Dict[str, Any]) -> str:
    cols = ("task", "model", "label", "seed", "params", "lr", "test_mse", "test_mse_raw", "best_val_mse", "best_epoch",
            "epochs", "mean_epoch_s", "mse_gap_lt_0.5", "mse_gap_0.5_1.5", "mse_gap_ge_1.5", "decay_rate_mean")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)
    for r in results["runs"] + results["trivial"]:
        rate = (r.get("decay_rate") or {}).get("mean", "")
        w.writerow([r["task"], r["model"], r["label"], r["seed"], r["params"], r.get("lr", ""), r["test_mse"],
                    r.get("test_mse_raw", ""), r.get("best_val_mse", ""), r.get("best_epoch", ""), r.get("epochs", ""),
                    r.get("mean_epoch_s", ""), *r["gap_bin_mse"], rate])
    return buf.getvalue()


def _write(results: Dict[str, Any], out_dir: Path) -> None:
    atomic_write_text(out_dir / RESULTS_JSON, json.dumps(results, indent=None, separators=(",", ":")))
    atomic_write_text(out_dir / RESULTS_CSV, results_csv(results))


def run_irregular(config: IrregularConfig, out_dir: Optional[Path] = None, *, command: str = "",
                  progress: bool = True) -> Dict[str, Any]:
    """Tuning trials (each model's lr on the tuning seeds), then every (seed, task, model) of ``config`` at
    its picked lr, plus the trivial predictors; results written after each run."""
    start = time.perf_counter()
    results: Dict[str, Any] = {"meta": _environment(command), "config": config.to_dict(),
                               "hidden_sizes": variant_hidden_sizes(config.hidden_size, config.num_compartments),
                               "runs": [], "trivial": [], "tuning": []}

    def save() -> None:
        results["meta"]["wall_s"] = time.perf_counter() - start
        if out_dir is not None:
            _write(results, Path(out_dir))

    for seed in config.tune_seed_list:
        for task in config.tasks:
            data = _data(config, task, seed)
            for key in config.models:
                for lr in config.lr_grid:
                    row = run_one(config, task, key, seed, data, lr=lr, tuning=True)
                    results["tuning"].append(row)
                    save()
                    if progress:
                        print(f"[tune] {task} {key} lr {lr:g} seed {seed}: val/mean {row['val_ratio']:.4g} "
                              f"({row['epochs']} epochs, {time.perf_counter() - start:.0f} s)", flush=True)
    picked = {t: {k: (pick_lr([r for r in results["tuning"] if r["task"] == t and r["model"] == k], key="val_ratio")
                      if config.tuned else (config.lr_grid[0] if config.lr_grid else config.lr))
                  for k in config.models} for t in config.tasks}
    results["picked_lr"] = picked
    total = len(config.seed_list) * len(config.tasks) * len(config.models)
    for seed in config.seed_list:
        for task in config.tasks:
            data = _data(config, task, seed)
            results["trivial"] += _trivial_rows(task, seed, data[0], data[2], config.normalize)
            for key in config.models:
                run = run_one(config, task, key, seed, data, lr=picked[task][key])
                results["runs"].append(run)
                save()
                if progress:
                    print(f"[{len(results['runs'])}/{total}] {task} {key} seed {seed}: test MSE "
                          f"{run['test_mse']:.4g} (best epoch {run['best_epoch']}/{run['epochs']}, "
                          f"{time.perf_counter() - start:.0f} s)", flush=True)
    save()
    return results


# ----------------------------------------------------------------------------------------- report


def _label(key: str) -> str:
    return MODEL_VARIANTS[key][0] if key in MODEL_VARIANTS else TRIVIAL[key]


def _ci(iv: Interval) -> str:
    return f"{iv.estimate:.4g} [{iv.low:.4g}, {iv.high:.4g}]" if math.isfinite(iv.low) else f"{iv.estimate:.4g}"


def _pct(iv: Interval) -> str:
    if not math.isfinite(iv.low):
        return f"{iv.estimate:+.1%} (one seed)"
    return f"{iv.estimate:+.1%} [{iv.low:+.1%}, {iv.high:+.1%}]"


def _p(p: float) -> str:
    return "–" if math.isnan(p) else (f"{p:.2g}" if p >= 1e-4 else "<1e-4")


def _model_keys(results: Dict[str, Any], task: str) -> List[str]:
    ran = {r["model"] for r in results["runs"] + results["trivial"] if r["task"] == task}
    return [k for k in list(MODEL_VARIANTS) + list(TRIVIAL) if k in ran]


def summary_rows(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Per (task, model): params, test MSE mean [95% CI], paired improvement over the best trivial
    predictor (the one with the lowest mean test MSE on the task), epochs, gap bins."""
    rows = []
    every = results["runs"] + results["trivial"]
    for task in results["config"]["tasks"]:
        floor = best_trivial(results, task)
        ls = _by(results["trivial"], task, floor) if floor else {}
        for key in _model_keys(results, task):
            runs = sorted((r for r in every if r["task"] == task and r["model"] == key), key=lambda r: r["seed"])
            mse = [r["test_mse"] for r in runs]
            seeds = [r["seed"] for r in runs if r["seed"] in ls]
            vs_ls = None
            if seeds and key != floor:
                vs_ls = relative_improvement([_by(runs, task, key)[s] for s in seeds], [ls[s] for s in seeds])
            bins = [mean_std([r["gap_bin_mse"][j] for r in runs])[0] for j in range(len(GAP_BINS) + 1)]
            rates = [r["decay_rate"]["median"] for r in runs if r.get("decay_rate")]
            trained = "best_epoch" in runs[0]
            over = lambda name: mean_std([r[name] for r in runs])[0] if trained else None  # noqa: E731
            rows.append({"task": task, "model": key, "label": _label(key), "n": len(runs),
                         "params": runs[0]["params"], "hidden": runs[0].get("hidden_size"),
                         "test": t_interval(mse), "vs_ls": vs_ls, "bins": bins,
                         "best_epoch": over("best_epoch"), "epochs": over("epochs"), "epoch_s": over("mean_epoch_s"),
                         "capped": sum(1 for r in runs if r.get("epochs") and not r["stopped_early"]),
                         "decay_median": mean_std(rates)[0] if rates else None})
    return rows


def best_trivial(results: Dict[str, Any], task: str) -> Optional[str]:
    """The trivial predictor with the lowest mean test MSE on ``task`` (None if none ran)."""
    means = {k: mean_std(list(_by(results["trivial"], task, k).values()))[0]
             for k in TRIVIAL if _by(results["trivial"], task, k)}
    return min(means, key=means.get) if means else None


def _results_table(results: Dict[str, Any]) -> str:
    picked = results.get("picked_lr") or {}
    lines = ["| task | model | d | params | lr | test MSE, mean [95% CI] | test / mean-predictor (median) | "
             "vs best trivial: lower MSE by [95% CI] | best epoch / epochs run | runs at the epoch cap | s per epoch |",
             "|---|---|---:|---:|---:|---|---:|---|---|---:|---:|"]
    for r in summary_rows(results):
        trained = r["best_epoch"] is not None
        epochs = f"{r['best_epoch']:.1f} / {r['epochs']:.1f}" if trained else "–"
        speed = f"{r['epoch_s']:.3g}" if trained else "–"
        capped = f"{r['capped']}/{r['n']}" if trained else "–"
        ratio = ratio_to_mean(results, r["task"], r["model"]) if trained else None
        ratio_text = "–" if ratio is None else f"{ratio:.3g}" + ("" if C.learned(ratio) else " *not learned*")
        lr = picked.get(r["task"], {}).get(r["model"])
        lines.append(f"| {r['task']} | {r['label']} | {r['hidden'] or '–'} | {r['params']:,} | "
                     f"{'–' if lr is None else f'{lr:g}'} | {_ci(r['test'])} | {ratio_text} | "
                     f"{_pct(r['vs_ls']) if r['vs_ls'] else '–'} | {epochs} | {capped} | {speed} |")
    return "\n".join(lines)


def _protocol(cfg: Dict[str, Any]) -> str:
    grid = cfg.get("lr_grid") or []
    tune = (f"Adam learning rate picked per (task, model) from {', '.join(f'{x:g}' for x in grid)} by the best "
            f"validation MSE on {cfg['tune_seeds']} tuning seed(s) ({cfg['tune_first_seed']}..; disjoint from the "
            "test seeds)" if len(grid) > 1 else f"Adam lr {(grid or [cfg['lr']])[0]:g} for every model (not tuned)")
    clip = f"gradient clipping at {cfg['clip_norm']:g}" if cfg.get("clip_norm") else "no clipping"
    scale = ("value column and target standardised with the training split's statistics" if cfg.get("normalize")
             else "raw scale")
    return (f"{scale}; {tune}; {clip}; MSE, batch {cfg['batch_size']}, at most {cfg['max_epochs']} epochs, early "
            f"stopping with patience {cfg['patience']} on the validation MSE, best-validation weights restored; "
            "the same for every model")


def _tuning_table(results: Dict[str, Any]) -> str:
    trials = results.get("tuning") or []
    if not trials:
        return "(no tuning in this run)"
    picked = results.get("picked_lr") or {}
    lrs = sorted({r["lr"] for r in trials})
    lines = ["Best validation MSE / predict-the-mean of each trial, median [min, max] over the tuning seeds; "
             "**bold**: picked.", "", "| task | model | " + " | ".join(f"lr {x:g}" for x in lrs) + " |",
             "|---|---|" + "---:|" * len(lrs)]
    for task in results["config"]["tasks"]:
        for key in results["config"]["models"]:
            curve = {c["lr"]: c for c in lr_curve([r for r in trials if r["task"] == task and r["model"] == key],
                                                  key="val_ratio")}
            if not curve:
                continue
            cells = []
            for x in lrs:
                c = curve.get(x)
                text = "–" if c is None else (f"{c['median']:.3g}" if c["n"] == 1 else
                                              f"{c['median']:.3g} [{c['low']:.3g}, {c['high']:.3g}]")
                cells.append(f"**{text}**" if picked.get(task, {}).get(key) == x else text)
            lines.append(f"| {task} | {_label(key)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _comparison_table(comps: List[Dict[str, Any]]) -> str:
    lines = ["| task | A | B | seeds | A's MSE lower than B's by [95% CI] | p | p (Holm) | verdict |",
             "|---|---|---|---:|---|---:|---:|---|"]
    for c in comps:
        lines.append(f"| {c['task']} | {_label(c['a'])} | {_label(c['b'])} | {c['n']} | {_pct(c['improvement'])} | "
                     f"{_p(c['p'])} | {_p(c['p_holm']) if c['in_family'] else 'not in family'} | **{c['verdict']}** |")
    return "\n".join(lines)


def _gap_table(results: Dict[str, Any]) -> str:
    names = ["Δt_query < 0.5", "0.5 ≤ Δt_query < 1.5", "Δt_query ≥ 1.5"]
    lines = ["| task | model | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
    for r in summary_rows(results):
        lines.append(f"| {r['task']} | {r['label']} | " + " | ".join(f"{b:.4g}" for b in r["bins"]) + " |")
    return "\n".join(lines)


def initial_decay_rates(hidden_size: int) -> Dict[str, float]:
    """The summary of ``softplus(λ)`` of a fresh time-decay cell (its initialisation uses no RNG)."""
    from ..weights import init_decay_rate_

    lam = torch.empty(hidden_size, dtype=torch.float64)
    init_decay_rate_(lam)
    return _rate_summary(F.softplus(lam).tolist())


def _decay_text(results: Dict[str, Any]) -> str:
    init = initial_decay_rates(results["config"]["hidden_size"])
    out = [f"At initialisation the rates spread geometrically: median {init['median']:.3g}, range "
           f"[{init['min']:.3g}, {init['max']:.3g}] per unit of mean gap.", ""]
    for r in summary_rows(results):
        if r["decay_median"] is not None:
            runs = [x for x in results["runs"] if x["task"] == r["task"] and x["model"] == r["model"]]
            lo = min(x["decay_rate"]["min"] for x in runs)
            hi = max(x["decay_rate"]["max"] for x in runs)
            out.append(f"- {r['task']}, {r['label']}: median softplus(λ) {r['decay_median']:.3g} per unit of mean "
                       f"gap (mean over seeds; all units of all seeds within [{lo:.3g}, {hi:.3g}]): the state "
                       f"keeps exp(-{r['decay_median']:.3g}) = {math.exp(-r['decay_median']):.3g} of itself over "
                       "a mean gap.")
    return "\n".join(out) if len(out) > 2 else "(no time-decay model in this run)"


def _verdict_text(results: Dict[str, Any], comps: List[Dict[str, Any]]) -> str:
    lines = []
    for task in results["config"]["tasks"]:
        rows = {r["model"]: r for r in summary_rows(results) if r["task"] == task}
        trained = [k for k in MODEL_VARIANTS if k in rows]
        if not trained:
            continue
        best = min(trained, key=lambda k: rows[k]["test"].estimate)
        floor = best_trivial(results, task)
        text = [f"- **{task}**: lowest mean test MSE: {rows[best]['label']} ({rows[best]['test'].estimate:.4g})"]
        if floor is not None:
            beats = [rows[k]["label"] for k in trained if rows[k]["vs_ls"] and rows[k]["vs_ls"].low > 0]
            text.append(f"best trivial predictor: {_label(floor)} ({rows[floor]['test'].estimate:.4g}); models "
                        "whose improvement over it has a 95% CI entirely above 0: "
                        + (", ".join(beats) if beats else "none"))
        short = min((k for k in TRIVIAL if k in rows), key=lambda k: rows[k]["bins"][0], default=None)
        if short is not None:
            worse = [rows[k]["label"] for k in trained if rows[k]["bins"][0] > rows[short]["bins"][0]]
            text.append(f"at query gaps < {GAP_BINS[0]:g}, {_label(short)} ({rows[short]['bins'][0]:.3g}) has a lower "
                        f"mean MSE than {len(worse)} of the {len(trained)} trained models")
        capped = sum(rows[k]["capped"] for k in trained)
        if capped:
            text.append(f"{capped} of {sum(rows[k]['n'] for k in trained)} trained runs ended at the "
                        f"{results['config']['max_epochs']}-epoch cap (patience not exhausted), so this compares "
                        "the models at that training budget")
        for c in comps:
            if c["task"] == task and (c["b"] == "diru_feature" or c["a"] in ("diru_decay", "gru_decay")):
                text.append(f"{_label(c['a'])} vs {_label(c['b'])}: {_pct(c['improvement'])}, Holm p "
                            f"{_p(c['p_holm'])}: {c['verdict']}")
        lines.append("; ".join(text) + ".")
    return "\n".join(lines)


TITLE = "Irregularly sampled series: DIRU's Δt feature vs time decay vs LSTM/GRU"


def markdown_report(results: Dict[str, Any], title: str = TITLE) -> str:
    cfg, meta = results["config"], results["meta"]
    comps = comparisons(results)
    sizes = results.get("hidden_sizes", {})
    backends = sorted({r["backend"] for r in results["runs"] if r["model"].startswith("diru")})
    seeds = sorted({r["seed"] for r in results["runs"]})
    parts = [
        f"# {title}", "",
        f"Command: `{meta.get('command') or '(library call)'}`", "",
        *([f"Note: {meta['note']}", ""] if meta.get("note") else []),
        f"- Ran on: cpu, {meta.get('device')} with {meta.get('cpu_count')} cores (shared), {meta.get('threads')} "
        f"torch thread(s); torch {meta.get('torch')}, Python {meta.get('python')}, diru_fast {meta.get('diru_fast')} "
        f"(commit {meta.get('commit') or '?'}), {meta.get('timestamp')}; "
        f"wall time {meta.get('wall_s', math.nan):.0f} s; "
        f"DIRU backend: {', '.join(backends) or '–'}.",
        f"- Data per seed (new data for every seed): {cfg['n_train']} training / {cfg['n_val']} validation / "
        f"{cfg['n_test']} test sequences of {cfg['seq_len']} observations + 1 query step; seeds "
        f"{', '.join(map(str, seeds))} ({len(seeds)}).",
        f"- Models: DIRU at hidden size {cfg['hidden_size']} with {cfg['num_compartments']} compartments; LSTM "
        f"d={sizes.get('lstm', '?')} and GRU d={sizes.get('gru', '?')} matched to the parameter count of "
        "DIRU with the Δt feature (the counts are in the table).",
        "- Training: " + _protocol(cfg) + ".",
        "",
        "## The task", "",
        "Observation times have i.i.d. exponential gaps: in units of the mean gap, g_0 = 0, g_1..g_T ~ Exp(1), "
        "τ_i = g_0 + ... + g_i. The model sees T observations v_i = s(τ_i) (i < T) and a final query step at "
        "τ_T, g_T after the last observation, and predicts y = s(τ_T), the next observation. Inputs per step: "
        "(value, observed, Δt) with value = v_i (0 on the query step), observed = 1 (0 on the query step), "
        "Δt = g_i; the time-decay model gets Δt as `dt=` instead of as a feature.",
        "- sine: the sine task's signal (three sines, frequencies U(0.5,2), U(3,5), U(7,10)) at time "
        "t = h·τ, h = 4π/59 (its regular grid step at T=50), each observation plus N(0, 0.1²) noise: the "
        "best possible MSE is 0.01 (the target's own noise).",
        f"- lorenz: x/10 of the Lorenz system (σ=10, ρ=28, β=8/3, start 5·N(0,1)³), RK4 between observations "
        f"(substeps ≤ {LORENZ_MAX_SUBSTEP}), mean gap {LORENZ_TIME_UNIT} time units; no noise.",
        f"- Trivial predictors: training mean; last observed value; least squares (fitted on the training "
        f"split) on the last {LS_WINDOW} values, the last {LS_WINDOW} gaps (query gap included), each value "
        "times the query gap, and a constant.",
        "",
        "## The comparison rule (fixed before the runs)", "",
        "- Primary metric: **test MSE** on the held-out test split, of the weights from the epoch with the "
        "lowest validation MSE (early stopping on validation)"
        + (", in standardised units (raw units in results.csv)." if cfg.get("normalize") else ", raw units."),
        f"- **Learned:** a model has learned a task when its median test MSE over seeds is at most "
        f"{C.LEARNED_RATIO:g}× that of predicting the training mean. A comparison is tested only where both "
        "models learned; where neither did the verdict is **not learned**, where one did **only <model> learned**.",
        "- Pairs compared per task (A vs B): " + "; ".join(f"{_label(a)} vs {_label(b)}" for a, b in COMPARISONS)
        + ". Runs paired by seed (same data, shuffling order and initialisation seed).",
        "- A's improvement = 1 − geometric mean over seeds of MSE_A / MSE_B, 95% Student-t CI on the per-seed log "
        "ratios (unadjusted); p from the two-sided paired t-test on the same log ratios; **Holm correction over "
        f"the {sum(c['in_family'] for c in comps)} comparisons in which both models learned** (family-wise α = "
        "0.05). Verdict \"A better\" / \"B better\" if the Holm-adjusted p < 0.05, else \"no significant "
        "difference\".",
        "",
        "## Results", "",
        "Test MSE over seeds, mean with its 95% Student-t CI; \"vs best trivial\": the paired improvement over "
        "the task's best trivial predictor (lowest mean test MSE among them; positive: lower MSE than it), "
        "1 − geometric-mean ratio with its 95% CI. " + "; ".join(
            f"Best trivial predictor on {t}: {_label(best_trivial(results, t))}" for t in cfg["tasks"]
            if best_trivial(results, t)) + ".", "",
        _results_table(results), "",
        "## Tuning: validation MSE / predict-the-mean against learning rate", "",
        _tuning_table(results), "",
        "## Comparisons (Holm-corrected)", "",
        _comparison_table(comps), "",
        "## Verdict", "",
        _verdict_text(results, comps), "",
        "## Test MSE by query gap", "",
        "Mean over seeds of the test MSE within bins of the query gap g_T (units of the mean gap; under Exp(1) "
        "about 39%, 38% and 22% of the samples).", "",
        _gap_table(results), "",
        "## Learned decay rates", "",
        _decay_text(results), "",
    ]
    return "\n".join(parts) + "\n"


def write_plot(results: Dict[str, Any], path: Path) -> Path:
    """Per task: test MSE (mean, 95% CI) of every model and trivial predictor (log scale), and the MSE by query gap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results["config"]["tasks"])
    rows = summary_rows(results)
    fig, axes = plt.subplots(2, len(tasks), figsize=(6.5 * len(tasks), 8), squeeze=False)
    for col, task in enumerate(tasks):
        mine = [r for r in rows if r["task"] == task]
        top, bottom = axes[0][col], axes[1][col]
        est = [r["test"].estimate for r in mine]
        err = [[0 if not math.isfinite(r["test"].low) else r["test"].estimate - r["test"].low for r in mine],
               [0 if not math.isfinite(r["test"].high) else r["test"].high - r["test"].estimate for r in mine]]
        colors = ["tab:red" if r["model"].startswith("diru") else "tab:blue" if r["model"] in MODEL_VARIANTS
                  else "0.6" for r in mine]
        top.barh(range(len(mine)), est, xerr=err, color=colors, capsize=3)
        top.set_yticks(range(len(mine)), [r["label"] for r in mine], fontsize=8)
        top.invert_yaxis()
        top.set_xscale("log")
        top.set_xlabel("test MSE (mean, 95% CI over seeds)")
        top.set_title(f"{task}: irregular sampling, next observation")
        top.grid(alpha=0.3, axis="x")
        for r in mine:
            bottom.plot(range(len(r["bins"])), r["bins"], marker="o", label=r["label"],
                        ls="-" if r["model"] in MODEL_VARIANTS else ":")
        bottom.set_xticks(range(len(GAP_BINS) + 1), ["< 0.5", "0.5..1.5", ">= 1.5"])
        bottom.set_xlabel("query gap (units of the mean gap)")
        bottom.set_ylabel("test MSE (mean over seeds)")
        bottom.set_yscale("log")
        bottom.grid(alpha=0.3)
        bottom.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


# -------------------------------------------------------------------------------------------- CLI

HELP = "irregularly sampled series (exponential gaps): DIRU's Δt feature vs time decay vs LSTM/GRU, over seeds"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .._subcommand import backend_name, non_negative_int, positive_float, positive_int, remember_parser

    base = IrregularConfig()
    remember_parser(p)
    p.add_argument("--out", type=Path, default=Path("diru_irregular"), help="output directory")
    p.add_argument("--tasks", nargs="+", choices=IRREGULAR_TASKS, default=list(base.tasks), metavar="TASK",
                   help=f"signals: {', '.join(IRREGULAR_TASKS)}")
    p.add_argument("--models", nargs="+", choices=list(MODEL_VARIANTS), default=list(base.models), metavar="MODEL",
                   help=f"trained models: {', '.join(MODEL_VARIANTS)} (the trivial predictors always run)")
    p.add_argument("--seeds", type=positive_int, default=base.seeds, help="number of seeds")
    p.add_argument("--first-seed", type=non_negative_int, default=base.first_seed, help="the first seed")
    p.add_argument("--n-train", type=positive_int, default=base.n_train, help="training sequences")
    p.add_argument("--n-val", type=positive_int, default=base.n_val, help="validation sequences (early stopping)")
    p.add_argument("--n-test", type=positive_int, default=base.n_test, help="test sequences (the reported MSE)")
    p.add_argument("--seq-len", type=positive_int, default=base.seq_len,
                   help="observations per sequence (+1 query step)")
    p.add_argument("--hidden", type=positive_int, default=base.hidden_size, help="DIRU's hidden size")
    p.add_argument("--compartments", type=positive_int, default=base.num_compartments, help="DIRU compartments k")
    p.add_argument("--batch-size", type=positive_int, default=base.batch_size, help="mini-batch size")
    p.add_argument("--lr", type=positive_float, default=base.lr, help="Adam learning rate without a grid")
    p.add_argument("--lr-grid", type=positive_float, nargs="*", default=list(base.lr_grid), metavar="LR",
                   help="learning rates tried per (task, model) on the tuning seeds (none or one: no tuning)")
    p.add_argument("--tune-seeds", type=positive_int, default=base.tune_seeds, help="tuning seeds per learning rate")
    p.add_argument("--tune-first-seed", type=non_negative_int, default=base.tune_first_seed,
                   help="the first tuning seed (disjoint from the test seeds)")
    p.add_argument("--clip", type=float, default=base.clip_norm, help="gradient clipping norm (0: off)")
    p.add_argument("--raw-scale", action="store_true",
                   help="no standardisation (otherwise the value column and the target are standardised, training statistics)")
    p.add_argument("--max-epochs", type=positive_int, default=base.max_epochs, help="at most this many epochs")
    p.add_argument("--patience", type=positive_int, default=base.patience,
                   help="early stopping: stop after this many epochs without a better validation MSE")
    p.add_argument("--backend", type=backend_name, default=base.backend, help="DIRU backend (runs on the CPU)")
    p.add_argument("--threads", type=non_negative_int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--quiet", action="store_true", help="no line per run")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: rewrite report.md (and the PNG) from --out's results.json")


def main(args: argparse.Namespace) -> int:
    from .._subcommand import require, set_threads, usage_error

    if not args.no_plots:
        require(["matplotlib"], "`irregular` with its plot (see --no-plots)")
    if args.report_only:
        if not (args.out / RESULTS_JSON).is_file():
            usage_error(args, f"--report-only: no {args.out / RESULTS_JSON}")
        return _report(json.loads((args.out / RESULTS_JSON).read_text(encoding="utf-8")), args)
    try:
        config = IrregularConfig(tasks=tuple(args.tasks), models=tuple(args.models), seeds=args.seeds,
                                 first_seed=args.first_seed, n_train=args.n_train, n_val=args.n_val,
                                 n_test=args.n_test, seq_len=args.seq_len, hidden_size=args.hidden,
                                 num_compartments=args.compartments, batch_size=args.batch_size, lr=args.lr,
                                 max_epochs=args.max_epochs, patience=args.patience, backend=args.backend,
                                 normalize=not args.raw_scale, lr_grid=tuple(args.lr_grid), tune_seeds=args.tune_seeds,
                                 tune_first_seed=args.tune_first_seed, clip_norm=args.clip)
    except ValueError as exc:
        usage_error(args, str(exc))
    set_threads(args.threads)
    results = run_irregular(config, args.out, command=getattr(args, "command_line", ""), progress=not args.quiet)
    return _report(results, args)


def _report(results: Dict[str, Any], args: argparse.Namespace) -> int:
    text = markdown_report(results)
    atomic_write_text(args.out / REPORT_MD, text)
    written = [] if args.no_plots else [write_plot(results, args.out / PLOT_PNG)]
    print(text[text.index("## Results"):text.index("## Test MSE by query gap")].rstrip())
    print(f"\nwrote {args.out / REPORT_MD}, {args.out / RESULTS_JSON}, {args.out / RESULTS_CSV}"
          + "".join(f", {p}" for p in written))
    return 0
