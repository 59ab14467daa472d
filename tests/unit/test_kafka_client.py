"""Kafka client settings: pass-through per client, secrets masked, unreachable brokers fail fast."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from kldrift.io.kafka_client import KafkaSetupError, client_settings, ensure_topics, masked
from kldrift.schemas.config import KafkaSpec
from kldrift.synthetic import demo_config

KLDRIFT = str(Path(sys.executable).with_name("kldrift"))


def _spec(**client: object) -> KafkaSpec:
    return KafkaSpec(
        bootstrap_servers="a:9092,b:9092",
        input_topic="in",
        output_topic="out",
        dead_letter_topic="dead",
        client=client,
    )


def test_each_client_takes_the_settings_it_knows() -> None:
    spec = _spec(
        security_protocol="SASL_SSL", sasl_plain_password="s3cret", acks="all", max_poll_records=10
    )
    consumer = client_settings(spec, "consumer")
    producer = client_settings(spec, "producer")
    assert consumer["bootstrap_servers"] == ["a:9092", "b:9092"]
    assert consumer["security_protocol"] == producer["security_protocol"] == "SASL_SSL"
    assert "acks" in producer and "acks" not in consumer
    assert "max_poll_records" in consumer and "max_poll_records" not in producer


def test_unknown_setting_is_named_without_values() -> None:
    with pytest.raises(KafkaSetupError, match="sasl_plain_pasword") as caught:
        client_settings(_spec(sasl_plain_pasword="s3cret"), "consumer")
    assert "s3cret" not in str(caught.value)


def test_masked_hides_secret_values() -> None:
    shown = masked({"sasl_plain_password": "s3cret", "ssl_password": "x", "client_id": "me"})
    assert shown == {"sasl_plain_password": "***", "ssl_password": "***", "client_id": "me"}


def test_unreachable_broker_fails_at_start_in_one_line_without_secrets(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    kafka = {
        "bootstrap_servers": f"127.0.0.1:{port}",
        "input_topic": "in",
        "output_topic": "out",
        "dead_letter_topic": "dead",
        "client": {"sasl_plain_password": "hunter2"},
    }
    baseline = tmp_path / "baseline.json"
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(demo_config(kafka=kafka, baseline=str(baseline))))
    _write_matching_baseline(baseline)
    result = subprocess.run(
        [KLDRIFT, "run", "--config", str(config)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("kldrift:")]
    assert error_lines == [error_lines[0]] and "cannot reach Kafka" in error_lines[0]
    assert "hunter2" not in result.stdout + result.stderr


def _write_matching_baseline(path: Path) -> None:
    from kldrift.schemas.baseline import Baseline, FeatureBaseline
    from kldrift.synthetic import COUNTRIES, LATENCY_EDGES

    features = [
        FeatureBaseline(
            name="latency_ms",
            kind="numeric",
            edges=LATENCY_EDGES,
            counts=[1] * (len(LATENCY_EDGES) + 1),
        ),
        FeatureBaseline(name="amount", kind="numeric", edges=[1.0, 2.0], counts=[1, 1, 1]),
        FeatureBaseline(
            name="payload.country", kind="categorical", categories=COUNTRIES[:4], counts=[1] * 5
        ),
        FeatureBaseline(name="device", kind="categorical", categories=["ios"], counts=[1, 1]),
    ]
    baseline = Baseline.create(features, source="test", created_at="2024-01-01T00:00:00Z")
    path.write_text(baseline.model_dump_json())


def test_an_unreachable_broker_leaves_no_client_running() -> None:
    # kafka-python 3.0 leaves a failed admin client's IO thread running, logging connection
    # errors until the process exits: kldrift's set-up checks stop it.
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    spec = KafkaSpec(
        bootstrap_servers=f"127.0.0.1:{port}",
        input_topic="in",
        output_topic="out",
        dead_letter_topic="dead",
        client={"request_timeout_ms": 1000, "bootstrap_timeout_ms": 1000},
    )
    with pytest.raises(KafkaSetupError, match=f"cannot reach Kafka at 127.0.0.1:{port} within 1 s"):
        ensure_topics(spec, {"in": 1}, create=False)
    io_threads = [t.name for t in threading.enumerate() if t.name.startswith("kafka-io-")]
    assert io_threads == []
