"""The specialization section of ``ANALYSES.md`` and its summary row, from the analysis' JSON."""

from __future__ import annotations

import math
from typing import Any, Dict, List

from . import specialization
from ..experiments.trivial import TRIVIAL_LABELS
from .report_format import (LEARNED_RULE, _attention, _ci, _clip, _f, _figure, _label, _options_clause, _p, _pm, _seeds,
                            cap_note, lr_curve_rows, protocol_sentence, times, tuning_clause)


TRIVIAL_NAMES = {"sine_fit": "generating-model fit", "ls_all": "least squares on all inputs",
                 "ls_last10": "least squares on the last 10 inputs"}


def best_trivial(result: Dict[str, Any]):
    """(median test MSE / predict-the-mean, name) of the best trivial baseline (the true-frequency oracle
    is a floor, not a baseline); None when the result has no baselines (old protocol)."""
    trivial = ((result.get("summary") or {}).get("learned") or {}).get("trivial") or {}
    cands = [(v, n) for n, v in trivial.items() if n != "sine_oracle" and v is not None and math.isfinite(v)]
    return min(cands) if cands else None


def _model_ratio(result: Dict[str, Any], key: str) -> str:
    models = result["summary"]["learned"]["models"]
    if key not in models:
        return "–"
    m, best = models[key], best_trivial(result)
    text = times(m["median_ratio"], best[0] if best else None, TRIVIAL_NAMES.get(best[1], best[1]) if best else "")
    return text + ("" if m["learned"] else ", not learned")


def section_specialization(result: Dict[str, Any], fig_dir: str) -> str:
    cfg, summary = result["config"], result["summary"]
    exch = summary.get("exchangeable", not _attention(cfg))
    bands = ", ".join(f"f{i + 1} [{lo:g}, {hi:g}]" for i, (lo, hi) in enumerate(result["bands"]))
    new = "learned" in summary  # a result made with the study's protocol (tuning, test split, learned rule)
    lines = [
        f"**Claim.** {specialization.CLAIM}.", "",
        "**Rules (stated before the numbers).** " + (LEARNED_RULE + " " if new else "") + (
            "The compartments here are exactly exchangeable (see *Why* below: per-unit parameters, iid "
            "initialisation, an optimizer that commutes with permuting the units), so for the plain cell, without "
            "attention, \"different compartments capture different frequencies\" — the blocks differ more than "
            "groupings of the same units the model does not single out — is false by construction: **does not "
            "hold**, by that argument, whatever training reaches. The permutation test of the blocks against random "
            "partitions is then uniform by construction; it is reported as a check of the argument (its percentiles "
            "should spread over (0, 1)), not as evidence, and a non-significant p would not be evidence of no effect "
            "anyway." if exch else
            "Attention gives each compartment block its own weight, so the blocks are not exchangeable with other "
            "groupings. If DIRU did not learn the task (at any k): **not learned**. Otherwise **holds** if at every k "
            "Fisher's combination of the per-seed permutation p-values (trained), Holm-adjusted over the k, is < 0.05 "
            "and the excess z grows with training (95% CI of trained − init above 0); otherwise **inconclusive** (a "
            "non-significant p is not evidence of no effect).")
        + " Separately, the units' frequency selectivity (whatever their grouping) is compared with two "
        "controls, paired by seed: an LSTM of the same d, tuned and trained the same way, and DIRU at "
        "initialisation (random recurrent features); ln-ratio t-tests, Holm-adjusted over the comparisons that "
        "are made (only between models that learned the task); \"higher\" / \"lower\" when the Holm-adjusted "
        "p < 0.05, else \"no difference shown\", with the smallest ratio detectable at 80% power. A p-value "
        "before the Holm adjustment decides nothing.", "",
    ]
    if new:
        lines += _tuning_lines(result)
    lines += [
        "**Measurement.** DIRU (d = {d}{opts}) trained on the multi-frequency sine task (this reconstruction of the "
        "prototype's, the study's data: {n} training / {v} validation / {nt} test sequences, T = {T}, inputs and "
        "targets standardised with the training split's mean and std; {proto}; batch {b}, MSE) for k ∈ {{{ks}}} and "
        "test seeds {seeds}. For each compartment c we take its output o_c(t) on the "
        "validation sequences (the reference compartment math along the model's own state trajectory), the power "
        "of each unit's o_c in the task's three bands ({bands} rad per unit t; mean removed, Hann window, "
        "zero-padded periodogram, the first {burn} steps left out), summed over sequences and over the "
        "compartment's units, normalised to a profile over the three bands. Specialization index = mean pairwise "
        "Jensen-Shannon divergence between the k compartment profiles (bits: 0 = identical, 1 = disjoint bands), "
        "compared with {perm} random partitions of the same units into k groups of d/k (the permutation null), "
        "before training and after. Unit diversity = the mutual information (bits) between a unit and the band "
        "of its power (0: every unit has the same band profile), on the hidden state h_t.".format(
            d=cfg["hidden_size"], opts=_options_clause(cfg), n=cfg["n_train"], v=cfg["n_val"],
            nt=cfg.get("n_test", "–"), T=cfg["seq_len"], b=cfg["batch_size"],
            proto=protocol_sentence(cfg) if new else f"Adam lr {cfg.get('lr')}, {cfg['epochs']} epochs, {_clip(cfg)}",
            ks=", ".join(map(str, cfg["ks"])), seeds=_seeds(cfg), bands=bands, burn=cfg["burn_in"],
            perm=cfg["n_perm"]), "",
    ]
    if new:
        lines += _learned_lines(result) + [""]
    lines += [
        "| k | seeds | index at init | index trained | null mean trained | units sorted by frequency (trained) "
        "| trained p per seed | Fisher p (trained) | Holm over k | Fisher p (init) | percentile in null (trained) |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for row in summary["per_k"]:
        tr, it = row["trained"], row["init"]
        lines.append(
            f"| {row['k']} | {row['n']} | {_pm(it['index'])} | {_pm(tr['index'])} | {_pm(tr['null_mean'])} | "
            f"{_pm(tr['sorted_index'])} | {', '.join(_p(p) for p in tr['p_values'])} | {_p(tr['fisher_p'])} | "
            f"{_p(tr.get('fisher_p_holm'))} | {_p(it['fisher_p'])} | "
            f"{', '.join(f'{q:.2f}' for q in tr['percentiles'])} |")
    profile = result["runs"][0]["input_profile"] if result["runs"] else None
    zg, ng = summary.get("z_gain"), summary.get("null_mean_log_ratio")
    lines += [
        "",
        f"The input signal's own profile: {', '.join(f'{p:.3f}' for p in profile) if profile else '–'} (f1, f2, f3). "
        f"Mean percentile of the trained blocks in their null: {_f(summary.get('percentile_mean'), 2)} (0.5 expected "
        "when the blocks are exchangeable).",
        f"Standardised excess over the null, z = (index − null mean) / null sd, trained − init (paired over all "
        f"k and seeds): {_ci(zg, '{:+.2f}')}. Training changes how different *any* k groups of units are: "
        f"null mean trained / init = {_f(math.exp(ng[0]), 3) if ng else '–'}× "
        f"(95% CI {_f(math.exp(ng[1]), 3) if ng else '–'}–{_f(math.exp(ng[2]), 3) if ng else '–'}×).", "",
    ]
    lines += _selectivity_lines(result)
    lines += ["", _figure("specialization", fig_dir), "",
              f"**Verdict: {summary['verdict']}**" + (" (by the symmetry argument). It concerns the plain cell, "
                                                      "without attention: the compartments cannot specialize there "
                                                      "whatever training reaches." if exch else "."), "",
              _why_specialization(cfg)]
    return "\n".join(lines)


def _tuning_lines(result: Dict[str, Any]) -> List[str]:
    cfg = result["config"]
    picked = result.get("picked_lr", {})
    curves = result.get("tuning_curves") or {}
    if not curves:
        return ["**Tuning.** None (a one-value grid): " + ", ".join(
            f"{_label(k)} lr {v:g}" for k, v in picked.items()) + ".", ""]
    labels = {"diru": f"DIRU (k = {cfg['tune_k']})", "lstm": "LSTM"}
    table = lr_curve_rows({labels.get(k, k): v for k, v in curves.items()},
                          {labels.get(k, k): v for k, v in picked.items()})
    trials = result.get("tuning", [])
    return [
        "**Tuning.** " + tuning_clause(cfg, "Every model") + f". DIRU is tuned at k = {cfg['tune_k']} and the picked "
        "rate trains every k " + (
            "(with attention k changes the function class a little, k(n + d + 1) attention parameters: one rate for "
            "every k is an approximation, stated here). " if _attention(cfg) else
            "(for the plain cell DIRU(k) is one model family: the same function class and initial distribution for "
            "every k). ") + "Best validation "
        "MSE / predict-the-mean per learning rate (median over the tuning seeds, range in brackets; picked in bold); "
        "the rates at which a model learns are a result in themselves (its stable range):", "",
        *table, "",
        f"Tuning trials: {cap_note(trials, cfg['epochs'])}.", ""]


def _learned_lines(result: Dict[str, Any]) -> List[str]:
    cfg, summary = result["config"], result["summary"]
    models = summary["learned"]["models"]
    trivial = summary["learned"]["trivial"]
    rows = ["Test MSE of the best-validation weights as a multiple of predicting the training mean (median over "
            "seeds; in brackets, as a multiple of the best trivial baseline) and the learned rule:", "",
            "| model | lr | test MSE / mean predictor (median) | seeds learned | learned |", "|---|---:|---|---:|---|"]
    for k in cfg["ks"]:
        m = models.get(f"diru_k{k}")
        if m:
            rows.append(f"| DIRU k = {k} | {result['picked_lr'].get('diru', 0):g} | {_model_ratio(result, f'diru_k{k}')} | "
                        f"{m['seeds_learned']}/{m['n']} | {'yes' if m['learned'] else 'no'} |")
    if "lstm" in models:
        m = models["lstm"]
        rows.append(f"| LSTM | {result['picked_lr'].get('lstm', 0):g} | {_model_ratio(result, 'lstm')} | "
                    f"{m['seeds_learned']}/{m['n']} | {'yes' if m['learned'] else 'no'} |")
    for name, v in trivial.items():
        rows.append(f"| *{TRIVIAL_LABELS.get(name, name)}* | – | {_f(v, 3)}× | – | – |")
    everything = result["runs"] + result.get("controls", [])
    rows += ["", f"Test runs: {cap_note(everything, cfg['epochs'])}. The generating model fitted per sequence is the "
             "strongest trivial baseline here; the true-frequency oracle is the task's noise floor, not a baseline."]
    return rows


def _selectivity_lines(result: Dict[str, Any]) -> List[str]:
    sel = result["summary"].get("selectivity")
    if not sel or not sel.get("per_seed"):
        return []
    per_seed = sel["per_seed"]
    names = [("diru_init", "DIRU at init (random features)"), ("diru_trained", "DIRU trained (mean over k)"),
             ("lstm_init", "LSTM at init"), ("lstm_trained", "LSTM trained")]
    lines = ["Unit diversity of the hidden state (bits), per seed:", "",
             "| | " + " | ".join(f"seed {s}" for s in per_seed) + " |", "|---|" + "---:|" * len(per_seed)]
    for key, label in names:
        if all(key in v for v in per_seed.values()):
            lines.append(f"| {label} | " + " | ".join(f"{v[key]:.3g}" for v in per_seed.values()) + " |")
    lines += ["", "| DIRU trained vs | ratio (geometric mean) [95% CI] | p (nominal) | p (Holm) | detectable at 80% "
              "power | result |", "|---|---|---:|---:|---:|---|"]
    for t in sel["tests"]:
        what = "LSTM trained" if t["baseline"] == "lstm_trained" else "DIRU at init"
        lines.append(f"| {what} | {math.exp(t['mean']):.3g}× [{math.exp(t['low']):.3g}, {math.exp(t['high']):.3g}] | "
                     f"{_p(t['p'])} | {_p(t.get('p_holm'))} | ×{_f(t['detectable_ratio'], 3)} or "
                     f"×{_f(1 / t['detectable_ratio'], 3) if t['detectable_ratio'] else '–'} | **{t['verdict']}** |")
    return lines


def _why_specialization(cfg: Dict[str, Any]) -> str:
    if _attention(cfg):
        return ("**Why.** With attention over compartments each compartment's output is scaled by its own "
                "softmax weight k·α_c(x, h), one per compartment block, so the blocks are no longer exchangeable "
                "with other groupings of the units: the permutation test asks whether the blocks the attention "
                "acts on differ in frequency content more than groupings the model does not single out. (o_c "
                "here is the scaled output the integration sees.)")
    return (
        "**Why (the symmetry argument).** Every DIRU parameter belongs to one dendrite unit: a row of W_x, W_h, "
        "the bias and the gate, and a column of W_I. The default initialisation draws the units iid (nn.Linear's "
        "bound depends on the fan-in, not on m), and Adam updates every parameter elementwise (global-norm "
        "clipping scales every gradient by one factor), so training commutes with permuting the units. Permuting the d units therefore maps a training run to an equally likely one "
        "in which the compartment blocks hold a random partition of the units: the blocks are exchangeable with "
        "any other grouping, their index is a draw from the permutation null and the p-value is uniform — by "
        "construction, whatever the units learn. That is a theorem about the model, not a measurement; the "
        "table only checks it. Individual units can still differ in frequency content (the \"units sorted by "
        "frequency\" column shows how different k groups *could* be, and the unit-diversity tests compare "
        "that with an LSTM and with random features); the compartment boundaries cannot follow those "
        "differences. All profiles mirror the input's own spectrum (dominated by f1).")


def summary_rows(result: Dict[str, Any]) -> List[Dict[str, str]]:
    """The summary table's row(s) for this analysis: claim, verdict, headline."""
    s = result["summary"]
    sel = (s.get("selectivity") or {}).get("tests", [])
    head = ("compartments exchangeable without attention (symmetry argument); " if s.get("exchangeable") else "")
    if "learned" in s:
        ks = result["config"]["ks"]
        head += "test MSE: " + ", ".join(f"DIRU k={k} {_model_ratio(result, f'diru_k{k}')}" for k in ks)
        if "lstm" in s["learned"]["models"]:
            head += f", LSTM {_model_ratio(result, 'lstm')}"
        head += "; "
    head += "Fisher p (trained; Holm over k) per k: " + ", ".join(
        f"k={r['k']}: {_p(r['trained']['fisher_p'])} ({_p(r['trained'].get('fisher_p_holm'))})" for r in s["per_k"])
    if sel:
        head += "; unit diversity of DIRU trained vs " + ", ".join(
            f"{'LSTM' if t['baseline'] == 'lstm_trained' else 'DIRU at init'} ×{math.exp(t['mean']):.2g} "
            f"({t['verdict']}" + (f", Holm p {_p(t['p_holm'])})" if t.get("p_holm") is not None else ")") for t in sel)
    return [{"claim": "Compartments specialize to different frequencies", "verdict": s["verdict"], "headline": head}]
