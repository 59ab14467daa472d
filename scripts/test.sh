#!/usr/bin/env bash
# The whole test suite (unit + service tests), then a check that no broker, Prism or Flink
# process started by the run is left behind. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
basetemp=$(mktemp -d "${TMPDIR:-/tmp}/kldrift-test.XXXXXX")
before=$(.venv/bin/python scripts/leftovers.py snapshot)
# The JVMs the tests start (Kafka brokers, Flink job servers and clusters, the schema registry)
# live seconds to minutes and carry little data: C2's compiling is most of their CPU and the suite
# is CPU-bound on 2 cores. C1 alone cut the Flink restart test's CPU from 102 to 62 s. `java`
# notes the option on stderr ("Picked up JDK_JAVA_OPTIONS"). KLDRIFT_TEST_JVM_OPTIONS= turns it off.
jvm_options=${KLDRIFT_TEST_JVM_OPTIONS--XX:TieredStopAtLevel=1}
if [ -n "$jvm_options" ]; then
  export JDK_JAVA_OPTIONS="$jvm_options"
fi
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
