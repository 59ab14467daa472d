"""Linux /proc, read in one place: a process's stat line, command line and status fields, and the
live processes. Every function answers None (or nothing) for a process that is gone."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    """/proc/PID/stat: the command name, then the fields after it (`fields[0]` is the state)."""

    pid: int
    comm: str
    fields: tuple[str, ...]

    @property
    def state(self) -> str:
        """'R', 'S', 'Z' (zombie), ..."""
        return self.fields[0]

    @property
    def ppid(self) -> int:
        return int(self.fields[1])

    @property
    def pgid(self) -> int:
        return int(self.fields[2])

    @property
    def cpu_ticks(self) -> int:
        """User + system CPU time in clock ticks (os.sysconf("SC_CLK_TCK") a second)."""
        return int(self.fields[11]) + int(self.fields[12])


def available() -> bool:
    """Whether this system has a /proc to read (Linux; not macOS)."""
    return PROC.is_dir() and (PROC / "self").exists()


def parse_stat(pid: int, text: str) -> ProcStat:
    """The stat line of `pid`; the command name may hold spaces and parentheses."""
    return ProcStat(
        pid,
        text[text.index("(") + 1 : text.rindex(")")],
        tuple(text[text.rindex(")") + 1 :].split()),
    )


def stat(pid: int) -> ProcStat | None:
    try:
        found = parse_stat(pid, (PROC / str(pid) / "stat").read_text())
    except (OSError, ValueError):
        return None
    return found if found.fields else None


def state(pid: int) -> str | None:
    """The state letter of `pid`, None if there is no such pid, '?' if it cannot be read."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return "?"
    return text.rsplit(")", 1)[-1].split()[0]


def cmdline(pid: int) -> str | None:
    """The command line, arguments joined by spaces (undecodable bytes replaced); None if gone."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def status_kb(pid: int, field: str) -> int | None:
    """A kB field of /proc/PID/status (`VmRSS`, `VmHWM`), or None if the process is gone."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def live_processes() -> Iterator[ProcStat]:
    """Every process that runs now (zombies left out); none where there is no /proc."""
    if not PROC.is_dir():
        return
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        found = stat(int(entry.name))
        if found is not None and found.state != "Z":
            yield found


def children(parent: int) -> list[ProcStat]:
    """The live child processes of `parent`."""
    return [process for process in live_processes() if process.ppid == parent]
