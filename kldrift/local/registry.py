"""A real, local Schema Registry (Apicurio Registry, in-memory storage) on 127.0.0.1, for Avro and
Protobuf events in development, tests and the demo: Confluent-compatible API under /apis/ccompat/v7.

* `ensure_installed()` fetches Apicurio's ready-to-run bundle (``REGISTRY_ARTIFACT``) once from
  Maven Central with `mvn` and unpacks it into ``cache_dir()/apicurio-registry-<VERSION>``.
* `LocalRegistry` starts it (`java -jar ...-runner.jar` on Java 17, a free port unless given), waits
  until its ccompat API answers, and stops it (process group SIGTERM, then SIGKILL); its log is
  ``registry.log`` in its directory. A context manager; the tests' fixture `schema_registry` uses it.
* `cli()` backs ``kldrift local registry start|stop|status``: one background registry whose state
  and log live under ``cache_dir()/run/registry/``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType

from kldrift.local.kafka.install import LocalKafkaError, java_executable
from kldrift.local.kafka.process import (
    _free_ports,
    _signal_group,
    _tail,
    _terminate_detached,
    pid_alive,
)
from kldrift.local.maven import file_lock, require_mvn
from kldrift.local.paths import cache_dir

REGISTRY_VERSION = "2.6.13.Final"
REGISTRY_ARTIFACT = f"io.apicurio:apicurio-registry-app:{REGISTRY_VERSION}:tar.gz:all"
RUNNER_JAR = f"apicurio-registry-app-{REGISTRY_VERSION}-runner.jar"
CCOMPAT_PATH = "/apis/ccompat/v7"
"""Where Apicurio serves the Confluent Schema Registry API (what kafka.schema_registry.url names)."""
MARKER = "kldrift-registry"
"""On the registry JVM's command line (a system property): how leftovers and `stop` find it."""
DEFAULT_START_TIMEOUT = 120.0
_JVM_OPTS = ("-Xms64m", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
_MARKER_FILE = ".installed"


class LocalRegistryError(RuntimeError):
    """The local registry could not be installed, started or reached."""


def install_dir() -> Path:
    return cache_dir() / f"apicurio-registry-{REGISTRY_VERSION}"


def _java() -> str:
    try:
        return java_executable(f"Apicurio Registry {REGISTRY_VERSION}")
    except LocalKafkaError as err:
        raise LocalRegistryError(str(err)) from None


def ensure_installed() -> Path:
    """The runner jar, fetched and unpacked the first time (later calls are offline). The bundle
    is unpacked in a temporary directory renamed into place: an interrupted install never looks
    complete."""
    target = install_dir()
    if (target / _MARKER_FILE).is_file():
        return target / RUNNER_JAR
    with file_lock(cache_dir() / f".apicurio-registry-{REGISTRY_VERSION}.lock"):
        if (target / _MARKER_FILE).is_file():
            return target / RUNNER_JAR
        mvn = require_mvn(f"Apicurio Registry {REGISTRY_VERSION}", LocalRegistryError)
        _java()
        print(f"setup: fetching Apicurio Registry {REGISTRY_VERSION} (~140 MB) from Maven Central")
        sys.stdout.flush()
        cache_dir().mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".registry-", dir=cache_dir()) as tmp:
            command = [
                mvn,
                "-q",
                "-B",
                "-Dstyle.color=never",
                "dependency:copy",
                f"-Dartifact={REGISTRY_ARTIFACT}",
                f"-DoutputDirectory={tmp}",
            ]
            done = subprocess.run(command, cwd=tmp, capture_output=True, text=True, check=False)
            bundles = list(Path(tmp).glob("*.tar.gz"))
            if done.returncode != 0 or not bundles:
                tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-20:])
                raise LocalRegistryError(
                    f"Maven could not fetch {REGISTRY_ARTIFACT} (exit {done.returncode}):\n{tail}"
                )
            unpacked = Path(tmp) / "unpacked"
            with tarfile.open(bundles[0]) as bundle:
                bundle.extractall(unpacked, filter="data")
            if not (unpacked / RUNNER_JAR).is_file():
                raise LocalRegistryError(f"{bundles[0].name} holds no {RUNNER_JAR}")
            (unpacked / _MARKER_FILE).write_text(json.dumps({"version": REGISTRY_VERSION}) + "\n")
            if target.exists():  # an older, unmarked copy
                shutil.rmtree(target)
            os.replace(unpacked, target)
    return target / RUNNER_JAR


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/subjects", timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


class LocalRegistry:
    """One Apicurio Registry JVM (in-memory storage: its schemas live as long as it runs) on
    127.0.0.1, its log in `run_dir`/registry.log. `url` is the Confluent-compatible API's base.

        with LocalRegistry(tmp) as registry:
            config.kafka.schema_registry.url = registry.url
    """

    def __init__(self, run_dir: str | os.PathLike[str], port: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.port = port or 0
        self.pid: int | None = None
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{CCOMPAT_PATH}"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "registry.log"

    def start(self, timeout_s: float = DEFAULT_START_TIMEOUT) -> LocalRegistry:
        jar = ensure_installed()
        java = _java()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port = _free_ports(1)[0]
        began = time.monotonic()
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                [
                    java,
                    *_JVM_OPTS,
                    f"-D{MARKER}={self.run_dir}",
                    "-Dquarkus.http.host=127.0.0.1",
                    f"-Dquarkus.http.port={self.port}",
                    "-Dquarkus.log.console.color=false",
                    "-jar",
                    str(jar),
                ],
                cwd=self.run_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid = self._proc.pid
        deadline = began + timeout_s
        while not _answers(self.url):
            if self._proc.poll() is not None:
                raise LocalRegistryError(
                    f"the registry exited with code {self._proc.returncode} at start; "
                    f"{self.log_path} ends:\n{_tail(self.log_path)}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise LocalRegistryError(
                    f"the registry did not answer within {timeout_s:g} s; "
                    f"{self.log_path} ends:\n{_tail(self.log_path)}"
                )
            time.sleep(0.25)
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self, timeout_s: float = 20.0) -> None:
        """Stop the JVM (its whole process group), idempotently."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        import signal

        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def detach(self) -> None:
        """Leave the JVM running after this object is gone (`kldrift local registry start`)."""
        self._proc = None

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


# --------------------------------------------------------------------------------------------
# `kldrift local registry start|stop|status`
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RegistryState:
    """What `kldrift local registry start` records about the background registry."""

    pid: int
    url: str
    run_dir: str

    def alive(self) -> bool:
        return pid_alive(self.pid, MARKER)


def run_dir() -> Path:
    return cache_dir() / "run" / "registry"


def _state_path() -> Path:
    return run_dir() / "state.json"


def read_state() -> RegistryState | None:
    try:
        raw = json.loads(_state_path().read_text())
        return RegistryState(int(raw["pid"]), str(raw["url"]), str(raw["run_dir"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _cli_start(port: int | None) -> int:
    state = read_state()
    if state is not None and state.alive() and _answers(state.url):
        print(f"registry: already running (pid {state.pid}), log {state.run_dir}/registry.log")
        print(state.url)
        return 0
    if state is not None and state.alive():
        _terminate_detached(state.pid, MARKER)
    registry = LocalRegistry(run_dir(), port=port).start()
    assert registry.pid is not None and registry.startup_seconds is not None
    state = RegistryState(registry.pid, registry.url, str(registry.run_dir))
    tmp = _state_path().with_suffix(".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(state), indent=1) + "\n")
    os.replace(tmp, _state_path())
    registry.detach()
    print(
        f"registry: started Apicurio Registry {REGISTRY_VERSION} (pid {registry.pid}, in-memory "
        f"storage) in {registry.startup_seconds:.1f} s, log {registry.log_path}"
    )
    print(registry.url)
    return 0


def _cli_stop(port: int | None) -> int:
    state = read_state()
    if state is not None and state.alive():
        _terminate_detached(state.pid, MARKER)
        if state.alive():
            print(f"registry: could not stop pid {state.pid}", file=sys.stderr)
            return 1
        print(f"registry: stopped (pid {state.pid}); its schemas are gone (in-memory storage)")
    else:
        print("registry: not running")
    shutil.rmtree(run_dir(), ignore_errors=True)
    return 0


def _cli_status(port: int | None) -> int:
    state = read_state()
    if state is not None and state.alive():
        answering = "" if _answers(state.url) else " (not answering yet)"
        print(f"running at {state.url} (pid {state.pid}){answering}")
        return 0
    print("not running")
    return 3


def cli(action: str, port: int | None = None) -> int:
    """``kldrift local registry start|stop|status``; returns the exit code.

    start: 0 (the registry's URL, for kafka.schema_registry.url, is the last stdout line); stop: 0,
    also when not running; status: 0 running, 3 not running. A set-up or start-up failure prints
    one error and exits 2.
    """
    actions = {"start": _cli_start, "stop": _cli_stop, "status": _cli_status}
    if action not in actions:
        raise ValueError(f"unknown action {action!r}: expected start, stop or status")
    try:
        with file_lock(cache_dir() / "run" / "registry.lock"):
            return actions[action](port)
    except LocalRegistryError as err:
        print(f"kldrift: error: {err}", file=sys.stderr)
        return 2
