"""`kldrift run` stops service processes it started that outlive Beam's own shutdown."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from kldrift.local.children import stop_leftover_children

IGNORES_SIGTERM = (
    "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(60)"
)


def test_leftover_children_are_stopped_and_others_left_alone() -> None:
    polite = subprocess.Popen(["sleep", "61"])
    stubborn = subprocess.Popen(
        [sys.executable, "-c", IGNORES_SIGTERM, "fake-job-server"], stdout=subprocess.PIPE
    )
    assert stubborn.stdout is not None and stubborn.stdout.readline() == b"ready\n"
    unrelated = subprocess.Popen(["sleep", "62"])
    try:
        started = time.monotonic()
        stopped = stop_leftover_children(("sleep 61", "fake-job-server"), grace_s=1.0)
        assert stopped == sorted([polite.pid, stubborn.pid])
        assert polite.wait(timeout=5) is not None  # SIGTERM was enough
        # It ignored SIGTERM: SIGKILL after the grace. stop_leftover_children reaps what it
        # killed, so Popen may find it reaped already (returncode 0) rather than see the -9.
        assert stubborn.wait(timeout=5) in (-9, 0)
        assert not Path(f"/proc/{stubborn.pid}").exists(), "the stubborn child is still there"
        assert 1.0 <= time.monotonic() - started < 5
        assert unrelated.poll() is None
    finally:
        for process in (polite, stubborn, unrelated):
            process.kill()
            process.wait()
