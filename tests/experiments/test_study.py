"""The study runner: variants, paired seeds, files written, repeatable, resumable, process pool."""

import csv
import json

import pytest

from diru_fast.experiments.models import count_params, build_model
from diru_fast.experiments.study import StudyConfig, derive_seed, load_results, run_study, variants

TINY = dict(tasks=("sine", "memory"), seeds=2, n_train=32, n_val=16, seq_len=12, hidden_size=8,
            num_compartments=2, batch_size=16, epochs=2, backend="torch", device="cpu", keep_predictions=5)


def test_variants_and_parameter_matching():
    off = variants(StudyConfig(hidden_size=64))
    assert [v.key for v in off] == ["diru", "lstm", "gru"] and all(v.hidden_size == 64 for v in off)
    on = {v.key: v for v in variants(StudyConfig(hidden_size=64, match_params="on"))}
    assert set(on) == {"diru", "lstm_matched", "gru_matched"}
    for key in ("lstm_matched", "gru_matched"):
        count = count_params(build_model(on[key].kind, 1, on[key].hidden_size, 1))
        assert abs(count - 21057) / 21057 < 0.02 and on[key].matched and "matched" in on[key].label
    both = [v.key for v in variants(StudyConfig(match_params="both"))]
    assert both == ["diru", "lstm", "lstm_matched", "gru", "gru_matched"]
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
