"""A guard that makes a test which is not meant to start services fail when it starts one.

A service here is a process kldrift's tests can start: Beam's Prism runner (`prism`), a JVM
(the Kafka broker, its storage tool, Beam's Flink job server) or Prometheus. The guard is a
Python audit hook (PEP 578) on process creation: while it is active, starting one raises
`ServiceStartForbidden` and appends a line to the log file named by $KLDRIFT_SERVICE_GUARD_LOG.
Child Python processes (the `kldrift` CLI run by a test) install the same hook from a generated
`sitecustomize` when $KLDRIFT_NO_SERVICES is set, so a service they would start is refused too.
`java -version` (a version probe) is not a service.

tests/conftest.py activates it for every test not marked `services` (the unit and packaging
folders), for the whole run when $KLDRIFT_NO_SERVICES=1 (`make test-fast`), and during collection
(importing a test module or a kldrift module for its doctests must start nothing and open no
connection).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

ENV_FORBID = "KLDRIFT_NO_SERVICES"
ENV_LOG = "KLDRIFT_SERVICE_GUARD_LOG"


class ServiceStartForbidden(RuntimeError):
    """A test that must start no service tried to start one."""


_state: dict[str, Any] = {"active": False, "connect": False, "who": "", "installed": False}


def service_of(argv: list[str]) -> str | None:
    """Which service the command `argv` starts, or None if it is not one."""
    if not argv:
        return None
    name = os.path.basename(str(argv[0]))
    if name.startswith("prism"):
        return "Beam's Prism runner"
    if name == "prometheus":
        return "Prometheus"
    if name == "java" and [str(a) for a in argv[1:]] != ["-version"]:
        return "a JVM (Kafka broker or storage tool, Flink job server)"
    return None


def _argv(event: str, args: tuple[Any, ...]) -> list[str]:
    if event == "subprocess.Popen":  # (executable, args, cwd, env)
        executable, command = args[0], args[1]
        if isinstance(command, str | bytes):
            text = os.fsdecode(command)
            words = shlex.split(text) if text.strip() else []
        else:
            words = [os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in command]
        if executable is not None and words:
            words[0] = os.fsdecode(executable)
        return words
    if event in ("os.exec", "os.posix_spawn"):  # (path, argv, env)
        return [os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in args[1]]
    if event == "os.system":
        return shlex.split(os.fsdecode(args[0]))
    return []


def _record(message: str) -> None:
    log = os.environ.get(ENV_LOG)
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(message + "\n")


def _hook(event: str, args: tuple[Any, ...]) -> None:
    if not _state["active"]:
        return
    if _state["connect"] and event == "socket.connect":
        message = (
            f"kldrift test guard: {_state['who']} opened a network connection to {args[1]!r} "
            "while modules were being imported (imports must have no side effects)"
        )
        _record(message)
        raise ServiceStartForbidden(message)
    if event not in ("subprocess.Popen", "os.exec", "os.posix_spawn", "os.system"):
        return
    argv = _argv(event, args)
    service = service_of(argv)
    if service is None:
        return
    message = (
        f"kldrift test guard: {_state['who']} started {service} ({' '.join(argv[:4])} ...), "
        "but it is not allowed to start services: put it in tests/pipeline or tests/e2e "
        "(or mark it @pytest.mark.services)"
    )
    _record(message)
    raise ServiceStartForbidden(message)


def install() -> None:
    """Add the audit hook to this process (once; it is inert until `activate`)."""
    if not _state["installed"]:
        sys.addaudithook(_hook)
        _state["installed"] = True


def activate(active: bool, who: str = "", *, connect: bool = False) -> None:
    """Forbid (or allow) service starts here and, through the environment, in child processes."""
    _state.update(active=active, who=who, connect=connect)


def install_in_child() -> None:
    """Called by the generated sitecustomize of child processes: guard if $KLDRIFT_NO_SERVICES."""
    if os.environ.get(ENV_FORBID) == "1":
        install()
        activate(True, who=f"a child process ({' '.join(sys.argv[:3])}) of a test")


def write_sitecustomize(directory: Path) -> Path:
    """A directory holding a sitecustomize.py that guards child processes; put it on PYTHONPATH."""
    directory.mkdir(parents=True, exist_ok=True)
    tests_dir = str(Path(__file__).resolve().parent)
    (directory / "sitecustomize.py").write_text(
        "import os, sys\n"
        f"if os.environ.get({ENV_FORBID!r}) == '1':\n"
        f"    sys.path.append({tests_dir!r})\n"
        "    import _service_guard\n"
        "    _service_guard.install_in_child()\n"
    )
    return directory
