"""Do DIRU's compartments specialize to different frequencies? (the prototype: "Compartments learn to
specialize automatically; different compartments capture different frequencies")

Measurement
-----------
1. :func:`compartment_outputs`: the compartment outputs ``o_c(t) = tanh(a_c) * sigmoid(gate)`` of a
   DIRU over a batch of sequences, computed with the reference compartment modules (of a
   prototype-structured copy, :func:`~.common.prototype_copy`) along the state trajectory the
   model itself computes.
2. :func:`band_powers`: the power of each unit's output in the multi-frequency sine task's three
   bands, f1 in [0.5, 2], f2 in [3, 5], f3 in [7, 10] (radians per unit of the task's time axis
   ``t = linspace(0, 4π, T + 10)``): mean removed, Hann window, zero-padded periodogram, power
   summed over the band. Summed over validation sequences it gives a ``[d, 3]`` unit power table.
3. :func:`group_profiles`: a group of units' band-power profile = its summed power per band,
   normalised to sum 1 (a probability vector over the three bands).
4. :func:`specialization_index`: the mean pairwise Jensen-Shannon divergence (base 2, in [0, 1])
   between the k compartments' profiles: 0 when every compartment has the same profile, 1 when
   every pair of compartments puts its power in disjoint bands.
5. :func:`permutation_test`: the compartments are index blocks of the d units (the math does not
   depend on k; docs/THEORY.md §4), so the index is compared with its value for random partitions of
   the same d units into k groups of m (a permutation null). p = (1 + #null >= observed) / (1 + N).

6. :func:`unit_diversity`: how differently the *units* use the bands, whatever their grouping: the
   mutual information (bits) between a unit drawn uniformly and the band its power falls in, i.e. the
   generalised Jensen-Shannon divergence of the d unit profiles (0: every unit has the same profile).
   Measured on the hidden state h_t of trained DIRU, of an LSTM of the same d trained the same way
   (the control), and of DIRU at initialisation (random recurrent features: the untrained control).

The study (:func:`run_specialization`) follows the comparison study's protocol: the sine task standardised
with the training split's statistics (:func:`sine_splits`, the study's data); every model's Adam learning
rate picked from a grid on tuning seeds disjoint from the test seeds (DIRU at one k, :func:`tune_models`);
gradient clipping; early stopping on validation with an epoch cap; the best validation epoch's weights,
scored on a test split against the trivial baselines. It then trains DIRU for each k and test seed (and
one LSTM per seed), and measures the index, its null, its p-value and the unit diversity before training
(random initialisation) and after.

The symmetry argument. Without attention and with equal compartments, every parameter belongs to one
dendrite unit (a row of W_x, W_h, b, G and a column of W_I) and the units are drawn iid; permuting the
units maps the network to an equivalent one with the same initial distribution, and Adam (elementwise)
and global-norm gradient clipping (one factor for every gradient) commute with the permutation. So after any training the compartment blocks are exchangeable with any
other grouping of the d units into k groups of m: the block index is a draw from the permutation
null and the permutation p is uniform *by construction*, whatever the units learn. The permutation
test then measures nothing about the claim; the verdict rests on the argument (:func:`exchangeable`),
not on the p-value (and a non-significant p is not evidence of no effect in any case).

Verdict rules (:func:`verdict`), stated before the numbers:

- learned (:mod:`diru_fast.experiments.claims`): a model has learned the task when its test MSE is at most
  0.3x that of predicting the training mean (median over seeds); comparisons are made only between models
  that learned it ("not learned" / "only X learned" otherwise).
- exchangeable compartments (no attention): "different compartments capture different frequencies"
  (the blocks differ more than groupings the model does not single out) **does not hold**, by the
  symmetry argument; the permutation test is reported as a check (percentiles spread over (0, 1)).
- otherwise (attention singles the blocks out): **not learned** if DIRU did not learn the task at every
  k; else **holds** if, at every k, Fisher's combination of the
  per-seed permutation p-values (trained), Holm-adjusted over the k, is < 0.05 *and* the standardised
  excess over the null, z = (index - null mean) / null sd, is larger after training than at
  initialisation (95% t-interval of the paired difference over all (k, seed) above 0); otherwise
  **inconclusive** (a non-significant Fisher p is not evidence that the blocks do not differ).
- the units' frequency selectivity (a separate question the claim suggests): ln of the unit diversity,
  DIRU trained vs LSTM trained and DIRU trained vs DIRU at initialisation, paired by seed (DIRU's
  diversity averaged over k per seed), two-sided t-tests Holm-adjusted over the comparisons made (only
  between models that learned the task): **higher** / **lower** when the adjusted p < 0.05, else **no
  difference shown**, with the smallest ratio the test would detect with 80% power.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .. import reference
from ..experiments.claims import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, NOT_LEARNED, pair_verdict
from ..experiments.datasets import HORIZON, SineDataset
from ..experiments.options import DIRUOptions
from ..experiments.stats import mean_std, t_interval
from ..experiments.study import derive_seed
from ..experiments.trivial import trivial_baselines
from ..experiments.tuning import DEFAULT_LR_GRID, DEFAULT_PATIENCE, SeedPlan, lr_curve
from ..functional import diru_scan
from ..modules import DIRU as FastDIRU
from .common import (CLIP_NORM, Timer, build, decide, detectable_effect, fisher_combined_p, holm, learned_summary,
                     paired_test, prototype_copy, scored_fit, standardise_splits, tune_trials)

__all__ = ["BANDS", "sine_time_step", "compartment_outputs", "band_powers", "unit_band_power",
           "group_profiles", "blocks", "sorted_partition", "specialization_index", "jensen_shannon", "random_partitions",
           "permutation_test", "unit_diversity", "exchangeable", "SpecializationConfig", "run_specialization",
           "verdict", "selectivity_tests", "CLAIM"]

BANDS: Tuple[Tuple[float, float], ...] = SineDataset.FREQ_RANGES  # rad per unit time
CLAIM = ("\"Compartments learn to specialize automatically\" / \"Different compartments capture different "
         "frequencies\" (prototype README, Key Insights 4)")


def sine_time_step(seq_len: int) -> float:
    """The spacing of the sine task's time axis ``linspace(0, 4π, T + 10)``."""
    return 4.0 * math.pi / (seq_len + HORIZON - 1)


# ---------------------------------------------------------------------------------- o_c extraction


def _layer_trajectory(model: nn.Module, layer: int, x: Tensor) -> Tensor:
    """States h_1..h_T of layer ``layer``, ``x [B, T, n] -> [B, T, d]`` (x: that layer's input), as
    the model computes them: a fast DIRU runs its layer's fused weights on its backend (the op its
    :class:`~diru_fast.DIRULayer` runs per layer), the reference DIRU steps its cell."""
    if isinstance(model, FastDIRU):
        rnn = model.rnn  # its cell options; no dropout (training=False: the trained cell's mean behaviour)
        hs = diru_scan(x.transpose(0, 1), rnn.cell_weights(layer), compartment_sizes=list(rnn.compartment_sizes),
                       activation=rnn.activation, backend=model.backend)  # [T, B, d]
        return hs.transpose(0, 1)
    cell = model.cells[layer]
    h = x.new_zeros(x.shape[0], cell.hidden_size)
    states = []
    for t in range(x.shape[1]):  # the reference cell: one step at a time
        h = cell(x[:, t], h)
        states.append(h)
    return torch.stack(states, 1)


@torch.no_grad()
def compartment_outputs(model: nn.Module, x: Tensor, layer: int = 0) -> Tuple[Tensor, Tensor]:
    """Compartment outputs and states of layer ``layer`` of a DIRU (fast or reference).

    ``x [B, T, n]`` -> ``(o [B, T, k, m], h [B, T, d])`` with ``o[:, t, c] = o_c(x_t, h_{t-1})`` (the
    reference :class:`~diru_fast.reference.DendriteCompartment` math, h_0 = 0) and ``h[:, t] = h_t``
    the state after step t, computed by the model's own path (its backend for fast modules). With
    attention over compartments, ``o_c`` is the scaled output ``k * alpha_c * o_c`` the integration
    sees; compartment dropout is off (the cell in eval mode).
    """
    if not isinstance(model, (FastDIRU, reference.DIRU)):
        raise TypeError(f"expected a DIRU (fast or reference), got {type(model).__name__}")
    if not 0 <= layer < model.num_layers:
        raise ValueError(f"layer must lie in [0, {model.num_layers}), got {layer}")
    inp = x
    for below in range(layer):
        inp = _layer_trajectory(model, below, inp)
    h = _layer_trajectory(model, layer, inp)  # [B, T, d]
    cell = prototype_copy(model).cells[layer]
    batch, steps, d = h.shape
    h_prev = torch.cat([h.new_zeros(batch, 1, d), h[:, :-1]], 1)
    xs, hs = inp.reshape(batch * steps, -1), h_prev.reshape(batch * steps, d)
    if cell.compartment_size is None:
        raise ValueError("compartment_outputs needs equal compartments (no compartment_sizes)")
    o = torch.stack([comp(xs, hs) for comp in cell.compartments], 1)  # [B*T, k, m]
    if cell.compartment_attention is not None:  # o_c <- k * alpha_c * o_c, alpha: [B*T, k]
        alpha = torch.softmax(cell.compartment_attention(torch.cat([xs, hs], -1)), -1)
        o = cell.num_compartments * alpha.unsqueeze(-1) * o
    return o.view(batch, steps, cell.num_compartments, cell.compartment_size), h


# ------------------------------------------------------------------------------------- spectra


def band_powers(signals: Tensor, dt: float, bands: Sequence[Tuple[float, float]] = BANDS,
                pad_factor: int = 8) -> Tensor:
    """Power of each signal in each band: ``signals [..., T] -> [..., len(bands)]``.

    Mean removed, Hann-windowed (symmetric), zero-padded to a power of two >= ``pad_factor * T``;
    the periodogram ``|rfft|^2`` summed over the bins whose angular frequency ``2π f`` (f in cycles
    per unit time for samples ``dt`` apart) lies in ``[lo, hi]``.
    """
    steps = signals.shape[-1]
    if steps < 2:
        raise ValueError(f"band_powers needs at least 2 samples, got {steps}")
    x = signals - signals.mean(-1, keepdim=True)
    window = torch.hann_window(steps, periodic=False, dtype=x.dtype, device=x.device)
    n_fft = 1 << max(0, math.ceil(math.log2(pad_factor * steps)))
    power = torch.fft.rfft(x * window, n=n_fft).abs().pow(2)  # [..., n_fft // 2 + 1]
    omega = 2.0 * math.pi * torch.fft.rfftfreq(n_fft, d=dt, dtype=x.dtype, device=x.device)
    out = []
    for lo, hi in bands:
        if not 0 <= lo < hi:
            raise ValueError(f"a band needs 0 <= lo < hi, got ({lo}, {hi})")
        mask = (omega >= lo) & (omega <= hi)
        if not bool(mask.any()):
            raise ValueError(f"band ({lo}, {hi}) holds no frequency bin (Nyquist {math.pi / dt:.3g})")
        out.append(power[..., mask].sum(-1))
    return torch.stack(out, -1)


def unit_band_power(o: Tensor, dt: float, burn_in: int = 0, bands: Sequence[Tuple[float, float]] = BANDS) -> Tensor:
    """Each unit's band power summed over sequences: ``o [B, T, k, m]`` (or ``[B, T, d]``) -> ``[d, bands]``.

    The first ``burn_in`` steps (the transient from h_0 = 0) are left out.
    """
    o = o.reshape(o.shape[0], o.shape[1], -1).double()  # [B, T, d]
    if not 0 <= burn_in <= o.shape[1] - 2:
        raise ValueError(f"burn_in must leave at least 2 steps of {o.shape[1]}, got {burn_in}")
    return band_powers(o[:, burn_in:].transpose(1, 2), dt, bands).sum(0)  # [d, bands]


def blocks(d: int, k: int) -> Tensor:
    """The compartment partition: compartment c holds units c*m .. (c+1)*m - 1, ``[k, m]``."""
    if d % k:
        raise ValueError(f"d ({d}) must be divisible by k ({k})")
    return torch.arange(d).view(k, d // k)


def group_profiles(unit_power: Tensor, groups: Tensor) -> Tensor:
    """Normalised band-power profile of each group: ``unit_power [d, nb]``, ``groups [..., k, m]``
    (unit indices) -> ``[..., k, nb]``, each row summing to 1 (uniform for a group without power)."""
    power = unit_power[groups].sum(-2)  # [..., k, nb]
    total = power.sum(-1, keepdim=True)
    uniform = torch.full_like(power, 1.0 / power.shape[-1])
    return torch.where(total > 0, power / total.clamp_min(torch.finfo(power.dtype).tiny), uniform)


def _entropy_bits(p: Tensor) -> Tensor:
    return -(torch.special.xlogy(p, p)).sum(-1) / math.log(2.0)


def jensen_shannon(p: Tensor, q: Tensor) -> Tensor:
    """Jensen-Shannon divergence in bits (0 .. 1) between probability vectors along the last dim."""
    js = _entropy_bits(0.5 * (p + q)) - 0.5 * (_entropy_bits(p) + _entropy_bits(q))
    return js.clamp(0.0, 1.0)


def specialization_index(profiles: Tensor) -> Tensor:
    """Mean pairwise Jensen-Shannon divergence (bits) between the k profiles: ``[..., k, nb] -> [...]``.

    0: every compartment has the same band profile; 1: every pair uses disjoint bands.
    """
    k = profiles.shape[-2]
    if k < 2:
        raise ValueError("a specialization index needs at least 2 compartments")
    i, j = torch.triu_indices(k, k, offset=1)
    return jensen_shannon(profiles[..., i, :], profiles[..., j, :]).mean(-1)


def random_partitions(d: int, k: int, n: int, generator: torch.Generator) -> Tensor:
    """``n`` uniformly random partitions of ``d`` units into ``k`` groups of ``d // k``: ``[n, k, m]``."""
    if d % k:
        raise ValueError(f"d ({d}) must be divisible by k ({k})")
    return torch.argsort(torch.rand(n, d, generator=generator), dim=1).view(n, k, d // k)


def sorted_partition(unit_power: Tensor, k: int) -> Tensor:
    """A reference partition that groups units by their preferred frequency: units sorted by the
    centroid band of their own profile, then cut into k consecutive groups, ``[k, m]``. Its index
    shows how different k groups of these units *could* be; the compartments are not grouped so."""
    d, nb = unit_power.shape
    profile = unit_power / unit_power.sum(-1, keepdim=True).clamp_min(torch.finfo(unit_power.dtype).tiny)
    centroid = (profile * torch.arange(nb, dtype=profile.dtype)).sum(-1)
    return torch.argsort(centroid, stable=True).view(k, d // k)


def permutation_test(unit_power: Tensor, k: int, n_perm: int = 1000, seed: int = 0,
                     groups: Optional[Tensor] = None) -> Dict[str, Any]:
    """The index of ``groups`` (default: the compartment blocks) against ``n_perm`` random partitions.

    Returns the index, the null's mean / sd / quantiles (``null_quantiles`` at 0, 0.02, ..., 1),
    the one-sided p-value ``(1 + #null >= index) / (1 + n_perm)``, the mid-rank percentile of the
    index in the null and ``z = (index - null mean) / null sd``; the groups' profiles; and the index of
    :func:`sorted_partition` (units grouped by preferred frequency: a reference for "how specialized
    could k groups of these units be").
    """
    d = unit_power.shape[0]
    groups = blocks(d, k) if groups is None else groups
    profiles = group_profiles(unit_power, groups)
    observed = float(specialization_index(profiles))
    null = specialization_index(group_profiles(unit_power, random_partitions(
        d, k, n_perm, torch.Generator().manual_seed(seed)))).double()  # [n_perm]
    tol = 1e-12 * max(1.0, abs(observed))
    above = int((null >= observed - tol).sum())
    below = int((null < observed - tol).sum())
    ties = int(((null - observed).abs() <= tol).sum())
    mean, sd = float(null.mean()), float(null.std())
    sorted_index = float(specialization_index(group_profiles(unit_power, sorted_partition(unit_power, k))))
    levels = torch.linspace(0, 1, 51, dtype=torch.float64)
    return {
        "index": observed, "p_value": (1 + above) / (1 + n_perm),
        "percentile": (below + 0.5 * ties) / n_perm,
        "z": (observed - mean) / sd if sd > 0 else 0.0,
        "null_mean": mean, "null_sd": sd, "null_quantiles": torch.quantile(null, levels).tolist(),
        "n_perm": n_perm, "profiles": profiles.tolist(), "sorted_index": sorted_index,
    }


def unit_diversity(unit_power: Tensor) -> float:
    """Mutual information (bits) between a uniformly drawn unit and the band: ``unit_power [d, nb]``
    -> H(mean unit profile) - mean H(unit profile), each unit's profile its power normalised to sum 1
    (uniform for a unit without power). 0 when every unit has the same profile; log2(nb) at most."""
    d = unit_power.shape[0]
    profiles = group_profiles(unit_power, torch.arange(d).view(d, 1))  # [d, nb]
    return float(_entropy_bits(profiles.mean(0)) - _entropy_bits(profiles).mean())


def exchangeable(options: Dict[str, Any]) -> bool:
    """Are the compartment blocks exchangeable with any grouping of the units (the symmetry argument
    in the module docstring)? True for the plain cell with equal compartments (dropout, relu included:
    both act unit by unit); attention gives each block its own weight, so False."""
    return not options.get("compartment_attention") and not options.get("compartment_sizes")


@torch.no_grad()
def lstm_states(model: nn.Module, x: Tensor) -> Tensor:
    """The hidden states of an :class:`~diru_fast.baselines.LSTMModel`: ``x [B, T, n] -> h [B, T, d]``."""
    out, _ = model.lstm(x)
    return out


# ------------------------------------------------------------------------------------ the study


@dataclass
class SpecializationConfig(SeedPlan):
    """Settings of :func:`run_specialization` (the prototype's multi-frequency sine task, standardised as the
    study does; DIRU at hidden size d), with the study's protocol: every model's learning rate picked from
    ``lr_grid`` on ``tune_seeds`` tuning seeds (``tune_first_seed`` on, disjoint from the test seeds), DIRU
    tuned at ``tune_k`` compartments (the plain cell's math does not depend on k), early stopping after
    ``patience`` epochs without a better validation loss, ``epochs`` the cap, the best epoch's weights."""

    ks: Tuple[int, ...] = (2, 4, 8)
    seeds: int = 10
    first_seed: int = 0
    n_train: int = 512  # the study's sine task: 512 / 200 / 200 sequences, T = 50, d = 64
    n_val: int = 200
    n_test: int = 200
    seq_len: int = 50
    hidden_size: int = 64
    epochs: int = 50  # the cap
    patience: int = DEFAULT_PATIENCE
    batch_size: int = 32
    lr_grid: Tuple[float, ...] = DEFAULT_LR_GRID  # one value: no tuning
    tune_seeds: int = 2
    tune_first_seed: int = 1000
    tune_k: int = 4  # DIRU is tuned at this k; the picked rate trains every k
    clip: float = CLIP_NORM  # gradient clipping (global L2 norm), every model
    n_perm: int = 1000  # random partitions in the permutation null
    burn_in: int = 10  # first steps left out of the spectra (transient from h_0 = 0)
    lstm_control: bool = True  # also train an LSTM of the same d per seed (the unit-selectivity control)
    backend: str = "auto"
    options: DIRUOptions = DIRUOptions()  # DIRU's cell options (equal compartments only)

    def __post_init__(self):
        self.ks, self.lr_grid = tuple(self.ks), tuple(float(v) for v in self.lr_grid)
        if self.options.compartment_sizes is not None:
            raise ValueError("the specialization analysis compares k equal compartments (index blocks of the d "
                             "units); compartment sizes are not supported here")
        for k in self.ks + (self.tune_k,):
            if k < 2 or self.hidden_size % k:
                raise ValueError(f"every k (and tune_k) must be >= 2 and divide hidden_size {self.hidden_size}; "
                                 f"got {k}")
        for name in ("seeds", "epochs", "n_train", "n_val", "n_test", "n_perm", "patience", "tune_seeds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not self.lr_grid:
            raise ValueError("lr_grid needs at least one learning rate")
        self.check_seeds_apart()

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["ks"], d["lr_grid"] = list(self.ks), list(self.lr_grid)
        return d


def sine_splits(config: SpecializationConfig, seed: int):
    """(train, validation, test, scaling, trivial baselines) of one seed of the sine task: the study's data
    (``derive_seed("sine", seed, split)``), standardised with the training split's statistics; the
    trivial baselines (:mod:`~diru_fast.experiments.trivial`) scored on the test split in standardised units."""
    train_set, val_set, test_set = (SineDataset(n, config.seq_len, derive_seed("sine", seed, split)) for n, split in
                                    ((config.n_train, "train"), (config.n_val, "val"), (config.n_test, "test")))
    trivial = trivial_baselines("sine", train_set, test_set)  # raw scale: the per-sequence fit needs it
    scaling = standardise_splits(train_set, val_set, test_set)
    var = scaling["target_std"] ** 2
    return train_set, val_set, test_set, scaling, [dict(b, mse=b["mse"] / var) for b in trivial]


def _measure(model: nn.Module, x: Tensor, dt: float, k: int, config: SpecializationConfig, seed: int) -> Dict[str, Any]:
    o, h = compartment_outputs(model, x)
    power = unit_band_power(o, dt, config.burn_in)  # [d, 3]
    result = permutation_test(power, k, config.n_perm, seed=derive_seed("specialization-null", seed, k))
    result["unit_power"] = power.tolist()
    result["diversity_o"] = unit_diversity(power)
    result["diversity_h"] = unit_diversity(unit_band_power(h, dt, config.burn_in))
    return result


def _build(config: SpecializationConfig, kind: str, k: int, seed: int) -> nn.Module:
    torch.manual_seed(derive_seed("sine", seed, "init"))
    if kind == "lstm":
        return build("lstm", 1, config.hidden_size, 1)
    return build("diru", 1, config.hidden_size, 1, num_compartments=k, backend=config.backend, options=config.options)


def _train(config: SpecializationConfig, model: nn.Module, splits, lr: float, seed: int, test: bool) -> Dict[str, Any]:
    train_set, val_set, test_set = splits[:3]
    return scored_fit(model, train_set, val_set, test_set if test else None, lr=lr, epochs=config.epochs,
                      patience=config.patience, shuffle_seed=derive_seed("sine", seed, "shuffle"),
                      batch_size=config.batch_size, clip=config.clip)


def tune_models(config: SpecializationConfig, progress=None) -> Tuple[Dict[str, float], List[Dict[str, Any]]]:
    """The picked learning rate of DIRU (at ``tune_k``) and of the LSTM control, and every tuning trial."""
    picked, trials = {}, []
    cache: Dict[int, Any] = {}
    for kind in ("diru",) + (("lstm",) if config.lstm_control else ()):
        def trial(lr: float, seed: int) -> Dict[str, Any]:
            if seed not in cache:
                cache[seed] = sine_splits(config, seed)
            splits = cache[seed]
            with Timer() as timer:
                out = _train(config, _build(config, kind, config.tune_k, seed), splits, lr, seed, test=False)
            if progress is not None:
                progress(f"tuning {kind} lr={lr:g} seed={seed}: val / mean {out['val_ratio']:.3g}, "
                         f"{out['epochs_run']} epochs, {timer.seconds:.0f} s")
            return dict(out, seconds=timer.seconds)

        picked[kind], rows = tune_trials(trial, config.lr_grid, config.tune_seed_list)
        trials += [dict(r, model=kind, k=config.tune_k if kind == "diru" else None) for r in rows]
    return picked, trials


def run_specialization(config: SpecializationConfig, progress=None) -> Dict[str, Any]:
    """Tune, then train DIRU(k) on the sine task for every k and test seed (and the LSTM control);
    measure the index at init and after training; score every model on the test split.

    Data and the initialisation seed come from the study's derivation (``derive_seed("sine", seed, ...)``),
    so a seed gives the same data for every k. ``progress(message)`` is called after every run.
    """
    dt = sine_time_step(config.seq_len)
    picked, trials = tune_models(config, progress)
    runs: List[Dict[str, Any]] = []
    controls: List[Dict[str, Any]] = []
    baselines: List[Dict[str, Any]] = []
    for seed in config.seed_list:
        splits = sine_splits(config, seed)
        val_set = splits[1]
        baselines += [dict(b, seed=seed) for b in splits[4]]
        input_power = unit_band_power(val_set.x, dt, config.burn_in)[0]  # the input's own spectrum
        input_profile = (input_power / input_power.sum()).tolist()
        for k in config.ks:
            model = _build(config, "diru", k, seed)
            with Timer() as timer:
                init = _measure(model, val_set.x, dt, k, config, seed)
                scores = _train(config, model, splits, picked["diru"], seed, test=True)
                trained = _measure(model, val_set.x, dt, k, config, seed)
            runs.append(dict(scores, k=k, seed=seed, input_profile=input_profile, init=init, trained=trained,
                             seconds=timer.seconds))
            if progress is not None:
                progress(f"k={k} seed={seed}: index {init['index']:.3g} -> {trained['index']:.3g} "
                         f"(p {trained['p_value']:.3g}), test MSE / mean {scores['test_ratio']:.3g}, "
                         f"{scores['epochs_run']} epochs, {timer.seconds:.0f} s")
        if config.lstm_control:
            lstm = _build(config, "lstm", 0, seed)
            with Timer() as timer:
                init_h = unit_diversity(unit_band_power(lstm_states(lstm, val_set.x), dt, config.burn_in))
                scores = _train(config, lstm, splits, picked["lstm"], seed, test=True)
                trained_h = unit_diversity(unit_band_power(lstm_states(lstm, val_set.x), dt, config.burn_in))
            controls.append(dict(scores, model="lstm", seed=seed, init={"diversity_h": init_h},
                                 trained={"diversity_h": trained_h}, seconds=timer.seconds))
            if progress is not None:
                progress(f"LSTM seed={seed}: unit diversity {init_h:.3g} -> {trained_h:.3g} bits, "
                         f"test MSE / mean {scores['test_ratio']:.3g}, {timer.seconds:.0f} s")
    return {"analysis": "specialization", "config": config.to_dict(), "time_step": dt,
            "bands": [list(b) for b in BANDS], "picked_lr": picked, "tuning": trials,
            "tuning_curves": {kind: lr_curve([t for t in trials if t["model"] == kind], key="val_ratio")
                              for kind in picked if trials},
            "baselines": baselines, "runs": runs, "controls": controls,
            "summary": summarize(runs, config.ks, controls, exchangeable(config.options.kwargs()), baselines)}


def learned_table(runs: Sequence[Dict[str, Any]], controls: Sequence[Dict[str, Any]],
                  baselines: Sequence[Dict[str, Any]] = ()) -> Dict[str, Any]:
    """The learned rule per model (DIRU per k, the LSTM control): :func:`~.common.learned_summary` of the
    per-seed test ratios; and each trivial baseline's median test MSE / predict-the-mean."""
    out: Dict[str, Any] = {}
    for k in sorted({r["k"] for r in runs}):
        out[f"diru_k{k}"] = learned_summary([r["test_ratio"] for r in runs if r["k"] == k and "test_ratio" in r])
    for kind in sorted({c["model"] for c in controls}):
        out[kind] = learned_summary([c["test_ratio"] for c in controls if c["model"] == kind and "test_ratio" in c])
    means = {b["seed"]: b["mse"] for b in baselines if b["name"] == "mean"}
    trivial = {}
    for name in dict.fromkeys(b["name"] for b in baselines if b["name"] != "mean"):
        trivial[name] = learned_summary([b["mse"] / means[b["seed"]] for b in baselines
                                         if b["name"] == name and means.get(b["seed"])])["median_ratio"]
    return {"models": out, "trivial": trivial}


def summarize(runs: List[Dict[str, Any]], ks: Sequence[int], controls: Sequence[Dict[str, Any]] = (),
              is_exchangeable: bool = True, baselines: Sequence[Dict[str, Any]] = ()) -> Dict[str, Any]:
    """Per k: index (trained / init) mean ± sd, null means, Fisher p (raw and Holm over the k); the
    z gain; the learned rule per model; the unit-selectivity tests; and the verdict (module docstring)."""
    per_k = []
    for k in ks:
        rs = [r for r in runs if r["k"] == k]
        if not rs:
            continue
        row: Dict[str, Any] = {"k": k, "n": len(rs)}
        for phase in ("init", "trained"):
            row[phase] = {
                "index": mean_std([r[phase]["index"] for r in rs]),
                "null_mean": mean_std([r[phase]["null_mean"] for r in rs]),
                "sorted_index": mean_std([r[phase]["sorted_index"] for r in rs]),
                "z": mean_std([r[phase]["z"] for r in rs]),
                "p_values": [r[phase]["p_value"] for r in rs],
                "fisher_p": fisher_combined_p([r[phase]["p_value"] for r in rs]),
                "percentiles": [r[phase]["percentile"] for r in rs],
            }
        per_k.append(row)
    for phase in ("init", "trained"):
        for row, p in zip(per_k, holm([row[phase]["fisher_p"] for row in per_k])):
            row[phase]["fisher_p_holm"] = p
    dz = [r["trained"]["z"] - r["init"]["z"] for r in runs]
    dnull = [math.log(r["trained"]["null_mean"] / r["init"]["null_mean"]) for r in runs
             if r["trained"]["null_mean"] > 0 and r["init"]["null_mean"] > 0]
    z_gain = t_interval(dz) if len(dz) > 1 else None
    null_gain = t_interval(dnull) if len(dnull) > 1 else None
    percentiles = [r["trained"]["percentile"] for r in runs]
    learned = learned_table(runs, controls, baselines)
    diru_learned = all(v["learned"] for key, v in learned["models"].items() if key.startswith("diru_"))
    return {"per_k": per_k, "exchangeable": is_exchangeable, "learned": learned,
            "z_gain": None if z_gain is None else [z_gain.estimate, z_gain.low, z_gain.high, z_gain.n],
            "null_mean_log_ratio": None if null_gain is None else [null_gain.estimate, null_gain.low,
                                                                   null_gain.high, null_gain.n],
            "percentile_mean": sum(percentiles) / len(percentiles) if percentiles else math.nan,
            "selectivity": selectivity_tests(runs, controls, learned["models"]),
            "verdict": verdict(per_k, z_gain, is_exchangeable, diru_learned)}


def selectivity_tests(runs: Sequence[Dict[str, Any]], controls: Sequence[Dict[str, Any]],
                      learned: Optional[Dict[str, Dict[str, Any]]] = None) -> Dict[str, Any]:
    """The unit-selectivity family (module docstring): per seed, DIRU's trained / init hidden-state
    diversity (mean over k) and the LSTM's; ln-ratio t-tests, each with the smallest ratio detectable
    with 80% power (``detectable_ratio``, from the observed spread). A comparison counts only between
    models that learned the task (``learned``: :func:`learned_table`'s models; DIRU must have learned at
    every k): the others get "not learned" / "only X learned" and stay out of the Holm family."""
    seeds = sorted({r["seed"] for r in runs})
    per_seed = {}
    for s in seeds:
        rs = [r for r in runs if r["seed"] == s]
        per_seed[s] = {"diru_trained": sum(r["trained"]["diversity_h"] for r in rs) / len(rs),
                       "diru_init": sum(r["init"]["diversity_h"] for r in rs) / len(rs)}
    for c in controls:
        if c["seed"] in per_seed:
            per_seed[c["seed"]][f"{c['model']}_trained"] = c["trained"]["diversity_h"]
            per_seed[c["seed"]][f"{c['model']}_init"] = c["init"]["diversity_h"]
    if learned is None:
        diru_ok, lstm_ok = True, True
    else:
        diru_ok = all(v["learned"] for key, v in learned.items() if key.startswith("diru_"))
        lstm_ok = bool(learned.get("lstm", {}).get("learned"))
    tests = []
    for base in ("lstm_trained", "diru_init"):
        both = [s for s in seeds if base in per_seed[s] and per_seed[s][base] > 0 and per_seed[s]["diru_trained"] > 0]
        if len(both) < 2:
            continue
        logs = [math.log(per_seed[s]["diru_trained"] / per_seed[s][base]) for s in both]
        test = paired_test(logs)
        sd = math.sqrt(sum((v - test["mean"]) ** 2 for v in logs) / (len(logs) - 1))
        test.update(baseline=base, if_significant="higher" if test["mean"] > 0 else "lower",
                    detectable_ratio=math.exp(detectable_effect(sd, len(logs))) if sd > 0 else math.nan,
                    gate=(pair_verdict(diru_ok, lstm_ok, "", "DIRU", "LSTM") if base == "lstm_trained"
                          else "" if diru_ok else NOT_LEARNED))  # "": both learned, the comparison is made
        tests.append(test)
    family = [t for t in tests if t["gate"] == ""]
    for test, v in zip(family, decide(family)):
        test["verdict"] = "no difference shown" if v == INCONCLUSIVE else v
    for test in tests:
        if test["gate"] != "":
            test.update(verdict=test["gate"], p_holm=None)
        test.pop("gate")
    return {"per_seed": {str(s): v for s, v in per_seed.items()}, "tests": tests}


def verdict(per_k: List[Dict[str, Any]], z_gain, is_exchangeable: bool = True, diru_learned: bool = True) -> str:
    """The rule in the module docstring."""
    if is_exchangeable:
        return DOES_NOT_HOLD  # by the symmetry argument, whatever the numbers (and whatever training did)
    if not diru_learned:
        return NOT_LEARNED  # attention: a claim about trained compartments needs a DIRU that learned the task
    if not per_k:
        return INCONCLUSIVE
    significant = [row["trained"].get("fisher_p_holm", row["trained"]["fisher_p"]) < 0.05 for row in per_k]
    gain_above = z_gain is not None and math.isfinite(z_gain.low) and z_gain.low > 0
    if all(significant) and gain_above:
        return HOLDS
    return INCONCLUSIVE
