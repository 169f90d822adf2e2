"""Compile check of the CUDA kernels (csrc/cuda/diru_scan.cu) with nvcc for sm_80 and sm_90, no GPU needed:
per kernel entry (forward / backward, the plain instantiation / the options one, dtype, arch) the
registers, stack frame and spill bytes ptxas reports (`-Xptxas -v`). The options instantiation is the
one every option runs (relu, attention, dropout, time decay), so its numbers cover them all.

    python bench/cuda_compile_check.py [--out bench/results/cuda-compile.txt]

Exit status 1 if nvcc fails or any entry spills. tests/providers/test_cuda.py runs the same compile.
"""

from __future__ import annotations

import argparse
import datetime
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "csrc" / "cuda" / "diru_scan.cu"
ARCHS = ("sm_80", "sm_90")
DTYPES = {"IfLb": "float32", "IdLb": "float64", "I6__half": "float16", "I13__nv_bfloat16": "bfloat16"}


def nvcc_command(nvcc: str, output: Path) -> List[str]:
    """nvcc on diru_scan.cu for every arch in ARCHS with the flags torch's extension builder passes
    (no implicit half / bfloat16 conversions), ptxas verbose."""
    from torch.utils.cpp_extension import include_paths

    cmd = [nvcc, "-c", str(SOURCE), "-o", str(output), "-std=c++17", "-O3", "--expt-relaxed-constexpr",
           "-Xptxas", "-v", "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
           "-D__CUDA_NO_BFLOAT16_CONVERSIONS__"]
    for arch in ARCHS:
        cmd += ["-gencode", f"arch=compute_{arch[3:]},code={arch}"]
    return cmd + [f"-I{p}" for p in include_paths()]


def entries(log: str) -> List[Dict]:
    """ptxas -v's report, one dict per compiled entry: kernel ("fwd" | "bwd"), inst ("plain" | "opt",
    the kOpt = false / true instantiation), dtype, arch, registers, stack, spill_stores, spill_loads."""
    out: List[Dict] = []
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '(\w+)' for '(sm_\d+)'", line)
        if m:
            name, arch = m.groups()
            out.append(dict(kernel="fwd" if "fwd_kernel" in name else "bwd", inst="opt" if "Lb1E" in name else "plain",
                            dtype=next((v for k, v in DTYPES.items() if k in name), "?"), arch=arch))
            continue
        if not out:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            out[-1].update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            out[-1]["registers"] = int(m.group(1))
    return out


def table(rows: List[Dict]) -> str:
    lines = ["kernel inst  dtype     arch   registers stack spill_stores spill_loads"]
    for r in sorted(rows, key=lambda r: (r["kernel"], r["inst"], r["dtype"], r["arch"])):
        lines.append(f"{r['kernel']:6s} {r['inst']:5s} {r['dtype']:9s} {r['arch']:6s} {r.get('registers', -1):9d} "
                     f"{r.get('stack', -1):5d} {r.get('spill_stores', -1):12d} {r.get('spill_loads', -1):11d}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the report here (e.g. bench/results/cuda-compile.txt)")
    args = parser.parse_args(argv)
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        print("bench/cuda_compile_check.py: nvcc is not on PATH (install the CUDA toolkit)", file=sys.stderr)
        return 1
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(nvcc_command(nvcc, Path(tmp) / "diru_scan.o"), capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
        return 1
    rows = entries(proc.stdout + proc.stderr)
    spilling = [r for r in rows if r.get("spill_stores", 1) or r.get("spill_loads", 1)]
    version = re.search(r"release ([\d.]+)", subprocess.run([nvcc, "--version"], capture_output=True,
                                                             text=True).stdout)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    head = (f"# python bench/cuda_compile_check.py, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M} UTC, commit {commit}, "
            f"nvcc {version.group(1) if version else '?'}\n"
            f"# {len(rows)} entries (fwd/bwd x plain/options x 4 dtypes x {'/'.join(ARCHS)}); "
            f"the options instantiation runs relu, attention, dropout and time decay. "
            f"{'No entry spills.' if not spilling else f'{len(spilling)} entries SPILL.'}\n")
    report = head + table(rows) + "\n"
    print(report, end="")
    if args.out is not None:
        args.out.write_text(report)
    return 1 if spilling or not rows else 0


if __name__ == "__main__":
    sys.exit(main())
