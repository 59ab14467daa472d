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

    def _send(self, key: bytes, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
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


DEAD_LETTER_HEADROOM = 64 * 1024
"""Bytes of a dead-letter message kept for its key, headers and batch overhead."""


class _WriteDeadLetter(_KafkaWriter):
    """A dead letter's value is the raw record (None for a tombstone). A value too large for one
    producer request (a record the broker accepted compressed, say) is cut to fit, with its full
    size in the `value_truncated_from` header: a dead letter can never fail the job."""

    def setup(self) -> None:
        super().setup()
        max_request = client_settings(self._spec, "producer").get("max_request_size", 1_048_576)
        self._max_value_bytes = max(1024, int(max_request) - DEAD_LETTER_HEADROOM)

    def process(self, dead_letter: DeadLetter) -> Iterator[DeadLetter]:
        key = f"{dead_letter.source}|{dead_letter.partition}|{dead_letter.offset}".encode()
        value = dead_letter.value
        headers = [
            ("reason", dead_letter.reason.encode()),
            ("detail", dead_letter.detail.encode("utf-8", "backslashreplace")),
            ("source_topic", dead_letter.source.encode()),
            ("source_partition", str(dead_letter.partition).encode()),
            ("source_offset", str(dead_letter.offset).encode()),
        ]
        if value is not None and len(value) > self._max_value_bytes:
            headers.append(("value_truncated_from", str(len(value)).encode()))
            value = value[: self._max_value_bytes]
        self._send(key, value, headers)
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
