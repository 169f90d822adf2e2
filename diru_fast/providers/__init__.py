"""Kernel providers: one module per compiled backend, each implementing the kernel contract
of ``diru_fast.scan.contract`` (see ``diru_fast.backends`` for the interface).

The contract's options (``activation``, ``compartment_of`` for attention over compartments, ``mask``
for compartment dropout, ``decay`` for time decay) reach every provider's ``scan_fwd`` / ``scan_bwd``
as their last four arguments (``decay`` only when it is on; time decay: docs/THEORY.md §1.6, §2.3). A provider lists the options its kernels fuse in ``OPTIONS`` (a subset of
:data:`ALL_OPTIONS`); :func:`options_in_use` names those a call needs.
"""

from __future__ import annotations

from typing import FrozenSet, Optional

from torch import Tensor

ALL_OPTIONS: FrozenSet[str] = frozenset({"relu", "attention", "dropout", "time_decay"})


def options_in_use(activation: str, compartment_of: Optional[Tensor], mask: Optional[Tensor],
                   decay: Optional[Tensor] = None) -> FrozenSet[str]:
    """The options a call needs: ``"relu"``, ``"attention"``, ``"dropout"``, ``"time_decay"`` (empty:
    the plain cell)."""
    used = set()
    if decay is not None:
        used.add("time_decay")
    if activation != "tanh":
        used.add(activation)
    if compartment_of is not None:
        used.add("attention")
    if mask is not None:
        used.add("dropout")
    return frozenset(used)


def require_options(name: str, supported: FrozenSet[str], activation: str, compartment_of: Optional[Tensor],
                    mask: Optional[Tensor], decay: Optional[Tensor] = None) -> None:
    """Raise if a call needs an option the provider ``name`` does not fuse (the dispatcher checks
    ``OPTIONS`` first; this guards direct calls)."""
    missing = options_in_use(activation, compartment_of, mask, decay) - supported
    if missing:
        raise NotImplementedError(f"the {name} kernels do not fuse the option(s) {sorted(missing)}")
