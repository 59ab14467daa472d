"""Fetching a packaged pom's runtime jars from Maven Central into the cache, once and atomically."""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (POSIX flock) held for the duration of the block."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def copy_resource(name: str, dest: Path) -> Path:
    """Copy a file packaged in `kldrift.local` to `dest` (works for zipped installs too)."""
    dest.write_bytes(importlib.resources.files("kldrift.local").joinpath(name).read_bytes())
    return dest


def require_mvn(what: str, error: type[Exception]) -> str:
    """The `mvn` on PATH, or `error` saying how to get it."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise error(
            f"{what} is not installed and `mvn` (Apache Maven) is not on PATH: install Maven "
            "(e.g. `apt-get install maven`), then run `make setup`"
        )
    return mvn


def fetch_jars(
    pom_resource: str,
    target: Path,
    *,
    what: str,
    complete: Callable[[Path], bool],
    error: type[Exception],
) -> Path:
    """Copy the runtime dependencies of the `kldrift.local` resource `pom_resource` into
    ``target/lib`` with `mvn`, through a temporary directory renamed into place, so an interrupted
    fetch never looks complete. `complete(lib)` checks the result; `error` is raised, naming
    `what`, when Maven is missing or fails."""
    mvn = require_mvn(what, error)
    target.mkdir(parents=True, exist_ok=True)
    lib = target / "lib"
    with tempfile.TemporaryDirectory(prefix=".install-", dir=target) as tmp:
        pom = Path(tmp) / "pom.xml"
        pom.write_bytes(
            importlib.resources.files("kldrift.local").joinpath(pom_resource).read_bytes()
        )
        out = Path(tmp) / "lib"
        cmd = [
            mvn,
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={out}",
            "-DincludeScope=runtime",
        ]
        proc = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            output = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
            raise error(
                f"Maven could not fetch the jars of {what} (exit {proc.returncode}):\n{output}"
            )
        if not out.is_dir() or not complete(out):
            raise error(f"Maven finished but the jars of {what} are missing in {out}")
        if lib.exists():  # an older, unmarked copy
            shutil.rmtree(lib)
        os.replace(out, lib)
    return lib
