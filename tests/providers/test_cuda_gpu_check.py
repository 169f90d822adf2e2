"""bench/gpu_check.sh and bench/gpu_bench.py on CPU: the dry run of every step (so the one-call GPU
check does not first fail on the GPU machine from a typo), its verdict rules (a backend that is
unavailable, not built or ran zero tests FAILS; so does a step that timed out), the CUDA build's
causes, and the time budget. Scripts get this interpreter (``sys.executable``), never a python3
from PATH."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import gpu_bench  # noqa: E402

sys.path.remove(str(ROOT / "bench"))
SCRIPT = ROOT / "bench" / "gpu_check.sh"


def test_summary_table_ratios_and_counts():
    rows = [dict(impl="triton", dtype="bfloat16", mode="fwdbwd", B=16, T=50, d=64, ms=2.0, peak_mb=3.0),
            dict(impl="lstm", dtype="bfloat16", mode="fwdbwd", B=16, T=50, d=64, ms=3.0, peak_mb=4.0,
                 lstm_path="native"),
            dict(impl="reference", dtype="bfloat16", mode="fwdbwd", B=16, T=50, d=64, ms=90.0, peak_mb=None),
            dict(impl="triton", dtype="bfloat16", mode="fwdbwd", B=16, T=512, d=64, ms=20.0, peak_mb=3.0),
            dict(impl="lstm", dtype="bfloat16", mode="fwdbwd", B=16, T=512, d=64, ms=10.0, peak_mb=4.0),
            dict(impl="reference", dtype="bfloat16", mode="fwdbwd", B=16, T=512, d=64, ms=921.6, peak_mb=None,
                 extrapolated=True),
            dict(impl="triton_tf32", dtype="float32", mode="fwd", B=64, T=50, d=128, ms=1.0, peak_mb=1.0),
            dict(impl="lstm_tf32", dtype="float32", mode="fwd", B=64, T=50, d=128, ms=1.5, peak_mb=1.0),
            dict(impl="lstm", dtype="float16", mode="fwd", B=64, T=50, d=128, ms=1.5, peak_mb=1.0,
                 persistent_eligible=True)]
    table = gpu_bench.summarize(rows)
    lines = table.splitlines()
    assert "1.50" in table and "45.0" in table and "921.600*" in table
    assert "3.000n" in table  # nn.LSTM that did not reach cuDNN is flagged
    assert "1.500P" in table  # cuDNN's persistent algorithm eligible
    row = next(line for line in lines if line.startswith("bfloat16 fwdbwd   16   50"))
    assert f"{gpu_bench.gpu_model.predicted_ratio('bfloat16', 'fwdbwd', 16, 50, 64):.2f}" in row  # the model
    tf32 = next(line for line in lines if line.startswith("float32  fwd      64"))
    assert tf32.split("|")[3].split()[-1] == "1.50"  # the TF32 pair's ratio
    assert lines[-1].startswith("triton no slower than cuDNN LSTM at 1/2 points")


def _write_out(out: Path, triton_tests=3, triton_skipped=0, build="built", cuda_tests=2, steps=()):
    out.mkdir(parents=True, exist_ok=True)
    (out / "env.json").write_text(json.dumps(dict(gpu="H100", torch="2.x", torch_cuda="12.8", why_unavailable=dict(
        triton={"float32": None, "bfloat16": None, "float16": None, "float64": "not on the GPU"},
        cuda={"float32": None}))))
    (out / "selftest.json").write_text(json.dumps(dict(ok=True, required_missing=[], results=[
        dict(ok=True, backend="triton", dtype="float32", device="cuda")])))

    def junit(name, tests, skipped):
        (out / name).write_text(f'<?xml version="1.0"?><testsuites><testsuite name="pytest" errors="0" failures="0" '
                                f'skipped="{skipped}" tests="{tests}"></testsuite></testsuites>')

    junit("tests_triton.xml", triton_tests, triton_skipped)
    if cuda_tests is not None:
        junit("tests_cuda.xml", cuda_tests, 0)
    (out / "build_cuda.status").write_text(build + "\n")
    (out / "gpu_bench.json").write_text(json.dumps(dict(rows=[
        dict(impl="triton", dtype="float32", mode="fwd", B=16, T=50, d=64, ms=1.0, peak_mb=1.0),
        dict(impl="lstm", dtype="float32", mode="fwd", B=16, T=50, d=64, ms=2.0, peak_mb=1.0)], skipped=[])))
    (out / "steps.tsv").write_text("".join(f"{name}\t{rc}\t1\n" for name, rc in steps))


def test_final_summary_passes_only_when_every_backend_ran_tests(tmp_path):
    _write_out(tmp_path / "ok")
    text, ok = gpu_bench.final_summary(tmp_path / "ok")
    assert ok and text.splitlines()[-1] == "VERDICT: passed"
    assert re.search(r"^triton\s+available\s+3\s+3\s+0\s+0\s+passed", text, re.M)
    assert re.search(r"^cuda\s+built\s+2\s+2\s+0", text, re.M)
    assert "lstm/tri" in text  # the grid comes before the verdict
    cases = {
        "zero": (dict(triton_tests=5, triton_skipped=5), "triton", "ran zero tests"),
        "nvcc": (dict(build="not built: nvcc is not on PATH", cuda_tests=None), "cuda", "not built"),
        "timeout": (dict(steps=[("tests_triton", "124")]), "triton", "timed out after 3 tests"),
    }
    for name, (kwargs, backend, why) in cases.items():
        _write_out(tmp_path / name, **kwargs)
        text, ok = gpu_bench.final_summary(tmp_path / name)
        assert not ok and text.splitlines()[-1] == f"VERDICT: FAILED ({backend})", (name, text)
        assert re.search(rf"^{backend}\s.*FAILED: {why}", text, re.M), (name, text)
    (tmp_path / "ok" / "selftest.json").unlink()
    text, ok = gpu_bench.final_summary(tmp_path / "ok")
    assert not ok and "selftest" in text.splitlines()[-1]


def test_cuda_build_failures_say_which_cause(tmp_path):
    assert gpu_bench.build_decision("12.8", "12.4") is None
    assert "nvcc is not on PATH" in gpu_bench.build_decision("12.8", None)
    clash = gpu_bench.build_decision("12.8", "13.0")
    assert "CUDA 13.0" in clash and "CUDA 12.8" in clash and "refuses a different major version" in clash
    assert "no CUDA" in gpu_bench.build_decision(None, "13.0")
    (tmp_path / "build_cuda.status").write_text("rc=1\n")
    (tmp_path / "build_cuda.log").write_text("compiling...\n/x/diru_scan.cu(12): error: identifier \"foo\" is "
                                             "undefined\nmore\n")
    text, built = gpu_bench._build_status(tmp_path)
    assert not built and "error: identifier" in text
    (tmp_path / "build_cuda.status").write_text("rc=124\n")
    assert "timed out" in gpu_bench._build_status(tmp_path)[0]


def test_worst_case_fits_the_budget():
    """Every fixed step limit, a minimum for the benchmark and the last screen fit in 540 s (the
    benchmark takes only what is left), and the background build ends before the CUDA tests' reserve."""
    text = SCRIPT.read_text()
    limits = {k: int(v) for k, v in re.findall(r"\bL_([A-Z]+)=(\d+)", text.split("\nmkdir", 1)[0])}
    budget = int(re.search(r"GPU_CHECK_BUDGET:-(\d+)", text).group(1))
    assert budget <= 540
    fixed = sum(limits[k] for k in ("GATE", "INSTALL", "SELFTEST", "TRITON", "CUDA", "FINAL"))
    assert fixed + 60 <= budget, limits  # >= 60 s left for the benchmark in the worst case
    assert limits["GATE"] + limits["BUILD"] <= budget - limits["CUDA"] - limits["FINAL"]
    assert "min $L_BENCH $(( $(left) - L_CUDA - L_FINAL ))" in text  # the benchmark gets what is left


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                    reason="bash and coreutils' timeout are needed to run the script")
def test_gpu_check_dry_run(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), TRITON_INTERPRET="1", PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, env=env,
                          cwd=str(ROOT), timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    for name in ("env.txt", "env.json", "gpu_check.log", "selftest.json", "tests_triton.xml", "tests_cuda.xml",
                 "gpu_bench.json", "history_rows.csv", "summary.txt", "final_summary.txt", "steps.tsv"):
        assert (tmp_path / name).is_file(), name
    env_txt = (tmp_path / "env.txt").read_text()
    assert "torch" in env_txt and "triton" in env_txt and "nvcc" in env_txt and "backend cuda" in env_txt
    result = json.loads((tmp_path / "gpu_bench.json").read_text())
    impls = {r["impl"] for r in result["rows"]}
    assert {"lstm", "reference"} <= impls and all(r["ms"] > 0 for r in result["rows"])
    lines = proc.stdout.rstrip().splitlines()
    assert lines[-1] == "VERDICT: passed [dry run: no GPU was used]"  # the verdict last, the table above it
    assert any(re.match(r"^selftest\s.*passed", line) for line in lines)
    assert any(re.match(r"^cuda\s+dry run", line) for line in lines)


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                    reason="bash and coreutils' timeout are needed to run the script")
def test_gpu_check_ends_by_its_deadline_and_fails_what_it_could_not_run(tmp_path):
    """With a 12 s budget the steps that no longer fit are cut short or skipped ("no time left"),
    the script ends in time, and the verdict is FAILED."""
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable, GPU_CHECK_BUDGET="12")
    start = time.monotonic()
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, env=env,
                          cwd=str(ROOT), timeout=300)
    elapsed = time.monotonic() - start
    assert elapsed < 12 + 20 + 10, elapsed  # the budget, the last screen's own limit, process start-up
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "no time left" in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1].startswith("VERDICT: FAILED")


def test_gpu_model_doc_holds_the_scripts_tables_and_its_rules():
    """bench/GPU_MODEL.md's tables are what bench/gpu_model.py prints (regenerate both together), and
    the model's inputs are what the kernels do: the dispatcher's classes, cuDNN's persistent rules."""
    model = gpu_bench.gpu_model
    doc = (ROOT / "bench" / "GPU_MODEL.md").read_text()
    begin, end = "<!-- model tables: begin -->\n", "<!-- model tables: end -->"
    assert doc[doc.index(begin) + len(begin):doc.index(end)] == model.markdown()
    import importlib

    config = importlib.import_module("diru_fast.kernels.config") if importlib.util.find_spec("triton") else None
    for d in (16, 48, 64, 100, 128, 256, 300):
        for dtype in ("float32", "bfloat16", "float16"):
            if config is not None:
                assert model.kernel_class(d, dtype) == config.choose(d, dtype).mode, (d, dtype)
    assert model.persistent_eligible(64, 128, 128, "float16") and model.persistent_eligible(16, 256, 256, "float16")
    assert not model.persistent_eligible(256, 128, 128, "float16")  # B > 128
    assert not model.persistent_eligible(64, 64, 64, "float16")  # d not a multiple of 128
    assert not model.persistent_eligible(64, 128, 128, "bfloat16")
    step = model.diru_step(64, 256, "bfloat16", "fwd")
    assert step["flop"] == 2 * 16 * 5 * 256 ** 2 and step["l2_bytes"] == 5 * 256 ** 2 * 2 and step["sms"] == 4
    assert model.predicted_ratio("float16", "fwd", 64, 512, 128) < 1 < model.predicted_ratio("bfloat16", "fwd", 64,
                                                                                            512, 64)
