"""Beam's Prism runner, built from the Go module proxy with `go install` at the installed Beam's version.

apache-beam would otherwise try to download Prism from GitHub at run time (unreachable on closed
networks) and then silently fall back to a runner that never fires live windows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from kldrift.pipeline.prism import prism_binary

PRISM_MODULE = "github.com/apache/beam/sdks/v2/go/cmd/prism"


def beam_version() -> str:
    """The installed apache-beam's version, read without importing Beam (which is slow)."""
    from importlib.metadata import version

    return version("apache-beam")


def prism_path() -> Path:
    """Where the Prism binary for the installed Beam version lives (it may not exist yet): the
    library's `prism_location` finds it there."""
    return prism_binary()


def ensure_installed() -> Path:
    """Build Prism with `go install` unless the binary for this Beam version is already there."""
    override = os.environ.get("KLDRIFT_PRISM")
    if override:
        return Path(override)
    target = prism_path()
    if target.exists():
        return target
    go = shutil.which("go")
    if go is None:
        raise RuntimeError(
            "Prism runner is not installed and `go` is not on PATH: install Go, then run `make setup`"
        )
    version = beam_version()
    print(f"setup: building Beam Prism runner v{version} with go install (first run: ~1 minute)")
    sys.stdout.flush()
    env = dict(os.environ, GOBIN=str(target.parent), GOFLAGS="-mod=mod")
    target.parent.mkdir(parents=True, exist_ok=True)
    # go prints a `go: downloading` line per module: shown only when the build fails.
    built = subprocess.run(
        [go, "install", f"{PRISM_MODULE}@v{version}"],
        env=env,
        cwd=str(target.parent),
        capture_output=True,
        text=True,
    )
    if built.returncode != 0:
        raise RuntimeError(
            f"go install {PRISM_MODULE}@v{version} failed (exit {built.returncode}):\n"
            f"{built.stderr.strip()}"
        )
    if not target.exists():
        raise RuntimeError(f"go install finished but {target} is missing")
    return target
