"""kldrift.local.procs reads /proc for the local services, the benchmarks and the leftover check:
checked against a real child process and a stat line whose command name holds ') ('."""

from __future__ import annotations

import os
import subprocess

import pytest

from kldrift.local import procs

pytestmark = pytest.mark.skipif(not procs.available(), reason="needs Linux /proc")


def test_a_child_is_seen_with_its_command_line_and_group() -> None:
    child = subprocess.Popen(["sleep", "61"], start_new_session=True)
    try:
        found = {p.pid: p for p in procs.children(os.getpid())}
        assert child.pid in found
        assert found[child.pid].comm == "sleep"
        assert found[child.pid].pgid == child.pid  # a new session leads its own group
        assert procs.cmdline(child.pid) == "sleep 61 "
        assert procs.state(child.pid) in ("S", "R")
        assert procs.status_kb(child.pid, "VmRSS") is not None
        me = procs.stat(os.getpid())
        assert me is not None and me.state == "R"  # this test, running
    finally:
        child.kill()
        child.wait()
    assert procs.stat(child.pid) is None and procs.cmdline(child.pid) is None
    assert procs.state(child.pid) is None
    assert child.pid not in {p.pid for p in procs.live_processes()}


def test_a_command_name_with_parentheses_and_spaces() -> None:
    line = "4242 (a) (b c) S 1 4242 4242 0 -1 4194560 0 0 0 0 7 5 0 0 20 0 1 0 1 0 0"
    parsed = procs.parse_stat(4242, line)
    assert (parsed.comm, parsed.state, parsed.ppid, parsed.pgid) == ("a) (b c", "S", 1, 4242)
    assert parsed.cpu_ticks == 12
