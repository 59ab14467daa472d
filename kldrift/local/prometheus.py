"""Prometheus and promtool for the monitoring tests, from Debian's `prometheus` package.

The set-up installs the package with apt-get where it is missing; its system service is never
started (a test runs the binary itself with its own config, port and storage directory).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = "prometheus"
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
# Debian's maintainer scripts ask this script whether to start a service; exit 101 = "no".
_NO_SERVICE_STARTS = (
    "#!/bin/sh\n# written by kldrift's set-up while it installs prometheus\nexit 101\n"
)


class PrometheusSetupError(RuntimeError):
    """Prometheus is not installed and could not be: one line saying what to do."""


def binaries() -> tuple[Path, Path] | None:
    """Paths of `prometheus` and `promtool`, or None if either is missing."""
    found = [shutil.which(name) for name in ("prometheus", "promtool")]
    if not all(found):
        return None
    return Path(found[0] or ""), Path(found[1] or "")


def require() -> tuple[Path, Path]:
    """`prometheus` and `promtool`, or PrometheusSetupError naming how to install them."""
    found = binaries()
    if found is None:
        raise PrometheusSetupError(
            "prometheus/promtool are not installed: run `make setup` as root (it runs "
            "`apt-get install -y prometheus`), or install Debian's prometheus package by hand"
        )
    return found


def ensure_installed() -> tuple[Path, Path]:
    """Install Debian's prometheus package unless prometheus and promtool are on PATH."""
    found = binaries()
    if found is not None:
        return found
    apt_get = shutil.which("apt-get")
    if apt_get is None or os.geteuid() != 0:
        raise PrometheusSetupError(
            "prometheus/promtool are missing and this set-up cannot install them (it needs "
            "apt-get as root): install Debian's prometheus package, or Prometheus 2.x by hand"
        )
    print("setup: installing Debian's prometheus package with apt-get (first run: ~1 minute)")
    sys.stdout.flush()
    wrote_policy = False
    if not POLICY_RC_D.exists():
        POLICY_RC_D.write_text(_NO_SERVICE_STARTS)
        POLICY_RC_D.chmod(0o755)
        wrote_policy = True
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        for command in (
            [apt_get, "update", "-q"],
            [apt_get, "install", "-y", "-q", "--no-install-recommends", PACKAGE],
        ):
            done = subprocess.run(command, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or [""])[-1][:300]
                raise PrometheusSetupError(f"`{' '.join(command[1:])}` failed: {tail}")
    finally:
        if wrote_policy:
            POLICY_RC_D.unlink(missing_ok=True)
    return require()
