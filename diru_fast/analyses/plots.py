"""The analyses' figures (PNG, matplotlib's Agg backend), one per analysis, drawn from its JSON result.

- ``specialization.png``:  the index per k and seed (trained, at init, the null's 5-95% range, the
                           sorted-units reference); one seed's compartment profiles; the percentile of
                           the compartment partition among random partitions; the tuning curves.
- ``gradient_flow.png``:   mean log10 ||∂h_T/∂s_t|| against T - t per model, at init and after training.
- ``memory_capacity.png``: test NMSE against delay per k (and the tanh RNNs); the tuning curves per delay.
- ``real_data.png``:       per data set and metric, every model's test value per run and the mean ± std;
                           the tuning curves (validation loss / the trivial baseline's against lr).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict

from ..experiments.plots import _pyplot, _save

__all__ = ["plot_specialization", "plot_gradient_flow", "plot_memory_capacity", "plot_real_data", "PLOTTERS",
           "write_plot"]

_COLORS = {"diru": "tab:red", "lstm": "tab:blue", "gru": "tab:green", "rnn": "tab:gray",
           "lstm_fb1": "tab:cyan", "rnn_matched": "k", "lstm_matched": "tab:blue", "gru_matched": "tab:green"}
_K_COLORS = {1: "tab:purple", 2: "tab:orange", 4: "tab:red", 8: "tab:brown"}


def plot_specialization(result: Dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    runs, ks = result["runs"], result["config"]["ks"]
    bands = result["bands"]
    curves = result.get("tuning_curves") or {}
    fig, axes = plt.subplots(1, 4 if curves else 3, figsize=(21 if curves else 16, 4.6))
    ax = axes[0]
    for i, k in enumerate(ks):
        rs = [r for r in runs if r["k"] == k]
        for j, r in enumerate(rs):
            x = i + (j - (len(rs) - 1) / 2) * 0.12
            q = r["trained"]["null_quantiles"]
            lo, hi = q[round(0.05 * (len(q) - 1))], q[round(0.95 * (len(q) - 1))]
            ax.plot([x, x], [lo, hi], color="tab:red", alpha=0.3, lw=6, solid_capstyle="butt",
                    label="trained: null 5-95%" if (i, j) == (0, 0) else None)
            ax.scatter([x], [r["trained"]["index"]], color="tab:red", zorder=3,
                       label="trained: compartments" if (i, j) == (0, 0) else None)
            ax.scatter([x], [r["trained"]["sorted_index"]], color="tab:red", marker="^", s=25, zorder=3,
                       label="trained: units sorted by frequency" if (i, j) == (0, 0) else None)
            ax.scatter([x + 0.05], [r["init"]["index"]], color="0.4", marker="x", zorder=3,
                       label="init: compartments" if (i, j) == (0, 0) else None)
    ax.set_yscale("log")
    ax.set_xticks(range(len(ks)))
    ax.set_xticklabels([f"k={k}" for k in ks])
    ax.set_ylabel("specialization index (mean pairwise JSD, bits)")
    ax.set_title("index per seed vs random partitions of the same units")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")

    ax = axes[1]
    k_show = max(ks)
    run = next(r for r in runs if r["k"] == k_show)
    profiles = run["trained"]["profiles"]
    width = 0.8 / (len(profiles) + 1)
    names = [f"f{i + 1} [{lo:g},{hi:g}]" for i, (lo, hi) in enumerate(bands)]
    for c, prof in enumerate(profiles):
        ax.bar([b + c * width for b in range(len(bands))], prof, width, label=f"compartment {c}" if c < 8 else None)
    ax.bar([b + len(profiles) * width for b in range(len(bands))], run["input_profile"], width, color="k",
           label="input signal")
    ax.set_yscale("log")
    ax.set_xticks([b + 0.4 - width / 2 for b in range(len(bands))])
    ax.set_xticklabels(names)
    ax.set_ylabel("share of band power")
    ax.set_title(f"trained compartment profiles (k={k_show}, seed {run['seed']})")
    ax.legend(fontsize=6, ncol=2)

    ax = axes[2]
    for i, k in enumerate(ks):
        rs = [r for r in runs if r["k"] == k]
        ax.scatter([i - 0.1] * len(rs), [r["init"]["percentile"] for r in rs], color="0.4", marker="x",
                   label="init" if i == 0 else None)
        ax.scatter([i + 0.1] * len(rs), [r["trained"]["percentile"] for r in rs], color="tab:red",
                   label="trained" if i == 0 else None)
    ax.axhline(0.95, color="k", ls=":", lw=1, label="95th percentile")
    ax.set_ylim(0, 1.02)
    ax.set_xticks(range(len(ks)))
    ax.set_xticklabels([f"k={k}" for k in ks])
    ax.set_ylabel("percentile among random partitions")
    ax.set_title("where the compartment partition falls in its null\n(uniform if compartments are not special)",
                 fontsize=9)
    ax.legend(fontsize=7)
    if curves:
        from .plots_tuning import draw_lr_curves

        names = {"diru": f"DIRU (k={result['config'].get('tune_k')})", "lstm": "LSTM"}
        draw_lr_curves(axes[3], {names.get(m, m): c for m, c in curves.items()},
                       {names.get(m, m): v for m, v in result.get("picked_lr", {}).items()})
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_gradient_flow(result: Dict[str, Any], path: Path) -> Path:
    import numpy as np

    plt = _pyplot()
    runs, models = result["runs"], result["config"]["models"]
    curves_lr = result["summary"].get("lr_curve", {})
    fig, axes = plt.subplots(1, 3 if curves_lr else 2, figsize=(18 if curves_lr else 12, 4.4))
    for ax, phase in zip(axes, ("init", "trained")):
        for kind in models:
            rs = [r for r in runs if r["model"] == kind]
            if not rs:
                continue
            curves = np.array([r[phase]["mean"] for r in rs])  # [seeds, lags]
            lags = np.arange(curves.shape[1])
            slope = result["summary"]["slopes"][kind][phase][0]
            ax.plot(lags, curves.mean(0), color=_COLORS[kind], ls="--" if kind.endswith(("_fb1", "_matched")) else "-",
                    label=f"{kind.upper()} ({slope:+.3f}/step)")
            ax.fill_between(lags, curves.min(0), curves.max(0), color=_COLORS[kind], alpha=0.2, lw=0)
        ax.set_xlabel("lag T - t (steps)")
        ax.set_title(("at initialisation" if phase == "init" else "after training") +
                     f" (memory task, T={result['config']['seq_len']}, band: min..max over seeds)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="model (decay, decades/step)", title_fontsize=7)
    norm = "spectral" if result["config"]["norm"] == "2" else "Frobenius"
    axes[0].set_ylabel(f"mean log10 ||∂h_T/∂s_t|| ({norm} norm)")
    axes[1].set_ylabel("(own scale: trained tanh RNNs decay far faster)", fontsize=8)
    if curves_lr:  # validation MSE / predict-the-mean against the learning rate (the tuning trials)
        ax = axes[2]
        for kind, curve in curves_lr.items():
            lrs = [c["lr"] for c in curve]
            ax.plot(lrs, [min(c["median"], 1e3) for c in curve], color=_COLORS[kind], marker="o",
                    ls="--" if kind.endswith(("_fb1", "_matched")) else "-", label=kind.upper())
            ax.fill_between(lrs, [min(c["low"], 1e3) for c in curve], [min(c["high"], 1e3) for c in curve],
                            color=_COLORS[kind], alpha=0.15, lw=0)
            picked = result.get("picked_lr", {}).get(kind)
            if picked in lrs:
                ax.scatter([picked], [min(curve[lrs.index(picked)]["median"], 1e3)], color=_COLORS[kind], s=80,
                           marker="*", zorder=3)
        ax.axhline(0.3, color="k", ls=":", lw=1, label="learned: 0.3x the mean predictor")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("Adam learning rate")
        ax.set_ylabel("best validation MSE / predict-the-mean")
        ax.set_title("tuning: median and range over the tuning seeds (star: picked)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_memory_capacity(result: Dict[str, Any], path: Path) -> Path:
    import math

    plt = _pyplot()
    runs = result["runs"]
    delays = sorted({r["delay"] for r in runs})
    trials = result.get("tuning") or []
    fig, axes = plt.subplots(1, 2 if trials else 1, figsize=(14 if trials else 7, 4.6), squeeze=False)
    ax = axes[0][0]
    key = "test_nmse" if runs and "test_nmse" in runs[0] else "val_nmse"
    groups = [(f"DIRU k={k}", "diru", k) for k in result["config"]["ks"]] + \
        ([("tanh RNN, same d (reference)", "rnn", None)] if any(r["model"] == "rnn" for r in runs) else []) + \
        ([("tanh RNN, DIRU's parameters (reference)", "rnn_matched", None)]
         if any(r["model"] == "rnn_matched" for r in runs) else [])
    for i, (label, kind, k) in enumerate(groups):
        color = _K_COLORS.get(k, "0.5") if kind == "diru" else ("0.3" if kind == "rnn" else "k")
        xs, means = [], []
        for dl in delays:
            vals = [r[key] for r in runs if r["model"] == kind and r["k"] == k and r["delay"] == dl]
            if not vals:
                continue
            off = (i - (len(groups) - 1) / 2) * 0.4
            ax.scatter([dl + off] * len(vals), vals, color=color, s=12, alpha=0.5)
            xs.append(dl)
            means.append(math.exp(sum(math.log(max(v, 1e-12)) for v in vals) / len(vals)))
        ax.plot(xs, means, color=color, ls="-" if kind == "diru" else "--", marker="o", label=label)
    ax.axhline(1.0, color="k", ls=":", lw=1, label="predict the mean (NMSE 1)")
    ax.set_yscale("log")
    ax.set_xlabel("delay: steps from the first stored value to the recall marker")
    ax.set_ylabel(("test" if key == "test_nmse" else "validation") + " NMSE (lines: geometric mean over seeds)")
    params = ", ".join(f"k={k}: {v[0]:,}" for k, v in result["params_by_k"].items() if v)
    ax.set_title(f"memory task error vs delay (d={result['config']['hidden_size']}; params {params})", fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    if trials:
        from ..experiments.tuning import lr_curve
        from .plots_tuning import draw_lr_curves

        refs = {"rnn": "tanh RNN", "rnn_matched": "tanh RNN, DIRU's params"}
        name = lambda t: f"DIRU k={t['k']}" if t["model"] == "diru" else refs.get(t["model"], t["model"])  # noqa: E731
        curves, picked = {}, {}
        for t in trials:
            label = f"{name(t)}, delay {t['delay']}"
            if label not in curves:
                curves[label] = lr_curve([u for u in trials if u["delay"] == t["delay"] and name(u) == name(t)],
                                         key="val_ratio")
                picked[label] = result["picked_lr"][str(t["delay"])][f"diru_k{t['k']}" if t["model"] == "diru"
                                                                      else t["model"]]
        draw_lr_curves(axes[0][1], curves, picked, "tuning per delay (median over tuning seeds; circle: picked)")
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def plot_real_data(result: Dict[str, Any], path: Path) -> Path:
    """Per data set: the test metric per run (bars: mean ± std; the naive forecasts on sunspots), digits'
    accuracy, and the tuning curve (best validation loss / the trivial baseline's against the learning rate)."""
    plt = _pyplot()
    colors = dict(_COLORS, lstm_fb1_matched="tab:cyan")
    panels = []
    for dataset in result["config"]["datasets"]:
        if dataset == "digits":
            panels += [(dataset, "test_loss", "test cross-entropy"), (dataset, "accuracy", "test accuracy")]
        else:
            panels.append((dataset, "test_loss", "test MSE (scaled)"))
    tuning = [d for d in result["config"]["datasets"] if any(t.get("dataset") == d for t in result.get("tuning", []))]
    fig, axes = plt.subplots(1, len(panels) + len(tuning), figsize=(4.6 * (len(panels) + len(tuning)), 4.4),
                             squeeze=False)
    for ax, (dataset, key, label) in zip(axes[0], panels):
        vs = result["variants"][dataset]
        for i, v in enumerate(vs):
            vals = [r[key] for r in result["runs"] if r["dataset"] == dataset and r["model"] == v["key"]]
            if not vals:
                continue
            mean = sum(vals) / len(vals)
            sd = (sum((x - mean) ** 2 for x in vals) / max(len(vals) - 1, 1)) ** 0.5
            ax.bar([i], [mean], yerr=[sd], capsize=4, color=colors.get(v["key"]), alpha=0.6)
            ax.scatter([i] * len(vals), vals, color="k", s=10, zorder=3)
        if dataset == "sunspots":
            blocks = list(result["data"]["sunspots"].get("blocks", {}).values())
            if blocks:
                ax.axhline(sum(b["persistence_mse_test"] for b in blocks) / len(blocks), color="k", ls=":", lw=1,
                           label="persistence forecast (mean over test blocks)")
                ax.legend(fontsize=7)
        ax.set_xticks(range(len(vs)))
        ax.set_xticklabels([v["label"].replace(" (", "\n(") for v in vs], fontsize=7)
        ax.set_ylabel(label)
        n = len({r["seed"] for r in result["runs"] if r["dataset"] == dataset})
        nb = len({r.get("block") for r in result["runs"] if r["dataset"] == dataset})
        ax.set_title(f"{dataset} ({n} seeds" + (f" × {nb} test blocks" if dataset == "sunspots" else "")
                     + "; dots: runs)", fontsize=9)
        if key == "accuracy":
            lo = min(r[key] for r in result["runs"] if r["dataset"] == dataset)
            ax.set_ylim(max(0.0, lo - 0.03), 1.0)
    for ax, dataset in zip(axes[0][len(panels):], tuning):
        for v in result["variants"][dataset]:
            rows = [t for t in result["tuning"] if t.get("dataset") == dataset and t["model"] == v["key"]]
            lrs = sorted({t["lr"] for t in rows})
            vals = [sorted(t["val_ratio"] for t in rows if t["lr"] == lr) for lr in lrs]
            med = [x[len(x) // 2] if len(x) % 2 else 0.5 * (x[len(x) // 2 - 1] + x[len(x) // 2]) for x in vals]
            ax.plot(lrs, med, marker="o", color=colors.get(v["key"]), label=v["label"].split(" (")[0])
            ax.fill_between(lrs, [x[0] for x in vals], [x[-1] for x in vals], color=colors.get(v["key"]), alpha=0.15, lw=0)
        ax.axhline(0.3, color="k", ls=":", lw=1, label="learned: 0.3x the trivial baseline")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("Adam learning rate")
        ax.set_ylabel("best validation loss / trivial baseline's")
        ax.set_title(f"{dataset} tuning (median, range over tuning seeds)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


PLOTTERS: Dict[str, Callable[[Dict[str, Any], Path], Path]] = {
    "specialization": plot_specialization,
    "gradient_flow": plot_gradient_flow,
    "memory_capacity": plot_memory_capacity,
    "real_data": plot_real_data,
}


def write_plot(result: Dict[str, Any], out_dir: Path) -> Path:
    """The figure of one analysis result, ``<out_dir>/<analysis>.png``."""
    name = result["analysis"]
    return PLOTTERS[name](result, Path(out_dir) / f"{name}.png")
