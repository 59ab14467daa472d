"""`kldrift local kafka start|stop|restart|status`: one persistent background broker whose state
lives under ``cache_dir()/run/kafka/``."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from kldrift.local.kafka.broker import LocalKafka, _formatted
from kldrift.local.kafka.install import KAFKA_VERSION, LocalKafkaError
from kldrift.local.kafka.process import _terminate_detached, pid_alive, wait_until_ready
from kldrift.local.kafka.security import _client_settings, _write_private
from kldrift.local.maven import file_lock
from kldrift.local.paths import cache_dir


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
