"""Reading drift reports from Kafka: typed reports (the producer's own model), latest revision
per window."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kldrift.schemas.report import DriftReport


@dataclass(frozen=True)
class ReportMessage:
    """A report with where it came from (for committing) and its message key."""

    report: DriftReport
    key: str
    partition: int
    offset: int


def parse_report_message(message: Any) -> ReportMessage:
    """A kafka-python ConsumerRecord -> ReportMessage (raises on a malformed report)."""
    report = DriftReport.from_json_bytes(message.value)
    key = message.key.decode() if message.key else report.message_key
    return ReportMessage(report, key, message.partition, message.offset)


def read_reports(
    bootstrap: str,
    topic: str,
    *,
    idle_timeout_s: float = 2.0,
    settings: dict[str, Any] | None = None,
) -> Iterator[ReportMessage]:
    """Every report on `topic` from the beginning, stopping after `idle_timeout_s` without one."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=int(idle_timeout_s * 1000),
        **(settings or {}),
    )
    try:
        for message in consumer:
            yield parse_report_message(message)
    finally:
        consumer.close()


class LatestRevisions:
    """Keeps the highest revision per message key (a window's identity): the dedupe a consumer of
    an at-least-once stream needs."""

    def __init__(self) -> None:
        self.by_key: dict[str, DriftReport] = {}

    def offer(self, report: DriftReport) -> bool:
        """True when `report` is new: a window not seen, or a higher revision of one."""
        key = report.message_key
        current = self.by_key.get(key)
        if current is not None and current.revision >= report.revision:
            return False
        self.by_key[key] = report
        return True
