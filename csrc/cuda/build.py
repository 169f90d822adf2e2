"""The CUDA extension ``diru_fast._cuda`` (this folder): its definition and an in-place build.

    python csrc/cuda/build.py      # from the repository root: builds diru_fast/_cuda*.so in place

Needs a PyTorch built with CUDA (``torch.version.cuda`` set) and nvcc. ``setup.py`` takes the
extension from :func:`cuda_extension` (None where torch has no CUDA, so CPU-only installs
build nothing here). Target GPUs follow ``TORCH_CUDA_ARCH_LIST`` (default: the visible GPU).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
SOURCES = ("diru_scan.cu", "bindings.cpp")
NAME = "diru_fast._cuda"
NVCC_FLAGS = ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]
CXX_FLAGS = ["-O3"]


def cuda_extension(root: Optional[Path] = None):
    """The CUDAExtension for ``diru_fast._cuda``, or None where torch has no CUDA.

    Sources are given relative to ``root`` (the repository root, where setup.py runs).
    """
    try:
        import torch
        from torch.utils.cpp_extension import CUDAExtension
    except ImportError:
        return None
    if torch.version.cuda is None:
        return None
    root = Path(root) if root is not None else HERE.parent.parent
    sources = [str((HERE / name).relative_to(root)) for name in SOURCES]
    return CUDAExtension(name=NAME, sources=sources,
                         extra_compile_args={"cxx": list(CXX_FLAGS), "nvcc": list(NVCC_FLAGS)})


def main() -> int:
    root = HERE.parent.parent
    ext = cuda_extension(root)
    if ext is None:
        print("csrc/cuda/build.py: this PyTorch has no CUDA (torch.version.cuda is None); nothing to build")
        return 1
    import os

    from setuptools import setup
    from torch.utils.cpp_extension import BuildExtension

    os.chdir(root)
    setup(name="diru_fast_cuda_ext", ext_modules=[ext], cmdclass={"build_ext": BuildExtension},
          script_args=["build_ext", "--inplace"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
