"""Build and install diru_fast.

Install into an environment that already has PyTorch, without build isolation, so pip never
fetches a second torch into a temporary build environment:

    pip install --no-build-isolation -e .

Layout: the package lives in diru_fast/; the Triton kernels (kernels/) and the C++/CUDA
sources (csrc/) sit at the top level and are installed as diru_fast.kernels and
diru_fast.csrc.

Compiled extensions (``extensions()``): the fused C++ CPU kernel ``diru_fast._C`` is built here
when torch and a C++ compiler are available at build time, and the CUDA extension
``diru_fast._cuda`` where torch has CUDA (csrc/cuda/build.py). If one cannot be built, the install
still succeeds (one line says so): the CPU kernel is then compiled on first use
(``diru_fast/providers/cpu.py``); with no compiler at all, ``backend="auto"`` falls back to the
pure-PyTorch path with a warning.
"""

import importlib.util
import os
import re
import sys

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    """``__version__`` from diru_fast/__init__.py, read from its text (importing the package needs
    torch): one version string for pip and for ``diru_fast.__version__``."""
    with open(os.path.join(HERE, "diru_fast", "__init__.py"), encoding="utf-8") as f:
        match = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", f.read(), re.MULTILINE)
    if match is None:
        raise RuntimeError("diru_fast/__init__.py has no __version__ = \"...\" line")
    return match.group(1)


def _load_build_helpers():
    """diru_fast/_build.py (sources, hash, flags), loaded by path: the package itself needs torch."""
    spec = importlib.util.spec_from_file_location("_diru_build", os.path.join(HERE, "diru_fast", "_build.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cpu_extension(cpp_extension):
    """The fused C++ CPU kernel as the extension ``diru_fast._C``."""
    build = _load_build_helpers()
    csrc = os.path.join(HERE, "csrc")
    source_hash = build.cpu_source_hash(csrc)
    return cpp_extension.CppExtension(
        build.AOT_MODULE,
        sources=[os.path.relpath(str(p), HERE) for p in build.cpu_source_paths(csrc)],
        extra_compile_args={"cxx": build.cpu_cxx_flags(source_hash)},
        extra_link_args=build.cpu_ld_flags(),
    )


def cuda_extension():
    """The CUDA extension diru_fast._cuda where torch has CUDA, else None; defined in
    csrc/cuda/build.py (which also builds it in place for a checkout)."""
    spec = importlib.util.spec_from_file_location("_diru_cuda_build", os.path.join(HERE, "csrc", "cuda", "build.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.cuda_extension()


def extensions():
    """(ext_modules, cmdclass): the C++ CPU kernel, plus the CUDA extension where torch has CUDA.
    Empty when torch is not importable at build time."""
    if os.environ.get("DIRU_FAST_NO_EXTENSIONS") == "1":
        return [], {}
    try:
        from torch.utils import cpp_extension
    except ImportError:
        print("diru_fast setup: torch is not importable at build time; the C++ CPU kernel will be "
              "compiled on first use", file=sys.stderr)
        return [], {}
    ext_modules = [cpu_extension(cpp_extension)]
    cuda = cuda_extension()
    if cuda is not None:
        ext_modules.append(cuda)
    return ext_modules, {"build_ext": _optional_build_ext(cpp_extension.BuildExtension)}


def _optional_build_ext(base):
    build = _load_build_helpers()

    class OptionalBuildExt(base):
        """BuildExtension whose failure does not fail the install: the runtime JIT path takes over."""

        def run(self):
            try:
                super().run()
            except Exception as exc:  # no compiler, a compile error, a missing header ...
                self._skip(exc)

        def build_extension(self, ext):
            compiler_so = self.compiler.compiler_so
            if ext.name == build.AOT_MODULE:  # compiled with the JIT build's flags alone (_build.py)
                self.compiler.compiler_so = build.aot_compile_command(compiler_so)
            try:
                super().build_extension(ext)
            except Exception as exc:
                self._skip(exc, ext.name)
            finally:
                self.compiler.compiler_so = compiler_so

        def _skip(self, exc, name="the C++ extensions"):
            detail = str(exc).strip().splitlines()[-1:] or [type(exc).__name__]
            then = ("the C++ CPU kernel will be compiled on first use instead" if name != "diru_fast._cuda"
                    else "backend 'cuda' will be unavailable")
            print(f"diru_fast setup: could not build {name} ({detail[0]}); {then}", file=sys.stderr)

    return OptionalBuildExt


ext_modules, cmdclass = extensions()

setup(
    name="diru_fast",
    version=read_version(),
    description="Fast, verified Dendrite-Inspired Recurrent Units (DIRU) for PyTorch",
    long_description=open(os.path.join(HERE, "README.md"), encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=["diru_fast", "diru_fast.scan", "diru_fast.providers", "diru_fast.kernels", "diru_fast.csrc",
              "diru_fast.experiments", "diru_fast.analyses"],
    package_dir={"diru_fast.kernels": "kernels", "diru_fast.csrc": "csrc"},
    package_data={"diru_fast.csrc": ["*.cpp", "*.h", "*.cu", "*.cuh", "cuda/*.cu", "cuda/*.cuh", "cuda/*.cpp",
                                     "cuda/*.py"],
                  # the word-level language model's corpus (python -m diru_fast lm / stability)
                  "diru_fast.experiments": ["data/shakespeare/*.txt", "data/shakespeare/README.md"]},
    install_requires=["torch>=2.3", "numpy"],
    extras_require={
        # everything the test suite needs: it skips nothing for a missing package. triton: the kernels
        # need >= 3.0; the CPU suites run them in its interpreter, which needs >= 3.7 under NumPy >= 2.4
        # (>= 3.5 below; kernels/compat.py; tests/providers/test_triton_compat.py fails on an older one).
        # Not pinned higher here: CUDA builds of torch pin their own triton, and a GPU image must keep it.
        "test": ["pytest>=7", "pytest-benchmark>=4", "triton>=3.0", "expecttest", "tqdm", "matplotlib",
                 "scipy", "statsmodels", "pandas", "scikit-learn", "onnx>=1.17", "onnxscript>=0.5",
                 "onnxruntime>=1.20", "lightning>=2.4"],
        # diru_fast.lightning.DIRURegressor (README: PyTorch Lightning)
        "lightning": ["lightning>=2.4"],
        # torch.onnx.export(model, args, dynamo=True) and checking the model in onnxruntime (README: Export)
        "onnx": ["onnx>=1.17", "onnxscript>=0.5", "onnxruntime>=1.20"],
        "bench": ["pytest-benchmark>=4", "matplotlib"],
        "experiments": ["tqdm", "matplotlib"],  # python -m diru_fast demo / study
        # python -m diru_fast analyses (specialization, gradient-flow, memory-capacity, real-data)
        "analyses": ["matplotlib", "scipy", "statsmodels", "pandas", "scikit-learn"],
        # python -m diru_fast ucr: the UCR/UEA sets aeon ships in its wheel, and its MiniRocket
        "benchmarks": ["aeon>=1.0"],
    },
    entry_points={"console_scripts": ["diru-fast = diru_fast.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
# torch is deliberately NOT a build requirement: an isolated build would download a second,
# multi-GB torch. Install with `pip install --no-build-isolation -e .` into an environment
# that has torch (scripts/setup.sh does that).
