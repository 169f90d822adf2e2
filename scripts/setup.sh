#!/usr/bin/env bash
# Set up diru_fast in the current Python environment.
#  - keeps the torch that is installed; installs torch==2.13.0 only where none is
#    (on the project's machines that is a CPU build on local disk)
#  - installs the package editable WITHOUT build isolation, so pip never fetches a second
#    torch into a temporary build environment; the C++ CPU kernel is built here when a
#    compiler is present (otherwise on first use)
#  - extras: test tools (pytest, pytest-benchmark, triton, matplotlib, ...)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP="$PY -m pip install --quiet --disable-pip-version-check"
if ! $PY -c "import torch" >/dev/null 2>&1; then
  echo "setup: no torch found; installing torch==2.13.0"
  $PIP "torch==2.13.0"
fi
$PIP setuptools wheel ninja
$PIP --no-build-isolation -e ".[test]"
$PY -c "import torch, diru_fast; print('setup: diru_fast', diru_fast.__version__, '| torch', torch.__version__, '| backends:', ', '.join(diru_fast.available_backends()))"
