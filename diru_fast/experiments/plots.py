"""The study's figures (PNG, matplotlib's Agg backend, no display needed).

- ``curves.png``:      per task, validation (solid, band = min..max over seeds) and training
                       (dashed, mean) loss against epoch, log scale.
- ``predictions.png``: per task, one test input with its target and every model's prediction
                       (best-validation epoch's weights; top), and predicted vs true target over
                       the kept test samples (bottom); first seed of the study.
- ``summary.png``:     per task, test MSE at the best-validation epoch (mean, error bars = std over
                       seeds) with the prototype's claimed DIRU / LSTM values and the best trivial
                       baseline marked (log scale); mean epoch time per model.
- ``tuning.png``:      per task, best validation MSE / predict-the-mean against the learning rate
                       of the tuning grid (median, band = min..max over the tuning seeds; picked
                       rate circled): where each model trains at all (only for a tuned study).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

from . import claims as C
from .io import atomic_path
from .report import baseline_rows, group_runs, summary_rows, tasks_run, tuning_rows, variants_run

__all__ = ["write_plots", "PLOT_FILES"]

PLOT_FILES = ("curves.png", "predictions.png", "summary.png", "tuning.png")
_COLORS = {"diru": "tab:red", "lstm": "tab:blue", "lstm_fb1": "tab:purple", "gru": "tab:green",
           "lstm_matched": "tab:cyan", "lstm_fb1_matched": "tab:pink", "gru_matched": "tab:olive"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return path


def plot_curves(results: Dict[str, Any], path: Path) -> Path:
    import numpy as np

    plt = _pyplot()
    groups = group_runs(results)
    tasks = tasks_run(results)
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for v in variants_run(results):
            runs = groups.get((task, v["key"]))
            if not runs:
                continue
            color = _COLORS.get(v["key"])
            epochs = min(len(r["history"]["val_loss"]) for r in runs)
            x = np.arange(1, epochs + 1)
            val = np.array([r["history"]["val_loss"][:epochs] for r in runs])  # [seeds, epochs]
            tr = np.array([r["history"]["train_loss"][:epochs] for r in runs])
            ax.plot(x, val.mean(0), color=color, label=f"{v['label']} val")
            ax.fill_between(x, val.min(0), val.max(0), color=color, alpha=0.2, lw=0)
            ax.plot(x, tr.mean(0), color=color, ls="--", lw=1, label=f"{v['label']} train")
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_ylabel("MSE")
        seeds = len({r["seed"] for r in results["runs"] if r["task"] == task})
        ax.set_title(f"{task} (band: min..max over {seeds} seeds)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_predictions(results: Dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    groups = group_runs(results)
    tasks = tasks_run(results)
    seed = min(r["seed"] for r in results["runs"])
    fig, axes = plt.subplots(2, len(tasks), figsize=(5.2 * len(tasks), 7.5), squeeze=False)
    for col, task in enumerate(tasks):
        top, bottom = axes[0][col], axes[1][col]
        first = True
        lo, hi = float("inf"), float("-inf")
        for v in variants_run(results):
            run = next((r for r in groups.get((task, v["key"]), []) if r["seed"] == seed), None)
            if run is None:
                continue
            color = _COLORS.get(v["key"])
            p = run["predictions"]
            steps = len(p["first_input"])
            if first:
                top.plot(range(steps), p["first_input"], color="0.3", lw=1, label="input")
                top.scatter([steps + 4], [p["target"][0]], marker="*", s=140, color="k", zorder=3, label="target")
                first = False
            top.scatter([steps + 4], [p["pred"][0]], marker="o", s=40, color=color, zorder=4,
                        label=f"{v['label']}", alpha=0.8)
            bottom.scatter(p["target"], p["pred"], s=10, color=color, alpha=0.6, label=v["label"])
            lo, hi = min(lo, *p["target"], *p["pred"]), max(hi, *p["target"], *p["pred"])
        top.set_title(f"{task}: validation sample 0 (seed {seed})")
        top.set_xlabel("step (target: mean of the next 10 points / the recalled sum)")
        top.legend(fontsize=7)
        if lo < hi:
            bottom.plot([lo, hi], [lo, hi], "k--", lw=1)
        bottom.set_xlabel("true target")
        bottom.set_ylabel("prediction")
        bottom.set_title(f"{task}: predicted vs true (validation, seed {seed})")
        bottom.legend(fontsize=7)
        bottom.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_summary(results: Dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    rows = summary_rows(results)
    tasks = tasks_run(results)
    variants = variants_run(results)
    comparable = not C.setting_differences(results["config"])  # claims drawn only at the prototype's settings
    on_cpu = results["meta"].get("device_type", "cpu") == "cpu"
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(4.2 * (len(tasks) + 1), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        task_rows = {r["model"]: r for r in rows if r["task"] == task}
        keys = [v["key"] for v in variants if v["key"] in task_rows]
        means = [task_rows[k]["test"][0] for k in keys]
        stds = [task_rows[k]["test"][1] if task_rows[k]["n"] > 1 else 0.0 for k in keys]
        ax.bar(range(len(keys)), means, yerr=stds, capsize=4, color=[_COLORS.get(k) for k in keys])
        trivial = [b for b in baseline_rows(results) if b["task"] == task and b["name"] != "sine_oracle"]
        if trivial:
            b = min(trivial, key=lambda b: b["mse"][0])
            ax.axhline(b["mse"][0], color="0.4", ls="--", lw=1, label=f"{b['label']} (trivial)")
        claim = C.MSE_CLAIMS.get(task) if comparable else None
        if claim is not None:
            for key, value in (("diru", claim.diru_mse), ("lstm", claim.lstm_mse)):
                if key in keys:
                    i = keys.index(key)
                    ax.plot([i - 0.4, i + 0.4], [value, value], "k:", lw=1.5,
                            label="prototype's claim" if key == "diru" else None)
        ax.set_xticks(range(len(keys)))
        ax.set_xticklabels([task_rows[k]["label"].replace(" (", "\n(") for k in keys], fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("test MSE (best-validation epoch)")
        ax.set_title(f"{task} (mean ± std, {task_rows[keys[0]]['n']} seeds)")
        if claim is not None or trivial:
            ax.legend(fontsize=7)
    ax = axes[0][-1]
    keys = [v["key"] for v in variants]
    per_model = [[r["epoch_s"][0] for r in rows if r["model"] == k] for k in keys]
    means = [sum(x) / len(x) for x in per_model]
    spread = [(max(x) - min(x)) / 2 for x in per_model]
    ax.bar(range(len(keys)), means, yerr=spread, capsize=4, color=[_COLORS.get(k) for k in keys])
    for key, value in (("diru", C.EPOCH_TIME_CLAIM["diru_s"]), ("lstm", C.EPOCH_TIME_CLAIM["lstm_s"])):
        if key in keys and comparable and on_cpu:
            i = keys.index(key)
            ax.plot([i - 0.4, i + 0.4], [value, value], "k:", lw=1.5,
                    label="prototype's claim" if key == "diru" else None)
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([v["label"].replace(" (", "\n(") for v in variants], fontsize=7)
    ax.set_ylabel("seconds per epoch (train + val)")
    backends = ", ".join(sorted({r["backend"] for r in rows if r["model"] == "diru"}))
    ax.set_title(f"epoch time (DIRU backend: {backends})\nbars: mean over tasks, whiskers: task range", fontsize=9)
    if comparable and on_cpu:
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_tuning(results: Dict[str, Any], path: Path) -> Path:
    import math

    plt = _pyplot()
    rows = tuning_rows(results)
    tasks = [t for t in results["config"]["tasks"] if any(r["task"] == t for r in rows)]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for v in results["variants"]:
            mine = [r for r in rows if r["task"] == task and r["model"] == v["key"]]
            if not mine:
                continue
            cap = lambda x: x if math.isfinite(x) else float("nan")  # noqa: E731  (a diverged trial: a gap)
            x = [r["lr"] for r in mine]
            color = _COLORS.get(v["key"])
            ax.plot(x, [cap(r["median"]) for r in mine], "o-", color=color, label=v["label"], ms=4)
            ax.fill_between(x, [cap(r["low"]) for r in mine], [cap(r["high"]) for r in mine], color=color, alpha=0.15)
            for r in mine:
                if r["picked"] and math.isfinite(r["median"]):
                    ax.plot([r["lr"]], [r["median"]], "o", ms=11, mfc="none", mec=color)
        ax.axhline(C.LEARNED_RATIO, color="0.4", ls=":", lw=1, label=f"learned ({C.LEARNED_RATIO:g}x mean)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("Adam learning rate")
        ax.set_ylabel("best val MSE / predict-the-mean")
        ax.set_title(f"{task}: tuning (median, min..max over seeds)", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def write_plots(results: Dict[str, Any], out_dir: Path) -> List[Path]:
    """Write every figure of PLOT_FILES under out_dir (``tuning.png`` only for a tuned study); returns their paths."""
    out_dir = Path(out_dir)
    written = [plot_curves(results, out_dir / "curves.png"),
               plot_predictions(results, out_dir / "predictions.png"),
               plot_summary(results, out_dir / "summary.png")]
    if tuning_rows(results):
        written.append(plot_tuning(results, out_dir / "tuning.png"))
    return written
