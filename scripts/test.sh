#!/usr/bin/env bash
# Set up .venv, then run the whole test suite (core, analysis, widgets, notebooks, browser).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_WAIT_POLICY=PASSIVE
.venv/bin/python -m pytest -q "$@"
