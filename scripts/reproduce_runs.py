"""Re-train some runs of a committed study with the current code and compare them with the stored ones.

    python scripts/reproduce_runs.py results/study lorenz:diru:8 sine:gru:3
    python scripts/reproduce_runs.py results/study-irregular sine:diru_decay:0
    python scripts/reproduce_runs.py results/study --sample 6     # 6 runs spread over tasks and models

Each run is named ``task:model:seed`` (the ``task``, ``model`` and ``seed`` of a row of the folder's
``results.json``); it is trained again at the learning rate stored with it (one torch thread, the
configuration stored in the JSON), and its validation and test MSEs, epochs and best epoch are
compared **exactly** with the stored ones. Exit status 1 if any differs. A result made by an earlier
commit is reproducible at the current one when every run compared is identical.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import torch


def _study(results: Dict[str, Any]) -> Tuple[Callable[[Dict[str, Any]], Dict[str, Any]], Tuple[str, ...]]:
    from diru_fast.experiments.study import StudyConfig, run_one, variants

    config = StudyConfig(**{k: v for k, v in results["config"].items() if k in StudyConfig.__dataclass_fields__})
    by_key = {v.key: v for v in variants(config)}
    keys = ("best_val_mse", "test_mse", "final_test_mse", "epochs_run", "best_epoch")
    return (lambda old: run_one(config, by_key[old["model"]], old["task"], old["seed"], lr=old["lr"])), keys


def _irregular(results: Dict[str, Any]) -> Tuple[Callable[[Dict[str, Any]], Dict[str, Any]], Tuple[str, ...]]:
    from diru_fast.experiments.irregular import IrregularConfig, run_one

    config = IrregularConfig(**{k: v for k, v in results["config"].items()
                                if k in IrregularConfig.__dataclass_fields__})
    keys = ("best_val_mse", "test_mse", "epochs", "best_epoch")
    return (lambda old: run_one(config, old["task"], old["model"], old["seed"], lr=old["lr"])), keys


def _sample(runs: List[Dict[str, Any]], n: int) -> List[Dict[str, Any]]:
    """``n`` runs spread over the (task, model) pairs, a different seed for each."""
    pairs = sorted({(r["task"], r["model"]) for r in runs})
    out = []
    for i in range(n):
        task, model = pairs[(i * 7) % len(pairs)]
        mine = sorted((r for r in runs if r["task"] == task and r["model"] == model), key=lambda r: r["seed"])
        out.append(mine[(i * 3) % len(mine)])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=Path, help="a study's output folder with results.json (study or irregular)")
    p.add_argument("runs", nargs="*", help="task:model:seed")
    p.add_argument("--sample", type=int, default=0, help="also compare this many runs spread over tasks and models")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    results = json.loads((args.folder / "results.json").read_text(encoding="utf-8"))
    rerun, keys = (_irregular if "hidden_sizes" in results else _study)(results)
    chosen = []
    for name in args.runs:
        task, model, seed = name.split(":")
        chosen.append(next(r for r in results["runs"]
                           if r["task"] == task and r["model"] == model and r["seed"] == int(seed)))
    chosen += _sample(results["runs"], args.sample)
    if not chosen:
        p.error("name runs (task:model:seed) or pass --sample N")
    print(f"{args.folder}: made at commit {results['meta'].get('commit')}; re-training {len(chosen)} run(s)")
    differ = 0
    for old in chosen:
        start = time.perf_counter()
        new = rerun(old)
        diffs = [k for k in keys if new[k] != old[k]]
        differ += bool(diffs)
        print(f"  {old['task']}:{old['model']}:{old['seed']} lr {old['lr']:g}: test MSE stored {old['test_mse']:.6g}, "
              f"now {new['test_mse']:.6g} -> {'identical' if not diffs else 'DIFFERENT in ' + ', '.join(diffs)} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    print(f"{len(chosen) - differ} of {len(chosen)} identical")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
