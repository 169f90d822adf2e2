"""Backend selection rules: explicit, auto with one warning, environment override."""

import warnings

import pytest
import torch

import diru_fast
from diru_fast import BackendUnavailableError, DIRU, backends


@pytest.fixture
def missing_cpu_kernel(monkeypatch):
    """Simulate a machine where the C++ extension could not be built or imported."""
    monkeypatch.setitem(backends._PROVIDER_MODULES, "cpu", "diru_fast.providers._missing_for_test")
    backends._reset_for_tests()


def test_available_backends_lists_the_portable_ones():
    names = diru_fast.available_backends()
    assert "torch" in names and "reference" in names and "auto" not in names
    assert set(names) <= set(diru_fast.BACKENDS)


def test_unknown_backend_is_a_value_error():
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        DIRU(1, 8, 1, backend="fast")
    with pytest.raises(ValueError, match="choose one of"):
        backends.resolve_backend("nope", torch.device("cpu"), torch.float32)


def test_explicit_unavailable_backend_raises_with_reason_and_fix(missing_cpu_kernel):
    model = DIRU(1, 8, 1, backend="cpu")
    with pytest.raises(BackendUnavailableError, match="'cpu' cannot run on cpu tensors") as info:
        model(torch.randn(2, 3, 1))
    assert "could not be imported" in str(info.value) and "backend='auto'" in str(info.value)


def test_explicit_cuda_backend_on_cpu_tensors_raises():
    with pytest.raises(BackendUnavailableError):
        DIRU(1, 8, 1, backend="cuda")(torch.randn(2, 3, 1))


def test_auto_falls_back_with_exactly_one_warning(missing_cpu_kernel):
    model = DIRU(1, 8, 1, backend="auto")
    x = torch.randn(2, 3, 1)
    with pytest.warns(RuntimeWarning, match="uses 'torch'.*passing over 'cpu'"):
        y1 = model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y2 = model(x)  # second call: no warning
    assert torch.equal(y1, y2)
    model.backend = "torch"
    assert torch.equal(model(x), y1)


def test_auto_picks_the_fused_cpu_backend_when_present():
    expected = "cpu" if "cpu" in diru_fast.available_backends("cpu") else "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert backends.resolve_backend("auto", torch.device("cpu"), torch.float32) == expected


def test_environment_variable_overrides_auto(monkeypatch):
    monkeypatch.setenv("DIRU_FAST_BACKEND", "reference")
    assert backends.resolve_backend("auto", torch.device("cpu"), torch.float32) == "reference"
    assert backends.resolve_backend("torch", torch.device("cpu"), torch.float32) == "torch"  # explicit wins
    monkeypatch.setenv("DIRU_FAST_BACKEND", "cuda")
    with pytest.raises(BackendUnavailableError, match="DIRU_FAST_BACKEND="):
        backends.resolve_backend("auto", torch.device("cpu"), torch.float32)
    monkeypatch.setenv("DIRU_FAST_BACKEND", "bogus")
    with pytest.raises(ValueError, match="DIRU_FAST_BACKEND='bogus'"):
        backends.resolve_backend("auto", torch.device("cpu"), torch.float32)
    monkeypatch.setenv("DIRU_FAST_BACKEND", "auto")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert backends.resolve_backend("auto", torch.device("cpu"), torch.float32) in ("cpu", "torch")


def test_env_override_gives_same_numbers(monkeypatch):
    torch.manual_seed(0)
    model = DIRU(1, 8, 1).double()
    x = torch.randn(2, 4, 1, dtype=torch.float64)
    monkeypatch.setenv("DIRU_FAST_BACKEND", "reference")
    y_ref = model(x)
    monkeypatch.setenv("DIRU_FAST_BACKEND", "torch")
    torch.testing.assert_close(model(x), y_ref, rtol=1e-12, atol=1e-12)


def test_package_imports_and_works_without_any_kernel(missing_cpu_kernel, monkeypatch):
    monkeypatch.setitem(backends._PROVIDER_MODULES, "triton", "diru_fast.providers._missing_for_test")
    monkeypatch.setitem(backends._PROVIDER_MODULES, "cuda", "diru_fast.providers._missing_for_test")
    backends._reset_for_tests()
    assert diru_fast.available_backends() == ["torch", "reference"]
    with pytest.warns(RuntimeWarning):
        out = DIRU(1, 8, 1)(torch.randn(2, 3, 1))
    assert out.shape == (2, 1)
