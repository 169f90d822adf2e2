"""How the C++ CPU kernel is compiled: where its sources are, their hash, and the compiler flags.

Shared by ``setup.py`` (the ahead-of-time build of ``diru_fast._C``) and
``diru_fast.providers.cpu`` (the compile-on-first-use fallback), so both build the same thing.
Imports nothing but the standard library: setup.py loads this file by path.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path
from typing import List

# The CPU kernel's sources (relative to csrc/): compiled units, then the headers they include.
CPU_SOURCES = ("diru_cpu.cpp", "diru_cpu_kernels.cpp", "diru_cpu_bf16.cpp")
CPU_HEADERS = ("diru_cpu_kernels.h", "diru_cpu_math.h", "diru_cpu_blas.h", "diru_cpu_gemm.h", "diru_cpu_bf16.h")

# Name of the ahead-of-time module and of the JIT module (plus a hash suffix).
AOT_MODULE = "diru_fast._C"
JIT_MODULE_PREFIX = "diru_fast_cpu_"


def csrc_dir() -> Path:
    """The folder of the C++/CUDA sources: the package ``diru_fast.csrc`` (the repository's top-level
    csrc/, which ``setup.py`` installs as ``diru_fast/csrc`` and an editable install maps there)."""
    try:
        package = importlib.import_module("diru_fast.csrc")
    except ImportError as exc:
        raise ImportError("diru_fast.csrc (the kernel sources) is not importable: install the package, "
                          "e.g. `pip install --no-build-isolation -e .` in the checkout") from exc
    return Path(package.__file__).resolve().parent


def cpu_source_paths(csrc: Path) -> List[Path]:
    """The compiled units of the CPU kernel in ``csrc``."""
    return [Path(csrc) / name for name in CPU_SOURCES]


def cpu_source_hash(csrc: Path) -> str:
    """A short hash of every CPU source and header: a build is current iff its hash matches."""
    digest = hashlib.sha256()
    for name in CPU_SOURCES + CPU_HEADERS:
        digest.update(name.encode())
        digest.update((Path(csrc) / name).read_bytes())
    return "src" + digest.hexdigest()[:16]


def cpu_cxx_flags(source_hash: str) -> List[str]:
    """Compiler flags: all of them, in both builds (see aot_compile_command). -fopenmp makes
    at::parallel_for (an inline OpenMP region in torch's headers) actually run in parallel; it binds
    to the libgomp torch already loaded."""
    flags = ["-O3", f"-DDIRU_CSRC_HASH={source_hash}"]
    if sys.platform.startswith("linux"):
        flags += ["-fopenmp", "-Wno-psabi"]
    return flags


def aot_compile_command(compiler_so: List[str]) -> List[str]:
    """The ahead-of-time build's compile command for the CPU kernel: the compiler (with any wrapper
    such as ccache) and -fPIC, without the flags setuptools takes from the interpreter's build
    (sysconfig CFLAGS and $CFLAGS: -DNDEBUG -g -fwrapv -O3 -Wall for this project's Python, -O2 or
    -march=... for others), so both builds compile with cpu_cxx_flags alone.

    Why it matters: GCC fuses a*b + c into one rounding (an FMA) wherever the code it has inlined
    lets it, and those flags sway its inlining, so the same sources built with other flags can give
    other float32 bits (seen: a change that left every result of the compile-on-first-use build
    bit for bit unchanged moved the ahead-of-time build's float32 results of all four options)."""
    command = []
    for token in compiler_so:
        if token.startswith("-"):
            break
        command.append(token)
    return command + ["-fPIC"]


def cpu_ld_flags() -> List[str]:
    return ["-fopenmp"] if sys.platform.startswith("linux") else []
