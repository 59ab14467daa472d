#!/usr/bin/env bash
# Resolve pyproject.toml's ranges (runtime, dev and plots extras) and the build backend
# (requirements/build.in) into a hashed lock with the locked uv.
#   scripts/lock.sh OUTPUT [--upgrade]
# Without --upgrade, pins already in OUTPUT stay where the ranges still allow them.
set -euo pipefail
cd "$(dirname "$0")/.."
output=$1
shift
.venv/bin/uv pip compile pyproject.toml requirements/build.in \
  --extra dev --extra plots --universal --python-version 3.11 --generate-hashes \
  --custom-compile-command "make lock" --quiet -o "$output" "$@"
