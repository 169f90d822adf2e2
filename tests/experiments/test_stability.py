"""The stability sweep's rules (diru_fast.experiments.stability) and its toy-task runs, at tiny sizes."""

import argparse
import math

import pytest

from diru_fast.experiments import lm, stability
from diru_fast.experiments.stability_toy import ToyConfig, train_toy


def _run(cell, lr, seed, diverged, trains, valid):
    return {"config": {"cell": cell, "optimizer": "sgd", "lr": lr, "clip": 0.25, "seed": seed},
            "diverged": diverged, "trains": trains, "best_valid": valid, "epoch_seconds": [1.0], "diagnostics": None}


def test_ranges_follow_the_rules():
    runs = [_run("diru", 1, 0, False, False, 5.6), _run("diru", 5, 0, False, True, 5.0), _run("diru", 5, 1, False, True, 5.2),
            _run("diru", 10, 0, False, True, 5.3), _run("diru", 10, 1, False, False, 5.5),  # one seed short: not in range
            _run("diru", 20, 0, False, True, 5.4), _run("diru", 40, 0, True, False, math.inf)]
    s = stability.summarize(runs)[("diru", "sgd", 0.25)]
    assert [lr for lr, e in s.items() if e["stable"]] == [5, 20]
    assert s[5]["valid"] == pytest.approx(5.1) and s[40]["diverged"] and not s[10]["diverged"]
    assert stability._range_text(s) == "[5, 20] (not 10)"


@pytest.mark.parametrize("cell", lm.CELLS)
def test_toy_run_records_outcome_and_diagnostics(cell):
    cfg = ToyConfig(task="sine", cell=cell, optimizer="adam", lr=0.01, epochs=2, hidden=4, n_train=64, n_val=32,
                    seq_len=10)
    r = train_toy(cfg, lm.Diagnostics(every=1))
    assert len(r["valid_loss"]) == 2 and all(math.isfinite(v) for v in r["valid_loss"])
    assert r["best_valid"] == min(r["valid_loss"]) and r["trains"] == (not r["diverged"] and r["best_valid"] <= 0.3)
    d = r["diagnostics"]
    assert len(d["steps"]) == 2 * 2 and len(d["sigma_max"][0]) == {"diru": 5, "lstm": 4, "gru": 3}[cell]
    huge = train_toy(ToyConfig(task="sine", cell=cell, optimizer="sgd", lr=1e6, clip=0, epochs=1, hidden=4, n_train=64,
                               n_val=32, seq_len=10))
    assert huge["diverged"] and not huge["trains"]


def test_stability_cli_on_a_toy_task(tmp_path):
    p = argparse.ArgumentParser()
    stability.add_arguments(p)
    args = p.parse_args(["--task", "sine", "--out", str(tmp_path), "--cells", "gru", "--optimizers", "adam",
                         "--adam-lrs", "0.01", "--clips", "1", "--epochs", "1", "--size", "4"])
    assert stability.run(args) == 0
    text = (tmp_path / "report.md").read_text()
    assert text.index("## Rules") < text.index("## Stable range") and "| gru | adam | 1 | 0.01 |" in text
    assert "valid MSE" in text


def test_cap_sigma_scales_only_w_int_and_w_out():
    import torch

    from diru_fast import DIRULayer

    torch.manual_seed(0)
    layer = DIRULayer(3, 8, num_layers=2)
    with torch.no_grad():
        layer.weight_out_l1.mul_(10)
    before = {k: v.clone() for k, v in layer.named_parameters()}
    lm.cap_sigma(layer, 1.5)
    for name, w in layer.named_parameters():
        sigma = float(torch.linalg.matrix_norm(w.detach(), 2)) if w.dim() == 2 else None
        if name.startswith(("weight_int", "weight_out")):
            assert sigma <= 1.5 + 1e-5
            old = float(torch.linalg.matrix_norm(before[name].detach(), 2))
            torch.testing.assert_close(w, before[name] * min(1.0, 1.5 / old))  # direction kept
        else:
            assert torch.equal(w, before[name])
