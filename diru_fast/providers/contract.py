"""Provider "contract": the kernel contract in plain PyTorch, run through the custom ops.

Not a user-facing backend. Tests use it to check the custom-op plumbing (autograd, fake
tensors, opcheck, torch.compile) independently of any compiled kernel.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..scan.contract import scan_bwd, scan_fwd  # noqa: F401  (the provider's two functions)

FIX = "nothing to fix: the contract provider is plain PyTorch"


def unavailable_reason() -> Optional[str]:
    return None


def unsupported_reason(device: torch.device, dtype: Optional[torch.dtype]) -> Optional[str]:
    return None
