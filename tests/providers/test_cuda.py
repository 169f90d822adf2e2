"""The CUDA C++ backend where no GPU is needed: the sources compile for sm_80 and sm_90, and the
provider says why it is unavailable. Its numbers on a GPU: tests/providers/test_cuda_gpu.py
(the CPU twin of those checks is the conformance suite, tests/scan/test_ops.py)."""

import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

import diru_fast
from diru_fast import backends

CUDA_DIR = Path(__file__).resolve().parents[2] / "csrc" / "cuda"
NVCC = shutil.which("nvcc")


def _torch_includes():
    from torch.utils.cpp_extension import include_paths

    return include_paths()


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH: the CUDA kernel source cannot be compile-checked")
def test_kernel_source_compiles_for_sm80_and_sm90(tmp_path):
    cmd = [NVCC, "-c", str(CUDA_DIR / "diru_scan.cu"), "-o", str(tmp_path / "diru_scan.o"), "-std=c++17", "-O3",
           "--expt-relaxed-constexpr", "-Xptxas", "-v", "-D__CUDA_NO_HALF_OPERATORS__",
           "-D__CUDA_NO_HALF_CONVERSIONS__", "-D__CUDA_NO_BFLOAT16_CONVERSIONS__",
           "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90"]
    cmd += [f"-I{p}" for p in _torch_includes()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    log = out.stdout + out.stderr
    kernels = re.findall(r"Compiling entry function '(\w+)' for '(sm_\d+)'", log)
    names = {(("fwd" if "fwd_kernel" in k else "bwd"), arch) for k, arch in kernels}
    assert names == {("fwd", "sm_80"), ("bwd", "sm_80"), ("fwd", "sm_90"), ("bwd", "sm_90")}
    assert len(kernels) == 16  # 2 kernels x 4 dtypes x 2 archs
    spills = [int(n) for n in re.findall(r"(\d+) bytes spill stores", log)]
    assert len(spills) == 16 and max(spills) == 0, log[-4000:]


def _cuda_include():
    """The CUDA toolkit's include directory, as nvcc itself reports it (nvcc may be a wrapper script)."""
    out = subprocess.run([NVCC, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                         capture_output=True, text=True, timeout=60)
    match = re.search(r'INCLUDES="-I([^"]+?)"', out.stdout + out.stderr)
    assert match, "nvcc --dryrun did not report its include directory"
    return match.group(1).strip()


def _python_include():
    inc = sysconfig.get_paths().get("include")
    return inc if inc and (Path(inc) / "Python.h").is_file() else None


@pytest.mark.skipif(shutil.which("g++") is None or _python_include() is None,
                    reason="g++ or the Python headers are missing: the bindings cannot be syntax-checked")
@pytest.mark.skipif(NVCC is None, reason="no CUDA toolkit (nvcc): its headers are needed for the bindings")
def test_bindings_compile(tmp_path):
    """bindings.cpp against torch's headers. A CPU build of torch lacks the one generated CUDA
    header (c10/cuda/impl/cuda_cmake_macros.h); a stub with its definition stands in for it."""
    cuda_include = _cuda_include()
    stub = tmp_path / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)
    (stub / "cuda_cmake_macros.h").write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
    cmd = ["g++", "-fsyntax-only", "-std=c++20", "-DTORCH_EXTENSION_NAME=_cuda", "-DTORCH_API_INCLUDE_EXTENSION_H",
           f"-I{tmp_path}", *[f"-I{p}" for p in _torch_includes()], f"-I{cuda_include}", f"-I{_python_include()}",
           str(CUDA_DIR / "bindings.cpp")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]


def test_setup_builds_the_extension_only_where_torch_has_cuda():
    sys.path.insert(0, str(CUDA_DIR))
    try:
        import build as cuda_build
    finally:
        sys.path.remove(str(CUDA_DIR))
        sys.modules.pop("build", None)
    ext = cuda_build.cuda_extension()
    if torch.version.cuda is None:
        assert ext is None
    else:
        assert ext.name == "diru_fast._cuda" and all(Path(s).suffix in (".cu", ".cpp") for s in ext.sources)


@pytest.mark.skipif(torch.version.cuda is not None, reason="this torch has CUDA: the 'no CUDA' message cannot show")
def test_provider_says_torch_has_no_cuda_and_the_fix():
    reason = backends.why_unavailable("cuda")
    assert "no CUDA" in reason and "csrc/cuda/build.py" in reason
    assert "cuda" not in diru_fast.available_backends()
    with pytest.raises(backends.BackendUnavailableError, match="torch.version.cuda is None"):
        diru_fast.DIRULayer(3, 8, backend="cuda")(torch.randn(2, 2, 3))


def test_provider_rejects_cpu_tensors_and_bad_dtypes():
    from diru_fast.providers import cuda as provider

    assert "CUDA tensors only" in provider.unsupported_reason(torch.device("cpu"), torch.float32)
    assert "not supported" in provider.unsupported_reason(torch.device("cuda"), torch.int32)
    assert provider.unsupported_reason(torch.device("cuda"), torch.bfloat16) is None


def test_package_imports_without_the_extension():
    code = "import diru_fast, sys; assert 'diru_fast._cuda' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=str(CUDA_DIR.parent.parent), env=dict(os.environ, PYTHONPATH="."))
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_auto_order_on_cuda_tensors_is_triton_then_cuda_then_torch(monkeypatch):
    """The backend selection rules for CUDA tensors, the two GPU providers' availability simulated here."""
    import warnings

    available = {"triton": True, "cuda": True}

    def fake_why(name, device=None, dtype=None):
        if name in available:
            return None if available[name] else f"{name} simulated missing"
        return None

    monkeypatch.setattr(backends, "why_unavailable", fake_why)
    cuda = torch.device("cuda")
    assert backends.resolve_backend("auto", cuda, torch.bfloat16) == "triton"
    available["triton"] = False
    with pytest.warns(RuntimeWarning, match="uses 'cuda'.*passing over 'triton'"):
        assert backends.resolve_backend("auto", cuda, torch.bfloat16) == "cuda"
    available["cuda"] = False
    with pytest.warns(RuntimeWarning, match="uses 'torch'.*passing over 'triton'.*'cuda'"):
        assert backends.resolve_backend("auto", cuda, torch.float32) == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backends.resolve_backend("auto", cuda, torch.float32) == "torch"  # warned once only
