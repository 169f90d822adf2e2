"""Export paths with a dynamic batch size and sequence length, on every backend.

- ``torch.export.export``: one program for every (B, T); each layer and direction's recurrence is
  one call of the custom op ``diru_fast::scan_fwd`` (backends "torch" and "reference" name the
  contract as its kernel); run at other shapes it gives eager's numbers.
- ONNX (``torch.onnx.export(..., dynamo=True)``): the recurrence is an ONNX ``Scan`` per layer and
  direction (``diru_fast/scan/loop.py``), the model has symbolic B and T, and onnxruntime reproduces
  PyTorch at several (B, T).
- The TorchScript-based ONNX exporter refuses with an error naming the supported call.
"""

import warnings

import pytest
import torch
from torch.export import Dim

from diru_fast import DIRU, DIRULayer, UnsupportedExportError
from tests.helpers import cpu_backends, randomize_

BACKENDS = cpu_backends()
SHAPES = [(1, 1), (7, 3), (3, 2)]  # (T, B), besides the example's


class WithLengths(torch.nn.Module):
    """A layer called as ``layer(x, None, lengths)``: export takes positional tensor inputs."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, lengths):
        return self.layer(x, None, lengths)


def _model(backend, dtype=torch.float64):
    layer = DIRULayer(3, 6, 2, batch_first=True, bidirectional=True, num_compartments=3, backend=backend, dtype=dtype)
    return WithLengths(randomize_(layer, seed=1)).eval()


def _lengths(T, B):
    return torch.tensor([T - (b % T) for b in range(B)])


DYNAMIC = ({0: Dim("B"), 1: Dim("T")}, {0: Dim("B")})


@pytest.mark.no_poison
@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_export_dynamic_batch_and_length(backend):
    model = _model(backend)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    program = torch.export.export(model, (x, _lengths(5, 2)), dynamic_shapes=DYNAMIC)
    calls = [node for node in program.graph.nodes if node.target is torch.ops.diru_fast.scan_fwd.default]
    assert len(calls) == 4  # 2 layers x 2 directions, whatever T
    kernel = "torch" if backend in ("torch", "reference") else backend
    assert all(node.args[8] == kernel for node in calls)
    run = program.module()
    for T, B in SHAPES:
        x = torch.randn(B, T, 3, dtype=torch.float64)
        got, want = run(x, _lengths(T, B)), model(x, _lengths(T, B))
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.no_poison
def test_torch_export_of_the_prototype_model():
    model = randomize_(DIRU(2, 8, 1, num_compartments=4, num_layers=2)).eval()
    program = torch.export.export(model, (torch.randn(3, 6, 2),), dynamic_shapes=({0: Dim("B"), 1: Dim("T")},))
    for T, B in SHAPES:
        x = torch.randn(B, T, 2)
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    """The default backend's model exported to ONNX once (float32: what ONNX models run in)."""
    model = _model("auto", dtype=torch.float32)
    path = tmp_path_factory.mktemp("onnx") / "diru.onnx"
    x = torch.randn(2, 5, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on optional packages
        program = torch.onnx.export(model, (x, _lengths(5, 2)), dynamo=True, dynamic_shapes=DYNAMIC,
                                    input_names=["x", "lengths"], output_names=["output", "h_n"], verbose=False)
    program.save(str(path))
    return model, path


def test_onnx_writes_the_recurrence_as_scan(onnx_model):
    import onnx

    _, path = onnx_model
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    ops = [node.op_type for node in proto.graph.node]
    assert ops.count("Scan") == 4  # 2 layers x 2 directions
    assert all(node.domain in ("", "ai.onnx") for node in proto.graph.node)  # no custom op left
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input]
    assert dims == [["B", "T", 3], ["B"]]


def test_onnxruntime_matches_pytorch_at_any_length(onnx_model):
    import onnxruntime

    model, path = onnx_model
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for T, B in SHAPES + [(40, 4)]:
        x = torch.randn(B, T, 3)
        lengths = _lengths(T, B)
        output, h_n = session.run(None, {"x": x.numpy(), "lengths": lengths.numpy()})
        want_out, want_h = model(x, lengths)
        torch.testing.assert_close(torch.from_numpy(output), want_out, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.from_numpy(h_n), want_h, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_legacy_onnx_exporter_refuses_clearly(backend, tmp_path):
    model = DIRU(3, 8, 1, num_compartments=2, backend=backend).eval()
    with pytest.raises(UnsupportedExportError, match=r"dynamo=True"):
        torch.onnx.export(model, (torch.randn(2, 5, 3),), str(tmp_path / "m.onnx"), dynamo=False)
    assert not (tmp_path / "m.onnx").exists()
