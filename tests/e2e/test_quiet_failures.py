"""Kafka that cannot be used gives a short, clear failure: kafka-python's retry chatter (21-41
lines before) is collapsed into one state line, and the fatal error is one line naming the cause;
exit code 2. The CLI as a user runs it; a real broker for the SASL case."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from _jobs import latency_job, run_cli

PASSWORD = "quiet-failures-s3cret-pw"


def _config(tmp_path: Path, bootstrap: str, **client: str) -> Path:
    kafka = {
        "bootstrap_servers": bootstrap,
        "input_topic": "quiet-events",
        "output_topic": "quiet-drift",
        "dead_letter_topic": "quiet-dead",
        "client": client,
    }
    return latency_job(tmp_path, "quiet", kafka, size_s=4, period_s=2, lateness_s=30)


def _nothing_listens() -> int:
    with socket.socket() as probe:  # bound, never listening: connections are refused
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_run_with_bootstrap_where_nothing_listens_fails_in_two_lines(tmp_path: Path) -> None:
    port = _nothing_listens()
    done = run_cli("run", "--config", str(_config(tmp_path, f"127.0.0.1:{port}")), timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) <= 3, lines
    assert lines[-1].startswith(f"kldrift: error: cannot reach Kafka at 127.0.0.1:{port}")
    assert "ECONNREFUSED" in lines[-1] and "kafka.bootstrap_servers" in lines[-1]
    assert "Traceback" not in done.stderr + done.stdout


def test_watch_with_bootstrap_where_nothing_listens_fails_in_one_line_not_a_traceback(
    tmp_path: Path,
) -> None:
    port = _nothing_listens()
    done = run_cli("watch", "--config", str(_config(tmp_path, f"127.0.0.1:{port}")), timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) <= 3, lines
    assert lines[-1].startswith("kldrift: error: Kafka: ") and f"127.0.0.1:{port}" in lines[-1]
    assert "Traceback" not in done.stderr


@pytest.mark.services
def test_run_with_sasl_against_a_plaintext_broker_fails_in_a_few_lines(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    config = _config(
        tmp_path,
        kafka_bootstrap,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_plain_username="kldrift",
        sasl_plain_password=PASSWORD,
    )
    done = run_cli("run", "--config", str(config), timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) <= 3, lines
    assert lines[-1].startswith(f"kldrift: error: cannot reach Kafka at {kafka_bootstrap}")
    assert "Sasl" in lines[-1] or "SASL" in lines[-1]  # names the cause
    assert PASSWORD not in done.stderr + done.stdout
