"""``python -m diru_fast lm``: the word-level language-model benchmark, DIRU vs LSTM vs GRU, each at its
own tuned learning rate (:mod:`diru_fast.experiments.lm` has the data, model and training loop).

Rules (fixed before the runs; the report prints them first):

- every cell gets the same tuning budget: the same lr grid, the same optimizer and clipping, the same
  epochs, trained on a tuning seed that no test run uses; its lr is the grid value with the lowest
  best-validation loss (a diverged run counts as infinitely bad);
- then every cell is trained at its tuned lr on each test seed (same seed -> same initial streams and
  dropout masks across cells is *not* possible, so the seeds pair runs only by index); test perplexity
  is measured with the weights of the best-validation epoch;
- a model has **learned** when its mean test loss is below the unigram model's by at least log 2 (test
  perplexity at most half the unigram's);
- DIRU vs LSTM and DIRU vs GRU: paired t-test over seeds of the difference in test loss (nats/token),
  Holm over the two comparisons; "DIRU better"/"worse" only when the adjusted p < 0.05, "no difference
  detected" otherwise, "not learned" when neither model learned (where only one learned, say so);
  the perplexity ratio exp(mean difference) with its 95% interval beside it.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import platform
import time
from typing import Dict, List, Sequence

from .._subcommand import set_threads
from . import lm
from .stats import holm, mean_std, paired_t_p, t_interval

__all__ = ["add_arguments", "run", "RULES", "verdicts", "write_report"]

RULES = """\
- Same tuning budget for every cell: the same lr grid, optimizer, clipping and epochs, on a tuning seed
  that no test run uses; a cell's lr is the grid value with the lowest best-validation loss (a diverged
  run counts as infinitely bad).
- Each cell is then trained at its tuned lr on every test seed; test perplexity uses the weights of the
  best-validation epoch.
- A model has **learned** when its mean test loss is at least log 2 below the unigram model's (test
  perplexity at most half the unigram's).
- DIRU vs LSTM and DIRU vs GRU: paired t-test over seeds of the test-loss difference (nats/token), Holm
  over the two comparisons; "DIRU better" / "DIRU worse" only at adjusted p < 0.05, otherwise "no
  difference detected"; "not learned" when neither model learned (if only one learned, it says which).
  The perplexity ratio exp(mean difference) is given with its 95% interval."""


def _floats(text: str) -> List[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _ints(text: str) -> List[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="results/lm", help="folder for runs.jsonl and report.md")
    p.add_argument("--cells", default="diru,lstm,gru", help="comma-separated recurrent cells to compare")
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"),
                   help="optimizer of every run (SGD with clipping, as the word_language_model example, or Adam)")
    p.add_argument("--lrs", default="1,2.5,5,10,20,40", help="lr grid every cell is tuned over (comma separated)")
    p.add_argument("--clip", type=float, default=0.25, help="gradient clipping to this global norm")
    p.add_argument("--tune-seed", type=int, default=0, help="seed of the tuning runs (disjoint from the test seeds)")
    p.add_argument("--seeds", default="2,3,4,5", help="test seeds (comma separated)")
    p.add_argument("--epochs", type=int, default=2, help="training epochs per run")
    p.add_argument("--train-tokens", type=int, default=100000, help="training tokens used (0: the whole training text)")
    p.add_argument("--eval-tokens", type=int, default=0, help="0: the whole validation and test plays")
    p.add_argument("--size", type=int, default=128, help="embedding and hidden size")
    p.add_argument("--corpus", default=str(lm.CORPUS_DIR), help="folder of the text corpus (train/valid/test files)")
    p.add_argument("--tune-from", default="", help="a stability sweep's folder (python -m diru_fast stability): take "
                   "each cell's tuning runs from its runs.jsonl (same optimizer, clip, --lrs grid and --tune-seed) "
                   "instead of training them again; its corpus size and epochs must be the ones given here")
    p.add_argument("--time-chunks", type=int, default=30,
                   help="after the runs, time this many training chunks (bptt steps, forward+backward+step) per "
                        "cell, interleaved round-robin so every cell sees the same machine load; 0: skip")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")


def _record(r: lm.LMResult, phase: str) -> dict:
    return {"phase": phase, "config": r.config, "unigram_valid": r.unigram_valid, "valid_loss": r.valid_loss,
            "epoch_seconds": r.epoch_seconds, "best_valid": r.best_valid, "test_at_best": r.test_at_best,
            "diverged": r.diverged, "trains": r.trains, "parameters": r.parameters}


def _record_fields(r: dict) -> dict:
    return {k: r[k] for k in ("config", "unigram_valid", "valid_loss", "epoch_seconds", "best_valid", "test_at_best",
                              "diverged", "trains", "parameters")}


def verdicts(test_loss: Dict[str, List[float]], unigram_test: float, reference: str = "diru") -> List[dict]:
    """One row per comparison of ``reference`` against every other cell (paired by seed index)."""
    learned = {c: mean_std(v)[0] <= unigram_test - math.log(2) for c, v in test_loss.items()}
    rows = []
    others = [c for c in test_loss if c != reference]
    ps = []
    for other in others:
        diff = [a - b for a, b in zip(test_loss[reference], test_loss[other])]
        ps.append(paired_t_p(diff) if len(diff) > 1 else math.nan)
        iv = t_interval(diff) if len(diff) > 1 else None
        rows.append({"other": other, "diff": diff, "ratio": math.exp(mean_std(diff)[0]),
                     "ratio_low": math.exp(iv.low) if iv else math.nan, "ratio_high": math.exp(iv.high) if iv else math.nan})
    adjusted = holm(ps) if all(math.isfinite(p) for p in ps) else [math.nan] * len(ps)
    for row, p, q in zip(rows, ps, adjusted):
        row["p"], row["p_holm"] = p, q
        a, b = learned[reference], learned[row["other"]]
        if not a and not b:
            row["verdict"] = "not learned"
        elif a != b:
            row["verdict"] = f"only {reference if a else row['other']} learned"
        elif math.isfinite(q) and q < 0.05:
            row["verdict"] = f"{reference.upper()} better" if row["ratio"] < 1 else f"{reference.upper()} worse"
        else:
            row["verdict"] = "no difference detected"
    return rows


def time_chunks(cells: Sequence[str], corpus: lm.Corpus, size: int, chunks: int, bptt: int = 35,
                batch_size: int = 20) -> Dict[str, float]:
    """Median seconds of one training chunk per cell (SGD step included), the cells interleaved
    round-robin (A B C A B C ...) so that a shared machine's load falls on all alike."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    data = lm.batchify(corpus.train, batch_size)
    models = {c: lm.RNNModel(c, corpus.vocab_size, size, size) for c in cells}
    opts = {c: torch.optim.SGD(m.parameters(), lr=1.0) for c, m in models.items()}
    hidden = {c: m.init_hidden(batch_size) for c, m in models.items()}
    times: Dict[str, List[float]] = {c: [] for c in cells}
    for i in range(chunks + 2):  # the first two rounds warm up
        start = (i * bptt) % max(1, data.size(0) - bptt - 1)
        seq = min(bptt, data.size(0) - 1 - start)
        for c in cells:
            t0 = time.perf_counter()
            h = hidden[c]
            h = tuple(x.detach() for x in h) if isinstance(h, tuple) else h.detach()
            logits, hidden[c] = models[c](data[start:start + seq], h)
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), data[start + 1:start + 1 + seq].reshape(-1))
            opts[c].zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(models[c].parameters(), 0.25)
            opts[c].step()
            if i >= 2:
                times[c].append(time.perf_counter() - t0)
    return {c: sorted(v)[len(v) // 2] for c, v in times.items()}


def write_report(out: pathlib.Path, runs: Sequence[dict], meta: dict) -> str:
    tune = [r for r in runs if r["phase"] == "tune"]
    test = [r for r in runs if r["phase"] == "test"]
    cells = list(dict.fromkeys(r["config"]["cell"] for r in runs))
    lines = ["# Word-level language model: DIRU vs LSTM vs GRU on Shakespeare", "",
             "The architecture of PyTorch's `word_language_model` example (embedding, 2-layer RNN, dropout 0.2, "
             "untied decoder, truncated BPTT 35, batch 20, gradient clipping) on the public-domain Shakespeare "
             "corpus in `diru_fast/experiments/data/shakespeare` (train: ten plays, valid: Romeo and Juliet, "
             "test: Hamlet).", "", "## Rules (fixed before the runs)", "", RULES, "", "## Setup", "",
             *[f"- {k}: {v}" for k, v in meta.items() if not k.startswith("_")],
             f"- training time of all {len(runs)} runs (sum of their epochs; a rerun skips the runs in runs.jsonl): "
             f"{sum(sum(r['epoch_seconds']) for r in runs):.0f} s", "", "## Tuning (validation perplexity at the best epoch)", "",
             "| cell | " + " | ".join(f"lr {lr:g}" for lr in sorted({r['config']['lr'] for r in tune})) + " | chosen |",
             "|---|" + "---:|" * (len({r['config']['lr'] for r in tune}) + 1)]
    chosen: Dict[str, float] = {}
    for cell in cells:
        rs = sorted((r for r in tune if r["config"]["cell"] == cell), key=lambda r: r["config"]["lr"])
        if not rs:
            continue
        scores = [(r["best_valid"] if not r["diverged"] else math.inf) for r in rs]
        chosen[cell] = rs[scores.index(min(scores))]["config"]["lr"]
        lines.append(f"| {cell} | " + " | ".join("diverged" if r["diverged"] else f"{math.exp(min(r['best_valid'], 50)):.1f}"
                                                 for r in rs) + f" | {chosen[cell]:g} |")
    unigram_test = meta.get("_unigram_test", math.nan)
    lines += ["", "## Test (tuned lr, every test seed)", "",
              "| cell | lr | parameters | test ppl mean ± std | 95% interval | learned | s/epoch | diverged |",
              "|---|---:|---:|---:|---:|---|---:|---:|"]
    losses: Dict[str, List[float]] = {}
    for cell in cells:
        rs = sorted((r for r in test if r["config"]["cell"] == cell), key=lambda r: r["config"]["seed"])
        if not rs:
            continue
        losses[cell] = [r["test_at_best"] for r in rs]
        ppl = [math.exp(min(v, 50)) for v in losses[cell]]
        m, s = mean_std(ppl)
        iv = t_interval(ppl) if len(ppl) > 1 else None
        learned = mean_std(losses[cell])[0] <= unigram_test - math.log(2)
        secs = [x for r in rs for x in r["epoch_seconds"]]
        lines.append(f"| {cell} | {rs[0]['config']['lr']:g} | {rs[0]['parameters']:,} | {m:.1f} ± {s:.1f} | "
                     f"[{iv.low:.1f}, {iv.high:.1f}] | {'yes' if learned else 'no'} | {sum(secs) / len(secs):.1f} | "
                     f"{sum(r['diverged'] for r in rs)}/{len(rs)} |" if iv else
                     f"| {cell} | {rs[0]['config']['lr']:g} | {rs[0]['parameters']:,} | {m:.1f} | - | "
                     f"{'yes' if learned else 'no'} | {sum(secs) / len(secs):.1f} | {sum(r['diverged'] for r in rs)}/{len(rs)} |")
    lines += ["", f"Unigram test perplexity: {math.exp(unigram_test):.1f} (learned: at most {math.exp(unigram_test) / 2:.1f}).", ""]
    if "diru" in losses and len(losses) > 1 and all(math.isfinite(v) for vs in losses.values() for v in vs):
        n = min(len(v) for v in losses.values())
        rows = verdicts({c: v[:n] for c, v in losses.items()}, unigram_test)
        lines += ["## Verdicts (Holm over the two comparisons)", "",
                  "| comparison | ppl ratio DIRU/other [95%] | p | p (Holm) | verdict |", "|---|---:|---:|---:|---|"]
        for row in rows:
            lines.append(f"| DIRU vs {row['other'].upper()} | {row['ratio']:.3f} [{row['ratio_low']:.3f}, {row['ratio_high']:.3f}] | "
                         f"{row['p']:.3g} | {row['p_holm']:.3g} | {row['verdict']} |")
    timing = meta.get("_timing")
    if timing:
        chunks_per_epoch = meta["_chunks_per_epoch"]
        lines += ["", "## Time per epoch, measured interleaved", "",
                  f"The s/epoch column above is each run's own wall time on a shared machine whose load changed "
                  f"during the study. Here every cell trains {meta['_time_chunks']} chunks (bptt 35 x batch 20, "
                  f"forward, backward, clipping, SGD step) in turn, A B C A B C ..., in one process: the median "
                  f"chunk time, times the {chunks_per_epoch} chunks of an epoch.", "",
                  "| cell | ms per chunk (median) | s per epoch | ratio to LSTM |", "|---|---:|---:|---:|"]
        for cell, sec in timing.items():
            ratio = f"{sec / timing['lstm']:.2f}x" if "lstm" in timing else "-"
            lines.append(f"| {cell} | {sec * 1e3:.1f} | {sec * chunks_per_epoch:.1f} | {ratio} |")
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    return text


def run(args: argparse.Namespace) -> int:
    from .stability import invocation, load_runs

    set_threads(args.threads)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    corpus = lm.load_corpus(args.corpus, args.train_tokens or None, args.eval_tokens or None)
    unigram_test = lm.unigram_loss(corpus, "test")
    path = out / "runs.jsonl"
    runs = load_runs(path)
    done = {(r["phase"], r["config"]["cell"], r["config"]["lr"], r["config"]["seed"]) for r in runs}
    command = invocation("lm")

    def meta() -> dict:
        return {"command": f"`{command}`", "wall time": f"{time.perf_counter() - start:.0f} s (2 shared CPU cores, "
                f"{args.threads} thread)", "corpus": (f"first {args.train_tokens} training tokens" if args.train_tokens else
                                    f"all {corpus.train.numel()} training tokens") + "; valid "
                f"{corpus.valid.numel()} and test {corpus.test.numel()} tokens; vocabulary {corpus.vocab_size}",
                "model": f"emsize = nhid = {args.size}, 2 layers, dropout 0.2, untied, bptt 35, batch 20",
                "training": f"{args.optimizer} (clip {args.clip:g}), {args.epochs} epochs, lr grid {args.lrs}, "
                f"tuning seed {args.tune_seed}, test seeds {args.seeds}" + (
                    f"; the tuning runs are the stability sweep's in {args.tune_from} (validated on the first "
                    f"tokens of the validation play there, see its report)" if args.tune_from else ""),
                "machine": f"{platform.processor() or platform.machine()}, torch {__import__('torch').__version__}",
                "_unigram_test": unigram_test}

    def train(phase: str, cell: str, lr: float, seed: int) -> dict:
        for r in runs:
            if (r["phase"], r["config"]["cell"], r["config"]["lr"], r["config"]["seed"]) == (phase, cell, lr, seed):
                return r
        cfg = lm.LMConfig(cell=cell, optimizer=args.optimizer, lr=lr, clip=args.clip, seed=seed, epochs=args.epochs,
                          emsize=args.size, nhid=args.size)
        rec = _record(lm.train_lm(cfg, corpus, log=lambda s: print(s, flush=True)), phase)
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        runs.append(rec)
        write_report(out, runs, meta())
        return rec

    cells = args.cells.split(",")
    if args.tune_from:
        sweep = [json.loads(x) for x in (pathlib.Path(args.tune_from) / "runs.jsonl").read_text().splitlines() if x.strip()]
        for r in sweep:
            c = r["config"]
            key = ("tune", c["cell"], c["lr"], c["seed"])
            if (c.get("task", "lm") == "lm" and c["cell"] in cells and c["optimizer"] == args.optimizer
                    and c["clip"] == args.clip and c["seed"] == args.tune_seed and c["lr"] in _floats(args.lrs)
                    and c["epochs"] == args.epochs and key not in done):
                runs.append({**_record_fields(r), "phase": "tune", "from": args.tune_from})
                done.add(key)
        missing = [(cell, lr) for cell in cells for lr in _floats(args.lrs) if ("tune", cell, lr, args.tune_seed) not in done]
        if missing:
            raise SystemExit(f"diru_fast lm: {args.tune_from} has no tuning run for {missing}")
    tuned = {}
    for cell in cells:
        recs = [train("tune", cell, lr, args.tune_seed) for lr in _floats(args.lrs)]
        scores = [r["best_valid"] if not r["diverged"] else math.inf for r in recs]
        tuned[cell] = recs[scores.index(min(scores))]["config"]["lr"]
    for seed in _ints(args.seeds):
        for cell in cells:
            train("test", cell, tuned[cell], seed)
    final = meta()
    if args.time_chunks > 0:
        final.update(_timing=time_chunks(cells, corpus, args.size, args.time_chunks), _time_chunks=args.time_chunks,
                     _chunks_per_epoch=math.ceil((corpus.train.numel() // 20 - 1) / 35))
        final["wall time"] = f"{time.perf_counter() - start:.0f} s of this invocation (2 shared CPU cores, " \
                             f"{args.threads} thread; it resumed from runs.jsonl, see the summed training time)"
    print(write_report(out, runs, final))
    return 0
