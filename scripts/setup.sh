#!/usr/bin/env bash
# Create .venv and install mtsweep with its test dependencies.
#
# torch is pinned to 2.13.0 first: that CPU build is what this project is tested with, and letting
# pip resolve the project's torch range on its own could pull a CUDA build of several GB.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev]"
