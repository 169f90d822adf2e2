"""Compared models: forward shapes, parameter counts, parameter matching."""

import pytest
import torch
from torch import nn

from diru_fast.baselines import GRUModel
from diru_fast.experiments.models import ModelSpec, build_model, count_params, diru_params, matched_hidden_size


@pytest.mark.parametrize("kind", ["diru", "lstm", "gru"])
def test_forward_shape(kind):
    model = build_model(kind, 3, 8, 2, num_compartments=2, backend="torch")
    assert model(torch.randn(5, 7, 3)).shape == (5, 2)


def test_parameter_counts_at_prototype_size():
    # the prototype's model: n=1, k=4, d=64 with a Linear(d, 1) head
    assert count_params(build_model("diru", 1, 64, 1)) == 21057 == diru_params(1, 64, 1)
    assert count_params(build_model("lstm", 1, 64, 1)) == 17217
    gru = GRUModel(1, 64, 1)
    assert count_params(gru) == count_params(nn.GRU(1, 64)) + count_params(nn.Linear(64, 1))


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("target", [5409, 21057, 83073, 1000])
def test_matched_hidden_size_is_the_closest(kind, target):
    d = matched_hidden_size(kind, target, 1, 1)
    gaps = {h: abs(count_params(build_model(kind, 1, h, 1)) - target) for h in range(1, 200)}
    assert gaps[d] == min(gaps.values())
    assert d == min(h for h, g in gaps.items() if g == gaps[d])


def test_matched_hidden_size_errors():
    with pytest.raises(ValueError, match="baseline"):
        matched_hidden_size("diru", 100, 1, 1)
    with pytest.raises(ValueError, match="unknown model"):
        build_model("rnn", 1, 8, 1)


def test_spec_builds_the_model():
    spec = ModelSpec("gru", 2, 6, 3)
    model = spec.build()
    assert isinstance(model, GRUModel) and model.gru.hidden_size == 6 and model.fc_out.out_features == 3
    assert ModelSpec(**spec.to_dict()) == spec
