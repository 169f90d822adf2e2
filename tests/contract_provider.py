"""A kernel provider for the tests: the plain-PyTorch kernel contract, run through the custom ops
and the autograd formula of ``diru_fast.scan.ops`` exactly as a compiled kernel is.

``tests/conftest.py`` registers it as ``backend="contract"`` (not a user-facing backend), so the
plumbing (autograd, fake tensors, opcheck, torch.compile) is tested independently of any compiler.
"""

from __future__ import annotations

from typing import Optional

import torch

from diru_fast.scan.contract import scan_bwd, scan_fwd  # noqa: F401  (the provider's two functions)

FIX = "nothing to fix: the contract provider is plain PyTorch"


def unavailable_reason() -> Optional[str]:
    return None


def unsupported_reason(device: torch.device, dtype: Optional[torch.dtype]) -> Optional[str]:
    return None

# The contract states every option, so this provider fuses them all: the tests run the options through
# the custom ops and the autograd formula of diru_fast.scan.ops with it.
OPTIONS = frozenset({"relu", "attention", "dropout"})
