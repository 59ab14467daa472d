"""Stop what a finished `kldrift run` left behind: its own child processes running a Beam job
server or Prism, if Beam's shutdown did not stop them (a Flink job server JVM once outlived a
cleanly stopped job in CI)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence

from kldrift.local import procs

SERVICE_PATTERNS = ("job-server", "prism")


def _children(parent: int) -> dict[int, str]:
    """{pid: command line} of the live child processes of `parent` (Linux /proc; {} elsewhere)."""
    found: dict[int, str] = {}
    for child in procs.children(parent):
        command = procs.cmdline(child.pid)
        if command is not None:
            found[child.pid] = command
    return found


def stop_leftover_children(
    patterns: Sequence[str] = SERVICE_PATTERNS, grace_s: float = 5.0, quiet: bool = False
) -> list[int]:
    """SIGTERM, then after `grace_s` SIGKILL, this process's children whose command line contains
    one of `patterns`; returns their pids (each is reported on stderr unless `quiet`: kldrift run
    stopping its runner after a cancelled job)."""
    leftovers = {
        pid: cmd for pid, cmd in _children(os.getpid()).items() if any(p in cmd for p in patterns)
    }
    for pid, cmd in leftovers.items():
        if not quiet:
            print(f"kldrift: stopping a leftover process {pid}: {cmd[:120]}", file=sys.stderr)
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(p in _children(os.getpid()) for p in leftovers):
        time.sleep(0.1)
    for pid in leftovers:
        if pid in _children(os.getpid()):
            _signal(pid, signal.SIGKILL)
    for pid in leftovers:  # reap, so no zombie stays behind
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
    return sorted(leftovers)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
