"""What every subcommand of ``python -m diru_fast`` is made of, shared by the modules that define them.

:class:`Subcommand` is one entry of the command line's registry (:data:`diru_fast.cli.SUBCOMMANDS`);
:mod:`diru_fast.experiments.cli` and :mod:`diru_fast.analyses.cli` define theirs with it, and
:mod:`diru_fast.cli` puts them together. This module imports nothing of the package, so the
modules that define subcommands and the one that assembles them never import each other.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Callable, NoReturn, Optional, Sequence

__all__ = ["Subcommand", "require", "set_threads", "positive_int", "non_negative_int", "positive_float",
           "backend_name", "device_name", "remember_parser", "usage_error"]


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


# ----------------------------------------------------------------------------- option values
# ``type=`` functions: a bad value is an argparse error ("usage: ... error: argument --x: ..."),
# raised while parsing, before any work starts.


def _int(text: str, lowest: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
    if value < lowest:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def positive_int(text: str) -> int:
    return _int(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _int(text, 0, "an integer >= 0")


def positive_float(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def backend_name(text: str) -> str:
    """A DIRU backend that runs on this machine (``auto`` always does)."""
    from .backends import BACKENDS, available_backends, why_unavailable

    if text not in BACKENDS:
        raise argparse.ArgumentTypeError(f"unknown backend {text!r}; choose one of {', '.join(BACKENDS)}")
    if text != "auto" and text not in available_backends():
        raise argparse.ArgumentTypeError(f"backend {text!r} cannot run here ({why_unavailable(text)}); "
                                         f"available: auto, {', '.join(available_backends())}")
    return text


def device_name(text: str) -> str:
    """``auto`` or a torch device that exists here (``cpu``, ``cuda``, ``cuda:1``, ...)."""
    if text == "auto":
        return text
    import torch

    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device (auto, cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and (not torch.cuda.is_available()
                                  or (device.index or 0) >= torch.cuda.device_count()):
        raise argparse.ArgumentTypeError(f"device {text!r} is not available here (CUDA devices: "
                                         f"{torch.cuda.device_count() if torch.cuda.is_available() else 0})")
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"device {text!r}: the study runs on cpu or cuda")
    return text


def remember_parser(p: argparse.ArgumentParser) -> None:
    """Keep the subcommand's parser in its namespace, for :func:`usage_error`."""
    p.set_defaults(_parser=p)


def usage_error(args: argparse.Namespace, message: str) -> NoReturn:
    """A value that only a combination of options makes wrong: an argparse error (usage, the message,
    exit status 2), raised by the subcommand's ``run`` before it starts any work."""
    parser = getattr(args, "_parser", None)
    if parser is None:
        raise SystemExit(f"error: {message}")
    parser.error(message)
