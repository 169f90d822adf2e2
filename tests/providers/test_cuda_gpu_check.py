"""bench/gpu_check.sh and bench/gpu_bench.py run on CPU (--dry-run / --device cpu --tiny), so the
one-call GPU check does not first fail on the GPU machine from a typo."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import gpu_bench  # noqa: E402

sys.path.remove(str(ROOT / "bench"))


def test_summary_table_ratios_and_counts():
    rows = [dict(impl="triton", dtype="bfloat16", mode="fwdbwd", B=16, T=50, d=64, ms=2.0, peak_mb=3.0),
            dict(impl="lstm", dtype="bfloat16", mode="fwdbwd", B=16, T=50, d=64, ms=3.0, peak_mb=4.0),
            dict(impl="reference", dtype="bfloat16", mode="fwdbwd", B=16, T=50, d=64, ms=90.0, peak_mb=None),
            dict(impl="triton", dtype="bfloat16", mode="fwdbwd", B=16, T=512, d=64, ms=20.0, peak_mb=3.0),
            dict(impl="lstm", dtype="bfloat16", mode="fwdbwd", B=16, T=512, d=64, ms=10.0, peak_mb=4.0),
            dict(impl="reference", dtype="bfloat16", mode="fwdbwd", B=16, T=512, d=64, ms=921.6, peak_mb=None,
                 extrapolated=True)]
    table = gpu_bench.summarize(rows)
    assert "1.50" in table and "45.0" in table and "921.600*" in table
    assert "no slower than cuDNN LSTM at 1/2 points" in table and "at 1/2 points" in table.splitlines()[-1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not available")
def test_gpu_check_dry_run(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), TRITON_INTERPRET="1")
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--dry-run"], capture_output=True,
                          text=True, env=env, cwd=str(ROOT), timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for name in ("env.txt", "gpu_check.log", "tests_triton.log", "tests_cuda.log", "gpu_bench.json",
                 "history_rows.csv", "summary.txt"):
        assert (tmp_path / name).is_file(), name
    result = json.loads((tmp_path / "gpu_bench.json").read_text())
    impls = {r["impl"] for r in result["rows"]}
    assert {"lstm", "reference"} <= impls and all(r["ms"] > 0 for r in result["rows"])
    assert proc.stdout.rstrip().splitlines()[-1].startswith("triton no slower than cuDNN LSTM")  # table last
