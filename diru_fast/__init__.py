"""diru_fast: fast, verified Dendrite-Inspired Recurrent Units for PyTorch.

Modules: :class:`DIRU` (the prototype's model), :class:`DIRULayer` (``nn.GRU``-style),
:class:`DIRUCell` (one step, ``nn.GRUCell``-style). The prototype's own modules, the reference the
fast paths are checked against: :mod:`diru_fast.reference`. Functional ops:
:mod:`diru_fast.functional`. Backends: :func:`available_backends`.

Importing this package loads PyTorch and nothing heavier: the kernel providers, the study and the
analyses are imported when first used.
"""

from . import functional, reference
from ._validation import InvalidInputError, InvalidInputTypeError
from .backends import BACKENDS, BackendUnavailableError, available_backends
from .modules import DIRU, DIRUCell, DIRULayer
from .baselines import LSTMModel
from .weights import CellWeights

__version__ = "0.2.0"

__all__ = [
    "DIRU",
    "DIRUCell",
    "DIRULayer",
    "LSTMModel",
    "BACKENDS",
    "BackendUnavailableError",
    "InvalidInputError",
    "InvalidInputTypeError",
    "available_backends",
    "CellWeights",
    "functional",
    "reference",
    "__version__",
]
