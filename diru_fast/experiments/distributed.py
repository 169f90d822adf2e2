"""Data-parallel training under ``torchrun`` (torch.distributed DistributedDataParallel).

Started by ``torchrun --nproc_per_node N -m diru_fast study ...`` (or ``... train ...``), every
process reads its rank from the environment torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and joins one process group: ``gloo`` on CPU,
``nccl`` on GPU (one GPU per process, ``cuda:LOCAL_RANK``). Started plainly, the same code runs
as a single process (world size 1) with no process group at all.

Each optimizer step uses the global batch ``batch_size`` split evenly over the ranks; DDP
averages the gradients, so the update equals a single process's on the whole global batch.
Only rank 0 writes files and shows progress (:attr:`DistContext.is_main`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["DistContext", "resolve_device", "init_from_env", "shutdown"]


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> cuda if available else cpu; otherwise the named device (checked)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} was asked for but CUDA is not available here; "
                           "use --device cpu (or auto)")
    return dev


@dataclass
class DistContext:
    """Where this process stands: rank, world size, its device, the process-group backend (or None)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: Optional[str] = None  # "gloo" / "nccl" when a process group is up

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model wrapped in DistributedDataParallel when distributed, else unchanged."""
        if not self.is_distributed:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over ranks in place (a no-op in one process); returns it."""
        if self.is_distributed:
            on_device = tensor.to(self.device) if self.backend == "nccl" else tensor  # nccl: GPU tensors only
            dist.all_reduce(on_device, op=dist.ReduceOp.SUM)
            if on_device is not tensor:
                tensor.copy_(on_device)
        return tensor

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()


def init_from_env(device: str = "auto") -> DistContext:
    """Join the process group torchrun describes in the environment, or run as one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=resolve_device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    dev = resolve_device(device)
    if dev.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} has no GPU ({torch.cuda.device_count()} visible); "
                               "start torchrun with --nproc_per_node <= the number of GPUs")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://")
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev, backend=backend)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (if this process joined one)."""
    if ctx.is_distributed and dist.is_initialized():
        dist.destroy_process_group()
