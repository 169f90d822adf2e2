"""Provider "cuda": the CUDA C++ extension ``diru_fast._cuda`` (sources in ``csrc/cuda/``).

The same persistent forward / reverse-time backward as the Triton kernels, on CUDA cores,
for machines with CUDA but without Triton. CUDA tensors in float32, float64, float16,
bfloat16. Built by setup.py only where PyTorch has CUDA; never compiled at import.

The kernels fuse all the contract's options (``activation="relu"``, attention over compartments,
the dropout mask, time decay): a call with any of them runs a second compiled instantiation of the same
kernels, so the plain cell's code is the one it was before the options.
"""

from __future__ import annotations

import importlib
from typing import Optional

import torch

from . import require_options

FIX = ("build the extension where PyTorch has CUDA and nvcc is on PATH: `python csrc/cuda/build.py` "
       "in a source checkout, or reinstall with `pip install --no-build-isolation .`")

_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _ext():
    return importlib.import_module("diru_fast._cuda")


def unavailable_reason() -> Optional[str]:
    if torch.version.cuda is None:
        return "this PyTorch build has no CUDA (torch.version.cuda is None)"
    try:
        _ext()
    except ImportError as exc:
        return f"the CUDA extension diru_fast._cuda is not built or does not load ({exc})"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible"
    return None


def unsupported_reason(device: torch.device, dtype: Optional[torch.dtype]) -> Optional[str]:
    if device.type != "cuda":
        return f"the CUDA extension runs CUDA tensors only, not {device.type}"
    if dtype is not None and dtype not in _DTYPES:
        return f"dtype {dtype} is not supported (float32, float64, float16, bfloat16)"
    return None


OPTIONS = frozenset({"relu", "attention", "dropout", "time_decay"})  # the contract's options these kernels fuse
# The options in the step (diru_fast.scan.ops.StepOptionsScan), as on the cpu provider: time decay also as its
# rates and gaps (``decay_rate`` lambda [d], ``dt`` [T, B]; the kernels form exp(-softplus(lambda) dt) per element
# and the backward returns the gradients of lambda and dt and the decayed states), the dropout mask also as its
# seed (a diru_fast.scan.dropout.CompartmentMask, hashed in the step: the same mask as every other backend), and
# the backward's ``extended`` outputs.
STEP_OPTIONS = True


def _kernel_options(activation, compartment_of, mask, decay):
    """The options as the extension takes them: compartment_of [d] as int32 (the kernels' index
    type), mask and decay [T, B, d] contiguous; None stays None."""
    comp = None if compartment_of is None else compartment_of.to(torch.int32).contiguous()
    contiguous = lambda t: None if t is None else t.contiguous()  # noqa: E731
    return activation, comp, contiguous(mask), contiguous(decay)


def _step_options(like, mask, decay_rate, dt) -> dict:
    """The extension's keywords for the options formed in the step: the rates ``softplus(lambda)`` and gaps
    in the accumulation dtype of ``like``, the mask's seed, threshold and kept value."""
    from ..scan.dropout import CompartmentMask, threshold

    kw = {}
    if decay_rate is not None:
        acc = torch.float64 if like.dtype == torch.float64 else torch.float32
        kw.update(rate=torch.nn.functional.softplus(decay_rate.detach().to(acc)).contiguous(),
                  dt=dt.to(acc).contiguous())
    if isinstance(mask, CompartmentMask):
        kw.update(mask_seed=int(mask.seed), mask_threshold=threshold(mask.p), mask_scale=mask.scale)
    return kw


def _mask_tensor(mask):
    from ..scan.dropout import CompartmentMask

    return None if isinstance(mask, CompartmentMask) else mask


def scan_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, need_saved, activation="tanh", compartment_of=None,
             mask=None, decay=None, *, decay_rate=None, dt=None):
    """The contract's scan_fwd on the CUDA kernels, options included; time decay either as ``decay [T, B, d]``
    or as ``decay_rate`` (lambda ``[d]``) and ``dt`` (``[T, B]``), the dropout ``mask`` either as a tensor or as
    a :class:`~diru_fast.scan.dropout.CompartmentMask` (both formed in the step)."""
    require_options("cuda", OPTIONS, activation, compartment_of, mask, decay if decay_rate is None else decay_rate)
    return _ext().scan_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, need_saved,
                           *_kernel_options(activation, compartment_of, _mask_tensor(mask), decay),
                           **_step_options(xp, mask, decay_rate, dt))


def scan_bwd(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths, activation="tanh", compartment_of=None, mask=None,
             decay=None, *, decay_rate=None, dt=None, extended=False):
    """The contract's scan_bwd on the CUDA kernels, options as in :func:`scan_fwd`. ``extended``: four more
    outputs, None where off (as the cpu provider's): ``hd [T, B, d]``, ``d_decay_rate [d]``, ``d_dt [T, B]``,
    ``o [T, B, d]``."""
    require_options("cuda", OPTIONS, activation, compartment_of, mask, decay if decay_rate is None else decay_rate)
    out = _ext().scan_bwd(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths,
                          *_kernel_options(activation, compartment_of, _mask_tensor(mask), decay),
                          want_o=extended, **_step_options(hs, mask, decay_rate, dt))
    if not extended:
        return tuple(out[:4])
    d_p, d_zp, d_yp, d_h0, hd, d_rate, d_dt, o = out
    if d_rate is not None:  # dL/dlambda = dL/drate * softplus'(lambda)
        d_rate = (d_rate * torch.sigmoid(decay_rate.detach().to(d_rate.dtype))).to(decay_rate.dtype)
    return d_p, d_zp, d_yp, d_h0, hd, d_rate, d_dt, o
