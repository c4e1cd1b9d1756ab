#!/usr/bin/env bash
# The main job: set up .venv, then run a small study on both embedded models (toy: UNet, toy-dit: MM-DiT)
# and write one report comparing them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_WAIT_POLICY=PASSIVE  # busy-waiting OpenMP threads stall small models when a core is shared
.venv/bin/workbench study --out "${1:-runs/study}"
