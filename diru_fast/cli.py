"""The command line: ``python -m diru_fast <subcommand> ...`` (or the ``diru-fast`` console script).

Subcommands live in one registry, :data:`SUBCOMMANDS` (name -> :class:`Subcommand`), put together
here from the study's (:mod:`diru_fast.experiments.cli`: ``demo``, ``study``, ``train``), the
benchmark (``bench``) and the analyses' (:mod:`diru_fast.analyses.cli`). A new analysis adds its
entry to ``diru_fast.analyses.cli.SUBCOMMANDS``; other code can add one with :func:`register`::

    register("mycmd", "one-line help", add_arguments=lambda p: p.add_argument(...), run=lambda args: 0)

``run`` gets the parsed ``argparse.Namespace`` and returns the exit code. A *passthrough*
subcommand (``bench``) owns its parser: its ``run`` gets the raw argument list instead.
The modules that define subcommands import only :mod:`diru_fast._subcommand`, never this one.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Callable, Dict, List, Optional, Sequence

from ._subcommand import Subcommand
from .analyses import cli as analyses_cli
from .experiments import cli as experiments_cli
from .experiments import real_cli
from .experiments.cli import DEMO_DEFAULTS

__all__ = ["Subcommand", "SUBCOMMANDS", "register", "main", "DEMO_DEFAULTS"]


def _run_bench(argv: List[str]) -> int:
    from . import benchmarking

    return benchmarking.main(argv)


def _selftest_arguments(parser: argparse.ArgumentParser) -> None:
    from . import selftest

    selftest.add_arguments(parser)


def _run_selftest(args: argparse.Namespace) -> int:
    from . import selftest

    return selftest.main(args)


# In the order ``--help`` lists them.
SUBCOMMANDS: Dict[str, Subcommand] = {
    **experiments_cli.SUBCOMMANDS,
    "bench": Subcommand("speed/memory benchmark vs nn.LSTM (see `python -m diru_fast bench --help`)",
                        lambda p: None, _run_bench, passthrough=True),
    **analyses_cli.SUBCOMMANDS,
    **real_cli.SUBCOMMANDS,
    "selftest": Subcommand("check every backend here against the float64 kernel contract (run it first on a "
                           "new machine; exit 1 on any failure)", _selftest_arguments, _run_selftest,
                           description="Every backend that runs here, each dtype it supports: outputs and "
                           "gradients of a 2-layer bidirectional layer with lengths, and of each kernel's "
                           "size classes, against the float64 kernel contract (docs/THEORY.md), the error "
                           "beside its tolerance; versions first. Exit 1 on any failure."),
}


def register(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None],
             run: Callable, *, passthrough: bool = False, description: Optional[str] = None) -> None:
    """Add (or replace) subcommand ``name``."""
    SUBCOMMANDS[name] = Subcommand(help, add_arguments, run, passthrough, description)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="diru_fast", description="Dendrite-Inspired Recurrent Units: quick demo, the prototype's "
        "study (DIRU vs LSTM vs GRU over seeds), single training runs and speed benchmarks.")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for name, cmd in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.description or cmd.help,
                           add_help=not cmd.passthrough,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        if not cmd.passthrough:
            cmd.add_arguments(p)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS and SUBCOMMANDS[argv[0]].passthrough:
        return int(SUBCOMMANDS[argv[0]].run(argv[1:]) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    args.command_line = "python -m diru_fast " + shlex.join(argv)
    return int(SUBCOMMANDS[args.command].run(args) or 0)
