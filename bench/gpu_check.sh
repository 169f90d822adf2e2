#!/usr/bin/env bash
# One call on a GPU machine: build the CUDA extension, run the CUDA correctness tests of both GPU
# backends, run the benchmark grid, print the summary table last. Budget: < 8 minutes on an H100.
#
#   bash bench/gpu_check.sh              # from the repository root; results in $OUT (default ./gpu_out)
#   bash bench/gpu_check.sh --dry-run    # CPU smoke test of every step (CI runs it): no build,
#                                        # GPU tests collected and skipped, a 2-point CPU bench
#   TUNE=1 bash bench/gpu_check.sh       # also time candidate Triton configs afterwards (+5 min;
#                                        # gpu_tune.json: the fastest per dtype and d, for config.py)
#
# Needs: Python with a CUDA build of torch, triton, nvcc (for the extension; without it the
# "cuda" rows are skipped), pytest (without it the tests are skipped, the bench still runs),
# setuptools (a checkout that is not installed gets `pip install --no-build-isolation --no-deps
# -e .` first: kernels/ and csrc/ are importable as diru_fast.kernels / diru_fast.csrc only
# through an install). No network. Writes to $OUT: env.txt, install.log (if it installed),
# build_cuda.log, tests_triton.log, tests_cuda.log, gpu_bench.log, gpu_bench.json,
# history_rows.csv (bench/results/history.csv columns), summary.txt, gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-./gpu_out}
PY=${PYTHON:-$(command -v python3 || command -v python)}  # the GPU image: python3 holds torch
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TRITON_DEFAULT_FP_FUSION=1
START=$(date +%s)
log() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/gpu_check.log"; }
: > "$OUT/gpu_check.log"

# 0. What is here.
$PY - > "$OUT/env.txt" 2>&1 <<'EOF'
import platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| torch.version.cuda", torch.version.cuda)
print("cuda available:", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device:", torch.cuda.get_device_name(), "| capability", torch.cuda.get_device_capability())
try:
    import triton
    print("triton", triton.__version__)
except ImportError as exc:
    print("triton MISSING:", exc)
EOF
cat "$OUT/env.txt"
if [ $DRY = 0 ] && ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  log "ERROR: no CUDA GPU visible to torch (torch.cuda.is_available() is False). Run on a GPU machine with a"
  log "CUDA build of torch, or use 'bash bench/gpu_check.sh --dry-run' for the CPU smoke test."
  exit 2
fi
# The package, installed: an editable install maps kernels/ and csrc/ to diru_fast.kernels and
# diru_fast.csrc. Without the C++ extensions (the CUDA one is built in place in step 1) and
# without touching any other package.
if ! $PY -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('diru_fast.kernels') is None)" 2>/dev/null; then
  log "diru_fast is not installed here: pip install --no-build-isolation --no-deps --no-index -e . -> $OUT/install.log"
  DIRU_FAST_NO_EXTENSIONS=1 $PY -m pip install --no-build-isolation --no-deps --no-index -e . > "$OUT/install.log" 2>&1 \
    || log "ERROR: the install failed (see install.log); the triton backend will be unavailable"
fi
HAVE_PYTEST=1
$PY -c "import pytest" 2>/dev/null || { HAVE_PYTEST=0; log "pytest is not installed: skipping the correctness tests"; }

# 1. Build the CUDA extension in place, in the background (time limit; the rest goes on without it).
BUILD_PID=
if [ $DRY = 1 ]; then
  log "dry run: not building the CUDA extension"
elif ! command -v nvcc > /dev/null; then
  log "nvcc not on PATH: not building the CUDA extension (the 'cuda' backend is skipped)"
else
  ARCH=$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
  log "building the CUDA extension for sm_${ARCH/./} (background, limit 240 s) -> $OUT/build_cuda.log"
  ( TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS=${MAX_JOBS:-8} timeout 240 $PY csrc/cuda/build.py \
      > "$OUT/build_cuda.log" 2>&1 ) &
  BUILD_PID=$!
fi

# 2. Correctness: triton now (overlaps the build), the CUDA extension once it is built.
PYTEST="$PY -m pytest -q -rs -p no:cacheprovider tests/providers/test_cuda_gpu.py"
TESTS_OK=1
if [ $HAVE_PYTEST = 1 ]; then
  log "correctness tests, triton backend (limit 200 s) -> $OUT/tests_triton.log"
  timeout 200 $PYTEST -k "not cuda]" > "$OUT/tests_triton.log" 2>&1 || TESTS_OK=0
  tail -n 3 "$OUT/tests_triton.log"
fi
if [ -n "$BUILD_PID" ]; then
  if wait "$BUILD_PID"; then log "CUDA extension built"; else
    log "CUDA extension build FAILED or timed out (see build_cuda.log); continuing without it"; fi
fi
if [ $HAVE_PYTEST = 1 ]; then
  log "correctness tests, cuda backend (limit 90 s) -> $OUT/tests_cuda.log"
  timeout 90 $PYTEST -k "cuda]" > "$OUT/tests_cuda.log" 2>&1 || TESTS_OK=0
  tail -n 3 "$OUT/tests_cuda.log"
  [ $TESTS_OK = 1 ] && log "correctness tests passed" || log "correctness tests FAILED (see tests_*.log)"
fi

# 3. Benchmark grid (its own time budget), table last.
if [ $DRY = 1 ]; then
  BENCH_ARGS="--device cpu --tiny --budget 60"
else
  BENCH_ARGS="--budget ${BENCH_BUDGET:-210}"
fi
log "benchmark grid ($BENCH_ARGS) -> $OUT/gpu_bench.json"
timeout 300 $PY bench/gpu_bench.py --out "$OUT" $BENCH_ARGS > "$OUT/gpu_bench.stdout" 2>&1
BENCH_RC=$?
[ $BENCH_RC = 0 ] || log "benchmark exited with $BENCH_RC (see $OUT/gpu_bench.log / gpu_bench.stdout)"
if [ "${TUNE:-0}" = 1 ]; then  # optional, after the budgeted steps: time candidate Triton configs
  log "tuning Triton configs (TUNE=1, limit 300 s) -> $OUT/gpu_tune.json"
  timeout 300 $PY bench/gpu_bench.py --out "$OUT" --tune --budget 270 $( [ $DRY = 1 ] && echo --device cpu --tiny ) \
    > "$OUT/gpu_tune.stdout" 2>&1 || log "tuning exited with an error (see gpu_tune.stdout)"
fi
log "done in $(( $(date +%s) - START )) s; tests $([ $TESTS_OK = 1 ] && echo passed || echo FAILED)"
echo
cat "$OUT/summary.txt" 2>/dev/null || tail -n 20 "$OUT/gpu_bench.stdout"
[ $TESTS_OK = 1 ] && [ $BENCH_RC = 0 ]
