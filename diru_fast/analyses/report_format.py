"""Formatting shared by the analyses' report sections (numbers, intervals, p-values, run metadata, labels)."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

LEARNED_NMSE = 0.5  # the old protocol's memory-task criterion (validation NMSE below this); superseded by LEARNED_RATIO


def _f(x: Optional[float], digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}g}"


def _pm(ms: Sequence[float], digits: int = 3) -> str:
    mean, std = ms[0], ms[1]
    return _f(mean, digits) if std is None or not math.isfinite(std) else f"{_f(mean, digits)} ± {_f(std, 2)}"


def _ci(iv: Optional[Sequence[float]], fmt: str = "{:+.3f}") -> str:
    if iv is None or not all(math.isfinite(v) for v in iv[:3]):
        return "– (needs ≥ 2 seeds)"
    return f"{fmt.format(iv[0])} [95% CI {fmt.format(iv[1])}, {fmt.format(iv[2])}]"


def _pct(iv: Optional[Sequence[float]]) -> str:
    if iv is None:
        return "–"
    return f"{iv[0]:+.1%} [95% CI {iv[1]:+.1%}, {iv[2]:+.1%}]"


def _p(p: Optional[float]) -> str:
    """A p-value rounded once, from the stored value: 3 significant digits (scientific below 0.001)."""
    if p is None or not math.isfinite(p):
        return "–"
    return f"{p:.3g}" if p >= 1e-3 else f"{p:.1e}"


def _meta(result: Dict[str, Any]) -> str:
    m = result.get("meta", {})
    return (f"Command: `{m.get('command', '(library call)')}` — {m.get('device_type', 'cpu')}, "
            f"{m.get('threads', '?')} torch thread(s), torch {m.get('torch', '?')}, diru_fast commit "
            f"{m.get('commit') or '?'}, DIRU backend {m.get('diru_backend', '?')}, {m.get('timestamp', '?')}, "
            f"wall time {_f(m.get('wall_s'), 3)} s.")


def _options_clause(cfg: Dict[str, Any]) -> str:
    """DIRU's cell options of a run, as a clause (", with attention over compartments"; "" when plain)."""
    o = cfg.get("options") or {}
    parts = []
    if o.get("activation", "tanh") != "tanh":
        parts.append(f"{o['activation']} activation")
    if o.get("compartment_sizes"):
        parts.append("compartment sizes " + ",".join(map(str, o["compartment_sizes"])))
    if o.get("compartment_attention"):
        parts.append("attention over compartments")
    if o.get("compartment_dropout"):
        parts.append(f"compartment dropout {o['compartment_dropout']:g}")
    return (", with " + ", ".join(parts)) if parts else ""


def _attention(cfg: Dict[str, Any]) -> bool:
    return bool((cfg.get("options") or {}).get("compartment_attention"))


def _figure(name: str, fig_dir: str) -> str:
    return f"![{name}]({fig_dir}/{name}.png)"




MODEL_LABELS = {"diru": "DIRU", "lstm": "LSTM", "lstm_fb1": "LSTM, forget bias 1", "gru": "GRU",
                "rnn": "tanh RNN", "rnn_matched": "tanh RNN, DIRU's parameters"}


def _label(kind: str) -> str:
    return MODEL_LABELS.get(kind, kind)


def _seeds(cfg: Dict[str, Any]) -> str:
    return f"{cfg['first_seed']}..{cfg['first_seed'] + cfg['seeds'] - 1}"


def _clip(cfg: Dict[str, Any]) -> str:
    return f"gradient clipping to global norm {cfg['clip']:g}" if cfg.get("clip") else "no gradient clipping"


# ------------------------------------------------------------------ the study's protocol (tuning, learned rule)

LEARNED_RULE = (
    "A model has *learned* a task when its test MSE is at most 0.3× the MSE of predicting the training mean "
    "(per seed; over seeds, the median of the per-seed ratios). A comparison between models is made only where "
    "both learned: where neither did, the result is \"not learned\"; where only one did, \"only X learned\" "
    "(a result, since both were tuned alike); never \"holds\", \"higher\" or \"lower\".")


def tuning_clause(cfg: Dict[str, Any], what: str = "every model") -> str:
    """How the learning rates were chosen (the grid, the tuning seeds), as a clause."""
    grid = cfg.get("lr_grid") or []
    if len(grid) <= 1:
        return f"Adam learning rate {grid[0] if grid else cfg.get('lr')} for {what} (no tuning)"
    n = cfg.get("tune_seeds", 1)
    seeds = f"{cfg['tune_first_seed']}..{cfg['tune_first_seed'] + n - 1}" if n > 1 else f"{cfg['tune_first_seed']}"
    return (f"{what}'s Adam learning rate picked from the grid {{{', '.join(f'{v:g}' for v in grid)}}} by the lowest "
            f"median best validation MSE / predict-the-mean over {n} tuning seed{'s' if n > 1 else ''} ({seeds}, "
            "disjoint from the test seeds; ties to the smaller rate)")


def protocol_sentence(cfg: Dict[str, Any], what: str = "every model") -> str:
    """How the models were trained: the tuning, clipping, early stopping, the weights scored."""
    return (f"{tuning_clause(cfg, what)}; {_clip(cfg)}; early stopping after {cfg['patience']} epochs without a better "
            f"validation MSE, at most {cfg['epochs']} epochs (the cap), the best validation epoch's weights scored on "
            "the test split")


def lr_curve_rows(curves: Dict[str, Sequence[Dict[str, Any]]], picked: Dict[str, float], *,
                  grid: Optional[Sequence[float]] = None, suffix: str = "", stable_column: bool = True) -> List[str]:
    """A markdown table: per model (label -> lr_curve rows), the validation loss over the trivial baseline's at
    each learning rate of ``grid`` (default: every rate in the curves) — median over tuning seeds, range in
    brackets when several, diverged trials counted, ``suffix`` after the median (e.g. "×") — the picked rate
    (label -> rate) in bold, and with ``stable_column`` the stable range (the rates whose median is at most
    0.3, the learned level)."""
    lrs = list(grid) if grid is not None else sorted({c["lr"] for rows in curves.values() for c in rows})
    lines = ["| model | " + " | ".join(f"lr {v:g}" for v in lrs) + " | picked |"
             + (" learns (median ≤ 0.3) at |" if stable_column else ""),
             "|---|" + "---:|" * len(lrs) + "---:|" + ("---|" if stable_column else "")]
    for label, rows in curves.items():
        by = {c["lr"]: c for c in rows}
        cells = []
        for v in lrs:
            c = by.get(v)
            if c is None:
                cells.append("–")
                continue
            text = _f(c["median"], 2) + suffix + (f" [{_f(c['low'], 2)}, {_f(c['high'], 2)}]" if c["n"] > 1 else "")
            if c.get("diverged"):
                text += f" ({c['diverged']} diverged)"
            cells.append(f"**{text}**" if picked.get(label) == v else text)
        line = f"| {label} | " + " | ".join(cells) + f" | {_f(picked.get(label), 3)} |"
        if stable_column:
            stable = [c["lr"] for c in rows if math.isfinite(c["median"]) and c["median"] <= 0.3]
            line += " " + (", ".join(f"{v:g}" for v in stable) if stable else "none") + " |"
        lines.append(line)
    return lines


def times(ratio: Optional[float], best_trivial: Optional[float] = None, trivial_name: str = "") -> str:
    """"0.031× the mean predictor (5.1× the <trivial_name>)"."""
    text = f"{_f(ratio, 2)}× the mean predictor"
    if best_trivial is not None and math.isfinite(best_trivial) and best_trivial > 0 and ratio is not None:
        text += f" ({_f(ratio / best_trivial, 2)}× the {trivial_name})"
    return text


def cap_note(rows: Sequence[Dict[str, Any]], cap: int) -> str:
    """"k of n runs hit the cap of E epochs" (the cap, not convergence, ended them)."""
    hit = sum(1 for r in rows if r.get("hit_cap"))
    return f"{hit} of {len(rows)} runs hit the cap of {cap} epochs (ended by the cap, not by early stopping)"
