"""Which Triton the kernels need, checked before any kernel is built (pure Python).

Measured with each version installed next to torch 2.13: the interpreter suites
(tests/providers/test_triton.py, test_triton_math.py) and the compile of every dispatcher
configuration for sm_80 and sm_90 (kernels/compile_check.py; for 3.0 with its older
``triton.compile`` signature):

=======  =====================================================================================
Triton   result
=======  =====================================================================================
< 3.0    not supported: ``tl.dot(..., input_precision="tf32x3")`` (3xTF32) and the ``maxnreg``
         launch option arrive in 3.0
3.0      every configuration compiles; the fp32 d_pad = 256 forward asks for 163.3 KB of shared
         memory on sm_80, over A100's 163 KB (it would not launch there; 147 KB from 3.4 on),
         and three kernels spill a few bytes. Interpreter: float32 / bfloat16 / float16 pass,
         float64 cannot run (``tl.dot`` takes float64 from 3.5 on)
3.2      interpreter as 3.0; no ``tl.gather``, so attention over compartments cannot compile
         (``ATTENTION`` below): the plain cell, relu, dropout and time decay only
3.3-3.4  ``tl.gather`` (attention) from 3.3 on; interpreter as 3.0; 3.4 compiles everything within
         shared memory (fp32 d_pad = 256 backward spills 76 B on sm_90)
3.5      float64 in the interpreter too (16 B of spills left on sm_90)
3.6      what the CUDA wheels of PyTorch 2.10-2.13 pin: compiled and ptxas-checked for sm_80 / sm_90
         (bench/results/triton-compile-3.6.txt)
3.7      everything, no spills; the first whose interpreter runs under NumPy >= 2.4 (older
         ones call ``int()`` on 1-element arrays, which NumPy 2.4 refuses)
3.9      everything (what CI installs)
=======  =====================================================================================

``kernels/__init__.py`` calls :func:`check` first thing, so an unusable Triton surfaces as an
ImportError naming the version and the fix, which ``diru_fast.providers.triton`` reports as the
backend's reason for being unavailable (``python -m diru_fast selftest`` prints it); without
float64 support the interpreter simply does not offer float64 (``launch.FLOAT64_PROBLEM``); without
``tl.gather`` (triton < 3.3) the backend does not offer attention (``launch.ATTENTION_PROBLEM``: "auto"
runs such calls on "torch", a direct kernel call raises saying why).
"""

from __future__ import annotations

import os
import re
from types import ModuleType
from typing import Optional, Tuple

MIN_TRITON = (3, 0)
MIN_TRITON_ATTENTION = (3, 3)  # tl.gather (the attention kernels' per-unit compartment weight)
MIN_TRITON_FLOAT64 = (3, 5)  # tl.dot with float64 operands (the interpreter's float64 runs)
MIN_TRITON_NUMPY_2_4 = (3, 7)  # the interpreter under NumPy >= 2.4
NUMPY_STRICT_SCALARS = (2, 4)  # NumPy that refuses int() of a 1-element array


def parse_version(text: str) -> Tuple[int, int]:
    """``"3.4.0+git1a2b"`` -> ``(3, 4)``; anything unreadable -> ``(0, 0)``."""
    match = re.match(r"\s*(\d+)\.(\d+)", str(text))
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


def _fmt(version: Tuple[int, int]) -> str:
    return "%d.%d" % version


def triton_problem(triton_version: str, interpreted: bool, numpy_version: Optional[str] = None) -> Optional[str]:
    """None if the kernels run with this Triton (and, under the interpreter, this NumPy); else why not
    and the fix."""
    have = parse_version(triton_version)
    if have < MIN_TRITON:
        return (f"the diru_fast Triton kernels need triton >= {_fmt(MIN_TRITON)} (3xTF32 dots, maxnreg); "
                f"found triton {triton_version}. Fix: pip install 'triton>={_fmt(MIN_TRITON)}' (PyTorch >= 2.4 "
                f"ships one), or use backend='cuda' / 'torch'")
    if interpreted and numpy_version is not None and have < MIN_TRITON_NUMPY_2_4 \
            and parse_version(numpy_version) >= NUMPY_STRICT_SCALARS:
        return (f"the interpreter of triton {triton_version} cannot run under NumPy {numpy_version} (it calls "
                f"int() on 1-element arrays, which NumPy >= {_fmt(NUMPY_STRICT_SCALARS)} refuses). Fix: "
                f"pip install 'triton>={_fmt(MIN_TRITON_NUMPY_2_4)}', or 'numpy<{_fmt(NUMPY_STRICT_SCALARS)}'")
    return None


def float64_problem(triton_version: str) -> Optional[str]:
    """None if this Triton's ``tl.dot`` takes float64 (the interpreter's float64 kernels); else why not."""
    if parse_version(triton_version) < MIN_TRITON_FLOAT64:
        return (f"triton {triton_version}'s tl.dot takes no float64 operands (from triton "
                f"{_fmt(MIN_TRITON_FLOAT64)} on)")
    return None


def attention_problem(triton_version: str) -> Optional[str]:
    """None if this Triton has ``tl.gather`` (attention over compartments); else why not and the fix."""
    if parse_version(triton_version) < MIN_TRITON_ATTENTION:
        return (f"attention over compartments in the Triton kernels needs triton >= {_fmt(MIN_TRITON_ATTENTION)} "
                f"(tl.gather); found triton {triton_version}. Fix: pip install 'triton>={_fmt(MIN_TRITON_ATTENTION)}', "
                f"or use backend='cuda' / 'torch' for attention")
    return None


def fused_options(triton_version: str) -> frozenset:
    """The contract's options the kernels fuse with this Triton: attention needs ``tl.gather``."""
    every = {"relu", "attention", "dropout", "time_decay"}
    return frozenset(every - ({"attention"} if attention_problem(triton_version) else set()))


def interpreting(triton: ModuleType) -> bool:
    """Whether ``triton.jit`` builds interpreted functions: ``triton.knobs`` from Triton 3.4 on,
    the ``TRITON_INTERPRET`` environment variable (what ``triton.jit`` reads) before that."""
    knobs = getattr(triton, "knobs", None)
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def installed_numpy() -> Optional[str]:
    """NumPy's version without importing it (None if it is not installed)."""
    from importlib import metadata

    try:
        return metadata.version("numpy")
    except metadata.PackageNotFoundError:
        return None


def check(triton_version: str, interpreted: bool, numpy_version: Optional[str]) -> None:
    """Raise ImportError with :func:`triton_problem`'s message if the kernels cannot run."""
    problem = triton_problem(triton_version, interpreted, numpy_version)
    if problem is not None:
        raise ImportError(problem)
