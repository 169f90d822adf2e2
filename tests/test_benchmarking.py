"""The benchmark helpers produce real measurements and reports (no timing is asserted)."""

import json

import torch

from diru_fast import benchmarking as bm


def test_cases_run_and_fill_gradients():
    for impl in ("lstm", "torch"):
        case = bm.build_case(impl, "prototype", "train")
        case.step()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in case.model.parameters())


def test_streaming_step_and_epoch_cases_run(monkeypatch):
    monkeypatch.setattr(bm, "EPOCH_TRAIN", 8)
    monkeypatch.setattr(bm, "EPOCH_VAL", 4)
    monkeypatch.setitem(bm.SHAPES, "tiny", dict(B=4, T=3, n=2, d=8, k=4))
    for impl in ("lstm", "torch"):
        step = bm.build_case(impl, "stream64", "step")
        step.step()  # inference mode: nothing to differentiate, nothing recorded
        assert all(p.grad is None for p in step.model.parameters())
        epoch = bm.build_case(impl, "tiny", "epoch")
        before = [p.detach().clone() for p in epoch.model.parameters()]
        epoch.step()  # two Adam steps, then validation
        assert all(not torch.equal(b, p) for b, p in zip(before, epoch.model.parameters()))
        assert not epoch.model.training
    assert isinstance(bm.build_case("torch", "stream256", "step").model, __import__("diru_fast").DIRUCell)


def test_saved_activation_bytes_scale_with_sequence_length(monkeypatch):
    monkeypatch.setitem(bm.SHAPES, "t10", dict(B=4, T=10, n=1, d=8, k=4))
    monkeypatch.setitem(bm.SHAPES, "t20", dict(B=4, T=20, n=1, d=8, k=4))
    short = bm.saved_activation_bytes(bm.build_case("torch", "t10", "train"))
    long = bm.saved_activation_bytes(bm.build_case("torch", "t20", "train"))
    assert short > 0 and 1.6 < long / short < 2.4


def test_flop_counts_follow_the_arithmetic():
    d, n = bm.SHAPES["large"]["d"], bm.SHAPES["large"]["n"]
    diru, lstm = bm.case_flops("cpu", "large", "infer"), bm.case_flops("lstm", "large", "infer")
    assert diru == 2 * 32 * 200 * (5 * d * d + 3 * d * n) and lstm == 2 * 32 * 200 * (4 * d * d + 4 * d * n)
    assert bm.case_flops("cpu", "large", "train") == 2 * 32 * 200 * (15 * d * d + 6 * d * n)
    table = bm.gflops_table([{"impl": "lstm", "shape": "large", "mode": "infer", "median_s": lstm / 1e11},
                             {"impl": "cpu", "shape": "large", "mode": "infer", "median_s": diru / 5e10}])
    assert "| 100.0 | 50.0 |" in table
    # with a paired ratio the model's time is ratio x the baseline's median: here 1.6 x (lstm / 1e11 s)
    paired = bm.gflops_table([{"impl": "lstm", "shape": "large", "mode": "infer", "median_s": lstm / 1e11},
                              {"impl": "cpu", "shape": "large", "mode": "infer", "median_s": 1.0,
                               "ratio_vs_lstm": 1.6 * diru / lstm}])
    assert "| 100.0 | 62.5 |" in paired


def test_linear_fit_r2():
    assert abs(bm.linear_fit_r2([1, 2, 3, 4], [2, 4, 6, 8]) - 1.0) < 1e-12
    assert bm.linear_fit_r2([1, 2, 3, 4], [1, 16, 81, 256]) < 0.95


def test_report_files_and_ratio_table(tmp_path):
    records = [
        {"impl": "lstm", "shape": "prototype", "mode": "train", "median_s": 0.002, "saved_bytes": 2**20},
        {"impl": "torch", "shape": "prototype", "mode": "train", "median_s": 0.006, "saved_bytes": 2**19},
    ]
    scaling = [{"impl": "torch", "axis": "T", "B": 32, "T": t, "median_s": t * 1e-4} for t in (25, 50, 100)]
    md = bm.write_report(records, tmp_path, "unit", {"note": 1}, scaling)
    text = md.read_text()
    assert "6.00 ms (3.00×)" in text and "1.00 MiB" in text and "1.0000" in text
    data = json.loads((tmp_path / "unit.json").read_text())
    assert data["records"] == records and data["environment"]["torch"] == torch.__version__
    assert (tmp_path / "unit.png").stat().st_size > 1000
    assert len((tmp_path / "history.csv").read_text().splitlines()) == 3
    options_only = [{"impl": "auto", "variant": "plain", "shape": "prototype", "mode": "train", "median_s": 0.004}]
    bm.write_report(options_only, tmp_path, "options", None)
    assert (tmp_path / "options.md").exists() and not (tmp_path / "options.png").exists()  # no empty chart


def test_cli_quick_run(tmp_path, monkeypatch):
    monkeypatch.setitem(bm.SHAPES, "prototype", dict(B=2, T=3, n=1, d=8, k=4))
    assert bm.main(["--quick", "--impls", "lstm", "torch", "--out", str(tmp_path), "--min-time", "0.01"]) == 0
    assert "torch" in (tmp_path / "cpu.md").read_text()


def test_option_cases_build_the_options_in_the_mode_of_their_case(monkeypatch):
    monkeypatch.setitem(bm.SHAPES, "prototype", dict(B=2, T=3, n=1, d=8, k=4))
    assert set(bm.OPTION_VARIANTS) == {"plain", "relu", "attention", "dropout", "all", "time_decay"}
    for variant, options in bm.OPTION_VARIANTS.items():
        for mode in ("train", "infer"):
            case = bm.build_case("torch", "prototype", mode, variant=variant)
            rnn = case.model.rnn
            assert rnn.activation == options.get("activation", "tanh")
            assert rnn.compartment_attention == options.get("compartment_attention", False)
            assert rnn.compartment_dropout == options.get("compartment_dropout", 0.0)
            assert rnn.time_decay == options.get("time_decay", False)
            assert rnn.num_compartments == 4 and case.model.training == (mode == "train")
            assert case.info["variant"] == variant and case.info["options"] == options
            case.step()
            if mode == "train":
                assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in case.model.parameters())
            assert bm.resolved_backend(case) in __import__("diru_fast").available_backends("cpu")
    assert bm.resolved_backend(bm.build_case("torch", "prototype", "train", variant="all")) == "torch"
    for bad in (dict(impl="lstm", mode="train", variant="relu"), dict(impl="torch", mode="step", variant="relu"),
                dict(impl="torch", mode="train", variant="gelu")):
        try:
            bm.build_case(bad["impl"], "prototype", bad["mode"], variant=bad["variant"])
        except ValueError as exc:
            assert "option variant" in str(exc)
        else:
            raise AssertionError(f"{bad} was accepted")


def test_options_table_uses_the_paired_ratio_and_stays_out_of_the_main_tables():
    records = [
        {"impl": "lstm", "shape": "prototype", "mode": "train", "median_s": 0.002},
        {"impl": "cpu", "shape": "prototype", "mode": "train", "median_s": 0.003, "ratio_vs_lstm": 1.4},
        {"impl": "auto", "variant": "plain", "shape": "prototype", "mode": "train", "median_s": 0.004,
         "resolved_backend": "cpu"},
        {"impl": "auto", "variant": "relu", "shape": "prototype", "mode": "train", "median_s": 0.010,
         "resolved_backend": "torch", "ratio_vs_plain": 2.25},
        {"impl": "auto", "variant": "attention", "shape": "prototype", "mode": "train", "median_s": 0.006,
         "resolved_backend": "cpu"},  # unpaired: the ratio of the medians
    ]
    table = bm.options_table(records)
    assert "| prototype B=32 T=50 d=64 | train | auto | 4.00 ms (cpu) | 10.00 ms (2.25×, torch) | " \
           "6.00 ms (1.50×, cpu) |" in table
    main = bm.markdown_table(records)
    assert "auto" not in main and "(1.40×)" in main and "auto" not in bm.gflops_table(records)
    assert bm.options_table(records[:2]) == ""


def test_cli_quick_run_with_options(tmp_path, monkeypatch):
    monkeypatch.setitem(bm.SHAPES, "prototype", dict(B=2, T=3, n=1, d=8, k=4))
    assert bm.main(["--quick", "--options", "--impls", "lstm", "torch", "--out", str(tmp_path),
                    "--min-time", "0.01"]) == 0
    data = json.loads((tmp_path / "cpu.json").read_text())
    variants = {(r["variant"], r["mode"]) for r in data["records"] if r.get("variant")}
    assert variants == {(v, m) for v in bm.OPTION_VARIANTS for m in ("train", "infer")}
    assert "| plain | relu | attention | dropout | all |" in (tmp_path / "cpu.md").read_text()
