"""The Triton version gate (kernels/compat.py): its messages, the installed Triton passing it, and
an old Triton reported as the "triton" backend's reason for being unavailable."""

import importlib.util
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
import torch

import diru_fast

ROOT = Path(__file__).resolve().parents[2]


def _compat():
    """kernels/compat.py by path: pure Python, importable without triton."""
    spec = importlib.util.spec_from_file_location("_diru_kernels_compat", ROOT / "kernels" / "compat.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_version_parsing():
    c = _compat()
    assert c.parse_version("3.4.0") == (3, 4)
    assert c.parse_version("3.10.1+git1a2b3c") == (3, 10)
    assert c.parse_version("2.3") == (2, 3)
    assert c.parse_version("nightly") == (0, 0)


def test_gate_messages_name_the_version_and_the_fix():
    c = _compat()
    old = c.triton_problem("2.3.1", interpreted=False)
    assert "triton >= 3.0" in old and "found triton 2.3.1" in old and "pip install 'triton>=3.0'" in old
    assert c.triton_problem("3.0.0", interpreted=False, numpy_version="2.4.6") is None  # the GPU needs no numpy
    numpy_clash = c.triton_problem("3.4.0", interpreted=True, numpy_version="2.4.6")
    assert "NumPy 2.4.6" in numpy_clash and "'triton>=3.7'" in numpy_clash and "'numpy<2.4'" in numpy_clash
    assert c.triton_problem("3.4.0", interpreted=True, numpy_version="2.3.5") is None
    assert c.triton_problem("3.7.0", interpreted=True, numpy_version="2.4.6") is None
    assert "from triton 3.5" in c.float64_problem("3.4.0")
    assert c.float64_problem("3.5.1") is None
    with pytest.raises(ImportError, match="need triton >= 3.0"):
        c.check("2.1.0", False, None)


def test_interpreting_follows_knobs_or_the_environment(monkeypatch):
    c = _compat()

    class Knobs:  # triton >= 3.4
        class runtime:
            interpret = True

    assert c.interpreting(type("T", (), {"knobs": Knobs})) is True
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert c.interpreting(type("T", (), {})) is True  # triton < 3.4: the variable triton.jit reads
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert c.interpreting(type("T", (), {})) is False


@pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                    reason="triton is not installed (the test extra installs it: pip install -e '.[test]')")
def test_installed_triton_passes_the_gate_and_runs_every_interpreter_dtype():
    """The gate with the Triton and NumPy installed here: kernels import, and without a GPU the
    interpreter runs every dtype the tests use (else the interpreter suites would all skip)."""
    c = _compat()
    version = metadata.version("triton")
    k = importlib.import_module("diru_fast.kernels")  # runs compat.check first thing
    assert k.compat.triton_problem(version, k.INTERPRETED, c.installed_numpy()) is None
    if torch.cuda.is_available():
        return  # the interpreter is not used with a GPU: tests/providers/test_cuda_gpu.py checks the kernels
    reason = diru_fast.backends.why_unavailable("triton", "cpu")
    assert reason is None, f"the Triton interpreter cannot run here: {reason}"
    assert k.FLOAT64_PROBLEM is None, f"{k.FLOAT64_PROBLEM}: the float64 interpreter tests need triton >= 3.5"
    assert set(k.SUPPORTED_DTYPES) == {torch.float32, torch.float64, torch.bfloat16, torch.float16}


def test_an_old_triton_makes_the_backend_unavailable_with_the_reason(tmp_path):
    """A stand-in ``triton`` 2.3.1 first on the path: the backend is unavailable, and says why."""
    fake = tmp_path / "triton"
    fake.mkdir()
    (fake / "__init__.py").write_text('__version__ = "2.3.1"\n')
    code = textwrap.dedent("""
        import diru_fast
        print(diru_fast.backends.why_unavailable("triton"))
        print("triton" in diru_fast.available_backends())
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=str(ROOT),
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reason, listed = proc.stdout.strip().splitlines()[-2:]
    assert "need triton >= 3.0" in reason and "found triton 2.3.1" in reason, reason
    assert listed == "False"


def test_attention_needs_triton_3_3_and_an_older_one_leaves_it_out():
    """tl.gather (the attention kernels' per-unit compartment weight) arrived in Triton 3.3: an older
    one must not offer attention (the dispatcher then passes "triton" over for it) and a direct kernel
    call must say why, not fail in the compiler."""
    c = _compat()
    old = c.attention_problem("3.2.0")
    assert "triton >= 3.3" in old and "tl.gather" in old and "found triton 3.2.0" in old
    assert c.attention_problem("3.3.1") is None and c.attention_problem("3.9.0") is None
    assert c.fused_options("3.2.0") == {"relu", "dropout", "time_decay"}
    assert c.fused_options("3.6.0") == {"relu", "attention", "dropout", "time_decay"}


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_attention_refused_on_an_old_triton(monkeypatch):
    """The launcher's and the provider's behaviour with Triton 3.2's answers patched in (no kernel runs)."""
    k = importlib.import_module("diru_fast.kernels")
    c = _compat()
    monkeypatch.setattr(k.launch, "ATTENTION_PROBLEM", c.attention_problem("3.2.0"))
    monkeypatch.setattr(k, "OPTIONS", c.fused_options("3.2.0"))
    assert diru_fast.backends.provider_options("triton") == {"relu", "dropout", "time_decay"}
    T, B, d, nk = 2, 1, 4, 2
    z = lambda *s: torch.zeros(*s)  # noqa: E731
    with pytest.raises(NotImplementedError, match=r"needs triton >= 3.3 \(tl.gather\); found triton 3.2.0"):
        k.scan_fwd(z(T, B, 3 * d + nk), z(B, d), z(3 * d + nk, d), z(d, d), z(d), z(d, d), z(d), None, False,
                   compartment_of=torch.tensor([0, 0, 1, 1]))
