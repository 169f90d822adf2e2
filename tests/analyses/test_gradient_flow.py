"""Gradient-flow measurement: exact curves of linear recurrences, the models' step functions, and the
verdict rules."""

import math

import pytest
import torch

import diru_fast
from diru_fast import reference
from diru_fast.analyses import gradient_flow as G
from diru_fast.analyses.common import build
from diru_fast.experiments.claims import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE


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


def test_verdict_rules():
    def comp(vs_rnn, vs_lstm):
        return {"vs_rnn": vs_rnn, "vs_lstm": vs_lstm}

    v = G.verdicts({"init": comp([0.2, 0.1, 0.3, 5], [0.0, -0.01, 0.01, 5]),
                    "trained": comp([0.2, 0.15, 0.25, 5], [0.005, -0.015, 0.018, 5])})
    assert v["better_than_rnn"] == HOLDS and v["comparable_to_lstm"] == HOLDS
    v = G.verdicts({"init": comp([-0.2, -0.3, -0.1, 5], [0.2, 0.1, 0.3, 5]),
                    "trained": comp([-0.2, -0.3, -0.05, 5], [0.2, 0.15, 0.25, 5])})
    assert v["better_than_rnn"] == DOES_NOT_HOLD and v["comparable_to_lstm"] == DOES_NOT_HOLD
    v = G.verdicts({"init": comp([0.2, 0.1, 0.3, 5], None), "trained": comp([0.1, -0.1, 0.3, 5], None)})
    assert v["better_than_rnn"] == INCONCLUSIVE and v["comparable_to_lstm"] == INCONCLUSIVE
    assert v["per_phase"]["init"]["better_than_rnn"] == HOLDS
