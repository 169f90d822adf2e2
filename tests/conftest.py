"""Shared test fixtures.

- Without a CUDA GPU, ``TRITON_INTERPRET=1`` is set first thing (triton reads it when a kernel
  is decorated, i.e. when diru_fast's kernels are first imported), so the "triton" backend runs
  its kernels on CPU tensors in Triton's interpreter and every CPU suite exercises it.
- ``backend="contract"`` runs the plain-PyTorch kernel contract through the custom ops and the
  autograd formula of the compiled backends (``tests/contract_provider.py``), so that plumbing is
  tested with no compiler; users never see this backend.
- Every floating-point ``torch.empty*`` made from Python during a test is NaN-filled, so a
  kernel or wrapper that forgets to write an element fails loudly (compiled providers poison
  their own allocations under ``DIRU_FAST_POISON=1``, which this file sets).
"""

from __future__ import annotations

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("DIRU_FAST_POISON", "1")

import pytest  # noqa: E402

import diru_fast  # noqa: F401,E402
from diru_fast import backends  # noqa: E402

backends._register_provider("contract", "tests.contract_provider")

# torch.device(...) as a context manager recognises the factory functions it moves by identity, from
# a set it builds on first use: build it now, from the real functions, so a first use inside a
# poisoned test does not record the NaN-filling wrappers below instead (then `with torch.device("meta")`
# would silently allocate on the CPU in every later test).
import torch.utils._device  # noqa: E402

torch.utils._device._device_constructors()

_real_empty = torch.empty
_real_empty_like = torch.empty_like
_real_new_empty = torch.Tensor.new_empty


def _poison(t):
    if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()):
        t.fill_(float("nan"))
    return t


def _empty(*args, **kwargs):
    return _poison(_real_empty(*args, **kwargs))


def _empty_like(*args, **kwargs):
    return _poison(_real_empty_like(*args, **kwargs))


def _new_empty(self, *args, **kwargs):
    return _poison(_real_new_empty(self, *args, **kwargs))


@pytest.fixture(autouse=True)
def poison_empty(request, monkeypatch):
    """NaN-fill fresh allocations (tests that trace with torch.compile opt out: no_poison)."""
    if request.node.get_closest_marker("no_poison") is None:
        monkeypatch.setattr(torch, "empty", _empty)
        monkeypatch.setattr(torch, "empty_like", _empty_like)
        monkeypatch.setattr(torch.Tensor, "new_empty", _new_empty)
    yield


# Suites that train small models run torch on one thread: on a shared 2-core machine two
# OpenMP threads can make small ops 100x slower. The previous setting is restored afterwards.
_ONE_THREAD_SUITES = ("experiments", "analyses")


@pytest.fixture(autouse=True)
def one_torch_thread_for_training_suites(request):
    if request.node.path.parent.name not in _ONE_THREAD_SUITES:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def fresh_backend_state():
    """Each test sees a clean backend registry and warning record."""
    backends._reset_for_tests()
    yield
    backends._reset_for_tests()


def pytest_configure(config):
    config.addinivalue_line("markers", "no_poison: do not NaN-fill torch.empty in this test")
