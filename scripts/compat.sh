#!/usr/bin/env bash
# Run the core's tests against other diffusers releases (each installed beside .venv, shadowing its copy).
# Usage: bash scripts/compat.sh [VERSION ...]   (default: the ends and middle of the declared range)
set -euo pipefail
cd "$(dirname "$0")/.."
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(0.35.2 0.38.0 0.42.1)
for v in "${versions[@]}"; do
  target=$(mktemp -d)
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --target "$target" "diffusers==$v"
  printf 'diffusers %s: ' "$v"
  PYTHONPATH="$target" .venv/bin/python -m pytest -q -p no:cacheprovider tests/test_core_*.py tests/test_store_runs.py | tail -n 1
  rm -rf "$target"
done
