"""Every Triton kernel configuration the dispatcher can pick compiles for sm_80 and sm_90 without a
GPU, fits shared memory, and does not spill (kernels/compile_check.py; it needs the compiler, not
the interpreter, so it runs in a subprocess without TRITON_INTERPRET)."""

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _has_triton_cuda_backend():
    try:
        from triton.backends.nvidia.compiler import get_ptxas  # noqa: F401
    except Exception:  # noqa: BLE001
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(not _has_triton_cuda_backend(),
                    reason="triton (with its NVIDIA backend and ptxas) is not installed")
def test_every_dispatcher_config_compiles_for_sm80_and_sm90(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    out_json = tmp_path / "compile.json"
    proc = subprocess.run([sys.executable, str(ROOT / "kernels" / "compile_check.py"), "--workers", "2",
                           "--json", str(out_json)], capture_output=True, text=True, env=env, cwd=str(ROOT),
                          timeout=1200)
    print(proc.stdout[-6000:])  # the register / shared-memory table, shown with -s or on failure
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = json.loads(out_json.read_text())
    config = importlib.import_module("diru_fast.kernels.config")  # the dispatcher's table
    picked = {(cfg.label(), dtype) for cfg, dtype in config.all_configs()}
    for arch in (80, 90):
        compiled = {(r["config"], r["dtype"]) for r in rows if r["arch"] == arch and r["even"]}
        assert compiled == picked, f"sm_{arch}: configs not compiled: {picked - compiled}"
    for r in rows:
        assert r["shared"] <= r["shared_limit"]
        assert r["registers"] > 0 and (not r["even"] or r["spill_stores"] == 0), r
