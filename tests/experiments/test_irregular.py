"""The irregular-sampling experiment: the generator (gaps, shapes, Δt alignment, seeds), the models'
use of Δt, the trivial predictors, the statistics (paired test, Holm), the runner end to end on a
tiny config, the report's rule and CI columns, and the subcommand."""

import csv
import json
import math
import subprocess
import sys

import pytest
import scipy.stats as scipy_stats
import torch

from diru_fast import cli
from diru_fast.experiments import irregular as I
from diru_fast.experiments.models import count_params
from diru_fast.experiments.stats import holm

TINY = dict(seeds=2, n_train=32, n_val=16, n_test=24, seq_len=6, hidden_size=8, num_compartments=2,
            batch_size=16, max_epochs=3, patience=1, backend="torch", lr_grid=())


@pytest.mark.parametrize("task", I.IRREGULAR_TASKS)
def test_shapes_and_dt_alignment(task):
    ds = I.IrregularDataset(task, 5, 7, seed=3)
    assert ds.x.shape == (5, 8, 3) and ds.dt.shape == (5, 8) and ds.y.shape == (5, 1) and len(ds) == 5
    assert ds.x.dtype == ds.dt.dtype == ds.y.dtype == torch.float32
    x, dt, y = ds[2]
    assert x.shape == (8, 3) and dt.shape == (8,) and y.shape == (1,)
    assert torch.equal(ds.x[..., 2], ds.dt)  # the Δt feature is dt, step by step
    assert torch.equal(ds.gaps[:, 0], torch.zeros(5, dtype=torch.float64))  # the first step has no predecessor
    assert torch.allclose(ds.times.diff(dim=1), ds.gaps[:, 1:], rtol=0, atol=1e-12)
    assert torch.equal(ds.x[:, :-1, 1], torch.ones(5, 7)) and torch.equal(ds.x[:, -1, :2], torch.zeros(5, 2))
    assert torch.equal(ds.x[:, :-1, 0], ds.values[:, :-1].float())  # observed values; the query step has none
    assert torch.equal(ds.y[:, 0], ds.values[:, -1].float())  # the target: the value at the query time


def test_gaps_are_exponential_with_mean_one():
    g = I.IrregularDataset("sine", 400, 50, seed=0).gaps[:, 1:].flatten()  # 20,000 gaps
    assert (g > 0).all()
    assert abs(float(g.mean()) - 1) < 0.03 and abs(float(g.std()) - 1) < 0.04  # Exp(1): mean = std = 1
    assert scipy_stats.kstest(g.numpy(), "expon").pvalue > 1e-3


def test_sine_values_are_the_sine_signal_at_the_sampled_times_plus_noise():
    ds = I.IrregularDataset("sine", 300, 20, seed=1)
    t = I.SINE_TIME_UNIT * ds.times  # [N, T+1]
    f1, f2, f3 = ds.freqs.unbind(1)
    clean = torch.sin(f1[:, None] * t) + 0.5 * torch.sin(f2[:, None] * t) + 0.25 * torch.sin(f3[:, None] * t)
    noise = ds.values - clean
    assert abs(float(noise.std()) - 0.1) < 0.005 and abs(float(noise.mean())) < 0.005


def test_lorenz_values_follow_the_flow_between_the_sampled_times():
    ds = I.IrregularDataset("lorenz", 3, 6, seed=2)
    gen = torch.Generator().manual_seed(2)
    torch.rand(3, 7, generator=gen, dtype=torch.float64)  # the gaps' draw comes first
    state = 5.0 * torch.randn(3, 3, generator=gen, dtype=torch.float64)
    xs = [state[:, 0]]
    for i in range(1, 7):  # an independent, 20x finer integration to each observation time
        h = I.LORENZ_TIME_UNIT * ds.gaps[:, i:i + 1] / 200
        for _ in range(200):
            state = I._rk4(state, h)
        xs.append(state[:, 0])
    # RK4 at substeps <= 0.01 is within about 3e-5 of the 20x finer integration here
    assert torch.allclose(ds.values, torch.stack(xs, 1) / I.LORENZ_SCALE, rtol=0, atol=1e-4)


def test_generator_is_deterministic_by_seed():
    for task in I.IRREGULAR_TASKS:
        a, b, c = (I.IrregularDataset(task, 4, 6, s) for s in (5, 5, 6))
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
        assert not torch.equal(a.x, c.x)
    with pytest.raises(ValueError, match="unknown irregular task"):
        I.IrregularDataset("memory", 4, 6, 0)


def test_each_model_takes_dt_its_own_way():
    ds = I.IrregularDataset("sine", 3, 6, seed=0)
    other_dt = ds.dt * 2.0
    x_other = ds.x.clone()
    x_other[..., 2] = other_dt
    for key, (_, feature, decay) in I.MODEL_VARIANTS.items():
        torch.manual_seed(0)
        model = I.build_variant(key, 8, 2, backend="torch")
        out = model(ds.x, ds.dt)
        assert out.shape == (3, 1)
        assert torch.equal(model(x_other, ds.dt), out) != feature  # the Δt column is read iff a feature
        assert torch.equal(model(ds.x, other_dt), out) != decay  # dt= is used iff time decay
        assert (I.decay_rates(model) is not None) == decay


def test_baselines_are_matched_to_diru_with_the_dt_feature():
    sizes = I.variant_hidden_sizes(32, 4)
    counts = {k: count_params(I.build_variant(k, 32, 4, backend="torch")) for k in I.MODEL_VARIANTS}
    assert sizes["diru_feature"] == sizes["diru_decay"] == 32
    for key in ("lstm", "gru"):
        assert abs(counts[key] - counts["diru_feature"]) / counts["diru_feature"] < 0.02
    assert counts["diru_both"] == counts["diru_feature"] + 32  # + decay_rate [d]


def test_trivial_predictors():
    train, test = I.IrregularDataset("lorenz", 200, 10, 0), I.IrregularDataset("lorenz", 50, 10, 1)
    pred = I.trivial_predictions(train, test)
    assert torch.equal(pred["last"], test.values[:, -2])
    assert torch.allclose(pred["mean"], train.values[:, -1].mean().expand(50))
    # on its own training data, least squares (whose features include the last value and a constant)
    # is at least as good as the last value and the mean
    own = {k: float((p - train.values[:, -1]).pow(2).mean()) for k, p in I.trivial_predictions(train, train).items()}
    assert own["least_squares"] <= min(own["last"], own["mean"]) + 1e-12


def test_paired_test_matches_scipy():
    a, b = [0.9, 0.8, 1.1, 0.7, 0.85], [1.0, 1.0, 1.05, 0.9, 1.0]
    imp, p = I.paired_test(a, b)
    ref = scipy_stats.ttest_rel([math.log(x) for x in a], [math.log(y) for y in b])
    assert p == pytest.approx(ref.pvalue, rel=1e-9) and imp.n == 5 and imp.low < imp.estimate < imp.high
    assert imp.estimate == pytest.approx(1 - math.exp(sum(math.log(x / y) for x, y in zip(a, b)) / 5))
    assert math.isnan(I.paired_test([0.5], [1.0])[1])


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("irregular")
    return out, I.run_irregular(I.IrregularConfig(**TINY), out, command="test", progress=False)


def test_runner_end_to_end(tiny_results):
    out, results = tiny_results
    cfg = I.IrregularConfig(**TINY)
    assert len(results["runs"]) == 2 * 2 * len(I.MODEL_VARIANTS)
    assert len(results["trivial"]) == 2 * 2 * len(I.TRIVIAL)
    assert results["meta"]["command"] == "test" and "commit" in results["meta"] and results["meta"]["wall_s"] > 0
    for r in results["runs"]:
        assert math.isfinite(r["test_mse"]) and r["test_mse"] > 0
        epochs = len(r["history"]["val_loss"])
        assert r["epochs"] == epochs and 1 <= r["best_epoch"] <= epochs
        assert r["best_val_mse"] == pytest.approx(min(r["history"]["val_loss"]), rel=1e-5)
        # early stopping: the run stops `patience` epochs after its best one, or at the cap
        assert epochs == min(cfg.max_epochs, r["best_epoch"] + cfg.patience) or not r["stopped_early"]
        assert (r["decay_rate"] is not None) == I.MODEL_VARIANTS[r["model"]][2]
    on_disk = json.loads((out / I.RESULTS_JSON).read_text())
    assert on_disk["runs"] == json.loads(json.dumps(results["runs"]))
    rows = list(csv.DictReader((out / I.RESULTS_CSV).open()))
    assert len(rows) == len(results["runs"]) + len(results["trivial"])
    assert {"test_mse", "mse_gap_lt_0.5", "decay_rate_mean"} <= set(rows[0])


def test_tuning_standardisation_and_the_gru_d_baseline():
    cfg = I.IrregularConfig(**dict(TINY, tasks=("lorenz",), models=("gru_decay",), seeds=1, lr_grid=(1e-3, 1e-2),
                                   tune_first_seed=7))
    res = I.run_irregular(cfg, None, progress=False)
    assert {t["seed"] for t in res["tuning"]} == {7} and len(res["tuning"]) == 2
    (run,) = res["runs"]
    assert run["lr"] == res["picked_lr"]["lorenz"]["gru_decay"] in (1e-3, 1e-2) and run["units"] == "standardized"
    train = I._data(cfg, "lorenz", 0)[0]
    stats = I.standardisation(train)  # training-split statistics only
    assert stats[3] == pytest.approx(float(train.values[:, -1].std()))
    z = I.standardised(train, stats)
    assert float(z.y.double().mean()) == pytest.approx(0.0, abs=1e-5) and torch.all(z.x[:, -1, 0] == 0)
    assert run["test_mse_raw"] == pytest.approx(run["test_mse"] * stats[3] ** 2, rel=1e-5)
    assert run["decay_rate"] is not None and run["backend"] == "nn.GRUCell loop"


def test_runner_is_repeatable(tiny_results):
    _, results = tiny_results
    again = I.run_one(I.IrregularConfig(**TINY), "lorenz", "diru_decay", 1)
    first = next(r for r in results["runs"] if (r["task"], r["model"], r["seed"]) == ("lorenz", "diru_decay", 1))
    assert again["test_mse"] == first["test_mse"] and again["history"] == first["history"]


def test_report_states_the_rule_and_has_ci_columns(tiny_results):
    _, results = tiny_results
    text = I.markdown_report(results)
    rule = text.index("## The comparison rule")
    assert rule < text.index("## Results") < text.index("## Comparisons (Holm-corrected)")
    for needle in ("early stopping", "held-out test split", "comparisons in which both models learned", "**Learned:**",
                   "test MSE, mean [95% CI]", "lower MSE by [95% CI]", "| p (Holm) |", "## Verdict",
                   "Exp(1)", "LSTM d=", "GRU d="):
        assert needle in text, needle
    comps = I.comparisons(results)
    assert len(comps) == 2 * len(I.COMPARISONS)
    family = [c for c in comps if c["in_family"]]  # the pairs in which both models learned
    assert [c["p_holm"] for c in family] == holm([c["p"] for c in family])
    for c in comps:
        if not c["in_family"]:
            assert c["verdict"] == "not learned" or c["verdict"].startswith("only ")
    for c in comps:
        assert f"| {c['task']} | {I._label(c['a'])} | {I._label(c['b'])} | 2 |" in text


def test_cli_help_and_report_only(tiny_results, tmp_path):
    done = subprocess.run([sys.executable, "-m", "diru_fast", "irregular", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "--max-epochs" in done.stdout and "--patience" in done.stdout
    out, results = tiny_results
    assert cli.main(["irregular", "--out", str(out), "--report-only", "--no-plots"]) == 0
    assert (out / I.REPORT_MD).read_text() == I.markdown_report(results)
    with pytest.raises(SystemExit) as exc:
        cli.main(["irregular", "--out", str(tmp_path), "--report-only", "--no-plots"])
    assert exc.value.code == 2
    assert I.write_plot(results, tmp_path / "irregular.png").stat().st_size > 0
