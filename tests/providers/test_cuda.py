"""The CUDA C++ backend where no GPU is needed: the sources compile for sm_80 and sm_90, the
kernels' own source runs on the CPU (cuda_host_harness.cpp: one host thread per CUDA thread)
against the float64 contract, plain and with every option, and the provider says why it is
unavailable. Its numbers on a GPU: tests/providers/test_cuda_gpu.py (the CPU twins of those checks
are the harness cases here and the conformance suite, tests/scan/test_ops.py)."""

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

ROOT = Path(__file__).resolve().parents[2]
CUDA_DIR = ROOT / "csrc" / "cuda"
NVCC = shutil.which("nvcc")


def _torch_includes():
    from torch.utils.cpp_extension import include_paths

    return include_paths()


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH: the CUDA kernel source cannot be compile-checked")
def test_kernel_source_compiles_for_sm80_and_sm90(tmp_path):
    """Every kernel entry compiles for sm_80 and sm_90 without spilling (bench/cuda_compile_check.py's
    nvcc command and ptxas report; its table: bench/results/cuda-compile.txt)."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import cuda_compile_check as check
    finally:
        sys.path.remove(str(ROOT / "bench"))
        sys.modules.pop("cuda_compile_check", None)
    out = subprocess.run(check.nvcc_command(NVCC, tmp_path / "diru_scan.o"), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    log = out.stdout + out.stderr
    rows = check.entries(log)
    # the plain instantiation (kOpt = false) and the options one (every option, time decay included) of
    # each kernel, for each dtype and arch
    names = {(r["kernel"], r["inst"], r["dtype"], r["arch"]) for r in rows}
    assert names == {(f, o, t, a) for f in ("fwd", "bwd") for o in ("plain", "opt")
                     for t in ("float32", "float64", "float16", "bfloat16") for a in ("sm_80", "sm_90")}
    assert len(rows) == 32  # 2 kernels x 2 instantiations x 4 dtypes x 2 archs
    assert all(r["spill_stores"] == 0 and r["spill_loads"] == 0 for r in rows), \
        check.table(rows)


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


def test_provider_fuses_every_option():
    """The kernels fuse all the contract's options (their numbers: the CPU harness cases below and
    tests/providers/test_cuda_gpu.py)."""
    from diru_fast.providers import ALL_OPTIONS
    from diru_fast.providers import cuda as provider

    assert provider.OPTIONS == ALL_OPTIONS


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


# ---- the kernels' source run on the CPU (tests/providers/cuda_host_harness.cpp) -----------------

HARNESS_SOURCE = Path(__file__).resolve().parent / "cuda_host_harness.cpp"


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    if shutil.which("g++") is None or NVCC is None:
        pytest.skip("g++ and the CUDA toolkit's headers (nvcc) are needed to run the kernel source on the CPU")
    exe = tmp_path_factory.mktemp("harness") / "cuda_host_harness"
    cmd = ["g++", "-std=c++20", "-O1", "-pthread", "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
           "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", f"-I{_cuda_include()}", f"-I{CUDA_DIR}", str(HARNESS_SOURCE),
           "-o", str(exe)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    return exe


def _write(folder, name, t):
    (folder / name).write_bytes(t.contiguous().numpy().tobytes())


def _read(folder, name, shape):
    import numpy as np

    return torch.from_numpy(np.fromfile(folder / name, dtype=np.float64)).reshape(shape)


def _harness(exe, mode, opt, folder, threads):
    out = subprocess.run([str(exe), mode, "1" if opt else "0", str(folder), str(threads)], capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]


def time_decay(T, B, d, lengths=None, seed=0):
    """Time-decay factors as a caller forms them, ``decay_t = exp(-softplus(lambda) dt_t)`` [T, B, d]
    float64 (lambda [d], irregular intervals dt [T, B, 1] from 0 to about 3), NaN on padded steps
    (t >= lengths[b]): the kernels must keep those rows' state undecayed, never reading them."""
    g = torch.Generator().manual_seed(seed)
    lam = torch.randn(d, generator=g, dtype=torch.float64)
    dt = -torch.log(torch.rand(T, B, 1, generator=g, dtype=torch.float64))  # exponential intervals
    decay = torch.exp(-torch.nn.functional.softplus(lam) * dt)
    if lengths is not None:
        padded = torch.arange(T).unsqueeze(1) >= lengths.cpu().unsqueeze(0)  # [T, B]
        decay[padded] = float("nan")
    return decay


# meta.txt's fields after need_saved: has_rate hash_mask seed_lo seed_hi threshold scale want_o (all off here)
NO_IN_STEP = [0, 0, 0, 0, 0, 1.0, 0]

# (T, B, d, sizes, dropout, activation, decay, lengths, threads, instantiation): T=1 / B=1, odd B (3,
# 5: a partial block; 9: three blocks), d=48 and d=300 (a thread owns two units), unequal
# compartments, a compartment map that is not contiguous ("shuffled"), 16 and 32 threads per block
# (each thread several units), the options instantiation with every option off, and time decay
# alone and with each other option (attention k=3, relu, dropout) and all of them (T=8, B=3: rows of
# lengths 8, 1 and 2, most steps padded)
HARNESS_CASES = [
    (7, 3, 48, None, None, None, False, True, 0, "plain"),
    (3, 5, 300, None, None, None, False, True, 0, "plain"),
    (1, 1, 4, None, None, None, False, False, 0, "plain"),
    (7, 3, 48, None, None, None, False, True, 0, "opt"),
    (7, 3, 48, None, None, "relu", False, True, 0, "opt"),
    (6, 5, 48, [5, 7, 12, 24], None, None, False, True, 0, "opt"),
    (6, 3, 48, [16, 16, 16], None, None, False, False, 16, "opt"),
    (5, 9, 24, "shuffled", None, None, False, True, 0, "opt"),
    (7, 3, 48, None, 0.3, None, False, True, 0, "opt"),
    (5, 5, 24, [5, 7, 12], 0.3, "relu", False, True, 32, "opt"),
    (1, 1, 4, [1, 3], 0.5, "relu", False, False, 0, "opt"),
    (3, 5, 300, [100, 120, 80], 0.2, "relu", False, True, 0, "opt"),
    (8, 3, 48, None, None, None, True, True, 0, "opt"),
    (8, 3, 48, None, None, None, True, False, 0, "opt"),
    (1, 1, 4, None, None, None, True, False, 0, "opt"),
    (1, 3, 48, None, None, None, True, True, 0, "opt"),
    (6, 5, 48, [16, 16, 16], None, None, True, True, 16, "opt"),
    (8, 3, 48, None, None, "relu", True, True, 0, "opt"),
    (8, 3, 48, None, 0.3, None, True, True, 0, "opt"),
    (5, 9, 24, [5, 7, 12], 0.3, "relu", True, True, 32, "opt"),
    (3, 5, 300, [100, 120, 80], 0.2, "relu", True, True, 0, "opt"),
]


@pytest.mark.parametrize("case", HARNESS_CASES, ids=lambda c: "T{}-B{}-d{}-{}-p{}-{}-{}-{}-t{}-{}".format(
    *c[:3], "x".join(map(str, c[3])) if isinstance(c[3], list) else c[3], c[4], c[5],
    "decay" if c[6] else "nodecay", *c[7:]))
def test_kernel_source_on_cpu_matches_contract(harness, case, tmp_path):
    """The kernels of diru_scan_kernels.cuh, compiled by g++ and run one host thread per CUDA
    thread (shared memory NaN-filled, outputs NaN-poisoned), give the float64 contract's forward
    (states, saved gates; the inference forward the same states) and backward to 1e-12."""
    from diru_fast.scan import contract
    from tests.helpers import contract_inputs

    T, B, d, sizes, dropout, activation, with_decay, with_lengths, threads, inst = case
    shuffled = sizes == "shuffled"
    a, opts = contract_inputs(T, B, d, sizes=[7, 9, 8] if shuffled else sizes, dropout=dropout,
                              activation=activation or "tanh")
    if shuffled:  # the same compartments, their units spread over the hidden vector
        opts["compartment_of"] = opts["compartment_of"][torch.randperm(d, generator=torch.Generator().manual_seed(3))]
    k = 0 if opts["compartment_of"] is None else int(opts["compartment_of"].max()) + 1
    lengths = torch.tensor([max(1, T - (7 * b) % T) for b in range(B)]) if with_lengths else None
    if with_decay:
        opts["decay"] = time_decay(T, B, d, lengths, seed=T + B + d)
        _write(tmp_path, "decay", opts["decay"])
    meta = [T, B, d, k, int(opts["activation"] == "relu"), int(lengths is not None), int(opts["mask"] is not None),
            int(with_decay)]
    for n in ("xp", "h0", "b_int", "b_out"):
        _write(tmp_path, n, a[n])
    for n in ("w_hh", "w_int", "w_out"):
        _write(tmp_path, n + "_t", a[n].t())  # the forward takes W^T, as the bindings pass it
        _write(tmp_path, n, a[n])
    if lengths is not None:
        _write(tmp_path, "lengths", lengths)
    if k:
        _write(tmp_path, "compartment_of", opts["compartment_of"].to(torch.int32))
    if opts["mask"] is not None:
        _write(tmp_path, "mask", opts["mask"])
    hs_ref, saved_ref = contract.scan_fwd(**a, lengths=lengths, need_saved=True, **opts)

    (tmp_path / "meta.txt").write_text(" ".join(map(str, meta + [0] + NO_IN_STEP)))
    _harness(harness, "fwd", inst == "opt", tmp_path, threads)
    hs_infer = _read(tmp_path, "hs", (T, B, d))
    (tmp_path / "meta.txt").write_text(" ".join(map(str, meta + [1] + NO_IN_STEP)))
    _harness(harness, "fwd", inst == "opt", tmp_path, threads)
    hs, saved = _read(tmp_path, "hs", (T, B, d)), _read(tmp_path, "saved", (T, B, 4 * d + k))
    torch.testing.assert_close(hs, hs_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(saved, saved_ref, rtol=1e-12, atol=1e-12)
    assert torch.equal(hs_infer, hs)

    grad = torch.randn(T, B, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    _write(tmp_path, "grad_hs", grad)
    _write(tmp_path, "hs", hs_ref)
    _write(tmp_path, "saved", saved_ref)
    _harness(harness, "bwd", inst == "opt", tmp_path, threads)
    want = contract.scan_bwd(grad, a["h0"], hs_ref, saved_ref, a["w_hh"], a["w_int"], a["w_out"], lengths, **opts)
    shapes = [(T, B, 3 * d + k), (T, B, d), (T, B, d), (B, d)]
    for name, shape, w in zip(("d_p", "d_zp", "d_yp", "d_h0"), shapes, want):
        torch.testing.assert_close(_read(tmp_path, name, shape), w, rtol=1e-12, atol=1e-12,
                                   msg=lambda m, name=name: f"{name}: {m}")


# (T, B, d, compartment sizes, activation, lengths, threads): two blocks and a partial one (B=5, 9), a thread
# owning several units (16 threads at d=48; d=300), T=1 B=1 without lengths
IN_STEP_CASES = [
    (5, 5, 24, [5, 7, 12], "relu", True, 0),
    (4, 3, 48, None, "tanh", True, 16),
    (1, 1, 4, None, "tanh", False, 0),
    (3, 9, 300, [100, 120, 80], "relu", True, 0),
]


@pytest.mark.parametrize("case", IN_STEP_CASES, ids=lambda c: "T{}-B{}-d{}-{}-{}-{}-t{}".format(
    *c[:3], "x".join(map(str, c[3])) if c[3] else "noatt", c[4], "lengths" if c[5] else "full", c[6]))
def test_kernel_source_in_step_options_on_cpu_match_contract(harness, case, tmp_path):
    """The options formed in the step (time decay from its rates and gaps, the dropout mask hashed from its
    seed: diru_fast/scan/dropout.py's hash, so the mask tensor the contract gets is the same mask) with
    attention, relu and lengths: the kernel source run on the CPU (float64) gives the contract's forward and
    backward to 1e-12, and the backward's extra outputs (the decayed states, dL/drate summed over the
    blocks, dL/ddt, the integration inputs) match the contract's own."""
    from diru_fast.scan import contract
    from diru_fast.scan.dropout import CompartmentMask, threshold
    from tests.helpers import contract_inputs

    T, B, d, sizes, activation, with_lengths, threads = case
    a, opts = contract_inputs(T, B, d, sizes=sizes, activation=activation, seed=T + B + d)
    k = 0 if opts["compartment_of"] is None else len(sizes)
    lengths = torch.tensor([max(1, T - (7 * b) % T) for b in range(B)]) if with_lengths else None
    g = torch.Generator().manual_seed(d)
    rate = torch.nn.functional.softplus(torch.randn(d, generator=g, dtype=torch.float64))
    dt = torch.rand(T, B, generator=g, dtype=torch.float64) * 2
    torch.manual_seed(T * B)
    seeded = CompartmentMask.draw(T, B, d, 0.3, torch.float64, "cpu")
    seed = int(seeded.seed)
    meta = [T, B, d, k, int(activation == "relu"), int(lengths is not None), 0, 0]
    in_step = [1, 1, seed & 0xFFFFFFFF, seed >> 32, threshold(seeded.p), repr(seeded.scale), 1]
    for n in ("xp", "h0", "b_int", "b_out"):
        _write(tmp_path, n, a[n])
    for n in ("w_hh", "w_int", "w_out"):
        _write(tmp_path, n + "_t", a[n].t())
        _write(tmp_path, n, a[n])
    _write(tmp_path, "rate", rate)
    _write(tmp_path, "dt", dt)
    if lengths is not None:
        _write(tmp_path, "lengths", lengths)
    if k:
        _write(tmp_path, "compartment_of", opts["compartment_of"].to(torch.int32))

    # the contract on the factors and the mask's tensor, differentiated to the rates and gaps by autograd
    rates, gaps = rate.clone().requires_grad_(), dt.clone().requires_grad_()
    decay = torch.exp(-rates * gaps.unsqueeze(-1))
    opts = dict(opts, mask=seeded.tensor())
    hs_ref, saved_ref = contract.scan_fwd(**a, lengths=lengths, need_saved=True, **opts, decay=decay.detach())
    grad = torch.randn(T, B, d, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    want = contract.scan_bwd(grad, a["h0"], hs_ref, saved_ref, a["w_hh"], a["w_int"], a["w_out"], lengths, **opts,
                             decay=decay.detach())
    h_prev, hd_ref = contract.decayed_states(a["h0"], hs_ref, decay.detach())
    d_rate_ref, d_dt_ref = torch.autograd.grad(decay, (rates, gaps), (want[2] + want[0] @ a["w_hh"]) * h_prev)
    o_ref = contract.integration_input(saved_ref, d, opts["compartment_of"], opts["mask"])

    (tmp_path / "meta.txt").write_text(" ".join(map(str, meta + [0] + in_step)))
    _harness(harness, "fwd", True, tmp_path, threads)
    hs_infer = _read(tmp_path, "hs", (T, B, d))
    (tmp_path / "meta.txt").write_text(" ".join(map(str, meta + [1] + in_step)))
    _harness(harness, "fwd", True, tmp_path, threads)
    hs, saved = _read(tmp_path, "hs", (T, B, d)), _read(tmp_path, "saved", (T, B, 4 * d + k))
    torch.testing.assert_close(hs, hs_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(saved, saved_ref, rtol=1e-12, atol=1e-12)
    assert torch.equal(hs_infer, hs)

    _write(tmp_path, "grad_hs", grad)
    _write(tmp_path, "hs", hs_ref)
    _write(tmp_path, "saved", saved_ref)
    _harness(harness, "bwd", True, tmp_path, threads)
    blocks = (B + 3) // 4  # kRows = 4 rows a block
    got = [_read(tmp_path, n, s) for n, s in (("d_p", (T, B, 3 * d + k)), ("d_zp", (T, B, d)), ("d_yp", (T, B, d)),
                                               ("d_h0", (B, d)), ("hd", (T, B, d)))]
    got += [_read(tmp_path, "d_rate", (blocks, d)).sum(0), _read(tmp_path, "d_dt", (T, B)), _read(tmp_path, "o", (T, B, d))]
    names = ("d_p", "d_zp", "d_yp", "d_h0", "hd", "d_rate", "d_dt", "o")
    for name, x, w in zip(names, got, list(want) + [hd_ref, d_rate_ref, d_dt_ref, o_ref]):
        torch.testing.assert_close(x, w.detach(), rtol=1e-12, atol=1e-12, msg=lambda m, name=name: f"{name}: {m}")
