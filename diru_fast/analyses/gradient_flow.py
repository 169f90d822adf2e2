"""Gradient flow: ||∂h_T/∂s_t|| against the lag T - t, for DIRU and recurrent baselines and controls.
(the prototype: "Gradient Flow: ... Better than vanilla RNN, comparable to LSTM")

Measurement
-----------
Every model is written as one step on a flat state, ``s_t = step(x_t, s_{t-1})`` (:func:`model_step`):
DIRU, GRU and the RNN have ``s = h``; the LSTM has ``s = [h; c]``. Along a trajectory (h_0 = 0) we
differentiate the *output state* h_T with respect to the *whole state* s_t,

    G_t = ∂h_T/∂s_t = G_{t+1} · ∂s_{t+1}/∂s_t,     G_T = [I_d  0],

so for the LSTM the gradient reaches both h_t and the cell state c_t (a loss at step T sees exactly
this). Norm: the spectral norm (largest singular value) of G_t, per sequence; the curve is the mean
over sequences of log10 ||G_t|| at each lag T - t (a geometric mean). All of it in float64 (no
underflow), with the per-step Jacobians from ``torch.func.jacrev``.

Decay rate: the least-squares slope of that curve against the lag over lags 1..T, in decades per
step (-0.1: the gradient shrinks 10x every 10 steps; 0: no decay; > 0: it grows).

Models (all at state size d unless named otherwise): DIRU; the LSTM at PyTorch's default
initialisation (forget-gate bias ~0) and with forget-gate bias 1 (``lstm_fb1``, the usual remedy);
the GRU; the tanh RNN at the same d and resized to DIRU's parameter count (``rnn_matched``).

Training (the study's protocol, :mod:`diru_fast.experiments.tuning`): the standardised memory task
with train / validation / test splits (:func:`~.common.standardised_memory_splits`: statistics of the
training split only). Every model's Adam learning rate is picked from ``lr_grid`` on ``tune_seeds``
tuning seeds (``tune_first_seed`` on, disjoint from the test seeds) by the lowest median best
validation MSE / predict-the-mean; every run clips its gradient (global norm ``clip``), stops after
``patience`` epochs without a better validation loss (``epochs`` is the cap; runs that reach it are
reported) and keeps the best validation epoch's weights, which are the "trained" network measured.

Verdict rules (:func:`summarize`), stated before the numbers, each on per-seed slopes s, runs paired
by seed (same data, same initialisation seed):

- *Learned* (:mod:`diru_fast.experiments.claims`): a model has learned the task when the median over
  test seeds of its test MSE / the predict-the-mean test MSE is at most 0.3.
- "better than a vanilla RNN", against ``rnn`` and ``rnn_matched``: the paired difference
  |s_RNN| - |s_DIRU| (how much less DIRU's gradient vanishes or explodes per step); its decisive
  test is the t-test of mean 0: **holds** if significantly above 0, **does not hold** if
  significantly below, else **inconclusive**.
- "comparable to LSTM", against ``lstm`` and ``lstm_fb1``: the paired difference s_DIRU - s_LSTM;
  **holds** if its mean lies significantly inside ±0.02 decades per step (at most a factor 10 over 50
  steps: both one-sided tests against the edges), **does not hold** if significantly outside (the
  test against the nearer edge), else **inconclusive**.
- *At initialisation* (no training, every test seed's initialisation): all four comparisons are tested.
  *After training*: a comparison is tested only when both models learned the task; otherwise its
  verdict is "not learned" (neither did) or "only <model> learned", and it leaves the family.

The family is every tested comparison (at initialisation and after training); significance is
Holm-adjusted over it at level 0.05 (:func:`~.common.decide`). A claim's verdict per phase is the
common verdict of its two comparisons, else **inconclusive** when both were tested, else "mixed"
(the report lists each).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.func import jacrev

from .. import reference
from ..baselines import GRUModel, LSTMModel, RNNModel
from ..experiments.claims import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, pair_verdict
from ..experiments.models import count_params, diru_params
from ..experiments.options import DIRUOptions
from ..experiments.stats import t_interval
from ..experiments.study import derive_seed
from ..experiments.trivial import trivial_baselines
from ..experiments.tuning import DEFAULT_LR_GRID, DEFAULT_PATIENCE, SeedPlan, lr_curve
from ..modules import DIRU as FastDIRU
from .common import (ANALYSIS_MODELS, CLIP_NORM, Timer, build, decide, learned_summary, matched_rnn_hidden,
                     memory_delay, paired_test, prototype_copy, scored_fit, standardised_memory_splits, tune_trials)
from .report_format import MODEL_LABELS

__all__ = ["ModelStep", "model_step", "run_states", "jacobian_norms", "log_norm_curve", "decay_rate",
           "GradientFlowConfig", "run_gradient_flow", "verdicts", "band_test", "COMPARABLE_BAND", "CLAIM",
           "RNN_CONTROLS", "LSTM_CONTROLS", "PHASES", "MIXED", "memory_splits", "tune_models", "hidden_size_of"]

CLAIM = "\"Gradient Flow: ... Better than vanilla RNN, comparable to LSTM\" (prototype README, Theoretical Highlights)"
COMPARABLE_BAND = 0.02  # decades per step: "comparable" = slopes within this of each other
RNN_CONTROLS = ("rnn", "rnn_matched")  # the vanilla RNNs DIRU is compared with
LSTM_CONTROLS = ("lstm", "lstm_fb1")  # the LSTMs DIRU is compared with
PHASES = ("init", "trained")
MIXED = "mixed"  # a claim's two comparisons in one phase ended differently and not both were tested

Step = Callable[[Tensor, Tensor], Tensor]  # (x_t [B, n], s_{t-1} [B, S]) -> s_t [B, S]


@dataclass
class ModelStep:
    step: Step
    state_size: int  # S
    hidden_size: int  # d: h = s[:, :d]
    head: Callable[[Tensor], Tensor]  # h_T -> the model's output


def _one_layer(rnn: nn.RNNBase, what: str) -> None:
    if rnn.num_layers != 1 or rnn.bidirectional or not rnn.bias:
        raise ValueError(f"gradient flow is measured on one-layer, one-direction {what}s with biases")


def model_step(model: nn.Module) -> ModelStep:
    """The model's recurrence as a step on a flat state (see the module docstring), plain math on its
    own parameters (differentiable, vmap-able). DIRU: the prototype's cell
    (:class:`diru_fast.reference.DIRUCell`); a fast DIRU is stepped by its prototype-structured copy
    (:func:`~.common.prototype_copy`, same weights)."""
    if isinstance(model, (FastDIRU, reference.DIRU)):
        if model.num_layers != 1:
            raise ValueError("gradient flow is measured on one-layer DIRUs")
        cell = prototype_copy(model).cells[0].eval()  # eval: no compartment dropout in the Jacobians
        return ModelStep(cell, cell.hidden_size, cell.hidden_size, model.fc_out)
    if isinstance(model, LSTMModel):
        lstm = model.lstm
        _one_layer(lstm, "LSTM")
        d = lstm.hidden_size

        def lstm_step(x: Tensor, s: Tensor) -> Tensor:
            h, c = s[:, :d], s[:, d:]
            gates = x @ lstm.weight_ih_l0.T + lstm.bias_ih_l0 + h @ lstm.weight_hh_l0.T + lstm.bias_hh_l0
            i, f, g, o = gates.chunk(4, -1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.cat([torch.sigmoid(o) * torch.tanh(c), c], -1)

        return ModelStep(lstm_step, 2 * d, d, model.fc_out)
    if isinstance(model, GRUModel):
        gru = model.gru
        _one_layer(gru, "GRU")

        def gru_step(x: Tensor, h: Tensor) -> Tensor:
            r_i, z_i, n_i = (x @ gru.weight_ih_l0.T + gru.bias_ih_l0).chunk(3, -1)
            r_h, z_h, n_h = (h @ gru.weight_hh_l0.T + gru.bias_hh_l0).chunk(3, -1)
            r, z = torch.sigmoid(r_i + r_h), torch.sigmoid(z_i + z_h)
            return (1 - z) * torch.tanh(n_i + r * n_h) + z * h

        return ModelStep(gru_step, gru.hidden_size, gru.hidden_size, model.fc_out)
    if isinstance(model, RNNModel):
        rnn = model.rnn
        _one_layer(rnn, "RNN")
        if rnn.nonlinearity != "tanh":
            raise ValueError("the vanilla RNN here is the tanh one")

        def rnn_step(x: Tensor, h: Tensor) -> Tensor:
            return torch.tanh(x @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + h @ rnn.weight_hh_l0.T + rnn.bias_hh_l0)

        return ModelStep(rnn_step, rnn.hidden_size, rnn.hidden_size, model.fc_out)
    raise TypeError(f"no step function for {type(model).__name__}")


@torch.no_grad()
def run_states(step: Step, x: Tensor, s0: Tensor) -> List[Tensor]:
    """``[s_0, s_1, ..., s_T]`` along ``x [B, T, n]``."""
    states = [s0]
    for t in range(x.shape[1]):
        states.append(step(x[:, t], states[-1]))
    return states


def jacobian_norms(step: Step, x: Tensor, s0: Tensor, out_dim: Optional[int] = None, ord="2") -> Tensor:
    """``norms [B, T+1]``: ``norms[b, t] = ||∂h_T/∂s_t||`` for sequence b, h = s[:, :out_dim].

    ``s_t`` is the state after t steps (``s_0 = s0``), so ``t = T`` gives ||[I 0]|| and the lag is
    ``T - t``. ``ord``: "2" (spectral norm) or "fro" (Frobenius).
    """
    if ord not in ("2", "fro"):
        raise ValueError(f"ord must be '2' or 'fro', got {ord!r}")
    batch, steps, _ = x.shape
    size = s0.shape[1]
    out_dim = size if out_dim is None else out_dim
    states = run_states(step, x, s0)
    matrix_norm = (lambda g: torch.linalg.matrix_norm(g, ord=2)) if ord == "2" else \
        (lambda g: torch.linalg.matrix_norm(g, ord="fro"))
    g = torch.eye(out_dim, size, dtype=s0.dtype, device=s0.device).expand(batch, out_dim, size)  # ∂h_T/∂s_T
    norms = [matrix_norm(g)]
    for t in reversed(range(steps)):
        x_t = x[:, t]
        jac = jacrev(lambda s: step(x_t, s).sum(0))(states[t])  # [S, B, S]: ∂s_{t+1}[b, i]/∂s_t[b, j]
        g = g @ jac.permute(1, 0, 2)  # ∂h_T/∂s_t
        norms.append(matrix_norm(g))
    return torch.stack(norms[::-1], 1)  # [B, T+1], index t


def log_norm_curve(norms: Tensor) -> Dict[str, List[float]]:
    """Per lag 0..T: the mean and the 10/50/90% quantiles over sequences of log10 of the norm."""
    logs = torch.log10(norms.double().clamp_min(1e-300)).flip(1)  # [B, T+1], index = lag
    q = torch.quantile(logs, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64), dim=0)
    return {"mean": logs.mean(0).tolist(), "q10": q[0].tolist(), "q50": q[1].tolist(), "q90": q[2].tolist()}


def decay_rate(mean_log10: Sequence[float], first_lag: int = 1) -> float:
    """Least-squares slope of log10 norm against the lag over lags ``first_lag``..T (decades per step)."""
    ys = list(mean_log10)[first_lag:]
    if len(ys) < 2:
        raise ValueError("decay_rate needs at least two lags")
    xs = list(range(first_lag, first_lag + len(ys)))
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / sum((a - mx) ** 2 for a in xs)


# ------------------------------------------------------------------------------------ the study


@dataclass
class GradientFlowConfig(SeedPlan):
    """Settings of :func:`run_gradient_flow`: the standardised memory task (see :mod:`.common`) and the
    study's protocol (module docstring): ``lr_grid`` tried per model on the tuning seeds, early stopping
    after ``patience`` epochs (``epochs``: the cap), gradient clipping at ``clip``."""

    models: Tuple[str, ...] = ANALYSIS_MODELS
    seeds: int = 10
    first_seed: int = 0
    n_train: int = 800
    n_val: int = 200
    n_test: int = 200
    seq_len: int = 30
    hidden_size: int = 64  # every model's state size d (LSTM: h and c of size d each); rnn_matched: resized
    num_compartments: int = 4
    epochs: int = 100  # the cap (a GRU that learns may break through after 50 epochs)
    patience: int = DEFAULT_PATIENCE
    batch_size: int = 32
    lr_grid: Tuple[float, ...] = DEFAULT_LR_GRID  # one value: no tuning
    tune_seeds: int = 3  # the median of three: one unstable trial does not pick a rate
    tune_first_seed: int = 1000
    clip: float = CLIP_NORM  # gradient clipping (global L2 norm), every model
    n_probe: int = 64  # validation sequences the Jacobians are averaged over
    norm: str = "2"  # "2" (spectral) or "fro"
    backend: str = "auto"
    options: DIRUOptions = DIRUOptions()  # DIRU's cell options (the other models ignore them)

    def __post_init__(self):
        self.models, self.lr_grid = tuple(self.models), tuple(float(v) for v in self.lr_grid)
        self.options.check(self.hidden_size, self.num_compartments)
        unknown = [m for m in self.models if m not in ANALYSIS_MODELS]
        if unknown or not self.models:
            raise ValueError(f"models must be among {ANALYSIS_MODELS}, got {list(self.models)}")
        if self.norm not in ("2", "fro"):
            raise ValueError(f"norm must be '2' or 'fro', got {self.norm!r}")
        for name in ("seeds", "n_train", "n_val", "n_test", "seq_len", "epochs", "n_probe", "hidden_size",
                     "patience", "tune_seeds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.lr_grid:
            raise ValueError("lr_grid needs at least one learning rate")
        self.check_seeds_apart()

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["models"], d["lr_grid"] = list(self.models), list(self.lr_grid)
        return d


def _curve(model: nn.Module, x: Tensor, norm: str) -> Dict[str, Any]:
    probe = copy.deepcopy(model).double()
    ms = model_step(probe)
    s0 = torch.zeros(x.shape[0], ms.state_size, dtype=torch.float64)
    curve = log_norm_curve(jacobian_norms(ms.step, x.double(), s0, ms.hidden_size, norm))
    curve["slope"] = decay_rate(curve["mean"])
    return curve


def hidden_size_of(kind: str, config: GradientFlowConfig) -> int:
    """d for every model but ``rnn_matched``: the tanh RNN closest to DIRU's parameter count."""
    if kind != "rnn_matched":
        return config.hidden_size
    return matched_rnn_hidden(diru_params(1, config.hidden_size, 1, config.num_compartments, config.options), 1, 1)


def memory_splits(config: GradientFlowConfig, seed: int):
    """(train, validation, test, trivial baselines) of one seed: the standardised memory task (training
    statistics only) and its trivial baselines (:mod:`~diru_fast.experiments.trivial`) scored on the test
    split in the same units."""
    train_set, val_set, test_set, _ = standardised_memory_splits(config.n_train, config.n_val, config.n_test,
                                                                 config.seq_len, seed)
    return train_set, val_set, test_set, trivial_baselines("memory", train_set, test_set)


def _build(config: GradientFlowConfig, kind: str, seed: int) -> nn.Module:
    torch.manual_seed(derive_seed("gradient-flow", seed, "init"))
    return build(kind, 1, hidden_size_of(kind, config), 1, num_compartments=config.num_compartments,
                 backend=config.backend, options=config.options)


def _train(config: GradientFlowConfig, model: nn.Module, splits, lr: float, seed: int, test: bool) -> Dict[str, Any]:
    train_set, val_set, test_set = splits[:3]
    return scored_fit(model, train_set, val_set, test_set if test else None, lr=lr, epochs=config.epochs,
                      patience=config.patience, shuffle_seed=derive_seed("gradient-flow", seed, "shuffle"),
                      batch_size=config.batch_size, clip=config.clip)


def tune_models(config: GradientFlowConfig, progress=None) -> Tuple[Dict[str, float], List[Dict[str, Any]]]:
    """Every model's picked learning rate (lowest median validation MSE / predict-the-mean over the
    tuning seeds) and every tuning trial (rows with ``model``, ``lr``, ``seed``, ``val_ratio``, ...)."""
    picked: Dict[str, float] = {}
    trials: List[Dict[str, Any]] = []
    cache: Dict[int, Any] = {}
    for kind in config.models:
        def trial(lr: float, seed: int) -> Dict[str, Any]:
            splits = cache.setdefault(seed, memory_splits(config, seed))
            with Timer() as timer:
                out = _train(config, _build(config, kind, seed), splits, lr, seed, test=False)
            if progress is not None:
                progress(f"tuning {kind} lr={lr:g} seed={seed}: val / mean {out['val_ratio']:.3g}, "
                         f"{out['epochs_run']} epochs{' (cap)' if out['hit_cap'] else ''}, {timer.seconds:.0f} s")
            return dict(out, seconds=timer.seconds)

        picked[kind], rows = tune_trials(trial, config.lr_grid, config.tune_seed_list)
        trials += [dict(r, model=kind) for r in rows]
    return picked, trials


def run_gradient_flow(config: GradientFlowConfig, progress=None) -> Dict[str, Any]:
    """Tune every model's learning rate; then for every test seed and model the gradient-norm curve at
    initialisation, training by the protocol, the test score and the curve of the trained network."""
    picked, trials = tune_models(config, progress)
    runs: List[Dict[str, Any]] = []
    baselines: List[Dict[str, Any]] = []
    for seed in config.seed_list:
        splits = memory_splits(config, seed)
        baselines += [dict(b, seed=seed) for b in splits[3]]
        probe = splits[1].x[: config.n_probe]  # validation sequences
        for kind in config.models:
            model = _build(config, kind, seed)
            with Timer() as timer:
                init = _curve(model, probe, config.norm)
                score = _train(config, model, splits, picked[kind], seed, test=True)
                trained = _curve(model, probe, config.norm)  # the best validation epoch's weights
            runs.append(dict(score, model=kind, seed=seed, hidden_size=hidden_size_of(kind, config),
                             params=count_params(model), init=init, trained=trained, seconds=timer.seconds))
            if progress is not None:
                progress(f"{kind} seed={seed} lr={picked[kind]:g}: slope {init['slope']:+.3f} -> "
                         f"{trained['slope']:+.3f} decades/step, test / mean {score['test_ratio']:.3g}, "
                         f"{score['epochs_run']} epochs{' (cap)' if score['hit_cap'] else ''}, {timer.seconds:.0f} s")
    return {"analysis": "gradient_flow", "config": config.to_dict(), "delay": memory_delay(config.seq_len),
            "picked_lr": picked, "tuning": trials, "baselines": baselines,
            "summary": summarize(runs, config.models, trials), "runs": runs}


def _slopes(runs, kind: str, phase: str) -> Dict[int, float]:
    return {r["seed"]: r[phase]["slope"] for r in runs if r["model"] == kind}


def _interval(values: List[float]) -> Optional[List[float]]:
    if len(values) < 2:
        return None
    iv = t_interval(values)
    return [iv.estimate, iv.low, iv.high, iv.n]


def _compare(claim: str, base: str, phase: str, d: Dict[int, float], other: Dict[int, float]) -> Dict[str, Any]:
    """The paired comparison of DIRU's slopes ``d`` with a control's (by seed), its decisive test."""
    seeds = sorted(set(d) & set(other))
    if claim == "better_than_rnn":
        test = paired_test([abs(other[s]) - abs(d[s]) for s in seeds])
        test["if_significant"] = HOLDS if test["mean"] > 0 else DOES_NOT_HOLD
    else:
        test = band_test([d[s] - other[s] for s in seeds], (-COMPARABLE_BAND, COMPARABLE_BAND))
    test.update(claim=claim, baseline=base, phase=phase)
    return test


def summarize(runs: List[Dict[str, Any]], models: Sequence[str],
              trials: Sequence[Dict[str, Any]] = ()) -> Dict[str, Any]:
    """Per model: the slopes per phase (mean with 95% CI), the learned rule over its test seeds and its
    validation-vs-learning-rate curve; the comparisons (module docstring): tested ones get a Holm-adjusted
    verdict over the family, untested ones (after training, not both learned) "not learned" / "only X
    learned"; and the verdict per claim and phase."""
    out: Dict[str, Any] = {"slopes": {}, "learned": {}, "lr_curve": {}, "tests": []}
    for kind in models:
        entry: Dict[str, Any] = {}
        for phase in PHASES:
            values = list(_slopes(runs, kind, phase).values())
            one = [values[0], math.nan, math.nan, 1] if values else [math.nan, math.nan, math.nan, 0]
            entry[phase] = _interval(values) or one  # [mean, low, high, n]
        out["slopes"][kind] = entry
        out["learned"][kind] = learned_summary([r["test_ratio"] for r in runs if r["model"] == kind])
        rows = [t for t in trials if t["model"] == kind]
        if rows:
            out["lr_curve"][kind] = lr_curve(rows, key="val_ratio")
    is_learned = {k: v["learned"] for k, v in out["learned"].items()}
    if "diru" in models:
        d = {phase: _slopes(runs, "diru", phase) for phase in PHASES}
        for phase in PHASES:
            for claim, controls in (("better_than_rnn", RNN_CONTROLS), ("comparable_to_lstm", LSTM_CONTROLS)):
                for base in controls:
                    other = _slopes(runs, base, phase)
                    if base not in models or not set(d[phase]) & set(other):
                        continue
                    test = _compare(claim, base, phase, d[phase], other)
                    if phase == "trained" and not (is_learned["diru"] and is_learned[base]):
                        test.update(tested=False, p=math.nan, verdict=pair_verdict(
                            is_learned["diru"], is_learned[base], "", "DIRU", MODEL_LABELS.get(base, base)))
                    else:
                        test["tested"] = True
                    out["tests"].append(test)
    out["verdicts"] = verdicts(out["tests"])
    return out


def band_test(values: Sequence[float], band: Tuple[float, float]) -> Dict[str, Any]:
    """The decisive test of "the mean lies within ``band``" for paired differences: inside the band,
    both one-sided tests against the edges (p = the larger two-sided p, the 95% interval inside the
    band exactly when p < 0.05) settle **holds**; outside, the test against the nearer edge settles
    **does not hold**. Returns the interval, p and ``if_significant``."""
    lo, hi = band
    at_lo, at_hi = paired_test(values, lo), paired_test(values, hi)
    mean = at_lo["mean"]
    out = {k: at_lo[k] for k in ("mean", "low", "high", "n", "df")}
    if lo < mean < hi:
        out.update(p=max(at_lo["p"], at_hi["p"]), if_significant=HOLDS)
    else:
        out.update(p=(at_lo if mean <= lo else at_hi)["p"], if_significant=DOES_NOT_HOLD)
    return out


def verdicts(tests: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Holm over the tested comparisons (``p_holm`` and ``verdict`` written into each; an untested one
    keeps its "not learned" / "only X learned" verdict), and per claim and phase the verdict of the
    module docstring: ``{"better_than_rnn": {"init": ..., "trained": ...}, "comparable_to_lstm": ...}``."""
    tested = [t for t in tests if t.get("tested", True)]
    for test, v in zip(tested, decide(tested)):
        test["verdict"] = v

    def overall(claim: str, phase: str) -> Optional[str]:
        mine = [t for t in tests if t["claim"] == claim and t["phase"] == phase]
        found = {t["verdict"] for t in mine}
        if not found:
            return None
        if len(found) == 1:
            return found.pop()
        return INCONCLUSIVE if all(t.get("tested", True) for t in mine) else MIXED

    return {**{claim: {phase: overall(claim, phase) for phase in PHASES}
               for claim in ("better_than_rnn", "comparable_to_lstm")},
            "band": COMPARABLE_BAND, "family_size": len(tested)}
