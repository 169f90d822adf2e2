"""Speed and memory measurements of DIRU backends against ``torch.nn.LSTM`` (CPU).

Shared by the pytest-benchmark suite (``bench/``), its report script (``bench/report.py``) and
the CLI (``python -m diru_fast bench``). Everything is measured in one process, at one thread
count, and reported as ratios against LSTM measured in the same run: absolute times on a shared
machine drift, ratios much less.

Measured cases (:data:`CASES`), each for every DIRU backend and for its torch.nn counterpart of the
same n, d, dtype (``diru_fast.baselines.LSTMModel`` = ``nn.LSTM`` + the same linear head, or
``nn.LSTMCell``):

- ``train``: one training step (forward + MSE + backward, gradients filled, no optimizer) and
  ``infer``: one no-grad forward, of ``DIRU``, at the shapes
  ``prototype`` (B=32, T=50, n=1, d=64, k=4: the prototype's own) and ``large`` (B=32, T=200, n=1, d=128);
  ``infer`` also on one long sequence, B=1, T=1000: ``long64`` (n=1, d=64) and ``long256`` (n=16, d=256);
- ``step``: one streaming step of ``DIRUCell`` (vs ``nn.LSTMCell``) under ``torch.inference_mode()``,
  B=1, at ``stream64`` (n=1, d=64) and ``stream256`` (n=16, d=256);
- ``epoch``: one prototype-size training epoch with Adam (800 training sequences in batches of 32,
  then 200 validation sequences without gradients), optimizer and Python overhead included.

The cell options (:data:`OPTION_CASES`, :data:`OPTION_VARIANTS`): at the prototype and the large shape,
a training step and a no-grad forward of ``DIRU`` with ``activation="relu"``, with attention over the
k = 4 compartments, with compartment dropout 0.1, with time decay (``dt`` None: a gap of 1 at every step,
the same arithmetic as given gaps), and with all four, each against the plain ``DIRU``
(``plain``) on the same backend (default ``auto``: the backend a user gets for those options), as
the ratio to the plain cell. The models run in the mode of their case: ``train`` in training mode
(dropout drawn), ``infer`` in eval mode (dropout off, as at inference).

Memory: the bytes autograd saves for the backward (activations; parameters excluded),
counted once per storage through ``torch.autograd.graph.saved_tensors_hooks``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.utils import benchmark as tbench

from .backends import available_backends
from .baselines import LSTMModel
from .modules import DIRU, DIRUCell

SHAPES: Dict[str, Dict[str, int]] = {
    "prototype": dict(B=32, T=50, n=1, d=64, k=4),
    "large": dict(B=32, T=200, n=1, d=128, k=4),
    "long64": dict(B=1, T=1000, n=1, d=64, k=4),
    "long256": dict(B=1, T=1000, n=16, d=256, k=4),
    "stream64": dict(B=1, T=1, n=1, d=64, k=4),
    "stream256": dict(B=1, T=1, n=16, d=256, k=4),
}
MODES = ("train", "infer", "step", "epoch")
CASES: List[Tuple[str, str]] = [  # (shape, mode), in report order
    ("prototype", "train"), ("prototype", "infer"), ("large", "train"), ("large", "infer"),
    ("long64", "infer"), ("long256", "infer"), ("stream64", "step"), ("stream256", "step"), ("prototype", "epoch"),
]
EPOCH_TRAIN, EPOCH_VAL = 800, 200  # sequences per prototype-size epoch
BASELINE = "lstm"
# The cell options, each timed against the plain DIRU (PLAIN) on the same backend at these cases.
OPTION_CASES: List[Tuple[str, str]] = [("prototype", "train"), ("prototype", "infer"), ("large", "train"),
                                       ("large", "infer")]
PLAIN = "plain"
OPTION_VARIANTS: Dict[str, Dict[str, object]] = {
    PLAIN: {},
    "relu": {"activation": "relu"},
    "attention": {"compartment_attention": True},
    "dropout": {"compartment_dropout": 0.1},
    "all": {"activation": "relu", "compartment_attention": True, "compartment_dropout": 0.1, "time_decay": True},
    "time_decay": {"time_decay": True},
}
OPTION_BACKEND = "auto"


@dataclass
class Case:
    impl: str  # "lstm" or a DIRU backend name
    shape: str
    mode: str
    step: Callable[[], None]
    model: torch.nn.Module
    x: torch.Tensor
    info: Dict[str, object] = field(default_factory=dict)


def build_model(impl: str, n: int, d: int, k: int = 4, dtype: torch.dtype = torch.float32,
                options: Optional[Dict[str, object]] = None) -> torch.nn.Module:
    if impl == BASELINE:
        return LSTMModel(n, d, 1).to(dtype)
    return DIRU(n, d, 1, num_compartments=k, backend=impl, **(options or {})).to(dtype)


def build_case(impl: str, shape: str, mode: str, dtype: torch.dtype = torch.float32, seed: int = 0,
               variant: Optional[str] = None) -> Case:
    """A ready-to-time step of ``impl`` at ``SHAPES[shape]`` in ``mode`` (one of :data:`MODES`);
    ``variant`` (a key of :data:`OPTION_VARIANTS`; modes ``train``/``infer``): DIRU with those cell
    options, in training mode for ``train`` and in eval mode for ``infer``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if variant is not None and (variant not in OPTION_VARIANTS or mode not in ("train", "infer")
                                or impl == BASELINE):
        raise ValueError(f"an option variant ({', '.join(OPTION_VARIANTS)}) is a DIRU train/infer case, got "
                         f"{impl!r} {mode!r} {variant!r}")
    s = SHAPES[shape]
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    info = dict(s, dtype=str(dtype).replace("torch.", ""))
    if mode == "step":
        return _streaming_case(impl, shape, s, dtype, gen, info)
    model = build_model(impl, s["n"], s["d"], s["k"], dtype, OPTION_VARIANTS[variant] if variant else None)
    if variant is not None:
        model.train(mode == "train")
        info.update(variant=variant, options=dict(OPTION_VARIANTS[variant]))
    rows = EPOCH_TRAIN + EPOCH_VAL if mode == "epoch" else s["B"]
    x = torch.randn(rows, s["T"], s["n"], generator=gen, dtype=dtype)
    y = torch.randn(rows, 1, generator=gen, dtype=dtype)
    params = list(model.parameters())

    if mode == "train":
        def step() -> None:
            for p in params:
                p.grad = None
            F.mse_loss(model(x), y).backward()
    elif mode == "infer":
        def step() -> None:
            with torch.no_grad():
                model(x)
    else:
        step = _epoch(model, x, y, s["B"])
        x = x[:s["B"]]
    return Case(impl, shape, mode, step, model, x, info)


def _epoch(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> Callable[[], None]:
    """One epoch as the study trains: Adam over the training rows, then a no-grad validation pass."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        model.train()
        for i in range(0, EPOCH_TRAIN, batch):
            opt.zero_grad(set_to_none=True)
            F.mse_loss(model(x[i:i + batch]), y[i:i + batch]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            for i in range(EPOCH_TRAIN, EPOCH_TRAIN + EPOCH_VAL, batch):
                F.mse_loss(model(x[i:i + batch]), y[i:i + batch])

    return step


def _streaming_case(impl: str, shape: str, s: Dict[str, int], dtype: torch.dtype, gen: torch.Generator,
                    info: Dict[str, object]) -> Case:
    """One step of a cell on one stream (B rows), as a real-time caller makes it."""
    n, d, batch = s["n"], s["d"], s["B"]
    x = torch.randn(batch, n, generator=gen, dtype=dtype)
    h = torch.randn(batch, d, generator=gen, dtype=dtype)
    if impl == BASELINE:
        cell = torch.nn.LSTMCell(n, d, dtype=dtype)
        state = (h, torch.randn(batch, d, generator=gen, dtype=dtype))
    else:
        cell = DIRUCell(n, d, dtype=dtype, num_compartments=s["k"], backend=impl)
        state = h

    def step() -> None:
        with torch.inference_mode():
            cell(x, state)

    return Case(impl, shape, "step", step, cell, x, info)


def saved_activation_bytes(case: Case) -> int:
    """Bytes autograd keeps for the backward of one forward (unique storages, parameters excluded;
    the per-row-step breakdown: docs/THEORY.md §3.3)."""
    param_storages = {p.untyped_storage().data_ptr() for p in case.model.parameters()}
    seen: Dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in param_storages and t.device.type != "meta":
            seen[ptr] = max(seen.get(ptr, 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = case.model(case.x)
    del out
    return sum(seen.values())


def time_case(case: Case, min_run_time: float = 1.0) -> Dict[str, float]:
    """Median and IQR (seconds) of ``case.step`` with torch.utils.benchmark (warm-up included)."""
    case.step()  # warm up: first-use builds, allocator, caches
    timer = tbench.Timer(stmt="step()", globals={"step": case.step}, num_threads=torch.get_num_threads())
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return {"median_s": m.median, "iqr_s": m.iqr, "runs": len(m.times)}


def scaling_series(impl: str, min_run_time: float = 0.3) -> List[Dict[str, float]]:
    """Training-step time against T (B=32) and against B (T=50) at d=64."""
    rows = []
    for axis, values in (("T", (25, 50, 100, 200)), ("B", (8, 16, 32, 64, 128))):
        for value in values:
            B, T = (32, value) if axis == "T" else (value, 50)
            SHAPES["_scaling"] = dict(B=B, T=T, n=1, d=64, k=4)
            try:
                case = build_case(impl, "_scaling", "train")
                t = time_case(case, min_run_time)["median_s"]
            finally:
                SHAPES.pop("_scaling", None)
            rows.append({"impl": impl, "axis": axis, "B": B, "T": T, "median_s": t})
    return rows


def linear_fit_r2(xs: Sequence[float], ys: Sequence[float]) -> float:
    """R^2 of the least-squares line through (xs, ys): near 1 means time is linear in the size."""
    t_x = torch.tensor(xs, dtype=torch.float64)
    t_y = torch.tensor(ys, dtype=torch.float64)
    a = torch.stack([t_x, torch.ones_like(t_x)], 1)
    coef = torch.linalg.lstsq(a, t_y.unsqueeze(1)).solution.squeeze(1)
    resid = t_y - a @ coef
    return float(1 - resid.pow(2).sum() / (t_y - t_y.mean()).pow(2).sum())


# ----------------------------------------------------------------------------------- reports


def environment() -> Dict[str, object]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                timeout=5, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    from . import __version__

    return {
        "timestamp": _dt.datetime.now().isoformat(timespec="seconds"),
        "device": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "diru_fast": __version__,
        "python": platform.python_version(),
        "commit": commit,
    }


def _main_records(records: List[Dict[str, object]]) -> List[Dict[str, object]]:
    """The backend-vs-torch.nn records (not the option variants: :func:`options_table`)."""
    return [r for r in records if r.get("variant") is None]


def _case_rows(records: List[Dict[str, object]]):
    """The backend-vs-torch.nn tables' shared frame: ``(impls, header lines, rows)``, each row
    ``(shape, mode, {impl: record}, baseline median or None)`` in CASES order, empty cases left out."""
    records = _main_records(records)
    impls = [BASELINE] + sorted({r["impl"] for r in records} - {BASELINE}, key=_impl_order)
    header = ["| shape | mode | " + " | ".join(impls) + " |", "|---|---|" + "---|" * len(impls)]
    rows = []
    for shape, mode in CASES:
        row = {r["impl"]: r for r in records if r["shape"] == shape and r["mode"] == mode}
        if row:
            rows.append((shape, mode, row, row.get(BASELINE, {}).get("median_s")))
    return impls, header, rows


def markdown_table(records: List[Dict[str, object]]) -> str:
    """Rows: (shape, mode); for each impl the median ms and its ratio to LSTM in the same run."""
    impls, lines, rows = _case_rows(records)
    records = _main_records(records)
    for shape, mode, row, base in rows:
        cells = []
        for impl in impls:
            r = row.get(impl)
            if r is None:
                cells.append("–")
                continue
            ms = 1e3 * float(r["median_s"])
            ratio = f" ({ratio_vs_baseline(r, base):.2f}×)" if base and impl != BASELINE else ""
            cells.append(f"{ms:.2f} ms{ratio}")
        lines.append(f"| {_shape_label(shape, mode)} | {mode} | " + " | ".join(cells) + " |")
    mem = [r for r in records if r.get("saved_bytes") is not None and r["mode"] == "train"]
    if mem:
        lines += ["", "| shape | activation memory saved for backward | " + " | ".join(impls) + " |",
                  "|---|---|" + "---|" * len(impls)]
        for shape in SHAPES:
            row = {r["impl"]: r for r in mem if r["shape"] == shape}
            if row:
                cells = [f"{row[i]['saved_bytes'] / 2**20:.2f} MiB" if i in row else "–" for i in impls]
                lines.append(f"| {shape} | train | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def case_flops(impl: str, shape: str, mode: str) -> float:
    """Floating-point operations of one ``step`` of a case, counting each model's own multiply-adds
    (2 FLOPs each; counts: docs/THEORY.md §3.1) in its products: per row and step, a DIRU forward does 5d² + 3dn of them and an
    LSTM 4d² + 4dn; a training step adds the backward's recurrence and the weight gradients
    (DIRU 10d² + 3dn, LSTM 8d² + 4dn). Gate math and the linear head are not counted."""
    s = SHAPES[shape]
    n, d = s["n"], s["d"]
    fwd, bwd = ((4 * d * d + 4 * d * n), (8 * d * d + 4 * d * n)) if impl == BASELINE else \
        ((5 * d * d + 3 * d * n), (10 * d * d + 3 * d * n))
    rows = s["B"] * s["T"]
    if mode == "train":
        return 2.0 * rows * (fwd + bwd)
    if mode == "epoch":
        return 2.0 * s["T"] * (EPOCH_TRAIN * (fwd + bwd) + EPOCH_VAL * fwd)
    return 2.0 * rows * fwd  # infer, step


def gflops_table(records: List[Dict[str, object]]) -> str:
    """Achieved GFLOP/s of each case (see case_flops): what bounds a case, as a number. A model's
    time is its ratio to the baseline times the baseline's median (the paired ratio where the suite
    paired rounds), so the two columns agree with the ratios even when the machine's speed drifted
    between the two benchmarks' medians."""
    impls, lines, rows = _case_rows(records)
    for shape, mode, row, base in rows:

        def seconds(impl: str) -> float:
            r = row[impl]
            return ratio_vs_baseline(r, base) * float(base) if base and impl != BASELINE else float(r["median_s"])

        cells = [f"{case_flops(i, shape, mode) / seconds(i) / 1e9:.1f}" if i in row else "–" for i in impls]
        lines.append(f"| {_shape_label(shape, mode)} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_vs_plain(record: Dict[str, object], plain_median_s: Optional[float]) -> Optional[float]:
    """An option variant's time over the plain DIRU's: the median of per-round ratios where the suite
    paired rounds (``ratio_vs_plain``), else the ratio of the two medians."""
    paired = record.get("ratio_vs_plain")
    if paired is not None:
        return float(paired)
    return float(record["median_s"]) / plain_median_s if plain_median_s else None


def options_table(records: List[Dict[str, object]]) -> str:
    """The cell options against the plain DIRU on the same backend: rows (shape, mode, backend), for
    each variant the median ms, its ratio to the plain cell and the backend it resolved to ("" when
    there are no option records)."""
    opt = [r for r in records if r.get("variant") is not None]
    if not opt:
        return ""
    variants = [v for v in OPTION_VARIANTS if any(r["variant"] == v for r in opt)]
    lines = ["| shape | mode | backend | " + " | ".join(variants) + " |", "|---|---|---|" + "---|" * len(variants)]
    for shape, mode in OPTION_CASES:
        for impl in sorted({r["impl"] for r in opt if r["shape"] == shape and r["mode"] == mode}):
            row = {r["variant"]: r for r in opt if r["shape"] == shape and r["mode"] == mode and r["impl"] == impl}
            plain = row.get(PLAIN, {}).get("median_s")
            cells = []
            for v in variants:
                r = row.get(v)
                if r is None:
                    cells.append("–")
                    continue
                notes = [] if v == PLAIN or not plain else [f"{ratio_vs_plain(r, plain):.2f}×"]
                notes += [str(r["resolved_backend"])] if r.get("resolved_backend") else []
                cells.append(f"{1e3 * float(r['median_s']):.2f} ms" + (f" ({', '.join(notes)})" if notes else ""))
            lines.append(f"| {_shape_label(shape, mode)} | {mode} | {impl} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_vs_baseline(record: Dict[str, object], baseline_median_s: float) -> float:
    """The record's time over the baseline's: the median of per-round ratios where the suite paired
    each round with a baseline round (``ratio_vs_lstm``), else the ratio of the two medians."""
    paired = record.get("ratio_vs_lstm")
    return float(paired) if paired is not None else float(record["median_s"]) / baseline_median_s


def _shape_label(shape: str, mode: str) -> str:
    s = SHAPES[shape]
    if mode == "step":
        return f"{shape} B={s['B']} n={s['n']} d={s['d']}"
    if mode == "epoch":
        return f"{shape} {EPOCH_TRAIN}+{EPOCH_VAL} seqs, B={s['B']} T={s['T']} d={s['d']}"
    return f"{shape} B={s['B']} T={s['T']} d={s['d']}"


def _impl_order(name: str) -> int:
    order = ["cpu", "triton", "cuda", "torch", "reference"]
    return order.index(name) if name in order else len(order)


def write_report(records: List[Dict[str, object]], out_dir: Path, name: str,
                 extra: Optional[Dict[str, object]] = None, scaling: Optional[List[Dict[str, float]]] = None) -> Path:
    """Write ``name``.json / .md / .png under out_dir and append to history.csv; return the .md path.
    The .png plots the backends against torch.nn: an options-only run (no such record) gets none."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = environment()
    payload = {"environment": env, "records": records, "scaling": scaling or [], **(extra or {})}
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=2))
    md = [f"# Benchmark: {name}", "", f"`{json.dumps(env)}`"]
    if any(r.get("variant") is None for r in records):  # the backend-vs-torch.nn cases (an options-only run has none)
        md += ["", markdown_table(records), "",
               "Achieved GFLOP/s (each model's own multiply-adds in its products, 2 FLOPs each; gate math and",
               "the head not counted; a model's time is its paired ratio times the torch.nn median):", "",
               gflops_table(records)]
    options = options_table(records)
    if options:
        md += ["", "The cell options against the plain DIRU on the same backend (time, ratio to the plain cell: "
               "the median of paired rounds where the suite paired them; the backend each resolved to):", "", options]
    if extra:
        md += ["", "```", json.dumps(extra, indent=2), "```"]
    if scaling:
        md += ["", _scaling_summary(scaling)]
    (out_dir / f"{name}.md").write_text("\n".join(md) + "\n")
    if _main_records(records) or scaling:
        _plot(records, scaling, out_dir / f"{name}.png")
    history = out_dir / "history.csv"
    new = not history.exists()
    with history.open("a", newline="") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(["timestamp", "device", "threads", "torch", "diru_fast", "commit", "impl", "shape",
                             "mode", "median_ms"])
        for r in records:
            writer.writerow([env["timestamp"], env["device"], env["threads"], env["torch"], env["diru_fast"],
                             env["commit"], r["impl"], r["shape"], r["mode"], f"{1e3 * float(r['median_s']):.4f}"])
    return out_dir / f"{name}.md"


def _scaling_summary(scaling: List[Dict[str, float]]) -> str:
    lines = ["| impl | axis | sizes | ms | R² of a linear fit |", "|---|---|---|---|---|"]
    for impl in sorted({r["impl"] for r in scaling}, key=_impl_order):
        for axis in ("T", "B"):
            rows = [r for r in scaling if r["impl"] == impl and r["axis"] == axis]
            if not rows:
                continue
            xs = [r[axis] for r in rows]
            ys = [r["median_s"] for r in rows]
            lines.append(f"| {impl} | {axis} | {', '.join(map(str, xs))} | "
                         f"{', '.join(f'{1e3 * y:.1f}' for y in ys)} | {linear_fit_r2(xs, ys):.4f} |")
    return "\n".join(lines)


def _plot(records, scaling, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plots are optional; the JSON and markdown carry the numbers
        return
    records = _main_records(records)
    panels = 1 + (2 if scaling else 0)
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.2), squeeze=False)
    ax = axes[0][0]
    groups = [(s, m) for s, m in CASES if any(r["shape"] == s and r["mode"] == m for r in records)]
    impls = sorted({r["impl"] for r in records} - {BASELINE}, key=_impl_order)
    width = 0.8 / max(1, len(impls))
    for i, impl in enumerate(impls):
        ratios = []
        for shape, mode in groups:
            row = {r["impl"]: r for r in records if r["shape"] == shape and r["mode"] == mode}
            base = row.get(BASELINE)
            ratios.append(ratio_vs_baseline(row[impl], float(base["median_s"])) if impl in row and base else 0)
        ax.bar([g + i * width for g in range(len(groups))], ratios, width, label=impl)
    ax.axhline(1.0, color="k", lw=1, ls="--", label="nn.LSTM")
    ax.set_xticks([g + width * (len(impls) - 1) / 2 for g in range(len(groups))])
    ax.set_xticklabels([f"{s}\n{m}" for s, m in groups])
    ax.set_ylabel("time / nn.LSTM time (lower is better)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.set_title("DIRU backends vs nn.LSTM, same run")
    if scaling:
        for j, axis in enumerate(("T", "B")):
            a = axes[0][1 + j]
            for impl in sorted({r["impl"] for r in scaling}, key=_impl_order):
                rows = [r for r in scaling if r["impl"] == impl and r["axis"] == axis]
                a.plot([r[axis] for r in rows], [1e3 * r["median_s"] for r in rows], "o-", label=impl)
            a.set_xlabel(axis)
            a.set_ylabel("train step (ms)")
            a.set_title(f"scaling in {axis} (d=64, {'B=32' if axis == 'T' else 'T=50'})")
            a.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------- CLI


def run(impls: Sequence[str], cases: Sequence[Tuple[str, str]], min_run_time: float,
        progress: Callable[[str], None] = print) -> List[Dict[str, object]]:
    records = []
    for shape, mode in cases:
        for impl in impls:
            case = build_case(impl, shape, mode)
            rec = {"impl": impl, "shape": shape, "mode": mode, **case.info, **time_case(case, min_run_time)}
            if mode == "train":
                rec["saved_bytes"] = saved_activation_bytes(case)
            progress(f"{shape:9s} {mode:5s} {impl:10s} {1e3 * rec['median_s']:9.2f} ms")
            records.append(rec)
    return records


def resolved_backend(case: Case) -> str:
    """The backend a DIRU case's model runs on (``auto`` resolved for the options it uses)."""
    from .backends import resolve_backend
    from .providers import options_in_use

    rnn = case.model.rnn
    used = options_in_use(rnn.activation, rnn.compartment_of if rnn.compartment_attention else None,
                          case.x if (rnn.compartment_dropout and case.model.training) else None,
                          case.x if rnn.time_decay else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return resolve_backend(rnn.backend, case.x.device, case.x.dtype, used)


def run_options(impls: Sequence[str], cases: Sequence[Tuple[str, str]], min_run_time: float,
                progress: Callable[[str], None] = print) -> List[Dict[str, object]]:
    """Every :data:`OPTION_VARIANTS` at ``cases`` on each DIRU backend in ``impls`` (unpaired medians)."""
    records = []
    for shape, mode in cases:
        for impl in impls:
            for variant in OPTION_VARIANTS:
                case = build_case(impl, shape, mode, variant=variant)
                rec = {"impl": impl, "shape": shape, "mode": mode, **case.info,
                       "resolved_backend": resolved_backend(case), **time_case(case, min_run_time)}
                progress(f"{shape:9s} {mode:5s} {impl:6s} {variant:9s} {1e3 * rec['median_s']:9.2f} ms")
                records.append(rec)
    return records


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="diru_fast bench", description=(
        "Time DIRU backends against torch.nn (LSTM, LSTMCell) on CPU: training step, no-grad forward, "
        "streaming step, training epoch with Adam; write a markdown table, JSON and a PNG chart."))
    parser.add_argument("--out", type=Path, default=Path("bench_out"), help="output directory")
    parser.add_argument("--name", default="cpu", help="report file stem")
    parser.add_argument("--impls", nargs="+", default=None,
                        help="what to time (default: lstm + every DIRU backend available on CPU)")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--min-time", type=float, default=1.0, help="seconds of timing per case")
    parser.add_argument("--scaling", action="store_true", help="also time the T and B scaling series")
    parser.add_argument("--options", action="store_true",
                        help="also time the cell options (relu, attention, dropout, time decay, all) against the plain DIRU")
    parser.add_argument("--quick", action="store_true",
                        help="prototype shape, training step and forward only, short timings, no reference")
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        impls = args.impls or [BASELINE] + [b for b in available_backends("cpu")]
    if args.quick:
        args.shapes, args.modes, args.min_time = ["prototype"], ["train", "infer"], min(args.min_time, 0.3)
        impls = [i for i in impls if i != "reference"]
    cases = [(s, m) for s, m in CASES if s in args.shapes and m in args.modes]
    records = run(impls, cases, args.min_time)
    if args.options:
        records += run_options([OPTION_BACKEND], [c for c in OPTION_CASES if c in cases], args.min_time)
    scaling = None
    if args.scaling:
        scaling = []
        for impl in [i for i in impls if i != "reference"]:
            scaling += scaling_series(impl)
    path = write_report(records, args.out, args.name, None, scaling)
    print()
    print(markdown_table(records))
    print(f"\nwrote {path} (+ .json, .png, history.csv)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
