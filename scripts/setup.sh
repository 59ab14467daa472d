#!/usr/bin/env bash
# Idempotent set-up: a Python venv with kldrift (editable, dev + plots extras), the Kafka broker jars
# (Maven Central) and Beam's Prism runner (Go module proxy). A second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.kldrift-installed"
want=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python packages into $VENV (first run: a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[dev,plots]"
  echo "$want" > "$stamp"
fi
"$VENV/bin/python" -m kldrift.local.setup
