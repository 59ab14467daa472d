"""Prometheus and promtool for the monitoring tests, from Debian's `prometheus` package.

The set-up installs the package with apt-get where it is missing; its system service is never
started: `LocalPrometheus` runs the binary itself with a generated config, a free port and its own
storage directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

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


class LocalPrometheus:
    """A Prometheus server on 127.0.0.1 with a generated config, a free port and its storage in
    `data_dir`, scraping `targets` every `scrape_interval_s`; `rule_files` are loaded too.
    Runs in its own session; `stop()` (idempotent) ends it.

        with LocalPrometheus(tmp, ["127.0.0.1:9750"]) as prom:
            prom.query("kldrift_reports_total")
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        targets: list[str],
        *,
        scrape_interval_s: float = 1.0,
        rule_files: list[Path] | None = None,
        job: str = "kldrift-exporter",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.targets = targets
        self.scrape_interval_s = scrape_interval_s
        self.rule_files = rule_files or []
        self.job = job
        self.port = 0
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> dict[str, Any]:
        interval = f"{self.scrape_interval_s:g}s"
        return {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [str(path) for path in self.rule_files],
            "scrape_configs": [
                {"job_name": self.job, "static_configs": [{"targets": self.targets}]}
            ],
        }

    def start(self, timeout_s: float = 60.0) -> LocalPrometheus:
        import json

        binary = require()[0]
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "prometheus.yml"
        config.write_text(json.dumps(self._config(), indent=2))  # JSON is YAML
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        log = (self.data_dir / "prometheus.log").open("wb")
        self._process = subprocess.Popen(
            [
                str(binary),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.data_dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                tail = (self.data_dir / "prometheus.log").read_text()[-2000:]
                raise PrometheusSetupError(f"prometheus exited at start:\n{tail}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        raise PrometheusSetupError(f"prometheus did not become ready within {timeout_s:g} s")

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/PATH?params; the `data` of a successful answer, else RuntimeError."""
        import json

        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as answer:
                body = json.loads(answer.read())
        except urllib.error.HTTPError as err:
            body = json.loads(err.read() or b"{}")
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus {path} {params}: {body.get('error', body)}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector: [{"metric": {labels}, "value": [ts, "text"]}]."""
        data = self.api("query", query=promql)
        if data["resultType"] != "vector":
            raise RuntimeError(f"{promql!r} gave a {data['resultType']}, not a vector")
        return list(data["result"])

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    def __enter__(self) -> LocalPrometheus:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
