"""A PyTorch Lightning module around :class:`diru_fast.DIRU` (``pip install 'diru_fast[lightning]'``).

``import diru_fast`` does not import this module or lightning; ``import diru_fast.lightning`` does::

    import lightning
    from diru_fast.lightning import DIRURegressor

    model = DIRURegressor(input_size=1, hidden_size=64, output_size=1)
    lightning.Trainer(max_epochs=10).fit(model, train_loader, val_loader)
    model = DIRURegressor.load_from_checkpoint(path)   # rebuilt from the saved hyperparameters

Batches are ``(x, y)``, ``(x, y, lengths)`` or ``(x, y, lengths, dt)``, or a dict with those keys
(``lengths`` and ``dt`` optional): ``x: [B, T, n]`` (batch first, as for ``DIRU``), ``y: [B, output_size]``
(or ``[B, T, output_size]`` with ``return_sequences=True``), ``lengths: [B]`` (None in a dict: full
length), ``dt: [B, T]`` the time since each step's previous observation, for ``time_decay=True``.
The loss is the mean squared error; ``train_loss`` is logged per step and epoch, ``val_loss`` and
``test_loss`` per epoch; the optimizer is Adam at ``lr``. Devices, precision and multi-process
training are the Trainer's job (the module holds no device state of its own).
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple, Union

import lightning
import torch
from torch import Tensor
from torch.nn import functional as F

from .modules import DIRU

Batch = Union[Tuple[Tensor, ...], Dict[str, Tensor]]

__all__ = ["DIRURegressor"]


class DIRURegressor(lightning.LightningModule):
    """``DIRU`` trained by mean squared error with Adam.

    ``num_compartments`` defaults as in :class:`diru_fast.DIRU` (``min(4, hidden_size)`` near-equal
    compartments), or to ``len(compartment_sizes)`` when sizes are given;
    every other keyword (``num_layers``, ``return_sequences``, ``backend``, ``activation``,
    ``compartment_sizes``, ``compartment_attention``, ``compartment_dropout``, ...) goes to
    :class:`diru_fast.DIRU` unchanged, and all of them are saved as hyperparameters, so
    ``load_from_checkpoint(path)`` rebuilds the same model.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, num_compartments: Optional[int] = None,
                 lr: float = 1e-3, **module_kwargs):
        super().__init__()
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
            raise ValueError(f"lr must be a positive number, got {lr!r}")
        self.save_hyperparameters()
        self.lr = float(lr)
        self.model = DIRU(input_size, hidden_size, output_size, num_compartments, **module_kwargs)

    def forward(self, x: Tensor, lengths: Optional[Tensor] = None, dt: Optional[Tensor] = None) -> Tensor:
        # x: [B, T, n], dt: [B, T] or None -> [B, output_size] (or [B, T, output_size] with return_sequences)
        return self.model(x, lengths) if dt is None else self.model(x, lengths, dt=dt)

    @staticmethod
    def _unpack(batch: Batch) -> Tuple[Tensor, Optional[Tensor], Optional[Tensor], Optional[Tensor]]:
        """``(x, y, lengths, dt)`` of a batch (absent ones None)."""
        if isinstance(batch, dict):
            return batch["x"], batch.get("y"), batch.get("lengths"), batch.get("dt")
        if isinstance(batch, Tensor):
            return batch, None, None, None
        x, y, *rest = tuple(batch) + (None,) * max(0, 2 - len(batch))
        return x, y, rest[0] if rest else None, rest[1] if len(rest) > 1 else None

    def _loss(self, batch: Batch) -> Tuple[Tensor, int]:
        x, y, lengths, dt = self._unpack(batch)
        return F.mse_loss(self(x, lengths, dt), y), x.shape[0]

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss, size = self._loss(batch)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=size)
        return loss

    def validation_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss, size = self._loss(batch)
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, batch_size=size)
        return loss

    def test_step(self, batch: Batch, batch_idx: int) -> Tensor:
        loss, size = self._loss(batch)
        self.log("test_loss", loss, on_epoch=True, batch_size=size)
        return loss

    def predict_step(self, batch: Batch, batch_idx: int) -> Tensor:
        x, _, lengths, dt = self._unpack(batch)
        return self(x, lengths, dt)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)
