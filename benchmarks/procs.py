"""Processes the harness starts: memory from /proc, and clean stops (only our own process groups).

Every Beam job runs in a child started in a new session (`start_new_session=True`), so the job's
Prism runner (a child of the job's Python process) is in the same process group; stopping that
group ends both, and nothing else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time

from kldrift.local import procs

KB_PER_MB = 1024


def status_kb(pid: int, field: str) -> int | None:
    """A `VmRSS`/`VmHWM` line of /proc/PID/status in kB, or None if the process is gone."""
    return procs.status_kb(pid, field)


def rss_mb(pid: int) -> float | None:
    kb = status_kb(pid, "VmRSS")
    return None if kb is None else kb / KB_PER_MB


def peak_rss_mb(pid: int) -> float | None:
    kb = status_kb(pid, "VmHWM")
    return None if kb is None else kb / KB_PER_MB


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time the process has used, in seconds (None if it is gone)."""
    found = procs.stat(pid)
    if found is None:
        return None
    return found.cpu_ticks / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, command name) of the live children of `pid`."""
    return [(child.pid, child.comm) for child in procs.children(pid)]


def prism_child(pid: int) -> int | None:
    """The pid of the Prism runner started by process `pid`, if it runs."""
    for child, comm in children(pid):
        if comm.startswith("prism"):
            return child
    return None


def runner_child(pid: int) -> tuple[int, str] | None:
    """(pid, "prism" or "flink_job_server") of the Beam runner process started by `pid`: its Prism,
    or the JVM of Beam's Flink job server (with `--flink_master=[local]` the embedded Flink
    cluster, job manager and task manager, runs inside that one JVM). The job server is known by
    its jar's name (kldrift's launcher `kldrift-flink-job-server.jar`, or Beam's shaded
    `beam-runners-flink-*-job-server-*.jar` given by KLDRIFT_FLINK_JOB_SERVER_JAR)."""
    for child, comm in children(pid):
        if comm.startswith("prism"):
            return child, "prism"
        if comm == "java" and "job-server" in (procs.cmdline(child) or ""):
            return child, "flink_job_server"
    return None


def group_members(pgid: int) -> list[int]:
    """Live processes in process group `pgid`."""
    return [process.pid for process in procs.live_processes() if process.pgid == pgid]


def stop_group(proc: subprocess.Popen, first_signal: int = signal.SIGINT, wait_s: float = 60.0):
    """Stop a child started with start_new_session=True and everything left in its group.

    `first_signal` goes to the child itself (its clean stop); after `wait_s` the whole group gets
    SIGKILL. Then any survivor of the group (e.g. an orphaned Prism) gets SIGTERM, then SIGKILL.
    """
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(first_signal)
        try:
            proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + 10
        while group_members(proc.pid) and time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            time.sleep(0.2)
        if not group_members(proc.pid):
            return
