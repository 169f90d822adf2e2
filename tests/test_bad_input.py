"""Every bad input gets a clear error or a documented result, on every backend.

Errors about inputs are :class:`diru_fast.InvalidInputError`: both a ValueError and a RuntimeError
(the latter is what torch.nn's recurrent modules raise for bad shapes), dtype errors also a TypeError.
"""

import pytest
import torch

from diru_fast import DIRU, DIRUCell, DIRULayer, InvalidInputError, InvalidInputTypeError
from diru_fast.functional import diru_scan
from tests.helpers import cpu_backends, random_cell

BACKENDS = cpu_backends()


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


def test_wrong_rank(backend):
    layer = DIRULayer(3, 8, num_compartments=2, backend=backend)
    with pytest.raises(ValueError, match="2-D or 3-D"):
        layer(torch.randn(3))
    with pytest.raises(ValueError, match="2-D or 3-D"):
        layer(torch.randn(2, 3, 4, 3))
    with pytest.raises(ValueError, match=r"\(batch, seq, input_size\)"):
        DIRU(3, 8, 1, backend=backend)(torch.randn(5, 3))
    with pytest.raises(ValueError, match="1-D or 2-D"):
        DIRUCell(3, 8, num_compartments=2, backend=backend)(torch.randn(1, 2, 3))


def test_wrong_feature_size(backend):
    with pytest.raises(ValueError, match="input_size=3"):
        DIRULayer(3, 8, num_compartments=2, backend=backend)(torch.randn(4, 2, 5))
    with pytest.raises(ValueError, match="input_size=3"):
        DIRU(3, 8, 1, backend=backend)(torch.randn(2, 4, 1))


def test_mismatched_dtype(backend):
    layer = DIRULayer(3, 8, num_compartments=2, backend=backend)
    with pytest.raises(TypeError, match="dtype torch.float64 but the parameters have dtype torch.float32"):
        layer(torch.randn(4, 2, 3, dtype=torch.float64))
    with pytest.raises(TypeError, match="floating-point"):
        layer(torch.ones(4, 2, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="hx has dtype"):
        layer(torch.randn(4, 2, 3), torch.zeros(1, 2, 8, dtype=torch.float64))


def test_mismatched_device(backend):
    layer = DIRULayer(3, 8, num_compartments=2, backend=backend)
    x = torch.randn(4, 2, 3, device="meta")
    with pytest.raises(ValueError, match="is on meta but the parameters are on cpu"):
        layer(x)


def test_h0_of_the_wrong_shape(backend):
    layer = DIRULayer(3, 8, num_layers=2, num_compartments=2, backend=backend)
    with pytest.raises(ValueError, match=r"hx must have shape \(2, 5, 8\)"):
        layer(torch.randn(4, 5, 3), torch.zeros(1, 5, 8))
    with pytest.raises(ValueError, match=r"hx must have shape \(2, 8\)"):
        layer(torch.randn(4, 3), torch.zeros(2, 5, 8))
    with pytest.raises(ValueError, match=r"hx"):
        DIRUCell(3, 8, num_compartments=2, backend=backend)(torch.randn(5, 3), torch.zeros(5, 8, 1))
    with pytest.raises(TypeError, match="hx must be a torch.Tensor"):
        layer(torch.randn(4, 5, 3), [0.0])


@pytest.mark.parametrize("kwargs", [dict(hidden_size=10, num_compartments=4), dict(hidden_size=0),
                                    dict(hidden_size=8, num_compartments=0), dict(input_size=0),
                                    dict(input_size=-1)])
def test_bad_sizes(kwargs):
    args = dict(input_size=3, hidden_size=8, num_compartments=2) | kwargs
    with pytest.raises(ValueError):
        DIRULayer(**args)
    with pytest.raises(ValueError):
        DIRU(args["input_size"], args["hidden_size"], 1, num_compartments=args["num_compartments"])
    k = args.pop("num_compartments")
    with pytest.raises(ValueError):
        DIRUCell(**args, num_compartments=k)


def test_bad_module_options():
    with pytest.raises(ValueError, match="num_layers"):
        DIRULayer(3, 8, num_layers=0)
    with pytest.raises(ValueError, match="dropout"):
        DIRULayer(3, 8, dropout=1.5)
    with pytest.raises(ValueError, match="output_size"):
        DIRU(3, 8, 0)
    with pytest.raises(TypeError, match="hidden_size must be an int"):
        DIRULayer(3, 8.0)


def test_empty_batch_gives_empty_results(backend):
    """Documented result: B=0 returns empty tensors of the right shape (and stays differentiable)."""
    layer = DIRULayer(3, 8, num_layers=2, bidirectional=True, num_compartments=2, backend=backend)
    out, h = layer(torch.randn(4, 0, 3))
    assert out.shape == (4, 0, 16) and h.shape == (4, 0, 8)
    out.sum().backward()
    y = DIRU(3, 8, 2, backend=backend)(torch.randn(0, 5, 3))
    assert y.shape == (0, 2)


def test_empty_sequence_is_an_error(backend):
    with pytest.raises(ValueError, match="empty sequence"):
        DIRULayer(3, 8, num_compartments=2, backend=backend)(torch.randn(0, 2, 3))
    with pytest.raises(ValueError, match="empty sequence"):
        DIRU(3, 8, 1, backend=backend)(torch.randn(2, 0, 3))


def test_lengths_out_of_range_or_malformed(backend):
    layer = DIRULayer(3, 8, num_compartments=2, backend=backend)
    x = torch.randn(4, 2, 3)
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 4\]"):
        layer(x, lengths=[5, 2])
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 4\]"):
        layer(x, lengths=[0, 2])
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        layer(x, lengths=[1, 2, 3])
    with pytest.raises(TypeError, match="integers"):
        layer(x, lengths=torch.tensor([1.5, 2.0]))
    with pytest.raises(ValueError, match="not both"):
        packed = torch.nn.utils.rnn.pack_padded_sequence(x, [4, 2])
        layer(packed, lengths=[4, 2])


def test_nan_input_propagates_per_sequence_or_raises_on_request(backend):
    """Documented result: NaN/Inf reach only the affected sequences; check_finite=True raises."""
    layer = DIRULayer(3, 8, num_compartments=2, backend=backend)
    x = torch.randn(4, 3, 3)
    x[2, 1, 0] = float("nan")
    out, h = layer(x)
    assert torch.isnan(out[2:, 1]).all() and torch.isfinite(out[:, [0, 2]]).all()
    assert torch.isfinite(out[:2, 1]).all()
    strict = DIRULayer(3, 8, num_compartments=2, backend=backend, check_finite=True)
    with pytest.raises(ValueError, match="NaN or Inf"):
        strict(x)
    x[2, 1, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        strict(x)


def test_non_contiguous_inputs_give_the_same_numbers(backend):
    torch.manual_seed(0)
    layer = DIRULayer(3, 8, num_layers=2, num_compartments=2, backend=backend).double()
    base = torch.randn(3, 6, 4, 2, dtype=torch.float64)  # [F', T, B, 2]
    x = base[:, :, :, 0].permute(1, 2, 0)  # [T, B, 3], strided in every dim
    assert not x.is_contiguous()
    h0 = torch.randn(8, 4, 2, dtype=torch.float64)[:, :, 0].t().unsqueeze(0).expand(2, 4, 8)
    out_nc, h_nc = layer(x, h0)
    out_c, h_c = layer(x.contiguous(), h0.contiguous())
    torch.testing.assert_close(out_nc, out_c, rtol=0, atol=1e-15)
    torch.testing.assert_close(h_nc, h_c, rtol=0, atol=1e-15)
    cell = random_cell(3, 8, 2, backend=backend)
    xs = torch.randn(3, 5, dtype=torch.float64).t()
    torch.testing.assert_close(cell(xs), cell(xs.contiguous()), rtol=0, atol=1e-15)


def test_functional_scan_checks():
    cell = random_cell(3, 8, 2)
    w = cell.cell_weights()
    with pytest.raises(ValueError, match="3-D"):
        diru_scan(torch.randn(2, 3, dtype=torch.float64), w)
    with pytest.raises(ValueError, match=r"h0 must have shape \(2, 8\)"):
        diru_scan(torch.randn(4, 2, 3, dtype=torch.float64), w, torch.zeros(3, 8, dtype=torch.float64))


def test_input_errors_are_value_and_runtime_errors(backend):
    """Code written for nn.GRU catches RuntimeError (shapes) or ValueError (dtypes): both work."""
    layer = DIRULayer(3, 8, num_compartments=2, backend=backend)
    cases = [(torch.randn(4, 2, 5),), (torch.randn(3),), (torch.randn(4, 2, 3), torch.zeros(2, 2, 8)),
             (torch.randn(4, 2, 3, dtype=torch.float64),), (torch.randn(0, 2, 3),)]
    for args in cases:
        for catch in (ValueError, RuntimeError, InvalidInputError):
            with pytest.raises(catch):
                layer(*args)
    with pytest.raises(TypeError):
        layer(torch.randn(4, 2, 3, dtype=torch.float64))
    assert issubclass(InvalidInputTypeError, (TypeError, ValueError, RuntimeError))
    with pytest.raises(RuntimeError, match="input_size=3"):
        DIRUCell(3, 8, num_compartments=2, backend=backend)(torch.randn(2, 4))
