"""LocalKafka: one single-node KRaft broker (broker + controller in one JVM) on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from kldrift.local.kafka.install import (
    _HEAP_OPTS,
    _JVM_OPTS,
    _LOG4J_RESOURCE,
    _LOG_TAIL_LINES,
    _TOOL_JVM_OPTS,
    DEFAULT_START_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    KAFKA_VERSION,
    LocalKafkaError,
    ensure_installed,
    java_executable,
)
from kldrift.local.kafka.process import (
    _first_errors,
    _free_ports,
    _signal_group,
    _tail,
    random_cluster_id,
    wait_until_ready,
)
from kldrift.local.kafka.security import (
    SECURITY_MODES,
    _client_settings,
    _make_certificates,
    _security_properties,
    _write_private,
)
from kldrift.local.maven import copy_resource

log = logging.getLogger(__name__)


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
