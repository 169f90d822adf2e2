"""The command-line entries of the real-data studies: ``lm`` (word-level language model),
``ucr`` (UCR/UEA time-series classification, needs ``pip install 'diru_fast[benchmarks]'``) and
``stability`` (the stable learning-rate range per cell and optimizer). Each module is imported only
when its subcommand is used."""

from __future__ import annotations

import argparse
import importlib
from typing import Dict

from .._subcommand import Subcommand

__all__ = ["SUBCOMMANDS"]


def _entry(module: str, help: str) -> Subcommand:
    def add(p: argparse.ArgumentParser) -> None:
        importlib.import_module(f"diru_fast.experiments.{module}").add_arguments(p)

    def run(args: argparse.Namespace) -> int:
        return importlib.import_module(f"diru_fast.experiments.{module}").run(args)

    return Subcommand(help, add, run)


SUBCOMMANDS: Dict[str, Subcommand] = {
    "lm": _entry("lm_study", "word-level language model on a real text (Shakespeare): DIRU vs LSTM vs GRU, "
                             "each at its own tuned lr, perplexity and time per epoch over seeds"),
    "ucr": _entry("ucr", "UCR/UEA time-series classification (the sets aeon ships): DIRU vs LSTM vs GRU "
                         "and MiniRocket, accuracy over seeds (needs the [benchmarks] extra)"),
    "stability": _entry("stability", "stable learning-rate range of DIRU, LSTM and GRU per optimizer on the "
                                     "word-level language model, with saturation and gradient diagnostics"),
}
