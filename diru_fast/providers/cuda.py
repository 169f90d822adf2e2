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


def _kernel_options(activation, compartment_of, mask, decay):
    """The options as the extension takes them: compartment_of [d] as int32 (the kernels' index
    type), mask and decay [T, B, d] contiguous; None stays None."""
    comp = None if compartment_of is None else compartment_of.to(torch.int32).contiguous()
    contiguous = lambda t: None if t is None else t.contiguous()  # noqa: E731
    return activation, comp, contiguous(mask), contiguous(decay)


def scan_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, need_saved, activation="tanh", compartment_of=None,
             mask=None, decay=None):
    require_options("cuda", OPTIONS, activation, compartment_of, mask, decay)
    return _ext().scan_fwd(xp, h0, w_hh, w_int, b_int, w_out, b_out, lengths, need_saved,
                           *_kernel_options(activation, compartment_of, mask, decay))


def scan_bwd(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths, activation="tanh", compartment_of=None, mask=None,
             decay=None):
    require_options("cuda", OPTIONS, activation, compartment_of, mask, decay)
    return _ext().scan_bwd(grad_hs, h0, hs, saved, w_hh, w_int, w_out, lengths,
                           *_kernel_options(activation, compartment_of, mask, decay))
