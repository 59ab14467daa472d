"""`kldrift run` against secured clusters: a local broker whose only client listener is
SASL_PLAINTEXT (PLAIN) or SSL (a CA and broker certificate made at start), the credentials in the
config's `kafka.client`. Reports arrive with the counts produced, and no secret (the SASL password,
the key store password) appears in anything kldrift printed. Real broker, Prism, the CLI."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from _jobs import (
    LATENCY_BASELINE,
    LATENCY_FEATURES,
    STOPPED_BY_CTRL_C,
    job_kafka,
    streaming_job,
    wait_for,
    window_counts,
)
from kafka import KafkaConsumer, KafkaProducer

from kldrift.local.kafka import LocalKafka, create_topics
from kldrift.schemas.report import DriftReport, parse_report_record
from kldrift.synthetic import demo_config, make_event

pytestmark = pytest.mark.services

SIZE_S, PERIOD_S = 4, 2
EVENTS = 300


@pytest.fixture(params=["sasl_plaintext", "ssl"])
def secured_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalKafka]:
    broker = LocalKafka(data_dir=tmp_path / "broker", security=request.param)
    try:
        yield broker.start()
    finally:
        broker.stop()


def _broker_secret(broker: LocalKafka) -> str:
    secret = json.loads((broker.data_dir / "broker.json").read_text())["secret"]
    assert len(secret) >= 16
    return str(secret)


def test_run_against_a_secured_broker_reports_and_leaks_no_secret(
    tmp_path: Path, secured_broker: LocalKafka
) -> None:
    broker = secured_broker
    client = broker.client_settings
    secret = _broker_secret(broker)
    if broker.security == "sasl_plaintext":
        assert client["sasl_plain_password"] == secret
    else:
        assert secret not in json.dumps(client)  # the client needs only the CA certificate
        assert Path(client["ssl_cafile"]).read_text().startswith("-----BEGIN CERTIFICATE-----")
    run_id = uuid.uuid4().hex[:8]
    kafka = job_kafka(
        broker.bootstrap,
        "secure",
        run_id,
        start_from="earliest",
        idle_timeout="2s",
        client=client,  # type: ignore[arg-type]
    )
    (tmp_path / "baseline.json").write_text(LATENCY_BASELINE.model_dump_json())
    config = demo_config(
        name=f"secure-{run_id}",
        size=f"{SIZE_S}s",
        period=f"{PERIOD_S}s",
        allowed_lateness="0s",
        kafka=kafka,
        baseline=str(tmp_path / "baseline.json"),
        features=LATENCY_FEATURES,
    )
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    create_topics(broker.bootstrap, {kafka["input_topic"]: 1}, client=client)

    # Events of the last 20 s, in order: the idle rule closes every window once read.
    rng = np.random.default_rng(4)
    now = time.time()
    events = [
        make_event(rng, now - 20 + 20 * i / EVENTS, ("model-a", "model-b")[i % 2], 0.0)
        for i in range(EVENTS)
    ]
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", **client)
    for event in events:
        producer.send(kafka["input_topic"], json.dumps(event).encode())
    producer.flush()
    producer.close()
    expected = window_counts(events, SIZE_S, PERIOD_S)

    reports: dict[tuple[str, float], int] = {}
    tail = KafkaConsumer(
        kafka["output_topic"],
        bootstrap_servers=broker.bootstrap,
        auto_offset_reset="earliest",
        group_id=None,
        **client,
    )

    def all_reported() -> bool:
        for records in tail.poll(timeout_ms=200).values():
            for record in records:
                report = parse_report_record(record.value)
                if not isinstance(report, DriftReport):
                    continue  # the window's summary
                reports[(str(report.key), report.window_start.timestamp())] = report.count
        return set(expected) <= set(reports)

    try:
        with streaming_job("--config", str(config_path), "--", "--job_server_timeout=20") as job:
            wait_for(all_reported, 120, f"reports of all {len(expected)} windows")
    finally:
        tail.close()
    assert job.returncode == STOPPED_BY_CTRL_C, job.output[-3000:]
    assert {w: reports[w] for w in expected} == dict(expected)
    if broker.security == "sasl_plaintext":  # the banner shows the client settings, masked
        assert "'sasl_plain_password': '***'" in job.output, job.output[:2000]
    else:
        assert "'security_protocol': 'SSL'" in job.output, job.output[:2000]
    assert secret not in job.output, "a secret reached kldrift run's output"
    # The broker's own log masks it too (Kafka prints passwords as [hidden]).
    assert secret not in broker.log_path.read_text()
    print(
        f"{broker.security}: {len(expected)} windows reported with the counts produced; the "
        f"secret appears in none of {len(job.output.splitlines())} lines of job output"
    )
