"""The analyses' subcommands of ``python -m diru_fast`` (:data:`SUBCOMMANDS`, put into the command line
by :mod:`diru_fast.cli`).

``specialization``, ``gradient-flow``, ``memory-capacity``, ``real-data``: run one analysis (its
options are its config's fields, e.g. ``--seeds 5 --epochs 10``), write ``<out>/<analysis>.json`` and
``<out>/<analysis>.png``, and rewrite the report (default ``<out>/ANALYSES.md``) from every JSON in
``<out>``. ``analyses`` runs all four at their defaults (or ``--only`` some), or with
``--report-only`` just rewrites the report. Everything runs on the CPU. DIRU's cell options
(``--activation``, ``--compartment-attention``, ``--compartment-sizes``, ``--compartment-dropout``:
:mod:`diru_fast.experiments.options`) go to every DIRU an analysis trains (also under ``analyses``)
and are recorded in its config (``config.options``).

``--out`` defaults to a folder of its own, ``diru_analyses/``: run from the repository root, the
analyses never write over the committed ``results/`` unless asked to
(``--out results/analyses --report results/ANALYSES.md`` regenerates those).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import time
import typing
from pathlib import Path
from typing import Any, Callable, Dict, Optional

from .._subcommand import (Subcommand, backend_name, non_negative_int, positive_float, positive_int,
                           remember_parser, require, set_threads, usage_error)

__all__ = ["ANALYSIS_COMMANDS", "SUBCOMMANDS", "run_analysis"]

DEFAULT_OUT = Path("diru_analyses")  # a folder of its own: never the committed results/
REPORT_IN_OUT = Path("<out>/ANALYSES.md")  # --report's default, shown as such: ANALYSES.md in --out


def _spec(name: str):
    """(config class, run function) of an analysis, imported on use (keeps ``--help`` fast)."""
    if name == "specialization":
        from .specialization import SpecializationConfig, run_specialization

        return SpecializationConfig, run_specialization
    if name == "gradient_flow":
        from .gradient_flow import GradientFlowConfig, run_gradient_flow

        return GradientFlowConfig, run_gradient_flow
    if name == "memory_capacity":
        from .memory_capacity import MemoryCapacityConfig, run_memory_capacity

        return MemoryCapacityConfig, run_memory_capacity
    if name == "real_data":
        from .real_data import RealDataConfig, run_real_data

        return RealDataConfig, run_real_data
    raise ValueError(f"unknown analysis {name!r}")


ANALYSIS_COMMANDS = {"specialization": "specialization", "gradient-flow": "gradient_flow",
                     "memory-capacity": "memory_capacity", "real-data": "real_data"}
HELP = {
    "specialization": "do DIRU's compartments specialize to frequencies? (index vs permutation null, vs k, vs init)",
    "gradient_flow": "||dh_T/ds_t|| vs T-t for DIRU, LSTM (forget bias 0 and 1), GRU, tanh RNN (same d and "
                     "matched parameters), at init and after training",
    "memory_capacity": "memory-task error vs delay for k = 1, 2, 4, 8 compartments at a fixed parameter count",
    "real_data": "DIRU vs LSTM vs GRU at equal parameters on sklearn digits and statsmodels sunspots (rolling origin)",
}
_SKIP = {"backend", "options"}  # shared options (DIRU's cell options: diru_fast.experiments.options)
FIELD_HELP = {
    "ks": "numbers of compartments k", "seeds": "number of seeds", "first_seed": "the first seed",
    "n_train": "training sequences", "n_val": "validation sequences", "seq_len": "sequence length T",
    "seq_lens": "sequence lengths T (delay = T - 5)", "hidden_size": "hidden size d of every model",
    "epochs": "training epochs: the cap where the analysis stops early (--patience), else fixed",
    "batch_size": "mini-batch size", "lr": "Adam learning rate",
    "n_test": "test sequences (scored with the best validation epoch's weights)",
    "patience": "early stopping: epochs without a better validation loss",
    "lr_grid": "Adam learning rates tried per model on the tuning seeds (one value: no tuning)",
    "tune_seeds": "tuning seeds per learning rate", "tune_first_seed": "the first tuning seed (apart from the test seeds)",
    "tune_k": "DIRU's k at which its learning rate is tuned (0: every k)",
    "clip": "gradient clipping: global L2 norm, every model", "lstm_control": "the LSTM control (unit selectivity)",
    "sunspots_origins": "rolling-origin test blocks on sunspots", "sunspots_test_years": "target years per test block",
    "n_perm": "random partitions in the permutation null", "burn_in": "first steps left out of the spectra",
    "models": "models: diru, lstm, lstm_fb1, gru, rnn, rnn_matched", "num_compartments": "DIRU compartments k",
    "n_probe": "validation sequences the Jacobians are averaged over", "norm": "matrix norm: 2 (spectral) or fro",
    "rnn_reference": "the tanh-RNN reference curve", "datasets": "data sets: digits, sunspots",
    "digits_hidden": "DIRU hidden size on digits", "digits_epochs": "epochs on digits",
    "sunspots_hidden": "DIRU hidden size on sunspots", "sunspots_epochs": "epochs on sunspots",
    "sunspots_window": "past years per sunspot window", "val_fraction": "validation share of the digits",
}
# Fields whose values come from a list (the name of that tuple in the config's module), and the
# integer fields that may be 0; every other int field must be positive, every float field too.
FIELD_CHOICES = {"models": "ANALYSIS_MODELS", "datasets": "DATASETS"}
LITERAL_CHOICES = {"norm": ("2", "fro")}
NON_NEGATIVE = {"first_seed", "burn_in", "tune_k"}


def _add_shared(p: argparse.ArgumentParser) -> None:
    remember_parser(p)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for <analysis>.json and .png")
    p.add_argument("--report", type=Path, default=REPORT_IN_OUT,
                   help="markdown report rewritten from every analysis JSON in --out")
    p.add_argument("--variant", type=Path, action="append", default=[], metavar="DIR",
                   help="also report the analyses in DIR (the same analyses run with other DIRU cell options, "
                        "e.g. results/analyses-attention) under each plain one; repeatable")
    p.add_argument("--threads", type=non_negative_int, default=1,
                   help="torch threads (0: torch's default); 1 is fastest for these small models")
    p.add_argument("--backend", type=backend_name, default="auto",
                   help="DIRU backend: auto, cpu, torch, triton, cuda, reference (one that runs here: see "
                        "diru_fast.available_backends())")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figure")
    from ..experiments.options import add_option_arguments

    add_option_arguments(p)


def _value_type(name: str, kind: type):
    """The ``type=`` of a field's values: checked numbers (a bad one is an argparse error)."""
    if kind is int:
        return non_negative_int if name in NON_NEGATIVE else positive_int
    if kind is float:
        return positive_float
    return kind


def _add_config_fields(p: argparse.ArgumentParser, config_cls) -> None:
    """One option per config field: ``--field-name``; tuples take several values, booleans a switch.
    Every field needs its help text in :data:`FIELD_HELP`."""
    hints = typing.get_type_hints(config_cls)
    module = importlib.import_module(config_cls.__module__)
    for f in dataclasses.fields(config_cls):
        if f.name in _SKIP:
            continue
        flag = "--" + f.name.replace("_", "-")
        default, help_text = f.default, FIELD_HELP[f.name]
        choices = (list(getattr(module, FIELD_CHOICES[f.name])) if f.name in FIELD_CHOICES
                   else LITERAL_CHOICES.get(f.name))
        if isinstance(default, bool):
            if default:
                p.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false",
                               help="leave out " + help_text)
            else:
                p.add_argument(flag, dest=f.name, action="store_true", help=help_text)
        elif isinstance(default, tuple):
            args = typing.get_args(hints[f.name])
            p.add_argument(flag, dest=f.name, nargs="+", type=_value_type(f.name, args[0] if args else str),
                           default=list(default), choices=choices, help=help_text)
        else:
            p.add_argument(flag, dest=f.name, type=_value_type(f.name, type(default)), default=default,
                           choices=choices, help=help_text)


def _config(name: str, args: argparse.Namespace, *, at_defaults: bool = False):
    """The analysis' config from the options (``at_defaults``: only --backend); a combination it
    cannot run (e.g. a k that does not divide the hidden size) is a usage error, raised here."""
    from ..experiments.options import options_from_args

    config_cls, _ = _spec(name)
    values = {} if at_defaults else {f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)
                                     if f.name not in _SKIP and hasattr(args, f.name)}
    import torch

    from ..backends import BackendUnavailableError, resolve_backend

    options = options_from_args(args)
    try:
        resolve_backend(args.backend, torch.device("cpu"), torch.float32, options.in_use())
    except BackendUnavailableError as exc:
        usage_error(args, f"--backend {args.backend}: {exc}")
    try:
        return config_cls(backend=args.backend, options=options, **values)
    except ValueError as exc:
        usage_error(args, str(exc))


def _report(args: argparse.Namespace) -> Path:
    return Path(args.out) / "ANALYSES.md" if args.report == REPORT_IN_OUT else args.report


def run_analysis(name: str, config, out: Path, report: Optional[Path], *, command: str = "", threads: int = 1,
                 quiet: bool = False, plots: bool = True, variants=()) -> Dict[str, Any]:
    """Run analysis ``name`` with ``config``; write its JSON (and figure) under ``out``; rewrite ``report``."""
    import torch

    from ..backends import resolve_backend
    from .common import environment, write_json
    from .report import write_analyses_report

    _, run = _spec(name)
    say: Optional[Callable[[str], None]] = None if quiet else (lambda msg: print(f"[{name}] {msg}", flush=True))
    start = time.perf_counter()
    result = run(config, progress=say)
    result["meta"] = dict(environment(command, threads), wall_s=time.perf_counter() - start,
                          device_type="cpu", diru_backend=resolve_backend(config.backend, torch.device("cpu"),
                                                                          torch.float32, config.options.in_use()))
    out = Path(out)
    write_json(out / f"{name}.json", result)
    written = [out / f"{name}.json"]
    if plots:
        from .plots import write_plot

        written.append(write_plot(result, out))
    if report is not None:
        written.append(write_analyses_report(out, report, variants))
    if not quiet:
        print(f"[{name}] wrote " + ", ".join(map(str, written)) + f" ({time.perf_counter() - start:.0f} s)")
    return result


def _print_verdicts(out: Path) -> None:
    from .report import load_results, verdict_summary

    for row in verdict_summary(load_results(out)):
        print(f"- {row['claim']}: {row['verdict'].upper()} ({row['headline']})")


def _runner(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        config = _config(name, args)
        _require_for(name, plots=not args.no_plots)
        set_threads(args.threads)
        run_analysis(name, config, args.out, _report(args), command=args.command_line,
                     threads=args.threads, quiet=args.quiet, plots=not args.no_plots, variants=args.variant)
        _print_verdicts(args.out)
        return 0

    return run


def _require_for(name: str, plots: bool) -> None:
    needed = (["matplotlib"] if plots else []) + {"memory_capacity": ["statsmodels", "scipy"],
                                                  "real_data": ["sklearn", "statsmodels"]}.get(name, [])
    if needed:
        require(needed, f"the {name.replace('_', '-')} analysis")


def _add_all(p: argparse.ArgumentParser) -> None:
    _add_shared(p)
    p.add_argument("--only", nargs="+", choices=list(ANALYSIS_COMMANDS), default=list(ANALYSIS_COMMANDS),
                   help="run only these analyses (each at its defaults)")
    p.add_argument("--report-only", action="store_true", help="run nothing: rewrite --report from the JSONs in --out")


def _run_all(args: argparse.Namespace) -> int:
    from .report import write_analyses_report

    if args.report_only:
        path = write_analyses_report(args.out, _report(args), args.variant)
        print(f"wrote {path}")
        _print_verdicts(args.out)
        return 0
    names = [ANALYSIS_COMMANDS[command] for command in args.only]
    configs = [_config(name, args, at_defaults=True) for name in names]
    for name in names:  # every missing package is reported before the first analysis starts
        _require_for(name, plots=not args.no_plots)
    set_threads(args.threads)
    options = _option_flags(args)
    for command, name, config in zip(args.only, names, configs):
        run_analysis(name, config, args.out, _report(args),
                     command=f"python -m diru_fast {command}{options} --threads {args.threads}", threads=args.threads,
                     quiet=args.quiet, plots=not args.no_plots, variants=args.variant)
    _print_verdicts(args.out)
    return 0


def _option_flags(args: argparse.Namespace) -> str:
    """The cell options of ``args`` as command-line flags (" --compartment-attention ..."; "" when plain)."""
    from ..experiments.options import options_from_args

    flags = []
    for key, value in options_from_args(args).kwargs().items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        else:
            flags.append(f"{flag} {','.join(map(str, value)) if isinstance(value, list) else value}")
    return "".join(" " + f for f in flags)


def _adder(name: str) -> Callable[[argparse.ArgumentParser], None]:
    def add(p: argparse.ArgumentParser) -> None:
        _add_shared(p)
        _add_config_fields(p, _spec(name)[0])

    return add


SUBCOMMANDS: Dict[str, Subcommand] = {
    **{command: Subcommand(HELP[name], _adder(name), _runner(name),
                           description=HELP[name] + ". Writes <out>/" + name + ".json and .png and rewrites the "
                           "report (<out>/ANALYSES.md): the claim, the measurement, the verdict.")
       for command, name in ANALYSIS_COMMANDS.items()},
    "analyses": Subcommand(
        "run every analysis of the prototype's claims at its defaults and write <out>/ANALYSES.md", _add_all,
        _run_all, description="Specialization, gradient flow, memory capacity and real data, each at its defaults "
        "(a few minutes each on one CPU thread); --report-only rewrites the report from existing JSONs."),
}
