"""diru_fast: fast, verified Dendrite-Inspired Recurrent Units for PyTorch.

Modules: :class:`DIRU` (the seed's model), :class:`DIRULayer` (``nn.GRU``-style),
:class:`DIRUCell` (one step). Reference (seed-faithful) modules: :mod:`diru_fast.reference`.
Functional ops: :mod:`diru_fast.functional`. Backends: :func:`available_backends`.
"""

from . import functional, reference
from .backends import BACKENDS, BackendUnavailableError, available_backends
from .modules import DIRU, DIRUCell, DIRULayer
from .reference import LSTMModel
from .weights import CellWeights, fuse_cell_weights

__version__ = "0.1.0"

__all__ = [
    "DIRU",
    "DIRUCell",
    "DIRULayer",
    "LSTMModel",
    "BACKENDS",
    "BackendUnavailableError",
    "available_backends",
    "CellWeights",
    "fuse_cell_weights",
    "functional",
    "reference",
    "__version__",
]
