"""diru_fast.lightning.DIRURegressor under a real lightning.Trainer on CPU: validation loss falls,
a checkpoint reloads to the same outputs, lengths batches train, and importing diru_fast does not
import lightning."""

import subprocess
import sys

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

lightning = pytest.importorskip("lightning", reason="lightning is in the [test] extra; install it to run these")
from diru_fast.lightning import DIRURegressor  # noqa: E402


def _sine_loaders(seed=0, n_train=96, n_val=32, steps=20, lengths=False):
    """Next-value prediction on noisy sines: x [N, T, 1] -> y [N, 1]."""
    g = torch.Generator().manual_seed(seed)
    n = n_train + n_val
    phase = torch.rand(n, 1, generator=g) * 6.28
    freq = 0.2 + 0.3 * torch.rand(n, 1, generator=g)
    t = torch.arange(steps + 1, dtype=torch.float32)
    wave = torch.sin(freq * t + phase) + 0.05 * torch.randn(n, steps + 1, generator=g)
    x, y = wave[:, :steps, None].clone(), wave[:, steps:]
    tensors = [x, y]
    if lengths:  # sequence i has L_i real steps (zero padding after them) and predicts value L_i
        lens = torch.randint(steps // 2, steps + 1, (n,), generator=g)
        tensors[1] = wave.gather(1, lens[:, None])
        x[torch.arange(steps)[None, :] >= lens[:, None]] = 0.0
        tensors.append(lens)
    train = TensorDataset(*(a[:n_train] for a in tensors))
    val = TensorDataset(*(a[n_train:] for a in tensors))
    return (DataLoader(train, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(seed)),
            DataLoader(val, batch_size=32))


def _trainer(tmp_path, epochs):
    return lightning.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                             enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                             deterministic=True)


def test_trainer_fits_and_validation_loss_falls(tmp_path):
    lightning.seed_everything(0, workers=True)
    train, val = _sine_loaders()
    model = DIRURegressor(1, 16, 1, lr=1e-2)
    trainer = _trainer(tmp_path, epochs=6)
    before = trainer.validate(model, val, verbose=False)[0]["val_loss"]
    trainer.fit(model, train, val)
    after = trainer.callback_metrics["val_loss"].item()
    assert "train_loss_epoch" in trainer.callback_metrics
    assert after < 0.5 * before, (before, after)


def test_checkpoint_reload_gives_identical_outputs(tmp_path):
    lightning.seed_everything(1, workers=True)
    train, val = _sine_loaders(seed=1, lengths=True)
    model = DIRURegressor(1, 12, 1, num_compartments=3, lr=5e-3, num_layers=2)
    trainer = _trainer(tmp_path, epochs=2)
    trainer.fit(model, train, val)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    loaded = DIRURegressor.load_from_checkpoint(path)
    assert loaded.hparams["num_compartments"] == 3 and loaded.hparams["num_layers"] == 2
    assert loaded.model.rnn.num_layers == 2 and loaded.model.rnn.num_compartments == 3
    x, _, lengths = next(iter(val))
    model.eval()
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, lengths), model(x, lengths), rtol=0, atol=0)
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name


def test_time_decay_dict_batches_with_dt_train_and_reload(tmp_path):
    """An irregularly sampled sine (exponential gaps dt) in dict batches: the model trains with
    time_decay, and the checkpoint reloads with decay_rate and gives the same outputs."""
    lightning.seed_everything(2, workers=True)
    g = torch.Generator().manual_seed(2)
    n, steps = 64, 12
    dt = torch.empty(n, steps + 1).exponential_(generator=g)
    t = dt.cumsum(1)
    wave = torch.sin(0.5 * t + 6.28 * torch.rand(n, 1, generator=g))
    rows = [{"x": wave[i, :steps, None], "y": wave[i, steps:], "dt": dt[i, :steps]} for i in range(n)]
    loader = DataLoader(rows, batch_size=16)
    model = DIRURegressor(1, 8, 1, num_compartments=2, lr=1e-2, time_decay=True)
    trainer = _trainer(tmp_path, epochs=3)
    before = trainer.validate(model, loader, verbose=False)[0]["val_loss"]
    trainer.fit(model, loader, loader)
    assert trainer.callback_metrics["val_loss"].item() < before
    path = tmp_path / "decay.ckpt"
    trainer.save_checkpoint(path)
    loaded = DIRURegressor.load_from_checkpoint(path)
    assert loaded.model.rnn.time_decay
    batch = next(iter(loader))
    model.eval()
    loaded.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch["x"], None, batch["dt"]), model(batch["x"], None, batch["dt"]),
                                   rtol=0, atol=0)


def test_bad_learning_rate_is_refused():
    with pytest.raises(ValueError, match="lr"):
        DIRURegressor(1, 8, 1, lr=0)


def test_import_diru_fast_does_not_import_lightning():
    code = "import sys, diru_fast; print('lightning' in sys.modules, 'pytorch_lightning' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_example_script_runs():
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "examples" / "lightning_sine.py"
    out = subprocess.run([sys.executable, str(script), "--epochs", "1", "--hidden", "8"], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "validation MSE:" in out.stdout
