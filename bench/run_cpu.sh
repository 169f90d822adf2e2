#!/usr/bin/env bash
# The CPU benchmark run committed under bench/results/: pytest-benchmark suite, then the report.
#   bash bench/run_cpu.sh [THREADS]        (default 2 threads; run on a quiet machine)
set -euo pipefail
cd "$(dirname "$0")/.."
export DIRU_BENCH_THREADS=${1:-2}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
raw=$(mktemp /tmp/diru-bench-XXXXXX.json)
python -m pytest bench/test_bench_cpu.py -q -p no:cacheprovider --benchmark-json="$raw" --benchmark-columns=median,iqr,rounds
python bench/report.py "$raw" --out bench/results --name "cpu-${DIRU_BENCH_THREADS}t" --scaling
