"""The fast modules: ``DIRUCell`` (one step, like ``nn.GRUCell``), ``DIRULayer`` (like ``nn.GRU``)
and ``DIRU`` (the prototype's model).

Each module owns its parameters in the fused layout of :mod:`diru_fast.weights` (seven tensors per
layer and direction, named as ``nn.GRU`` names its own: ``weight_ih_l0``, ``weight_hh_l0``, ...), so a
forward concatenates nothing and an optimizer sees a handful of tensors. The forward reads them by
attribute, so module tools (``prune``, ``weight_norm``, ``parametrize``) act on the tensors it uses.
It then runs :mod:`diru_fast.functional` on the backend chosen by ``backend=`` (see
:mod:`diru_fast.backends`). Checkpoints in the prototype's per-compartment format load into every
module, and ``DIRU`` writes that format (see :mod:`diru_fast.state_dict`; methods, not hooks: a
whole-module pickle loads with ``torch.load(weights_only=True)`` once its classes are allow-listed,
``diru_fast.SAFE_GLOBALS``). Without ``num_compartments`` or ``compartment_sizes`` a cell has
``min(4, hidden_size)`` near-equal compartments (:func:`diru_fast.reference.default_compartment_sizes`).

Options (keywords of every module, docs/THEORY.md §1.2–1.6; the defaults give the plain cell, its
numbers, parameters and checkpoint keys): ``activation="tanh" | "relu"``; ``compartment_sizes=[m_0,
..., m_{k-1}]`` (unequal compartments summing to ``hidden_size``; fixes ``num_compartments``);
``compartment_attention=True`` (k more rows in ``weight_ih``, ``weight_hh``, ``bias_ih`` of every
cell; prototype keys ``compartment_attention.{weight,bias}``; the non-persistent buffer
``compartment_of [d]`` indexes each unit's compartment; it is rebuilt from the sizes whenever the
tensors move or load: ``to_empty``, ``load_state_dict(..., assign=True)``); ``compartment_dropout=p`` (training only);
``time_decay=True`` (irregular series: a parameter ``decay_rate [d]`` per cell, prototype key
``decay_rate``, and a ``dt=`` argument of ``forward``; see :mod:`diru_fast.functional`).
"""

from __future__ import annotations

import warnings
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from . import _tracing
from . import _validation as v
from . import functional as Fd
from . import reference
from .backends import check_backend_name
from .functional import Lengths
from .state_dict import LoadsPrototypeKeys, PrototypeKeys, WritesPrototypeKeys, cell_keys
from .weights import ROLES, CellWeights, fused_shapes, init_decay_rate_, init_prototype_

__all__ = ["DIRUCell", "DIRULayer", "DIRU"]

# Registration order of one cell's parameters: weights, then biases (as nn.GRU orders its own).
_PARAM_ORDER = ("weight_ih", "weight_hh", "weight_int", "weight_out", "bias_ih", "bias_int", "bias_out")


def _register_cell(module: nn.Module, suffix: str, input_size: int, hidden_size: int, bias: bool,
                   factory: Dict[str, object], none_for_no_bias: bool, attention: int = 0) -> Tuple[Optional[str], ...]:
    """Register one cell's fused parameters as ``{role}{suffix}`` (``attention``: k attention rows);
    return their names in :data:`~diru_fast.weights.ROLES` order (None for an absent bias)."""
    shapes = fused_shapes(input_size, hidden_size, attention)
    for role in _PARAM_ORDER:
        if role.startswith("bias") and not bias:
            if none_for_no_bias:
                module.register_parameter(role + suffix, None)
            continue
        module.register_parameter(role + suffix, nn.Parameter(torch.empty(shapes[role], **factory)))
    return tuple(role + suffix if bias or not role.startswith("bias") else None for role in ROLES)


def _read(module: nn.Module, name: Optional[str]) -> Optional[Tensor]:
    """The tensor the forward uses for parameter ``name``: a dict lookup for a plain parameter, else
    the attribute (a pruned, weight-normed or parametrized weight is computed there)."""
    if name is None:
        return None
    p = module._parameters.get(name)
    return p if p is not None else getattr(module, name)


def _cell_weights(module: nn.Module, names: Tuple[Optional[str], ...]) -> CellWeights:
    return CellWeights(*(_read(module, name) for name in names))


def _setup_options(module: nn.Module, input_size: int, hidden_size: int, num_compartments: Optional[int],
                   compartment_sizes: Optional[Sequence[int]], activation: str, compartment_attention: bool,
                   compartment_dropout: float, device, time_decay: bool = False) -> Tuple[int, ...]:
    """Validate and store a module's sizes (``input_size``, ``hidden_size``: Python ints, also from
    NumPy ones) and options; return its compartment sizes."""
    reference.check_sizes(input_size, hidden_size, 1)
    module.input_size, module.hidden_size = int(input_size), int(hidden_size)
    module.time_decay = v.check_bool("time_decay", time_decay)
    sizes = reference.check_options(hidden_size, num_compartments, compartment_sizes, activation,
                                    compartment_dropout, compartment_attention)
    module.num_compartments = len(sizes)
    module.compartment_sizes = sizes
    module.activation = activation
    module.compartment_attention = compartment_attention
    module.compartment_dropout = float(compartment_dropout)
    index = Fd.compartment_index(sizes, device) if compartment_attention else None
    module.register_buffer("compartment_of", index, persistent=False)  # [d] int64, or None
    return sizes


def _refill_compartment_index(module: nn.Module) -> None:
    """Rewrite ``compartment_of`` from the sizes, on the parameters' device: after ``to_empty()``
    (meta-device init) the buffer holds uninitialised memory, and after ``load_state_dict(...,
    assign=True)`` it would stay on "meta" (it is not in the state dict)."""
    index = module.compartment_of
    if index is None:
        return
    device = module.cell_weights().w_hh.device
    if device.type == "meta":
        return
    if index.device != device:
        module.compartment_of = Fd.compartment_index(module.compartment_sizes, device)
    else:
        with torch.no_grad():
            index.copy_(Fd.compartment_index(module.compartment_sizes))


class _Cells(LoadsPrototypeKeys):
    """What DIRUCell and DIRULayer share: prototype keys load (:class:`LoadsPrototypeKeys`), and the
    non-persistent buffer ``compartment_of`` is rebuilt from the sizes whenever the tensors are
    replaced (``to_empty``, ``to``, ``load_state_dict(..., assign=True)``)."""

    def _apply(self, fn, recurse=True):
        result = super()._apply(fn, recurse)
        _refill_compartment_index(self)
        return result

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        _refill_compartment_index(self)


def _option_kwargs(module: nn.Module, like: Tensor) -> Dict[str, object]:
    """The functional keywords of a module's options (only the non-default ones); ``like``: a weight."""
    kw: Dict[str, object] = {"num_compartments": module.num_compartments}
    if module.activation != "tanh":
        kw["activation"] = module.activation
    if len(set(module.compartment_sizes)) > 1:
        kw["compartment_sizes"] = module.compartment_sizes
    if module.compartment_dropout:
        kw["compartment_dropout"] = module.compartment_dropout
    index = module.compartment_of
    if index is not None:  # [d]; rebuilt if the weights were replaced without it (e.g. swapped in by hand)
        kw["compartment_of"] = index if index.device == like.device else Fd.compartment_index(
            module.compartment_sizes, like.device)
    return kw


def _register_decay_rate(module: nn.Module, name: str, hidden_size: int, factory: Dict[str, object]) -> Optional[str]:
    """With time decay, register the cell's ``decay_rate [d]`` as ``name``; return the name (else None)."""
    if not module.time_decay:
        return None
    module.register_parameter(name, nn.Parameter(torch.empty(hidden_size, **factory)))
    return name


def _options_repr(module: nn.Module) -> str:
    s = ""
    if module.activation != "tanh":
        s += f", activation={module.activation!r}"
    if len(set(module.compartment_sizes)) > 1:
        s += f", compartment_sizes={list(module.compartment_sizes)}"
    if module.compartment_attention:
        s += ", compartment_attention=True"
    if module.compartment_dropout:
        s += f", compartment_dropout={module.compartment_dropout}"
    if module.time_decay:
        s += ", time_decay=True"
    return s


class DIRUCell(_Cells):
    """One DIRU step with the ``torch.nn.GRUCell`` conventions.

    ``forward(input [B, n] or [n], hx [B, d] or [d] or None) -> h' [B, d] or [d]``.

    Parameters (fused layout, :mod:`diru_fast.weights`): ``weight_ih [3d, n]``, ``weight_hh [3d, d]``,
    ``weight_int [d, d]``, ``weight_out [d, d]`` and, with ``bias``, ``bias_ih [3d]``, ``bias_int [d]``,
    ``bias_out [d]``; with ``time_decay``, ``decay_rate [d]`` and ``forward(input, hx, dt=None)``
    (``dt [B]`` or a scalar unbatched: the time since the previous step; None: 1). ``load_state_dict``
    also reads the prototype's cell keys (``compartments.{c}.W_x.weight``, ...).
    """

    __prepare_scriptable__ = _tracing.refuse_script  # see DIRULayer

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None, *,
                 num_compartments: Optional[int] = None, backend: str = "auto", activation: str = "tanh",
                 compartment_sizes: Optional[Sequence[int]] = None, compartment_attention: bool = False,
                 compartment_dropout: float = 0.0, time_decay: bool = False):
        super().__init__()
        sizes = _setup_options(self, input_size, hidden_size, num_compartments, compartment_sizes, activation,
                               compartment_attention, compartment_dropout, device, time_decay)
        self.compartment_size = sizes[0] if len(set(sizes)) == 1 else None  # None: unequal sizes
        input_size, hidden_size = self.input_size, self.hidden_size
        self.bias = v.check_bool("bias", bias)
        self.backend = check_backend_name(backend)
        self._names = _register_cell(self, "", input_size, hidden_size, bias, {"device": device, "dtype": dtype},
                                     none_for_no_bias=True, attention=len(sizes) if compartment_attention else 0)
        self._decay_name = _register_decay_rate(self, "decay_rate", hidden_size, {"device": device, "dtype": dtype})
        if self._decay_name is None:
            self.register_parameter("decay_rate", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw the parameters as the prototype's cell does (same numbers after the same seed)."""
        _refill_compartment_index(self)
        init_prototype_(self.cell_weights(), self.compartment_sizes)
        if self.decay_rate is not None:
            init_decay_rate_(self.decay_rate)

    def cell_weights(self) -> CellWeights:
        """The tensors the forward uses, in the fused layout."""
        return _cell_weights(self, self._names)

    def _prototype_cells(self) -> List[PrototypeKeys]:
        return [cell_keys("", "", self.input_size, self.hidden_size, self.compartment_sizes, self.bias,
                          self.compartment_attention, self.time_decay)]

    def forward(self, input: Tensor, hx: Optional[Tensor] = None, dt: Optional[Tensor] = None) -> Tensor:
        weights = self.cell_weights()
        kw = _option_kwargs(self, weights.w_hh)
        if self.time_decay:
            kw["decay_rate"] = _read(self, self._decay_name)
        return Fd.diru_cell(input, weights, hx, backend=self.backend, training=self.training, dt=dt, **kw)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        return s + f", num_compartments={self.num_compartments}{_options_repr(self)}, backend={self.backend!r}"


class DIRULayer(_Cells):
    """A (multi-layer, optionally bidirectional) DIRU with the ``torch.nn.GRU`` conventions.

    ``forward(input, hx=None, lengths=None) -> (output, h_n)``:

    - input ``[T, B, n]`` (``[B, T, n]`` if ``batch_first``), unbatched ``[T, n]``, or a
      ``PackedSequence``; output likewise with ``directions * hidden_size`` features.
    - ``hx`` / ``h_n``: ``[num_layers * directions, B, hidden_size]`` (``h0=`` still works, deprecated).
    - ``lengths`` (or a PackedSequence): padded steps leave the state unchanged and give
      zero outputs; ``h_n`` is each sequence's state at its own last step.

    Parameters, per layer k and direction (suffix ``_reverse`` for the reverse one), as ``nn.GRU``
    names them plus DIRU's own somatic integration and output projection: ``weight_ih_l{k}``,
    ``weight_hh_l{k}``, ``weight_int_l{k}``, ``weight_out_l{k}``, ``bias_ih_l{k}``, ``bias_int_l{k}``,
    ``bias_out_l{k}`` (see :mod:`diru_fast.weights`); ``all_weights`` and ``_flat_weights_names`` list
    them. With ``time_decay``: ``decay_rate_l{k}`` (``_reverse``) ``[d]`` per cell, and
    ``forward(..., dt=None)`` takes the time since each step's previous observation, ``[T, B]``
    (``[B, T]`` if ``batch_first``; None: 1; any integer or floating dtype, converted to the
    parameters'). ``load_state_dict`` also reads the prototype-style keys of
    release 0.1 (``cells.{k}.compartments.{c}.W_x.weight``, ..., ``cells_reverse.{k}....``).

    Any ``hidden_size >= 1``: without ``num_compartments`` or ``compartment_sizes`` the cell has
    ``min(4, hidden_size)`` near-equal compartments (:func:`diru_fast.reference.default_compartment_sizes`;
    ``hidden_size=10``: sizes ``(3, 3, 2, 2)``); an explicit ``num_compartments`` must divide it. As
    ``nn.GRU``'s, the attributes ``mode`` (``"DIRU"``) and ``proj_size`` (0; another value is refused)
    are there for code that reads them. Sizes and probabilities may be NumPy numbers.
    """

    #: ``mode`` names the cell, as ``nn.GRU().mode == "GRU"`` (code that branches on ``mode == "LSTM"``
    #: sees a one-tensor state, as for a GRU).
    MODE = "DIRU"

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device=None, dtype=None, *, num_compartments: Optional[int] = None, backend: str = "auto",
                 check_finite: bool = False, activation: str = "tanh", compartment_sizes: Optional[Sequence[int]] = None,
                 compartment_attention: bool = False, compartment_dropout: float = 0.0, time_decay: bool = False,
                 proj_size: int = 0):
        super().__init__()
        sizes = _setup_options(self, input_size, hidden_size, num_compartments, compartment_sizes, activation,
                               compartment_attention, compartment_dropout, device, time_decay)
        input_size, hidden_size = self.input_size, self.hidden_size
        if v.check_int("proj_size", proj_size, minimum=0) != 0:
            raise ValueError(f"proj_size={proj_size}: DIRU has no output projection of the state (as nn.GRU, "
                             f"which supports proj_size only for nn.LSTM); use proj_size=0")
        self.proj_size = 0
        self.mode = self.MODE
        self.num_layers = num_layers = v.check_int("num_layers", num_layers)
        self.bias = v.check_bool("bias", bias)
        self.batch_first = v.check_bool("batch_first", batch_first)
        self.dropout = v.check_dropout(dropout)
        self.bidirectional = v.check_bool("bidirectional", bidirectional)
        self.backend = check_backend_name(backend)
        self.check_finite = v.check_bool("check_finite", check_finite)
        if self.dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout={dropout} acts between layers: with num_layers=1 there is none "
                          f"(as in nn.GRU, dropout expects num_layers > 1)", UserWarning, stacklevel=2)
        factory = {"device": device, "dtype": dtype}
        directions = 2 if bidirectional else 1
        self._names: List[List[Tuple[Optional[str], ...]]] = []  # [layer][direction], ROLES order
        self._flat_weights_names: List[str] = []
        self._all_weights: List[List[str]] = []
        self._decay_names: List[List[Optional[str]]] = []  # [layer][direction]
        for layer in range(num_layers):
            n = input_size if layer == 0 else hidden_size * directions
            per_layer = []
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                per_layer.append(_register_cell(self, suffix, n, hidden_size, bias, factory, none_for_no_bias=False,
                                                attention=len(sizes) if compartment_attention else 0))
                names = [role + suffix for role in _PARAM_ORDER if bias or not role.startswith("bias")]
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
            self._names.append(per_layer)
            self._decay_names.append([_register_decay_rate(self, f"decay_rate_l{layer}" + ("_reverse" if direction else ""),
                                                           hidden_size, factory) for direction in range(directions)])
        self.reset_parameters()

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    def reset_parameters(self) -> None:
        """Draw every layer's parameters as the prototype's cells do, in release 0.1's order (each
        forward layer, then each reverse one), so a seed gives the same numbers as before."""
        _refill_compartment_index(self)
        for direction in range(self.num_directions):
            for layer in range(self.num_layers):
                init_prototype_(self.cell_weights(layer, direction), self.compartment_sizes)
        for name in (n for per_layer in self._decay_names for n in per_layer if n is not None):
            init_decay_rate_(getattr(self, name))

    def cell_weights(self, layer: int = 0, direction: int = 0) -> CellWeights:
        """The tensors the forward uses for one layer and direction, in the fused layout."""
        return _cell_weights(self, self._names[layer][direction])

    @property
    def _flat_weights(self) -> List[Tensor]:
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> List[List[Tensor]]:
        """Per layer and direction, its parameters (``nn.GRU.all_weights``)."""
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """Kept for code written for ``nn.GRU``: the parameters already are the tensors the kernels
        read, so there is nothing to compact."""

    def _prototype_cells(self) -> List[PrototypeKeys]:
        cells = []
        for layer in range(self.num_layers):
            n = self.input_size if layer == 0 else self.hidden_size * self.num_directions
            for direction, (src, suffix) in enumerate((("cells", ""), ("cells_reverse", "_reverse"))):
                if direction < self.num_directions:
                    cells.append(cell_keys(f"{src}.{layer}.", f"_l{layer}{suffix}", n, self.hidden_size,
                                           self.compartment_sizes, self.bias, self.compartment_attention,
                                           self.time_decay))
        return cells

    def forward(self, input: Union[Tensor, PackedSequence], hx: Optional[Tensor] = None,
                lengths: Lengths = None, *, h0: Optional[Tensor] = None,
                dt: Union[Tensor, PackedSequence, None] = None) -> Tuple[Union[Tensor, PackedSequence], Tensor]:
        if h0 is not None:
            warnings.warn("DIRULayer(..., h0=...) is deprecated: pass the initial state as hx, as for nn.GRU",
                          FutureWarning, stacklevel=2)
            if hx is not None:
                raise v.InvalidInputError("pass the initial state once: hx or h0, not both")
            hx = h0
        weights = [[_cell_weights(self, names) for names in per_layer] for per_layer in self._names]
        kw = _option_kwargs(self, weights[0][0].w_hh)
        if self.time_decay:
            kw["decay_rates"] = [[_read(self, name) for name in per_layer] for per_layer in self._decay_names]
        return Fd.diru(input, weights, hx, lengths, batch_first=self.batch_first, dropout=self.dropout,
                       training=self.training, backend=self.backend, check_finite=self.check_finite, dt=dt, **kw)

    # torch.jit.script cannot compile the forward; it asks this first and gets the supported paths
    __prepare_scriptable__ = _tracing.refuse_script

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s + f", num_compartments={self.num_compartments}{_options_repr(self)}, backend={self.backend!r}"


class DIRU(WritesPrototypeKeys, LoadsPrototypeKeys):
    """The prototype's model on the fast path: stacked DIRU layers and a linear head.

    ``model(x)`` with ``x: [B, T, n]`` returns ``[B, output_size]`` from the last layer's
    last state, or ``[B, T, output_size]`` with ``return_sequences=True`` (constructor
    default, overridable per call). ``lengths`` takes each sequence's own last state. With
    ``time_decay=True``, ``model(x, dt=dt)`` takes ``dt: [B, T]``, the time since each step's previous
    observation (None: 1); each cell's ``decay_rate`` is saved as ``cells.{l}.decay_rate``.

    Submodules: ``rnn`` (a batch-first :class:`DIRULayer`) and ``fc_out``. ``state_dict()`` writes the
    prototype's keys (``cells.{l}.compartments.{c}.W_x.weight``, ..., ``fc_out.{weight,bias}``), so
    its checkpoints load into the prototype and :mod:`diru_fast.reference`; ``load_state_dict`` reads
    those and the fused keys of ``named_parameters()`` (``rnn.weight_ih_l0``, ...).
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int, num_compartments: Optional[int] = None,
                 num_layers: int = 1, return_sequences: bool = False, *, backend: str = "auto",
                 check_finite: bool = False, device=None, dtype=None, activation: str = "tanh",
                 compartment_sizes: Optional[Sequence[int]] = None, compartment_attention: bool = False,
                 compartment_dropout: float = 0.0, time_decay: bool = False):
        super().__init__()
        output_size = v.check_int("output_size", output_size)
        num_layers = v.check_int("num_layers", num_layers)
        reference.check_sizes(input_size, hidden_size, 1)
        self.input_size = input_size = int(input_size)
        self.hidden_size = hidden_size = int(hidden_size)
        self.output_size = output_size
        self.num_layers = num_layers
        self.return_sequences = v.check_bool("return_sequences", return_sequences)
        self.rnn = DIRULayer(input_size, hidden_size, num_layers, batch_first=True, device=device, dtype=dtype,
                             num_compartments=num_compartments, backend=backend, check_finite=check_finite,
                             activation=activation, compartment_sizes=compartment_sizes,
                             compartment_attention=compartment_attention, compartment_dropout=compartment_dropout,
                             time_decay=time_decay)
        self.num_compartments = self.rnn.num_compartments
        self.fc_out = nn.Linear(hidden_size, output_size, device=device, dtype=dtype)

    @property
    def backend(self) -> str:
        return self.rnn.backend

    @backend.setter
    def backend(self, name: str) -> None:
        self.rnn.backend = check_backend_name(name)

    @property
    def check_finite(self) -> bool:
        return self.rnn.check_finite

    @check_finite.setter
    def check_finite(self, value: bool) -> None:
        self.rnn.check_finite = v.check_bool("check_finite", value)

    def _prototype_cells(self) -> List[PrototypeKeys]:
        cells = []
        for layer in range(self.num_layers):
            keys = cell_keys(f"cells.{layer}.", f"_l{layer}", self.input_size if layer == 0 else self.hidden_size,
                             self.hidden_size, self.rnn.compartment_sizes, True, self.rnn.compartment_attention,
                             self.rnn.time_decay)
            cells.append(keys._replace(dst={role: "rnn." + name for role, name in keys.dst.items()}))
        return cells

    def forward(self, x: Tensor, lengths: Lengths = None, return_sequences: Optional[bool] = None,
                dt: Optional[Tensor] = None) -> Tensor:
        # x: [B, T, n], dt: [B, T] or None -> [B, output_size] (or [B, T, output_size])
        if not isinstance(x, Tensor) or x.dim() != 3:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise v.InvalidInputError(f"DIRU expects x of shape (batch, seq, input_size), got {shape}")
        output, h_n = self.rnn(x, lengths=lengths, dt=dt)
        if self.return_sequences if return_sequences is None else return_sequences:
            return self.fc_out(output)  # [B, T, output_size]
        return self.fc_out(h_n[-1])  # [B, output_size]

    __prepare_scriptable__ = _tracing.refuse_script  # see DIRULayer

    def extra_repr(self) -> str:
        return f"return_sequences={self.return_sequences}" if self.return_sequences else ""

