"""One run of the stability sweep on a toy task of the study (``python -m diru_fast stability --task
sine``): the task's data standardized with training statistics (so predicting the mean scores MSE ~1),
a one-layer recurrent model (DIRU, LSTM or GRU) with a linear head on the last state, SGD or Adam,
clipping by global norm, and the same diagnostics as the language model's sweep.

Outcome, as for the language model: *diverged* when a loss became non-finite or the last validation
MSE is at least 1.5 (well past the mean predictor's ~1); *trains* when not diverged and the best
validation MSE is at most 0.3 (the study's "learned" rule, on validation)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Dict, Optional

import torch
from torch import nn

from . import lm
from .datasets import make_dataset

__all__ = ["ToyConfig", "train_toy"]


@dataclass
class ToyConfig:
    task: str = "sine"
    cell: str = "diru"
    optimizer: str = "adam"
    lr: float = 1e-3
    clip: float = 1.0
    seed: int = 0
    epochs: int = 15
    hidden: int = 64
    n_train: int = 256
    n_val: int = 128
    seq_len: int = 50
    batch_size: int = 32
    max_sigma: float = 0.0  # > 0: DIRU's W_I and W_O capped at this spectral norm after each step (lm.cap_sigma)


class _Model(nn.Module):
    def __init__(self, cell: str, hidden: int):
        super().__init__()
        self.cell, self.nhid, self.nlayers = cell, hidden, 1
        if cell == "diru":
            from ..modules import DIRULayer

            self.rnn = DIRULayer(1, hidden, batch_first=True)
        else:
            self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(1, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        out, _ = self.rnn(x)
        self.last_output = out.detach()
        return self.head(out[:, -1])


def train_toy(cfg: ToyConfig, diagnostics: Optional[lm.Diagnostics] = None) -> dict:
    """Train one model; returns a record with the fields of the language model's sweep."""
    data = make_dataset(cfg.task, cfg.n_train + cfg.n_val, cfg.seq_len, seed=1000 + cfg.seed)
    x, y = data.x.float(), data.y.float()  # [N, T, 1], [N, 1]
    xtr, ytr, xva, yva = x[:cfg.n_train], y[:cfg.n_train], x[cfg.n_train:], y[cfg.n_train:]
    mx, sx, my, sy = xtr.mean(), xtr.std(), ytr.mean(), ytr.std()
    xtr, xva, ytr, yva = (xtr - mx) / sx, (xva - mx) / sx, (ytr - my) / sy, (yva - my) / sy
    torch.manual_seed(cfg.seed)
    model = _Model(cfg.cell, cfg.hidden)
    params = list(model.parameters())
    opt = (torch.optim.SGD if cfg.optimizer == "sgd" else torch.optim.Adam)(params, lr=cfg.lr)
    valid, seconds, step, diverged = [], [], 0, False
    for epoch in range(cfg.epochs):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(cfg.n_train)
        for b in range(0, cfg.n_train, cfg.batch_size):
            i = order[b:b + cfg.batch_size]
            loss = nn.functional.mse_loss(model(xtr[i]), ytr[i])
            if not math.isfinite(float(loss.detach())):
                diverged = True
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            record = diagnostics is not None and step % diagnostics.every == 0
            if record:
                diagnostics.block_grad.append(lm._block_grads(model))
            norm = float(nn.utils.clip_grad_norm_(params, cfg.clip if cfg.clip > 0 else math.inf))
            opt.step()
            if cfg.max_sigma > 0 and cfg.cell == "diru":
                lm.cap_sigma(model.rnn, cfg.max_sigma)
            if record:
                diagnostics.steps.append(step)
                diagnostics.loss.append(float(loss.detach()))
                diagnostics.grad_norm.append(norm)
                diagnostics.saturated.append(float((model.last_output.abs() > 0.99).double().mean()))
                with torch.no_grad():
                    diagnostics.sigma_max.append({k: float(torch.linalg.matrix_norm(w, 2))
                                                  for k, w in lm._recurrent_blocks(model).items()})
            step += 1
        seconds.append(time.perf_counter() - start)
        if diverged:
            valid.append(math.inf)
            break
        model.eval()
        with torch.no_grad():
            v = float(nn.functional.mse_loss(model(xva), yva))
        valid.append(v if math.isfinite(v) else math.inf)
        if not math.isfinite(v):
            diverged = True
            break
    diverged = diverged or not valid[-1] < 1.5
    best = min(valid)
    return {"config": asdict(cfg), "valid_loss": valid, "epoch_seconds": seconds, "best_valid": best,
            "diverged": diverged, "trains": (not diverged) and best <= 0.3,
            "parameters": sum(p.numel() for p in params),
            "diagnostics": asdict(diagnostics) if diagnostics is not None else None}
