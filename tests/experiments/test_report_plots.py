"""Report numbers and verdicts on hand-made results (known answers), and the PNG figures."""

import math

import pytest
import scipy.stats as scipy_stats

from diru_fast.experiments import claims as C
from diru_fast.experiments import report
from diru_fast.experiments.plots import PLOT_FILES, write_plots
from diru_fast.experiments.study import StudyConfig, variants


def _run(task, variant, seed, final, curve=None, epoch_s=0.1, mean_mse=10.0):
    curve = curve or [final * 3, final * 2, final]
    return {"task": task, "model": variant.key, "kind": variant.kind, "label": variant.label, "seed": seed,
            "hidden_size": variant.hidden_size, "matched": variant.matched, "params": 1000,
            "backend": "torch" if variant.kind == "diru" else f"nn.{variant.kind.upper()}",
            "test_mse": final, "final_test_mse": final * 1.5, "best_epoch": curve.index(min(curve)) + 1,
            "final_val_mse": final, "best_val_mse": min(curve), "final_train_loss": final,
            "mean_epoch_s": epoch_s, "mean_predictor_mse": mean_mse, "mean_predictor_test_mse": mean_mse,
            "history": {"train_loss": curve, "val_loss": curve, "epoch_time": [epoch_s] * len(curve),
                        "train_time": [epoch_s] * len(curve), "local_samples": [8] * len(curve),
                        "stopped_early": False},
            "predictions": {"pred": [0.1, 0.2], "target": [0.15, 0.1], "first_input": [0.0, 1.0, 0.5]}}


def _results(finals, config=None, curves=None, epoch_s=None):
    """finals: {(task, model_key): [mse per seed]} -> a results dict like run_study's."""
    config = config or StudyConfig(tasks=("sine", "memory", "lorenz"), models=("diru", "lstm", "gru"))
    var = {v.key: v for v in variants(config)}
    runs = []
    for (task, key), values in finals.items():
        for seed, final in enumerate(values):
            curve = (curves or {}).get((task, key, seed))
            runs.append(_run(task, var[key], seed, final, curve, (epoch_s or {}).get(key, 0.1)))
    return {"meta": {"command": "cmd", "threads": 1, "device_type": "cpu", "torch": "x", "wall_s": 1.0,
                     "diru_backends": ["torch"]},
            "config": config.to_dict(), "variants": [dict(key=v.key, kind=v.kind, hidden_size=v.hidden_size,
                                                          matched=v.matched, label=v.label) for v in var.values()],
            "runs": runs}


def test_verdicts_follow_the_rule():
    res = _results({
        ("sine", "diru"): [0.50, 0.52, 0.49], ("sine", "lstm"): [1.0, 1.01, 0.99],   # clearly better
        ("memory", "diru"): [2.0, 2.1, 1.9], ("memory", "lstm"): [1.0, 1.0, 1.0],    # clearly worse
        ("lorenz", "diru"): [0.9, 1.1, 1.0], ("lorenz", "lstm"): [1.0, 1.0, 1.0],    # a wash
    })
    comps = {c["task"]: c for c in report.comparisons(res)}
    assert comps["sine"]["verdict"] == C.HOLDS
    assert comps["memory"]["verdict"] == C.DOES_NOT_HOLD
    assert comps["lorenz"]["verdict"] == C.INCONCLUSIVE
    expected = 1 - math.exp(sum(math.log(a / b) for a, b in zip([0.5, 0.52, 0.49], [1.0, 1.01, 0.99])) / 3)
    assert comps["sine"]["improvement"].estimate == pytest.approx(expected)
    claims = {r["claim"].split(":")[0] + (" conv" if "converges" in r["claim"] else ""): r
              for r in report.claim_rows(res)}
    assert claims["sine"]["verdict"] == C.HOLDS and "0.024" in claims["sine"]["prototype"]
    assert claims["memory"]["verdict"] == C.DOES_NOT_HOLD and "1.568" in claims["memory"]["prototype"]


def test_targets_and_epochs_to_target():
    curves = {("sine", "diru", 0): [4.0, 1.0, 0.5], ("sine", "diru", 1): [4.0, 1.0, 0.6],
              ("sine", "lstm", 0): [4.0, 3.0, 1.0], ("sine", "lstm", 1): [4.0, 3.0, 1.2]}
    res = _results({("sine", "diru"): [0.5, 0.6], ("sine", "lstm"): [1.0, 1.2]},
                   config=StudyConfig(tasks=("sine",), models=("diru", "lstm")), curves=curves)
    # the target is fixed in advance: 0.1 x each run's predict-the-mean validation MSE (10 here)
    assert report.task_targets(res) == {"sine": pytest.approx(1.0)}
    rows = {r["model"]: r for r in report.summary_rows(res)}
    assert rows["diru"]["epochs_to_target"] == 2 and rows["diru"]["reached"] == 2
    assert rows["lstm"]["reached"] == 1 and rows["lstm"]["epochs_to_target"] == 3  # seed 1 never gets to 1.0
    conv = next(r for r in report.claim_rows(res) if "converges" in r["claim"])
    # paired differences lstm - diru: seed 0: 3 - 2 = 1, seed 1: (3 + 1) - 2 = 2 -> CI includes 0 with 2 seeds
    assert "+1.5" in conv["measured"] and conv["verdict"] == C.INCONCLUSIVE


def test_epoch_time_claim():
    finals = {(t, m): [1.0, 1.0, 1.0] for t in ("sine", "memory", "lorenz") for m in ("diru", "lstm")}
    res = _results(finals, epoch_s={"diru": 0.125, "lstm": 0.1})
    row = next(r for r in report.claim_rows(res) if "epoch time" in r["claim"])
    assert row["verdict"] == C.HOLDS and "+25.0%" in row["measured"]
    res = _results(finals, epoch_s={"diru": 0.3, "lstm": 0.1})
    row = next(r for r in report.claim_rows(res) if "epoch time" in r["claim"])
    assert row["verdict"] == C.DOES_NOT_HOLD and "+200.0%" in row["measured"]


def test_report_says_what_was_run(tmp_path):
    prototype_cfg = StudyConfig.prototype(tasks=("sine",), models=("diru", "lstm"), match_params="both")
    res = _results({("sine", "diru"): [0.5, 0.6], ("sine", "lstm"): [1.0, 1.2],
                    ("sine", "lstm_matched"): [0.9, 1.0]}, config=prototype_cfg)
    text = report.write_report(res, tmp_path).read_text()
    assert "plus the baselines resized to DIRU's parameter count" in text
    assert "LSTM (d=71, matched)" in text and "Not the prototype's settings" not in text
    assert "Holm-adjusted" in text and "torch" in text
    assert text.index("## Rules (fixed before the runs)") < text.index("## Headline")
    assert "the raw scale" in text and "not tuned" in text
    small = StudyConfig.prototype(tasks=("sine",), models=("diru", "lstm"), n_train=100, epochs=5)
    text = report.markdown_report(_results({("sine", "diru"): [0.5, 0.6], ("sine", "lstm"): [1.0, 1.2]},
                                           config=small))
    assert "Not the prototype's settings" in text and "n_train 100 (prototype: 800)" in text
    tuned = report.markdown_report(_results({("sine", "diru"): [0.5, 0.6], ("sine", "lstm"): [1.0, 1.2]},
                                            config=StudyConfig(tasks=("sine",), models=("diru", "lstm"))))
    assert "standardised" in tuned and "learning rate picked from the grid" in tuned
    assert "Not the prototype's settings" in tuned and "standardised data (prototype: raw scale)" in tuned


def test_plots_are_written(tmp_path):
    res = _results({(t, m): [0.5 + 0.1 * s for s in range(3)] for t in ("sine", "memory", "lorenz")
                    for m in ("diru", "lstm", "gru")})
    paths = write_plots(res, tmp_path)
    assert [p.name for p in paths] == [f for f in PLOT_FILES if f != "tuning.png"]  # no tuning trials here
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_models_that_only_predict_the_mean_are_flagged():
    res = _results({("memory", "diru"): [9.5, 9.8], ("memory", "lstm"): [9.4, 9.9], ("memory", "gru"): [1.0, 2.0]},
                   config=StudyConfig(tasks=("memory",)))  # every run's mean-predictor MSE is 10
    rows = {r["model"]: r for r in report.summary_rows(res)}
    assert rows["diru"]["vs_mean"] == pytest.approx(0.965) and rows["gru"]["vs_mean"] == pytest.approx(0.15)
    assert rows["diru"]["final"][0] == pytest.approx(1.5 * 9.65)  # the last epoch's test MSE, beside
    comps = {c["baseline"]: c for c in report.comparisons(res)}
    assert comps["lstm"]["not_learned"] == ["DIRU", "LSTM (d=64)"] and comps["gru"]["not_learned"] == ["DIRU"]
    text = report.markdown_report(res)
    assert "0.965 (not learned)" in text and "0.15 |" in text
    claim = next(r for r in report.claim_rows(res) if r["claim"].startswith("memory: DIRU beats"))
    assert "DIRU and LSTM (d=64) did not learn the task" in claim["measured"]


def test_holm_correction_can_turn_a_verdict():
    # every DIRU-vs-baseline comparison: sine vs LSTM has an unadjusted p just under 0.05; with the
    # other tests of the family (two clear ones and the convergence tests) Holm lifts it above 0.05
    ratios = [0.8, 0.92, 0.74, 0.97, 0.85]  # DIRU / LSTM per seed on sine
    lstm = [1.0, 1.1, 0.9, 1.05, 0.95]
    finals = {("sine", "diru"): [r * b for r, b in zip(ratios, lstm)], ("sine", "lstm"): lstm,
              ("lorenz", "diru"): [0.5, 0.52, 0.49, 0.5, 0.51], ("lorenz", "lstm"): [1.0, 1.01, 0.99, 1.0, 1.02],
              ("memory", "diru"): [0.5, 0.51, 0.5, 0.49, 0.5], ("memory", "lstm"): [1.0, 1.0, 1.02, 0.98, 1.0]}
    res = _results(finals, config=StudyConfig(models=("diru", "lstm")))
    t = report.tests(res)
    sine = next(c for c in t["mse"] if c["task"] == "sine")
    logs = [math.log(r) for r in ratios]
    p = 2 * scipy_stats.t.sf(abs(sum(logs) / 5 / (scipy_stats.tstd(logs) / math.sqrt(5))), 4)
    assert sine["p"] == pytest.approx(p) and 0.01 < p < 0.05
    family = [c["p"] for c in t["mse"] + t["convergence"]]
    assert t["family_size"] == 6 and len(family) == 6
    rank = sorted(family).index(sine["p"])  # Holm: (m - rank) x p, made monotone
    assert sine["p_holm"] >= min(1.0, (6 - rank) * sine["p"]) - 1e-12 and sine["p_holm"] > 0.05
    assert sine["verdict"] == C.INCONCLUSIVE
    assert all(c["verdict"] == C.HOLDS for c in t["mse"] if c["task"] != "sine")


def test_power_columns_follow_the_t_test():
    ratios = [0.8, 0.95, 0.7, 1.02, 0.85]
    lstm = [1.0, 1.1, 0.9, 1.05, 0.95]
    res = _results({("sine", "diru"): [r * b for r, b in zip(ratios, lstm)], ("sine", "lstm"): lstm},
                   config=StudyConfig(tasks=("sine",), models=("diru", "lstm")))
    c = report.comparisons(res)[0]
    logs = [math.log(r) for r in ratios]
    sd = scipy_stats.tstd(logs)
    d = math.log(1 - C.MSE_CLAIMS["sine"].improvement) / sd  # the claimed +24.9% as a standardised effect
    crit = scipy_stats.t.ppf(0.975, 4)
    nc = abs(d) * math.sqrt(5)
    assert c["power_claim"] == pytest.approx(scipy_stats.nct.sf(crit, 4, nc) + scipy_stats.nct.cdf(-crit, 4, nc),
                                             abs=1e-6)
    assert c["log_sd"] == pytest.approx(sd)
    text = report.markdown_report(res)
    assert "## Power" in text and f"{c['power_claim']:.0%}" in text


def test_pooling_backends_takes_the_geometric_mean_per_seed():
    a = _results({("lorenz", "diru"): [0.5, 1.0], ("lorenz", "lstm"): [1.0, 1.0]},
                 config=StudyConfig(tasks=("lorenz",), models=("diru", "lstm")))
    b = _results({("lorenz", "diru"): [2.0, 4.0]}, config=StudyConfig(tasks=("lorenz",), models=("diru",)))
    pooled = report.pool_backends(a, b)
    diru = sorted((r for r in pooled["runs"] if r["kind"] == "diru"), key=lambda r: r["seed"])
    assert [r["test_mse"] for r in diru] == [pytest.approx(1.0), pytest.approx(2.0)]
    assert [r["final_test_mse"] for r in diru] == [pytest.approx(1.5), pytest.approx(3.0)]
    assert len([r for r in pooled["runs"] if r["kind"] == "lstm"]) == 2
    text = report.markdown_report(pooled)
    assert "Pooled over DIRU's backends" in text and "converges faster" not in text


def test_trivial_baselines_are_tabled():
    res = _results({("sine", "diru"): [0.5, 0.6], ("sine", "lstm"): [1.0, 1.2]},
                   config=StudyConfig(tasks=("sine",), models=("diru", "lstm")))
    res["baselines"] = [{"task": "sine", "seed": s, "name": "ls_last10", "label": "x", "mse": v}
                        for s, v in ((0, 0.2), (1, 0.4))]
    rows = report.baseline_rows(res)
    assert rows[0]["mse"][0] == pytest.approx(0.3) and rows[0]["n"] == 2
    text = report.markdown_report(res)
    assert "*least squares on the last 10 inputs*" in text and "0.3 (least squares on the last 10 inputs)" in text


def test_a_pair_where_neither_learned_never_holds_and_one_learned_says_so():
    # mean-predictor MSE is 10: 9.x is not learned (> 0.3x), 1.x is learned; DIRU is clearly better in every pair
    res = _results({("memory", "diru"): [9.0, 9.1, 8.9], ("memory", "lstm"): [9.9, 9.95, 9.97],
                    ("sine", "diru"): [1.0, 1.1, 0.9], ("sine", "lstm"): [9.9, 9.95, 9.97],
                    ("lorenz", "diru"): [9.0, 9.1, 8.9], ("lorenz", "lstm"): [1.0, 1.1, 0.9]},
                   config=StudyConfig(models=("diru", "lstm")))
    res["baselines"] = [{"task": t, "seed": s, "name": n, "mse": m, "mse_raw": m} for t in ("sine", "memory", "lorenz")
                        for s in range(3) for n, m in (("mean", 10.0), ("ls_last10", 5.0))]
    comps = {c["task"]: c for c in report.comparisons(res)}
    assert comps["memory"]["verdict"] == C.NOT_LEARNED and not comps["memory"]["in_family"]
    assert comps["sine"]["verdict"] == "only DIRU learned" and comps["lorenz"]["verdict"] == "only LSTM learned"
    assert all(c["verdict"] != C.HOLDS for c in comps.values())
    assert C.pair_verdict(False, False, C.HOLDS) == C.NOT_LEARNED
    assert C.pair_verdict(True, True, C.HOLDS) == C.HOLDS
    assert C.learned(0.3) and not C.learned(0.31) and not C.learned(None) and not C.learned(math.nan)
    text = report.markdown_report(res)
    head = text[text.index("## Headline"):text.index("## Results")]
    assert "**not learned**" in head and "9 (1.8× best trivial) *not learned*" in head and "(0.2× best trivial)" in head
    assert text.index("**Learned:**") < text.index("## Headline")
