"""Turn a study's results (``results.json``) into numbers, verdicts and a markdown report.

The rules are fixed here, before any numbers (and each report states them before its tables):

- Protocol: data standardised with training-split statistics (MSEs in standardised units, raw units
  beside); every model tuned alike (a learning-rate grid picked on validation over tuning seeds
  disjoint from the test seeds, gradient clipping, early stopping with a cap; see :mod:`.tuning`).
- Primary metric: a run's **test MSE with the weights of its best-validation epoch**. The last
  epoch's test MSE is reported beside it, without a verdict.
- **Learned** (:func:`claims.learned`): the median over seeds of test MSE / predict-the-mean MSE is
  at most 0.3. Every headline shows each model's MSE as a multiple of the best trivial baseline.
- "DIRU beats X": the per-seed log ratios r_i = log(MSE_DIRU / MSE_X) (runs paired by seed), the
  95% Student-t interval of their mean mapped to a relative improvement, and the two-sided paired
  t-test's p. The family (Holm-adjusted): every DIRU-vs-baseline MSE comparison in which **both**
  models learned the task, plus the convergence comparisons against the claim's baseline on those
  tasks. HOLDS: adjusted p < 0.05 and DIRU better; DOES NOT HOLD: adjusted p < 0.05 and DIRU worse;
  otherwise INCONCLUSIVE. Neither learned: NOT LEARNED; one learned: "only <model> learned"
  (:func:`claims.pair_verdict`); both outside the family.
- Convergence target, per run: 0.1 x its validation MSE of predicting the training mean (R² = 0.9 on
  the validation split); epochs to target = the first epoch at or below it (never: epochs + 1).
- Epoch-time overhead "~25%": HOLDS if the 95% CI lies in [12.5%, 50%] (outside the family: a
  band check, not a test of a difference).
- Power: of the two-sided paired t-test at alpha 0.05 (unadjusted) with the observed sd of the log
  ratios, for the claimed effect and for the observed one, and the seeds each needs for 80%.

Trivial baselines (:mod:`.trivial`) are listed beside the RNNs in every table.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import claims as C
from .io import atomic_write_text
from .stats import (Interval, epochs_to_target, holm, mean_std, paired_t_p, ratio_interval, relative_improvement,
                    seeds_for_power, t_interval, t_power)
from .trivial import SINE_NOISE_FLOOR, TRIVIAL_LABELS

__all__ = ["group_runs", "task_targets", "summary_rows", "comparisons", "tests", "claim_rows", "markdown_report",
           "summary_table", "headline_table", "baseline_rows", "power_rows", "write_report",
           "pool_backends", "REPORT_MD", "CONVERGENCE_FRACTION", "ALPHA", "POWER_TARGET",
           "holm_verdict", "ratio_to_mean", "learned_runs", "tuning_rows", "best_trivial_mse"]

REPORT_MD = "report.md"
CONVERGENCE_FRACTION = 0.1  # convergence target: this fraction of the run's predict-the-mean validation MSE
ALPHA = 0.05
POWER_TARGET = 0.8

Runs = List[Dict[str, Any]]


def group_runs(results: Dict[str, Any]) -> Dict[Tuple[str, str], Runs]:
    """Runs by (task, model key), each list sorted by seed."""
    groups: Dict[Tuple[str, str], Runs] = defaultdict(list)
    for run in results["runs"]:
        groups[(run["task"], run["model"])].append(run)
    return {k: sorted(v, key=lambda r: r["seed"]) for k, v in groups.items()}


def tasks_run(results) -> List[str]:
    """The configured tasks that have at least one finished run, in configuration order."""
    done = {r["task"] for r in results["runs"]}
    return [t for t in results["config"]["tasks"] if t in done]


def variants_run(results) -> List[Dict[str, Any]]:
    """The configured model variants that have at least one finished run."""
    done = {r["model"] for r in results["runs"]}
    return [v for v in results["variants"] if v["key"] in done]


def run_target(run: Dict[str, Any]) -> float:
    """A run's convergence target: CONVERGENCE_FRACTION x its predict-the-mean validation MSE."""
    return CONVERGENCE_FRACTION * run["mean_predictor_mse"]


def task_targets(results: Dict[str, Any]) -> Dict[str, float]:
    """Per task: the mean over its runs of the convergence target (for the text; each run uses its own)."""
    out = {}
    for task in tasks_run(results):
        out[task] = mean_std([run_target(r) for r in results["runs"] if r["task"] == task])[0]
    return out


def _epochs_to(run: Dict[str, Any]) -> Optional[int]:
    return epochs_to_target(run["history"]["val_loss"], run_target(run))


def _censored_epochs(run: Dict[str, Any]) -> int:
    e = _epochs_to(run)
    return e if e is not None else len(run["history"]["val_loss"]) + 1


def _seconds_to(run: Dict[str, Any]) -> Optional[float]:
    e = _epochs_to(run)
    return None if e is None else sum(run["history"]["epoch_time"][:e])


def summary_rows(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    groups = group_runs(results)
    rows = []
    for task in tasks_run(results):
        for v in variants_run(results):
            runs = groups.get((task, v["key"]))
            if not runs:
                continue
            reached = [e for e in (_epochs_to(r) for r in runs) if e is not None]
            secs = [s for s in (_seconds_to(r) for r in runs) if s is not None]
            rows.append({
                "task": task, "model": v["key"], "label": v["label"], "params": runs[0]["params"],
                "n": len(runs), "test": mean_std([r["test_mse"] for r in runs]),
                "final": mean_std([r["final_test_mse"] for r in runs]),
                "best_epoch": mean_std([float(r["best_epoch"]) for r in runs]),
                "epoch_s": mean_std([r["mean_epoch_s"] for r in runs]), "reached": len(reached),
                "epochs_to_target": (sum(reached) / len(reached)) if reached else None,
                "seconds_to_target": (sum(secs) / len(secs)) if secs else None,
                "backend": runs[0]["backend"], "vs_mean": ratio_to_mean(runs), "learned": learned_runs(runs),
                "lr": sorted({r.get("lr", results["config"].get("lr")) for r in runs}),
                "hit_cap": sum(1 for r in runs if r.get("hit_cap")),
                "test_raw": mean_std([r.get("test_mse_raw", r["test_mse"]) for r in runs]),
            })
    return rows


def baseline_rows(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Per (task, trivial baseline): its test MSE in the study's units and raw, mean ± std over the seeds."""
    by: Dict[Tuple[str, str], List[Dict[str, Any]]] = defaultdict(list)
    for b in results.get("baselines", []):
        by[(b["task"], b["name"])].append(b)
    return [{"task": t, "name": n, "label": TRIVIAL_LABELS.get(n, n), "n": len(v), "mse": mean_std([b["mse"] for b in v]),
             "mse_raw": mean_std([b.get("mse_raw", b["mse"]) for b in v])}
            for t in tasks_run(results) for n in TRIVIAL_LABELS if (t, n) in by for v in [by[(t, n)]]]


def ratio_to_mean(runs: Runs) -> Optional[float]:
    """Median over seeds of test MSE / test MSE of predicting the training mean (1.0: nothing learned)."""
    if not runs or not all(r.get("mean_predictor_test_mse") for r in runs):
        return None
    v = sorted(r["test_mse"] / r["mean_predictor_test_mse"] if math.isfinite(r["test_mse"]) else math.inf
               for r in runs)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def learned_runs(runs: Runs) -> bool:
    """True if these runs learned the task (the median ratio to predict-the-mean is <= 0.3)."""
    return C.learned(ratio_to_mean(runs))


def _paired(a: Runs, b: Runs) -> Tuple[Runs, Runs]:
    seeds = sorted({r["seed"] for r in a} & {r["seed"] for r in b})
    pick = lambda runs: [next(r for r in runs if r["seed"] == s) for s in seeds]  # noqa: E731
    return pick(a), pick(b)


def holm_verdict(estimate: float, p_adjusted: float) -> str:
    """HOLDS / DOES NOT HOLD when the Holm-adjusted p < ALPHA (by the sign of DIRU's advantage), else
    INCONCLUSIVE."""
    if math.isnan(p_adjusted) or p_adjusted >= ALPHA or estimate == 0:
        return C.INCONCLUSIVE
    return C.HOLDS if estimate > 0 else C.DOES_NOT_HOLD


def _claim_baseline(results: Dict[str, Any]) -> Optional[str]:
    keys = [v["key"] for v in variants_run(results)]
    return "lstm" if "lstm" in keys else ("lstm_matched" if "lstm_matched" in keys else None)


def _power(log_ratios: Sequence[float], effect_log: float) -> Tuple[float, Optional[int]]:
    """(power at len(log_ratios) seeds, seeds for POWER_TARGET) for a true mean log ratio effect_log."""
    n = len(log_ratios)
    sd = mean_std(log_ratios)[1] if n > 1 else math.nan
    if n < 2 or not math.isfinite(sd) or sd == 0 or effect_log == 0:
        return math.nan, None
    d = effect_log / sd
    return t_power(d, n, ALPHA), seeds_for_power(d, POWER_TARGET, ALPHA)


def tests(results: Dict[str, Any]) -> Dict[str, List[Dict[str, Any]]]:
    """Every test of the report with its p, Holm-adjusted p and verdict: ``{"mse": [...], "convergence": [...]}``."""
    groups = group_runs(results)
    base_key = _claim_baseline(results)
    mse, conv = [], []
    for task in tasks_run(results):
        diru = groups.get((task, "diru"))
        if not diru:
            continue
        for v in variants_run(results):
            base = groups.get((task, v["key"]))
            if v["kind"] == "diru" or not base:
                continue
            a, b = _paired(diru, base)
            logs = [math.log(x["test_mse"] / y["test_mse"]) for x, y in zip(a, b)]
            imp = relative_improvement([r["test_mse"] for r in a], [r["test_mse"] for r in b])
            final = relative_improvement([r["final_test_mse"] for r in a], [r["final_test_mse"] for r in b])
            stuck = [name for name, runs in (("DIRU", a), (v["label"], b)) if not learned_runs(runs)]
            claim = C.MSE_CLAIMS.get(task) if v["key"] == base_key else None
            observed = mean_std(logs)[0]
            pw_obs, n_obs = _power(logs, observed)
            pw_claim, n_claim = _power(logs, math.log(1 - claim.improvement)) if claim else (math.nan, None)
            mse.append({"task": task, "baseline": v["key"], "label": v["label"], "n": imp.n, "not_learned": stuck,
                        "in_family": not stuck, "learned": (learned_runs(a), learned_runs(b)), "diru": mean_std([r["test_mse"] for r in a])[0],
                        "base": mean_std([r["test_mse"] for r in b])[0], "improvement": imp, "final": final,
                        "p": paired_t_p(logs), "log_sd": mean_std(logs)[1] if len(logs) > 1 else None,
                        "claim": claim, "power_observed": pw_obs, "seeds_observed": n_obs,
                        "power_claim": pw_claim, "seeds_claim": n_claim})
        if base_key and (task, base_key) in groups and not results["meta"].get("pooled"):
            d, b = _paired(diru, groups[(task, base_key)])
            diffs = [_censored_epochs(y) - _censored_epochs(x) for x, y in zip(d, b)]
            conv.append({"task": task, "baseline": base_key, "diru_runs": d, "base_runs": b,
                         "in_family": learned_runs(d) and learned_runs(b),
                         "learned": (learned_runs(d), learned_runs(b)),
                         "diff": t_interval(diffs), "p": paired_t_p(diffs)})
    family = [t for t in mse + conv if t["in_family"]]
    for t, p in zip(family, holm([t["p"] for t in family])):
        t["p_holm"] = p
    for t in mse:
        t.setdefault("p_holm", math.nan)
        t["verdict"] = C.pair_verdict(*t["learned"], holm_verdict(t["improvement"].estimate, t["p_holm"]),
                                      "DIRU", _kind_name(t["label"]))
    for t in conv:
        t.setdefault("p_holm", math.nan)
        t["verdict"] = C.pair_verdict(*t["learned"], holm_verdict(t["diff"].estimate, t["p_holm"]), "DIRU", "LSTM")
    return {"mse": mse, "convergence": conv, "family_size": len(family)}


def _kind_name(label: str) -> str:
    """ "LSTM fb1 (d=64)" -> "LSTM fb1" """
    return label.split(" (")[0]


def comparisons(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """DIRU vs every baseline variant, per task: mean test MSEs, improvement with 95% CI, p, Holm p, verdict."""
    return tests(results)["mse"]


def claim_rows(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The prototype's claims vs this study. Each row: claim, prototype, measured, verdict."""
    base_key = _claim_baseline(results)
    groups = group_runs(results)
    if base_key is None or not any(k[1] == "diru" for k in groups):
        return []
    base_label = next(v["label"] for v in results["variants"] if v["key"] == base_key)
    all_tests = tests(results)
    rows = []
    for comp in all_tests["mse"]:
        claim = comp["claim"]
        if claim is None:
            continue
        imp: Interval = comp["improvement"]
        inside = imp.low <= claim.improvement <= imp.high if math.isfinite(imp.low) else None
        rows.append({
            "claim": f"{comp['task']}: DIRU beats LSTM by {claim.improvement:+.1%}",
            "prototype": f"DIRU {claim.diru_mse:g} vs LSTM {claim.lstm_mse:g} ({claim.improvement:+.1%})",
            "measured": (f"DIRU {_f(comp['diru'])} vs {base_label} {_f(comp['base'])}; "
                         f"{_pct_interval(imp)}, {_p_text(comp)}" + ("" if inside is None else
                                                                      f"; claimed {claim.improvement:+.1%} "
                                                                      f"{'inside' if inside else 'outside'} the CI")
                         + _stuck_text(comp["not_learned"])),
            "verdict": comp["verdict"],
        })
    for c in all_tests["convergence"]:
        d, b, diff = c["diru_runs"], c["base_runs"], c["diff"]
        ed, eb = [_censored_epochs(r) for r in d], [_censored_epochs(r) for r in b]
        rows.append({
            "claim": f"{c['task']}: DIRU converges faster than LSTM",
            "prototype": "\"faster convergence\" (no number given)",
            "measured": (f"epochs to val MSE <= {CONVERGENCE_FRACTION:g} x predict-the-mean "
                         f"(≈ {_f(task_targets(results)[c['task']])}): DIRU {_epochs_text(ed, d)} vs {base_label} "
                         f"{_epochs_text(eb, b)}; LSTM - DIRU = {diff.estimate:+.1f} [{diff.low:+.1f}, "
                         f"{diff.high:+.1f}] epochs, {_p_text(c)}"),
            "verdict": c["verdict"],
        })
    if not results["meta"].get("pooled"):
        rows += _epoch_time_rows(results, groups, base_key, base_label)
    return rows


def _p_text(t: Dict[str, Any]) -> str:
    if not t.get("in_family", True):
        return f"p {_p(t['p'])} (outside the family: not both models learned the task)"
    return f"p {_p(t['p'])}, Holm-adjusted {_p(t['p_holm'])}"


def _p(p: float) -> str:
    if p is None or math.isnan(p):
        return "–"
    return f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def _epochs_text(censored: Sequence[int], runs: Runs) -> str:
    limit = len(runs[0]["history"]["val_loss"])
    reached = [e for e in censored if e <= limit]
    mean = sum(censored) / len(censored)
    return f"{mean:.1f}" + ("" if len(reached) == len(censored) else f" ({len(censored) - len(reached)} of "
                                                                       f"{len(censored)} never; counted as {limit + 1})")


def _epoch_time_rows(results, groups, base_key, base_label) -> List[Dict[str, Any]]:
    pairs_d, pairs_b = [], []
    for task in tasks_run(results):
        if (task, "diru") in groups and (task, base_key) in groups:
            d, b = _paired(groups[(task, "diru")], groups[(task, base_key)])
            pairs_d += [r["mean_epoch_s"] for r in d]
            pairs_b += [r["mean_epoch_s"] for r in b]
    if not pairs_d:
        return []
    claim = C.EPOCH_TIME_CLAIM
    ratio = ratio_interval(pairs_d, pairs_b)
    over = Interval(ratio.estimate - 1, ratio.low - 1, ratio.high - 1, ratio.n)
    band = C.band_for_claim(claim["overhead"])
    meta = results["meta"]
    backend = ", ".join(meta.get("diru_backends") or sorted({r["backend"] for r in results["runs"]
                                                              if r["kind"] == "diru"}))
    where = (f"{meta.get('device_type', 'cpu')}, DIRU backend {backend}, {meta.get('threads')} thread(s)"
             f"{', ' + str(meta.get('workers')) + ' workers' if (meta.get('workers') or 1) > 1 else ''}")
    on_cpu = meta.get("device_type", "cpu") == "cpu"
    reused = any(r.get("reused_from") for r in results["runs"])
    return [{
        "claim": "CPU epoch time: DIRU ~0.15 s vs LSTM ~0.12 s (~25% overhead)",
        "prototype": f"DIRU {claim['diru_s']} s vs LSTM {claim['lstm_s']} s (+{claim['overhead']:.0%})",
        "measured": (f"DIRU {_f(mean_std(pairs_d)[0])} s vs {base_label} {_f(mean_std(pairs_b)[0])} s per epoch "
                     f"({where}); overhead {_pct_interval(over)}; band for \"~25%\": "
                     f"[{band[0]:.1%}, {band[1]:.1%}]" + ("; some runs reused from another study (timed there)"
                                                          if reused else "")),
        "verdict": C.verdict_within_band(over.low, over.high, band) if on_cpu else "not tested (not a CPU run)",
    }]


def power_rows(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Per MSE comparison: seeds, observed improvement, power and seeds for 80% (observed; claimed)."""
    return [c for c in comparisons(results) if c["in_family"]]


# ---------------------------------------------------------------------------------- pooling


def pool_backends(a: Dict[str, Any], b: Dict[str, Any]) -> Dict[str, Any]:
    """One study from two that differ only in DIRU's backend: each (task, seed)'s DIRU run becomes the
    geometric mean of its two backends' test MSEs (the backend's rounding treated as one more source of
    randomness, averaged within the seed); the baselines' runs are ``a``'s. Only seeds in both count."""
    keys = lambda res: {(r["task"], r["seed"]) for r in res["runs"] if r["kind"] == "diru"}  # noqa: E731
    both = keys(a) & keys(b)
    other = {(r["task"], r["seed"]): r for r in b["runs"] if r["kind"] == "diru"}
    runs = []
    for r in a["runs"]:
        if (r["task"], r["seed"]) not in both:
            continue
        if r["kind"] == "diru":
            o = other[(r["task"], r["seed"])]
            r = dict(r, backend=f"{r['backend']}+{o['backend']}",
                     **{k: math.sqrt(r[k] * o[k]) for k in ("test_mse", "final_test_mse")})
        runs.append(r)
    backends = sorted(set(a["meta"].get("diru_backends", [])) | set(b["meta"].get("diru_backends", [])))
    meta = dict(a["meta"], diru_backends=backends, pooled=True)
    return dict(a, meta=meta, runs=runs)


# ---------------------------------------------------------------------------------- formatting


def _stuck_text(names: Sequence[str]) -> str:
    if not names:
        return ""
    return (f"; {' and '.join(names)} did not learn the task (median test MSE > {C.LEARNED_RATIO:g} x that of "
            "always predicting the training mean)")


def _f(x: Optional[float]) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.4g}"


def _ratio(x: Optional[float]) -> str:
    return "–" if x is None else f"{x:.3g}" + ("" if C.learned(x) else " (not learned)")


def _pm(ms: Tuple[float, float]) -> str:
    mean, std = ms
    return _f(mean) if math.isnan(std) else f"{_f(mean)} ± {_f(std)}"


def _pct(x: float) -> str:
    return f"{x:+.1%}" if abs(x) >= 0.01 or x == 0 else f"{x:+.2%}"  # small values keep two decimals


def _pct_interval(iv: Interval) -> str:
    if not math.isfinite(iv.low):
        return f"{_pct(iv.estimate)} (one seed: no interval)"
    return f"{_pct(iv.estimate)} [95% CI {_pct(iv.low)}, {_pct(iv.high)}]"


def _options_text(config: Dict[str, Any]) -> str:
    """DIRU's cell options off their defaults, as a clause ("" for the plain cell)."""
    o = config.get("options") or {}
    parts = []
    if o.get("compartment_sizes"):
        parts.append("of sizes " + ",".join(map(str, o["compartment_sizes"])))
    if o.get("activation", "tanh") != "tanh":
        parts.append(f"{o['activation']} activation")
    if o.get("compartment_attention"):
        parts.append("attention over compartments")
    if o.get("compartment_dropout"):
        parts.append(f"compartment dropout {o['compartment_dropout']:g}")
    return (" (" + ", ".join(parts) + "; the baselines are plain nn.LSTM/nn.GRU)") if parts else ""


def _sizes_text(config: Dict[str, Any]) -> str:
    return {"off": f"prototype sizes: every model at hidden size {config['hidden_size']}",
            "on": f"parameter-matched: DIRU at hidden size {config['hidden_size']}, baselines resized to "
                  "DIRU's parameter count",
            "both": f"both: every model at hidden size {config['hidden_size']}, plus the baselines resized "
                    "to DIRU's parameter count"}[config["match_params"]]


def summary_table(results: Dict[str, Any]) -> str:
    """The main table (markdown): one row per (task, model), then the task's trivial baselines."""
    units = _units(results)
    lines = [f"| task | model | params | lr (picked) | test MSE ({units}) | raw units | test / mean-predictor "
             "(median) | test MSE (last epoch) | best epoch | hit the cap | epoch time (s) | epochs to target |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    base = defaultdict(list)
    for b in baseline_rows(results):
        base[b["task"]].append(b)
    rows = summary_rows(results)
    for task in tasks_run(results):
        for row in (r for r in rows if r["task"] == task):
            reached = ("not reached" if row["reached"] == 0 else
                       f"{row['epochs_to_target']:.1f}" + ("" if row["reached"] == row["n"]
                                                           else f" ({row['reached']}/{row['n']} reached)"))
            lines.append(f"| {task} | {row['label']} | {row['params']:,} | {', '.join(f'{x:g}' for x in row['lr'])} | "
                         f"{_pm(row['test'])} | {_pm(row['test_raw'])} | {_ratio(row['vs_mean'])} | "
                         f"{_pm(row['final'])} | {row['best_epoch'][0]:.1f} | {row['hit_cap']}/{row['n']} | "
                         f"{_pm(row['epoch_s'])} | {reached} |")
        for b in base[task]:
            lines.append(f"| {task} | *{b['label']}* | – | – | {_pm(b['mse'])} | {_pm(b['mse_raw'])} | – | – | – | – "
                         "| – | – |")
    return "\n".join(lines)


def _units(results: Dict[str, Any]) -> str:
    return "standardized" if results["config"].get("normalize") else "raw"


def best_trivial_mse(results: Dict[str, Any], task: str) -> Optional[Tuple[float, str]]:
    """(mean test MSE, label) of the task's best trivial baseline (the oracle, which knows the true
    frequencies, excluded), in the study's units."""
    cands = [b for b in baseline_rows(results) if b["task"] == task and b["name"] != "sine_oracle"]
    if not cands:
        return None
    b = min(cands, key=lambda b: b["mse"][0])
    return b["mse"][0], b["label"]


def _best_trivial(results: Dict[str, Any], task: str) -> str:
    best = best_trivial_mse(results, task)
    return "–" if best is None else f"{_f(best[0])} ({best[1]})"


EXACT = 1e-9  # a trivial baseline below this many times the predict-the-mean MSE solves the task exactly


def _times_best(mse: float, best: Optional[Tuple[float, str]], mean_mse: Optional[float]) -> str:
    if best is None or not math.isfinite(mse):
        return ""
    if mean_mse and best[0] <= EXACT * mean_mse:
        return " (best trivial is exact)"
    return f" ({mse / best[0]:.3g}× best trivial)" if best[0] > 0 else ""


def _mean_predictor(results: Dict[str, Any], task: str) -> Optional[float]:
    v = [b["mse"][0] for b in baseline_rows(results) if b["task"] == task and b["name"] == "mean"]
    return v[0] if v else None


def headline_table(results: Dict[str, Any]) -> str:
    """One row per task: every model's test MSE (mean over seeds) with its multiple of the best trivial
    baseline and whether it learned the task; the best trivial baseline; the prototype's claim;
    DIRU's improvement over the claim's baseline with p, Holm p and verdict."""
    variants = variants_run(results)
    rows = {(r["task"], r["model"]): r for r in summary_rows(results)}
    base_key = _claim_baseline(results)
    comps = {c["task"]: c for c in comparisons(results) if c["baseline"] == base_key}
    base_label = next((v["label"] for v in variants if v["key"] == base_key), None)
    n = max((r["n"] for r in rows.values()), default=0)
    head = ["task"] + [v["label"] for v in variants] + ["best trivial baseline"]
    with_claim = bool(base_label and "diru" in {v["key"] for v in variants})
    if with_claim:
        head += ["prototype's claim (DIRU vs LSTM)", f"DIRU vs {base_label} [95% CI]", "p (Holm)", "verdict"]
    lines = [f"Test MSE ({_units(results)} units) at the best-validation epoch, mean over {n} seeds, as a multiple "
             f"of the task's best trivial baseline; *not learned* marks a model whose median test MSE is above "
             f"{C.LEARNED_RATIO:g}× that of predicting the training mean:", "",
             "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for task in tasks_run(results):
        best = best_trivial_mse(results, task)
        cells = [task]
        for v in variants:
            row = rows.get((task, v["key"]))
            cells.append("–" if row is None else f"{_f(row['test'][0])}"
                         f"{_times_best(row['test'][0], best, _mean_predictor(results, task))}"
                         + ("" if row["learned"] else " *not learned*"))
        cells.append(_best_trivial(results, task))
        if with_claim:
            claim = C.MSE_CLAIMS.get(task)
            comp = comps.get(task)
            cells += [f"{claim.diru_mse:g} vs {claim.lstm_mse:g} ({claim.improvement:+.1%})" if claim else "–",
                      _pct_interval(comp["improvement"]) if comp else "–",
                      (f"{_p(comp['p'])} ({_p(comp['p_holm'])})" if comp else "–"),
                      f"**{comp['verdict']}**" if comp else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    times = []
    for v in variants:
        per_task = [rows[(t, v["key"])]["epoch_s"][0] for t in tasks_run(results) if (t, v["key"]) in rows]
        times.append(f"{sum(per_task) / len(per_task):.3g} s" if per_task else "–")
    extra = ["–", "0.15 s vs 0.12 s", "", "", ""] if with_claim else ["–"]
    lines.append("| epoch time (mean over tasks) | " + " | ".join(times + extra) + " |")
    return "\n".join(lines)


def _comparison_table(results) -> str:
    lines = ["| task | DIRU vs | seeds | DIRU MSE | baseline MSE | DIRU's improvement [95% CI] | p | Holm p | "
             "\"DIRU beats it\" | last epoch instead [95% CI] |", "|---|---|---:|---:|---:|---|---:|---:|---|---|"]
    for c in comparisons(results):
        lines.append(f"| {c['task']} | {c['label']} | {c['n']} | {_f(c['diru'])} | {_f(c['base'])} | "
                     f"{_pct_interval(c['improvement'])} | {_p(c['p'])} | "
                     f"{_p(c['p_holm']) if c['in_family'] else 'not in family'} | **{c['verdict']}** | "
                     f"{_pct_interval(c['final'])} |")
    return "\n".join(lines)


def tuning_rows(results: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Per (task, model, lr): the tuning trials' best validation MSE / predict-the-mean, median and
    range over the tuning seeds, trials that hit the epoch cap, and whether the rate was picked."""
    from .tuning import lr_curve

    trials = results.get("tuning") or []
    picked = results.get("picked_lr") or {}
    out = []
    for task in results["config"]["tasks"]:
        for v in results["variants"]:
            mine = [r for r in trials if r["task"] == task and r["model"] == v["key"]]
            for c in lr_curve(mine, key="val_ratio"):
                at = [r for r in mine if r["lr"] == c["lr"]]
                out.append(dict(c, task=task, model=v["key"], label=v["label"],
                                hit_cap=sum(1 for r in at if r.get("hit_cap")),
                                picked=picked.get(task, {}).get(v["key"]) == c["lr"]))
    return out


def _tuning_table(results) -> str:
    rows = tuning_rows(results)
    if not rows:
        return ("(no tuning: one learning rate for every model, "
                f"{results['config'].get('lr_grid', [None])[0] if results['config'].get('lr_grid') else results['config']['lr']:g})")
    lrs = sorted({r["lr"] for r in rows})
    lines = ["Best validation MSE / predict-the-mean validation MSE of each tuning trial: median [min, max] over "
             "the tuning seeds; **bold**: the picked rate; † a trial diverged (NaN). Lower is better; >= "
             f"{C.LEARNED_RATIO:g} did not learn.", "",
             "| task | model | " + " | ".join(f"lr {x:g}" for x in lrs) + " |", "|---|---|" + "---:|" * len(lrs)]
    for task in results["config"]["tasks"]:
        for v in results["variants"]:
            cells = []
            for x in lrs:
                c = next((r for r in rows if r["task"] == task and r["model"] == v["key"] and r["lr"] == x), None)
                if c is None:
                    cells.append("–")
                    continue
                text = f"{_g(c['median'])} [{_g(c['low'])}, {_g(c['high'])}]" + ("†" if c["diverged"] else "")
                cells.append(f"**{text}**" if c["picked"] else text)
            if any(c != "–" for c in cells):
                lines.append(f"| {task} | {v['label']} | " + " | ".join(cells) + " |")
    capped = sum(r["hit_cap"] for r in rows)
    total = sum(r["n"] for r in rows)
    lines += ["", f"Tuning trials that hit the epoch cap ({results['config']['epochs']}): {capped} of {total}."]
    return "\n".join(lines)


def _g(x: float) -> str:
    return "∞" if math.isinf(x) else f"{x:.3g}"


def _power_table(results) -> str:
    lines = ["| task | DIRU vs | seeds | sd of log ratio | observed improvement | power for it | seeds for 80% | "
             "claimed improvement | power for it | seeds for 80% |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in power_rows(results):
        claim = c["claim"]
        sd = c["log_sd"]
        lines.append(f"| {c['task']} | {c['label']} | {c['n']} | {_f(sd)} | {_pct(c['improvement'].estimate)} | "
                     f"{_power_pct(c['power_observed'])} | {c['seeds_observed'] or '–'} | "
                     + (f"{claim.improvement:+.1%} | {_power_pct(c['power_claim'])} | {c['seeds_claim'] or '–'} |"
                        if claim else "– | – | – |"))
    return "\n".join(lines)


def _power_pct(p: float) -> str:
    return "–" if p is None or math.isnan(p) else f"{p:.0%}"


def _claims_table(results) -> str:
    rows = claim_rows(results)
    if not rows:
        return "(no DIRU-vs-LSTM pair in this study: the prototype's claims are not tested)"
    lines = []
    diffs = C.setting_differences(results["config"])
    if diffs:
        lines += [f"**Not the prototype's settings** ({'; '.join(diffs)}): its numbers are not comparable "
                  "with these, and the verdicts below only say what happens at these settings. Run "
                  "`python -m diru_fast study` (the defaults are the prototype's) to test the claims.", ""]
    lines += ["| the prototype's claim | prototype (one run) | measured here | verdict |", "|---|---|---|---|"]
    lines += [f"| {r['claim']} | {r['prototype']} | {r['measured']} | **{r['verdict']}** |" for r in rows]
    return "\n".join(lines)


def _protocol_text(cfg: Dict[str, Any]) -> str:
    grid = cfg.get("lr_grid") or []
    if len(grid) > 1:
        tune = (f"every model tuned alike: Adam learning rate picked from the grid {', '.join(f'{x:g}' for x in grid)} "
                f"by the lowest median validation MSE (as a fraction of predicting the training mean) over "
                f"{cfg['tune_seeds']} tuning seeds ({cfg['tune_first_seed']}..; disjoint from the test seeds), "
                "then every test seed trains at the picked rate")
    else:
        tune = f"one Adam learning rate for every model ({(grid or [cfg['lr']])[0]:g}; not tuned)"
    clip = f"gradient clipping at global norm {cfg['clip_norm']:g}" if cfg.get("clip_norm") else "no gradient clipping"
    stop = (f"early stopping on validation with patience {cfg['patience']} and a cap of {cfg['epochs']} epochs "
            "(runs that hit the cap are counted in the tables)" if cfg.get("patience") else
            f"{cfg['epochs']} fixed epochs (the best-validation epoch's weights scored)")
    scale = ("inputs and targets standardised with the training split's mean and std (MSEs in standardised "
             "units, raw units beside)" if cfg.get("normalize") else "the raw scale (the prototype's: no scaling)")
    return f"{scale}; {tune}; {clip}; {stop}; batch {cfg['batch_size']}, MSE loss"


def rules_text(results: Dict[str, Any]) -> List[str]:
    """The rules of the report, stated before its numbers (as the module docstring)."""
    fam = tests(results)
    return [
        "## Rules (fixed before the runs)", "",
        "- **Protocol:** " + _protocol_text(results["config"]) + ".",
        "- **Metric:** the epoch with the lowest validation MSE is selected and its weights are scored on a "
        "separate test split (used for nothing else). That test MSE is the primary metric; the last epoch's "
        "test MSE is reported beside it, without a verdict.",
        f"- **Learned:** a model has learned a task when its test MSE is at most {C.LEARNED_RATIO:g}× the MSE of "
        "predicting the training mean (over seeds: the median of the per-seed ratios). Every headline shows "
        "each model's MSE as a multiple of the task's best trivial baseline.",
        "- **\"DIRU beats X\":** tested only where both models learned the task. Paired by seed, r_i = "
        "log(MSE_DIRU / MSE_X); improvement = 1 − exp(mean r) with its 95% Student-t interval, and the "
        "two-sided paired t-test's p. **Family** for the multiple-comparison correction: every DIRU-vs-"
        "baseline MSE comparison in which both models learned the task, plus the convergence comparisons "
        f"against the claim's baseline on those tasks ({fam['family_size']} tests); p-values are "
        f"**Holm-adjusted** over it. **Holds**: adjusted p < {ALPHA:g} and DIRU better; **does not hold**: "
        f"adjusted p < {ALPHA:g} and DIRU worse; otherwise **inconclusive** — not evidence of no effect (see "
        "the power table). Where neither model learned: **not learned** (never \"holds\"); where only one "
        "learned: **only <model> learned** (a result, the models being tuned alike). Both outside the family.",
        f"- **Convergence:** epochs until the validation MSE is <= {CONVERGENCE_FRACTION:g} × the run's "
        "predict-the-mean validation MSE (R² = 0.9; the same target for both runs of a pair); a run that "
        "never gets there counts as epochs + 1; tested like the MSEs on the paired difference LSTM − DIRU.",
        "- **Epoch time \"~25%\":** holds if the 95% CI of the overhead (geometric-mean ratio of epoch times "
        "over every task-seed pair, minus 1) lies within [12.5%, 50%], does not hold if entirely outside, "
        "else inconclusive (a band check, outside the family). Times depend on machine, load, backend and threads.",
        f"- **Power:** of the two-sided paired t-test at {ALPHA:g} (unadjusted) with the observed sd of r, for "
        f"the claimed and for the observed effect, and the seeds each needs for {POWER_TARGET:.0%}.",
        "- **Trivial baselines** (no gradient training; fitted on each seed's training split, scored on its "
        "test split): predict the training mean; least squares on the last 10 inputs and on all inputs; "
        "on sine also the generating model fitted per sequence and the true-frequency oracle. The sine "
        f"target's own noise sets a floor of 0.1²/10 = {SINE_NOISE_FLOOR:g} (raw units).",
    ]


def markdown_report(results: Dict[str, Any], title: str = "DIRU vs LSTM and GRU: the prototype's study") -> str:
    cfg, meta = results["config"], results["meta"]
    seeds = sorted({r["seed"] for r in results["runs"]})
    backends = ", ".join(meta.get("diru_backends") or sorted({r["backend"] for r in results["runs"]
                                                               if r["kind"] == "diru"}))
    gpu = f" ({meta['gpu']})" if meta.get("gpu") else ""
    reused = sorted({r["reused_from"] for r in results["runs"] if r.get("reused_from")})
    pooled = meta.get("pooled")
    parts = [
        f"# {title}", "",
        f"Command: `{meta.get('first_command') or meta.get('command') or '(library call)'}`"
        + (f" (completed / re-reported by `{meta['command']}`)" if meta.get("first_command") else ""), "",
        *([f"Note: {meta['note']}", ""] if meta.get("note") else []),
        f"- Ran on: {meta.get('device_type', 'cpu')}{gpu}, {meta.get('device')} with {meta.get('cpu_count')} cores, "
        f"{meta.get('threads')} torch thread(s), {meta.get('workers', 1)} worker process(es), world size "
        f"{meta.get('world_size', 1)}; torch {meta.get('torch')}, Python {meta.get('python')}, diru_fast "
        f"{meta.get('diru_fast')} (commit {meta.get('commit') or '?'}), {meta.get('timestamp')}; "
        f"wall time {meta.get('wall_s', float('nan')):.0f} s.",
        (f"- **Pooled over DIRU's backends {backends}**: each seed's DIRU test MSE is the geometric mean of its "
         "runs on the two backends (the baselines' runs are the same on both). Convergence and epoch times "
         "are not pooled (see each backend's report)." if pooled else
         f"- DIRU backend actually used: **{backends}**. Backends compute the same function up to float "
         "rounding, which moves single runs of a chaotic task (Lorenz): compare over seeds, never single runs."),
        f"- Models: {_sizes_text(cfg)}. DIRU has {cfg['num_compartments']} compartments{_options_text(cfg)}. "
        "LSTM fb1 is nn.LSTM with its forget-gate bias started at 1.",
        f"- Data: this reconstruction of the prototype's tasks (its code was not run): {cfg['n_train']} training / "
        f"{cfg['n_val']} validation / {cfg.get('n_test', '?')} test sequences of length {cfg['seq_len']}, new data "
        f"for every seed; test seeds {_seed_text(seeds)} ({len(seeds)}).",
    ]
    if reused:
        parts.append(f"- Runs reused from {', '.join(f'`{p}`' for p in reused)} (same settings; see there).")
    parts += [""] + rules_text(results) + [
        "",
        "## Headline", "",
        headline_table(results), "",
        "## Results (mean ± std over seeds)", "",
        f"Test MSE of the best-validation epoch's weights ({_units(results)} units, raw units beside), \"test / "
        "mean-predictor\": the median over seeds of test MSE over that of predicting the training mean (1.0 = "
        f"nothing learned; above {C.LEARNED_RATIO:g} is marked *not learned*); \"hit the cap\": runs that trained "
        "every epoch of the cap without early stopping; epoch time is training + validation, mean over epochs 2.. "
        "(the first warms up; a shared machine). Rows in *italics* are the trivial baselines. Convergence target "
        f"per task (mean over runs of {CONVERGENCE_FRACTION:g} × predict-the-mean validation MSE): "
        + ", ".join(f"{t} {_f(v)}" for t, v in task_targets(results).items()) + ".", "",
        summary_table(results), "",
        "## Tuning: validation loss against learning rate", "",
        _tuning_table(results), "",
        "## DIRU's relative improvement over each baseline", "",
        _comparison_table(results), "",
        "## Power", "",
        _power_table(results), "",
        "## The prototype's claims", "",
        _claims_table(results), "",
    ]
    return "\n".join(parts) + "\n"


def _seed_text(seeds: Sequence[int]) -> str:
    if seeds and seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 3:
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))


def write_report(results: Dict[str, Any], out_dir: Path, title: Optional[str] = None,
                 name: str = REPORT_MD) -> Path:
    """``report.md`` (or ``name``) under out_dir (atomic); returns its path."""
    text = markdown_report(results) if title is None else markdown_report(results, title)
    return atomic_write_text(Path(out_dir) / name, text)
