"""Build and install diru_fast.

Install into an environment that already has PyTorch, without build isolation, so pip never
fetches a second torch into a temporary build environment:

    pip install --no-build-isolation -e .

Layout: the package lives in diru_fast/; the Triton kernels (kernels/) and the C++/CUDA
sources (csrc/) sit at the top level and are installed as diru_fast.kernels and
diru_fast.csrc.
"""

import importlib.util
import os

from setuptools import setup


def cuda_extensions():
    """setup() arguments that build the CUDA extension diru_fast._cuda where torch has CUDA; {} elsewhere.
    The extension is defined in csrc/cuda/build.py (which also builds it in place for a checkout)."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "cuda", "build.py")
    spec = importlib.util.spec_from_file_location("_diru_cuda_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ext = module.cuda_extension()
    if ext is None:
        return {}
    from torch.utils.cpp_extension import BuildExtension

    return {"ext_modules": [ext], "cmdclass": {"build_ext": BuildExtension}}


setup(
    **cuda_extensions(),
    name="diru_fast",
    version="0.1.0",
    description="Fast, verified Dendrite-Inspired Recurrent Units (DIRU) for PyTorch",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=["diru_fast", "diru_fast.scan", "diru_fast.providers", "diru_fast.kernels", "diru_fast.csrc",
              "diru_fast.experiments", "diru_fast.analyses"],
    package_dir={"diru_fast.kernels": "kernels", "diru_fast.csrc": "csrc"},
    package_data={"diru_fast.csrc": ["*.cpp", "*.h", "*.cu", "*.cuh", "cuda/*.cu", "cuda/*.cuh", "cuda/*.cpp",
                                     "cuda/*.py"]},
    install_requires=["torch>=2.3", "numpy"],
    extras_require={
        "test": ["pytest>=7", "pytest-benchmark>=4", "triton>=3.0", "matplotlib", "expecttest", "tqdm"],
        "bench": ["pytest-benchmark>=4", "matplotlib"],
        "experiments": ["tqdm", "matplotlib"],  # python -m diru_fast demo / study
        # python -m diru_fast analyses (specialization, gradient-flow, memory-capacity, real-data)
        "analyses": ["matplotlib", "scipy", "statsmodels", "pandas", "scikit-learn"],
    },
    entry_points={"console_scripts": ["diru-fast = diru_fast.cli:main"]},
)
