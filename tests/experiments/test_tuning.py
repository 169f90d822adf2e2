"""The tuning loop: the lr grid, the picking rule, clipping, early stopping, tuning seeds apart from
test seeds, the picked rate used and recorded; the forget-gate bias of the LSTM baseline."""

import math

import pytest
import torch

from diru_fast.baselines import LSTMModel
from diru_fast.experiments.study import StudyConfig, run_study
from diru_fast.experiments.training import TrainConfig, train
from diru_fast.experiments.tuning import log_grid, lr_curve, pick_lr, tune_lr


def test_grid_and_picking_rule():
    assert log_grid(1e-4, 1e-2, 5) == (1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2)
    rows = [{"lr": 1e-3, "seed": 0, "val": 0.5}, {"lr": 1e-3, "seed": 1, "val": 0.1},
            {"lr": 1e-2, "seed": 0, "val": 0.2}, {"lr": 1e-2, "seed": 1, "val": math.nan},  # diverged: +inf
            {"lr": 1e-4, "seed": 0, "val": 0.25}, {"lr": 1e-4, "seed": 1, "val": 0.35}]
    curve = {c["lr"]: c for c in lr_curve(rows)}
    assert curve[1e-3]["median"] == pytest.approx(0.3) and curve[1e-3]["low"] == 0.1 and curve[1e-3]["high"] == 0.5
    assert curve[1e-2]["diverged"] == 1 and math.isinf(curve[1e-2]["median"])
    assert pick_lr(rows) == 1e-4  # 0.3 ties 0.3: the smaller rate
    assert pick_lr([{"lr": 1e-2, "seed": 0, "val": math.inf}, {"lr": 1e-3, "seed": 0, "val": math.nan}]) == 1e-3
    seen = []
    best, trials = tune_lr(lambda lr, seed: seen.append((lr, seed)) or abs(math.log10(lr) + 3) + seed, (1e-4, 1e-3, 1e-2),
                           (7, 8))
    assert best == 1e-3 and len(trials) == 6 and sorted(seen) == sorted((lr, s) for lr in (1e-4, 1e-3, 1e-2) for s in (7, 8))
    with pytest.raises(ValueError):
        pick_lr([])


def _data(n=16, T=5):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, T, 1, generator=g)
    return torch.utils.data.TensorDataset(x, x.sum(1))


def test_clipping_bounds_every_step_and_early_stopping_stops():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(5, 1))
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    ds = _data()
    train(model, ds, ds, TrainConfig(epochs=1, batch_size=16, progress=False, clip_norm=1e-3), optimizer=opt)
    step = math.sqrt(sum(float((p.detach() - b).pow(2).sum()) for p, b in zip(model.parameters(), before)))
    assert 0 < step <= 1e-3 * (1 + 1e-5)  # one SGD step of lr 1 moves at most the clipped norm
    flat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(5, 1))
    h = train(flat, ds, ds, TrainConfig(epochs=40, batch_size=16, lr=1e-12, progress=False, patience=2))
    assert h.stopped_early and h.epochs < 40  # nothing improves at lr 1e-12
    with pytest.raises(ValueError, match="clip_norm"):
        TrainConfig(clip_norm=0.0)


def test_a_tuned_study_picks_on_tuning_seeds_and_uses_the_pick(tmp_path):
    cfg = StudyConfig(tasks=("sine",), models=("diru", "gru"), seeds=2, n_train=32, n_val=16, n_test=16, seq_len=12,
                      hidden_size=8, num_compartments=2, batch_size=16, epochs=3, patience=2, backend="torch",
                      device="cpu", keep_predictions=4, lr_grid=(1e-3, 3e-2), tune_seeds=2, tune_first_seed=50)
    res = run_study(cfg, tmp_path, progress=False)
    assert res["config"]["lr_grid"] == [1e-3, 3e-2] and res["config"]["clip_norm"] == 1.0
    trials = res["tuning"]
    assert len(trials) == 2 * 2 * 2 and {t["seed"] for t in trials} == {50, 51}  # the tuning seeds only
    assert not {t["seed"] for t in trials} & {r["seed"] for r in res["runs"]}
    for model in ("diru", "gru"):
        mine = [t for t in trials if t["model"] == model]
        picked = res["picked_lr"]["sine"][model]
        assert picked == pick_lr(mine, key="val_ratio")
        assert all(r["lr"] == picked for r in res["runs"] if r["model"] == model)
    assert all("hit_cap" in r and r["epochs_run"] <= 3 for r in res["runs"] + trials)
    text = (tmp_path / "results.csv").read_text()
    assert text.splitlines()[0].split(",")[7] == "lr"
    with pytest.raises(ValueError, match="overlap the test seeds"):
        StudyConfig(seeds=10, tune_first_seed=5)


def test_forget_gate_bias():
    m = LSTMModel(1, 6, 1, forget_bias=1.0)
    assert torch.all(m.lstm.bias_ih_l0[6:12] == 1) and torch.all(m.lstm.bias_hh_l0[6:12] == 0)
    torch.manual_seed(0)
    plain = LSTMModel(1, 6, 1)
    torch.manual_seed(0)
    fb = LSTMModel(1, 6, 1, forget_bias=1.0)
    # every other weight as the default initialisation draws it
    assert torch.equal(plain.lstm.weight_hh_l0, fb.lstm.weight_hh_l0)
    assert torch.equal(plain.lstm.bias_ih_l0[:6], fb.lstm.bias_ih_l0[:6])


def test_prototype_recipe_and_the_demo_agreement_section():
    from diru_fast.experiments import demo
    from diru_fast.experiments.claims import HOLDS, NOT_LEARNED

    p = StudyConfig.prototype(seeds=2)
    assert (p.normalize, p.tuned, p.lr, p.clip_norm, p.patience, p.epochs, p.n_train) == (False, False, 1e-3, 0.0, 0, 50, 800)
    assert p.models == ("diru", "lstm", "gru") and StudyConfig().normalize and StudyConfig().tuned
    # the demo's table covers every task and model of the study, from the committed study's picks
    assert set(demo.DEMO_LR) == {"sine", "memory", "lorenz"} and all(set(v) == {"diru", "lstm", "lstm_fb1", "gru"}
                                                                     for v in demo.DEMO_LR.values())
    assert demo._agree(HOLDS, HOLDS) == "yes" and "opposite" in demo._agree(HOLDS, "does not hold")
    assert "power" in demo._agree("inconclusive", HOLDS) and "learned" in demo._agree(NOT_LEARNED, HOLDS)
