"""Functional DIRU: validate, pick the backend, run layers and directions.

- :func:`diru_scan` — one layer, one direction, time-major: ``x: [T, B, n] -> hs: [T, B, d]``.
- :func:`diru` — the ``torch.nn.GRU``-style stack (what :class:`~diru_fast.DIRULayer` runs):
  layers, directions, dropout, lengths, PackedSequence, batch_first and unbatched input.
- :func:`diru_cell` — one step, like ``torch.nn.GRUCell``.

Weights come in the fused layout of :mod:`diru_fast.weights`. Except on the "reference" backend,
the input projections of all steps are one GEMM (``F.linear`` over [T, B, n]) before the
recurrence; the recurrence runs on the kernel contract (:mod:`diru_fast.scan.contract`, backend
"torch") or on a compiled kernel, through :func:`diru_fast.scan.ops.scan`, which also picks its form
while ``torch.compile``, ``torch.export``, ONNX or ``torch.jit.trace`` trace it.

**Autocast.** DIRU is on autocast's float32 list: inside ``torch.autocast`` (CPU or CUDA, any
dtype), :func:`diru` and :func:`diru_scan` cast their floating-point inputs, state and weights that
are not float64 to float32 and run with autocast off. So a DIRU layer under autocast computes what
it computes without it, for a float32 model: the same numbers and float32 outputs and states (a
16-bit input, e.g. from an autocast layer before it, is accepted), and gradients reach the
parameters in their own dtype. The custom ops declare the same rule
(:mod:`diru_fast.scan.ops`), so compiled and exported graphs run under autocast too.

**Options** (docs/THEORY.md §1.2–1.6; every function takes them as keywords, the defaults give the
plain cell):

- ``activation="tanh" | "relu"``: the compartment nonlinearity;
- ``compartment_sizes=[m_0, ..., m_{k-1}]``: unequal compartments summing to d (``num_compartments``
  then defaults to k; a different one is a ValueError);
- attention over the compartments is on when the weights hold its k rows (``w_ih [3d+k, n]``,
  ``w_hh [3d+k, d]``, ``b_ih [3d+k]``, :mod:`diru_fast.weights`);
- ``compartment_dropout=p`` with ``training=True``: inverted dropout on the compartment outputs.
  The mask ``[T, B, d]`` (values 0 or 1/(1-p), acc dtype) is one seed drawn with torch's CPU generator
  and a counter-based hash of (seed, step, row, unit) (:mod:`diru_fast.scan.dropout`; the C++ CPU
  kernel evaluates it in its step, the other paths take its tensor, :func:`draw_compartment_mask`),
  one draw per layer and direction, in the order layer 0 forward,
  layer 0 reverse, layer 1 forward, ...; row t of a direction's mask applies to the t-th step that
  direction runs (for the reverse direction: counted from each sequence's last step). Every
  backend, "reference" included, applies the same mask, so one seed gives the same numbers on all.

**Time decay** (irregular series, docs/THEORY.md §1.6): given a cell's ``decay_rate`` (lambda, ``[d]``),
each step first decays the state with the time since the previous observation,
``h <- exp(-softplus(lambda) * dt_t) * h``, and runs on the decayed state. ``dt`` is ``[T, B]`` for
:func:`diru_scan`, ``[T, B]`` or ``[B, T]`` (``batch_first``) for :func:`diru`, ``[B]`` for
:func:`diru_cell`; None means 1 everywhere; it must be finite and >= 0 (ValueError), and ``dt``
without ``decay_rate`` is a ValueError. Any integer or floating ``dt`` is converted to the weights'
dtype (an integer or float32 ``dt`` on float64 weights: exactly); a bool or complex one is a
TypeError. Under ``torch.func.vmap`` over ``dt`` an invalid gap cannot raise: it becomes NaN, so
that sample's outputs are NaN. Padded steps do not decay the state (their ``dt`` is not
read). The reverse direction of a bidirectional layer crosses the gap ``dt_{t+1}`` when it moves from
step t+1 to step t, and does not decay its initial state. The factors
(:func:`diru_fast.scan.contract.decay_factor`) are formed inside the step by the C++ CPU kernel (from
lambda and dt), once per layer and direction ``[T, B, d]`` for the other backends.

A compiled backend runs a call only if it fuses every option the call uses (its provider's
``OPTIONS``); else "auto" falls back to "torch" with one warning and an explicit backend raises
(:func:`diru_fast.backends.resolve_backend`).
"""

from __future__ import annotations

import functools
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence
from torch.utils._pytree import tree_map

from . import _tracing
from . import _validation as v
from .backends import get_provider, resolve_backend
from .providers import options_in_use
from .reference import check_options
from .scan import ops
from .scan.contract import acc_dtype, decay_factor
from .scan.dropout import CompartmentMask, as_tensor
from .scan.reference_scan import reference_scan
from .weights import CellWeights, attention_rows

__all__ = ["diru", "diru_scan", "diru_cell", "draw_compartment_mask", "compartment_index"]

Lengths = Union[Tensor, Sequence[int], None]


class _Options(NamedTuple):
    """One call's options, validated: the compartment sizes, the activation, ``compartment_of``
    (``[d]`` int64 when attention is on, else None) and the dropout probability in effect (0 in eval)."""

    sizes: Tuple[int, ...]
    activation: str
    compartment_of: Optional[Tensor]
    dropout: float

    def used(self, like: Tensor):
        """The options this call needs from a backend (diru_fast.providers.options_in_use)."""
        if self.activation == "tanh" and self.compartment_of is None and not self.dropout:
            return frozenset()
        return options_in_use(self.activation, self.compartment_of, like if self.dropout else None)


def compartment_index(compartment_sizes: Sequence[int], device=None) -> Tensor:
    """``compartment_of [d]`` int64: the compartment of each unit, for sizes ``[m_0, ..., m_{k-1}]``."""
    units = [c for c, m in enumerate(compartment_sizes) for _ in range(m)]  # from a list: works on "meta" too
    return torch.tensor(units, dtype=torch.int64, device=device)


def draw_compartment_mask(steps: int, batch: int, hidden_size: int, p: float, dtype: torch.dtype,
                          device) -> Tensor:
    """A compartment-dropout mask ``[T, B, d]``: each element 1/(1-p) with probability 1-p, else 0,
    in ``dtype``: one seed drawn with torch's CPU generator and a counter-based hash of (seed, step,
    row, unit) (:mod:`diru_fast.scan.dropout`; the layers draw the same, lazily)."""
    return CompartmentMask.draw(steps, batch, hidden_size, p, dtype, device).tensor()


def _check_options(w: CellWeights, num_compartments: Optional[int], compartment_sizes: Optional[Sequence[int]],
                   activation: str, compartment_dropout: float, training: bool,
                   compartment_of: Optional[Tensor]) -> _Options:
    d = int(w.hidden_size)  # an int also while jit.trace records sizes
    if num_compartments is None and compartment_sizes is None:
        num_compartments = 1
    if (activation == "tanh" and compartment_sizes is None and not compartment_dropout and compartment_of is None
            and isinstance(num_compartments, int) and int(w.w_hh.shape[0]) == 3 * d):
        return _Options(check_options(d, num_compartments, None), "tanh", None, 0.0)  # the plain cell
    sizes = check_options(d, num_compartments, compartment_sizes, activation, compartment_dropout)
    k = int(attention_rows(w))
    if k and k != len(sizes):
        raise ValueError(f"the weights hold {k} attention rows (w_hh [3d+{k}, d]) but the cell has {len(sizes)} "
                         f"compartments")
    if k and compartment_of is None:
        compartment_of = compartment_index(sizes, w.w_hh.device)
    elif k:
        _check_compartment_of(compartment_of, d, w.w_hh)
    return _Options(sizes, activation, compartment_of if k else None,
                    float(compartment_dropout) if training else 0.0)


def _check_compartment_of(index: object, d: int, like: Tensor) -> None:
    """A given ``compartment_of`` must be a ``[d]`` int64 tensor on the weights' device (its values are
    checked by the kernels; :func:`compartment_index` builds it)."""
    if not isinstance(index, Tensor) or index.dtype != torch.int64 or tuple(index.shape) != (d,):
        got = f"{index.dtype} {tuple(index.shape)}" if isinstance(index, Tensor) else type(index).__name__
        raise v.InvalidInputError(f"compartment_of must be an int64 tensor of shape ({d},) (compartment_index(sizes)), "
                                  f"got {got}")
    if index.device != like.device:
        raise v.InvalidInputError(f"compartment_of is on {index.device} but the weights are on {like.device}; build "
                                  f"it there (compartment_index(sizes, device)); a module rebuilds its own when its "
                                  f"tensors move or load")


def _to_float32(t):
    if isinstance(t, Tensor) and t.is_floating_point() and t.dtype != torch.float64:
        return t.float()
    return t


def float32_under_autocast(fn):
    """Run ``fn(input, ...)`` as autocast runs the ops of its float32 list: when autocast is on for
    the input's device type, floating-point tensor arguments other than float64 ones (the input, a
    PackedSequence's data, the state, every weight) are cast to float32 and ``fn`` runs with autocast
    off. Outside autocast it is ``fn``."""

    @functools.wraps(fn)
    def wrapper(input, *args, **kwargs):
        data = input.data if isinstance(input, PackedSequence) else input
        device_type = data.device.type if isinstance(data, Tensor) else None
        if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
            return fn(input, *args, **kwargs)
        input, args, kwargs = tree_map(_to_float32, (input, args, kwargs))
        with torch.autocast(device_type, enabled=False):
            return fn(input, *args, **kwargs)

    return wrapper


@float32_under_autocast
def diru_scan(
    x: Tensor,  # [T, B, n]
    weights: CellWeights,
    h0: Optional[Tensor] = None,  # [B, d]
    lengths: Lengths = None,  # [B]
    *,
    num_compartments: Optional[int] = None,
    backend: str = "auto",
    activation: str = "tanh",
    compartment_sizes: Optional[Sequence[int]] = None,
    compartment_dropout: float = 0.0,
    training: bool = False,
    compartment_of: Optional[Tensor] = None,
    decay_rate: Optional[Tensor] = None,  # [d]: time decay's lambda
    dt: Optional[Tensor] = None,  # [T, B]
) -> Tensor:  # hs: [T, B, d]; steps past a sequence's length repeat its last state
    """One layer and direction over a whole (time-major) sequence. ``num_compartments`` (default 1,
    or ``len(compartment_sizes)``) and the options: see the module docstring (``compartment_of``: a
    precomputed ``[d]`` index of ``compartment_sizes``, e.g. a module's buffer; ``decay_rate`` and
    ``dt``: time decay)."""
    _tracing.check_exportable()
    x = v.check_input(x, "x", (3,))
    v.check_feature_size(x, "x", weights.input_size)
    v.check_matches_params(x, "x", weights.w_hh)
    steps, batch, _ = x.shape
    if steps == 0:
        raise v.InvalidInputError("x has an empty sequence (T=0): there is no step to run")
    d = weights.hidden_size
    v.check_state(h0, "h0", (batch, d), weights.w_hh)
    lengths = v.check_lengths(lengths, steps, batch, x.device)
    opts = _check_options(weights, num_compartments, compartment_sizes, activation, compartment_dropout, training,
                          compartment_of)
    dt = _check_decay(decay_rate, dt, (steps, batch), weights, lengths)
    resolved = "torch" if batch == 0 else resolve_backend(backend, x.device, x.dtype, _used(opts, x, decay_rate))
    if lengths is not None:
        x = x.masked_fill(_padding(lengths, steps).unsqueeze(2), 0.0)
    mask = _mask(opts, x, d)
    return _run_layer(x, weights, h0, lengths, opts, resolved, mask, decay_rate, dt)


def _used(opts: _Options, like: Tensor, decay_rate: Optional[Tensor]):
    """The options a call needs from a backend, time decay included."""
    used = opts.used(like)
    return used | {"time_decay"} if decay_rate is not None else used


def _check_decay(decay_rate: Optional[Tensor], dt: Optional[Tensor], shape: Tuple[int, ...], w: CellWeights,
                 lengths: Optional[Tensor]) -> Optional[Tensor]:
    """Validate time decay's arguments; return ``dt`` (``shape``, the weights' dtype, 0 on padded
    steps) or None (``dt`` None: 1 everywhere, formed by :func:`_direction_dt`)."""
    if decay_rate is None:
        if dt is not None:
            raise v.InvalidInputError("dt was given but time decay is off (construct the module with "
                                      "time_decay=True, or pass decay_rate)")
        return None
    d = w.hidden_size
    if not isinstance(decay_rate, Tensor) or tuple(decay_rate.shape) != (d,):
        got = tuple(decay_rate.shape) if isinstance(decay_rate, Tensor) else type(decay_rate).__name__
        raise v.InvalidInputError(f"decay_rate must be a tensor of shape ({d},), got {got}")
    v.check_matches_params(decay_rate, "decay_rate", w.w_hh)
    if dt is None:
        return None
    live = None if lengths is None else ~_padding(lengths, shape[0]) if len(shape) == 2 else None
    dt = v.check_dt(dt, shape, w.w_hh, live)
    return dt if live is None else dt.masked_fill(~live, 0.0)


def _direction_dt(dt: Optional[Tensor], steps: int, batch: int, lengths: Optional[Tensor], like: Tensor,
                  reverse: bool = False) -> Tensor:
    """The gap each step of one direction decays by, ``[T, B]`` in that direction's step order (0 on
    padded steps; ``dt`` None: 1). The reverse direction moves from step t+1 to step t, so it crosses
    ``dt_{t+1}`` there, and nothing at its first step (each sequence's last: ``dt_L`` is padding or
    past the end)."""
    if dt is None:
        dt = like.new_ones(steps, batch)
        if lengths is not None:
            dt = dt.masked_fill(_padding(lengths, steps), 0.0)
    if reverse:
        # [T, B]: dt_{t+1} at row t, 0 at row T-1 (a roll, not cat(dt[1:], 0): the slice's T-1 rows
        # made export specialise a dynamic T)
        last = torch.arange(steps, device=dt.device).unsqueeze(1) == steps - 1  # [T, 1]
        ahead = dt.roll(-1, 0).masked_fill(last, 0.0)
        dt = _reverse(ahead.unsqueeze(2), lengths).squeeze(2)
    return dt


def _mask(opts: _Options, x: Tensor, d: int) -> Optional[Tensor]:
    # x: [T, B, n] -> the compartment-dropout mask [T, B, d] in acc (lazy: its seed), or None
    if not opts.dropout:
        return None
    return CompartmentMask.draw(x.shape[0], x.shape[1], d, opts.dropout, acc_dtype(x.dtype), x.device)


def _padding(lengths: Tensor, steps: int) -> Tensor:  # [T, B] bool, True on padded steps
    return torch.arange(steps, device=lengths.device).unsqueeze(1) >= lengths.unsqueeze(0)


def _run_layer(x: Tensor, w: CellWeights, h0: Optional[Tensor], lengths: Optional[Tensor],
               opts: _Options, backend: str, mask: Optional[Tensor] = None, decay_rate: Optional[Tensor] = None,
               dt: Optional[Tensor] = None, reverse: bool = False) -> Tensor:
    # x: [T, B, n] (padded steps already zero), mask: [T, B, d] or None, decay_rate: [d] or None,
    # dt: [T, B] (0 on padded steps) or None -> hs: [T, B, d]
    batch, d = x.shape[1], w.hidden_size
    decay = None  # time decay: (lambda, dt) in acc, the factors formed by ops.scan or the kernel
    if decay_rate is not None:
        dt = _direction_dt(dt, x.shape[0], batch, lengths, decay_rate, reverse)  # [T, B]
        acc = acc_dtype(x.dtype)
        decay = (decay_rate.to(acc), dt.to(acc))
        if x.shape[0] == 1:  # one step (every row live): decay the state, then the plain step
            if h0 is not None:
                h0 = (h0 * decay_factor(*decay)[0]).to(h0.dtype)
            decay = None
        elif backend == "reference" and _tracing.mode() == "eager":
            # the reference cell forms the factors itself, from its own statement of the decay
            return reference_scan(x, w, h0 if h0 is not None else x.new_zeros(batch, d), lengths, opts.sizes,
                                  opts.activation, as_tensor(mask), decay_rate, dt)
    plain = opts.activation == "tanh" and opts.compartment_of is None
    # the kernels' own inference paths take the options as keywords, passed only when one is on
    kw = {} if plain else {"activation": opts.activation, "compartment_of": opts.compartment_of}
    if x.shape[0] == 1 and lengths is None and mask is None and decay is None:  # one step, e.g. streaming
        step = _fused_step(backend, x[0], w, h0)
        if step is not None:
            return step(x[0], h0, w.w_ih, w.b_ih, w.w_hh, w.w_int, w.b_int, w.w_out, w.b_out, **kw).unsqueeze(0)
    if h0 is None:
        h0 = x.new_zeros(batch, d)
    projecting = None if mask is not None else _fused_step(backend, x, w, h0, "scan_fwd_x", decay)
    if projecting is not None:  # inference on a kernel that projects each step's input itself
        b_int = w.b_int if w.b_int is not None else w.w_int.new_zeros(d)
        b_out = w.b_out if w.b_out is not None else w.w_out.new_zeros(d)
        if decay is not None:
            kw = {"activation": opts.activation, "compartment_of": opts.compartment_of, "decay_rate": decay[0],
                  "dt": decay[1]}
        return projecting(x, h0, w.w_ih, w.b_ih, w.w_hh, w.w_int, b_int, w.w_out, b_out, lengths, **kw)
    mode = _tracing.mode()  # first: under the TorchScript-based ONNX exporter it raises, naming what works
    if backend == "reference" and mode == "eager":
        return reference_scan(x, w, h0, lengths, opts.sizes, opts.activation, as_tensor(mask))
    # (traced, "reference" runs as "torch": the same function, see diru_fast.scan.ops.scan)
    # [T, B, 3d+k]: the x-projections of all steps, one GEMM. A time-major view of batch-first input
    # is made contiguous first: F.linear on the strided view falls back to a batched matmul
    # (measured 2x slower than copying x, which is the smallest tensor here). Under autocast
    # (float32_under_autocast) the layer runs in float32 with autocast off; a caller that enters
    # without it gets the GEMM's lower-precision result cast back to the parameters' dtype.
    xp = F.linear(x.contiguous(), w.w_ih, w.b_ih)
    if xp.dtype != w.w_hh.dtype:
        xp = xp.to(w.w_hh.dtype)
    b_int = w.b_int if w.b_int is not None else w.w_int.new_zeros(d)
    b_out = w.b_out if w.b_out is not None else w.w_out.new_zeros(d)
    if plain and mask is None and decay is None:
        return ops.scan(xp, h0, w.w_hh, w.w_int, b_int, w.w_out, b_out, lengths, backend)
    return ops.scan(xp, h0, w.w_hh, w.w_int, b_int, w.w_out, b_out, lengths, backend, opts.activation,
                    opts.compartment_of, mask, *((None,) + decay if decay is not None else ()))


def _reverse(x: Tensor, lengths: Optional[Tensor]) -> Tensor:
    """Reverse each sequence within its own length; padded steps stay where they are."""
    if lengths is None:
        return x.flip(0)
    steps = x.shape[0]
    t = torch.arange(steps, device=x.device).unsqueeze(1)  # [T, 1]
    index = torch.where(t < lengths.unsqueeze(0), lengths.unsqueeze(0) - 1 - t, t)  # [T, B]
    return x.gather(0, index.unsqueeze(2).expand_as(x))


@float32_under_autocast
def diru(
    input: Union[Tensor, PackedSequence],
    weights: Sequence[Sequence[CellWeights]],
    hx: Optional[Tensor] = None,
    lengths: Lengths = None,
    *,
    batch_first: bool = False,
    dropout: float = 0.0,
    training: bool = False,
    num_compartments: Optional[int] = None,
    backend: str = "auto",
    check_finite: bool = False,
    activation: str = "tanh",
    compartment_sizes: Optional[Sequence[int]] = None,
    compartment_dropout: float = 0.0,
    compartment_of: Optional[Tensor] = None,
    decay_rates: Optional[Sequence[Sequence[Tensor]]] = None,
    dt: Union[Tensor, PackedSequence, None] = None,
) -> Tuple[Union[Tensor, PackedSequence], Tensor]:
    """A multi-layer (optionally bidirectional) DIRU over a sequence, ``torch.nn.GRU``-style.

    Args:
        input: ``[T, B, n]`` (``[B, T, n]`` if ``batch_first``), unbatched ``[T, n]``, or a
            ``PackedSequence``.
        weights: ``weights[layer][direction]`` in the fused layout; layer l > 0 takes
            ``directions * d`` inputs.
        hx: the initial state ``[layers * directions, B, d]`` (``[layers * directions, d]``
            unbatched); zeros if None.
        lengths: ``[B]`` valid steps per sequence (1..T). Padded steps leave the state
            unchanged and give zero outputs; ``h_n`` is each sequence's state at its own
            last step (for the reverse direction: after its first step).
        dropout: dropout on the outputs of every layer but the last, when ``training``.
        check_finite: raise ValueError if the input holds NaN/Inf (costs a device sync).
            Without it, NaN/Inf propagate to the outputs of the affected sequences only.
        num_compartments, activation, compartment_sizes, compartment_dropout, compartment_of:
            the options, see the module docstring (the same for every layer; compartment dropout
            acts when ``training``).
        decay_rates: time decay: ``decay_rates[layer][direction]`` (lambda ``[d]``), or None (off).
        dt: the time since each step's previous observation, ``[T, B]`` (``[B, T]`` if
            ``batch_first``; ``[T]`` unbatched; a PackedSequence packed like ``input``); None: 1.

    Returns:
        ``(output, h_n)``: output ``[T, B, directions * d]`` (batch-first / unbatched /
        packed like the input), ``h_n: [layers * directions, B, d]``.
    """
    _tracing.check_exportable()
    num_layers = len(weights)
    if num_layers == 0:
        raise ValueError("weights must hold at least one layer")
    directions = len(weights[0])
    if directions not in (1, 2) or any(len(w) != directions for w in weights):
        raise ValueError("weights[layer] must hold 1 or 2 directions, the same for every layer")
    first = weights[0][0]
    d = first.hidden_size

    packed = isinstance(input, PackedSequence)
    unbatched = False
    if packed:
        if lengths is not None:
            raise v.InvalidInputError("pass either a PackedSequence or lengths, not both")
        x, lengths = pad_packed_sequence(input)  # [T, B, n] in the caller's batch order
        if dt is not None:
            if not isinstance(dt, PackedSequence) or not _packed_alike(dt, input):
                raise v.InvalidInputError("with a PackedSequence input, dt must be a PackedSequence packed the "
                                          "same way (the same lengths in the same order: equal batch_sizes and "
                                          "sorted_indices)")
            dt = pad_packed_sequence(dt)[0]  # [T, B]
    else:
        if isinstance(dt, PackedSequence):
            raise v.InvalidInputError("dt is a PackedSequence but the input is not")
        x = v.check_input(input, "input", (2, 3))
        unbatched = x.dim() == 2
        if unbatched:
            if lengths is not None:
                raise v.InvalidInputError("lengths needs batched input (an unbatched sequence has one length)")
            x = x.unsqueeze(1)
            if isinstance(dt, Tensor) and dt.dim() == 1:
                dt = dt.unsqueeze(1)  # [T] -> [T, 1]
        elif batch_first:
            x = x.transpose(0, 1)
            if isinstance(dt, Tensor) and dt.dim() == 2:
                dt = dt.transpose(0, 1)  # [B, T] -> [T, B]
    v.check_feature_size(x, "input", first.input_size)
    v.check_matches_params(x, "input", first.w_hh)
    steps, batch, _ = x.shape
    if steps == 0:
        raise v.InvalidInputError("input has an empty sequence (T=0): there is no step to run")
    if hx is not None:
        if unbatched:
            v.check_state(hx, "hx", (num_layers * directions, d), first.w_hh)
            hx = hx.unsqueeze(1)
        else:
            v.check_state(hx, "hx", (num_layers * directions, batch, d), first.w_hh)
    lengths = v.check_lengths(lengths, steps, batch, x.device)
    if check_finite:
        v.check_finite(x, "input")
    opts = [[_check_options(w, num_compartments, compartment_sizes, activation, compartment_dropout, training,
                            compartment_of) for w in layer_weights] for layer_weights in weights]
    used = frozenset().union(*(o.used(x) for per_layer in opts for o in per_layer))
    if decay_rates is not None:
        if len(decay_rates) != num_layers or any(len(r) != directions for r in decay_rates):
            raise ValueError("decay_rates must hold one tensor per layer and direction, like weights")
        for layer_weights, layer_rates in zip(weights, decay_rates):
            for w, rate in zip(layer_weights, layer_rates):
                _check_decay(rate, None, (steps, batch), w, lengths)
        try:
            dt = _check_decay(decay_rates[0][0], dt, (steps, batch), first, lengths)
        except v.InvalidInputError as exc:
            if batch_first and not unbatched and "shape" in str(exc):
                raise v.InvalidInputError(f"dt must have shape {(batch, steps)} (batch_first: one gap per "
                                          f"sequence and step), got {tuple(dt.transpose(0, 1).shape)}") from None
            raise
        used = used | {"time_decay"}
    else:
        _check_decay(None, dt, (steps, batch), first, lengths)
    resolved = "torch" if batch == 0 else resolve_backend(backend, x.device, x.dtype, used)

    pad = None if lengths is None else _padding(lengths, steps).unsqueeze(2)  # [T, B, 1]
    h_n: List[Tensor] = []
    for layer, layer_weights in enumerate(weights):
        if pad is not None:
            x = x.masked_fill(pad, 0.0)
        outputs = []
        for direction, w in enumerate(layer_weights):
            state = None if hx is None else hx[layer * directions + direction]
            xin = x if direction == 0 else _reverse(x, lengths)
            o = opts[layer][direction]
            mask = _mask(o, xin, w.hidden_size)  # [T, B, d] or None; drawn in layer, direction order
            rate = None if decay_rates is None else decay_rates[layer][direction]
            hs = _run_layer(xin, w, state, lengths, o, resolved, mask, rate, dt, reverse=direction == 1)  # [T, B, d]
            h_n.append(hs[-1])  # padded steps repeat the state: the last row is h at its own end
            outputs.append(hs if direction == 0 else _reverse(hs, lengths))
        x = outputs[0] if directions == 1 else torch.cat(outputs, dim=2)
        if dropout > 0 and training and layer < num_layers - 1:
            x = F.dropout(x, p=dropout, training=True)
    if pad is not None:
        x = x.masked_fill(pad, 0.0)
    h_last = torch.stack(h_n)  # [L * D, B, d]

    if packed:
        return _repack(x, lengths, input), h_last
    if unbatched:
        return x.squeeze(1), h_last.squeeze(1)
    return (x.transpose(0, 1) if batch_first else x), h_last


def _packed_alike(a: PackedSequence, b: PackedSequence) -> bool:
    """Whether ``a`` and ``b`` hold sequences of the same lengths in the same order: the sorted
    lengths (``batch_sizes``) and the permutation to that order (``sorted_indices``, None: the
    identity) are equal."""
    if a.batch_sizes.shape != b.batch_sizes.shape or not torch.equal(a.batch_sizes, b.batch_sizes):
        return False

    def order(p: PackedSequence) -> Tensor:
        batch = int(p.batch_sizes[0]) if p.batch_sizes.numel() else 0
        return torch.arange(batch) if p.sorted_indices is None else p.sorted_indices.cpu()

    return torch.equal(order(a), order(b))


def _repack(x: Tensor, lengths: Tensor, like: PackedSequence) -> PackedSequence:
    """Pack ``x: [T, B, F]`` with the same batch order and sizes as the input ``like``."""
    order = like.sorted_indices
    if order is None:
        return pack_padded_sequence(x, lengths.cpu(), enforce_sorted=True)
    packed = pack_padded_sequence(x.index_select(1, order.to(x.device)),
                                  lengths.index_select(0, order.to(lengths.device)).cpu(),
                                  enforce_sorted=True)
    return PackedSequence(packed.data, packed.batch_sizes, like.sorted_indices, like.unsorted_indices)


@float32_under_autocast
def diru_cell(
    input: Tensor,  # [B, n] or [n]
    weights: CellWeights,
    hx: Optional[Tensor] = None,  # [B, d] or [d]
    *,
    num_compartments: Optional[int] = None,
    backend: str = "auto",
    activation: str = "tanh",
    compartment_sizes: Optional[Sequence[int]] = None,
    compartment_dropout: float = 0.0,
    training: bool = False,
    compartment_of: Optional[Tensor] = None,
    decay_rate: Optional[Tensor] = None,  # [d]: time decay's lambda
    dt: Optional[Tensor] = None,  # [B] or [] (unbatched); None: 1
) -> Tensor:  # h': [B, d] or [d]
    """One DIRU step, ``torch.nn.GRUCell``-style (the options: see the module docstring; the
    dropout mask is ``[1, B, d]``, one step's). With time decay the state ``hx`` first decays by
    ``exp(-softplus(decay_rate) * dt)``; the step then runs on any backend as the plain step."""
    _tracing.check_exportable()
    x = v.check_input(input, "input", (1, 2))
    v.check_feature_size(x, "input", weights.input_size)
    v.check_matches_params(x, "input", weights.w_hh)
    unbatched = x.dim() == 1
    if unbatched:
        x = x.unsqueeze(0)
    batch = x.shape[0]
    if hx is not None:
        if not isinstance(hx, Tensor):
            raise TypeError(f"hx must be a torch.Tensor or None, got {type(hx).__name__}")
        v.check_state(hx, "hx", (weights.hidden_size,) if unbatched else (batch, weights.hidden_size), weights.w_hh)
        hx = hx.unsqueeze(0) if unbatched else hx
    opts = _check_options(weights, num_compartments, compartment_sizes, activation, compartment_dropout, training,
                          compartment_of)
    if unbatched and isinstance(dt, Tensor) and dt.dim() == 0:
        dt = dt.unsqueeze(0)  # [] -> [1]
    dt = _check_decay(decay_rate, dt, (batch,), weights, None)
    if decay_rate is not None and hx is not None:  # [B, d]: the decayed state the step reads
        gap = dt if dt is not None else hx.new_ones(batch, dtype=decay_rate.dtype)
        hx = (hx * decay_factor(decay_rate, gap)).to(hx.dtype)
    resolved = "torch" if batch == 0 else resolve_backend(backend, x.device, x.dtype, opts.used(x))
    mask = _mask(opts, x.unsqueeze(0), weights.hidden_size)  # [1, B, d] or None
    plain = opts.activation == "tanh" and opts.compartment_of is None
    step = None if mask is not None else _fused_step(resolved, x, weights, hx)
    if step is not None:
        kw = {} if plain else {"activation": opts.activation, "compartment_of": opts.compartment_of}
        h = step(x, hx, weights.w_ih, weights.b_ih, weights.w_hh, weights.w_int, weights.b_int, weights.w_out,
                 weights.b_out, **kw)
    else:
        h = _run_layer(x.unsqueeze(0), weights, hx, None, opts, resolved, mask)[0]
    return h.squeeze(0) if unbatched else h


def _fused_step(backend: str, x: Tensor, w: CellWeights, hx: Optional[Tensor], name: str = "cell_step",
                decay: Optional[Tuple[Tensor, Tensor]] = None):
    """The provider's inference function ``name`` (``cell_step``: one step in one call; ``scan_fwd_x``:
    a sequence with the input projection inside the time loop), when this call needs no autograd
    graph and the provider has one; else None. Traced or exported (torch.compile / export / ONNX /
    jit.trace) and under torch.func transforms, ops.scan picks the form instead."""
    if backend in ("torch", "reference") or _tracing.mode() != "eager" or _tracing.transforms_active():
        return None
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, hx, *(decay or ()), *w)):
        return None
    return getattr(get_provider(backend), name, None)
