"""The real data section of ``ANALYSES.md`` and its summary row, from the analysis' JSON."""

from __future__ import annotations

import math
from typing import Any, Dict, List

from . import real_data
from .report_format import _clip, _f, _figure, _p, _pct, _pm, _seeds


def section_real_data(result: Dict[str, Any], fig_dir: str) -> str:
    cfg, data = result["config"], result["data"]
    primary = [c for s in result["summary"].values() for c in s["comparisons"] if c.get("primary", True)]
    lines = [f"**Claim.** {real_data.CLAIM}; the prototype's pitch is that DIRU beats LSTM — here tested on real "
             "data at equal parameter count.", "",
             "**Rules (stated before the numbers).** Per comparison, DIRU's improvement = 1 − exp(mean log ratio "
             "DIRU / baseline of the metric) over blocks (a block: a seed with its own random split on digits; a "
             "rolling-origin test period on sunspots, its seeds averaged), 95% t-interval over blocks, and the "
             f"two-sided t-test of no difference. The family: the {len(primary)} primary comparisons (digits "
             "cross-entropy, sunspots MSE; each vs LSTM and vs GRU), Holm-adjusted at 0.05: \"DIRU beats it\" holds "
             "when significant in DIRU's favour, does not hold when significant against, else inconclusive, shown "
             "with the smallest improvement the test would detect with 80% power. The digits error rate is "
             "reported beside (raw p), not counted. Overall: holds if every primary comparison holds, does not "
             "hold if none holds and at least one does not hold, else inconclusive.", ""]
    desc = []
    if "digits" in data:
        i = data["digits"]
        desc.append(f"**digits** (scikit-learn, ships with it): 1,797 8×8 images read row by row (T = 8 steps of 8 "
                    f"pixels / 16), 10 classes; a random {i['n_train']} / {i['n_val']} split per seed; cross-entropy "
                    f"training; DIRU d = {cfg['digits_hidden']}, {cfg['digits_epochs']} epochs.")
    if "sunspots" in data:
        i = data["sunspots"]
        blocks = i.get("blocks", {})
        desc.append(f"**sunspots** (statsmodels, ships with it): yearly sunspot numbers {i['first_year']}–"
                    f"{i['last_year']}; the past {i['seq_len']} years → the next year; rolling origin: "
                    f"{len(blocks)} test blocks of {cfg.get('sunspots_test_years', '?')} target years ("
                    + ", ".join(f"{b['first_val_year']}–{b['last_val_year']}" for b in blocks.values())
                    + "), each model trained on every earlier target year from "
                    f"{next(iter(blocks.values()))['train_target_years'][0] if blocks else '?'} and scaled with "
                    f"those years' mean and sd only; MSE on the scaled series; DIRU d = {cfg['sunspots_hidden']}, "
                    f"{cfg['sunspots_epochs']} epochs.")
    lines += ["**Measurement.** " + " ".join(desc) + f" DIRU with k = {cfg['num_compartments']}; LSTM and GRU resized "
              f"to DIRU's parameter count; Adam lr {cfg['lr']:g}, batch {cfg['batch_size']}, fixed epochs, no early "
              f"stopping, {_clip(cfg)}; seeds {_seeds(cfg)}, paired (same split, initialisation seed and shuffling "
              "per seed).", ""]
    for dataset, s in result["summary"].items():
        digits = dataset == "digits"
        lines += [f"### {dataset} (mean ± std over {'seeds' if digits else 'runs: blocks × seeds'})", "",
                  "| model | params | final val " + ("cross-entropy | accuracy" if digits else "MSE") +
                  " | best val " + ("cross-entropy" if digits else "MSE") + " | seconds per run |",
                  "|---|---:|---:|" + ("---:|" if digits else "") + "---:|---:|"]
        for row in s["rows"]:
            acc = f" {_pm(row['accuracy'], 4)} |" if digits else ""
            lines.append(f"| {row['label']} | {row['params']:,} | {_pm(row['final'])} |{acc} {_pm(row['best'])} | "
                         f"{_pm(row['seconds'], 2)} |")
        if not digits and "sunspots" in data and data["sunspots"].get("blocks"):
            blocks = data["sunspots"]["blocks"]
            lines += ["", "Final validation MSE per test block (mean over seeds), with the naive forecasts:", "",
                      "| test block | " + " | ".join(row["label"] for row in s["rows"]) + " | persistence | "
                      "training mean |", "|---|" + "---:|" * (len(s["rows"]) + 2)]
            for key, b in blocks.items():
                lines.append(f"| {b['first_val_year']}–{b['last_val_year']} | " + " | ".join(
                    _f(row["per_block"].get(key), 3) for row in s["rows"]) +
                    f" | {b['persistence_mse']:.3g} | {b['train_mean_mse']:.3g} |")
        lines += ["", "| DIRU vs | metric | blocks | DIRU | baseline | DIRU's improvement [95% CI] | p | p (Holm) | "
                  "detectable at 80% power | \"DIRU beats it\" |", "|---|---|---:|---:|---:|---|---:|---:|---:|---|"]
        for c in s["comparisons"]:
            lines.append(f"| {c['label']} | {c['metric']}{'' if c.get('primary', True) else ' (secondary)'} | "
                         f"{c['n']} | {_f(c['diru'])} | {_f(c['base'])} | {_pct(c['improvement'])} | {_p(c.get('p'))} | "
                         f"{_p(c.get('p_holm')) if c.get('primary', True) else '(not counted)'} | "
                         f"±{_f(100 * c['detectable_improvement'], 2) if c.get('detectable_improvement') else '–'}% | "
                         f"**{c['verdict']}** |")
        lines.append("")
    overall, verdicts = real_data.overall_verdict(result["summary"])
    near = [c for c in primary if c["verdict"] == "inconclusive" and c.get("improvement")
            and math.isfinite(c.get("p", math.nan)) and c["p"] < 0.1]
    lines += [_figure("real_data", fig_dir), "",
              f"**Verdict** (\"DIRU beats LSTM/GRU on real data at equal parameter count\"): **{overall}** ("
              + ", ".join(f"{v}: {verdicts.count(v)}" for v in sorted(set(verdicts)))
              + f" of {len(verdicts)} primary comparisons)." + "".join(
                  f" Near miss: {c['label'].split(' ')[0]} on {_dataset_of(result, c)}, {_pct(c['improvement'])}, "
                  f"raw p = {_p(c['p'])} (Holm {_p(c.get('p_holm'))}) — "
                  + ("in DIRU's favour" if c["improvement"][0] > 0 else "against DIRU")
                  + ", not significant." for c in near)]
    return "\n".join(lines)


def _dataset_of(result: Dict[str, Any], comp: Dict[str, Any]) -> str:
    return next(name for name, s in result["summary"].items() if any(c is comp for c in s["comparisons"]))


def summary_rows(result: Dict[str, Any]) -> List[Dict[str, str]]:
    """The summary table's row(s) for this analysis: claim, verdict, headline."""
    rows = []
    r = result
    overall, _ = real_data.overall_verdict(r["summary"])
    parts = []
    for dataset, s in r["summary"].items():
        parts.append(f"{dataset}: " + ", ".join(
            f"vs {c['baseline'].split('_')[0].upper()} {_pct(c['improvement'])} (Holm p {_p(c.get('p_holm'))}, "
            f"{c['verdict']})" for c in s["comparisons"] if c.get("primary", True)))
    rows.append({"claim": "DIRU beats LSTM/GRU on real data (equal parameters)", "verdict": overall,
                 "headline": "; ".join(parts)})
    return rows
