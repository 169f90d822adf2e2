"""``python -m diru_fast ucr``: time-series classification on the UCR/UEA sets that ``aeon`` ships in its
wheel (they load offline), DIRU vs LSTM vs GRU under the same tuning budget, and MiniRocket (aeon) as
the strong non-recurrent reference in the same run. ``aeon`` is the optional ``[benchmarks]`` extra,
imported only by :func:`load_ucr` and :func:`minirocket_accuracy`.

Data: a set's series become float tensors ``[T_i, C]`` (multivariate: C channels; unequal lengths
kept), standardized per channel with training-split statistics, padded to ``[N, T_max, C]`` with the
lengths beside; the recurrent classifier reads them as a ``PackedSequence`` (padded steps never touch
the state) and classifies from each series' state at its own last step.

Rules (fixed before the runs; the report prints them first):

- every recurrent cell gets the same budget: Adam, the same lr grid, clipping, hidden size, epochs and
  early stopping on a validation split (a stratified 25% of the training split, redrawn per seed); its lr
  is the grid value with the best validation accuracy on a tuning seed no test run uses (ties: lower
  validation loss); the test accuracy of each test seed uses the best-validation epoch's weights;
- a model has **learned** a set when its mean test error is at most half the majority-class
  predictor's error (the most frequent test class: the best constant predictor) (accuracy >= majority + (1 - majority) / 2);
- per set, DIRU vs LSTM and DIRU vs GRU: paired t-test over seeds of the accuracy difference, Holm over
  every comparison of the report; "DIRU better" / "DIRU worse" only at adjusted p < 0.05, otherwise
  "no difference detected"; "not learned" when neither learned (if only one did, it says which);
- MiniRocket (10,000 kernels, ridge classifier; unequal-length sets right-padded with zeros after
  standardization) is run on the same seeds as the reference; it is not tuned and not in the family.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import platform
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from .._subcommand import set_threads
from .stats import holm, mean_std, paired_t_p, t_interval

__all__ = ["DATASETS", "CELLS", "UCRData", "load_ucr", "from_arrays", "standardize", "pad", "RNNClassifier",
           "train_classifier", "stratified_split", "minirocket_accuracy", "majority_accuracy", "learned",
           "add_arguments", "run", "RULES"]

# name -> aeon.datasets loader
DATASETS = {"JapaneseVowels": "load_japanese_vowels", "PickupGestureWiimoteZ": "load_pickup_gesture_wiimoteZ",
            "BasicMotions": "load_basic_motions", "GunPoint": "load_gunpoint",
            "ItalyPowerDemand": "load_italy_power_demand", "ArrowHead": "load_arrow_head",
            "OSULeaf": "load_osuleaf", "ACSF1": "load_acsf1"}
CELLS = ("diru", "lstm", "gru")

RULES = """\
- Same budget for every recurrent cell: Adam, the same lr grid, clipping, hidden size, epochs and early
  stopping on a validation split (a stratified 25% of the training split, redrawn per seed). A cell's lr
  is the grid value with the best validation accuracy on a tuning seed no test run uses (ties: lower
  validation loss). Test accuracy uses the best-validation epoch's weights.
- A model has **learned** a set when its mean test error is at most half the majority-class predictor's
  error (accuracy >= majority + (1 - majority) / 2; majority: the most frequent test class, the best
  constant predictor).
- Per set, DIRU vs LSTM and DIRU vs GRU: paired t-test over seeds of the accuracy difference, Holm over
  every comparison in this report; "DIRU better" / "DIRU worse" only at adjusted p < 0.05, otherwise "no
  difference detected"; "not learned" when neither learned (if only one did, it says which).
- MiniRocket (10,000 kernels, ridge classifier; unequal-length sets right-padded with zeros after
  standardization) runs on the same seeds as the non-recurrent reference; untuned, outside the family."""


@dataclass
class UCRData:
    """Series as ``[T_i, C]`` float tensors, labels as class indices (classes sorted as strings)."""

    name: str
    train_x: List[Tensor]
    train_y: Tensor
    test_x: List[Tensor]
    test_y: Tensor
    classes: List[str]

    @property
    def channels(self) -> int:
        return self.train_x[0].shape[1]

    @property
    def equal_length(self) -> bool:
        return len({x.shape[0] for x in self.train_x + self.test_x}) == 1


def _series(X) -> List[Tensor]:
    """aeon's layouts -> ``[T_i, C]`` tensors: an ndarray ``(N, C, T)`` or a list of ``(C, T_i)``."""
    return [torch.as_tensor(x, dtype=torch.float32).reshape(len(x), -1).t().contiguous() for x in X]


def from_arrays(name: str, train_X, train_y, test_X, test_y) -> UCRData:
    classes = sorted({str(c) for c in train_y})
    index = {c: i for i, c in enumerate(classes)}
    unknown = {str(c) for c in test_y} - set(classes)
    if unknown:
        raise ValueError(f"{name}: test labels {sorted(unknown)} never occur in training")
    return UCRData(name, _series(train_X), torch.tensor([index[str(c)] for c in train_y]),
                   _series(test_X), torch.tensor([index[str(c)] for c in test_y]), classes)


def load_ucr(name: str) -> UCRData:
    """Load one of :data:`DATASETS` from the aeon wheel (offline)."""
    if name not in DATASETS:
        raise ValueError(f"unknown set {name!r}; choose from {', '.join(DATASETS)}")
    from .._subcommand import require

    require(["aeon"], "the UCR/UEA benchmark")
    import aeon.datasets

    loader = getattr(aeon.datasets, DATASETS[name])
    (Xtr, ytr), (Xte, yte) = loader(split="train"), loader(split="test")
    return from_arrays(name, Xtr, ytr, Xte, yte)


def standardize(train: Sequence[Tensor], *others: Sequence[Tensor]) -> Tuple[List[Tensor], ...]:
    """Per-channel mean/std over every time point of ``train``, applied to every split."""
    cat = torch.cat(list(train))  # [sum T_i, C]
    mean, std = cat.mean(0), cat.std(0).clamp_min(1e-8)
    return tuple([(x - mean) / std for x in split] for split in (train, *others))


def pad(series: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
    """``[T_i, C]`` list -> (``[N, T_max, C]`` zero-padded, lengths ``[N]``)."""
    lengths = torch.tensor([x.shape[0] for x in series])
    out = series[0].new_zeros(len(series), int(lengths.max()), series[0].shape[1])
    for i, x in enumerate(series):
        out[i, : x.shape[0]] = x
    return out, lengths


class RNNClassifier(nn.Module):
    """One-layer ``cell`` RNN over a ``PackedSequence`` -> Linear from each series' last state."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, num_classes: int):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        if cell == "diru":
            from ..modules import DIRULayer

            self.rnn = DIRULayer(input_size, hidden_size, batch_first=True)
        else:
            self.rnn = (nn.LSTM if cell == "lstm" else nn.GRU)(input_size, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, num_classes)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x ``[B, T, C]`` padded, lengths ``[B]`` -> logits ``[B, classes]``."""
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.rnn(packed)
        h = h[0] if isinstance(h, tuple) else h  # LSTM: (h, c)
        return self.head(h[-1])  # h_n is in the caller's (unsorted) order


def stratified_split(labels: Tensor, fraction: float, seed: int) -> Tuple[Tensor, Tensor]:
    """(train indices, validation indices): ``fraction`` of each class (at least one, never all) held out."""
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for c in labels.unique():
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = min(max(1, round(fraction * len(idx))), len(idx) - 1) if len(idx) > 1 else 0
        val.append(idx[:k])
        train.append(idx[k:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


@dataclass
class RunResult:
    val_acc: float
    val_loss: float
    test_acc: float
    best_epoch: int
    seconds: float


def train_classifier(cell: str, data: UCRData, lr: float, seed: int, *, hidden: int = 32, epochs: int = 60,
                     batch_size: int = 16, clip: float = 1.0, patience: int = 20, val_fraction: float = 0.25) -> RunResult:
    """Train on the training split less a stratified validation part; early stopping on validation
    accuracy (ties: loss); the test accuracy of the best-validation epoch."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    tr_idx, va_idx = stratified_split(data.train_y, val_fraction, seed)
    train_x, val_x, test_x = standardize([data.train_x[i] for i in tr_idx], [data.train_x[i] for i in va_idx],
                                         data.test_x)
    (xtr, ltr), (xva, lva), (xte, lte) = pad(train_x), pad(val_x), pad(test_x)
    ytr, yva = data.train_y[tr_idx], data.train_y[va_idx]
    model = RNNClassifier(cell, data.channels, hidden, len(data.classes))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    best = (-1.0, math.inf)
    best_state, best_epoch, since = None, 0, 0
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(ytr))
        for b in range(0, len(order), batch_size):
            i = order[b:b + batch_size]
            loss = nn.functional.cross_entropy(model(xtr[i], ltr[i]), ytr[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
        model.eval()
        with torch.no_grad():
            logits = model(xva, lva)
            acc = float((logits.argmax(1) == yva).double().mean())
            vloss = float(nn.functional.cross_entropy(logits, yva))
        if not math.isfinite(vloss):
            break
        if acc > best[0] or (acc == best[0] and vloss < best[1]):
            best, best_epoch, since = (acc, vloss), epoch + 1, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            since += 1
            if since >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        test_acc = float((model(xte, lte).argmax(1) == data.test_y).double().mean())
    return RunResult(best[0], best[1], test_acc, best_epoch, time.perf_counter() - start)


def minirocket_accuracy(data: UCRData, seed: int) -> float:
    """aeon's MiniRocketClassifier (defaults) on the standardized, zero-padded series."""
    import numpy as np
    from aeon.classification.convolution_based import MiniRocketClassifier

    train_x, test_x = standardize(data.train_x, data.test_x)
    length = max(x.shape[0] for x in train_x + test_x)

    def arr(series):  # -> (N, C, T) numpy
        x, _ = pad(series)
        x = torch.nn.functional.pad(x, (0, 0, 0, length - x.shape[1]))
        return x.transpose(1, 2).double().numpy()

    threads = torch.get_num_threads()  # aeon resets torch's thread count (to every core): put it back after
    try:
        clf = MiniRocketClassifier(random_state=seed)
        clf.fit(arr(train_x), np.array(data.classes)[data.train_y.numpy()])
        pred = clf.predict(arr(test_x))
    finally:
        torch.set_num_threads(threads)
    return float((pred == np.array(data.classes)[data.test_y.numpy()]).mean())


def _floats(text: str) -> List[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="results/ucr", help="folder for runs.jsonl and report.md")
    p.add_argument("--datasets", default="JapaneseVowels,BasicMotions,ItalyPowerDemand,GunPoint,PickupGestureWiimoteZ",
                   help=f"comma separated, from {', '.join(DATASETS)}")
    p.add_argument("--cells", default="diru,lstm,gru", help="comma-separated recurrent cells to compare")
    p.add_argument("--lrs", default="0.003,0.01,0.03", help="Adam lr grid every cell is tuned over")
    p.add_argument("--hidden", type=int, default=32, help="hidden size of every recurrent model")
    p.add_argument("--epochs", type=int, default=30, help="training epochs per run")
    p.add_argument("--patience", type=int, default=10, help="early stopping: epochs without a better validation accuracy")
    p.add_argument("--tune-seed", type=int, default=100, help="seed of the tuning runs (disjoint from the test seeds)")
    p.add_argument("--seeds", default="0,1,2,3,4", help="test seeds (comma separated)")
    p.add_argument("--no-minirocket", action="store_true", help="skip the MiniRocket reference")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run")


def majority_accuracy(data: UCRData) -> float:
    """Test accuracy of the best constant predictor: the most frequent class of the test split."""
    return float(torch.bincount(data.test_y).max()) / len(data.test_y)


def learned(accs: Sequence[float], majority: float) -> bool:
    return mean_std(accs)[0] >= majority + (1 - majority) / 2


def write_report(out: pathlib.Path, runs: Sequence[dict], meta: dict, info: Dict[str, dict]) -> str:
    lines = ["# UCR/UEA time-series classification: DIRU vs LSTM vs GRU, MiniRocket as the reference", "",
             "## Rules (fixed before the runs)", "", RULES, "", "## Setup", "", *[f"- {k}: {v}" for k, v in meta.items() if not k.startswith("_")],
             f"- time of all {len(runs)} runs (sum, as recorded; a rerun skips the runs in runs.jsonl): "
             f"{sum(r['seconds'] for r in runs):.0f} s", "",
             "## Sets", "", "| set | train | test | channels | lengths | classes | majority acc |", "|---|---:|---:|---:|---|---:|---:|"]
    for name, i in info.items():
        lines.append(f"| {name} | {i['train']} | {i['test']} | {i['channels']} | {i['lengths']} | {i['classes']} | {i['majority']:.3f} |")
    lines += ["", "## Tuned lr (validation accuracy on the tuning seed)", "", "| set | cell | " +
              " | ".join(f"lr {lr:g}" for lr in meta["_lrs"]) + " | chosen |", "|---|---|" + "---:|" * (len(meta["_lrs"]) + 1)]
    for name in info:
        for cell in meta["_cells"]:
            rs = {r["lr"]: r for r in runs if r["phase"] == "tune" and r["set"] == name and r["cell"] == cell}
            if rs:
                ch = meta["_chosen"].get((name, cell))
                lines.append(f"| {name} | {cell} | " + " | ".join(f"{rs[lr]['val_acc']:.3f}" if lr in rs else "-" for lr in meta["_lrs"])
                             + f" | {ch:g} |" if ch is not None else " | - |")
    lines += ["", "## Test accuracy over seeds (mean [95% interval])", "",
              "| set | majority | " + " | ".join(c.upper() for c in meta["_cells"]) + " | MiniRocket | s/run DIRU | s/run LSTM | s/run GRU |",
              "|---|---:|" + "---:|" * (len(meta["_cells"]) + 4)]
    comparisons = []
    for name, i in info.items():
        accs: Dict[str, List[float]] = {}
        secs: Dict[str, float] = {}
        for cell in meta["_cells"] + ["minirocket"]:
            rs = sorted((r for r in runs if r["phase"] == "test" and r["set"] == name and r["cell"] == cell), key=lambda r: r["seed"])
            if rs:
                accs[cell] = [r["test_acc"] for r in rs]
                secs[cell] = sum(r["seconds"] for r in rs) / len(rs)

        def cellfmt(c):
            if c not in accs:
                return "-"
            iv = t_interval(accs[c]) if len(accs[c]) > 1 else None
            mark = "" if c == "minirocket" else (" ✓" if learned(accs[c], i["majority"]) else " ✗")
            return f"{iv.estimate:.3f} [{iv.low:.3f}, {iv.high:.3f}]{mark}" if iv else f"{accs[c][0]:.3f}{mark}"

        lines.append(f"| {name} | {i['majority']:.3f} | " + " | ".join(cellfmt(c) for c in meta["_cells"] + ["minirocket"]) + " | "
                     + " | ".join(f"{secs[c]:.1f}" if c in secs else "-" for c in ("diru", "lstm", "gru")) + " |")
        if "diru" in accs:
            for other in meta["_cells"]:
                if other != "diru" and other in accs:
                    n = min(len(accs["diru"]), len(accs[other]))
                    if n > 1:
                        diff = [a - b for a, b in zip(accs["diru"][:n], accs[other][:n])]
                        comparisons.append((name, other, diff, paired_t_p(diff) if any(diff) else 1.0,
                                            learned(accs["diru"][:n], i["majority"]), learned(accs[other][:n], i["majority"])))
    lines += ["", "✓ learned, ✗ not learned (the rule above).", ""]
    if comparisons:
        adjusted = holm([c[3] for c in comparisons])
        lines += ["## Verdicts (Holm over all comparisons below)", "",
                  "| set | comparison | mean acc difference [95%] | p | p (Holm) | verdict |", "|---|---|---:|---:|---:|---|"]
        for (name, other, diff, p, a, b), q in zip(comparisons, adjusted):
            iv = t_interval(diff)
            if not a and not b:
                verdict = "not learned"
            elif a != b:
                verdict = f"only {'DIRU' if a else other.upper()} learned"
            elif q < 0.05:
                verdict = "DIRU better" if iv.estimate > 0 else "DIRU worse"
            else:
                verdict = "no difference detected"
            lines.append(f"| {name} | DIRU vs {other.upper()} | {iv.estimate:+.3f} [{iv.low:+.3f}, {iv.high:+.3f}] | {p:.3g} | {q:.3g} | {verdict} |")
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    return text


def run(args: argparse.Namespace) -> int:
    from .stability import invocation, load_runs

    set_threads(args.threads)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "runs.jsonl"
    runs = load_runs(path)
    start = time.perf_counter()
    command = invocation("ucr")
    cells, lrs = args.cells.split(","), _floats(args.lrs)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    info: Dict[str, dict] = {}
    chosen: Dict[tuple, float] = {}

    def meta() -> dict:
        return {"command": f"`{command}`", "wall time": f"{time.perf_counter() - start:.0f} s (2 shared CPU cores, "
                f"{args.threads} thread)", "recurrent models": f"1 layer, hidden {args.hidden}, Adam, clip 1.0, batch 16, "
                f"up to {args.epochs} epochs, patience {args.patience}; lr grid {args.lrs}; tuning seed {args.tune_seed}; "
                f"test seeds {args.seeds}",
                "machine": f"{platform.processor() or platform.machine()}, torch {torch.__version__}",
                "_lrs": lrs, "_cells": cells, "_chosen": chosen}

    def find(**key) -> Optional[dict]:
        for r in runs:
            if all(r.get(k) == v for k, v in key.items()):
                return r
        return None

    def record(rec: dict) -> dict:
        with open(path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        runs.append(rec)
        write_report(out, runs, meta(), info)
        return rec

    for name in args.datasets.split(","):
        data = load_ucr(name)
        lengths = sorted({x.shape[0] for x in data.train_x + data.test_x})
        info[name] = {"train": len(data.train_y), "test": len(data.test_y), "channels": data.channels,
                      "lengths": str(lengths[0]) if len(lengths) == 1 else f"{lengths[0]}-{lengths[-1]}",
                      "classes": len(data.classes), "majority": majority_accuracy(data)}
        for cell in cells:
            tune = []
            for lr in lrs:
                r = find(phase="tune", set=name, cell=cell, lr=lr, seed=args.tune_seed)
                if r is None:
                    res = train_classifier(cell, data, lr, args.tune_seed, hidden=args.hidden, epochs=args.epochs,
                                           patience=args.patience)
                    r = record({"phase": "tune", "set": name, "cell": cell, "lr": lr, "seed": args.tune_seed, **vars(res)})
                    print(f"{name} tune {cell} lr={lr:g}: val {res.val_acc:.3f} ({res.seconds:.0f}s)", flush=True)
                tune.append(r)
            best = max(tune, key=lambda r: (r["val_acc"], -r["val_loss"]))
            chosen[(name, cell)] = best["lr"]
            for seed in seeds:
                if find(phase="test", set=name, cell=cell, lr=best["lr"], seed=seed) is None:
                    res = train_classifier(cell, data, best["lr"], seed, hidden=args.hidden, epochs=args.epochs,
                                           patience=args.patience)
                    record({"phase": "test", "set": name, "cell": cell, "lr": best["lr"], "seed": seed, **vars(res)})
                    print(f"{name} test {cell} seed={seed}: acc {res.test_acc:.3f} ({res.seconds:.0f}s)", flush=True)
        if not args.no_minirocket:
            for seed in seeds:
                if find(phase="test", set=name, cell="minirocket", seed=seed) is None:
                    t = time.perf_counter()
                    acc = minirocket_accuracy(data, seed)
                    record({"phase": "test", "set": name, "cell": "minirocket", "lr": None, "seed": seed, "test_acc": acc,
                            "seconds": time.perf_counter() - t})
                    print(f"{name} minirocket seed={seed}: acc {acc:.3f}", flush=True)
    print(write_report(out, runs, meta(), info))
    return 0
