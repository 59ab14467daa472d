"""Finds service processes (Kafka broker, Schema Registry, Prism, Flink job server, Prometheus,
kldrift exporter) that a test run left running.

`snapshot` prints the pids of such processes now; `check BEFORE` waits up to 15 s for any new one
to exit, then lists the survivors and exits 1.
"""

from __future__ import annotations

import sys
import time

from kldrift.local import procs

MARKERS = (
    "kafka.Kafka",
    "-Dkldrift-registry=",
    "prism",
    "flink-job-server",
    "beam-runners-flink",
    # kldrift local flink's session cluster (kldrift.local.flink_cluster.PROCESS_MARKERS)
    "StandaloneSessionClusterEntrypoint",
    "TaskManagerRunner",
    "flink_worker_pool",
    "prometheus --config.file",
    "kldrift exporter",
)


def _service_pids() -> dict[int, str]:
    found = {}
    for process in procs.live_processes():
        cmdline = procs.cmdline(process.pid)
        if not cmdline:
            continue
        if any(marker in cmdline for marker in MARKERS) and "leftovers.py" not in cmdline:
            found[process.pid] = cmdline[:160]
    return found


def main(argv: list[str]) -> int:
    if argv[:1] == ["snapshot"]:
        print(" ".join(str(pid) for pid in _service_pids()))
        return 0
    before = {int(p) for p in (argv[1] if len(argv) > 1 else "").split()}
    deadline = time.monotonic() + 15
    while True:
        new = {pid: cmd for pid, cmd in _service_pids().items() if pid not in before}
        if not new or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    for pid, cmd in new.items():
        print(f"leftover process {pid}: {cmd}", file=sys.stderr)
    if new:
        print(f"test: {len(new)} service process(es) left running", file=sys.stderr)
        return 1
    print("test: no broker, registry, Prism, Flink, Prometheus or exporter process left running")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
