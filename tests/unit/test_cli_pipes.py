"""The CLI writing into a pipe whose reader stops early (`kldrift config schema | head`)."""

from __future__ import annotations

import subprocess
import sys


def test_output_cut_short_by_its_reader_is_no_traceback() -> None:
    reader = subprocess.Popen([sys.executable, "-c", "pass"], stdin=subprocess.PIPE)
    reader.wait()
    result = subprocess.run(
        [sys.executable, "-m", "kldrift.cli", "config", "schema"],
        stdout=reader.stdin,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in result.stderr
    assert result.returncode == 141
