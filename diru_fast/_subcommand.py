"""What every subcommand of ``python -m diru_fast`` is made of, shared by the modules that define them.

:class:`Subcommand` is one entry of the command line's registry (:data:`diru_fast.cli.SUBCOMMANDS`);
:mod:`diru_fast.experiments.cli` and :mod:`diru_fast.analyses.cli` define theirs with it, and
:mod:`diru_fast.cli` puts them together. This module imports nothing of the package, so the
modules that define subcommands and the one that assembles them never import each other.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

__all__ = ["Subcommand", "require", "set_threads"]


@dataclass(frozen=True)
class Subcommand:
    """``run`` gets the parsed ``argparse.Namespace`` and returns the exit code; a *passthrough*
    subcommand owns its parser: its ``run`` gets the raw argument list instead."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable  # (argparse.Namespace) -> int, or (List[str]) -> int when passthrough
    passthrough: bool = False
    description: Optional[str] = None


def require(modules: Sequence[str], what: str) -> None:
    """Exit with the install command if an optional dependency is missing."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"diru_fast: {what} needs {', '.join(missing)}; install it with "
                         f"pip install {' '.join(missing)}  (or: pip install 'diru_fast[experiments]')")


def set_threads(threads: int) -> None:
    """``torch.set_num_threads(threads)`` unless ``threads`` is 0 (torch's default)."""
    import torch

    if threads > 0:
        torch.set_num_threads(threads)
