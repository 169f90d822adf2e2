"""The baselines (diru_fast.baselines): one class each, wherever it is imported from; shapes; and the
same weights after the same seed as the PyTorch layers they wrap, built in the same order."""

import pytest
import torch
from torch import nn

import diru_fast
from diru_fast import baselines, reference
from diru_fast.analyses import common
from diru_fast.experiments import models


def test_one_class_per_baseline():
    assert diru_fast.LSTMModel is reference.LSTMModel is baselines.LSTMModel
    assert models.GRUModel is baselines.GRUModel
    assert common.RNNModel is baselines.RNNModel
    assert isinstance(models.build_model("lstm", 1, 4, 1), baselines.LSTMModel)
    assert isinstance(models.build_model("gru", 1, 4, 1), baselines.GRUModel)
    assert isinstance(common.build("rnn", 1, 4, 1), baselines.RNNModel)


@pytest.mark.parametrize("cls,layer", [(baselines.LSTMModel, nn.LSTM), (baselines.GRUModel, nn.GRU),
                                       (baselines.RNNModel, nn.RNN)])
def test_same_seed_same_weights_as_the_layer_and_head(cls, layer):
    torch.manual_seed(3)
    model = cls(2, 5, 3)
    torch.manual_seed(3)
    expect = [layer(2, 5, batch_first=True), nn.Linear(5, 3)]
    got = [p for p in model.parameters()]
    want = [p for m in expect for p in m.parameters()]
    assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want))
    x = torch.randn(4, 6, 2)
    assert model(x).shape == (4, 3)
    out, _ = expect[0](x)
    torch.testing.assert_close(model(x), expect[1](out[:, -1]))
