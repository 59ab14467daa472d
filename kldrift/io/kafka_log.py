"""kafka-python's log, collapsed to what a user needs: one line when a connection to a broker is
lost (or cannot be made), one when it is back, and each other problem once.

kafka-python logs every reconnect attempt, metadata retry and coordinator change as WARNING or
ERROR (21-41 lines before a bootstrap to nowhere gives up, hundreds in a 20 s outage). The CLI
installs `KafkaStateLog` on the `kafka` logger for every command (`install()`).
"""

from __future__ import annotations

import logging
import re
import sys
import time

_NODE_AT = re.compile(r"Initializing connection for node_id (\S+) at (\S+?)(?: \(|$)")
_NODE = re.compile(r"node_id=(\S+)")
_HOST = re.compile(r"host=\[([^<\]]+)")
_LOST = re.compile(r"Connection lost: (.*)$")
_DIGITS = re.compile(r"\d+(\.\d+)?")
_CHATTER = (
    "Connection failed",
    "Error receiving network data",
    "<KafkaTCPTransport",
    "socket disconnected",
    "Abort (",
    "Bootstrap",
    "metadata refresh",
    "Metadata refresh",
    "coordinator",
    "Coordinator",
    "not ready",
    "NodeNotReady",
    "Error sending",
    "KafkaConnectionError",
    "KafkaTimeoutError",
    "ECONNREFUSED",
)
"""Phrases of kafka-python's retry messages: consequences of a lost connection, said once by
the lost/back lines."""


_last_problem: list[str] = []
_quiet: list[bool] = []


def quiet() -> None:
    """From now on, no state lines: the job is being stopped, and the connections its reader and
    writers close mid-request ("connection lost") are its aftermath, not news for the operator."""
    _quiet[:] = [True]


def last_problem() -> str | None:
    """Why the last connection failed, as kafka-python said it (for a fatal error's one line)."""
    return _last_problem[-1] if _last_problem else None


def _remember(problem: str) -> None:
    _last_problem[:] = [problem]


class KafkaStateLog(logging.Handler):
    """Turns kafka-python's records into state-change lines on stderr ("kafka: connection to
    HOST lost (...); retrying", "kafka: connection to HOST back after N s"); other warnings and
    errors are written once each, retry chatter not at all."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self._hosts: dict[str, str] = {}  # node id -> host:port
        self._connected: set[str] = set()  # hosts reached at least once
        self._lost: dict[str, float] = {}  # host -> since (monotonic)
        self._said: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if _quiet:
            return
        try:
            message = record.getMessage()
        except Exception:  # a malformed record from the library: not ours to fail on
            return
        line = self._line(message, record.levelno)
        if line is not None:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    def _line(self, message: str, level: int) -> str | None:
        found = _NODE_AT.search(message)
        if found:
            self._hosts[found.group(1)] = found.group(2)
            return None
        if message.endswith(": Connected"):
            host = self._host_of(message)
            self._connected.add(host)
            since = self._lost.pop(host, None)
            if since is None:
                return None
            return f"kafka: connection to {host} back after {time.monotonic() - since:.0f} s"
        lost = _LOST.search(message)
        if lost:
            _remember(lost.group(1))
            host = self._host_of(message)
            if host in self._lost:
                return None
            self._lost[host] = time.monotonic()
            if host in self._connected:
                return f"kafka: connection to {host} lost ({lost.group(1)}); retrying"
            return f"kafka: cannot connect to {host} ({lost.group(1)}); retrying"
        if level < logging.WARNING or any(phrase in message for phrase in _CHATTER):
            return None
        _remember(message.rsplit(">: ", 1)[-1])
        key = _DIGITS.sub("N", message)
        if key in self._said:
            return None
        self._said.add(key)
        return f"kafka: {message}"

    def _host_of(self, message: str) -> str:
        host = _HOST.search(message)
        if host:
            return host.group(1)
        node = _NODE.search(message)
        return self._hosts.get(node.group(1), "Kafka") if node else "Kafka"


def install() -> None:
    """Route the `kafka` logger (kafka-python) through one KafkaStateLog, nowhere else."""
    kafka = logging.getLogger("kafka")
    if any(isinstance(h, KafkaStateLog) for h in kafka.handlers):
        return
    kafka.setLevel(logging.INFO)  # "Connected" and "Initializing connection" are INFO
    kafka.propagate = False
    kafka.addHandler(KafkaStateLog())
    # The reader's own lines for an operator ("kafka: partition(s) 3 added to ...", "kafka:
    # another job ... commits offsets of group ..."): as they are, without a logger prefix.
    reader = logging.getLogger("kldrift.io.kafka_source")
    plain = logging.StreamHandler(sys.stderr)
    plain.setFormatter(logging.Formatter("%(message)s"))
    plain.setLevel(logging.WARNING)
    reader.addHandler(plain)
    reader.propagate = False


def kafka_error_line(err: BaseException) -> str | None:
    """One line for a kafka-python error that reached the CLI (None if `err` is not one)."""
    from kafka.errors import KafkaError

    if not isinstance(err, KafkaError):
        return None
    said = str(err).removeprefix(f"{type(err).__name__}: ") or type(err).__name__
    problem = last_problem()
    cause = f"{said} ({problem})" if problem else said
    return f"Kafka: {cause}: check the bootstrap address and kafka.client settings"
