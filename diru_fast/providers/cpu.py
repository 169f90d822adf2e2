"""Provider "cpu": the fused C++ CPU kernel (csrc/diru_cpu*.cpp) for float32, float64, bfloat16 and float16
CPU tensors.

Where the kernel comes from, tried in order the first time the backend is queried (never at
``import diru_fast``):

1. ``diru_fast._C``, built ahead of time by ``setup.py`` (``pip install --no-build-isolation -e .``),
   used if it was built from the current sources;
2. a module compiled on first use with ``torch.utils.cpp_extension`` into a cache directory
   (``$DIRU_FAST_CACHE``, else ``$XDG_CACHE_HOME/diru_fast`` or ``~/.cache/diru_fast``), one per
   source hash, Python and torch version. Compiling prints one line to stderr; later processes
   load the cached module directly.

If neither works (no compiler, a failed build), :func:`unavailable_reason` says why and the
backend registry falls back ("auto") or raises with :data:`FIX` (explicit ``backend="cpu"``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Optional

import torch

from . import require_options
from .. import _build
from ..scan.dropout import CompartmentMask, threshold

FIX = (
    "install a C++ compiler (g++ or clang++) and ninja, then reinstall with "
    "`pip install --no-build-isolation -e .` (builds diru_fast._C), or let diru_fast compile "
    "the kernel on first use; or pass backend='torch'"
)

_extension: Optional[ModuleType] = None  # the loaded kernel module
_failure: Optional[str] = None  # why it could not be loaded (kept: we try once per process)


def cache_dir() -> Path:
    """Where compiled-on-first-use kernels are kept."""
    root = os.environ.get("DIRU_FAST_CACHE")
    if not root:
        root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "diru_fast")
    return Path(root)


def _import_aot(source_hash: str) -> Optional[ModuleType]:
    """The ahead-of-time module if present and built from these sources, else None."""
    try:
        module = importlib.import_module(_build.AOT_MODULE)
    except ImportError:
        return None
    if getattr(module, "source_hash", None) != source_hash:
        return None  # built from older sources (an editable install after an edit): rebuild
    return module


def _import_from_path(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, str(path))
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _jit_build(csrc: Path, source_hash: str) -> ModuleType:
    """Compile the kernel into the cache (once per source hash / Python / torch) and load it."""
    name = _build.JIT_MODULE_PREFIX + source_hash
    tag = f"py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__.replace('+', '_')}"
    build_dir = cache_dir() / tag / source_hash
    built = build_dir / f"{name}.so"
    if built.is_file():
        try:
            return _import_from_path(name, built)
        except ImportError:
            pass  # half-written by a concurrent build, or broken: build again below (under its lock)
    from torch.utils import cpp_extension

    build_dir.mkdir(parents=True, exist_ok=True)
    print(f"diru_fast: compiling the C++ CPU kernel (first use only, ~1 minute; cached in {build_dir})",
          file=sys.stderr, flush=True)
    return cpp_extension.load(
        name=name,
        sources=[str(p) for p in _build.cpu_source_paths(csrc)],
        extra_cflags=_build.cpu_cxx_flags(source_hash),
        extra_ldflags=_build.cpu_ld_flags(),
        build_directory=str(build_dir),
        verbose=False,
    )


def _load_extension() -> ModuleType:
    """The kernel module: the ahead-of-time build if current, else compiled on first use."""
    csrc = _build.csrc_dir()
    source_hash = _build.cpu_source_hash(csrc)
    module = _import_aot(source_hash)
    return module if module is not None else _jit_build(csrc, source_hash)


def extension() -> ModuleType:
    """The loaded kernel module; raises RuntimeError saying why if it cannot be had."""
    reason = unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"diru_fast: the C++ CPU kernel is unavailable: {reason}. Fix: {FIX}")
    return _extension  # type: ignore[return-value]


def unavailable_reason() -> Optional[str]:
    """None once the kernel is loaded; else why it cannot be (tried once per process)."""
    global _extension, _failure
    if _extension is None and _failure is None:
        try:
            _extension = _load_extension()
        except Exception as exc:  # a compiler error, no compiler, no ninja, a broken .so
            lines = [line for line in str(exc).strip().splitlines() if line.strip()]
            detail = lines[-1] if lines else ""
            _failure = f"the C++ CPU kernel could not be built or loaded ({type(exc).__name__}: {detail})"
    return _failure


# bfloat16 and float16 run the float32 kernel's time loop (float32 state and arithmetic) with 16-bit
# inputs and outputs; bfloat16's products on AMX or AVX512_BF16 where the CPU has them (csrc/diru_cpu_bf16.h).
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)

def unsupported_reason(device: torch.device, dtype: Optional[torch.dtype]) -> Optional[str]:
    if device.type != "cpu":
        return f"the cpu kernel runs on CPU tensors only, not {device.type} (use 'triton' or 'cuda' there)"
    if dtype is not None and dtype not in DTYPES:
        return f"the cpu kernel supports float32, float64, bfloat16 and float16, not {dtype}"
    return None


OPTIONS = frozenset({"relu", "attention", "dropout", "time_decay"})  # the contract's options these kernels fuse (diru_fast.providers)
# The options in the step (diru_fast.scan.ops.StepOptionsScan): time decay also as its rates and gaps
# (``decay_rate`` lambda [d], ``dt`` [T, B]; the kernel forms each step's factors exp(-softplus(lambda) dt)
# and returns the gradients of lambda and dt), the dropout mask also as its seed (a
# diru_fast.scan.dropout.CompartmentMask, evaluated in the step), and the backward's ``extended``
# outputs: no [T, B, d] factors or mask are formed, kept or read.
STEP_OPTIONS = True

_ACTIVATIONS = {"tanh": 0, "relu": 1}  # the kernel's activation codes


def _activation(name: str) -> int:
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"activation must be one of {tuple(_ACTIVATIONS)}, got {name!r}") from None


def _rate(decay_rate):
    """Time decay's rates ``softplus(lambda) [d]`` for the kernel (None: off)."""
    return None if decay_rate is None else torch.nn.functional.softplus(decay_rate.detach())


def _mask(mask):
    """``(mask tensor or None, the kernel's seed arguments)`` of a mask tensor or CompartmentMask."""
    if isinstance(mask, CompartmentMask):
        return None, dict(mask_seed=int(mask.seed), mask_threshold=threshold(mask.p), mask_scale=mask.scale)
    return mask, {}


def scan_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, need_saved, activation="tanh", compartment_of=None,
             mask=None, decay=None, *, decay_rate=None, dt=None):
    """The contract's scan_fwd (diru_fast.scan.contract) on the C++ kernel, options included. Time
    decay either as ``decay [T, B, d]`` (the contract's) or as ``decay_rate`` (lambda ``[d]``) and ``dt``
    (``[T, B]``), with ``decay = contract.decay_factor(decay_rate, dt)`` formed inside the step. The
    dropout ``mask`` either as a tensor or as a :class:`~diru_fast.scan.dropout.CompartmentMask`."""
    require_options("cpu", OPTIONS, activation, compartment_of, mask, decay if decay_rate is None else decay_rate)
    mask, seed = _mask(mask)
    return tuple(extension().scan_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, need_saved,
                                      _activation(activation), compartment_of, mask, decay, _rate(decay_rate), dt,
                                      **seed))


def scan_bwd(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths, activation="tanh", compartment_of=None, mask=None,
             decay=None, *, decay_rate=None, dt=None, extended=False):
    """The contract's scan_bwd (diru_fast.scan.contract) on the C++ kernel, options as in
    :func:`scan_fwd`. ``extended``: four more outputs, what the weight and option gradients need
    (None where off): ``hd [T, B, d]`` (time decay from ``decay_rate``: the decayed states
    ``decay_t * h_{t-1}``, the w_hh gradient is ``sum_t d_p_t^T hd_t``), ``d_decay_rate [d]``, ``d_dt
    [T, B]``, and ``o [T, B, d]`` (attention or dropout: the integration inputs ``u s (k alpha_c)
    (mask)``, the w_int gradient is ``sum_t d_zp_t^T o_t``)."""
    require_options("cpu", OPTIONS, activation, compartment_of, mask, decay if decay_rate is None else decay_rate)
    mask, seed = _mask(mask)
    out = extension().scan_bwd(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths, _activation(activation),
                               compartment_of, mask, decay, _rate(decay_rate), dt, want_o=extended, **seed)
    if not extended:
        return tuple(out[:4])
    d_p, d_zp, d_yp, d_h0, hd, d_rate, d_dt, o = out
    if d_rate is not None:
        d_rate = d_rate * torch.sigmoid(decay_rate.detach())  # softplus' = sigmoid
    return d_p, d_zp, d_yp, d_h0, hd, d_rate, d_dt, o


def gate_products(saved, d, dtype):
    """The weight gradients' rows ``o = u s`` and ``q = z r`` of float32 ``saved`` gates ``[T, B, 4d+k]``
    rounded to ``dtype`` in one pass, ``[T*B, 2, d]``, or None where the kernel has no fused form for it
    (``dtype`` not bfloat16, no AVX-512): the values of ``(u * s).to(dtype)``, ``(z * r).to(dtype)``."""
    return extension().gate_products(saved, d, dtype)


def scan_fwd_x(x, h0, w_ih, b_ih, w_hh, w_int, b_int, w_out, b_out, lengths, activation="tanh", compartment_of=None,
               decay=None, *, decay_rate=None, dt=None):
    """An inference forward ``x [T, B, n] -> hs [T, B, d]`` that projects each step's input inside the
    time loop (the contract's scan_fwd on ``xp = x W_ih^T + b_ih`` without writing xp to memory; with
    attention ``w_ih [3d+k, n]``, ``b_ih [3d+k]``, ``w_hh [3d+k, d]``; no dropout mask: inference; time
    decay as in :func:`scan_fwd`)."""
    return _extension.scan_fwd_x(x, h0, w_ih, b_ih, w_hh, w_int, b_int, w_out, b_out, lengths,
                                 _activation(activation), compartment_of, decay, _rate(decay_rate), dt)


def cell_step(x, h, w_ih, b_ih, w_hh, w_int, b_int, w_out, b_out, activation="tanh", compartment_of=None):
    """One inference step, ``x [B, n], h [B, d] | None -> h' [B, d]``, in one call: the input
    projection, the three products and the gates (no autograd graph, nothing saved; the options as
    in :func:`scan_fwd_x`)."""
    return _extension.cell_step(x, h, w_ih, b_ih, w_hh, w_int, b_int, w_out, b_out, _activation(activation),
                                compartment_of)
