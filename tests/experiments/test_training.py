"""Training loop, evaluation and checkpoints: learning happens, runs repeat exactly, resume is exact."""

import pytest
import torch

from diru_fast.experiments.datasets import make_dataset
from diru_fast.experiments.distributed import DistContext
from diru_fast.experiments.models import ModelSpec
from diru_fast.experiments.training import (History, TrainConfig, evaluate, load_checkpoint, predict,
                                            save_checkpoint, train)


def _data(task="sine", n=64, T=12, seed=0):
    return make_dataset(task, n, T, seed), make_dataset(task, 32, T, seed + 1)


def _fresh(kind="diru", seed=0, hidden=8):
    spec = ModelSpec(kind, 1, hidden, 1, 2, "torch")
    torch.manual_seed(seed)
    return spec, spec.build()


@pytest.mark.parametrize("kind", ["diru", "lstm", "gru"])
def test_training_lowers_the_loss(kind):
    tr, va = _data()
    _, model = _fresh(kind)
    before = evaluate(model, va)
    hist = train(model, tr, va, TrainConfig(epochs=6, batch_size=16, lr=1e-2, progress=False))
    assert hist.epochs == 6 and len(hist.val_loss) == len(hist.epoch_time) == 6
    assert hist.val_loss[-1] < 0.7 * before
    assert all(t > 0 for t in hist.epoch_time) and all(n == 64 for n in hist.local_samples)
    assert not hist.stopped_early


def test_evaluate_is_the_mse_over_the_set():
    _, va = _data()
    _, model = _fresh()
    with torch.no_grad():
        expected = ((model(va.x) - va.y) ** 2).mean().item()
    assert evaluate(model, va, batch_size=5) == pytest.approx(expected, rel=1e-5)
    pred, target = predict(model, va, limit=7)
    assert pred.shape == (7, 1) and torch.equal(target, va.y[:7])


def test_same_seeds_same_numbers():
    tr, va = _data()
    runs = []
    for _ in range(2):
        _, model = _fresh()
        hist = train(model, tr, va, TrainConfig(epochs=2, batch_size=16, shuffle_seed=5, progress=False))
        runs.append((hist.val_loss, [p.detach().clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    _, model = _fresh()
    other = train(model, tr, va, TrainConfig(epochs=2, batch_size=16, shuffle_seed=6, progress=False))
    assert other.val_loss != runs[0][0], "the shuffling seed changes the run"


def test_checkpoint_resume_equals_an_uninterrupted_run(tmp_path):
    tr, va = _data()
    cfg = dict(batch_size=16, lr=1e-2, shuffle_seed=3, progress=False)
    spec, straight = _fresh()
    full = train(straight, tr, va, TrainConfig(epochs=4, **cfg))

    spec, model = _fresh()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    half = train(model, tr, va, TrainConfig(epochs=2, **cfg), optimizer=opt)
    path = save_checkpoint(tmp_path / "ck.pt", model, spec, opt, half, {"note": "half"})
    ck = load_checkpoint(path, lr=1e-2)
    assert ck["spec"] == spec and ck["extra"] == {"note": "half"} and ck["history"].epochs == 2
    resumed = train(ck["model"], tr, va, TrainConfig(epochs=4, **cfg), optimizer=ck["optimizer"],
                    history=ck["history"])
    assert resumed.val_loss == full.val_loss and resumed.train_loss == full.train_loss
    for a, b in zip(ck["model"].parameters(), straight.parameters()):
        assert torch.equal(a, b)


def test_load_rejects_other_files(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a diru_fast experiments checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_early_stopping_only_when_asked():
    tr, va = _data()
    _, model = _fresh()
    # lr this small leaves the float32 weights unchanged: the validation loss never improves
    hist = train(model, tr, va, TrainConfig(epochs=10, batch_size=16, lr=1e-12, patience=2, progress=False))
    assert hist.stopped_early and hist.epochs == 3
    hist = train(_fresh()[1], tr, va, TrainConfig(epochs=4, batch_size=16, lr=1e-12, progress=False))
    assert not hist.stopped_early and hist.epochs == 4


def test_bad_configs_say_the_fix():
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0.0)
    tr, va = _data()
    with pytest.raises(ValueError, match="multiple of 3"):
        train(_fresh()[1], tr, va, TrainConfig(epochs=1, batch_size=32, progress=False),
              ctx=DistContext(rank=0, world_size=3))


def test_history_round_trip():
    h = History([1.0], [2.0], [0.1], [0.05], [8], False)
    assert History.from_dict(h.to_dict()) == h
