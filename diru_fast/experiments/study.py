"""The comparison study: tasks × models × seeds, each run trained from scratch, results on disk.

A *run* is one (task, model variant, seed). Its seeds are derived from the study seed alone
(:func:`derive_seed`), so the same command gives the same numbers (same backend and threads),
and runs are *paired*: for a given seed every model sees the same training, validation and test
data, the same shuffling order and the same initialisation seed.

Three splits per seed: the model trains on the training set; the validation set stops training
early (``patience`` epochs without improvement, up to ``epochs`` epochs: the cap, reported when a
run hits it) and picks the epoch whose weights are kept; the test set, never seen while training or
selecting, scores the selected weights (``test_mse``, the study's primary metric) and the last
epoch's (``final_test_mse``).

Data are **standardised by default**: inputs and targets scaled with the training split's mean and
std (one scalar each, from the training split only); every MSE is then in standardised units
(``test_mse``), with the raw-scale value beside it (``test_mse_raw``). ``normalize=False`` keeps the
prototype's raw scale (``--raw-scale``); :meth:`StudyConfig.prototype` is its literal recipe.

**Equal tuning** (:mod:`.tuning`): every model variant gets the same learning-rate grid
(``lr_grid``), gradient clipping (``clip_norm``) and early stopping; per (task, variant) the rate is
picked on validation over ``tune_seeds`` tuning seeds (``tune_first_seed`` on, disjoint from the
test seeds), and the test seeds then train at the picked rate (``run["lr"]``). The trials are kept
in ``results["tuning"]``, the picked rates in ``results["picked_lr"]``. A one-value grid skips tuning.

Trivial baselines (:mod:`.trivial`: predict the mean, least squares, the sine task's generating
model) are fitted on each (task, seed)'s training set and scored on its test set, in
``results["baselines"]``.

Model variants: each model (DIRU, LSTM, LSTM with forget-gate bias 1, GRU) at the common
``hidden_size`` (the prototype's setting: 64 for all) and,
with ``match_params`` "on" or "both", the baselines resized to DIRU's parameter count
(``lstm_matched``, ``gru_matched``). "on" replaces the default-size baselines, "both" runs both.

Results are rewritten atomically after every run (``results.json`` with the histories,
``results.csv`` with one row per run), so an interrupted study keeps what it finished and
``resume=True`` picks up from there; ``reuse`` takes finished runs from other studies run with the
same settings (for example the baselines of a study that differs only in DIRU's backend). Independent runs can be spread over ``workers`` local
processes; under torchrun each run is instead trained data-parallel on all ranks (rank 0 writes).
"""

from __future__ import annotations

import concurrent.futures as futures
import csv
import hashlib
import io
import json
import multiprocessing
import time
import warnings
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..backends import resolve_backend
from .datasets import TASKS, make_dataset
from .distributed import DistContext
from .io import atomic_write_text
from .models import BASELINES, KIND_LABELS, MODELS, ModelSpec, count_params, diru_params, matched_hidden_size
from .options import DIRUOptions
from .training import TrainConfig, evaluate, predict, train
from .trivial import trivial_baselines
from .tuning import DEFAULT_CLIP_NORM, DEFAULT_LR_GRID, DEFAULT_PATIENCE, SeedPlan, pick_lr

__all__ = ["StudyConfig", "Variant", "variants", "derive_seed", "run_one", "run_study", "load_results",
           "CSV_FIELDS"]

RESULTS_JSON = "results.json"
RESULTS_CSV = "results.csv"
MATCH_CHOICES = ("off", "on", "both")


@dataclass
class StudyConfig(SeedPlan):
    """A study's settings: the prototype's tasks and sizes, with the fair protocol (standardised data,
    a learning-rate grid per model picked on tuning seeds, clipping, early stopping) on top.
    :meth:`prototype` gives the prototype's literal recipe (raw scale, lr 1e-3, 50 fixed epochs)."""

    tasks: Tuple[str, ...] = tuple(TASKS)
    models: Tuple[str, ...] = MODELS
    seeds: int = 5  # seeds first_seed .. first_seed + seeds - 1
    first_seed: int = 0
    n_train: int = 800
    n_val: int = 200
    n_test: int = 200  # a third split, scored with the best-validation weights (not a prototype setting)
    seq_len: int = 50
    hidden_size: int = 64
    num_compartments: int = 4
    batch_size: int = 32
    lr: float = 1e-3  # used when lr_grid is empty (no tuning)
    epochs: int = 50  # the cap (the prototype's epoch count); early stopping usually ends a run before it
    match_params: str = "off"  # "off", "on" or "both" (see the module docstring)
    backend: str = "auto"  # DIRU's backend
    device: str = "auto"
    keep_predictions: int = 64  # validation predictions kept per run, for plots
    options: DIRUOptions = DIRUOptions()  # DIRU's cell options (the baselines ignore them)
    normalize: bool = True  # standardise inputs and targets (training-split statistics); False: the raw scale
    lr_grid: Tuple[float, ...] = DEFAULT_LR_GRID  # Adam learning rates tried per (task, model); () or one value: no tuning
    tune_seeds: int = 2  # tuning seeds per learning rate (tune_first_seed ..), disjoint from the test seeds
    tune_first_seed: int = 1000
    clip_norm: float = DEFAULT_CLIP_NORM  # gradient clipping (global norm); 0: off
    patience: int = DEFAULT_PATIENCE  # early stopping on validation; 0: off (every run trains `epochs` epochs)
    # without a grid: {task: {model kind: lr}} (e.g. the rates a full study picked); missing entries use lr
    lr_table: Optional[Dict[str, Dict[str, float]]] = None

    def __post_init__(self):
        self.tasks, self.models = tuple(self.tasks), tuple(self.models)
        self.lr_grid = tuple(float(v) for v in self.lr_grid)
        if any(not v > 0 for v in self.lr_grid + (self.lr,)):
            raise ValueError(f"learning rates must be positive, got {self.lr_grid or self.lr}")
        if self.clip_norm < 0 or self.patience < 0 or self.tune_seeds < 0:
            raise ValueError("clip_norm, patience and tune_seeds must be >= 0")
        if self.tuned and self.tune_seeds == 0:
            raise ValueError("a learning-rate grid needs tuning seeds (tune_seeds >= 1)")
        self.check_seeds_apart()
        if isinstance(self.options, dict):
            self.options = DIRUOptions.from_dict(self.options)
        if self.options.compartment_sizes is not None:  # the sizes give k
            self.options.check(self.hidden_size, len(self.options.compartment_sizes))
            self.num_compartments = len(self.options.compartment_sizes)
        unknown = [t for t in self.tasks if t not in TASKS] + [m for m in self.models if m not in MODELS]
        if unknown:
            raise ValueError(f"unknown task/model {unknown}; tasks: {', '.join(TASKS)}; models: {', '.join(MODELS)}")
        if not self.tasks or not self.models:
            raise ValueError("a study needs at least one task and one model")
        if self.match_params not in MATCH_CHOICES:
            raise ValueError(f"match_params must be one of {MATCH_CHOICES}, got {self.match_params!r}")
        if self.match_params != "off" and "diru" not in self.models:
            raise ValueError("match_params sizes the baselines to DIRU's parameter count: include the 'diru' model")
        for name in ("seeds", "n_train", "n_val", "n_test", "seq_len", "hidden_size", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")

    def train_config(self, lr: float, shuffle_seed: int, desc: str = "train", progress: bool = False) -> TrainConfig:
        """The training settings of one run at learning rate ``lr``."""
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=lr, shuffle_seed=shuffle_seed,
                           progress=progress, desc=desc, keep_best=True, patience=self.patience or None,
                           clip_norm=self.clip_norm or None)

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["tasks"], d["models"], d["lr_grid"] = list(self.tasks), list(self.models), list(self.lr_grid)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "StudyConfig":
        """From :meth:`to_dict`. A config written before the tuning protocol had none of it (raw scale
        unless it said otherwise, one learning rate, no clipping, fixed epochs); one written before the
        cell options has the plain cell's."""
        names = {f.name for f in fields(cls)}
        d = dict(d)
        if "lr_grid" not in d:
            d.update(lr_grid=(), clip_norm=0.0, patience=0, normalize=d.get("normalize", False))
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def prototype(cls, **overrides: Any) -> "StudyConfig":
        """The prototype's literal recipe: raw scale, Adam lr 1e-3 for every model (no tuning), no
        clipping, 50 fixed epochs, 800/200 sequences, DIRU vs LSTM vs GRU."""
        d: Dict[str, Any] = dict(models=("diru", "lstm", "gru"), normalize=False, lr_grid=(), lr=1e-3,
                                 clip_norm=0.0, patience=0, epochs=50, n_train=800, n_val=200)
        d.update(overrides)
        return cls(**d)


@dataclass(frozen=True)
class Variant:
    """One compared model: its kind and hidden size; ``matched`` if resized to DIRU's parameter count."""

    key: str  # "diru", "lstm", "gru", "lstm_matched", "gru_matched"
    kind: str
    hidden_size: int
    matched: bool = False

    @property
    def label(self) -> str:
        return f"{KIND_LABELS.get(self.kind, self.kind.upper())} (d={self.hidden_size}{', matched' if self.matched else ''})"


def variants(config: StudyConfig) -> List[Variant]:
    """The model variants a study trains, DIRU first."""
    out = []
    target = (diru_params(1, config.hidden_size, 1, config.num_compartments, config.options)
              if "diru" in config.models else None)
    for kind in config.models:
        if kind == "diru" or config.match_params in ("off", "both"):
            out.append(Variant(kind, kind, config.hidden_size))
        if kind in BASELINES and config.match_params in ("on", "both"):
            out.append(Variant(f"{kind}_matched", kind, matched_hidden_size(kind, target, 1, 1), True))
    return sorted(out, key=lambda v: v.kind != "diru")


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any labels (stable across runs, machines and Python versions)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def _backend_used(config: StudyConfig, kind: str, device: torch.device) -> str:
    if kind != "diru":
        return f"nn.{kind.split('_')[0].upper()}" + (" (cuDNN)" if device.type == "cuda" else "")
    return resolve_backend(config.backend, device, torch.float32, config.options.in_use())


def split_seeds(task: str, seed: int) -> Dict[str, int]:
    """The seeds of one (task, seed): its three data splits, the initialisation and the shuffling."""
    return {"train_data": derive_seed(task, seed, "train"), "val_data": derive_seed(task, seed, "val"),
            "test_data": derive_seed(task, seed, "test"), "init": derive_seed(task, seed, "init"),
            "shuffle": derive_seed(task, seed, "shuffle")}


def make_splits(config: StudyConfig, task: str, seed: int):
    """(train, val, test) datasets of one (task, seed), on the raw scale."""
    s = split_seeds(task, seed)
    return tuple(make_dataset(task, n, config.seq_len, s[key]) for n, key in
                 ((config.n_train, "train_data"), (config.n_val, "val_data"), (config.n_test, "test_data")))


class _Standardised(torch.utils.data.Dataset):
    """``(x - mx) / sx, (y - my) / sy`` of a dataset, with the scalars of the training set."""

    def __init__(self, ds, stats: Tuple[float, float, float, float]):
        mx, sx, my, sy = stats
        self.x, self.y = (ds.x - mx) / sx, (ds.y - my) / sy

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def standardisation(train_set) -> Tuple[float, float, float, float]:
    """(mean, std) of the training inputs over every step and of the training targets."""
    x, y = train_set.x.double(), train_set.y.double()
    return float(x.mean()), float(x.std()), float(y.mean()), float(y.std())


def run_one(config: StudyConfig, variant: Variant, task: str, seed: int, *,
            ctx: Optional[DistContext] = None, progress: bool = False, lr: Optional[float] = None,
            tuning: bool = False) -> Dict[str, Any]:
    """Train one (task, variant, seed) from scratch at learning rate ``lr`` (default: ``config.lr``) and
    summarise it (a JSON-ready dict). ``tuning``: a tuning trial, scored on validation only (a short dict)."""
    ctx = ctx or DistContext()
    lr = config.lr if lr is None else float(lr)
    seeds = split_seeds(task, seed)
    train_set, val_set, test_set = make_splits(config, task, seed)
    scale = 1.0  # MSE in training units -> MSE on the raw target scale
    raw_train, raw_val, raw_test = train_set, val_set, test_set
    if config.normalize:
        stats = standardisation(train_set)
        scale = stats[3] ** 2
        train_set, val_set, test_set = (_Standardised(d, stats) for d in (train_set, val_set, test_set))
    spec = ModelSpec.create(variant.kind, 1, variant.hidden_size, 1, config.num_compartments, config.backend,
                            config.options)
    torch.manual_seed(seeds["init"])
    model = spec.build().to(ctx.device)
    tcfg = config.train_config(lr, seeds["shuffle"], f"{task}/{variant.key}/{seed}", progress)
    history = train(model, train_set, val_set, tcfg, ctx=ctx)
    # the MSE of always predicting the training targets' mean (training units): 1.0x of it = nothing learned
    mean_of = lambda ds: float((ds.y.double() - raw_train.y.double().mean()).pow(2).mean()) / scale  # noqa: E731
    finite = [v for v in history.val_loss if v == v]
    best_val = min(finite) if finite else float("nan")
    hit_cap = not history.stopped_early and history.epochs >= config.epochs and config.patience > 0
    common = {"task": task, "model": variant.key, "kind": variant.kind, "seed": seed, "lr": lr,
              "best_val_mse": best_val, "mean_predictor_mse": mean_of(raw_val), "epochs_run": history.epochs,
              "hit_cap": hit_cap, "best_epoch": history.best_epoch}
    if tuning:
        return dict(common, val_ratio=best_val / common["mean_predictor_mse"])
    final_test = evaluate(model, test_set, 256, ctx)
    if history.best_state is not None:
        model.load_state_dict(history.best_state)  # the best-validation epoch's weights
    history.best_state = None
    best_test = evaluate(model, test_set, 256, ctx)
    preds, targets = predict(model, test_set, config.keep_predictions)
    if config.normalize:
        my, sy = stats[2], stats[3]
        preds, targets = preds * sy + my, targets * sy + my
    timed = history.epoch_time[1:] or history.epoch_time  # the first epoch includes warm-up
    return dict(
        common, label=variant.label, hidden_size=variant.hidden_size, matched=variant.matched,
        params=count_params(model), backend=_backend_used(config, variant.kind, ctx.device), seeds=seeds,
        units="standardized" if config.normalize else "raw", target_var=scale,
        test_mse=best_test, final_test_mse=final_test, test_mse_raw=best_test * scale,
        final_test_mse_raw=final_test * scale, final_val_mse=history.val_loss[-1],
        final_train_loss=history.train_loss[-1], mean_epoch_s=sum(timed) / len(timed),
        mean_predictor_test_mse=mean_of(raw_test), mean_predictor_test_mse_raw=mean_of(raw_test) * scale,
        history=dict(history.to_dict(), epoch_time=_short(history.epoch_time), train_time=_short(history.train_time)),
        predictions={"pred": _short(preds.squeeze(-1).tolist()), "target": _short(targets.squeeze(-1).tolist()),
                     "first_input": _short(raw_test.x[0, :, 0].tolist())},
    )


def _short(values: Sequence[float]) -> List[float]:
    """6 significant digits: plenty for timings and plotted predictions, and a smaller results.json."""
    return [float(f"{v:.6g}") for v in values]


def _run_in_worker(config_dict: Dict[str, Any], variant: Variant, task: str, seed: int,
                   threads: int, lr: Optional[float] = None, tuning: bool = False) -> Dict[str, Any]:
    if threads > 0:
        torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", message="diru_fast: backend 'auto'")  # the parent warns once
    config = StudyConfig.from_dict(config_dict)
    from .distributed import resolve_device

    return run_one(config, variant, task, seed, ctx=DistContext(device=resolve_device(config.device)), lr=lr,
                   tuning=tuning)


CSV_FIELDS = ("task", "model", "label", "seed", "hidden_size", "params", "backend", "lr", "units", "test_mse",
              "test_mse_raw", "final_test_mse", "best_epoch", "final_val_mse", "best_val_mse", "final_train_loss",
              "mean_predictor_mse", "mean_predictor_test_mse", "mean_predictor_test_mse_raw", "mean_epoch_s",
              "epochs", "hit_cap")


def results_csv(runs: Sequence[Dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in runs:
        writer.writerow({k: (len(r["history"]["val_loss"]) if k == "epochs" else r.get(k, "")) for k in CSV_FIELDS})
    return buf.getvalue()


def write_results(results: Dict[str, Any], out_dir: Path) -> None:
    """results.json and results.csv under out_dir, each written atomically."""
    atomic_write_text(out_dir / RESULTS_JSON, json.dumps(results, separators=(",", ":"), allow_nan=True))
    atomic_write_text(out_dir / RESULTS_CSV, results_csv(results["runs"]))


def load_results(path: Path) -> Dict[str, Any]:
    """A results.json (or the folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_JSON
    return json.loads(path.read_text(encoding="utf-8"))


def _environment(ctx: DistContext, command: str, workers: int) -> Dict[str, Any]:
    from ..benchmarking import environment

    env = environment()
    from ..backends import available_backends

    env.update(command=command, workers=workers, world_size=ctx.world_size, device_type=ctx.device.type,
               dist_backend=ctx.backend, available_backends=available_backends(ctx.device))
    if ctx.device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(ctx.device)
    return env


# settings that may differ between a study and one whose runs it reuses (a run records its own)
_REUSE_FREE = ("tasks", "models", "seeds", "first_seed", "match_params", "backend", "device", "keep_predictions")


def reusable_runs(config: StudyConfig, other: Dict[str, Any], by_key: Dict[str, Variant],
                  todo: Sequence[Tuple[int, str, str]]) -> List[Dict[str, Any]]:
    """The runs of ``other`` (a loaded results.json) that this study would train identically: same
    settings but for the tasks, models, seeds and sizes asked for; the same variant size; for a DIRU
    run also the same backend. ValueError if the settings differ otherwise."""
    mine = {k: v for k, v in config.to_dict().items() if k not in _REUSE_FREE}
    theirs = {k: v for k, v in StudyConfig.from_dict(other["config"]).to_dict().items() if k not in _REUSE_FREE}
    if mine != theirs:
        diff = sorted(k for k in mine if mine[k] != theirs.get(k))
        raise ValueError(f"cannot reuse runs trained with other settings ({', '.join(diff)} differ)")
    same_backend = other["config"].get("backend") == config.backend
    wanted = set(todo)
    return [r for r in other["runs"] if (r["seed"], r["task"], r["model"]) in wanted
            and r["hidden_size"] == by_key[r["model"]].hidden_size and (r["kind"] != "diru" or same_backend)]


def _train_test(config: StudyConfig, task: str, seed: int):
    train_set, _, test_set = make_splits(config, task, seed)
    return train_set, test_set


def baselines_of(config: StudyConfig, task: str, seed: int) -> List[Dict[str, Any]]:
    """The trivial baselines of one (task, seed), each MSE in the study's units (``mse``) and raw (``mse_raw``)."""
    train_set, test_set = _train_test(config, task, seed)
    var = standardisation(train_set)[3] ** 2 if config.normalize else 1.0
    return [dict(b, mse=b["mse"] / var, mse_raw=b["mse"], task=task, seed=seed)
            for b in trivial_baselines(task, train_set, test_set)]


def picked_lrs(config: StudyConfig, trials: Sequence[Dict[str, Any]], keys: Sequence[str]) -> Dict[str, Dict[str, float]]:
    """``{task: {variant key: lr}}``: the picked rate (lowest median validation MSE / predict-the-mean
    over the tuning seeds, see :mod:`.tuning`), or the one rate when there is no grid."""
    if not config.tuned:
        lr = config.lr_grid[0] if config.lr_grid else config.lr
        table = config.lr_table or {}
        kind = lambda key: key[:-len("_matched")] if key.endswith("_matched") else key  # noqa: E731
        return {t: {k: float(table.get(t, {}).get(kind(k), lr)) for k in keys} for t in config.tasks}
    return {t: {k: pick_lr([r for r in trials if r["task"] == t and r["model"] == k], key="val_ratio")
                for k in keys} for t in config.tasks}


def run_study(config: StudyConfig, out_dir: Optional[Path] = None, *, ctx: Optional[DistContext] = None,
              workers: int = 1, threads: int = 0, resume: bool = False, progress: bool = True,
              verbose: bool = False, command: str = "", reuse: Sequence[Path] = (),
              on_run: Optional[Callable[[Dict[str, Any]], None]] = None) -> Dict[str, Any]:
    """Run every (seed, task, variant) of ``config``; write results under ``out_dir`` (rank 0).

    ``workers > 1`` spreads independent runs over that many local processes (each with
    ``threads`` torch threads; 0 keeps torch's default). ``resume`` reuses the finished runs of
    an earlier results.json in ``out_dir`` made with the same configuration; ``reuse`` takes the
    runs this study needs from other results (see :func:`reusable_runs`).
    """
    ctx = ctx or DistContext()
    if workers > 1 and ctx.is_distributed:
        raise ValueError("use either --workers (independent runs in parallel) or torchrun (data-parallel runs), not both")
    var = variants(config)
    by_key = {v.key: v for v in var}
    todo = [(seed, task, v.key) for seed in config.seed_list for task in config.tasks for v in var]
    tune_todo = [(seed, task, v.key, lr) for seed in config.tune_seed_list for task in config.tasks for v in var
                 for lr in config.lr_grid]
    results: Dict[str, Any] = {"meta": _environment(ctx, command, workers), "config": config.to_dict(),
                               "variants": [dict(asdict(v), label=v.label) for v in var], "runs": [], "tuning": []}
    if resume and out_dir is not None and (Path(out_dir) / RESULTS_JSON).exists():
        old = load_results(out_dir)
        if StudyConfig.from_dict(old["config"]).to_dict() != results["config"]:
            raise ValueError(f"{out_dir}/{RESULTS_JSON} was made with another configuration; "
                             "use another --out, or drop --resume to start over")
        results["runs"] = [r for r in old["runs"] if (r["seed"], r["task"], r["model"]) in set(todo)]
        results["tuning"] = [r for r in old.get("tuning", []) if (r["seed"], r["task"], r["model"], r["lr"])
                             in set(tune_todo)]
        results["meta"]["first_command"] = old["meta"].get("first_command", old["meta"].get("command"))
        results["meta"]["earlier_wall_s"] = old["meta"].get("wall_s", 0.0)  # includes its own earlier parts
    done = {(r["seed"], r["task"], r["model"]) for r in results["runs"]}
    for path in reuse:
        for run in reusable_runs(config, load_results(path), by_key, todo):
            if (run["seed"], run["task"], run["model"]) not in done:
                results["runs"].append(dict(run, reused_from=str(path)))
                done.add((run["seed"], run["task"], run["model"]))
    results["runs"].sort(key=lambda r: todo.index((r["seed"], r["task"], r["model"])))
    results["baselines"] = [b for seed in config.seed_list for task in config.tasks
                            for b in baselines_of(config, task, seed)]
    tune_done = {(r["seed"], r["task"], r["model"], r["lr"]) for r in results["tuning"]}
    tune_pending = [t for t in tune_todo if t not in tune_done]
    pending = [t for t in todo if t not in done]

    start = time.perf_counter()
    bar = None
    if progress and ctx.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo) + len(tune_todo), initial=len(done) + len(tune_done), desc="study", unit="run")

    def save() -> None:
        results["meta"]["wall_s"] = time.perf_counter() - start + results["meta"].get("earlier_wall_s", 0.0)
        if out_dir is not None and ctx.is_main:
            write_results(results, Path(out_dir))

    def finish_trial(row: Dict[str, Any]) -> None:
        results["tuning"].append(row)
        results["tuning"].sort(key=lambda r: tune_todo.index((r["seed"], r["task"], r["model"], r["lr"])))
        save()
        if bar is not None:
            bar.set_postfix_str(f"tune {row['task']}/{row['model']}/lr {row['lr']:g}: val/mean {row['val_ratio']:.3g}")
            bar.update(1)

    def finish(run: Dict[str, Any]) -> None:
        results["runs"].append(run)
        results["runs"].sort(key=lambda r: todo.index((r["seed"], r["task"], r["model"])))
        save()
        if bar is not None:
            bar.set_postfix_str(f"{run['task']}/{run['model']}/seed {run['seed']}: val {run['best_val_mse']:.4g}")
            bar.update(1)
        if on_run is not None:
            on_run(run)

    def run_all(jobs: Sequence[Tuple], done_fn: Callable, lr_of: Callable, tuning: bool) -> None:
        if workers > 1 and jobs:
            mp = multiprocessing.get_context("spawn")  # no fork after torch's thread pools are up
            with futures.ProcessPoolExecutor(max_workers=workers, mp_context=mp) as pool:
                subs = [pool.submit(_run_in_worker, config.to_dict(), by_key[j[2]], j[1], j[0], threads,
                                    lr_of(j), tuning) for j in jobs]
                for job in futures.as_completed(subs):
                    done_fn(job.result())
        else:
            for j in jobs:
                done_fn(run_one(config, by_key[j[2]], j[1], j[0], ctx=ctx, progress=verbose, lr=lr_of(j),
                                tuning=tuning))

    run_all(tune_pending, finish_trial, lambda j: j[3], True)
    picked = picked_lrs(config, results["tuning"], list(by_key))
    results["picked_lr"] = picked
    run_all(pending, finish, lambda j: picked[j[1]][j[2]], False)
    if bar is not None:
        bar.close()
    results["meta"]["diru_backends"] = sorted({r["backend"] for r in results["runs"] if r["kind"] == "diru"})
    save()
    return results
