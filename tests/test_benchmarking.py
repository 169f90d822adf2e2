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


def test_cli_quick_run(tmp_path, monkeypatch):
    monkeypatch.setitem(bm.SHAPES, "prototype", dict(B=2, T=3, n=1, d=8, k=4))
    assert bm.main(["--quick", "--impls", "lstm", "torch", "--out", str(tmp_path), "--min-time", "0.01"]) == 0
    assert "torch" in (tmp_path / "cpu.md").read_text()
