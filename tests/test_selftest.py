"""``python -m diru_fast selftest`` / ``diru_fast.selftest()``: every backend that runs here passes on
this machine, a wrong kernel FAILS with its error beside the tolerance, a missing required backend
fails, and the command exits 1 on any failure."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import diru_fast
from diru_fast import selftest as st

ROOT = Path(__file__).resolve().parent.parent


def _run(**kwargs):
    out = io.StringIO()
    report = st.run(out=out, **kwargs)
    return report, out.getvalue()


@pytest.mark.parametrize("backend", ["torch", "reference", "cpu"])
def test_every_cpu_backend_passes_every_dtype(backend):
    if diru_fast.backends.why_unavailable(backend, "cpu") is not None:
        pytest.skip(f"backend {backend!r} cannot run here: {diru_fast.backends.why_unavailable(backend, 'cpu')}")
    report, text = _run(devices=["cpu"], only=[backend])
    assert report.ok, text
    dtypes = {r.dtype for r in report.results}
    expected = {"float64", "float32", "bfloat16", "float16"}
    assert dtypes == expected, text
    for r in report.results:
        # the layer case on every backend: output, h_n, input/state grads and 28 parameter grads
        assert r.checks >= 32 and r.error <= r.tolerance and f"{r.backend:9} {r.dtype:8}" in text
    if backend == "cpu":  # a kernel backend: two scan cases and the options case, with the inference forward,
        # and the options in the step (hs and the gradients of the seven inputs, lambda and dt)
        assert all(r.checks == 32 + 3 * 9 + 10 for r in report.results)
    assert text.splitlines()[-1].startswith("selftest passed")


def test_triton_in_the_interpreter_passes():
    if "triton" not in diru_fast.available_backends("cpu"):
        pytest.skip("triton does not run on CPU here (TRITON_INTERPRET=1 is set by tests/conftest.py without a GPU)")
    # float64 (the 1e-10 rule) and bfloat16 (the interpreter rounding to nearest as the GPU does); the
    # interpreter is slow, and tests/providers/test_triton*.py cover the rest
    report, text = _run(devices=["cpu"], only=["triton"], dtypes=["float64", "bfloat16"])
    assert report.ok, text
    assert {r.dtype for r in report.results} == {"float64", "bfloat16"}, text
    # the layer case, two scan cases, the options case, the options in the step
    assert all(r.checks == 32 + 3 * 9 + 10 for r in report.results)


def test_the_header_names_the_versions_and_why_a_backend_cannot_run():
    report, text = _run(devices=["cpu"], only=["torch", "cuda"], dtypes=["float64"])
    head = text.splitlines()[1]
    for part in (f"torch {torch.__version__}", "torch.version.cuda", "cudnn", "triton", "compiler", "nvcc"):
        assert part in head, head
    if diru_fast.backends.why_unavailable("cuda", "cpu") is not None:
        assert "cpu/cuda" in report.unavailable
        assert "cannot run here: " + report.unavailable["cpu/cuda"] in text


def test_a_wrong_kernel_fails_with_its_error_beside_the_tolerance(monkeypatch):
    """The cpu provider's forward made wrong by one part in 10^8: float64 FAILS (10^-8 > 10^-10),
    the line says which quantity and by how much, and the report is not ok."""
    if diru_fast.backends.why_unavailable("cpu", "cpu") is not None:
        pytest.skip("the C++ CPU kernel is unavailable here")
    provider = diru_fast.backends.get_provider("cpu")
    real = provider.scan_fwd

    def off_by_a_little(xp, h0, *rest):
        hs, saved = real(xp, h0, *rest)
        return hs * (1 + 1e-8), saved

    monkeypatch.setattr(provider, "scan_fwd", off_by_a_little)
    report, text = _run(devices=["cpu"], only=["cpu"], dtypes=["float64"])
    assert not report.ok
    bad = next(r for r in report.results if r.dtype == "float64")
    assert not bad.ok and bad.error > bad.tolerance == st.FLOAT64_TOL
    assert "FAIL  cpu  cpu       float64" in text and "why: " in text and " > 1.00e-10" in text
    assert text.splitlines()[-1].startswith("selftest FAILED")


def test_a_crashing_kernel_fails_with_the_exception(monkeypatch):
    if diru_fast.backends.why_unavailable("cpu", "cpu") is not None:
        pytest.skip("the C++ CPU kernel is unavailable here")
    provider = diru_fast.backends.get_provider("cpu")

    def broken(*args):
        raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setattr(provider, "scan_bwd", broken)
    report, text = _run(devices=["cpu"], only=["cpu"], dtypes=["float32"])
    assert not report.ok and len(report.results) == 1 and not report.results[0].ok
    assert "raised RuntimeError: no kernel image is available" in text


def test_a_required_backend_that_cannot_run_fails():
    missing = next((b for b in ("cuda", "triton", "cpu") if diru_fast.backends.why_unavailable(b) is not None), None)
    if missing is None:
        pytest.skip("every backend runs here: none can be missing")
    report, text = _run(devices=["cpu"], only=["torch"], require=[missing])
    assert not report.ok and report.required_missing == [missing]
    assert f"FAIL  required backend {missing!r} did not run" in text


def test_command_line_writes_json_and_exits_by_the_verdict(tmp_path):
    """Also --jobs 2 (each combination in its own process, as bench/gpu_check.sh runs it on a GPU): the
    same results, in the same order, as checked in this process."""
    path = tmp_path / "selftest.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    ok = subprocess.run([sys.executable, "-m", "diru_fast", "selftest", "--device", "cpu", "--backend", "torch",
                         "--dtype", "float64", "--dtype", "bfloat16", "--jobs", "2", "--json", str(path)],
                        capture_output=True, text=True, env=env, cwd=str(ROOT), timeout=300)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    data = json.loads(path.read_text())
    assert data["ok"] and [r["dtype"] for r in data["results"]] == ["float64", "bfloat16"]
    here, _ = _run(devices=["cpu"], only=["torch"], dtypes=["float64", "bfloat16"])
    assert [(r["checks"], r["worst"], r["error"]) for r in data["results"]] == \
        [(r.checks, r.worst, r.error) for r in here.results]
    assert data["versions"]["torch"] == torch.__version__
    missing = next((b for b in ("cuda", "triton") if diru_fast.backends.why_unavailable(b) is not None), None)
    if missing is not None:
        bad = subprocess.run([sys.executable, "-m", "diru_fast", "selftest", "--device", "cpu", "--backend", "torch",
                              "--dtype", "float64", "--require", missing], capture_output=True, text=True, env=env,
                             cwd=str(ROOT), timeout=300)
        assert bad.returncode == 1 and "required backend" in bad.stdout


def test_selftest_is_callable_from_the_package_and_loaded_lazily():
    code = ("import sys, io, diru_fast\nassert 'diru_fast.selftest' not in sys.modules\n"
            "r = diru_fast.selftest(devices=['cpu'], only=['torch'], out=io.StringIO(), dtypes=['float64'])\n"
            "import diru_fast.selftest\nassert callable(diru_fast.selftest)\n"
            "print(r.ok, type(r).__name__, 'selftest' in diru_fast.__all__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=str(ROOT),
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["True", "Report", "True"]
