"""The study runner: variants, paired seeds, files written, repeatable, resumable, process pool."""

import csv
import json

import pytest
import torch

from diru_fast.experiments.models import count_params, build_model
from diru_fast.experiments.study import StudyConfig, derive_seed, load_results, run_study, variants

TINY = dict(tasks=("sine", "memory"), seeds=2, n_train=32, n_val=16, seq_len=12, hidden_size=8,
            num_compartments=2, batch_size=16, epochs=2, backend="torch", device="cpu", keep_predictions=5,
            models=("diru", "lstm", "gru"), lr_grid=())


def test_variants_and_parameter_matching():
    off = variants(StudyConfig(hidden_size=64))
    assert [v.key for v in off] == ["diru", "lstm", "lstm_fb1", "gru"] and all(v.hidden_size == 64 for v in off)
    on = {v.key: v for v in variants(StudyConfig(hidden_size=64, match_params="on"))}
    assert set(on) == {"diru", "lstm_matched", "lstm_fb1_matched", "gru_matched"}
    for key in ("lstm_matched", "lstm_fb1_matched", "gru_matched"):
        count = count_params(build_model(on[key].kind, 1, on[key].hidden_size, 1))
        assert abs(count - 21057) / 21057 < 0.02 and on[key].matched and "matched" in on[key].label
    both = [v.key for v in variants(StudyConfig(match_params="both"))]
    assert both == ["diru", "lstm", "lstm_matched", "lstm_fb1", "lstm_fb1_matched", "gru", "gru_matched"]
    with pytest.raises(ValueError, match="include the 'diru' model"):
        StudyConfig(models=("lstm",), match_params="on")
    with pytest.raises(ValueError, match="unknown task/model"):
        StudyConfig(tasks=("stocks",))


def test_derived_seeds_are_stable_and_distinct():
    assert derive_seed("sine", 0, "train") == derive_seed("sine", 0, "train")
    seeds = {derive_seed(t, s, p) for t in ("sine", "memory") for s in range(3) for p in ("train", "val", "init")}
    assert len(seeds) == 18 and all(0 <= s < 2**31 for s in seeds)


def _finals(results):
    return {(r["task"], r["model"], r["seed"]): r["final_val_mse"] for r in results["runs"]}


def test_tiny_study_writes_paired_repeatable_results(tmp_path):
    config = StudyConfig(**TINY)
    res = run_study(config, tmp_path, progress=False, command="test-command")
    assert len(res["runs"]) == 2 * 3 * 2
    on_disk = load_results(tmp_path)
    assert _finals(on_disk) == _finals(res)
    meta = on_disk["meta"]
    assert meta["command"] == "test-command" and meta["diru_backends"] == ["torch"]
    assert {"torch", "threads", "timestamp"} <= set(meta)
    with open(tmp_path / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["task"], r["model"], int(r["seed"])): float(r["final_val_mse"]) for r in rows} == _finals(res)
    # paired: every model of a (task, seed) sees the same data, shuffling and init seeds
    for task in TINY["tasks"]:
        for seed in (0, 1):
            group = [r["seeds"] for r in res["runs"] if r["task"] == task and r["seed"] == seed]
            assert len(group) == 3 and all(g == group[0] for g in group)
    assert res["runs"][0]["seeds"] != res["runs"][-1]["seeds"]
    again = run_study(config, None, progress=False)
    assert _finals(again) == _finals(res), "same command, same numbers"


def test_resume_reuses_finished_runs(tmp_path):
    config = StudyConfig(**dict(TINY, tasks=("sine",), models=("diru", "lstm")))
    first = run_study(config, tmp_path, progress=False, command="first")
    data = json.loads((tmp_path / "results.json").read_text())
    data["runs"] = data["runs"][:1]  # as if interrupted after the first run
    (tmp_path / "results.json").write_text(json.dumps(data))
    trained = []
    resumed = run_study(config, tmp_path, progress=False, resume=True, on_run=trained.append, command="second")
    assert len(trained) == 3 and _finals(resumed) == _finals(first)
    assert resumed["meta"]["first_command"] == "first" and resumed["meta"]["command"] == "second"
    with pytest.raises(ValueError, match="another configuration"):
        run_study(StudyConfig(**dict(TINY, tasks=("sine",), epochs=3)), tmp_path, progress=False, resume=True)


def test_process_pool_gives_the_same_numbers(tmp_path):
    config = StudyConfig(**dict(TINY, tasks=("sine",), models=("diru", "lstm"), seeds=1))
    serial = run_study(config, None, progress=False, threads=1)
    pooled = run_study(config, tmp_path, progress=False, workers=2, threads=1)
    assert _finals(pooled) == _finals(serial)
    assert [r["model"] for r in pooled["runs"]] == [r["model"] for r in serial["runs"]]


def test_runs_score_the_best_validation_epoch_on_a_test_split(tmp_path):
    from diru_fast.experiments import trivial
    from diru_fast.experiments.study import make_splits

    config = StudyConfig(**dict(TINY, tasks=("lorenz",), models=("diru", "gru"), epochs=3))
    res = run_study(config, None, progress=False)
    for r in res["runs"]:
        val = r["history"]["val_loss"]
        assert r["best_epoch"] == val.index(min(val)) + 1 and r["best_val_mse"] == min(val)
        assert r["test_mse"] > 0 and r["final_test_mse"] > 0
        if r["best_epoch"] == len(val):  # the best epoch is the last: the same weights
            assert r["test_mse"] == pytest.approx(r["final_test_mse"], rel=1e-6)
        assert r["seeds"]["test_data"] not in (r["seeds"]["train_data"], r["seeds"]["val_data"])
    train, _, test = make_splits(config, "lorenz", 0)
    var = float(train.y.double().std()) ** 2  # standardised units: raw MSE / the training targets' variance
    by_name = {b["name"]: b for b in res["baselines"] if b["seed"] == 0}
    raw_mean = float((test.y.double() - train.y.double().mean()).pow(2).mean())
    assert by_name["mean"]["mse_raw"] == pytest.approx(raw_mean)
    assert by_name["mean"]["mse"] == pytest.approx(raw_mean / var)
    assert by_name["ls_last10"]["mse_raw"] == pytest.approx(trivial.least_squares_mse(train, test, 10))
    run0 = next(r for r in res["runs"] if r["seed"] == 0)
    assert run0["mean_predictor_test_mse"] == pytest.approx(by_name["mean"]["mse"], rel=1e-5)
    assert run0["test_mse_raw"] == pytest.approx(run0["test_mse"] * var, rel=1e-5) and run0["units"] == "standardized"


def test_standardisation_uses_training_split_statistics_only():
    from diru_fast.experiments.study import _Standardised, make_splits, standardisation

    config = StudyConfig(**dict(TINY, tasks=("memory",), models=("lstm",), seeds=1))
    assert config.normalize  # the default
    train, val, test = make_splits(config, "memory", 0)
    stats = standardisation(train)
    x, y = train.x.double(), train.y.double()
    assert stats == pytest.approx((float(x.mean()), float(x.std()), float(y.mean()), float(y.std())))
    # other splits change nothing: the same statistics whatever validation and test hold
    assert standardisation(train) == stats and stats != standardisation(val) and stats != standardisation(test)
    z = _Standardised(train, stats)
    assert float(z.x.double().mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(z.y.double().std()) == pytest.approx(1.0, rel=1e-5)
    zv = _Standardised(val, stats)  # the validation split uses the training statistics
    assert torch.allclose(zv.y * stats[3] + stats[2], val.y, atol=1e-5)
    res = run_study(config, None, progress=False)
    (run,) = res["runs"]
    # MSEs in standardised units: predicting the training mean scores about 1 (its own variance)
    assert run["target_var"] == pytest.approx(stats[3] ** 2)
    assert run["mean_predictor_test_mse"] == pytest.approx(
        float((test.y.double() - stats[2]).pow(2).mean()) / stats[3] ** 2, rel=1e-6)
    raw = run_study(StudyConfig(**dict(TINY, tasks=("memory",), models=("lstm",), seeds=1, normalize=False)),
                    None, progress=False)
    assert raw["runs"][0]["units"] == "raw" and raw["runs"][0]["target_var"] == 1.0


def test_reuse_takes_matching_runs_and_refuses_other_settings(tmp_path):
    base = StudyConfig(**dict(TINY, tasks=("sine",), models=("diru", "lstm"), seeds=1))
    first = run_study(base, tmp_path, progress=False)
    other = StudyConfig(**dict(TINY, tasks=("sine",), models=("diru", "lstm"), seeds=1, backend="reference"))
    trained = []
    second = run_study(other, None, progress=False, reuse=[tmp_path], on_run=trained.append)
    assert [r["model"] for r in trained] == ["diru"]  # DIRU on another backend: trained again
    lstm = [r for r in second["runs"] if r["model"] == "lstm"]
    assert lstm[0]["reused_from"] == str(tmp_path)
    assert lstm[0]["test_mse"] == next(r["test_mse"] for r in first["runs"] if r["model"] == "lstm")
    with pytest.raises(ValueError, match="epochs differ"):
        run_study(StudyConfig(**dict(TINY, tasks=("sine",), epochs=3)), None, progress=False, reuse=[tmp_path])


def test_reproduce_runs_script_retrains_stored_runs_exactly(tmp_path, capsys):
    """scripts/reproduce_runs.py retrains a stored run at its stored lr and compares it exactly: 0 when
    identical, 1 when a stored number differs."""
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("reproduce_runs", Path(__file__).parents[2] / "scripts" / "reproduce_runs.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    run_study(StudyConfig(**dict(TINY, tasks=("sine",), seeds=1, models=("diru",))), tmp_path, progress=False)
    assert script.main([str(tmp_path), "sine:diru:0"]) == 0
    stored = json.loads((tmp_path / "results.json").read_text())
    stored["runs"][0]["test_mse"] *= 1 + 1e-12
    (tmp_path / "results.json").write_text(json.dumps(stored))
    assert script.main([str(tmp_path), "--sample", "1"]) == 1
    assert "DIFFERENT in test_mse" in capsys.readouterr().out
