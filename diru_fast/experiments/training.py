"""Training and evaluation as in the prototype: Adam, MSE, fixed epochs, mini-batches of 32.

- :func:`train` runs epochs of shuffled mini-batches and records, per epoch, the training
  loss (mean over the epoch's samples), the validation MSE and the wall time (training +
  validation). Fixed epochs by default; ``patience`` turns on early stopping; ``keep_best``
  keeps a copy of the best-validation epoch's weights (``History.best_state``, ``best_epoch``);
  ``clip_norm`` clips the gradients' global norm before every step. A tqdm bar
  shows progress unless ``progress=False``. Under torchrun (see :mod:`.distributed`) the
  model runs in DistributedDataParallel, each rank taking its share of every global batch.
- :func:`evaluate` (MSE over a dataset, or the mean cross-entropy with ``loss="cross_entropy"``)
  and :func:`predict`. ``TrainConfig.loss`` picks the training loss: ``"mse"`` (the prototype's, the
  default) or ``"cross_entropy"`` (classification: integer class targets ``y [N]``).
- :func:`save_checkpoint` / :func:`load_checkpoint`: model, optimizer, history and the
  model's :class:`~.models.ModelSpec`; training resumes from a checkpoint exactly where it
  stopped (same numbers as an uninterrupted run: shuffling depends only on seed and epoch).

Shuffling uses ``DistributedSampler(seed=shuffle_seed)`` in every case (one replica when not
distributed), so the order of samples depends only on the seed and the epoch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .distributed import DistContext
from .io import atomic_path
from .models import ModelSpec

__all__ = ["TrainConfig", "History", "LOSSES", "make_optimizer", "train", "evaluate", "predict",
           "save_checkpoint", "load_checkpoint"]

LOSSES = ("mse", "cross_entropy")


@dataclass
class TrainConfig:
    epochs: int = 50
    batch_size: int = 32  # the global batch (split over ranks under torchrun)
    lr: float = 1e-3
    shuffle_seed: int = 0
    patience: Optional[int] = None  # stop after this many epochs without a better val loss; None: never
    progress: bool = True
    desc: str = "train"
    loss: str = "mse"  # one of LOSSES; "cross_entropy" takes class indices as targets
    keep_best: bool = False  # keep a copy of the weights of the best-validation epoch (History.best_state)
    clip_norm: Optional[float] = None  # clip the gradients' global L2 norm to this before each step; None: off

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if self.patience is not None and self.patience <= 0:
            raise ValueError(f"patience must be a positive int or None, got {self.patience!r}")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be positive or None, got {self.clip_norm!r}")


@dataclass
class History:
    train_loss: List[float] = field(default_factory=list)  # per epoch, mean over training samples
    val_loss: List[float] = field(default_factory=list)  # per epoch, validation MSE after the epoch
    epoch_time: List[float] = field(default_factory=list)  # seconds: training + validation
    train_time: List[float] = field(default_factory=list)  # seconds: the training part alone
    local_samples: List[int] = field(default_factory=list)  # training samples this process saw (its shard)
    stopped_early: bool = False
    best_epoch: Optional[int] = None  # 1-based epoch of the lowest validation loss (with keep_best)
    # with keep_best: the model's state_dict after best_epoch (in memory only, never serialised)
    best_state: Optional[Dict[str, Tensor]] = field(default=None, repr=False, compare=False)

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    def to_dict(self) -> Dict[str, Any]:
        return {f.name: (list(v) if isinstance(v, list) else v)
                for f in fields(self) if f.name != "best_state" for v in [getattr(self, f.name)]}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "History":
        return cls(**d)


def make_optimizer(model: nn.Module, lr: float = 1e-3) -> torch.optim.Optimizer:
    """The prototype's optimizer: Adam with torch's default betas and eps."""
    return torch.optim.Adam(model.parameters(), lr=lr)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _local_batch(batch_size: int, ctx: DistContext) -> int:
    if batch_size % ctx.world_size:
        raise ValueError(f"batch size {batch_size} does not split over {ctx.world_size} processes; "
                         f"use a multiple of {ctx.world_size} (it is the global batch)")
    return batch_size // ctx.world_size


def train(model: nn.Module, train_set: Dataset, val_set: Dataset, config: TrainConfig, *,
          ctx: Optional[DistContext] = None, optimizer: Optional[torch.optim.Optimizer] = None,
          history: Optional[History] = None) -> History:
    """Train ``model`` (already on ``ctx.device``) for ``config.epochs`` epochs in total.

    Pass the ``optimizer`` and ``history`` of a checkpoint to resume: training continues at
    epoch ``history.epochs + 1``. Returns the history (the same object when one is passed).
    """
    ctx = ctx or DistContext(device=next(model.parameters()).device)
    optimizer = optimizer or make_optimizer(model, config.lr)
    history = history if history is not None else History()
    sampler = DistributedSampler(train_set, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=config.shuffle_seed, drop_last=False)
    loader = DataLoader(train_set, batch_size=_local_batch(config.batch_size, ctx), sampler=sampler)
    net = ctx.wrap(model)
    bar = _progress(config, ctx, history.epochs)
    best, since_best = min(history.val_loss, default=float("inf")), 0
    for epoch in range(history.epochs, config.epochs):
        start = time.perf_counter()
        sampler.set_epoch(epoch)
        net.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)  # sum of loss * samples
        seen = 0
        for x, y in loader:
            x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            out = net(x)
            loss = F.cross_entropy(out, y) if config.loss == "cross_entropy" else F.mse_loss(out, y)
            loss.backward()
            if config.clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            optimizer.step()
            loss_sum += loss.detach().double() * len(x)  # stays on the device: no sync per step
            seen += len(x)
        _sync(ctx.device)
        train_seconds = time.perf_counter() - start
        totals = ctx.all_reduce_sum(torch.stack([loss_sum.cpu(), torch.tensor(float(seen), dtype=torch.float64)]))
        val = evaluate(model, val_set, config.batch_size, ctx, loss=config.loss)
        _sync(ctx.device)
        history.train_loss.append(float(totals[0] / totals[1]))
        history.val_loss.append(val)
        history.train_time.append(train_seconds)
        history.local_samples.append(seen)
        history.epoch_time.append(time.perf_counter() - start)
        if bar is not None:
            bar.set_postfix(train=f"{history.train_loss[-1]:.4g}", val=f"{val:.4g}")
            bar.update(1)
        if val < best:
            best, since_best = val, 0
            if config.keep_best:
                history.best_epoch = history.epochs
                history.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            since_best += 1
        if config.patience is not None and (since_best >= config.patience or not val == val):
            history.stopped_early = True  # no better validation loss for `patience` epochs, or diverged (NaN)
            break
    if bar is not None:
        bar.close()
    return history


def _progress(config: TrainConfig, ctx: DistContext, done: int):
    if not (config.progress and ctx.is_main):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=config.epochs, initial=done, desc=config.desc, unit="epoch", leave=False)


def _loss_count(y: Tensor, loss: str) -> int:
    return len(y) if loss == "cross_entropy" else y.numel()


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, batch_size: int = 256,
             ctx: Optional[DistContext] = None, loss: str = "mse") -> float:
    """Mean squared error of ``model`` over every element of ``dataset``'s targets (``loss="mse"``),
    or its mean cross-entropy over samples (``loss="cross_entropy"``, integer class targets).

    Distributed: each rank evaluates every world_size-th sample and the sums are all-reduced,
    so every rank returns the same value.
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    ctx = ctx or DistContext(device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    indices = list(range(ctx.rank, len(dataset), ctx.world_size))
    totals = torch.zeros(2, dtype=torch.float64)  # [sum of squared errors, elements]
    for i in range(0, len(indices), batch_size):
        x, y = _collate(dataset, indices[i:i + batch_size])
        x, y = x.to(ctx.device), y.to(ctx.device)
        if loss == "cross_entropy":
            total = F.cross_entropy(model(x).double(), y, reduction="sum")
        else:
            total = (model(x) - y).double().pow(2).sum()
        totals += torch.stack([total.cpu(), torch.tensor(float(_loss_count(y, loss)), dtype=torch.float64)])
    ctx.all_reduce_sum(totals)
    model.train(was_training)
    return float(totals[0] / totals[1])


def _collate(dataset: Dataset, indices: List[int]) -> Tuple[Tensor, Tensor]:
    items = [dataset[i] for i in indices]
    return torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, limit: Optional[int] = None,
            batch_size: int = 256) -> Tuple[Tensor, Tensor]:
    """(predictions, targets) on CPU for the first ``limit`` samples (all if None): ``[N, out]`` each."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    n = len(dataset) if limit is None else min(limit, len(dataset))
    preds, targets = [], []
    for i in range(0, n, batch_size):
        x, y = _collate(dataset, list(range(i, min(n, i + batch_size))))
        preds.append(model(x.to(device)).cpu())
        targets.append(y)
    model.train(was_training)
    return torch.cat(preds), torch.cat(targets)


# ------------------------------------------------------------------------------ checkpoints


def save_checkpoint(path: Union[str, Path], model: nn.Module, spec: ModelSpec,
                    optimizer: Optional[torch.optim.Optimizer] = None, history: Optional[History] = None,
                    extra: Optional[Dict[str, Any]] = None) -> Path:
    """Write a checkpoint atomically (temporary file, then rename): a crash never leaves half a file."""
    path = Path(path)
    payload = {
        "format": "diru_fast.experiments/1",
        "model_spec": spec.to_dict(),
        "model_state": model.state_dict(),
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "history": history.to_dict() if history is not None else None,
        "extra": extra or {},
        "torch": str(torch.__version__),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: Union[str, Path], map_location: Union[str, torch.device] = "cpu",
                    lr: float = 1e-3) -> Dict[str, Any]:
    """Rebuild what :func:`save_checkpoint` wrote.

    Returns a dict with ``model`` (built from the spec, weights loaded, on ``map_location``),
    ``spec``, ``optimizer`` (Adam over that model with the saved state, or None), ``history``
    (or None) and ``extra``.
    """
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != "diru_fast.experiments/1":
        raise ValueError(f"{path} is not a diru_fast experiments checkpoint (written by save_checkpoint)")
    spec = ModelSpec(**payload["model_spec"])
    model = spec.build().to(map_location)
    model.load_state_dict(payload["model_state"])
    optimizer = None
    if payload["optimizer_state"] is not None:
        optimizer = make_optimizer(model, lr)
        optimizer.load_state_dict(payload["optimizer_state"])
    history = History.from_dict(payload["history"]) if payload["history"] is not None else None
    return {"model": model, "spec": spec, "optimizer": optimizer, "history": history,
            "extra": payload["extra"]}
