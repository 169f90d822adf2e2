"""diru_fast: fast, verified Dendrite-Inspired Recurrent Units for PyTorch.

Modules: :class:`DIRU` (the prototype's model), :class:`DIRULayer` (``nn.GRU``-style),
:class:`DIRUCell` (one step, ``nn.GRUCell``-style). The prototype's own modules, the reference the
fast paths are checked against: :mod:`diru_fast.reference`. Functional ops:
:mod:`diru_fast.functional`. Backends: :func:`available_backends`.

Importing this package loads PyTorch and nothing heavier: the kernel providers, the study and the
analyses are imported when first used.
"""

from . import functional, reference
from ._tracing import UnsupportedExportError
from ._validation import InvalidInputError, InvalidInputTypeError
from .backends import BACKENDS, BackendUnavailableError, available_backends
from .modules import DIRU, DIRUCell, DIRULayer
from .baselines import LSTMModel
from .weights import CellWeights

__version__ = "0.2.0"


def __getattr__(name: str):
    """``diru_fast.selftest(...)``: loaded on first use (the module is callable, see its docstring)."""
    if name == "selftest":
        import importlib

        return importlib.import_module("diru_fast.selftest")  # not `from . import`: that asks this hook again
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DIRU",
    "DIRUCell",
    "DIRULayer",
    "LSTMModel",
    "BACKENDS",
    "BackendUnavailableError",
    "InvalidInputError",
    "InvalidInputTypeError",
    "UnsupportedExportError",
    "available_backends",
    "CellWeights",
    "functional",
    "reference",
    "selftest",
    "__version__",
]
