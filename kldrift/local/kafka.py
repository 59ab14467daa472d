"""A real, local Apache Kafka broker for development, tests and the demo (no Docker, no mocks).

kldrift reads events from and reports drift to Kafka. To run that end to end on one machine, this
module installs and runs a genuine single-node Apache Kafka broker in KRaft mode (broker and
controller in one JVM) listening on 127.0.0.1 only:

* `ensure_installed()` fetches the broker jars once from Maven Central with `mvn` (the packaged
  ``kafka-pom.xml``) into ``cache_dir()/kafka-<KAFKA_VERSION>/lib``; later calls are offline.
* `LocalKafka` formats a fresh data dir (or restarts the cluster already in it, same ports), starts
  the broker, waits until it answers and stops it (process group SIGTERM, then SIGKILL); its client
  listener is plaintext, SASL/PLAIN or TLS (`security`). It is a context manager; the test suite's
  session fixture ``kafka_bootstrap`` uses it.
* `create_topics()` creates topics idempotently (the broker has auto topic creation disabled).
* `cli()` backs ``kldrift local kafka start|stop|restart|status``: one persistent background
  broker whose state lives under ``cache_dir()/run/kafka/``.

Needs Java 17+ on PATH (or $JAVA_HOME) and, for the first install only, Maven.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any

from kldrift.local import procs
from kldrift.local.maven import copy_resource, fetch_jars, file_lock, require_mvn
from kldrift.local.paths import cache_dir

KAFKA_VERSION = "4.1.1"
"""The Apache Kafka broker version `ensure_installed()` installs (must match ``kafka-pom.xml``)."""

DEFAULT_START_TIMEOUT = 60.0
DEFAULT_STOP_TIMEOUT = 20.0

_POM_RESOURCE = "kafka-pom.xml"
_LOG4J_RESOURCE = "log4j2.properties"
_MARKER = ".installed"
_HEAP_OPTS = ("-Xms256m", "-Xmx1g")
_JVM_OPTS = ("-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true")
# Short-lived tools (StorageTool) start faster with a small serial-GC JVM.
_TOOL_JVM_OPTS = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
_LOG_TAIL_LINES = 30

log = logging.getLogger(__name__)


class LocalKafkaError(RuntimeError):
    """The local broker could not be installed, started or reached."""


# --------------------------------------------------------------------------------------------
# Installation
# --------------------------------------------------------------------------------------------


def install_dir() -> Path:
    """``cache_dir()/kafka-<KAFKA_VERSION>`` (may not exist yet)."""
    return cache_dir() / f"kafka-{KAFKA_VERSION}"


def _required_jars_present(lib: Path) -> bool:
    names = {p.name for p in lib.glob("*.jar")}
    return (
        f"kafka_2.13-{KAFKA_VERSION}.jar" in names
        and any(n.startswith("slf4j-api-2.") for n in names)
        and any(n.startswith("log4j-slf4j2-impl-") for n in names)
        and any(n.startswith("log4j-core-") for n in names)
    )


def _is_installed(target: Path) -> bool:
    return (target / _MARKER).is_file() and (target / "lib").is_dir()


@lru_cache(maxsize=1)
def java_executable() -> str:
    """The `java` to run the broker with ($JAVA_HOME/bin/java, else PATH); must be Java 17+."""
    java: str | None = None
    java_home = os.environ.get("JAVA_HOME")
    if java_home and os.access(os.path.join(java_home, "bin", "java"), os.X_OK):
        java = os.path.join(java_home, "bin", "java")
    if java is None:
        java = shutil.which("java")
    if java is None:
        raise LocalKafkaError(
            f"`java` is not on PATH (and $JAVA_HOME is unset): Apache Kafka {KAFKA_VERSION} "
            "needs Java 17 or newer (e.g. `apt-get install openjdk-17-jre-headless`)"
        )
    proc = subprocess.run(
        [java, "-version"], capture_output=True, text=True, timeout=60, check=False
    )
    major = _java_major(proc.stderr + proc.stdout)
    if major is not None and major < 17:
        raise LocalKafkaError(
            f"{java} is Java {major}; Apache Kafka {KAFKA_VERSION} needs Java 17 or newer"
        )
    return java


def _java_major(version_output: str) -> int | None:
    """Parse `java -version` output: '... version "17.0.15" ...' -> 17, '"1.8.0_392"' -> 8."""
    for line in version_output.splitlines():
        if "version" in line and '"' in line:
            text = line.split('"')[1]
            parts = text.split(".")
            try:
                first = int(parts[0].split("-")[0])
                return int(parts[1]) if first == 1 and len(parts) > 1 else first
            except ValueError:
                return None
    return None


def ensure_installed() -> Path:
    """Return the lib dir holding the Kafka broker jars, fetching them with Maven the first time.

    A complete install (marker file present) is returned without touching the network. Otherwise
    Maven copies the runtime dependencies of the packaged ``kafka-pom.xml`` into a temporary
    directory that is then renamed into place, so an interrupted install never looks complete.
    """
    target = install_dir()
    if _is_installed(target):
        return target / "lib"
    with file_lock(cache_dir() / f".kafka-{KAFKA_VERSION}.lock"):
        if _is_installed(target):  # another process finished while we waited
            return target / "lib"
        require_mvn(f"Apache Kafka {KAFKA_VERSION}", LocalKafkaError)
        java_executable()  # fail early, before a download, if there is no usable Java
        print(f"setup: fetching Apache Kafka {KAFKA_VERSION} broker jars from Maven Central")
        sys.stdout.flush()
        lib = fetch_jars(
            _POM_RESOURCE,
            target,
            what=f"Apache Kafka {KAFKA_VERSION}",
            complete=_required_jars_present,
            error=LocalKafkaError,
        )
        marker_tmp = target / f"{_MARKER}.tmp"
        jars = sorted(p.name for p in lib.glob("*.jar"))
        marker_tmp.write_text(json.dumps({"kafka_version": KAFKA_VERSION, "jars": jars}, indent=1))
        os.replace(marker_tmp, target / _MARKER)
    return lib


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def random_cluster_id() -> str:
    """A random Kafka cluster id (as `kafka-storage random-uuid`): url-safe base64, 22 chars."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not text.startswith("-"):  # Kafka's Uuid.randomUuid avoids ids that look like flags
            return text


def _free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` distinct ports that were free on `host` a moment ago."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 256 * 1024))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _first_errors(path: Path, entries: int = 3) -> str:
    """The first ERROR/FATAL entries of a Kafka log (each with the line after it: the cause)."""
    found: list[str] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            take_next = False
            for line in handle:
                line = line.rstrip("\n")
                if take_next and not line.startswith("["):
                    found.append(line)
                take_next = False
                if line.startswith("[") and ("] ERROR " in line or "] FATAL " in line):
                    if len([f for f in found if f.startswith("[")]) >= entries:
                        break
                    found.append(line)
                    take_next = True
    except OSError:
        return ""
    return "\n".join(found)


def pid_alive(pid: int, cmdline_contains: str | None = None) -> bool:
    """Whether `pid` is a live (not zombie) process, whose command line contains the given text.

    An orphaned broker is re-parented to PID 1; an init that does not reap leaves a zombie, which
    counts as dead here.
    """
    if pid <= 0:
        return False
    if procs.available():
        state = procs.state(pid)
        if state is None or state in ("Z", "X"):
            return False
        if cmdline_contains is not None:
            cmdline = procs.cmdline(pid)
            return cmdline is not None and cmdline_contains in cmdline
        return True
    try:  # no /proc (macOS): existence only
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _terminate_detached(pid: int, marker: str, timeout: float = DEFAULT_STOP_TIMEOUT) -> None:
    """Stop a broker that is not our child (pid = its process group): SIGTERM, then SIGKILL."""
    if not pid_alive(pid, marker):
        return
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid, marker):
            return
        time.sleep(0.2)
    _signal_group(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while pid_alive(pid, marker) and time.monotonic() < deadline:
        time.sleep(0.1)


def _admin(bootstrap: str, timeout: float, client: Mapping[str, Any] | None = None) -> Any:
    from kafka import KafkaAdminClient

    configs: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": "kldrift-local",
        "request_timeout_ms": max(1000, int(timeout * 1000)),
        **(client or {}),
    }
    if "bootstrap_timeout_ms" in KafkaAdminClient.DEFAULT_CONFIG:  # kafka-python >= 3
        configs["bootstrap_timeout_ms"] = max(1000, int(timeout * 1000))
    return KafkaAdminClient(**configs)


def _split_bootstrap(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    return host or "127.0.0.1", int(port)


def wait_until_ready(
    bootstrap: str,
    timeout: float = DEFAULT_START_TIMEOUT,
    *,
    proc: subprocess.Popen[bytes] | None = None,
    client: Mapping[str, Any] | None = None,
) -> None:
    """Block until the broker at `bootstrap` answers a cluster-metadata request with itself
    (`client`: kafka-python security settings, LocalKafka.client_settings).

    Raises LocalKafkaError when `timeout` seconds pass, or as soon as `proc` (if given) exits.
    """
    deadline = time.monotonic() + timeout
    host, port = _split_bootstrap(bootstrap)
    last_error = "no answer"

    def check_proc() -> None:
        if proc is not None and proc.poll() is not None:
            raise LocalKafkaError(f"the broker process exited with code {proc.returncode}")

    while True:  # 1. the listener accepts TCP connections (cheap, and no client log noise)
        check_proc()
        try:
            socket.create_connection((host, port), timeout=1.0).close()
            break
        except OSError as err:
            last_error = str(err)
        if time.monotonic() >= deadline:
            raise LocalKafkaError(f"broker at {bootstrap} not reachable after {timeout:.0f} s")
        time.sleep(0.2)
    while True:  # 2. it serves metadata that lists a broker
        check_proc()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LocalKafkaError(
                f"broker at {bootstrap} did not answer within {timeout:.0f} s ({last_error})"
            )
        try:
            admin = _admin(bootstrap, min(3.0, max(1.0, remaining)), client)
            try:
                cluster = admin.describe_cluster()
            finally:
                admin.close()
            if cluster.get("brokers"):
                return
            last_error = "no brokers in cluster metadata yet"
        except Exception as err:  # any client error means "not yet"
            last_error = f"{type(err).__name__}: {err}"
        time.sleep(0.3)


# --------------------------------------------------------------------------------------------
# The broker
# --------------------------------------------------------------------------------------------


SECURITY_MODES = ("plaintext", "sasl_plaintext", "ssl")
"""How the broker's client listener is secured: none, SASL/PLAIN (user `kldrift`), or TLS."""
SASL_USER = "kldrift"


def _security_properties(security: str, data_dir: Path, secret: str) -> dict[str, str]:
    """The listener settings of a security mode (secrets are in server.properties, mode 0600)."""
    if security == "plaintext":
        return {}
    if security == "sasl_plaintext":
        jaas = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="{SASL_USER}" password="{secret}" user_{SASL_USER}="{secret}";'
        )
        return {
            "sasl.enabled.mechanisms": "PLAIN",
            "sasl.mechanism.inter.broker.protocol": "PLAIN",
            "listener.name.sasl_plaintext.plain.sasl.jaas.config": jaas,
        }
    ssl_dir = data_dir / "ssl"
    return {
        "ssl.keystore.type": "PKCS12",
        "ssl.keystore.location": str(ssl_dir / "broker.p12"),
        "ssl.keystore.password": secret,
        "ssl.key.password": secret,
        "ssl.truststore.type": "PKCS12",
        "ssl.truststore.location": str(ssl_dir / "truststore.p12"),
        "ssl.truststore.password": secret,
    }


def _server_properties(
    data_dir: Path, port: int, controller_port: int, security: str = "plaintext", secret: str = ""
) -> str:
    listener = security.upper()
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # KIP-853 dynamic quorum, matching `StorageTool format --standalone`.
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "listeners": f"{listener}://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"{listener}://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": listener,
        "listener.security.protocol.map": f"{listener}:{listener},CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir / "kraft-logs"),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "auto.create.topics.enable": "false",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Small thread pools: a development broker on a small, shared machine.
        "num.network.threads": "2",
        "num.io.threads": "2",
        "num.recovery.threads.per.data.dir": "1",
        "background.threads": "2",
    }
    settings.update(_security_properties(security, data_dir, secret))
    header = "# Written by kldrift.local.kafka: single-node KRaft broker+controller on 127.0.0.1\n"
    return header + "".join(f"{k}={v}\n" for k, v in settings.items())


_BROKER_FILE = "broker.json"


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read (it holds the broker's secret)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _formatted(data_dir: Path) -> dict[str, Any] | None:
    """What broker.json records about a cluster formatted in `data_dir`, or None."""
    if not (data_dir / "kraft-logs" / "meta.properties").is_file():
        return None
    try:
        recorded = json.loads((data_dir / _BROKER_FILE).read_text())
        return {
            "port": int(recorded["port"]),
            "controller_port": int(recorded["controller_port"]),
            "security": str(recorded["security"]),
            "secret": str(recorded["secret"]),
        }
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _client_settings(security: str, secret: str, data_dir: Path) -> dict[str, Any]:
    if security == "sasl_plaintext":
        return {
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_plain_username": SASL_USER,
            "sasl_plain_password": secret,
        }
    if security == "ssl":
        return {"security_protocol": "SSL", "ssl_cafile": str(data_dir / "ssl" / "ca.pem")}
    return {}


def _require_free(port: int, controller_port: int, data_dir: Path) -> None:
    """LocalKafkaError naming the port if another process listens on it."""
    for name, number in (("port", port), ("controller port", controller_port)):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the JVM binds
            try:
                probe.bind(("127.0.0.1", number))
            except OSError:
                hint = (
                    "start it with another --port"
                    if name == "port"
                    else "it is fixed when the cluster is formatted: free it, or remove the data dir"
                )
                raise LocalKafkaError(
                    f"cannot start the broker in {data_dir} on 127.0.0.1:{number}: its {name} is "
                    f"taken by another process ({hint})"
                ) from None


def _make_certificates(java: str, ssl_dir: Path, secret: str) -> None:
    """A CA, a broker key and certificate for 127.0.0.1 signed by it (PKCS12 key and trust stores),
    and the CA as PEM for clients (ssl_cafile), made with the JDK's keytool."""
    keytool = str(Path(java).resolve().parent / "keytool")
    ssl_dir.mkdir(parents=True, exist_ok=True)
    ssl_dir.chmod(0o700)
    store = ["-storetype", "PKCS12", "-storepass", secret, "-keypass", secret, "-noprompt"]
    key = ["-keyalg", "RSA", "-keysize", "2048", "-validity", "3650"]
    san = "SAN=ip:127.0.0.1,dns:localhost"
    ca, broker, trust = (str(ssl_dir / n) for n in ("ca.p12", "broker.p12", "truststore.p12"))
    steps = [
        [
            "-genkeypair",
            "-alias",
            "ca",
            "-dname",
            "CN=kldrift local CA",
            *key,
            "-ext",
            "bc:c",
            "-keystore",
            ca,
            *store,
        ],
        [
            "-exportcert",
            "-rfc",
            "-alias",
            "ca",
            "-keystore",
            ca,
            "-file",
            str(ssl_dir / "ca.pem"),
            *store,
        ],
        [
            "-genkeypair",
            "-alias",
            "broker",
            "-dname",
            "CN=127.0.0.1",
            *key,
            "-ext",
            san,
            "-keystore",
            broker,
            *store,
        ],
        [
            "-certreq",
            "-alias",
            "broker",
            "-keystore",
            broker,
            "-file",
            str(ssl_dir / "broker.csr"),
            *store,
        ],
        [
            "-gencert",
            "-alias",
            "ca",
            "-keystore",
            ca,
            "-infile",
            str(ssl_dir / "broker.csr"),
            "-outfile",
            str(ssl_dir / "broker.crt"),
            "-rfc",
            "-validity",
            "3650",
            "-ext",
            san,
            "-ext",
            "eku=serverAuth",
            *store,
        ],
        [
            "-importcert",
            "-alias",
            "ca",
            "-file",
            str(ssl_dir / "ca.pem"),
            "-keystore",
            broker,
            *store,
        ],
        [
            "-importcert",
            "-alias",
            "broker",
            "-file",
            str(ssl_dir / "broker.crt"),
            "-keystore",
            broker,
            *store,
        ],
        [
            "-importcert",
            "-alias",
            "ca",
            "-file",
            str(ssl_dir / "ca.pem"),
            "-keystore",
            trust,
            *store,
        ],
    ]
    for step in steps:
        done = subprocess.run(
            [keytool, "-J-XX:+UseSerialGC", "-J-XX:TieredStopAtLevel=1", *step],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip().replace(secret, "***")
            raise LocalKafkaError(f"keytool {step[0]} failed (exit {done.returncode}): {output}")


class LocalKafka:
    """One single-node KRaft Apache Kafka broker (broker + controller in one JVM) on 127.0.0.1.

    `start()` formats a fresh, empty cluster in ``data_dir`` (a temporary directory, removed by
    `stop()`, when none is given) on free ports, unless ``data_dir`` already holds a cluster an
    earlier start formatted (after a crash, or `stop(remove_data=False)`): that one restarts in
    place, with its data, ports and credentials (``data_dir/broker.json``). `restart()` does both.
    `security` secures the client listener (SECURITY_MODES); `client_settings` are the
    kafka-python settings that reach it. The broker runs in its own process group and session
    and logs to ``data_dir/server.log`` (JVM output: ``data_dir/kafka.out``).

        with LocalKafka() as kafka:
            create_topics(kafka.bootstrap, {"events": 3})
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        security: str | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        lib_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if security is not None and security not in SECURITY_MODES:
            raise LocalKafkaError(
                f"security {security!r}: expected one of {', '.join(SECURITY_MODES)}"
            )
        self._given_data_dir = Path(data_dir) if data_dir is not None else None
        self._data_dir: Path | None = self._given_data_dir
        self._wanted_port = port
        self._wanted_security = security
        self.start_timeout = start_timeout
        self._lib_dir = Path(lib_dir) if lib_dir is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._controller_port: int | None = None
        self._security = security or "plaintext"
        self._secret = ""
        self.reused = False
        """Whether the last start() restarted a cluster already in the data dir."""
        self.startup_seconds: float | None = None
        """Seconds from launching the broker JVM until it answered (after formatting storage)."""

    # -- properties ------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        if self._data_dir is None:
            raise LocalKafkaError("LocalKafka has no data dir before start()")
        return self._data_dir

    @property
    def port(self) -> int:
        if self._port is None:
            raise LocalKafkaError("LocalKafka is not started")
        return self._port

    @property
    def controller_port(self) -> int:
        if self._controller_port is None:
            raise LocalKafkaError("LocalKafka is not started")
        return self._controller_port

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:PORT``, for `bootstrap_servers`."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker JVM's pid (also its process group id), or None when not started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def stdout_path(self) -> Path:
        return self.data_dir / "kafka.out"

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The broker log's first errors and last `lines` lines, and the JVM's own output."""
        parts = []
        if self._data_dir is not None:
            errors = _first_errors(self.log_path)
            if errors:
                parts.append(f"--- first errors in {self.log_path.name} ---\n{errors}")
            log_text = _tail(self.log_path, lines)
            if log_text:
                parts.append(f"--- {self.log_path} (last {lines} lines) ---\n{log_text}")
            out_text = _tail(self.stdout_path, lines)
            if out_text:
                parts.append(f"--- {self.stdout_path} (last {lines} lines) ---\n{out_text}")
        return "\n".join(parts) or "(the broker wrote no log)"

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def security(self) -> str:
        return self._security

    @property
    def client_settings(self) -> dict[str, Any]:
        """kafka-python settings (besides bootstrap_servers) for this broker's security mode: what a
        job's `kafka.client` needs. Holds the SASL password in sasl_plaintext mode."""
        return _client_settings(self._security, self._secret, self.data_dir)

    def start(self) -> LocalKafka:
        """Launch the broker (formatting a fresh cluster unless the data dir holds one) and wait
        until it answers; returns self.

        Raises LocalKafkaError (with the end of the broker log) if it does not answer within
        `start_timeout` seconds or exits; the process is stopped first. A restart in place, or a
        given port, fails clearly when a port is taken; otherwise a port taken between choosing it
        and binding it is retried once with new ports.
        """
        if self.is_running():
            return self
        lib = self._lib_dir or ensure_installed()
        java = java_executable()
        for attempt in (1, 2):
            try:
                self._start_once(lib, java)
                return self
            except LocalKafkaError as err:
                fixed = self.reused or self._wanted_port is not None
                if attempt == 2 or fixed or "Address already in use" not in str(err):
                    raise
                log.warning("Kafka broker port was taken meanwhile; retrying on new ports")
                # The cluster just formatted has the taken ports: format a new one.
                shutil.rmtree(self.data_dir / "kraft-logs", ignore_errors=True)
        raise AssertionError("unreachable")

    def restart(self) -> LocalKafka:
        """Stop the broker keeping its data, and start it again in place (same ports, same data)."""
        self.stop(remove_data=False)
        return self.start()

    def kill(self) -> None:
        """SIGKILL the broker's process group (a crash, for tests); the data dir stays."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def _start_once(self, lib: Path, java: str) -> None:
        if self._data_dir is None:
            self._data_dir = Path(tempfile.mkdtemp(prefix="kldrift-kafka-"))
        data_dir = self._data_dir.resolve()
        self._data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        formatted = _formatted(data_dir)
        self.reused = formatted is not None
        if formatted is None:
            shutil.rmtree(data_dir / "kraft-logs", ignore_errors=True)
            shutil.rmtree(data_dir / "ssl", ignore_errors=True)
            for stale in (self.log_path, self.stdout_path):
                stale.unlink(missing_ok=True)
            if self._wanted_port is not None:
                port, controller_port = self._wanted_port, _free_ports(1)[0]
            else:
                port, controller_port = _free_ports(2)
            self._secret = secrets.token_urlsafe(18)
        else:
            # The controller's address is in the formatted metadata: it must stay. The client
            # port may change (--port); the security mode too.
            port = self._wanted_port or formatted["port"]
            controller_port = formatted["controller_port"]
            self._secret = formatted["secret"]
            self._security = self._wanted_security or formatted["security"]
            for old in (self.log_path, self.stdout_path):
                if old.exists():
                    os.replace(old, old.with_name(old.name + ".previous"))
        if formatted is not None or self._wanted_port is not None:
            _require_free(port, controller_port, data_dir)
        self._port, self._controller_port = port, controller_port
        _write_private(
            data_dir / _BROKER_FILE,
            json.dumps(
                {
                    "port": port,
                    "controller_port": controller_port,
                    "security": self._security,
                    "secret": self._secret,
                }
            ),
        )
        if self._security == "ssl" and not (data_dir / "ssl" / "broker.p12").is_file():
            _make_certificates(java, data_dir / "ssl", self._secret)
        props = data_dir / "server.properties"
        _write_private(
            props,
            _server_properties(data_dir, port, controller_port, self._security, self._secret),
        )
        log4j = copy_resource(_LOG4J_RESOURCE, data_dir / "log4j2.properties")
        common = [
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={data_dir}",
            "-cp",
            f"{lib}{os.sep}*",
        ]
        if formatted is None:
            self._format_storage(java, common, props)

        cmd = [java, *_HEAP_OPTS, *_JVM_OPTS, *common, "kafka.Kafka", str(props)]
        began = time.monotonic()
        with open(self.stdout_path, "ab") as out:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=data_dir,
                start_new_session=True,
                close_fds=True,
            )
        try:
            wait_until_ready(
                self.bootstrap, self.start_timeout, proc=self._proc, client=self.client_settings
            )
        except BaseException as err:
            report = self.log_tail()
            self.stop()
            if isinstance(err, LocalKafkaError):
                raise LocalKafkaError(
                    f"Kafka {KAFKA_VERSION} broker did not start: {err}\n{report}"
                ) from None
            raise
        self.startup_seconds = time.monotonic() - began
        log.info(
            "Kafka %s broker at %s (pid %s) ready in %.1f s",
            KAFKA_VERSION,
            self.bootstrap,
            self.pid,
            self.startup_seconds,
        )

    def _format_storage(self, java: str, common: list[str], props: Path) -> None:
        cmd = [
            java,
            *_TOOL_JVM_OPTS,
            *common,
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            random_cluster_id(),
            "-c",
            str(props),
        ]
        try:
            proc = subprocess.run(
                cmd,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise LocalKafkaError("kafka StorageTool format timed out after 120 s") from err
        if proc.returncode != 0:
            output = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-_LOG_TAIL_LINES:])
            raise LocalKafkaError(
                f"kafka StorageTool format failed (exit {proc.returncode}):\n{output}"
            )

    def stop(self, timeout: float = DEFAULT_STOP_TIMEOUT, *, remove_data: bool = True) -> None:
        """Stop the broker: SIGTERM to its process group, SIGKILL after `timeout` s. Idempotent.

        A temporary data dir this object created is deleted (unless `remove_data` is False); a
        data dir passed in is kept.
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                _signal_group(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    log.warning("Kafka broker pid %s ignored SIGTERM for %.0f s", proc.pid, timeout)
                    _signal_group(proc.pid, signal.SIGKILL)
                    proc.wait(10)
            else:
                # The JVM is gone; make sure nothing else is left in its group.
                _signal_group(proc.pid, signal.SIGKILL)
        if remove_data and self._given_data_dir is None and self._data_dir is not None:
            shutil.rmtree(self._data_dir, ignore_errors=True)
            self._data_dir = None

    def detach(self) -> None:
        """Forget the broker without stopping it (it keeps running in its own session)."""
        self._proc = None

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.bootstrap if self._port is not None else "not started"
        return f"LocalKafka({where}, pid={self.pid}, data_dir={self._data_dir})"


# --------------------------------------------------------------------------------------------
# Topics
# --------------------------------------------------------------------------------------------


def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    topic_configs: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    client: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create each `{name: partitions}` topic that does not exist yet; returns the names created.

    Idempotent: an existing topic is accepted as it is (its partition count is not changed).
    Returns once every listed topic has a leader for each partition. `topic_configs` (e.g.
    ``{"retention.ms": "600000"}``) applies to the topics created.
    """
    from kldrift.io.kafka_client import create_missing_topics

    for name, partitions in topics.items():
        if not name or int(partitions) < 1:
            raise ValueError(f"topic {name!r}: need a name and at least 1 partition")
    deadline = time.monotonic() + timeout
    admin = _admin(bootstrap, timeout, client)
    try:
        created = create_missing_topics(
            admin,
            topics,
            topic_configs={name: dict(topic_configs or {}) for name in topics},
            replication_factor=replication_factor,
            timeout_ms=int(timeout * 1000),
        )
        _wait_for_leaders(admin, list(topics), deadline)
    finally:
        admin.close()
    return created


def _wait_for_leaders(admin: Any, names: list[str], deadline: float) -> None:
    pending: dict[str, str] = {}
    while True:
        try:
            described = {t.get("name"): t for t in admin.describe_topics(names)}
        except Exception as err:  # retried until the deadline
            described = {}
            pending = {n: f"{type(err).__name__}" for n in names}
        else:
            pending = {}
            for name in names:
                info = described.get(name)
                if info is None or info.get("error_code", 0) != 0:
                    pending[name] = "not in metadata yet"
                    continue
                parts = info.get("partitions") or []
                if not parts or any(
                    p.get("error_code", 0) != 0 or p.get("leader_id", p.get("leader", -1)) < 0
                    for p in parts
                ):
                    pending[name] = "partitions without a leader"
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise LocalKafkaError(f"topics not ready in time: {pending}")
        time.sleep(0.1)


# --------------------------------------------------------------------------------------------
# `kldrift local kafka start|stop|restart|status`
# --------------------------------------------------------------------------------------------


def run_dir() -> Path:
    """Where the persistent CLI broker keeps its state and data: ``cache_dir()/run/kafka``."""
    return cache_dir() / "run" / "kafka"


@dataclasses.dataclass(frozen=True)
class BrokerState:
    """What `kldrift local kafka start` records about the background broker."""

    pid: int
    bootstrap: str
    data_dir: str
    kafka_version: str = KAFKA_VERSION
    security: str = "plaintext"

    def alive(self) -> bool:
        return pid_alive(self.pid, self.data_dir)


def _state_path() -> Path:
    return run_dir() / "state.json"


def read_state() -> BrokerState | None:
    """The recorded background broker, or None (no state, or unreadable state)."""
    try:
        raw = json.loads(_state_path().read_text())
        return BrokerState(
            pid=int(raw["pid"]),
            bootstrap=str(raw["bootstrap"]),
            data_dir=str(raw["data_dir"]),
            kafka_version=str(raw.get("kafka_version", KAFKA_VERSION)),
            security=str(raw.get("security", "plaintext")),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_state(state: BrokerState) -> None:
    path = _state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(state), indent=1) + "\n")
    os.replace(tmp, path)


def _remove_run_dir() -> None:
    shutil.rmtree(run_dir(), ignore_errors=True)


def _cli_lock() -> contextlib.AbstractContextManager[None]:
    return file_lock(cache_dir() / "run" / "kafka.lock")


@dataclasses.dataclass(frozen=True)
class CliOptions:
    """`kldrift local kafka` options: None = the recorded broker's (or the default)."""

    port: int | None = None
    data_dir: str | None = None
    security: str | None = None


def _launch(options: CliOptions, data_dir: Path) -> int:
    """Start (or restart in place) the background broker in `data_dir` and record it."""
    broker = LocalKafka(data_dir=data_dir, port=options.port, security=options.security)
    broker.start()
    pid = broker.pid
    assert pid is not None
    _write_state(
        BrokerState(
            pid=pid,
            bootstrap=broker.bootstrap,
            data_dir=str(broker.data_dir),
            security=broker.security,
        )
    )
    broker.detach()  # it outlives this process (own session); `stop` ends it
    how = "restarted in place" if broker.reused else "started"
    print(
        f"kafka: {how} Apache Kafka {KAFKA_VERSION} (pid {pid}, {broker.security}) in "
        f"{broker.startup_seconds:.1f} s, data {broker.data_dir}, log {broker.log_path}"
    )
    if broker.client_settings:
        client_file = broker.data_dir / "client.yaml"
        lines = "".join(f"{k}: {json.dumps(v)}\n" for k, v in broker.client_settings.items())
        _write_private(client_file, "# kafka.client settings for this broker\n" + lines)
        print(f"kafka: client settings for a config's kafka.client: {client_file}")
    print(broker.bootstrap)
    return 0


def _differs(state: BrokerState, options: CliOptions) -> str | None:
    """What the options ask for that the running broker does not have, or None."""
    if options.port is not None and state.bootstrap != f"127.0.0.1:{options.port}":
        return f"it listens on {state.bootstrap}"
    if options.data_dir is not None and Path(options.data_dir).resolve() != Path(state.data_dir):
        return f"its data dir is {state.data_dir}"
    if options.security is not None and options.security != state.security:
        return f"its security is {state.security}"
    return None


def _cli_start(options: CliOptions) -> int:
    with _cli_lock():
        state = read_state()
        if state is not None and state.alive():
            differs = _differs(state, options)
            if differs is not None:
                raise LocalKafkaError(
                    f"a broker is already running (pid {state.pid}) and {differs}: "
                    "`kldrift local kafka stop` it first"
                )
            try:
                wait_until_ready(state.bootstrap, 15.0, client=_recorded_client(state.data_dir))
            except LocalKafkaError:
                print(f"kafka: broker pid {state.pid} does not answer; restarting it")
                _terminate_detached(state.pid, state.data_dir)
            else:
                print(f"kafka: already running (pid {state.pid}), log {state.data_dir}/server.log")
                print(state.bootstrap)
                return 0
        if options.data_dir is not None:
            data_dir = Path(options.data_dir)
        elif state is not None:  # the broker died: restart it in place
            data_dir = Path(state.data_dir)
        else:
            data_dir = run_dir() / "data"
        return _launch(options, data_dir)


def _recorded_client(data_dir: str) -> dict[str, Any]:
    """The client settings of the cluster formatted in `data_dir` ({} if none is recorded)."""
    recorded = _formatted(Path(data_dir))
    if recorded is None:
        return {}
    return _client_settings(recorded["security"], recorded["secret"], Path(data_dir))


def _cli_restart(options: CliOptions) -> int:
    with _cli_lock():
        state = read_state()
        if state is not None and state.alive():
            _terminate_detached(state.pid, state.data_dir)
            if state.alive():
                raise LocalKafkaError(f"could not stop pid {state.pid} to restart it")
        if options.data_dir is not None:
            data_dir = Path(options.data_dir)
        elif state is not None:
            data_dir = Path(state.data_dir)
        else:
            data_dir = run_dir() / "data"
        return _launch(options, data_dir)


def _cli_stop(options: CliOptions) -> int:
    with _cli_lock():
        state = read_state()
        if state is not None and state.alive():
            _terminate_detached(state.pid, state.data_dir)
            if state.alive():
                print(f"kafka: could not stop pid {state.pid}", file=sys.stderr)
                return 1
            print(f"kafka: stopped (pid {state.pid})")
        else:
            print("kafka: not running")
        if state is not None and not Path(state.data_dir).is_relative_to(run_dir()):
            print(f"kafka: data kept in {state.data_dir} (given with --data-dir)")
        _remove_run_dir()
        return 0


def _cli_status(options: CliOptions) -> int:
    state = read_state()
    if state is not None and state.alive():
        print(f"running at {state.bootstrap} (pid {state.pid})")
        return 0
    print("not running")
    return 3


def cli(action: str, options: CliOptions | None = None) -> int:
    """``kldrift local kafka start|stop|restart|status``; returns the exit code.

    start: 0 (the bootstrap address is the last stdout line); after a crash it restarts the
    recorded broker in place (data dir, port); restart: stops it keeping its data and starts it
    again; stop: 0, also when not running (the default data dir is removed, a --data-dir kept);
    status: 0 running, 3 not running. Set-up or start-up failures print one error, exit 2.
    """
    actions = {
        "start": _cli_start,
        "stop": _cli_stop,
        "restart": _cli_restart,
        "status": _cli_status,
    }
    if action not in actions:
        raise ValueError(f"unknown action {action!r}: expected start, stop, restart or status")
    try:
        return actions[action](options or CliOptions())
    except LocalKafkaError as err:
        print(f"kldrift: error: {err}", file=sys.stderr)
        return 2
