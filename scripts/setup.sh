#!/usr/bin/env bash
# Idempotent set-up: a Python venv holding exactly requirements/lock.txt (hashed pins of every
# package: runtime, dev and plots extras, and the build backend), kldrift installed editable on top,
# then the local services' binaries: the Kafka broker and Flink job server jars (Maven Central) and
# Beam's Prism runner at the locked Beam version (Go module proxy). A second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
LOCK=requirements/lock.txt
export PIP_DISABLE_PIP_VERSION_CHECK=1
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.kldrift-installed"
want=$(cat "$LOCK" pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing the locked Python packages into $VENV ($LOCK)"
  # The lock's uv first (pip checks its hash), then every locked package with it: hash-checked like
  # pip, in parallel and from uv's cache, in seconds where pip takes about a minute of CPU.
  awk '/^uv==/ { pin = 1; print; next } pin && /^[[:space:]]/ { print; next } { pin = 0 }' "$LOCK" \
    > "$VENV/.uv-pin.txt"
  "$VENV/bin/python" -m pip install -q --require-hashes --no-deps -r "$VENV/.uv-pin.txt"
  export VIRTUAL_ENV="$PWD/$VENV" UV_LINK_MODE=copy UV_NO_PROGRESS=1
  # Bytecode compiled now, as pip does: else the first processes of every run compile it.
  "$VENV/bin/uv" pip install -q --require-hashes --no-deps --compile-bytecode -r "$LOCK"
  "$VENV/bin/uv" pip install -q --no-deps --no-build-isolation -e . 2>"$VENV/.kldrift-build.log" || {
    cat "$VENV/.kldrift-build.log" >&2
    exit 1
  }
  # A venv made from an older lock may hold packages this one dropped: remove them, then check.
  "$VENV/bin/python" scripts/lockfile.py sync "$LOCK"
  echo "$want" > "$stamp"
fi
"$VENV/bin/python" -m kldrift.local.setup
