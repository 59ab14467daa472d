"""The broker's process: free ports, log tails, whether a pid is alive, stopping a process group,
and waiting until the broker answers."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kldrift.local import procs
from kldrift.local.kafka.install import (
    _LOG_TAIL_LINES,
    DEFAULT_START_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    LocalKafkaError,
)


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

    from kldrift.io.kafka_client import admin_client

    configs: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": "kldrift-local",
        "request_timeout_ms": max(1000, int(timeout * 1000)),
        **(client or {}),
    }
    if "bootstrap_timeout_ms" in KafkaAdminClient.DEFAULT_CONFIG:  # kafka-python >= 3
        configs["bootstrap_timeout_ms"] = max(1000, int(timeout * 1000))
    return admin_client(configs)


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
