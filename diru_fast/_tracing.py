"""How a DIRU forward is being run: eagerly, traced into a graph, or exported; and what cannot be.

:func:`mode` tells the recurrence (:func:`diru_fast.scan.ops.scan`, :mod:`diru_fast.functional`)
which form to take:

==========  ==============================================================================
``eager``   plain PyTorch (also under ``torch.func`` transforms and autograd's forward mode)
``graph``   ``torch.compile`` or ``torch.export`` is tracing
``onnx``    ``torch.onnx.export(..., dynamo=True)`` is tracing (with ``torch.export``)
``jit``     ``torch.jit.trace`` is tracing
==========  ==============================================================================

The TorchScript-based ONNX exporter (``torch.onnx.export(..., dynamo=False)``) cannot express the
recurrence: :func:`mode` raises :class:`UnsupportedExportError` then, and so does
``torch.jit.script`` on a DIRU module (:func:`refuse_script`), each naming the supported path.
"""

from __future__ import annotations

import sys
from typing import Optional

import torch

from .backends import _constant_under_compile

__all__ = ["UnsupportedExportError", "mode", "check_exportable", "transforms_active", "refuse_script"]


class UnsupportedExportError(RuntimeError):
    """A way of exporting a DIRU model that cannot express its recurrence; the message names one that can."""


LEGACY_ONNX = (
    "diru_fast: the TorchScript-based ONNX exporter (torch.onnx.export(..., dynamo=False)) cannot export "
    "DIRU's recurrence: it would record the kernel's outputs as constants (a wrong model) or unroll the loop "
    "at the example's sequence length. Use torch.onnx.export(model, args, dynamo=True, "
    "dynamic_shapes=...) (needs onnx and onnxscript; pip install 'diru_fast[onnx]'): the recurrence is "
    "written as one ONNX Scan, for any sequence length."
)

SCRIPT = (
    "diru_fast: torch.jit.script cannot compile {name}'s forward (it validates its inputs and picks a "
    "kernel in Python). Supported instead: torch.export.export(model, args, dynamic_shapes=...) (any "
    "sequence length and batch size; also the way to ONNX and AOTInductor), or, for TorchScript inference, "
    "torch.jit.trace(model.eval(), example_inputs) with torch.jit.save/torch.jit.load (the loading process "
    "must import diru_fast)."
)


@_constant_under_compile
def _onnx_exporting() -> bool:
    onnx = sys.modules.get("torch.onnx")  # not imported: nobody is exporting (and we do not import it)
    return onnx is not None and onnx.is_in_onnx_export()


def mode() -> str:
    """``"eager"``, ``"graph"``, ``"onnx"`` or ``"jit"`` (see the module docstring)."""
    tracing = torch.jit.is_tracing()
    if not tracing and not torch.compiler.is_compiling():
        return "eager"
    if _onnx_exporting():
        if tracing:
            raise UnsupportedExportError(LEGACY_ONNX)
        return "onnx"
    return "jit" if tracing else "graph"


def check_exportable() -> None:
    """Raise :class:`UnsupportedExportError` under the TorchScript-based ONNX exporter; the functional
    ops call it first thing, before that exporter's tracer fails on a weight or records a wrong graph."""
    if torch.jit.is_tracing() and _onnx_exporting():
        raise UnsupportedExportError(LEGACY_ONNX)


def transforms_active(grad: Optional[torch.Tensor] = None) -> bool:
    """True under a ``torch.func`` transform (vmap, grad, jvp, ...) or an open
    ``torch.autograd.forward_ad.dual_level``, or if ``grad`` is batched by the older vmap that
    ``torch.autograd.functional.jacobian(vectorize=True)`` and ``gradcheck(check_batched_grad=True)``
    use: the kernel cannot take such tensors; it is reached through the rules of
    :class:`diru_fast.scan.ops.TransformableScan` instead (or the contract's backward). Eager only."""
    return (torch._C._are_functorch_transforms_active() or torch.autograd.forward_ad._current_level >= 0
            or (grad is not None and torch._C._functorch.is_legacy_batchedtensor(grad)))


def refuse_script(module: torch.nn.Module):
    """``__prepare_scriptable__`` of the DIRU modules: ``torch.jit.script`` calls it on a module and on
    every submodule before compiling; raise the error that names what works."""
    raise UnsupportedExportError(SCRIPT.format(name=type(module).__name__))
