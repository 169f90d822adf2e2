"""Compartment dropout's mask, drawn as one seed and defined by a counter-based hash.

A mask ``[T, B, d]`` (values 0 or ``1/(1-p)``) is one 62-bit seed drawn with torch's CPU generator;
element ``(t, b, j)`` is kept iff ``hash(seed, t*B + b, j) >= floor(p * 2^32)``, with the 32-bit hash
below. Every backend applies the same mask: the C++ CPU kernel evaluates the hash inside its step
(nothing ``[T, B, d]`` drawn, stored or read: O(d) integer operations per row-step), and every other
path (the contract, "torch", "reference", the GPU kernels, double backward, traced graphs) takes the
tensor :meth:`CompartmentMask.tensor` materializes with the same arithmetic in PyTorch, so one seed
gives the same numbers on every backend. The hash::

    mix(x)  = x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15; x *= 0x846ca68b; x ^= x >> 16  (mod 2^32)
    key(r)  = mix(mix(seed_lo ^ r_lo) ^ seed_hi ^ r_hi)        r = t*B + b, lo/hi: its 32-bit halves
    u(r, j) = mix(key(r) ^ (j * 0x9E3779B9 mod 2^32))

(csrc/diru_cpu_math.h has the kernel's copy: ``mix32``, ``mask_row_key``, ``LaneF::keep``.)
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


def _mul32(x: Tensor, c: int) -> Tensor:
    """``x * c mod 2^32`` for int64 ``x`` in [0, 2^32), without int64 overflow (two 16-bit halves of c)."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _M32


def _mix32(x: Tensor) -> Tensor:
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def threshold(p: float) -> int:
    """The 32-bit threshold of drop probability ``p``: ``u < floor(p * 2^32)`` drops."""
    return min(int(p * 4294967296.0), _M32)


class CompartmentMask(NamedTuple):
    """A compartment-dropout mask ``[steps, batch, d]`` of probability ``p`` from ``seed`` (a 0-dim int64
    CPU tensor, so traced graphs draw it anew each call); lazy: :meth:`tensor` forms it, for the paths
    that take a tensor."""

    seed: Tensor
    p: float
    shape: Tuple[int, int, int]
    dtype: torch.dtype
    device: torch.device

    @staticmethod
    def draw(steps: int, batch: int, d: int, p: float, dtype: torch.dtype, device,
             generator: Optional[torch.Generator] = None) -> "CompartmentMask":
        """One seed in [0, 2^62) from torch's CPU generator (``torch.manual_seed`` fixes it)."""
        seed = torch.randint(0, 2 ** 62, (), generator=generator, dtype=torch.int64)
        return CompartmentMask(seed, float(p), (steps, batch, d), dtype, torch.device(device))

    @property
    def scale(self) -> float:
        """The kept elements' value, ``1/(1-p)``."""
        return 1.0 / (1.0 - self.p)

    def tensor(self) -> Tensor:
        """The mask ``[T, B, d]``: 0 or ``1/(1-p)`` in ``dtype``."""
        steps, batch, d = self.shape
        dev = self.device
        seed = self.seed.to(dev)
        row = torch.arange(steps * batch, device=dev, dtype=torch.int64).view(steps, batch)
        key = _mix32((seed & _M32) ^ (row & _M32))
        key = _mix32(key ^ (seed >> 32) ^ (row >> 32))  # [T, B]
        unit = _mul32(torch.arange(d, device=dev, dtype=torch.int64), _GOLDEN)  # [d]
        keep = _mix32(key.unsqueeze(-1) ^ unit) >= threshold(self.p)  # [T, B, d]
        return torch.where(keep, torch.tensor(self.scale, dtype=self.dtype, device=dev),
                           torch.zeros((), dtype=self.dtype, device=dev))


def as_tensor(mask):
    """A mask as a tensor: :meth:`CompartmentMask.tensor`, or the tensor (or None) itself."""
    return mask.tensor() if isinstance(mask, CompartmentMask) else mask
