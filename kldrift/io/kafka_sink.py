"""Kafka sinks: drift reports and dead letters, written with one kafka-python producer per DoFn.

Each bundle flushes before it completes and a failed send fails the bundle, so the runner retries
it: at-least-once delivery, never a silent drop. Report keys are stable per window, so consumers
dedupe revisions and a compacted topic keeps the latest one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam

from kldrift.events import DeadLetter
from kldrift.io.kafka_client import client_settings
from kldrift.schemas.config import KafkaSpec
from kldrift.schemas.report import SCHEMA_VERSION, DriftReport

SEND_TIMEOUT_S = 60.0


class _KafkaWriter(beam.DoFn):
    """Sends (key, value, headers) to one topic; every send of a bundle is acknowledged before the
    bundle ends."""

    def __init__(self, spec: KafkaSpec, topic: str) -> None:
        self._spec = spec
        self._topic = topic

    def setup(self) -> None:
        from kafka import KafkaProducer

        settings = client_settings(self._spec, "producer")
        settings.setdefault("acks", "all")
        settings.setdefault("enable_idempotence", True)
        settings.setdefault("linger_ms", 5)
        self._producer = KafkaProducer(**settings)
        self._pending: list[Any] = []

    def start_bundle(self) -> None:
        self._pending = []

    def _send(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        self._pending.append(
            self._producer.send(self._topic, value=value, key=key, headers=headers)
        )

    def finish_bundle(self) -> None:
        if not self._pending:
            return
        self._producer.flush(timeout=SEND_TIMEOUT_S)
        for future in self._pending:
            future.get(timeout=SEND_TIMEOUT_S)  # raises: the bundle fails and is retried
        self._pending = []

    def teardown(self) -> None:
        producer = getattr(self, "_producer", None)
        if producer is not None:
            producer.close(timeout=SEND_TIMEOUT_S)


class _WriteReport(_KafkaWriter):
    def process(self, report: DriftReport) -> Iterator[DriftReport]:
        self._send(
            report.message_key.encode(),
            report.to_json_bytes(),
            [
                ("schema_version", str(SCHEMA_VERSION).encode()),
                ("content-type", b"application/json"),
            ],
        )
        yield report


class _WriteDeadLetter(_KafkaWriter):
    def process(self, dead_letter: DeadLetter) -> Iterator[DeadLetter]:
        key = f"{dead_letter.source}|{dead_letter.partition}|{dead_letter.offset}".encode()
        self._send(
            key,
            dead_letter.value,
            [
                ("reason", dead_letter.reason.encode()),
                ("detail", dead_letter.detail.encode()),
                ("source_topic", dead_letter.source.encode()),
                ("source_partition", str(dead_letter.partition).encode()),
                ("source_offset", str(dead_letter.offset).encode()),
            ],
        )
        yield dead_letter


class WriteReports(beam.PTransform):
    """DriftReport -> the report topic; passes the reports on once written."""

    def __init__(self, spec: KafkaSpec) -> None:
        super().__init__()
        self._spec = spec

    def expand(self, reports: beam.PCollection[DriftReport]) -> beam.PCollection[DriftReport]:
        return reports | "Send" >> beam.ParDo(_WriteReport(self._spec, self._spec.output_topic))


class WriteDeadLetters(beam.PTransform):
    """DeadLetter -> the dead-letter topic: raw bytes as value, reason and source in headers."""

    def __init__(self, spec: KafkaSpec) -> None:
        super().__init__()
        self._spec = spec

    def expand(self, dead: beam.PCollection[DeadLetter]) -> beam.PCollection[DeadLetter]:
        return dead | "Send" >> beam.ParDo(
            _WriteDeadLetter(self._spec, self._spec.dead_letter_topic)
        )
