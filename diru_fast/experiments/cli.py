"""The study's subcommands of ``python -m diru_fast``: ``demo``, ``study`` and ``train``.

:data:`SUBCOMMANDS` maps each name to its :class:`~diru_fast._subcommand.Subcommand`;
:mod:`diru_fast.cli` puts them into the command line. Every option's module (the study, the
datasets, training) is imported when the parser is built or the command runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Dict

from .._subcommand import (Subcommand, backend_name, device_name, non_negative_int, positive_float, positive_int,
                           remember_parser, require, set_threads, usage_error)
from .options import add_option_arguments, options_from_args

__all__ = ["SUBCOMMANDS", "DEMO_DEFAULTS"]


# ------------------------------------------------------------------------- options of every command


def _add_common(p: argparse.ArgumentParser, out: str) -> None:
    # Every option has a help text: the command line's formatter appends each default to it, once.
    remember_parser(p)
    p.add_argument("--out", type=Path, default=Path(out), help="output directory")
    p.add_argument("--threads", type=non_negative_int, default=1,
                   help="torch threads per process (0: torch's default). 1 is fastest for these small "
                        "models and keeps results reproducible")
    p.add_argument("--device", type=device_name, default="auto",
                   help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--backend", type=backend_name, default="auto",
                   help="DIRU backend: auto, cpu, torch, triton, cuda, reference (one that runs here: see "
                        "diru_fast.available_backends())")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_study_arguments(p: argparse.ArgumentParser, d: Dict[str, object], out: str) -> None:
    from .datasets import TASKS
    from .models import MODELS
    from .study import MATCH_CHOICES, StudyConfig

    base = StudyConfig()
    get = lambda name: d.get(name, getattr(base, name))  # noqa: E731
    _add_common(p, out)
    p.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(get("tasks")), metavar="TASK",
                   help=f"tasks to run: {', '.join(TASKS)}")
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(get("models")), metavar="MODEL",
                   help=f"models to compare: {', '.join(MODELS)}")
    p.add_argument("--seeds", type=positive_int, default=get("seeds"), help="number of seeds (runs per task and model)")
    p.add_argument("--first-seed", type=non_negative_int, default=get("first_seed"),
                   help="the first seed: runs use first-seed .. first-seed + seeds - 1")
    p.add_argument("--n-train", type=positive_int, default=get("n_train"), help="training sequences")
    p.add_argument("--n-val", type=positive_int, default=get("n_val"),
                   help="validation sequences (they pick each run's best epoch)")
    p.add_argument("--n-test", type=positive_int, default=get("n_test"),
                   help="test sequences (they score the best epoch's weights: the primary metric)")
    p.add_argument("--seq-len", type=positive_int, default=get("seq_len"), help="sequence length T")
    p.add_argument("--raw-scale", action="store_true",
                   help="train on the raw scale (the prototype's); default: inputs and targets standardised with "
                        "the training split's mean and std, MSEs in standardised units with raw units beside")
    p.add_argument("--normalize", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old commands
    p.add_argument("--prototype", action="store_true",
                   help="the prototype's literal recipe: raw scale, Adam lr --lr for every model (no tuning), no "
                        "clipping, --epochs fixed epochs (50 unless given), DIRU vs LSTM vs GRU")
    p.add_argument("--lr-grid", type=positive_float, nargs="*", default=list(get("lr_grid")), metavar="LR",
                   help="Adam learning rates tried per (task, model), picked on validation over the tuning seeds; "
                        "one value or none: no tuning (the demo then uses the rates the full study picked, --lr "
                        "overrides them)")
    p.add_argument("--tune-seeds", type=positive_int, default=get("tune_seeds"),
                   help="tuning seeds per learning rate (disjoint from the test seeds)")
    p.add_argument("--tune-first-seed", type=non_negative_int, default=get("tune_first_seed"),
                   help="the first tuning seed")
    p.add_argument("--clip", type=float, default=get("clip_norm"),
                   help="clip the gradients' global norm to this before each step (0: off)")
    p.add_argument("--patience", type=non_negative_int, default=get("patience"),
                   help="early stopping: epochs without a better validation MSE (0: train every epoch)")
    p.add_argument("--reuse", type=Path, nargs="+", default=[], metavar="DIR",
                   help="take finished runs from these studies' results.json (same settings; DIRU runs only "
                        "from a study with the same --backend)")
    p.add_argument("--pool-with", type=Path, default=None, metavar="DIR",
                   help="also write pooled-report.md: this study pooled with DIR's, a study that differs only "
                        "in DIRU's backend (each seed's DIRU MSE: the geometric mean over the two backends)")
    p.add_argument("--hidden", type=positive_int, default=get("hidden_size"), help="hidden size of every model")
    p.add_argument("--compartments", type=positive_int, default=argparse.SUPPRESS,
                   help=f"DIRU compartments k (must divide --hidden); {get('num_compartments')}, or the number "
                        "of --compartment-sizes, when left out")
    p.add_argument("--batch-size", type=positive_int, default=get("batch_size"), help="mini-batch size")
    p.add_argument("--lr", type=positive_float, default=get("lr"),
                   help="Adam learning rate of --prototype (or with a one-value --lr-grid, use that)")
    p.add_argument("--epochs", type=positive_int, default=get("epochs"),
                   help="the epoch cap per run (early stopping usually ends a run first; the best-validation "
                        "epoch's weights are scored)")
    p.add_argument("--match-params", nargs="?", const="on", default=get("match_params"), choices=MATCH_CHOICES,
                   help="size the baselines to DIRU's parameter count: '--match-params' alone replaces the "
                        "default-size baselines, '--match-params both' runs both sizes")
    p.add_argument("--workers", type=positive_int, default=d.get("workers", 1),
                   help="spread independent runs over this many processes (helps only with idle cores)")
    p.add_argument("--resume", action="store_true", help="reuse finished runs of an earlier results.json in --out")
    p.add_argument("--verbose", action="store_true", help="also a progress bar per run")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    add_option_arguments(p)
    p.set_defaults(default_compartments=get("num_compartments"))


def _study_config(args: argparse.Namespace):
    """The study's settings; a combination the study cannot run is a usage error, raised here."""
    from .study import StudyConfig

    _check_compartments(args)
    _check_backend_on_device(args)
    if args.raw_scale and args.normalize:
        usage_error(args, "--raw-scale and --normalize contradict each other (standardised is the default)")
    kwargs = dict(tasks=tuple(args.tasks), models=tuple(args.models), seeds=args.seeds,
                  first_seed=args.first_seed, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test,
                  seq_len=args.seq_len, normalize=not args.raw_scale, hidden_size=args.hidden,
                  num_compartments=args.compartments, batch_size=args.batch_size, lr=args.lr, epochs=args.epochs,
                  match_params=args.match_params, backend=args.backend, device=args.device,
                  options=options_from_args(args), lr_grid=tuple(args.lr_grid), tune_seeds=args.tune_seeds,
                  tune_first_seed=args.tune_first_seed, clip_norm=args.clip, patience=args.patience)
    try:
        if args.prototype:
            given = {k: kwargs[k] for k in ("tasks", "seeds", "first_seed", "n_test", "seq_len", "hidden_size",
                                            "num_compartments", "batch_size", "lr", "match_params", "backend",
                                            "device", "options")}
            if "--models" in getattr(args, "command_line", ""):
                given["models"] = kwargs["models"]
            for opt, key in (("--epochs", "epochs"), ("--n-train", "n_train"), ("--n-val", "n_val")):
                if opt in getattr(args, "command_line", ""):
                    given[key] = kwargs[key]
            return StudyConfig.prototype(**given)
        return StudyConfig(**kwargs)
    except ValueError as exc:
        usage_error(args, str(exc))


def _check_compartments(args: argparse.Namespace) -> None:
    """Resolve ``args.compartments`` (left out: the default, or the number of --compartment-sizes) and
    check it against --hidden and --compartment-sizes."""
    sizes, given = args.compartment_sizes, getattr(args, "compartments", None)
    if sizes is not None:
        if given is not None and given != len(sizes):
            usage_error(args, f"--compartments {given} disagrees with --compartment-sizes "
                              f"{','.join(map(str, sizes))} ({len(sizes)} compartments): pass one of them")
        if sum(sizes) != args.hidden:
            usage_error(args, f"--compartment-sizes {','.join(map(str, sizes))} sum to {sum(sizes)}, "
                              f"not --hidden {args.hidden}")
        args.compartments = len(sizes)
        return
    args.compartments = args.default_compartments if given is None else given
    if args.hidden % args.compartments:
        usage_error(args, f"--compartments {args.compartments} must divide --hidden {args.hidden}")


def _check_backend_on_device(args: argparse.Namespace, dtype: str = "float32") -> None:
    """--backend must run on --device's tensors (each option alone is checked while parsing)."""
    import torch

    from ..backends import BackendUnavailableError, resolve_backend
    from .distributed import resolve_device

    try:
        resolve_backend(args.backend, resolve_device(args.device), getattr(torch, dtype),
                        options_from_args(args).in_use())
    except BackendUnavailableError as exc:
        usage_error(args, f"--backend {args.backend} --device {args.device}: {exc}")


def _run_study_pipeline(args: argparse.Namespace, title: str, lr_table=None, extra=None) -> int:
    """Run the study (or the demo) and write its report; ``extra(results)`` -> a markdown section appended
    to the report and printed (the demo's agreement with the full study)."""
    from . import distributed, plots, report, study

    start = time.perf_counter()
    config = _study_config(args)
    if lr_table is not None and not config.tuned:
        config.lr_table = lr_table
    require((["tqdm"] if not args.quiet else []) + ([] if args.no_plots else ["matplotlib"]),
            f"`{args.command}` with progress bars and plots (see --quiet, --no-plots)")
    set_threads(args.threads)
    ctx = distributed.init_from_env(args.device)
    try:
        results = study.run_study(config, args.out, ctx=ctx, workers=args.workers, threads=args.threads,
                                  resume=args.resume, progress=not args.quiet, verbose=args.verbose,
                                  command=args.command_line, reuse=args.reuse)
        if not ctx.is_main:
            return 0
        path = report.write_report(results, args.out, title)
        if extra is not None:
            from .io import atomic_write_text

            atomic_write_text(path, path.read_text(encoding="utf-8") + "\n" + extra(results) + "\n")
        if args.pool_with is not None:
            pooled = report.pool_backends(results, study.load_results(args.pool_with))
            path = report.write_report(pooled, args.out, title + " (DIRU pooled over backends)", "pooled-report.md")
        written = [] if args.no_plots else plots.write_plots(results, args.out)
    finally:
        distributed.shutdown(ctx)
    text = report.markdown_report(results, title)
    print(text[text.index("## Headline"):text.index("## Results")].rstrip())
    print(text[text.index("## DIRU's relative"):text.index("## Power")].rstrip())
    if extra is not None:
        print("\n" + extra(results))
    print(f"\nwrote {path}, {args.out / study.RESULTS_JSON}, {args.out / study.RESULTS_CSV}"
          + "".join(f", {p}" for p in written))
    print(f"total wall time {time.perf_counter() - start:.1f} s")
    return 0


# ---------------------------------------------------------------------------------- demo/study

# The study's protocol at a small budget, sized to end within 60 s on a quiet 2-core CPU (two worker
# processes of one thread): no tuning (each model trains at the rate the full study picked for it:
# demo.DEMO_LR), fewer seeds and sequences, a shorter cap.
DEMO_DEFAULTS: Dict[str, object] = dict(seeds=3, n_train=384, n_val=64, n_test=128, seq_len=30, epochs=30,
                                        patience=8, lr_grid=(), workers=2)


def _add_demo(p: argparse.ArgumentParser) -> None:
    _add_study_arguments(p, DEMO_DEFAULTS, "diru_demo")


def _run_demo(args: argparse.Namespace) -> int:
    from . import demo

    table = None if "--lr" in args.command_line.split() else demo.DEMO_LR
    return _run_study_pipeline(args, "Quick demo: DIRU vs LSTM and GRU, the study's protocol at a small budget",
                               lr_table=table, extra=demo.agreement_section)


STUDY_TITLE = "DIRU vs LSTM and GRU on the prototype's tasks, every model tuned alike"


def _add_study(p: argparse.ArgumentParser) -> None:
    _add_study_arguments(p, {}, "diru_study")


def _run_study(args: argparse.Namespace) -> int:
    return _run_study_pipeline(args, STUDY_TITLE)


# ------------------------------------------------------------------------------------- train


def _add_train(p: argparse.ArgumentParser) -> None:
    from .datasets import TASKS
    from .models import MODELS

    _add_common(p, "diru_train")
    p.add_argument("--task", default="sine", choices=list(TASKS), help="the task to train on")
    p.add_argument("--model", default="diru", choices=list(MODELS), help="the model to train")
    p.add_argument("--seed", type=non_negative_int, default=0, help="data, initialisation and shuffling derive from it")
    p.add_argument("--n-train", type=positive_int, default=800, help="training sequences")
    p.add_argument("--n-val", type=positive_int, default=200, help="validation sequences")
    p.add_argument("--seq-len", type=positive_int, default=50, help="sequence length T")
    p.add_argument("--hidden", type=positive_int, default=64, help="hidden size")
    p.add_argument("--compartments", type=positive_int, default=argparse.SUPPRESS,
                   help="DIRU compartments k (must divide --hidden); 4, or the number of --compartment-sizes, "
                        "when left out")
    p.add_argument("--batch-size", type=positive_int, default=32, help="global batch (split over torchrun ranks)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate")
    p.add_argument("--epochs", type=positive_int, default=50, help="total epochs (a resumed run continues up to it)")
    p.add_argument("--patience", type=non_negative_int, default=0,
                   help="early stopping: stop after this many epochs without a better validation loss (0: off)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="parameter and data dtype")
    p.add_argument("--raw-scale", action="store_true",
                   help="train on the raw scale (otherwise inputs and targets are standardised with the training "
                        "split's mean and std, MSEs in standardised units; the statistics go into the checkpoint)")
    p.add_argument("--clip", type=float, default=1.0, help="clip the gradients' global norm (0: off)")
    p.add_argument("--resume-from", type=Path, default=None, help="a checkpoint.pt to continue from")
    p.add_argument("--save-all-ranks", action="store_true",
                   help="under torchrun, every rank writes checkpoint.rank<r>.pt (to check they agree)")
    add_option_arguments(p)
    p.set_defaults(default_compartments=4)


def _run_train(args: argparse.Namespace) -> int:
    import json

    import torch

    from . import distributed
    from .datasets import make_dataset
    from .io import atomic_write_text
    from .models import ModelSpec, count_params
    from .study import derive_seed
    from .training import TrainConfig, load_checkpoint, save_checkpoint, train

    if args.model == "diru":
        _check_compartments(args)
        _check_backend_on_device(args, args.dtype)
    else:
        args.compartments = getattr(args, "compartments", args.default_compartments)
    if args.resume_from is not None and not args.resume_from.is_file():
        usage_error(args, f"--resume-from {args.resume_from}: no such file")
    require([] if args.quiet else ["tqdm"], "`train` with a progress bar (see --quiet)")
    set_threads(args.threads)
    ctx = distributed.init_from_env(args.device)
    dtype = getattr(torch, args.dtype)
    try:
        train_set = make_dataset(args.task, args.n_train, args.seq_len, derive_seed(args.task, args.seed, "train"))
        val_set = make_dataset(args.task, args.n_val, args.seq_len, derive_seed(args.task, args.seed, "val"))
        stats = None
        if not args.raw_scale:
            from .study import _Standardised, standardisation

            stats = standardisation(train_set)  # the training split's statistics only
            train_set, val_set = _Standardised(train_set, stats), _Standardised(val_set, stats)
        if dtype != torch.float32:
            for ds in (train_set, val_set):
                ds.x, ds.y = ds.x.to(dtype), ds.y.to(dtype)
        optimizer = history = None
        if args.resume_from is not None:
            ckpt = load_checkpoint(args.resume_from, map_location=ctx.device, lr=args.lr)
            model, spec, optimizer, history = ckpt["model"], ckpt["spec"], ckpt["optimizer"], ckpt["history"]
        else:
            spec = ModelSpec.create(args.model, 1, args.hidden, 1, args.compartments, args.backend,
                                    options_from_args(args))
            torch.manual_seed(derive_seed(args.task, args.seed, "init"))
            model = spec.build().to(device=ctx.device, dtype=dtype)
            optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                          shuffle_seed=derive_seed(args.task, args.seed, "shuffle"), patience=args.patience or None,
                          progress=not args.quiet, desc=f"{args.task}/{spec.kind}", clip_norm=args.clip or None)
        history = train(model, train_set, val_set, cfg, ctx=ctx, optimizer=optimizer, history=history)
        extra = {"task": args.task, "seed": args.seed, "world_size": ctx.world_size, "command": args.command_line,
                 "model_spec": spec.to_dict(), "units": "raw" if stats is None else "standardized",
                 "standardisation": None if stats is None else dict(zip(("x_mean", "x_std", "y_mean", "y_std"), stats))}
        if args.save_all_ranks:
            save_checkpoint(args.out / f"checkpoint.rank{ctx.rank}.pt", model, spec, optimizer, history, extra)
        if ctx.is_main:
            path = save_checkpoint(args.out / "checkpoint.pt", model, spec, optimizer, history, extra)
            atomic_write_text(args.out / "history.json", json.dumps(dict(history.to_dict(), **extra,
                                                                         params=count_params(model)), indent=1))
            print(f"{args.task}/{spec.kind} d={spec.hidden_size} ({count_params(model):,} params), "
                  f"{history.epochs} epochs: train {history.train_loss[-1]:.5g}, val {history.val_loss[-1]:.5g} "
                  f"({extra['units']} units); "
                  f"wrote {path}")
    finally:
        distributed.shutdown(ctx)
    return 0


SUBCOMMANDS: Dict[str, Subcommand] = {
    "demo": Subcommand(
        "quick DIRU vs LSTM/GRU study at small size (well under a minute on a laptop CPU)", _add_demo, _run_demo,
        description="Run the prototype's three tasks at small size over a few seeds, print the table and the "
                    "verdicts, write report.md, results.json/.csv and PNG plots to --out."),
    "study": Subcommand(
        "the prototype's full study: 3 tasks x DIRU/LSTM/GRU x seeds, report + plots", _add_study, _run_study,
        description="The prototype's study with its defaults (800/200 samples, T=50, hidden 64, 50 epochs), "
                    "over several seeds, with confidence intervals and a verdict on each of the prototype's "
                    "claims. Start it under torchrun to train every run data-parallel."),
    "train": Subcommand("train one model on one task (checkpoint + history); DDP under torchrun",
                        _add_train, _run_train),
    "irregular": Subcommand("irregularly sampled series: DIRU's Δt feature vs time decay vs LSTM/GRU over seeds",
                            lambda p: _irregular().add_arguments(p), lambda args: _irregular().main(args)),
}
_irregular = lambda: __import__("diru_fast.experiments.irregular", fromlist=["main"])  # noqa: E731
