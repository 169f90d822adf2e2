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
import textwrap
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
            dict(impl="lstm", dtype="float16", mode="fwd", B=64, T=50, d=256, ms=1.5, peak_mb=1.0,
                 cudnn_algo_fwd="persist_static", cudnn_kernels=["RNN_blockPersist_fp_LSTM"]),
            dict(impl="lstm", dtype="float32", mode="fwdbwd", B=64, T=50, d=128, ms=2.5, peak_mb=1.0,
                 cudnn_algo_fwd="persist_small_h", cudnn_algo_bwd="persist_small_h", cudnn_kernels=["gemm", "lstm_cell"])]
    table = gpu_bench.summarize(rows)
    lines = table.splitlines()
    assert "1.50" in table and "45.0" in table and "921.600*" in table
    assert "3.000n" in table  # nn.LSTM that did not reach cuDNN is flagged
    assert "1.500P" in table  # cuDNN's persistent static algorithm (by PyTorch's rule), its kernel seen
    assert "2.500Ss?" in table  # small-h persistent forward and backward by the rule, no persistent kernel seen
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
    """Every fixed step limit, the benchmark's minimum and the last screen fit in the default budget
    (the Triton tests and the benchmark take only what is left), the background build ends before the
    CUDA tests' reserve, and the default leaves a rerun inside a lent machine's 15 minutes (its start
    takes a few)."""
    text = SCRIPT.read_text()
    limits = {k: int(v) for k, v in re.findall(r"\bL_([A-Z_]+)=(\d+)", text.split("\nmkdir", 1)[0])}
    budget = int(re.search(r"GPU_CHECK_BUDGET:-(\d+)", text).group(1))
    assert budget <= 300
    fixed = sum(limits[k] for k in ("INSTALL", "GATE", "SELFTEST", "BENCH_MIN", "CUDA", "FINAL"))
    assert fixed + 60 <= budget, limits  # >= 60 s left for the Triton tests in the worst case
    assert limits["INSTALL"] + limits["GATE"] + limits["BUILD"] <= budget - limits["CUDA"] - limits["FINAL"]
    assert "min $L_TRITON $(( $(left) - L_BENCH_MIN - L_CUDA - L_FINAL ))" in text
    assert "min $L_BENCH $(( $(left) - L_CUDA - L_FINAL ))" in text  # the benchmark gets what is left


def test_last_screen_fits_and_ends_with_the_verdict(tmp_path):
    """A lent machine returns only the last 12,000 characters of output: the last screen is at most
    2,000 characters, holds every backend's row and ends with the verdict, however large the grid
    (which goes to final_summary.txt whole)."""
    _write_out(tmp_path)
    rows = [dict(impl=impl, dtype=dt, mode=mode, B=B, T=T, d=d, ms=1.0 + (impl == "lstm"), peak_mb=1.0)
            for impl in ("triton", "lstm", "cuda") for dt in ("float32", "bfloat16", "float16")
            for mode in ("fwd", "fwdbwd") for B in (16, 64, 256) for T in (50, 512) for d in (64, 128, 256)]
    (tmp_path / "gpu_bench.json").write_text(json.dumps(dict(rows=rows, skipped=[])))
    full, ok = gpu_bench.final_summary(tmp_path)
    screen, ok2 = gpu_bench.final_screen(tmp_path)
    assert ok and ok2 and len(full) > 12000 and len(screen) <= gpu_bench.SCREEN_LIMIT
    lines = screen.splitlines()
    assert lines[-1] == "VERDICT: passed" and full.splitlines()[-1] == lines[-1]
    for row in ("selftest", "triton", "cuda", "benchmark"):
        assert any(line.startswith(row + " ") for line in lines), row
    assert any(line.startswith("triton no slower than cuDNN LSTM at 108/108 points") for line in lines)


def test_dry_run_fails_when_the_triton_kernels_do_not_import(tmp_path):
    """The dry run takes the GPU machine's path: a triton backend unavailable for any reason but the
    missing GPU (the package not installed before the gate, an old triton) is FAILED there too."""
    _write_out(tmp_path)
    env = json.loads((tmp_path / "env.json").read_text())
    missing = "diru_fast.kernels is missing (a source checkout on PYTHONPATH without an install?)"
    env["why_unavailable"]["triton"] = {dt: missing for dt in ("float32", "bfloat16", "float16", "float64")}
    (tmp_path / "env.json").write_text(json.dumps(env))
    text, ok = gpu_bench.final_summary(tmp_path, dry_run=True)
    assert not ok and re.search(r"^triton\s.*FAILED: diru_fast.kernels is missing", text, re.M), text
    no_gpu = "no CUDA GPU is visible and TRITON_INTERPRET=1 was not set before triton was imported"
    env["why_unavailable"]["triton"] = {dt: no_gpu for dt in ("float32", "bfloat16", "float16", "float64")}
    (tmp_path / "env.json").write_text(json.dumps(env))
    text, ok = gpu_bench.final_summary(tmp_path, dry_run=True)
    assert ok, text


def test_gpu_steps_partition_the_gpu_tests_by_marker():
    """gpu_check.sh's Triton step (-m "not gpu_cuda") and CUDA step (-m gpu_cuda) select disjoint
    halves of tests/providers/test_cuda_gpu.py whose union is the file; every test carries exactly one
    of the two markers; the CUDA option and time-decay tests are in the CUDA step, the Triton option
    tests in the Triton step (collected, not run)."""
    text = SCRIPT.read_text()
    assert '-m "not gpu_cuda"' in text and "$GPU_TESTS -m gpu_cuda" in text
    code = textwrap.dedent("""
        import json, pytest
        class Collect:
            items = {}
            def pytest_collection_finish(self, session):  # after -m deselected
                self.items = {i.nodeid: sorted({m.name for m in i.iter_markers()} & {"gpu_triton", "gpu_cuda"})
                              for i in session.items}
        out = {}
        for key, args in (("all", []), ("triton", ["-m", "not gpu_cuda"]), ("cuda", ["-m", "gpu_cuda"])):
            c = Collect()
            pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "tests/providers/test_cuda_gpu.py"] + args,
                        plugins=[c])
            out[key] = c.items
        print("JSON" + json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=300)
    assert "JSON" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = json.loads(proc.stdout.split("JSON", 1)[1])
    every, triton, cuda = got["all"], got["triton"], got["cuda"]
    assert every and not set(triton) & set(cuda) and set(triton) | set(cuda) == set(every)
    assert all(len(marks) == 1 for marks in every.values()), [n for n, m in every.items() if len(m) != 1]
    assert all(marks == ["gpu_triton"] for marks in triton.values())
    for name in every:
        func = name.split("::")[1]
        if func.startswith(("test_cuda_options", "test_cuda_time_decay", "test_cuda_checks")) or "[cuda" in name \
                or "-cuda]" in name:
            assert name in cuda, name
        if func.startswith("test_triton_options") or "[triton" in name or "-triton]" in name:
            assert name in triton, name
    assert sum(n.split("::")[1].startswith("test_cuda_options") for n in cuda) >= 30
    assert sum(n.split("::")[1].startswith("test_triton_options") for n in triton) >= 12


def _fresh_python(tmp_path: Path) -> Path:
    """A Python like a fresh GPU machine's: a venv that sees this interpreter's packages (torch,
    triton, pytest) by plain path entries, so the .pth hooks there (this checkout's editable install of
    diru_fast) do not run: diru_fast is not installed in it."""
    import site
    import sysconfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    paths = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
                          + site.getsitepackages())
    (Path(purelib) / "base_packages.pth").write_text("\n".join(p for p in paths if Path(p).is_dir()) + "\n")
    return python


def _checkout_copy(tmp_path: Path) -> Path:
    """The working tree's files as a fresh clone has them (tracked and untracked, not ignored)."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True, cwd=str(ROOT),
                           check=True).stdout.decode().split("\0")
    clone = tmp_path / "clone"
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, clone / name)
    return clone


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None or shutil.which("git") is None
                    or not (ROOT / ".git").exists(), reason="bash, coreutils' timeout and a git checkout are needed")
def test_gpu_check_dry_run_from_a_fresh_clone(tmp_path):
    """The script end to end as a GPU machine runs it, on CPU: a copy of the checkout, a Python without
    diru_fast installed; the install runs before the version gate (so the gate sees the kernels import),
    every step runs, $OUT gets at most 8 files, the output fits the 12,000 characters a lent machine
    returns and its last 2,000 hold every backend's row and the verdict."""
    import tarfile

    python, clone = _fresh_python(tmp_path), _checkout_copy(tmp_path)
    out, work = tmp_path / "out", tmp_path / "work"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}
    env.update(OUT=str(out), GPU_CHECK_WORK=str(work), PYTHON=str(python))
    proc = subprocess.run(["bash", str(clone / "bench" / "gpu_check.sh"), "--dry-run"], capture_output=True,
                          text=True, env=env, cwd=str(tmp_path), timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    steps = [line.split("\t")[0] for line in (work / "steps.tsv").read_text().splitlines()]
    assert steps == ["install", "gate", "selftest", "tests_triton", "bench", "tests_cuda"], steps
    why = json.loads((work / "env.json").read_text())["why_unavailable"]["triton"]["float32"]
    assert "no CUDA GPU is visible" in why, why  # the kernels import: only the GPU is missing
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and {p.name for p in files} == {"gpu_check.tar.gz", "final_summary.txt", "gpu_bench.json"}
    with tarfile.open(out / "gpu_check.tar.gz") as tar:
        names = {Path(n).name for n in tar.getnames()}
    assert {"env.txt", "env.json", "install.log", "selftest.json", "tests_triton.xml", "tests_cuda.xml",
            "gpu_bench.json", "history_rows.csv", "summary.txt", "final_summary.txt", "steps.tsv",
            "gpu_check.log"} <= names, names
    assert len(proc.stdout) <= 12000, len(proc.stdout)
    tail = proc.stdout[-2000:]
    assert proc.stdout.rstrip().splitlines()[-1] == "VERDICT: passed [dry run: no GPU was used]"
    assert re.search(r"^selftest\s.*passed", tail, re.M) and re.search(r"^triton\s+dry run", tail, re.M)
    assert re.search(r"^cuda\s+dry run", tail, re.M) and re.search(r"^benchmark\s.*passed", tail, re.M)
    assert {r["impl"] for r in json.loads((out / "gpu_bench.json").read_text())["rows"]} >= {"lstm", "reference"}


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                    reason="bash and coreutils' timeout are needed to run the script")
def test_gpu_check_ends_by_its_deadline_and_fails_what_it_could_not_run(tmp_path):
    """With a 12 s budget the steps that no longer fit are cut short or skipped ("no time left"),
    the script ends in time, the verdict is FAILED and $OUT still gets the tarball and the summary."""
    env = dict(os.environ, OUT=str(tmp_path / "out"), GPU_CHECK_WORK=str(tmp_path / "work"), PYTHON=sys.executable,
               GPU_CHECK_BUDGET="12")
    start = time.monotonic()
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run"], capture_output=True, text=True, env=env,
                          cwd=str(ROOT), timeout=300)
    elapsed = time.monotonic() - start
    assert elapsed < 12 + 20 + 15, elapsed  # the budget, the gate's own limit, the last screen's
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "no time left" in proc.stdout
    assert proc.stdout.rstrip().splitlines()[-1].startswith("VERDICT: FAILED")
    assert {p.name for p in (tmp_path / "out").iterdir()} >= {"gpu_check.tar.gz", "final_summary.txt"}


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
                if config.choose(d, dtype).mode == "streamed":
                    assert model.block_k(d, dtype) == config.choose(d, dtype).block_k, (d, dtype)
    assert model.persistent_eligible(64, 128, 128, "float16") and model.persistent_eligible(16, 256, 256, "float16")
    assert not model.persistent_eligible(256, 128, 128, "float16")  # B > 128
    assert not model.persistent_eligible(64, 64, 64, "float16")  # d not a multiple of 128
    assert not model.persistent_eligible(64, 128, 128, "bfloat16")
    step = model.diru_step(64, 256, "bfloat16", "fwd")
    assert step["flop"] == 2 * 16 * 5 * 256 ** 2 and step["l2_bytes"] == 5 * 256 ** 2 * 2 and step["sms"] == 4
    # PyTorch's get_algo: persistent small-h for every dtype but double at d <= 192 forward / <= 128
    # backward, then persist-static in float16, else standard
    assert model.cudnn_algo(256, 128, 128, "float32", "fwd") == model.cudnn_algo(16, 64, 64, "bfloat16", "bwd") \
        == "persist_small_h"
    assert model.cudnn_algo(16, 192, 192, "bfloat16", "fwd") == "persist_small_h"
    assert model.cudnn_algo(16, 192, 192, "bfloat16", "bwd") == "standard"
    assert model.cudnn_algo(64, 256, 256, "float16", "bwd") == "persist_static"
    assert model.cudnn_algo(256, 256, 256, "float16", "fwd") == model.cudnn_algo(16, 64, 64, "float64", "fwd") \
        == "standard"
    # barriers from the PTX: the resident loop body's, plus one per K-chunk iteration streamed
    assert model.barriers(64, "bfloat16", "fwd") == 24 and model.barriers(256, "float32", "bwd") == 58 + 5 * 256 // 16
    assert model.barriers(256, "bfloat16", "fwd") == 24 + 3 * 256 // 32  # 16 bit streams 32-column chunks
    # 3xTF32's split on the CUDA cores: about 3 us a step at d = 256, nothing in 16 bit
    assert 2.5 < model.diru_step(16, 256, "float32", "fwd")["t_split"] < 3.5
    assert model.diru_step(16, 256, "bfloat16", "fwd")["t_split"] == 0
    assert all(0 < model.predicted_ratio(dt, "fwd", 64, 512, d) for dt in ("float32", "bfloat16") for d in (64, 256))
