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
from collections.abc import Iterator
from pathlib import Path

KB_PER_MB = 1024


def status_kb(pid: int, field: str) -> int | None:
    """A `VmRSS`/`VmHWM` line of /proc/PID/status in kB, or None if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def rss_mb(pid: int) -> float | None:
    kb = status_kb(pid, "VmRSS")
    return None if kb is None else kb / KB_PER_MB


def peak_rss_mb(pid: int) -> float | None:
    kb = status_kb(pid, "VmHWM")
    return None if kb is None else kb / KB_PER_MB


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time the process has used, in seconds (None if it is gone)."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    rest = fields[1]
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> tuple[str, list[str]] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    return comm, text.rsplit(")", 1)[1].split()


def _live_processes() -> Iterator[tuple[int, str, list[str]]]:
    """(pid, command name, /proc/PID/stat fields after the name) of every live process."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and fields[1][0] != "Z":
            yield int(entry.name), fields[0], fields[1]


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, command name) of the live children of `pid`."""
    return [(child, comm) for child, comm, rest in _live_processes() if int(rest[1]) == pid]


def prism_child(pid: int) -> int | None:
    """The pid of the Prism runner started by process `pid`, if it runs."""
    for child, comm in children(pid):
        if comm.startswith("prism"):
            return child
    return None


def group_members(pgid: int) -> list[int]:
    """Live processes in process group `pgid`."""
    return [member for member, _, rest in _live_processes() if int(rest[2]) == pgid]


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
