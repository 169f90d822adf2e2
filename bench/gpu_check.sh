#!/usr/bin/env bash
# One call on a GPU machine that ends in a verdict: versions, the self test, the correctness tests of
# both GPU backends, the benchmark grid. The last screen (under 2,000 characters) is one short table
# (per backend: built / tests run / passed / failed, the grid's headline) and a VERDICT line. Exit 0
# only if every step passed. Default budget 300 s (a lent machine has 15 minutes in all, its start
# included: this leaves room for a rerun).
#
#   bash bench/gpu_check.sh              # from the repository root; results in $OUT (default ./gpu_out)
#   bash bench/gpu_check.sh --dry-run    # the same path on CPU (CI runs it): install, gate, the GPU
#                                        # tests collected and skipped, a tiny CPU bench, no build
#   python bench/gpu_bench.py --tune     # separately, afterwards: time candidate Triton configs (~5 min)
#
# $OUT receives three files (a GPU machine returns at most 8): gpu_check.tar.gz (every log, report and
# JSON of every step), final_summary.txt (the last screen plus the whole grid table) and
# gpu_bench.json (for `python bench/gpu_model.py --check`). The steps write into a work folder
# ($GPU_CHECK_WORK, default a new folder under $TMPDIR), which the tarball holds.
#
# Order: (0) the package installed (editable, without extensions, only if diru_fast.kernels is not
# importable: a fresh clone), then the version gate: torch, CUDA, cuDNN, Triton, nvcc, the GPU and each
# backend's reason for being unavailable (env.txt), so the gate sees what the tests will run; the CUDA
# extension starts building in the background (or the gate says why it cannot: no nvcc, or nvcc's major
# version differs from torch.version.cuda, which PyTorch's extension builder refuses); (1) `python -m
# diru_fast selftest` on the GPU (every option, also formed in the kernels' step: time decay from lambda
# and dt, the seeded dropout mask); (2) the Triton correctness tests (-m "not gpu_cuda"; the in-step
# options' tests reuse the self test's shapes, so Triton's cache already holds their kernels); (3) the
# benchmark grid, with the time that is left; (4) the CUDA correctness tests (-m gpu_cuda) once the
# build is done. A backend that is unavailable, not built or ran zero tests is FAILED, as is a step
# that timed out.
#
# Time limits: install 40, gate 20, selftest 75 (its Triton backend compiles ~110 kernels, about a
# second each on this project's CPUs, so it runs one process per backend and dtype, --jobs 6: ~35 per
# process), Triton tests up to 150 (they compile ~100 kernel variants; they get what is left after
# reserving the benchmark's minimum 40, the CUDA tests 45 and the last screen 15), benchmark up to 90;
# so every path ends within GPU_CHECK_BUDGET (default 300) seconds. The build (limit 180) overlaps
# steps 1-3.
#
# Needs: Python with a CUDA build of torch, triton, pytest, nvcc for the CUDA extension. PYTHON picks
# the interpreter (default: python3 on PATH). No network.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-./gpu_out}
PY=${PYTHON:-$(command -v python3 || command -v python)}
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
BUDGET=${GPU_CHECK_BUDGET:-300}
L_INSTALL=40 L_GATE=20 L_SELFTEST=75 L_TRITON=150 L_BENCH=90 L_BENCH_MIN=40 L_CUDA=45 L_FINAL=15 L_BUILD=180
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
W=${GPU_CHECK_WORK:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}
mkdir -p "$W"
W=$(cd "$W" && pwd)
rm -f "$OUT"/gpu_check.tar.gz "$OUT"/final_summary.txt "$OUT"/gpu_bench.json
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export TRITON_DEFAULT_FP_FUSION=1
START=$(date +%s)
DEADLINE=$((START + BUDGET))
: > "$W/gpu_check.log"
log() { echo "[gpu_check +$(( $(date +%s) - START ))s] $*" | tee -a "$W/gpu_check.log"; }
left() { echo $(( DEADLINE - $(date +%s) )); }
# Whatever happens, $OUT gets the tarball of the work folder and the summary. (Triton's cache stays in
# its default place: a rerun on the same machine compiles nothing again.)
pack() {
  tar -czf "$OUT/gpu_check.tar.gz" -C "$W" . 2>/dev/null
  [ -f "$W/final_summary.txt" ] && cp "$W/final_summary.txt" "$OUT/"
  [ -f "$W/gpu_bench.json" ] && cp "$W/gpu_bench.json" "$OUT/"
}
trap pack EXIT
# run_step NAME LIMIT LOG cmd...: at most LIMIT seconds (SIGINT at LIMIT-8 so pytest still writes its
# report, SIGKILL 8 s later); records "NAME<TAB>rc<TAB>seconds" in steps.tsv
run_step() {
  local name=$1 limit=$2 logf=$3; shift 3
  if [ "$limit" -le 10 ]; then
    log "$name: no time left"; printf '%s\t124\t0\n' "$name" >> "$W/steps.tsv"; return 124
  fi
  local t0; t0=$(date +%s)
  timeout -s INT -k 8 $((limit - 8)) "$@" > "$logf" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" >> "$W/steps.tsv"
  [ "$rc" = 124 ] && log "$name: TIMED OUT after $limit s (see $(basename "$logf"))"
  return "$rc"
}
min() { [ "$1" -lt "$2" ] && echo "$1" || echo "$2"; }
log "work folder $W; results to $OUT"

# 0. The package, installed first (the gate and every step import it): an editable install maps
# kernels/ and csrc/ to diru_fast.kernels and diru_fast.csrc (without the C++ extensions, without
# touching any other package; PIP_BREAK_SYSTEM_PACKAGES lets it into a distribution's Python, which
# older pips ignore).
if ! $PY -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('diru_fast.kernels') is None)" 2>/dev/null; then
  log "diru_fast is not installed here: pip install --no-build-isolation --no-deps --no-index -e . -> install.log"
  run_step install $L_INSTALL "$W/install.log" \
    env DIRU_FAST_NO_EXTENSIONS=1 PIP_BREAK_SYSTEM_PACKAGES=1 $PY -m pip install --no-build-isolation --no-deps --no-index --ignore-installed \
    --disable-pip-version-check -e . \
    || log "ERROR: the install failed (see install.log); the triton backend will be unavailable"
fi
# The version gate (and no GPU, no run).
DRYFLAG=$([ $DRY = 1 ] && echo --dry-run)
run_step gate $L_GATE "$W/gate.log" $PY bench/gpu_bench.py --env-gate --out "$W" $DRYFLAG
cat "$W/env.txt" 2>/dev/null | tee -a "$W/gpu_check.log" || tail -n 5 "$W/gate.log"
DECISION=$(grep -E "^(BUILD|NO_BUILD)" "$W/gate.log" 2>/dev/null | tail -n 1)
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
    log "building the CUDA extension for sm_${ARCH/./} (background, limit $L_BUILD s) -> build_cuda.log"
    ( TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS=${MAX_JOBS:-8} timeout $L_BUILD $PY csrc/cuda/build.py \
        > "$W/build_cuda.log" 2>&1; rc=$?; if [ $rc = 0 ]; then echo built; else echo "rc=$rc"; fi \
        > "$W/build_cuda.status" ) &
    BUILD_PID=$! ;;
  NO_BUILD*) echo "not built: ${DECISION#NO_BUILD }" > "$W/build_cuda.status"
    log "CUDA extension not built: ${DECISION#NO_BUILD }" ;;
  *) echo "not built: the version gate failed (see gate.log)" > "$W/build_cuda.status" ;;
esac
HAVE_PYTEST=1
$PY -c "import pytest" 2>/dev/null || { HAVE_PYTEST=0; log "ERROR: pytest is not installed: no correctness tests"; }

# 1. The self test on the GPU, the two GPU backends (on CPU in a dry run, where they cannot run, with the
# torch backend in float32 beside them: the same code path). Never the "cpu" backend: asking about it
# builds the C++ CPU kernel on the spot where the install left it out (minutes).
SELFTEST_ARGS="--backend triton --backend cuda"
if [ $DRY = 1 ]; then SELFTEST_ARGS="--device cpu $SELFTEST_ARGS --backend torch --dtype float32"
else SELFTEST_ARGS="--device cuda $SELFTEST_ARGS --require triton --jobs 6"; fi
log "selftest ($SELFTEST_ARGS, limit $L_SELFTEST s) -> selftest.log"
run_step selftest "$(min $L_SELFTEST "$(left)")" "$W/selftest.log" \
  $PY -m diru_fast selftest $SELFTEST_ARGS --json "$W/selftest.json"
grep -E "^(pass|FAIL)|selftest (passed|FAILED)" "$W/selftest.log" | cut -c1-160 | tee -a "$W/gpu_check.log"

# 2. Triton correctness (the CUDA build goes on meanwhile): every GPU test not marked gpu_cuda
# (tests/providers/conftest.py), and on a GPU the emulation of the kernels' fp32 math against the
# real instructions (test_triton_math.py).
PYTEST="$PY -m pytest -q -rs -p no:cacheprovider"
GPU_TESTS=tests/providers/test_cuda_gpu.py
if [ $HAVE_PYTEST = 1 ]; then
  TRITON_TESTS="$GPU_TESTS$([ $DRY = 0 ] && echo ' tests/providers/test_triton_math.py')"
  LIMIT=$(min $L_TRITON $(( $(left) - L_BENCH_MIN - L_CUDA - L_FINAL )))
  log "correctness tests, triton backend (limit $LIMIT s) -> tests_triton.log"
  run_step tests_triton "$LIMIT" "$W/tests_triton.log" \
    $PYTEST $TRITON_TESTS -m "not gpu_cuda" --junitxml="$W/tests_triton.xml"
  tail -n 1 "$W/tests_triton.log" | cut -c1-200 | tee -a "$W/gpu_check.log"
fi

# 3. The benchmark grid: what is left, less the CUDA tests and the last screen.
BENCH_LIMIT=$(min $L_BENCH $(( $(left) - L_CUDA - L_FINAL )))
if [ $DRY = 1 ]; then BENCH_ARGS="--device cpu --tiny --budget 5"
else BENCH_ARGS="--budget $(( BENCH_LIMIT > 50 ? BENCH_LIMIT - 25 : 20 ))"; fi
log "benchmark grid ($BENCH_ARGS, limit $BENCH_LIMIT s) -> gpu_bench.json"
run_step bench "$BENCH_LIMIT" "$W/gpu_bench.stdout" $PY bench/gpu_bench.py --out "$W" $BENCH_ARGS \
  || log "benchmark exited with an error (see gpu_bench.log / gpu_bench.stdout)"

# 4. The CUDA correctness tests, once the build is done.
if [ -n "$BUILD_PID" ]; then
  wait "$BUILD_PID"
  log "CUDA extension: $(cat "$W/build_cuda.status" 2>/dev/null)"
fi
if [ $HAVE_PYTEST = 1 ] && { [ $DRY = 1 ] || [ "$(cat "$W/build_cuda.status" 2>/dev/null)" = built ]; }; then
  log "correctness tests, cuda backend (limit $L_CUDA s) -> tests_cuda.log"
  run_step tests_cuda "$(min $L_CUDA $(( $(left) - L_FINAL )))" "$W/tests_cuda.log" \
    $PYTEST $GPU_TESTS -m gpu_cuda --junitxml="$W/tests_cuda.xml"
  tail -n 1 "$W/tests_cuda.log" | cut -c1-200 | tee -a "$W/gpu_check.log"
fi

# 5. The last screen: final_summary.txt (with the whole grid) into the tarball, the short screen last.
log "done in $(( $(date +%s) - START )) s; packing $OUT/gpu_check.tar.gz"
timeout $L_FINAL $PY bench/gpu_bench.py --final --out "$W" $DRYFLAG > "$W/final_screen.txt" 2> "$W/final.stderr"
RC=$?
[ -s "$W/final_screen.txt" ] || echo "VERDICT: FAILED (the last screen did not run: see final.stderr)" > "$W/final_screen.txt"
[ $RC = 0 ] || [ $RC = 1 ] || RC=1
pack
trap - EXIT
echo
cat "$W/final_screen.txt"
exit $RC
