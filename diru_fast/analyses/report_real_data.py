"""The real data section of ``ANALYSES.md`` and its summary row, from the analysis' JSON."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence

from ..experiments.claims import LEARNED_RATIO
from . import real_data
from .report_format import _clip, _f, _figure, _p, _pct, _pm, _seeds, lr_curve_rows

TRIVIAL = {"digits": "predicting the training class frequencies", "sunspots": "predicting the training mean"}


def _ratio(x: Optional[float]) -> str:
    """A multiple of a baseline's error: ``0.31×``."""
    return "–" if x is None or not math.isfinite(x) else f"{x:.2g}×"


def _lr_table(result: Dict[str, Any], dataset: str, rows: Sequence[Dict[str, Any]]) -> List[str]:
    """Best validation loss / the trivial baseline's against the learning rate per model: median [min,
    max] over the tuning seeds, the picked rate in bold."""
    picked = result.get("picked_lr", {}).get(dataset, {})
    return lr_curve_rows({row["label"]: row.get("lr_curve", []) for row in rows},
                         {row["label"]: picked[row["model"]] for row in rows if row["model"] in picked},
                         grid=result["config"]["lr_grid"], suffix="×", stable_column=False)


def _stable(rows: Sequence[Dict[str, Any]]) -> str:
    parts = []
    for row in rows:
        ok = [c["lr"] for c in row.get("lr_curve", []) if c["high"] <= LEARNED_RATIO]
        parts.append(f"{row['label'].split(' (')[0]} " + (", ".join(f"{lr:g}" for lr in ok) if ok else "none"))
    return "; ".join(parts)


def section_real_data(result: Dict[str, Any], fig_dir: str) -> str:
    cfg, data = result["config"], result["data"]
    tuned = len(cfg["lr_grid"]) > 1
    tune_seeds = list(range(cfg["tune_first_seed"], cfg["tune_first_seed"] + cfg["tune_seeds"]))
    tested = [c for s in result["summary"].values() for c in s["comparisons"] if c.get("primary") and c.get("tested")]
    lines = [f"**Claim.** {real_data.CLAIM}; the prototype's pitch is that DIRU beats LSTM — here tested on real "
             "data at equal parameter count.", "",
             f"**Rules (stated before the numbers).** *Learned*: on sunspots a model has learned the task when the "
             f"median over runs of its test MSE / the MSE of predicting the training mean is at most {LEARNED_RATIO:g}; "
             "on digits (classification) its twin: the median test cross-entropy / the cross-entropy of predicting "
             f"the training class frequencies (the best constant predictor under that loss, as the mean is under "
             f"MSE) is at most {LEARNED_RATIO:g}. Per comparison, DIRU's improvement = 1 − exp(mean log ratio DIRU / "
             "baseline of the test metric) over blocks (a block: a seed with its own random split on digits; a "
             "rolling-origin test period on sunspots, its seeds averaged), 95% t-interval over blocks, and the "
             "two-sided t-test of no difference. A primary comparison (digits test cross-entropy, sunspots test "
             "MSE; DIRU vs each baseline) is tested only when both models learned; otherwise its verdict is \"not "
             "learned\" or \"only X learned\" and it is not tested. The family: the tested primary comparisons "
             f"({len(tested)} here), Holm-adjusted at 0.05 — the Holm-adjusted p decides: \"DIRU beats it\" holds "
             "when significant in DIRU's favour, does not hold when significant against, else inconclusive, shown "
             "with the smallest improvement the test would detect with 80% power. The digits error rate is "
             "reported beside with its raw p and no verdict. Overall: holds if every primary comparison holds, does "
             "not hold if none holds and at least one does not hold, their common verdict if all agree, else "
             "inconclusive.", ""]
    desc = []
    if "digits" in data:
        i = next(iter(data["digits"].get("splits", {}).values()), {})
        desc.append(f"**digits** (scikit-learn, ships with it): 1,797 8×8 images read row by row (T = 8 steps of 8 "
                    f"pixels), 10 classes; per seed a random {i.get('n_train', '?')} / {i.get('n_val', '?')} / "
                    f"{i.get('n_test', '?')} training / validation / test split, pixels standardised with the "
                    f"training images' mean and sd; cross-entropy; DIRU d = {cfg['digits_hidden']}, at most "
                    f"{cfg['digits_epochs']} epochs.")
    if "sunspots" in data:
        i = data["sunspots"]
        blocks = i.get("blocks", {})
        first = next(iter(blocks.values()), {})
        desc.append(f"**sunspots** (statsmodels, ships with it): yearly sunspot numbers {i['first_year']}–"
                    f"{i['last_year']}; the past {i['seq_len']} years → the next year; rolling origin: "
                    f"{len(blocks)} test blocks of {cfg.get('sunspots_test_years', '?')} target years ("
                    + ", ".join(f"{b['first_val_year']}–{b['last_val_year']}" for b in blocks.values())
                    + f"); before each block the last {cfg['val_fraction']:.0%} of the target years validate "
                    f"(first block: {first.get('val_years', ['?', '?'])[0]}–{first.get('val_years', ['?', '?'])[1]}) "
                    f"and every earlier one from {first.get('train_target_years', ['?'])[0]} trains, scaled with "
                    f"the training years' mean and sd only; MSE on the scaled series; DIRU d = {cfg['sunspots_hidden']}, "
                    f"at most {cfg['sunspots_epochs']} epochs.")
    lines += ["**Measurement.** " + " ".join(desc) + f" DIRU with k = {cfg['num_compartments']}; LSTM, LSTM with "
              f"forget-gate bias 1 and GRU resized to DIRU's parameter count; test seeds {_seeds(cfg)}, paired (same "
              "split, initialisation seed and shuffling per seed).", "",
              f"**Training and tuning (the study's protocol).** Adam, batch {cfg['batch_size']}, {_clip(cfg)}, early "
              f"stopping after {cfg['patience']} epochs without a better validation loss (the epochs above are caps), "
              "the best validation epoch's weights scored on the test split. "
              + (f"Every model's learning rate is picked per data set from the grid "
                 f"{', '.join(f'{v:g}' for v in cfg['lr_grid'])} on tuning seed(s) {', '.join(map(str, tune_seeds))} "
                 "(disjoint from the test seeds; on digits each with its own random split, scored on its validation "
                 "part — its images recur in the test seeds' splits, as in any resampling design, but no trial is "
                 "scored on a test split; on sunspots the earliest origin, whose validation years precede every test "
                 "year) by the lowest median best validation loss / "
                 "the trivial baseline's (below: median [min, max] over the tuning seeds, picked in bold)."
                 if tuned else f"One learning rate, {cfg['lr_grid'][0]:g}, for every model (no tuning)."), ""]
    for dataset, s in result["summary"].items():
        digits = dataset == "digits"
        rows = s["rows"]
        lines += [f"### {dataset}", ""]
        if tuned and any(row.get("lr_curve") for row in rows):
            lines += [f"Tuning: best validation {'cross-entropy' if digits else 'MSE'} / {TRIVIAL[dataset]}:", ""]
            lines += _lr_table(result, dataset, rows)
            trials = [t for t in result.get("tuning", []) if t.get("dataset") == dataset]
            lines += ["", f"Learning rates at which every tuning trial reached ≤ {LEARNED_RATIO:g}× the trivial "
                      f"baseline: {_stable(rows)}. Tuning trials that reached the cap: "
                      f"{sum(bool(t.get('hit_cap')) for t in trials)} of {len(trials)}.", ""]
        metric = "cross-entropy" if digits else "MSE"
        lines += [f"Test results (mean ± std over {'seeds' if digits else 'runs: blocks × seeds'}; × = median over "
                  "runs of the run's value / the trivial baseline's on the same test split):", "",
                  f"| model | params | lr | test {metric}{'' if digits else ' (scaled; raw: sunspot number²)'} | "
                  f"× {TRIVIAL[dataset]} | learned (runs) | "
                  + ("accuracy | error × majority class | " if digits else "× persistence | ")
                  + "epochs run | runs at the cap |",
                  "|---|---:|---:|---:|---:|---|" + ("---:|---:|" if digits else "---:|") + "---:|---:|"]
        for row in rows:
            le = row["learned"]
            extra = (f" {_pm(row['accuracy'], 4)} | {_ratio(row['error_ratio'])} |" if digits
                     else f" {_ratio(row['persistence_ratio'])} |")
            raw = f" (raw {_pm(row['test_raw'])})" if row.get("test_raw") else ""
            lines.append(f"| {row['label']} | {row['params']:,} | {row['lr']:g} | {_pm(row['test'])}{raw} | "
                         f"{_ratio(le['median_ratio'])} | {'**yes**' if le['learned'] else 'no'} "
                         f"({le['seeds_learned']}/{le['n']}) |{extra} {_pm(row['epochs_run'], 3)} | "
                         f"{row['hit_cap']} of {row['n']} |")
        if not digits and data.get("sunspots", {}).get("blocks"):
            blocks = data["sunspots"]["blocks"]
            lines += ["", "Test MSE per test block (mean over seeds), with the naive forecasts on the same block:", "",
                      "| test block | " + " | ".join(row["label"] for row in rows) + " | persistence | "
                      "training mean |", "|---|" + "---:|" * (len(rows) + 2)]
            for key, b in blocks.items():
                lines.append(f"| {b['first_val_year']}–{b['last_val_year']} | " + " | ".join(
                    _f(row["per_block"].get(key), 3) for row in rows) +
                    f" | {b['persistence_mse_test']:.3g} | {b['mean_mse_test']:.3g} |")
        lines += ["", "| DIRU vs | metric | blocks | DIRU | baseline | DIRU's improvement [95% CI] | p | p (Holm) | "
                  "detectable at 80% power | \"DIRU beats it\" |", "|---|---|---:|---:|---:|---|---:|---:|---:|---|"]
        for c in s["comparisons"]:
            primary = c.get("primary", True)
            if primary and c.get("tested"):
                holm = _p(c.get("p_holm"))
            else:
                holm = "(secondary)" if not primary else "not tested"
            verdict = c.get("verdict") if primary else "reported only"
            lines.append(f"| {c['label']} | {c['metric']}{'' if primary else ' (secondary)'} | {c['n']} | "
                         f"{_f(c['diru'])} | {_f(c['base'])} | {_pct(c['improvement'])} | {_p(c.get('p'))} | {holm} | "
                         f"±{_f(100 * c['detectable_improvement'], 2) if c.get('detectable_improvement') else '–'}% | "
                         f"{verdict} |")
        lines.append("")
    overall, verdicts = real_data.overall_verdict(result["summary"])
    lines += [_figure("real_data", fig_dir), "",
              f"**Verdict** (\"DIRU beats LSTM/GRU on real data at equal parameter count\", by the Holm-adjusted p "
              f"and the learned rule): **{overall}** ("
              + ", ".join(f"{v}: {verdicts.count(v)}" for v in sorted(set(verdicts)))
              + f" of {len(verdicts)} primary comparisons). " + _estimates(result)]
    return "\n".join(lines)


def _estimates(result: Dict[str, Any]) -> str:
    """Every primary comparison's estimate with its interval, so the size of the differences is read
    from the intervals, not from words."""
    parts = []
    for dataset, s in result["summary"].items():
        for c in s["comparisons"]:
            if c.get("primary", True) and c.get("improvement"):
                parts.append(f"{dataset} vs {c['label'].split(' (')[0]}: {_pct(c['improvement'])}")
    return ("DIRU's improvement per comparison (negative: DIRU worse): " + "; ".join(parts) + ".") if parts else ""


def summary_rows(result: Dict[str, Any]) -> List[Dict[str, str]]:
    """The summary table's row for this analysis: claim, verdict, headline (with every model's test error
    as a multiple of the best trivial baseline)."""
    overall, _ = real_data.overall_verdict(result["summary"])
    parts = []
    for dataset, s in result["summary"].items():
        if dataset == "digits":
            errors = ", ".join(f"{row['label'].split(' (')[0]} {_ratio(row['learned']['median_ratio'])}"
                               for row in s["rows"])
            errors = f"test CE × class frequencies: {errors}"
        else:
            errors = ", ".join(f"{row['label'].split(' (')[0]} {_ratio(row['persistence_ratio'])}" for row in s["rows"])
            errors = f"test MSE × persistence (the best trivial forecast): {errors}"
        comps = ", ".join(
            f"vs {c['label'].split(' (')[0]} {_pct(c['improvement'])} ("
            + (f"Holm p {_p(c.get('p_holm'))}, " if c.get("tested") else "") + f"{c['verdict']})"
            for c in s["comparisons"] if c.get("primary", True))
        parts.append(f"{dataset}: {errors}; {comps}")
    return [{"claim": "DIRU beats LSTM/GRU on real data (equal parameters)", "verdict": overall,
             "headline": "; ".join(parts)}]
