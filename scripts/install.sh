#!/usr/bin/env bash
# Install distillm-edge and its test tools into a fresh virtual environment (default .venv).
# torch is pinned and installed first: a bare requirement would pull a multi-GB CUDA build.
# llama-cpp-python builds from source (about 4-5 minutes on 2 cores).
# Usage: bash scripts/install.sh            (then: .venv/bin/distillm-edge --help)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 10), "distillm-edge needs Python >= 3.10"'
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "torch==${TORCH_VERSION:-2.13.0}"
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"
echo "installed: $("$VENV/bin/distillm-edge" --version)"
