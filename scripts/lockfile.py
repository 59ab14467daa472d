"""The lock file (requirements/lock.txt) against a venv: what the set-up installs, and the check
that the venv holds exactly that.

    python scripts/lockfile.py check [LOCK]   # exit 1 naming every package that differs
    python scripts/lockfile.py sync [LOCK]    # uninstall what the lock does not list
    python scripts/lockfile.py diff OLD NEW   # packages that moved between two locks

Run with the venv's interpreter: it reads that venv's installed distributions. `pip` itself and
kldrift (installed editable from this checkout) are not in the lock.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

COMMITTED_LOCK = Path(__file__).resolve().parent.parent / "requirements" / "lock.txt"
# KLDRIFT_LOCK: the lock this venv was made from, when not the committed one (make upgrade-check's
# throwaway venv).
LOCK = Path(os.environ.get("KLDRIFT_LOCK") or COMMITTED_LOCK).resolve()
NOT_LOCKED = frozenset({"pip", "kldrift"})
_PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)\s*(?:;(?P<marker>[^\\]+))?"
)


def locked(lock: Path = LOCK) -> dict[str, str]:
    """The lock's pins {canonical name: version} that apply to this interpreter."""
    pins: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        match = _PIN.match(line)
        if match is None:
            continue
        marker = match["marker"]
        if marker and not Marker(marker.strip()).evaluate():
            continue
        pins[canonicalize_name(match["name"])] = match["version"]
    return pins


def installed() -> dict[str, str]:
    """This interpreter's installed distributions {canonical name: version}."""
    return {
        canonicalize_name(dist.metadata["Name"]): dist.version
        for dist in metadata.distributions()
        if dist.metadata["Name"]
    }


def differences(lock: Path = LOCK) -> list[str]:
    """One line per package whose installed version is not the locked one (or is not locked)."""
    want = locked(lock)
    have = {name: v for name, v in installed().items() if name not in NOT_LOCKED}
    lines = []
    for name in sorted(want.keys() | have.keys()):
        if want.get(name) != have.get(name):
            lines.append(f"{name}: locked {want.get(name, '-')}, installed {have.get(name, '-')}")
    return lines


def moved(old: Path, new: Path) -> list[str]:
    """One line per package whose pin differs between two locks (for this interpreter)."""
    before, after = locked(old), locked(new)
    return [
        f"{name}: {before.get(name, '-')} -> {after.get(name, '-')}"
        for name in sorted(before.keys() | after.keys())
        if before.get(name) != after.get(name)
    ]


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "check"
    if command == "diff":
        for line in moved(Path(argv[1]), Path(argv[2])):
            print(line)
        return 0
    lock = Path(argv[1]) if len(argv) > 1 else LOCK
    if command == "sync":
        extra = sorted(set(installed()) - set(locked(lock)) - NOT_LOCKED)
        if extra:
            print(f"setup: removing packages the lock does not list: {' '.join(extra)}")
            subprocess.run(
                [sys.executable, "-m", "pip", "uninstall", "-q", "-y", *extra], check=True
            )
        command = "check"
    if command == "check":
        lines = differences(lock)
        for line in lines:
            print(f"lock: {line}", file=sys.stderr)
        return 1 if lines else 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
