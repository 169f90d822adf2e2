"""Checkpoint formats: release 0.1's checkpoints, the prototype's keys, strict loading, module tools."""

from pathlib import Path

import pytest
import torch
from torch.nn.utils import prune

import diru_fast
from diru_fast import DIRU, DIRUCell, DIRULayer, reference

FIXTURE = Path(__file__).parent / "fixtures" / "release_0_1.pt"  # written by fixtures/make_release_0_1.py


def _build(entry):
    kwargs = dict(entry["kwargs"])
    cls = getattr(diru_fast, entry["ctor"])
    if cls is DIRU:
        return DIRU(**kwargs)
    k = kwargs.pop("num_compartments")
    return cls(**kwargs, num_compartments=k)


@pytest.mark.parametrize("name", ["diru", "layer", "layer_nobias", "cell"])
def test_release_0_1_checkpoints_load_and_give_the_same_outputs(name):
    entry = torch.load(FIXTURE)["modules"][name]
    module = _build(entry).double()
    module.load_state_dict(entry["state_dict"])  # strict
    inputs = entry["inputs"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as when the fixture was written (the cpu kernel splits the batch by thread)
    try:
        for backend in ("torch", "cpu"):
            if backend in diru_fast.available_backends("cpu"):
                _check_outputs(name, module, backend, inputs, entry["outputs"][backend])
    finally:
        torch.set_num_threads(threads)


def _check_outputs(name, module, backend, inputs, want):
    module.backend = backend
    with torch.no_grad():
        if name == "diru":
            got = module(*inputs, return_sequences=True)
        elif name == "layer":
            got = module(inputs[0], lengths=inputs[1])
        else:
            got = module(*inputs)
    for g, w in zip(got if isinstance(got, tuple) else [got], want if isinstance(want, tuple) else [want]):
        # identical up to float64 rounding (the kernel's products now run in another order)
        torch.testing.assert_close(g, w, rtol=0, atol=1e-14, msg=lambda m: f"{name} on {backend}: {m}")


def test_diru_writes_the_prototypes_keys_and_both_load_each_other(tmp_path):
    torch.manual_seed(0)
    proto = reference.DIRU(2, 8, 3, num_compartments=2, num_layers=2)
    fast = DIRU(2, 8, 3, num_compartments=2, num_layers=2)
    assert list(fast.state_dict()) == list(proto.state_dict())
    path = tmp_path / "proto.pt"
    torch.save(proto.state_dict(), path)
    fast.load_state_dict(torch.load(path))  # strict: every key, every shape
    x = torch.randn(4, 5, 2)
    torch.testing.assert_close(fast(x), proto(x), rtol=1e-5, atol=1e-6)
    torch.manual_seed(1)
    fast2 = DIRU(2, 8, 3, num_compartments=2, num_layers=2)
    torch.save(fast2.state_dict(), path)
    proto.load_state_dict(torch.load(path))
    torch.testing.assert_close(proto(x), fast2(x), rtol=1e-5, atol=1e-6)
    fast.load_state_dict({name: p.detach() for name, p in fast2.named_parameters()})  # the fused keys load too
    assert torch.equal(fast(x), fast2(x))


def test_state_dict_values_are_copies_unless_keep_vars():
    model = DIRU(1, 8, 1, num_compartments=2)
    sd = model.state_dict()
    assert not sd["cells.0.integration.weight"].requires_grad
    sd["cells.0.integration.weight"].zero_()
    assert model.rnn.weight_int_l0.abs().sum() > 0
    kept = model.state_dict(keep_vars=True)
    kept["cells.0.compartments.1.gate.weight"].sum().backward()  # differentiable views of the parameters
    assert model.rnn.weight_ih_l0.grad[8 + 4:].abs().sum() > 0 and model.rnn.weight_hh_l0.grad[8 + 4:].abs().sum() > 0


def test_layer_and_cell_write_their_parameter_names_and_read_the_prototypes():
    torch.manual_seed(0)
    layer = DIRULayer(3, 8, 2, bidirectional=True, num_compartments=2)
    assert list(layer.state_dict())[:3] == ["weight_ih_l0", "weight_hh_l0", "weight_int_l0"]
    assert "weight_out_l1_reverse" in layer.state_dict()
    proto_cell = reference.DIRUCell(3, 8, 2)
    cell = DIRUCell(3, 8, num_compartments=2)
    assert list(cell.state_dict()) == ["weight_ih", "weight_hh", "weight_int", "weight_out", "bias_ih", "bias_int",
                                       "bias_out"]
    cell.load_state_dict(proto_cell.state_dict())
    x, h = torch.randn(4, 3), torch.randn(4, 8)
    torch.testing.assert_close(cell(x, h), proto_cell(x, h), rtol=1e-5, atol=1e-6)
    # release 0.1 wrote DIRULayer's cells as cells.{l} / cells_reverse.{l} with the prototype's keys
    old = {}
    for stack, suffix in (("cells", ""), ("cells_reverse", "_reverse")):
        for l in range(2):
            p = reference.DIRUCell(3 if l == 0 else 16, 8, 2)
            old.update({f"{stack}.{l}.{k}": v for k, v in p.state_dict().items()})
    fresh = DIRULayer(3, 8, 2, bidirectional=True, num_compartments=2)
    fresh.load_state_dict(old)
    assert torch.equal(fresh.weight_int_l1_reverse, old["cells_reverse.1.integration.weight"])


def _load_error(module, state_dict):
    with pytest.raises(RuntimeError) as info:
        module.load_state_dict(state_dict)
    return str(info.value)


def test_strict_loading_names_missing_unexpected_and_misshaped_prototype_keys():
    proto = reference.DIRU(3, 8, 2, num_compartments=2, num_layers=2).state_dict()
    sd = dict(proto)
    del sd["cells.0.integration.bias"]
    sd["cells.1.global_gate.weight"] = torch.zeros(8, 3)
    sd["cells.0.compartments.2.bias"] = torch.zeros(4)
    message = _load_error(DIRU(3, 8, 2, num_compartments=2, num_layers=2), sd)
    assert 'Missing key(s) in state_dict: "cells.0.integration.bias"' in message
    assert 'Unexpected key(s) in state_dict: "cells.0.compartments.2.bias"' in message
    assert "size mismatch for cells.1.global_gate.weight" in message and "torch.Size([8, 16])" in message
    assert "rnn." not in message  # reported by the keys in the file, not by the fused names
    result = DIRU(3, 8, 2, num_compartments=2, num_layers=2).load_state_dict(
        {k: v for k, v in proto.items() if k != "fc_out.bias"}, strict=False)
    assert result.missing_keys == ["fc_out.bias"] and result.unexpected_keys == []
    wrong_k = reference.DIRU(3, 8, 2, num_compartments=4).state_dict()
    message = _load_error(DIRU(3, 8, 2, num_compartments=2), wrong_k)
    assert "cells.0.compartments.2.bias" in message and "size mismatch for cells.0.compartments.0.W_x.weight" in message
    cell_sd = reference.DIRUCell(3, 8, 2).state_dict()
    del cell_sd["compartments.1.gate.weight"]
    assert 'Missing key(s) in state_dict: "compartments.1.gate.weight"' in _load_error(DIRUCell(3, 8, num_compartments=2),
                                                                                       cell_sd)


@pytest.mark.filterwarnings("ignore:.*torch.nn.utils.weight_norm.*is deprecated:FutureWarning")
def test_module_tools_act_on_the_tensors_the_forward_uses():
    """prune and the legacy weight_norm recompute the weight in a forward pre-hook of the module
    that owns it: the forward must read it from there (and again on the next step)."""
    torch.manual_seed(0)
    model = DIRU(2, 8, 1, num_compartments=2)
    x = torch.randn(3, 6, 2)
    before = model(x)
    prune.l1_unstructured(model.rnn, "weight_hh_l0", amount=0.5)
    assert (model.rnn.weight_hh_l0 == 0).sum() == 0.5 * 24 * 8
    pruned = model(x)
    assert not torch.allclose(pruned, before)
    with torch.no_grad():
        reference_copy = DIRU(2, 8, 1, num_compartments=2)
        reference_copy.load_state_dict({n: p.detach() for n, p in model.named_parameters()} |
                                       {"rnn.weight_hh_l0": model.rnn.weight_hh_l0.detach()}, strict=False)
    torch.testing.assert_close(pruned, reference_copy(x))
    pruned.sum().backward()
    assert model.rnn.weight_hh_l0_orig.grad[model.rnn.weight_hh_l0_mask == 0].abs().sum() == 0
    torch.testing.assert_close(model(x), pruned)  # a second step reads the recomputed weight too
    # with a tool attached, state_dict keeps the tool's keys (fused format), which load back
    sd = model.state_dict()
    assert "rnn.weight_hh_l0_orig" in sd and "rnn.weight_hh_l0_mask" in sd and "cells.0.integration.weight" not in sd
    torch.nn.utils.weight_norm(model.rnn, "weight_int_l0")
    y = model(x)
    torch.testing.assert_close(y, model(x))
    with torch.no_grad():
        model.rnn.weight_int_l0_g.mul_(2.0)
    assert not torch.allclose(model(x), y)
