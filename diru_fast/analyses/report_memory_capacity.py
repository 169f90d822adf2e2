"""The memory capacity section of ``ANALYSES.md`` and its summary row, from the analysis' JSON."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

from ..experiments.tuning import lr_curve
from . import memory_capacity
from .report_format import (LEARNED_RULE, _attention, _ci, _f, _figure, _options_clause, _p, _seeds, cap_note,
                            lr_curve_rows, protocol_sentence, tuning_clause)

REF_LABELS = {"rnn": "tanh RNN, same d", "rnn_matched": "tanh RNN, DIRU's parameters"}


def _name(key: str) -> str:
    return f"DIRU k={key[len('diru_k'):]}" if key.startswith("diru_k") else REF_LABELS.get(key, key)


def _key(r: Dict[str, Any]) -> str:
    return f"diru_k{r['k']}" if r["model"] == "diru" else r["model"]


def _geo(values: Sequence[float]) -> float:
    vals = [max(v, 1e-12) for v in values if math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else math.nan


def section_memory_capacity(result: Dict[str, Any], fig_dir: str) -> str:
    cfg, s = result["config"], result["summary"]
    if "learned" not in result:  # a result made before the study's protocol
        return ("This result was made with the old protocol (one untuned learning rate, fixed epochs, validation "
                "NMSE); rerun `python -m diru_fast memory-capacity` to report it under the current rules.\n\n"
                f"**Verdict (old protocol): {s['verdict']}**.")
    delays = s["delays"]
    runs = result["runs"]
    hidden = {r["model"]: r.get("hidden_size", cfg["hidden_size"]) for r in runs}
    params = {r["model"]: r["params"] for r in runs}
    refs = [m for m in ("rnn", "rnn_matched") if m in hidden]
    lines = [
        f"**Claim.** {memory_capacity.CLAIM}.", "",
        "**Rules (stated before the numbers).** " + LEARNED_RULE + " Here the error is the test NMSE (the target is "
        "standardised, so test MSE / predict-the-mean is the NMSE: 1 = nothing remembered). b = the change of ln "
        "test NMSE per doubling of k, g = per doubling of the delay (below), both estimated on the delays at which "
        "DIRU learned the task at every k. \"About k×\" capacity means doubling k undoes a doubling of the delay: "
        "b ≈ −g, within a factor of two, the band [−2g, −g/2]. If DIRU learned at no delay for every k: **not "
        "learned**. Otherwise, if the error grows with the delay (g's 95% CI above 0): **holds** if b's 95% CI lies "
        "inside the band, **does not hold** if it lies entirely outside, else **inconclusive**; inconclusive if the "
        "error does not grow with the delay (or fewer than two delays qualify). The verdict rests on this one interval "
        "(a family of one: Holm changes nothing); the F-test and Friedman's test are descriptive and do not enter it. "
        "The tanh RNNs are the claim's \"standard RNN\": reference curves, per delay learned or not, not tested.", "",
        "**Tuning.** " + tuning_clause(cfg, "Every model") + ", separately at every delay. DIRU is tuned at "
        + ("every k" if cfg.get("tune_k") == 0 else f"k = {cfg.get('tune_k')}, and the picked rate trains every k ")
        + ("" if cfg.get("tune_k") == 0 else
           "(with attention k changes the function class a little: one rate for every k is an approximation, stated "
           "here)" if _attention(cfg) else
           "(for the plain cell DIRU(k) is one model family: the same function class and initial distribution for "
           "every k)") + ". Best validation MSE / predict-the-mean per learning rate (median over the tuning seeds, "
        "range in brackets when several; picked in bold); the rates at which a model learns are a result in "
        "themselves (its stable range):", "",
        *_tuning_table(result), "",
        f"Tuning trials: {cap_note(result.get('tuning', []), cfg['epochs'])}.", "",
        "**Measurement.** The standardised memory task (the prototype's variable-delay memory task, inputs / 8, the "
        "target z-scored with the training split's mean and std) with delay T − 5 ∈ {{{dl}}} steps (T ∈ {{{T}}}), "
        "DIRU with d = {d}{opts} and k ∈ {{{ks}}} compartments — {same}parameter count for every k ({params}) — "
        "{proto}; batch {b}; {n} training / {v} validation / {nt} test sequences per delay and seed; test seeds "
        "{seeds}. The \"standard RNN\" references: tanh RNNs {refs}.".format(
            dl=", ".join(map(str, delays)), T=", ".join(map(str, cfg["seq_lens"])), d=cfg["hidden_size"],
            ks=", ".join(map(str, cfg["ks"])), opts=_options_clause(cfg),
            same="the same " if len({tuple(v) for v in result["params_by_k"].values()}) == 1 else "not the same ",
            params=", ".join(f"k={k}: {v[0]:,}" for k, v in result["params_by_k"].items() if v),
            proto=protocol_sentence(cfg), b=cfg["batch_size"], n=cfg["n_train"], v=cfg["n_val"], nt=cfg["n_test"],
            seeds=_seeds(cfg), refs=" and ".join(
                f"with d = {hidden[m]} ({params[m]:,} parameters)" for m in refs)
            or "(not run here: they do not depend on DIRU's cell options; see the plain cell's section)"), "",
        "Test NMSE (= test MSE / predict-the-mean), geometric mean over seeds (per-seed values in brackets); "
        "*not learned*: median above 0.3; the lr each model trained with:", "",
        "| model | " + " | ".join(f"delay {d}" for d in delays) + " |",
        "|---|" + "---|" * len(delays),
    ]
    learned = result["learned"]["models"]
    picked = result.get("picked_lr", {})
    for key in [f"diru_k{k}" for k in cfg["ks"]] + refs:
        cells = []
        for d in delays:
            vals = [r["test_nmse"] for r in sorted(runs, key=lambda r: r["seed"]) if _key(r) == key and r["delay"] == d]
            if not vals:
                cells.append("–")
                continue
            ok = learned.get(key, {}).get(str(d), {}).get("learned")
            lr = picked.get(str(d), {}).get(key)
            cells.append(f"{_geo(vals):.3g} ({', '.join(f'{v:.2g}' for v in vals)})" + ("" if ok else " *not learned*")
                         + (f", lr {lr:g}" if lr else ""))
        label = _name(key) + (f" (d = {hidden[key]}, reference)" if key in refs else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    trivial = result["learned"].get("trivial", {})
    for name, by in trivial.items():
        label = {"ls_all": "least squares on all T inputs", "ls_last10": "least squares on the last 10 inputs"}.get(name, name)
        lines.append(f"| *{label}* | " + " | ".join(_trivial_cell(by.get(str(d))) for d in delays) + " |")
    lines += ["", "Least squares on all T inputs solves this task exactly (the target is the sum of the values at the "
              "fixed steps 0–6, linear in the inputs): the task asks whether a recurrent network carries values over "
              "the delay, not for something no simple predictor can do, so \"× the best trivial baseline\" is "
              "infinite for every network and the mean predictor is the scale used. "
              f"Test runs: {cap_note(runs, cfg['epochs'])}."]
    lines += ["", _learned_sentence(result)]
    f, fr, b, g = s.get("f_test"), s.get("friedman"), s.get("b_per_doubling_k"), s.get("g_per_doubling_delay")
    band = memory_capacity.predicted_band(g) if g else None
    lines += [
        "",
        f"Statistics on ln test NMSE over the delays at which DIRU learned at every k "
        f"({', '.join(map(str, s.get('learned_delays', []))) or 'none'}; {s.get('n_tested', 0)} runs), blocks = "
        "(delay, seed) cells (shared data):", "",
        f"- b, change of ln NMSE per doubling of k: {_ci(b) if b else '– (not estimated: no delay qualifies)'}.",
        f"- g, change of ln NMSE per doubling of the delay: "
        f"{_ci(g) if g else '– (not estimated: fewer than two delays qualify)'}.",
        "- \"About k×\" capacity predicts b ≈ −g: the band "
        + (f"[{band[0]:+.3f}, {band[1]:+.3f}] (−g within a factor of two)." if g and g[0] > 0 else
           "– (the error does not grow with the delay here: no prediction to test)." if g else "–."),
        "- Descriptive, not in the verdict: no effect of k at any delay (F-test, k and k × delay terms): "
        + (f"F({f['df_num']:.0f}, {f['df_den']:.0f}) = {f['F']:.3g}, p = {_p(f['p'])}" if f else "–")
        + "; Friedman rank test across k within cells: "
        + (f"χ² = {fr['chi2']:.3g}, p = {_p(fr['p'])} ({fr['blocks']} blocks)" if fr else "–")
        + ". A non-significant F is not evidence that k has no effect; the interval of b is what bounds it.", "",
        _figure("memory_capacity", fig_dir), "",
        f"**Verdict: {s['verdict']}**" + _memory_reason(s) + ".", "",
        _why_memory(cfg) + _k1_note(result),
    ]
    return "\n".join(lines)


def _trivial_cell(v: Optional[float]) -> str:
    if v is None:
        return "–"
    return "exact (< 1e-9)" if v < 1e-9 else f"{v:.3g}"


def _tuning_table(result: Dict[str, Any]) -> List[str]:
    trials = result.get("tuning", [])
    if not trials:
        return ["(no tuning: a one-value grid)"]
    curves, picked = {}, {}
    for d in sorted({t["delay"] for t in trials}):
        for key in dict.fromkeys(_key(t) for t in trials if t["delay"] == d):
            label = f"{_name(key)}, delay {d}"
            curves[label] = lr_curve([t for t in trials if t["delay"] == d and _key(t) == key], key="val_ratio")
            picked[label] = result["picked_lr"][str(d)][key]
    return lr_curve_rows(curves, picked)


def _learned_sentence(result: Dict[str, Any]) -> str:
    """Per delay: which models learned (the learned rule), and where only some did."""
    learned = result["learned"]["models"]
    delays = result["summary"]["delays"]
    parts = []
    for d in delays:
        yes = [k for k, by in learned.items() if by.get(str(d), {}).get("learned")]
        no = [k for k, by in learned.items() if str(d) in by and not by[str(d)]["learned"]]
        if not no:
            parts.append(f"delay {d}: every model learned")
        elif not yes:
            parts.append(f"delay {d}: no model learned")
        else:
            parts.append(f"delay {d}: only {', '.join(_name(k) for k in yes)} learned")
    return "Learned (median test NMSE ≤ 0.3) — " + "; ".join(parts) + "."


def _memory_reason(s: Dict[str, Any]) -> str:
    b, g = s.get("b_per_doubling_k"), s.get("g_per_doubling_delay")
    if not b or not g or not g[1] > 0:
        return ""
    lo, hi = memory_capacity.predicted_band(g)
    if b[1] > hi:
        return f" — b's 95% CI [{b[1]:+.3f}, {b[2]:+.3f}] lies entirely above the band [{lo:+.3f}, {hi:+.3f}]"
    if b[2] < lo:
        return f" — b's 95% CI [{b[1]:+.3f}, {b[2]:+.3f}] lies entirely below the band [{lo:+.3f}, {hi:+.3f}]"
    return f" — b's 95% CI [{b[1]:+.3f}, {b[2]:+.3f}] against the band [{lo:+.3f}, {hi:+.3f}]"


def _why_memory(cfg: Dict[str, Any]) -> str:
    if _attention(cfg):
        return ("**Why.** With attention over compartments k matters to the math: the softmax weights scale "
                "the k compartment blocks against each other (k(n + d + 1) more parameters), so DIRU(k) are "
                "different function classes, and the slope b asks whether that changes the error.")
    return ("**Why.** At fixed d the k compartments are a block split of one d-unit dendrite: the same function "
            "class, the same parameter count and the same initial distribution for every k. So DIRU(k) for "
            "different k are one model family and differences across k are seed noise. The prototype's \"~k× "
            "capacity\" has no mechanism behind it.")


def _k1_note(result: Dict[str, Any]) -> str:
    """Where DIRU learned at a delay at which no tanh RNN did: whether k = 1 already did (from the learned rule)."""
    learned = result["learned"]["models"]
    refs = [m for m in ("rnn", "rnn_matched") if m in learned]
    if not refs or "diru_k1" not in learned or _attention(result["config"]):
        return ""
    delays = [d for d in map(str, result["summary"]["delays"])
              if not any(learned[m].get(d, {}).get("learned") for m in refs)
              and any(v.get(d, {}).get("learned") for k, v in learned.items() if k.startswith("diru_k"))]
    if not delays:
        return ""
    k1 = [d for d in delays if learned["diru_k1"].get(d, {}).get("learned")]
    if k1 == delays:
        return (f" At delay{'s' if len(delays) > 1 else ''} {', '.join(delays)} DIRU learned and neither tanh RNN did "
                "(only DIRU learned; both tuned alike), already at k = 1: that comes from the rest of the cell (its "
                "residual state path; see the gradient-flow section), not from the compartments.")
    return (f" At delay{'s' if len(delays) > 1 else ''} {', '.join(delays)} DIRU learned at some k and neither tanh RNN "
            "did (only DIRU learned; both tuned alike).")


def summary_rows(result: Dict[str, Any]) -> List[Dict[str, str]]:
    """The summary table's row(s) for this analysis: claim, verdict, headline."""
    s = result["summary"]
    g = s.get("g_per_doubling_delay")
    band = memory_capacity.predicted_band(g) if g else None
    head = (f"ln test NMSE per doubling of k: {_ci(s.get('b_per_doubling_k'))} against the band "
            + (f"[{band[0]:+.2f}, {band[1]:+.2f}]" if band and g[0] > 0 else "–"))
    if "learned" in result:
        longest = str(max(s["delays"]))
        learned = result["learned"]["models"]
        parts = []
        for key, by in learned.items():
            m = by.get(longest)
            if m:
                parts.append(f"{_name(key)} {_f(m['median_ratio'], 2)}×" + ("" if m["learned"] else " (not learned)"))
        head += (f"; at delay {longest}, test MSE × the mean predictor (median): " + ", ".join(parts)
                 + "; least squares on all inputs is exact")
    return [{"claim": "Memory capacity grows about k× with k compartments", "verdict": s["verdict"], "headline": head}]
