#!/usr/bin/env bash
# Create .venv at the repository root and install the workbench with its test tools.
# torch is installed only when the venv has none: a GPU user installs the torch build that fits
# their machine into .venv first (see README), and this script keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || "${PYTHON:-python3}" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install -q --disable-pip-version-check "torch==${TORCH_VERSION:-2.13.0}"
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
