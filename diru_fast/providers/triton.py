"""Provider "triton": the persistent Triton kernels of ``kernels/`` (``diru_fast.kernels``).

CUDA tensors (sm_80 or newer) in float32, bfloat16, float16; with ``TRITON_INTERPRET=1`` set
before triton is imported, also CPU tensors (any of those dtypes and float64), run by
Triton's interpreter: slow, meant for tests. triton is imported only when this backend is
first asked about, never at ``import diru_fast``.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Optional

import torch

from . import require_options

FIX = ("pip install triton (it ships with the CUDA builds of PyTorch); the kernels run on CUDA GPUs, "
       "or on CPU tensors under TRITON_INTERPRET=1 set before triton is imported (slow, for tests)")

_GPU_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _kernels():
    return importlib.import_module("diru_fast.kernels")


def unavailable_reason() -> Optional[str]:
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed"
    if importlib.util.find_spec("diru_fast.kernels") is None:
        return ("diru_fast.kernels is missing (a source checkout on PYTHONPATH without an install?); "
                "install the package: `pip install --no-build-isolation -e .`")
    try:
        kernels = _kernels()
    except Exception as exc:  # noqa: BLE001  (a broken triton install must not break diru_fast)
        return f"the Triton kernels could not be imported ({type(exc).__name__}: {exc})"
    if not kernels.INTERPRETED and not torch.cuda.is_available():
        return "no CUDA GPU is visible and TRITON_INTERPRET=1 was not set before triton was imported"
    return None


def unsupported_reason(device: torch.device, dtype: Optional[torch.dtype]) -> Optional[str]:
    kernels = _kernels()
    if device.type == "cpu":
        if not kernels.INTERPRETED:
            return "Triton runs CPU tensors only in its interpreter (TRITON_INTERPRET=1 before importing triton)"
        dtypes = kernels.SUPPORTED_DTYPES
    elif device.type == "cuda":
        if not torch.cuda.is_available():
            return "CUDA is not available"
        if not kernels.INTERPRETED:
            major, minor = torch.cuda.get_device_capability(device)
            if major < 8:
                return f"the kernels need a GPU of compute capability 8.0 or newer (this one is {major}.{minor})"
        dtypes = kernels.SUPPORTED_DTYPES if kernels.INTERPRETED else _GPU_DTYPES
    else:
        return f"Triton kernels do not run on {device.type} tensors"
    if dtype is not None and dtype not in dtypes:
        names = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        why = f"; {kernels.FLOAT64_PROBLEM}" if dtype == torch.float64 and kernels.FLOAT64_PROBLEM else ""
        return f"dtype {dtype} is not supported here (supported: {names}){why}"
    return None


#: The contract's options the kernels can fuse (constexpr flags of every regime); the installed Triton
#: may offer fewer (attention needs triton >= 3.3): ``OPTIONS`` says what runs here.
FUSED_OPTIONS = frozenset({"relu", "attention", "dropout", "time_decay"})


def __getattr__(name):
    """``OPTIONS``: the options the installed Triton runs (``diru_fast.kernels.OPTIONS``), read when the
    dispatcher first asks (importing triton then); FUSED_OPTIONS if the kernels cannot be imported (the
    backend is then unavailable anyway)."""
    if name == "OPTIONS":
        try:
            return _kernels().OPTIONS
        except Exception:  # noqa: BLE001  (unavailable_reason() says why)
            return FUSED_OPTIONS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# The options in the step (diru_fast.scan.ops.StepOptionsScan), as on the cpu provider: time decay also
# as its rates and gaps (``decay_rate`` lambda [d], ``dt`` [T, B]; the kernels form exp(-softplus(lambda) dt)
# per element and their backward returns the gradients of lambda and dt and the decayed states), the
# dropout mask also as its seed (a diru_fast.scan.dropout.CompartmentMask, hashed in the step: the same
# mask as every other backend), and the backward's ``extended`` outputs.
STEP_OPTIONS = True


def _step_options(mask, decay_rate, dt) -> dict:
    """The kernels' keywords for the options formed in the step: the rates ``softplus(lambda)`` and the
    gaps, the mask's seed, threshold and kept value."""
    from ..scan.dropout import CompartmentMask, threshold

    kw = {}
    if decay_rate is not None:
        acc = torch.float64 if decay_rate.dtype == torch.float64 else torch.float32
        kw.update(rate=torch.nn.functional.softplus(decay_rate.detach().to(acc)), dt=dt)
    if isinstance(mask, CompartmentMask):
        kw.update(mask_seed=int(mask.seed), mask_threshold=threshold(mask.p), mask_scale=mask.scale)
    return kw


def _mask_tensor(mask):
    from ..scan.dropout import CompartmentMask

    return None if isinstance(mask, CompartmentMask) else mask


def scan_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, need_saved, activation="tanh", compartment_of=None,
             mask=None, decay=None, *, decay_rate=None, dt=None):
    """The contract's scan_fwd on the Triton kernels, options included. Time decay either as ``decay [T,
    B, d]`` or as ``decay_rate`` (lambda ``[d]``) and ``dt`` (``[T, B]``), formed in the step; the dropout
    ``mask`` either as a tensor or as a :class:`~diru_fast.scan.dropout.CompartmentMask`."""
    require_options("triton", FUSED_OPTIONS, activation, compartment_of, mask,
                    decay if decay_rate is None else decay_rate)
    return _kernels().scan_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, need_saved,
                               activation=activation, compartment_of=compartment_of, mask=_mask_tensor(mask),
                               decay=decay, **_step_options(mask, decay_rate, dt))


def scan_bwd(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths, activation="tanh", compartment_of=None, mask=None,
             decay=None, *, decay_rate=None, dt=None, extended=False):
    """The contract's scan_bwd on the Triton kernels, options as in :func:`scan_fwd`. ``extended``: four
    more outputs, None where off (as the cpu provider's): ``hd [T, B, d]`` (the decayed states, time decay
    from ``decay_rate``), ``d_decay_rate [d]``, ``d_dt [T, B]``, ``o [T, B, d]`` (attention or dropout: the
    integration inputs)."""
    require_options("triton", FUSED_OPTIONS, activation, compartment_of, mask,
                    decay if decay_rate is None else decay_rate)
    out = _kernels().scan_bwd(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths,
                              activation=activation, compartment_of=compartment_of, mask=_mask_tensor(mask),
                              decay=decay, extended=extended, **_step_options(mask, decay_rate, dt))
    if not extended:
        return out
    d_p, d_zp, d_yp, d_h0, hd, d_rate, d_dt, o = out
    if d_rate is not None:  # dL/dlambda = dL/drate * softplus'(lambda)
        d_rate = (d_rate * torch.sigmoid(decay_rate.detach().to(d_rate.dtype))).to(decay_rate.dtype)
    return d_p, d_zp, d_yp, d_h0, hd, d_rate, d_dt, o
