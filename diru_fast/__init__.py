"""diru_fast: fast, verified Dendrite-Inspired Recurrent Units for PyTorch.

Modules: :class:`DIRU` (the prototype's model), :class:`DIRULayer` (``nn.GRU``-style),
:class:`DIRUCell` (one step, ``nn.GRUCell``-style). The prototype's own modules, the reference the
fast paths are checked against: :mod:`diru_fast.reference`. Functional ops:
:mod:`diru_fast.functional`. Backends: :func:`available_backends`.

Importing this package loads PyTorch and nothing heavier: the kernel providers, the study and the
analyses are imported when first used.
"""

from torch import nn as _nn

from . import functional, reference
from ._tracing import UnsupportedExportError
from ._validation import InvalidInputError, InvalidInputTypeError
from .backends import BACKENDS, BackendUnavailableError, available_backends
from .modules import DIRU, DIRUCell, DIRULayer
from .baselines import LSTMModel
from .weights import CellWeights

__version__ = "0.2.0"

#: Every class a whole-module pickle of a diru_fast module may hold (``torch.save(model, path)``):
#: diru_fast's modules and the ``torch.nn`` modules inside them (the heads, the reference cells'
#: layers, the LSTM baseline). ``torch.load(path)`` (``weights_only=True``) reads such a file after
#: ``torch.serialization.add_safe_globals(diru_fast.SAFE_GLOBALS)`` (or within
#: ``torch.serialization.safe_globals(...)``); DIRUCell and DIRULayer need only their own class.
SAFE_GLOBALS = [DIRUCell, DIRULayer, DIRU, LSTMModel, reference.DIRUCell, reference.DIRU,
                reference.DendriteCompartment, _nn.Linear, _nn.ModuleList, _nn.Tanh, _nn.ReLU, _nn.Dropout,
                _nn.LSTM]


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
    "SAFE_GLOBALS",
    "__version__",
]
