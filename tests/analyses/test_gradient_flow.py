"""Gradient-flow measurement: exact curves of linear recurrences, the models' step functions, and the
verdict rules."""

import math

import pytest
import torch

import diru_fast
from diru_fast import reference
from diru_fast.analyses import gradient_flow as G
from diru_fast.analyses.common import build
from diru_fast.experiments.claims import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, NOT_LEARNED


@pytest.mark.parametrize("a", [0.9, -1.1, 1.0])
def test_linear_rnn_norm_is_a_power_of_a(a):
    """h_t = a h_{t-1} + x_t: ∂h_T/∂h_t = a^(T-t) I, so the spectral norm is |a|^(T-t) exactly."""
    steps, d = 12, 3
    x = torch.randn(2, steps, d, dtype=torch.float64)
    norms = G.jacobian_norms(lambda x_t, h: a * h + x_t, x, torch.zeros(2, d, dtype=torch.float64))
    expect = torch.tensor([abs(a) ** (steps - t) for t in range(steps + 1)], dtype=torch.float64)
    torch.testing.assert_close(norms, expect.expand(2, -1), rtol=1e-13, atol=0)
    fro = G.jacobian_norms(lambda x_t, h: a * h + x_t, x, torch.zeros(2, d, dtype=torch.float64), ord="fro")
    torch.testing.assert_close(fro, math.sqrt(d) * expect.expand(2, -1), rtol=1e-13, atol=0)


def test_linear_system_with_a_hidden_part_matches_matrix_powers():
    """s' = M s, h = s[:2]: ∂h_T/∂s_t = P M^(T-t)."""
    g = torch.Generator().manual_seed(0)
    m = torch.randn(4, 4, generator=g, dtype=torch.float64) / 2
    steps = 6
    x = torch.zeros(1, steps, 1, dtype=torch.float64)
    norms = G.jacobian_norms(lambda x_t, s: s @ m.T, x, torch.zeros(1, 4, dtype=torch.float64), out_dim=2)
    p = torch.eye(2, 4, dtype=torch.float64)
    for t in range(steps + 1):
        expect = torch.linalg.matrix_norm(p @ torch.linalg.matrix_power(m, steps - t), ord=2)
        torch.testing.assert_close(norms[0, t], expect, rtol=1e-12, atol=1e-14)


def test_decay_rate_of_an_exponential_curve():
    curve = [lag * math.log10(0.5) for lag in range(20)]
    assert G.decay_rate(curve) == pytest.approx(math.log10(0.5), rel=1e-12)
    curve = [0.0] + [1.0 + 0.1 * lag for lag in range(1, 10)]  # lag 0 is left out of the fit
    assert G.decay_rate(curve) == pytest.approx(0.1, rel=1e-12)


@pytest.mark.parametrize("kind", ["diru", "lstm", "gru", "rnn"])
def test_model_steps_reproduce_the_models(kind):
    torch.manual_seed(0)
    model = build(kind, 2, 5, 1, num_compartments=5, backend="torch").double()
    ms = G.model_step(model)
    x = torch.randn(3, 9, 2, dtype=torch.float64)
    states = G.run_states(ms.step, x, torch.zeros(3, ms.state_size, dtype=torch.float64))
    assert len(states) == 10 and ms.state_size == (10 if kind == "lstm" else 5)
    torch.testing.assert_close(ms.head(states[-1][:, :ms.hidden_size]), model(x), rtol=0, atol=1e-12)


def test_lstm_jacobian_matches_autograd_through_the_whole_state():
    torch.manual_seed(1)
    model = build("lstm", 1, 3, 1).double()
    ms = G.model_step(model)
    x = torch.randn(1, 6, 1, dtype=torch.float64)
    s0 = torch.zeros(1, 6, dtype=torch.float64)
    norms = G.jacobian_norms(ms.step, x, s0, ms.hidden_size)
    states = G.run_states(ms.step, x, s0)
    for t in (0, 2, 5):
        def h_T(s):
            for u in range(t, 6):
                s = ms.step(x[:, u], s)
            return s[:, :3]
        jac = torch.autograd.functional.jacobian(h_T, states[t])[0, :, 0, :]  # [3, 6]
        torch.testing.assert_close(norms[0, t], torch.linalg.matrix_norm(jac, ord=2), rtol=1e-12, atol=1e-14)


def test_log_norm_curve_is_indexed_by_lag():
    norms = torch.tensor([[0.01, 0.1, 1.0], [0.001, 0.1, 1.0]], dtype=torch.float64)  # index t, T = 2
    curve = G.log_norm_curve(norms)
    assert curve["mean"] == pytest.approx([0.0, -1.0, -2.5])


def test_model_step_rejects_what_it_cannot_measure():
    with pytest.raises(TypeError):
        G.model_step(torch.nn.Linear(2, 2))
    for two_layers in (diru_fast.DIRU(1, 4, 1, num_compartments=2, num_layers=2, backend="torch"),
                       reference.DIRU(1, 4, 1, num_compartments=2, num_layers=2)):
        with pytest.raises(ValueError, match="one-layer"):
            G.model_step(two_layers)


def _test(claim, mean, low, high, p, if_significant, phase="init"):
    return {"claim": claim, "mean": mean, "low": low, "high": high, "p": p, "if_significant": if_significant,
            "phase": phase}


def test_verdict_rules_apply_holm_over_the_family():
    rnn, lstm = "better_than_rnn", "comparable_to_lstm"
    tests = [_test(rnn, 0.2, 0.1, 0.3, 0.001, HOLDS), _test(rnn, 0.2, 0.1, 0.3, 0.002, HOLDS),
             _test(lstm, 0.0, -0.01, 0.01, 0.003, HOLDS), _test(lstm, 0.01, -0.01, 0.015, 0.004, HOLDS)]
    v = G.verdicts(tests)
    assert v["better_than_rnn"]["init"] == HOLDS and v["comparable_to_lstm"]["init"] == HOLDS
    assert v["family_size"] == 4 and v["better_than_rnn"]["trained"] is None  # no trained comparison given
    assert [t["p_holm"] for t in tests] == pytest.approx([0.004, 0.006, 0.006, 0.006])
    # p = 0.03 alone would settle it; after Holm over four tests (0.03 * 2, the 3rd and 4th smallest) it does not
    tests = [_test(rnn, -0.2, -0.3, -0.1, 0.03, DOES_NOT_HOLD), _test(rnn, -0.2, -0.3, -0.1, 0.03, DOES_NOT_HOLD),
             _test(lstm, 0.2, 0.1, 0.3, 0.001, DOES_NOT_HOLD), _test(lstm, 0.2, 0.1, 0.3, 0.001, DOES_NOT_HOLD)]
    v = G.verdicts(tests)
    assert [t["p_holm"] for t in tests] == pytest.approx([0.06, 0.06, 0.004, 0.004])
    assert tests[0]["verdict"] == INCONCLUSIVE
    assert v["better_than_rnn"]["init"] == INCONCLUSIVE and v["comparable_to_lstm"]["init"] == DOES_NOT_HOLD


def test_band_test_is_the_interval_rule():
    """Inside the band: the larger p of the two tests against the edges; outside: the nearer edge's."""
    band = (-0.02, 0.02)
    inside = G.band_test([0.001, -0.002, 0.0, 0.003, -0.001], band)
    assert inside["if_significant"] == HOLDS and inside["p"] < 0.05
    assert band[0] < inside["low"] and inside["high"] < band[1]
    outside = G.band_test([0.2, 0.21, 0.19, 0.2], band)
    assert outside["if_significant"] == DOES_NOT_HOLD and outside["p"] < 0.05 and outside["low"] > band[1]
    straddle = G.band_test([0.0, 0.04, -0.03, 0.03], band)
    assert straddle["p"] >= 0.05  # the interval crosses an edge: not settled


SLOPES = {"diru": (0.0, 0.02), "rnn": (-0.2, -0.2), "rnn_matched": (-0.21, -0.19), "lstm": (-0.18, -0.19),
          "lstm_fb1": (-0.05, -0.04), "gru": (-0.17, -0.17)}


def _runs(test_ratio):
    """Three seeds of every model with the slopes of SLOPES (init, trained) and ``test_ratio[model]``."""
    return [{"model": kind, "seed": seed, "test_ratio": test_ratio[kind], "init": {"slope": si + 0.001 * seed},
             "trained": {"slope": st - 0.001 * seed}} for seed in range(3) for kind, (si, st) in SLOPES.items()]


def test_summarize_compares_diru_with_every_control():
    runs = _runs({kind: 0.01 for kind in SLOPES})  # every model learned
    s = G.summarize(runs, tuple(SLOPES))
    keys = {(t["claim"], t["baseline"], t["phase"]) for t in s["tests"]}
    assert len(s["tests"]) == 8 and ("comparable_to_lstm", "lstm_fb1", "trained") in keys
    assert all(t["tested"] for t in s["tests"]) and s["verdicts"]["family_size"] == 8
    for phase in G.PHASES:
        assert s["verdicts"]["better_than_rnn"][phase] == HOLDS
        assert s["verdicts"]["comparable_to_lstm"][phase] == DOES_NOT_HOLD
    one = next(t for t in s["tests"] if t["baseline"] == "rnn" and t["phase"] == "init")
    assert one["mean"] == pytest.approx(0.198)  # mean over seeds of |-0.2 + j| - |j|, j = 0, 0.001, 0.002


def test_trained_comparisons_need_both_models_to_have_learned():
    """The same (significant) slope differences: a pair where neither learned gets "not learned", never
    "holds"; where only one learned, "only X learned"; neither is tested nor counted in Holm's family.
    The comparisons at initialisation are tested whatever training did."""
    ratios = {"diru": 0.05, "rnn": 1.0, "rnn_matched": 0.9, "lstm": 0.2, "lstm_fb1": 0.1, "gru": 1.0}
    s = G.summarize(_runs(ratios), tuple(SLOPES))
    trained = {t["baseline"]: t for t in s["tests"] if t["phase"] == "trained"}
    assert trained["rnn"]["verdict"] == "only DIRU learned" and not trained["rnn"]["tested"]
    assert "p_holm" not in trained["rnn"] and trained["lstm"]["tested"] and "p_holm" in trained["lstm"]
    assert s["verdicts"]["better_than_rnn"] == {"init": HOLDS, "trained": "only DIRU learned"}
    assert s["verdicts"]["family_size"] == 6  # 4 at initialisation + 2 trained (both LSTMs learned)
    assert s["learned"]["rnn"] == {"median_ratio": 1.0, "learned": False, "seeds_learned": 0, "n": 3}

    s = G.summarize(_runs(dict(ratios, diru=0.5)), tuple(SLOPES))  # DIRU has not learned either
    trained = {t["baseline"]: t for t in s["tests"] if t["phase"] == "trained"}
    assert trained["rnn"]["verdict"] == NOT_LEARNED and trained["lstm"]["verdict"] == "only LSTM learned"
    assert all(t["verdict"] != HOLDS for t in trained.values())
    assert s["verdicts"]["better_than_rnn"]["trained"] == NOT_LEARNED
    assert s["verdicts"]["family_size"] == 4 and s["verdicts"]["better_than_rnn"]["init"] == HOLDS
    mixed = G.summarize(_runs(dict(ratios, rnn=0.1)), tuple(SLOPES))  # one RNN learned: one test, one not
    assert mixed["verdicts"]["better_than_rnn"]["trained"] == G.MIXED


def test_tuning_picks_from_the_grid_on_seeds_apart_from_the_test_seeds():
    config = G.GradientFlowConfig(models=("diru", "rnn"), seeds=2, n_train=16, n_val=8, n_test=8, seq_len=12,
                                  hidden_size=4, epochs=2, patience=1, lr_grid=(1e-3, 1e-2), tune_seeds=1,
                                  n_probe=2, backend="torch")
    result = G.run_gradient_flow(config)
    assert set(result["picked_lr"]) == {"diru", "rnn"} and set(result["picked_lr"].values()) <= {1e-3, 1e-2}
    assert {(t["model"], t["lr"], t["seed"]) for t in result["tuning"]} == {
        (m, lr, 1000) for m in ("diru", "rnn") for lr in (1e-3, 1e-2)}
    assert all(r["lr"] == result["picked_lr"][r["model"]] and r["seed"] in (0, 1) for r in result["runs"])
    assert all(0 < r["test_ratio"] and r["epochs_run"] <= 2 for r in result["runs"])
    assert [c["lr"] for c in result["summary"]["lr_curve"]["diru"]] == [1e-3, 1e-2]
    assert {b["name"] for b in result["baselines"]} >= {"mean", "ls_all"}
    with pytest.raises(ValueError, match="overlap"):
        G.GradientFlowConfig(seeds=3, tune_first_seed=2)


def test_controls_are_what_they_claim():
    from diru_fast.analyses.common import matched_rnn_hidden, rnn_params
    from diru_fast.experiments.models import count_params

    torch.manual_seed(0)
    fb1 = build("lstm_fb1", 1, 5, 1)
    gate = (fb1.lstm.bias_ih_l0 + fb1.lstm.bias_hh_l0).detach()
    assert torch.equal(gate[5:10], torch.ones(5)) and not torch.equal(gate[:5], torch.ones(5))
    config = G.GradientFlowConfig(seeds=1, hidden_size=64)
    h = G.hidden_size_of("rnn_matched", config)
    assert h == 143 and rnn_params(1, 143, 1) == count_params(build("rnn", 1, 143, 1)) == 21022
    assert abs(rnn_params(1, h, 1) - 21057) <= abs(rnn_params(1, h + 1, 1) - 21057)  # the closest size
    assert matched_rnn_hidden(rnn_params(3, 17, 2), 3, 2) == 17
