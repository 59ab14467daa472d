#!/usr/bin/env bash
# The whole test suite (unit + service tests), then a check that no broker, Prism or Flink
# process started by the run is left behind. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
basetemp=$(mktemp -d "${TMPDIR:-/tmp}/kldrift-test.XXXXXX")
before=$(.venv/bin/python scripts/leftovers.py snapshot)
.venv/bin/pytest -n "${KLDRIFT_TEST_WORKERS:-3}" --dist loadfile --no-loadscope-reorder --basetemp "$basetemp" --durations=10 "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test: pytest collected no tests" >&2
fi
if ! .venv/bin/python scripts/leftovers.py check "$before"; then
  rc=1
fi
rm -rf "$basetemp"
exit "$rc"
