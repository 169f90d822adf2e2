"""The fused C++ CPU backend ("cpu"): what the shared suites do not cover.

The shared suites (tests/scan/test_ops.py, test_functional.py, test_modules.py,
test_bad_input.py) already run "cpu" against the kernel contract and the float64 reference
whenever it is available. Here: that it *is* available where a compiler is, thread counts,
both GEMM paths of the kernel, float32 error against PyTorch's own float32 error, larger
shapes, strided inputs, the kernel's input checks, and the build / load / fallback machinery
(simulated failures: no compiler, a failed build, a stale ahead-of-time module).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import types
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

import diru_fast
from diru_fast import DIRU, BackendUnavailableError, _build, backends
from diru_fast.providers import cpu
from diru_fast.scan import contract
from tests.helpers import contract_inputs

ROOT = Path(__file__).resolve().parents[2]
HAVE_KERNEL = cpu.unavailable_reason() is None
needs_kernel = pytest.mark.skipif(not HAVE_KERNEL, reason=f"C++ CPU kernel unavailable here: {cpu.unavailable_reason()}")




def _lengths(T, B):
    return torch.tensor([max(1, T - (5 * b) % T) for b in range(B)])


def _fwd_bwd(a, lengths, grad_hs):
    """(hs, saved, d_p, d_zp, d_yp, d_h0) from the C++ kernel."""
    hs, saved = cpu.scan_fwd(a["xp"], a["h0"], a["w_hh"], a["w_int"], a["b_int"], a["w_out"], a["b_out"],
                             lengths, True)
    grads = cpu.scan_bwd(grad_hs, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths)
    return (hs, saved) + tuple(grads)


def _contract(a, lengths, grad_hs):
    hs, saved = contract.scan_fwd(**a, lengths=lengths, need_saved=True)
    grads = contract.scan_bwd(grad_hs, a["h0"], hs, saved, a["w_hh"], a["w_int"], a["w_out"], lengths)
    return (hs, saved) + tuple(grads)


NAMES = ("hs", "saved", "d_p", "d_zp", "d_yp", "d_h0")


@contextmanager
def _threads(n):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ---------------------------------------------------------------------------------------------
# availability
# ---------------------------------------------------------------------------------------------

def _can_build_here() -> bool:
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        return False
    aot = any((ROOT / "diru_fast").glob("_C*.so")) or (Path(diru_fast.__file__).parent / "_C.so").exists()
    return aot or shutil.which("ninja") is not None


def test_cpu_backend_is_available_and_auto_picks_it_where_a_compiler_is():
    if not _can_build_here():
        pytest.skip("no C++ compiler (or ninja) on this machine: the simulated-failure tests cover it")
    assert cpu.unavailable_reason() is None
    assert "cpu" in diru_fast.available_backends("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning
        assert backends.resolve_backend("auto", torch.device("cpu"), torch.float32) == "cpu"
        assert backends.resolve_backend("auto", torch.device("cpu"), torch.float64) == "cpu"


@needs_kernel
def test_other_dtypes_are_unsupported_with_a_reason():
    # (bfloat16 and float16 run on the kernel: tests/providers/test_cpu_bf16.py)
    assert backends.why_unavailable("cpu", "cpu", torch.bfloat16) is None
    assert "bfloat16 and float16" in backends.why_unavailable("cpu", "cpu", torch.complex64)


# ---------------------------------------------------------------------------------------------
# numerics beyond the conformance suite
# ---------------------------------------------------------------------------------------------

@needs_kernel
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
def test_thread_counts_agree_and_each_repeats_exactly(with_lengths):
    T, B, d = 9, 5, 24
    a = contract_inputs(T, B, d, seed=3)
    lengths = _lengths(T, B) if with_lengths else None
    g = torch.randn(T, B, d, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    with _threads(1):
        one = _fwd_bwd(a, lengths, g)
    with _threads(2):
        two = _fwd_bwd(a, lengths, g)
        two_again = _fwd_bwd(a, lengths, g)
    want = _contract(a, lengths, g)
    for name, x1, x2, x2b, w in zip(NAMES, one, two, two_again, want):
        assert torch.equal(x2, x2b), f"{name}: not deterministic at 2 threads"
        torch.testing.assert_close(x1, w, rtol=1e-12, atol=1e-12, msg=lambda m: f"{name} (1 thread): {m}")
        torch.testing.assert_close(x2, w, rtol=1e-12, atol=1e-12, msg=lambda m: f"{name} (2 threads): {m}")


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_tensor_gemm_path_matches_blas_path(dtype):
    """The kernel calls torch's BLAS directly; where none is exported it uses at::mm. Both agree."""
    ext = cpu.extension()
    T, B, d = 6, 3, 20
    a = contract_inputs(T, B, d, dtype=dtype, seed=5)
    lengths = _lengths(T, B)
    g = torch.randn(T, B, d, generator=torch.Generator().manual_seed(6)).to(dtype)
    blas = _fwd_bwd(a, lengths, g)
    previous = ext.set_use_blas(False)
    try:
        tensor_path = _fwd_bwd(a, lengths, g)
    finally:
        ext.set_use_blas(previous)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for name, x, y in zip(NAMES, blas, tensor_path):
        torch.testing.assert_close(x, y, rtol=tol, atol=tol, msg=lambda m: f"{name}: {m}")
    if dtype == torch.float64:
        want = _contract(a, lengths, g)
        for name, x, w in zip(NAMES, tensor_path, want):
            torch.testing.assert_close(x, w, rtol=1e-12, atol=1e-12, msg=lambda m: f"{name}: {m}")


@needs_kernel
@pytest.mark.parametrize("shape", [(120, 4, 64), (40, 3, 128), (25, 7, 33)], ids=lambda s: "T{}-B{}-d{}".format(*s))
def test_float32_error_is_within_twice_pytorchs_float32_error(shape):
    """Long sequences, wide states, odd widths (vector tails): against the float64 contract, the
    kernel's float32 error (RMS over all elements) is at most twice that of the same contract
    run in float32 by PyTorch, and its worst element at most four times PyTorch's worst."""
    T, B, d = shape
    a64 = contract_inputs(T, B, d, seed=T + d)
    a32 = {k: v.float() for k, v in a64.items()}
    lengths = _lengths(T, B)
    g64 = torch.randn(T, B, d, dtype=torch.float64, generator=torch.Generator().manual_seed(d))
    want = _contract(a64, lengths, g64)
    torch32 = _contract(a32, lengths, g64.float())
    ours = _fwd_bwd(a32, lengths, g64.float())
    for name, o, p, w in zip(NAMES, ours, torch32, want):
        assert o.dtype == torch.float32
        e_ours, e_torch = o.double() - w, p.double() - w
        rms_ours, rms_torch = e_ours.pow(2).mean().sqrt().item(), e_torch.pow(2).mean().sqrt().item()
        max_ours, max_torch = e_ours.abs().max().item(), e_torch.abs().max().item()
        assert rms_ours <= 2 * rms_torch, f"{name}: RMS error {rms_ours:.3g} vs PyTorch float32 {rms_torch:.3g}"
        assert max_ours <= 4 * max_torch, f"{name}: max error {max_ours:.3g} vs PyTorch float32 {max_torch:.3g}"


@needs_kernel
def test_long_sequence_float64_matches_contract():
    T, B, d = 300, 2, 16
    a = contract_inputs(T, B, d, seed=9)
    g = torch.randn(T, B, d, dtype=torch.float64, generator=torch.Generator().manual_seed(10))
    for name, x, w in zip(NAMES, _fwd_bwd(a, _lengths(T, B), g), _contract(a, _lengths(T, B), g)):
        torch.testing.assert_close(x, w, rtol=1e-12, atol=1e-12, msg=lambda m: f"{name}: {m}")


@needs_kernel
def test_strided_inputs_give_the_same_numbers():
    T, B, d = 5, 3, 12
    a = contract_inputs(T, B, d, seed=12)
    strided = {
        "xp": torch.stack([a["xp"], torch.full_like(a["xp"], float("nan"))], dim=2)[:, :, 0],  # [T, B, 3d] strided
        "h0": a["h0"].t().contiguous().t(),
        "w_hh": a["w_hh"].t().contiguous().t(),
        "w_int": a["w_int"].t().contiguous().t(),
        "b_int": torch.stack([a["b_int"], a["b_int"]], dim=1)[:, 0],
        "w_out": a["w_out"].t().contiguous().t(),
        "b_out": torch.stack([a["b_out"], a["b_out"]], dim=1)[:, 0],
    }
    assert not strided["xp"].is_contiguous() and not strided["w_hh"].is_contiguous()
    g = torch.randn(T, B, 2 * d, dtype=torch.float64)[:, :, ::2]
    got = _fwd_bwd(strided, None, g)
    want = _fwd_bwd(a, None, g.contiguous())
    for name, x, w in zip(NAMES, got, want):
        assert torch.equal(x, w), name


@needs_kernel
def test_kernel_checks_its_inputs():
    a = contract_inputs(4, 2, 8)
    args = [a[k] for k in ("xp", "h0", "w_hh", "w_int", "b_int", "w_out", "b_out")]
    ext = cpu.extension()
    bad_dtype = list(args)
    bad_dtype[1] = bad_dtype[1].float()
    with pytest.raises(RuntimeError, match="h0 has dtype Float, expected Double"):
        ext.scan_fwd(*bad_dtype, None, True)
    bad_shape = list(args)
    bad_shape[2] = bad_shape[2][:-1]
    with pytest.raises(RuntimeError, match=r"w_hh has shape \[23, 8\], expected \[24, 8\]"):
        ext.scan_fwd(*bad_shape, None, True)
    with pytest.raises(RuntimeError, match="lengths has dtype Int"):
        ext.scan_fwd(*args, torch.tensor([4, 2], dtype=torch.int32), True)
    with pytest.raises(RuntimeError, match="supports float32, float64, bfloat16 and float16"):
        ext.scan_fwd(*[t.to(torch.complex64) for t in args], None, True)
    with pytest.raises(RuntimeError, match="h0 has dtype Double, expected Half"):
        ext.scan_fwd(*[t.half() if i != 1 else t for i, t in enumerate(args)], None, True)
    hs, _ = ext.scan_fwd(*args, None, False)
    with pytest.raises(RuntimeError, match="need_saved=True"):
        ext.scan_bwd(torch.zeros_like(hs), a["h0"], hs, torch.empty(0, dtype=torch.float64), a["w_hh"],
                     a["w_int"], a["w_out"], None)


# ---------------------------------------------------------------------------------------------
# build, load and fallback
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def fresh_loader(monkeypatch):
    """Forget the loaded kernel for this test (the real one comes back afterwards)."""
    monkeypatch.setattr(cpu, "_extension", None)
    monkeypatch.setattr(cpu, "_failure", None)
    backends._reset_for_tests()
    return monkeypatch


def _simulate_failed_build(monkeypatch):
    def fail():
        raise RuntimeError("Error building extension 'diru_fast_cpu': simulated compiler failure")
    monkeypatch.setattr(cpu, "_load_extension", fail)


def test_failed_build_auto_falls_back_to_torch_with_exactly_one_warning(fresh_loader):
    _simulate_failed_build(fresh_loader)
    assert "cpu" not in diru_fast.available_backends("cpu")
    torch.manual_seed(0)
    model = DIRU(1, 8, 1)
    x = torch.randn(2, 5, 1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y1 = model(x)
        y2 = model(x)
    fallback = [w for w in caught if "passing over 'cpu'" in str(w.message)]
    assert len(fallback) == 1 and len(caught) == 1
    assert "simulated compiler failure" in str(fallback[0].message)
    model.backend = "torch"
    assert torch.equal(y1, model(x)) and torch.equal(y1, y2)


def test_failed_build_explicit_cpu_raises_naming_the_fix(fresh_loader):
    _simulate_failed_build(fresh_loader)
    with pytest.raises(BackendUnavailableError) as info:
        DIRU(1, 8, 1, backend="cpu")(torch.randn(2, 3, 1))
    message = str(info.value)
    assert "simulated compiler failure" in message
    assert "pip install --no-build-isolation -e ." in message and "C++ compiler" in message


def test_missing_compiler_makes_the_backend_unavailable_with_one_message(fresh_loader, tmp_path, capfd):
    """The real first-use build, with the compiler missing and no ahead-of-time module."""
    fresh_loader.setattr(cpu, "_import_aot", lambda source_hash: None)
    fresh_loader.setenv("CXX", str(tmp_path / "no-such-c++"))
    fresh_loader.setenv("DIRU_FAST_CACHE", str(tmp_path / "cache"))
    reason = cpu.unavailable_reason()
    assert reason is not None and "could not be built or loaded" in reason
    assert cpu.unavailable_reason() is reason  # tried once per process
    err = capfd.readouterr().err
    assert err.count("diru_fast: compiling the C++ CPU kernel") == 1
    with pytest.raises(BackendUnavailableError, match="Fix: install a C\\+\\+ compiler"):
        backends.resolve_backend("cpu", torch.device("cpu"), torch.float32)
    with pytest.warns(RuntimeWarning, match="passing over 'cpu'"):
        assert backends.resolve_backend("auto", torch.device("cpu"), torch.float32) == "torch"


def test_package_imports_and_falls_back_without_a_compiler(tmp_path):
    """A fresh process with no compiler and no ahead-of-time module: `import diru_fast` works,
    nothing is compiled at import, auto falls back with one warning, explicit "cpu" raises."""
    script = textwrap.dedent("""
        import sys, warnings
        sys.modules["diru_fast._C"] = None  # no ahead-of-time build
        import torch, diru_fast
        from diru_fast.providers import cpu
        assert cpu._extension is None and cpu._failure is None, "loaded at import"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y = diru_fast.DIRU(1, 4, 1)(torch.randn(2, 3, 1))
        print("warnings", len(caught), "|", caught[0].message if caught else "")
        try:
            diru_fast.DIRU(1, 4, 1, backend="cpu")(torch.randn(2, 3, 1))
        except diru_fast.BackendUnavailableError as exc:
            print("raised", exc)
        print("backends", diru_fast.available_backends("cpu"))
    """)
    env = dict(os.environ, CXX=str(tmp_path / "no-such-c++"), DIRU_FAST_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "warnings 1 | diru_fast: backend 'auto' uses 'torch'" in out.stdout
    assert "raised backend='cpu' cannot run" in out.stdout and "pip install --no-build-isolation" in out.stdout
    listed = [line for line in out.stdout.splitlines() if line.startswith("backends ")]
    assert len(listed) == 1 and "'cpu'" not in listed[0] and "'torch'" in listed[0]
    assert out.stderr.count("compiling the C++ CPU kernel") == 1


def test_stale_ahead_of_time_module_is_not_used(monkeypatch):
    current = _build.cpu_source_hash(_build.csrc_dir())
    fake = types.ModuleType(_build.AOT_MODULE)
    fake.source_hash = "src0000000000000000"
    monkeypatch.setitem(sys.modules, _build.AOT_MODULE, fake)
    assert cpu._import_aot(current) is None
    fake.source_hash = current
    assert cpu._import_aot(current) is fake


def test_first_use_build_compiles_once_then_loads_from_the_cache(monkeypatch, tmp_path, capfd):
    """_jit_build: with nothing cached, one message and one cpp_extension.load into the
    per-hash cache directory; with the module cached, a direct import and no message."""
    from torch.utils import cpp_extension

    monkeypatch.setenv("DIRU_FAST_CACHE", str(tmp_path))
    csrc = _build.csrc_dir()
    source_hash = _build.cpu_source_hash(csrc)
    calls, imports = [], []
    sentinel = types.ModuleType("built")

    def fake_load(**kwargs):
        calls.append(kwargs)
        Path(kwargs["build_directory"], kwargs["name"] + ".so").write_bytes(b"")
        return sentinel

    monkeypatch.setattr(cpp_extension, "load", fake_load)
    monkeypatch.setattr(cpu, "_import_from_path", lambda name, path: imports.append(path) or sentinel)
    assert cpu._jit_build(csrc, source_hash) is sentinel
    assert len(calls) == 1 and not imports
    build_dir = Path(calls[0]["build_directory"])
    assert build_dir.parent.parent == tmp_path and build_dir.name == source_hash
    assert f"-DDIRU_CSRC_HASH={source_hash}" in calls[0]["extra_cflags"]
    assert sorted(Path(s).name for s in calls[0]["sources"]) == sorted(_build.CPU_SOURCES)
    assert capfd.readouterr().err.count("compiling the C++ CPU kernel") == 1
    assert cpu._jit_build(csrc, source_hash) is sentinel  # second process / call: cached
    assert len(calls) == 1 and imports == [build_dir / (calls[0]["name"] + ".so")]
    assert "compiling" not in capfd.readouterr().err


def test_ahead_of_time_build_compiles_with_the_kernel_flags_alone():
    """setup.py keeps the compiler (and a wrapper) of the command setuptools makes and drops the
    interpreter's flags, so both builds compile the kernel with cpu_cxx_flags alone."""
    assert _build.aot_compile_command(["gcc", "-Wsign-compare", "-DNDEBUG", "-g", "-fwrapv", "-O3", "-Wall",
                                       "-fPIC"]) == ["gcc", "-fPIC"]
    assert _build.aot_compile_command(["ccache", "x86_64-conda-linux-gnu-cc", "-march=nocona", "-O2",
                                       "-isystem", "/opt/conda/include"]) == ["ccache", "x86_64-conda-linux-gnu-cc",
                                                                              "-fPIC"]
    setup_text = (ROOT / "setup.py").read_text()
    assert "build.aot_compile_command(compiler_so)" in setup_text


def test_source_hash_covers_every_cpu_source():
    csrc = _build.csrc_dir()
    on_disk = {p.name for p in csrc.iterdir() if p.name.startswith("diru_cpu")}
    assert on_disk == set(_build.CPU_SOURCES + _build.CPU_HEADERS)


@needs_kernel
def test_loaded_module_was_built_from_these_sources():
    assert cpu.extension().source_hash == _build.cpu_source_hash(_build.csrc_dir())
