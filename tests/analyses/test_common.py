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
