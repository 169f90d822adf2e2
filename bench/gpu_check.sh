#!/usr/bin/env bash
# One call on a GPU machine that ends in a verdict: versions, the self test, the correctness tests of
# both GPU backends, the benchmark grid; the last screen is one table (per backend: built / tests
# run / passed / failed, then per grid point the time and the ratio against cuDNN nn.LSTM) and a
# VERDICT line. Exit 0 only if every step passed. Worst case 540 s (a GPU command may run 600 s).
#
#   bash bench/gpu_check.sh              # from the repository root; results in $OUT (default ./gpu_out)
#   bash bench/gpu_check.sh --dry-run    # CPU smoke test of every step (CI runs it): no build, the GPU
#                                        # tests collected and skipped, a 2-point CPU bench
#   python bench/gpu_bench.py --tune     # separately, afterwards: time candidate Triton configs (~5 min)
#
# Order, most informative first: (0) the version gate: torch, CUDA, cuDNN, Triton, nvcc, the GPU and
# each backend's reason for being unavailable (env.txt); the CUDA extension starts building in the
# background (or the gate says why it cannot: no nvcc, or nvcc's major version differs from
# torch.version.cuda, which PyTorch's extension builder refuses); (1) `python -m diru_fast selftest`
# on the GPU; (2) the Triton correctness tests; (3) the benchmark grid, with the time that is left;
# (4) the CUDA correctness tests once the build is done. A backend that is unavailable, not built or
# ran zero tests is FAILED, as is a step that timed out.
#
# Time limits: gate 30, install 60 (only if the checkout is not installed), selftest 90, Triton tests
# 200 (they compile ~100 kernel variants), CUDA tests 60, last screen 20; the benchmark gets what is
# left of the budget after reserving the last two (at least 60 s, at most 240), so every path ends
# within GPU_CHECK_BUDGET (default 540) seconds. The build (limit 240) overlaps steps 1-3.
#
# Needs: Python with a CUDA build of torch, triton, pytest, nvcc for the CUDA extension. PYTHON picks
# the interpreter (default: python3 on PATH). No network. Writes to $OUT: env.txt, env.json,
# install.log, build_cuda.log, build_cuda.status, selftest.log, selftest.json, tests_triton.log/.xml,
# tests_cuda.log/.xml, gpu_bench.log, gpu_bench.json, history_rows.csv, summary.txt, steps.tsv,
# gpu_check.log, final_summary.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-./gpu_out}
PY=${PYTHON:-$(command -v python3 || command -v python)}
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
BUDGET=${GPU_CHECK_BUDGET:-540}
L_GATE=30 L_INSTALL=60 L_SELFTEST=90 L_TRITON=200 L_BENCH=240 L_CUDA=60 L_FINAL=20 L_BUILD=240
mkdir -p "$OUT"
rm -f "$OUT"/steps.tsv "$OUT"/selftest.json "$OUT"/tests_triton.xml "$OUT"/tests_cuda.xml "$OUT"/gpu_bench.json \
  "$OUT"/build_cuda.status "$OUT"/final_summary.txt "$OUT"/summary.txt
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TRITON_DEFAULT_FP_FUSION=1
START=$(date +%s)
DEADLINE=$((START + BUDGET))
: > "$OUT/gpu_check.log"
log() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/gpu_check.log"; }
left() { echo $(( DEADLINE - $(date +%s) )); }
# run_step NAME LIMIT LOG cmd...: at most LIMIT seconds (SIGINT at LIMIT-8 so pytest still writes its
# report, SIGKILL 8 s later); records "NAME<TAB>rc<TAB>seconds" in steps.tsv
run_step() {
  local name=$1 limit=$2 logf=$3; shift 3
  if [ "$limit" -le 10 ]; then
    log "$name: no time left"; printf '%s\t124\t0\n' "$name" >> "$OUT/steps.tsv"; return 124
  fi
  local t0; t0=$(date +%s)
  timeout -s INT -k 8 $((limit - 8)) "$@" > "$logf" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$OUT/steps.tsv"
  [ "$rc" = 124 ] && log "$name: TIMED OUT after $limit s (see $logf)"
  return "$rc"
}
min() { [ "$1" -lt "$2" ] && echo "$1" || echo "$2"; }

# 0. The version gate (and no GPU, no run).
DRYFLAG=$([ $DRY = 1 ] && echo --dry-run)
run_step gate $L_GATE "$OUT/gate.log" $PY bench/gpu_bench.py --env-gate --out "$OUT" $DRYFLAG
cat "$OUT/env.txt" 2>/dev/null | tee -a "$OUT/gpu_check.log" || cat "$OUT/gate.log"
DECISION=$(grep -E "^(BUILD|NO_BUILD)" "$OUT/gate.log" 2>/dev/null | tail -n 1)
if [ $DRY = 0 ] && ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  log "ERROR: no CUDA GPU visible to torch (torch.cuda.is_available() is False). Run on a GPU machine with a"
  log "CUDA build of torch, or use 'bash bench/gpu_check.sh --dry-run' for the CPU smoke test."
  exit 2
fi
# The CUDA extension, built in place in the background.
BUILD_PID=
case "$DECISION" in
  BUILD)
    ARCH=$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")
    log "building the CUDA extension for sm_${ARCH/./} (background, limit $L_BUILD s) -> $OUT/build_cuda.log"
    ( TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS=${MAX_JOBS:-8} timeout $L_BUILD $PY csrc/cuda/build.py \
        > "$OUT/build_cuda.log" 2>&1; rc=$?; if [ $rc = 0 ]; then echo built; else echo "rc=$rc"; fi \
        > "$OUT/build_cuda.status" ) &
    BUILD_PID=$! ;;
  NO_BUILD*) echo "not built: ${DECISION#NO_BUILD }" > "$OUT/build_cuda.status"
    log "CUDA extension not built: ${DECISION#NO_BUILD }" ;;
  *) echo "not built: the version gate failed (see gate.log)" > "$OUT/build_cuda.status" ;;
esac
# The package, installed: an editable install maps kernels/ and csrc/ to diru_fast.kernels and
# diru_fast.csrc (without the C++ extensions and without touching any other package).
if ! $PY -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('diru_fast.kernels') is None)" 2>/dev/null; then
  log "diru_fast is not installed here: pip install --no-build-isolation --no-deps --no-index -e . -> install.log"
  run_step install $L_INSTALL "$OUT/install.log" \
    env DIRU_FAST_NO_EXTENSIONS=1 $PY -m pip install --no-build-isolation --no-deps --no-index -e . \
    || log "ERROR: the install failed (see install.log); the triton backend will be unavailable"
fi
HAVE_PYTEST=1
$PY -c "import pytest" 2>/dev/null || { HAVE_PYTEST=0; log "ERROR: pytest is not installed: no correctness tests"; }

# 1. The self test on the GPU (on CPU in a dry run, the fast backends only).
if [ $DRY = 1 ]; then SELFTEST_ARGS="--device cpu --backend torch --backend reference"
else SELFTEST_ARGS="--device cuda --require triton"; fi
log "selftest ($SELFTEST_ARGS, limit $L_SELFTEST s) -> $OUT/selftest.log"
run_step selftest "$(min $L_SELFTEST "$(left)")" "$OUT/selftest.log" \
  $PY -m diru_fast selftest $SELFTEST_ARGS --json "$OUT/selftest.json"
grep -E "^(pass|FAIL|----)|selftest (passed|FAILED)" "$OUT/selftest.log" | tee -a "$OUT/gpu_check.log"

# 2. Triton correctness (the CUDA build goes on meanwhile).
PYTEST="$PY -m pytest -q -rs -p no:cacheprovider"
if [ $HAVE_PYTEST = 1 ]; then
  log "correctness tests, triton backend (limit $L_TRITON s) -> $OUT/tests_triton.log"
  # test_triton_math.py: the emulation of the kernels' fp32 math against the real instructions
  TRITON_TESTS="tests/providers/test_cuda_gpu.py$([ $DRY = 0 ] && echo ' tests/providers/test_triton_math.py')"
  run_step tests_triton "$(min $L_TRITON $(( $(left) - L_CUDA - L_FINAL - 60 )))" "$OUT/tests_triton.log" \
    $PYTEST $TRITON_TESTS -k "not cuda]" --junitxml="$OUT/tests_triton.xml"
  tail -n 2 "$OUT/tests_triton.log" | tee -a "$OUT/gpu_check.log"
fi

# 3. The benchmark grid: what is left, less the CUDA tests and the last screen.
BENCH_LIMIT=$(min $L_BENCH $(( $(left) - L_CUDA - L_FINAL )))
if [ $DRY = 1 ]; then BENCH_ARGS="--device cpu --tiny --budget 60"
else BENCH_ARGS="--budget $(( BENCH_LIMIT > 70 ? BENCH_LIMIT - 40 : 30 ))"; fi
log "benchmark grid ($BENCH_ARGS, limit $BENCH_LIMIT s) -> $OUT/gpu_bench.json"
run_step bench "$BENCH_LIMIT" "$OUT/gpu_bench.stdout" $PY bench/gpu_bench.py --out "$OUT" $BENCH_ARGS \
  || log "benchmark exited with an error (see gpu_bench.log / gpu_bench.stdout)"

# 4. The CUDA correctness tests, once the build is done.
if [ -n "$BUILD_PID" ]; then
  wait "$BUILD_PID"
  log "CUDA extension: $(cat "$OUT/build_cuda.status" 2>/dev/null)"
fi
if [ $HAVE_PYTEST = 1 ] && { [ $DRY = 1 ] || [ "$(cat "$OUT/build_cuda.status" 2>/dev/null)" = built ]; }; then
  log "correctness tests, cuda backend (limit $L_CUDA s) -> $OUT/tests_cuda.log"
  run_step tests_cuda "$(min $L_CUDA $(( $(left) - L_FINAL )))" "$OUT/tests_cuda.log" \
    $PYTEST tests/providers/test_cuda_gpu.py -k "cuda]" --junitxml="$OUT/tests_cuda.xml"
  tail -n 2 "$OUT/tests_cuda.log" | tee -a "$OUT/gpu_check.log"
fi

# 5. The last screen.
log "done in $(( $(date +%s) - START )) s"
echo
timeout $L_FINAL $PY bench/gpu_bench.py --final --out "$OUT" $DRYFLAG
