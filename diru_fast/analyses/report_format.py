"""Formatting shared by the analyses' report sections (numbers, intervals, p-values, run metadata, labels)."""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence

LEARNED_NMSE = 0.5  # a memory-task run "learned" the task if its validation NMSE is below this


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
