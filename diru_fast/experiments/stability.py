"""The stable learning-rate range of DIRU, LSTM and GRU on the word-level language model
(:mod:`diru_fast.experiments.lm`), per optimizer, and what happens inside DIRU where it diverges.

Rules (fixed before the runs; the report prints them first):

- one run = one (cell, optimizer, lr, clip, seed) trained for ``epochs`` epochs on the corpus's first
  ``train_tokens`` training tokens; SGD as in PyTorch's example (lr divided by 4 when validation loss
  does not improve), Adam at a fixed lr; gradient clipping by global norm;
- a run *diverged* (non-finite loss, or last validation loss no better than the uniform guess) or
  *trains* (best validation loss below the unigram model's) or neither (*slow*);
- the *training range* of a cell is the set of grid lrs where every seed trains; the *divergence
  threshold* is the smallest lr where any seed diverged; the *best lr* has the lowest mean best
  validation loss;
- diagnostics (DIRU and the baselines alike): the fraction of units with |h| > 0.99, the gradient
  norm before clipping, the largest singular value of each recurrent weight block, at the end of the run.

``python -m diru_fast stability --out results/stability`` appends every finished run to
``runs.jsonl`` (a rerun skips the runs already there) and writes ``report.md`` from all of them.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import platform
import sys
import time
from typing import Dict, List, Sequence

from .._subcommand import set_threads
from . import lm
from .stability_toy import ToyConfig, train_toy

__all__ = ["add_arguments", "run", "key_of", "summarize", "write_report", "invocation", "RULES"]

RULES = """\
- One run: one (cell, optimizer, lr, clip, seed), trained for the stated epochs on the first stated
  training tokens of the corpus; SGD as in PyTorch's word_language_model example (lr divided by 4 when
  validation loss does not improve), Adam at a fixed lr; gradient clipping by global norm.
- A run **diverged** when a loss became non-finite or its last validation loss is no better than the
  uniform guess log(V) (where every model starts). It **trains** when it did not diverge and its best
  validation loss is below the unigram model's (it learned more than word frequencies); a run that did
  neither is *slow* (the lr is too small for the budget).
- An lr is in a cell's **training range** when every seed's run trains; the **divergence threshold** is
  the smallest grid lr at which any seed diverged. Ranges are written [lowest, highest] with gaps shown;
  the **best lr** has the lowest mean best-validation loss.
- Diagnostics at the end of each run (every cell alike): fraction of units with |h| > 0.99 (top-layer
  outputs and each layer's carried state), gradient norm before clipping (max over the run), the largest
  singular value of each recurrent weight block (max over blocks)."""


def key_of(cfg: dict) -> tuple:
    return (cfg.get("task", "lm"), cfg["cell"], cfg["optimizer"], float(cfg["lr"]), float(cfg["clip"]), int(cfg["seed"]),
            float(cfg.get("max_sigma", 0.0)))


def _floats(text: str) -> List[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="results/stability", help="folder for runs.jsonl and report.md")
    p.add_argument("--task", default="lm", choices=("lm", "sine", "memory", "lorenz"),
                   help="lm: the word-level language model; or a toy task of the study (one layer, hidden 64, "
                        "512 training sequences; lr grids and clip from the options below)")
    p.add_argument("--cells", default="diru,lstm,gru", help="comma-separated recurrent cells to compare")
    p.add_argument("--optimizers", default="sgd,adam", help="optimizers to sweep (comma separated: sgd, adam)")
    p.add_argument("--sgd-lrs", default="1,2.5,5,10,20,40", help="SGD lr grid (comma separated)")
    p.add_argument("--adam-lrs", default="0.001,0.003,0.01,0.03", help="Adam lr grid")
    p.add_argument("--clips", default="0.25", help="clip values (global norm); the example's is 0.25")
    p.add_argument("--seeds", default="0", help="seeds (comma separated)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs per run")
    p.add_argument("--train-tokens", type=int, default=100000, help="training tokens used (0: the whole training text)")
    p.add_argument("--eval-tokens", type=int, default=10000, help="validation tokens scored (0: the whole validation text)")
    p.add_argument("--size", type=int, default=128, help="embedding and hidden size")
    p.add_argument("--corpus", default=str(lm.CORPUS_DIR), help="folder of the text corpus (train/valid/test files)")
    p.add_argument("--max-sigma", type=float, default=0.0,
                   help="a remedy to try: cap DIRU's W_I and W_O at this spectral norm after every step (0: off)")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")
    p.add_argument("--report-only", action="store_true", help="only rewrite report.md from runs.jsonl")


def load_runs(path: pathlib.Path) -> List[dict]:
    """The runs recorded so far in a study's ``runs.jsonl`` (one JSON object a line; none if absent)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _final_diag(r: dict) -> Dict[str, float]:
    d = r.get("diagnostics") or {}
    if not d or not d.get("steps"):
        return {}
    return {"saturated": d["saturated"][-1], "grad_norm_max": max(d["grad_norm"]),
            "sigma_max": max(d["sigma_max"][-1].values()),
            "sigma_block": max(d["sigma_max"][-1], key=d["sigma_max"][-1].get)}


def summarize(runs: Sequence[dict]) -> Dict[tuple, dict]:
    """(cell, optimizer, clip) -> {lr: {"stable": bool, "valid": mean best-valid loss, "n": seeds, ...}}."""
    groups: Dict[tuple, Dict[float, List[dict]]] = {}
    for r in runs:
        c = r["config"]
        cell = c["cell"] + (f" σ(W_I,W_O)≤{c['max_sigma']:g}" if c.get("max_sigma") else "")
        groups.setdefault((cell, c["optimizer"], float(c["clip"])), {}).setdefault(float(c["lr"]), []).append(r)
    out: Dict[tuple, dict] = {}
    for key, by_lr in groups.items():
        out[key] = {}
        for lr, rs in sorted(by_lr.items()):
            finite = [r["best_valid"] for r in rs if math.isfinite(r["best_valid"])]
            diags = [_final_diag(r) for r in rs]
            diags = [d for d in diags if d]
            out[key][lr] = {
                "stable": all(r["trains"] for r in rs), "diverged": any(r["diverged"] for r in rs), "n": len(rs),
                "valid": sum(finite) / len(finite) if len(finite) == len(rs) else math.inf,
                "epoch_s": sum(sum(r["epoch_seconds"]) / len(r["epoch_seconds"]) for r in rs) / len(rs),
                "saturated": max((d["saturated"] for d in diags), default=math.nan),
                "grad_norm_max": max((d["grad_norm_max"] for d in diags), default=math.nan),
                "sigma_max": max((d["sigma_max"] for d in diags), default=math.nan),
            }
    return out


def _range_text(by_lr: dict) -> str:
    lrs = sorted(by_lr)
    stable = [lr for lr in lrs if by_lr[lr]["stable"]]
    if not stable:
        return "none"
    lo, hi = stable[0], stable[-1]
    gaps = [lr for lr in lrs if lo < lr < hi and not by_lr[lr]["stable"]]
    return f"[{lo:g}, {hi:g}]" + (f" (not {', '.join(f'{g:g}' for g in gaps)})" if gaps else "")


def invocation(name: str) -> str:
    """The command line as typed: ``python -m diru_fast NAME ...``."""
    argv = sys.argv[sys.argv.index(name) + 1:] if name in sys.argv else sys.argv[1:]
    return f"python -m diru_fast {name} " + " ".join(argv)


def write_report(out: pathlib.Path, runs: Sequence[dict], command: str, wall: float, meta: dict) -> str:
    s = summarize(runs)
    toy = any(r["config"].get("task", "lm") != "lm" for r in runs)
    show = (lambda v: f"{v:.3f}") if toy else (lambda v: f"{math.exp(min(v, 50)):.1f}")
    metric = "valid MSE" if toy else "valid ppl"
    lines = ["# Training stability: the stable learning-rate range of DIRU, LSTM and GRU", "",
             ("A toy task of the study (Setup below); its outcome rule replaces the language model's "
              "diverged/trains definitions (same roles, MSE thresholds)." if toy else
              "Word-level language model with the architecture of PyTorch's `word_language_model` example "
              "(embedding, 2-layer RNN, dropout 0.2 between layers and around the RNN, untied linear decoder) on "
              "the public-domain Shakespeare corpus shipped in `diru_fast/experiments/data/shakespeare`."), "",
             "## Rules (fixed before the runs)", "", RULES, "",
             "## Setup", "", f"- command: `{command}`", f"- wall time: {wall:.0f} s "
             f"(2 shared CPU cores, one thread per run; a rerun skips the runs already in runs.jsonl)",
             f"- training time of all {len(runs)} runs (sum of their epochs): {sum(sum(r['epoch_seconds']) for r in runs):.0f} s",
             *[f"- {k}: {v}" for k, v in meta.items()], "",
             "## Stable range per cell and optimizer", "",
             f"| cell | optimizer | clip | training range | diverges from | best lr | best {metric} | seeds/lr |",
             "|---|---|---:|---|---:|---:|---:|---:|"]
    for (cell, opt, clip), by_lr in sorted(s.items()):
        best = min(by_lr, key=lambda lr: by_lr[lr]["valid"])
        v = by_lr[best]["valid"]
        div = [lr for lr in by_lr if by_lr[lr]["diverged"]]
        lines.append(f"| {cell} | {opt} | {clip:g} | {_range_text(by_lr)} | {min(div):g} | " if div else
                     f"| {cell} | {opt} | {clip:g} | {_range_text(by_lr)} | none in grid | ")
        lines[-1] += (f"{best:g} | "
                     f"{show(v)} | {min(x['n'] for x in by_lr.values())} |")
    lines += ["", "## Every lr: best-epoch validation loss (mean over seeds), and diagnostics at the end", "",
              "`trains` / `slow` / `div` (diverged), over all seeds. sat = fraction |h| > 0.99; |g| = max gradient norm before clipping; "
              "σ = largest singular value over the recurrent blocks.", "",
              f"| cell | optimizer | clip | lr | outcome | {metric} | sat | max \\|g\\| | σ_max | s/epoch |",
              "|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    for (cell, opt, clip), by_lr in sorted(s.items()):
        for lr, e in by_lr.items():
            ppl = show(e["valid"]) if math.isfinite(e["valid"]) else "nan"
            lines.append(f"| {cell} | {opt} | {clip:g} | {lr:g} | {'div' if e['diverged'] else 'trains' if e['stable'] else 'slow'} | {ppl} | "
                         f"{e['saturated']:.3f} | {e['grad_norm_max']:.3g} | {e['sigma_max']:.3g} | {e['epoch_s']:.1f} |")
    lines += _inside_diru(runs)
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    return text


PRODUCTS = ("W_h", "G_h", "W_G_h", "W_I", "W_O")


def _inside_diru(runs: Sequence[dict]) -> List[str]:
    """Per DIRU run: each of the five h-products' largest singular value at the end and its mean gradient
    norm (before clipping) over the run, the max over layers; where the growth sits when a run diverges."""
    rows = [r for r in runs if r["config"]["cell"] == "diru" and r.get("diagnostics") and r["diagnostics"]["steps"]]
    capped = any(r["config"].get("max_sigma") for r in rows)
    if not rows:
        return []
    lines = ["", "## Inside DIRU: the five h-dependent products", "",
             "σ: largest singular value at the end of the run (max over layers); |g|: mean gradient norm before "
             "clipping over the recorded steps (max over layers). W_h: the compartments' h-weights; G_h: their "
             "gates' h-columns; W_G_h: the global gate's h-columns; W_I: somatic integration; W_O: output projection.", "",
             "| optimizer | clip | " + ("σ cap | " if capped else "") + "lr | seed | outcome | sat | " + " | ".join(f"σ {p}" for p in PRODUCTS) + " | "
             + " | ".join(f"\\|g\\| {p}" for p in PRODUCTS) + " |", "|---|---:|" + ("---:|" if capped else "") + "---:|---:|---|---:|" + "---:|" * 10]
    for r in sorted(rows, key=lambda r: (r["config"]["optimizer"], r["config"]["clip"], r["config"].get("max_sigma", 0),
                                         r["config"]["lr"], r["config"]["seed"])):
        c, d = r["config"], r["diagnostics"]
        sig = {p: max(v for k, v in d["sigma_max"][-1].items() if k.split(".", 1)[1] == p) for p in PRODUCTS}
        grad = {p: max(sum(g[k] for g in d["block_grad"]) / len(d["block_grad"])
                       for k in d["block_grad"][0] if k.split(".", 1)[1] == p) for p in PRODUCTS}
        outcome = "div" if r["diverged"] else "trains" if r["trains"] else "slow"
        cap = f"{c.get('max_sigma', 0):g} | " if capped else ""
        lines.append(f"| {c['optimizer']} | {c['clip']:g} | {cap}{c['lr']:g} | {c['seed']} | {outcome} | {d['saturated'][-1]:.3f} | "
                     + " | ".join(f"{sig[p]:.2f}" for p in PRODUCTS) + " | " + " | ".join(f"{grad[p]:.3g}" for p in PRODUCTS) + " |")
    return lines


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "runs.jsonl"
    runs = load_runs(path)
    done = {key_of(r["config"]) for r in runs}
    start = time.perf_counter()
    if args.task != "lm":
        meta = {"task": f"{args.task} (the study's generator), 256 training and 128 validation sequences of 50 "
                        f"steps, inputs and targets standardized with training statistics",
                "model": f"one layer, hidden {args.size}, linear head on the last state, batch 32, {args.epochs} epochs",
                "outcome": "diverged: non-finite loss or last validation MSE >= 1.5 (mean predictor ~1); "
                           "trains: best validation MSE <= 0.3",
                "machine": f"{platform.processor() or platform.machine()}, torch {__import__('torch').__version__}"}
    else:
        corpus = lm.load_corpus(args.corpus, args.train_tokens, args.eval_tokens)
    shown = "diru_fast/experiments/data/shakespeare" if args.corpus == str(lm.CORPUS_DIR) else args.corpus
    meta = meta if args.task != "lm" else {"corpus": f"{shown} (first {args.train_tokens} train tokens, {args.eval_tokens} valid/test tokens, "
                      f"vocabulary {corpus.vocab_size})",
            "unigram valid ppl": f"{math.exp(lm.unigram_loss(corpus)):.1f}",
            "model": f"emsize = nhid = {args.size}, 2 layers, dropout 0.2, bptt 35, batch 20, {args.epochs} epochs",
            "machine": f"{platform.processor() or platform.machine()}, torch {__import__('torch').__version__}"}
    inv = out / "invocation.json"
    if args.report_only and inv.exists():
        saved = json.loads(inv.read_text())
        command, wall = saved["command"], saved["wall_s"]
    else:
        command, wall = invocation("stability"), 0.0
    if not args.report_only:
        grids = {"sgd": _floats(args.sgd_lrs), "adam": _floats(args.adam_lrs)}
        for opt in args.optimizers.split(","):
            for cell in args.cells.split(","):
                for clip in _floats(args.clips):
                    for lr in grids[opt]:
                        for seed in (int(v) for v in args.seeds.split(",")):
                            if args.task == "lm":
                                cfg = lm.LMConfig(cell=cell, optimizer=opt, lr=lr, clip=clip, seed=seed,
                                                  epochs=args.epochs, emsize=args.size, nhid=args.size,
                                                  max_sigma=args.max_sigma)
                            else:
                                cfg = ToyConfig(task=args.task, cell=cell, optimizer=opt, lr=lr, clip=clip, seed=seed,
                                                epochs=args.epochs, hidden=args.size, max_sigma=args.max_sigma)
                            if key_of(vars(cfg)) in done | {key_of(r["config"]) for r in load_runs(path)}:
                                continue  # done here, or by another invocation writing to the same folder
                            if args.task == "lm":
                                r = lm.train_lm(cfg, corpus, lm.Diagnostics(every=10))
                                rec = {k: getattr(r, k) for k in ("config", "unigram_valid", "valid_loss", "train_loss",
                                                                   "epoch_seconds", "best_valid", "test_at_best",
                                                                   "diverged", "trains", "parameters", "diagnostics")}
                            else:
                                rec = train_toy(cfg, lm.Diagnostics(every=5))
                                r = argparse.Namespace(**rec)
                            with open(path, "a") as f:
                                f.write(json.dumps(rec) + "\n")
                            runs = load_runs(path)
                            print(f"{cell} {opt} clip={clip:g} lr={lr:g} seed={seed}: valid {r.best_valid:.3f} "
                                  f"{'DIVERGED' if r.diverged else 'ok'} ({sum(r.epoch_seconds):.0f}s)", flush=True)
                            wall = time.perf_counter() - start
                            inv.write_text(json.dumps({"command": command, "wall_s": wall}))
                            write_report(out, runs, command, wall, meta)
    write_report(out, runs, command, wall, meta)
    return 0
