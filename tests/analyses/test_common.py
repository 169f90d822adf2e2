"""The analyses' shared pieces: the prototype-structured copy of a fast DIRU."""

import pytest
import torch

import diru_fast
from diru_fast import reference
from diru_fast.analyses.common import prototype_copy


def test_prototype_copy_has_the_same_weights_and_draws_no_random_numbers():
    torch.manual_seed(0)
    model = diru_fast.DIRU(2, 6, 3, num_compartments=3, num_layers=2, backend="torch").double()
    state = torch.random.get_rng_state()
    copy = prototype_copy(model)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert isinstance(copy, reference.DIRU) and len(copy.cells) == 2 and len(copy.cells[0].compartments) == 3
    assert all(p.dtype == torch.float64 for p in copy.parameters())
    x = torch.randn(4, 5, 2, dtype=torch.float64)
    torch.testing.assert_close(copy(x), model(x), rtol=0, atol=1e-12)
    with torch.no_grad():
        copy.fc_out.weight.zero_()
    assert model.fc_out.weight.abs().sum() > 0, "the copy shares no tensor with the model"


def test_prototype_copy_of_a_reference_diru_is_itself():
    model = reference.DIRU(1, 4, 1, num_compartments=2)
    assert prototype_copy(model) is model
    with pytest.raises(TypeError):
        prototype_copy(torch.nn.Linear(2, 2))


def test_fit_clips_every_step_to_the_norm():
    """With a tiny clip every step is clipped (recorded per epoch) and the run differs from the
    unclipped one; a clip never reached gives the unclipped run exactly."""
    import copy

    from diru_fast.analyses.common import build, fit

    torch.manual_seed(0)
    x, y = torch.randn(16, 5, 2), torch.randn(16, 1)
    data = torch.utils.data.TensorDataset(x, y)
    model = build("gru", 2, 4, 1)
    clipped, free = copy.deepcopy(model), copy.deepcopy(model)
    h = fit(clipped, data, data, epochs=2, batch_size=8, clip=1e-6)
    assert h.clipped == [1.0, 1.0] and len(h.val_loss) == 2 and len(h.train_loss) == 2
    h2 = fit(free, data, data, epochs=2, batch_size=8, clip=None)
    assert h2.clipped == [0.0, 0.0]
    huge = copy.deepcopy(model)
    h3 = fit(huge, data, data, epochs=2, batch_size=8, clip=1e9)  # never reached: the same run as no clipping
    assert h3.clipped == [0.0, 0.0] and h3.val_loss == h2.val_loss
    assert all(torch.equal(a, b) for a, b in zip(huge.parameters(), free.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(clipped.parameters(), free.parameters()))
    with pytest.raises(ValueError, match="clip"):
        fit(model, data, data, epochs=1, clip=0.0)


def test_fit_stops_early_and_restores_the_best_epoch():
    """Patience stops a run whose validation loss stopped improving (or went NaN) before the cap;
    restore_best leaves the weights of the best epoch, whose validation loss is re-measured."""
    import copy

    from diru_fast.analyses.common import build, fit
    from diru_fast.experiments.training import evaluate

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(16, 5, 2), torch.randn(16, 1))
    held_out = torch.utils.data.TensorDataset(torch.randn(8, 5, 2), torch.randn(8, 1))
    model = build("gru", 2, 4, 1)
    capped = fit(copy.deepcopy(model), data, held_out, epochs=3, batch_size=8)
    assert capped.hit_cap and not capped.stopped_early and len(capped.val_loss) == 3
    run = copy.deepcopy(model)
    h = fit(run, data, held_out, epochs=200, batch_size=8, lr=0.05, patience=2, restore_best=True)
    assert h.stopped_early and not h.hit_cap and h.restored
    assert len(h.val_loss) == h.best_epoch + 2 < 200, "stops `patience` epochs after the best one"
    assert h.best_val == min(h.val_loss) == h.val_loss[h.best_epoch - 1]
    assert evaluate(run, held_out, 8) == pytest.approx(h.best_val, rel=1e-6)
    nan_data = torch.utils.data.TensorDataset(torch.randn(8, 5, 2), torch.full((8, 1), float("nan")))
    h_nan = fit(copy.deepcopy(model), data, nan_data, epochs=50, batch_size=8, patience=10)
    assert h_nan.stopped_early and len(h_nan.val_loss) == 1 and h_nan.best_epoch is None and h_nan.best_val == float("inf")
    with pytest.raises(ValueError, match="patience"):
        fit(model, data, data, epochs=1, patience=0)
