"""Kafka sinks: drift reports and dead letters, written with one kafka-python producer per DoFn.

Each bundle flushes before it completes. A send that fails because the cluster is unreachable is
sent again (same key) until it is acknowledged or the outage outlasts `kafka.outage_timeout`; any
other failure fails the bundle, so the runner retries it: at-least-once delivery, never a silent
drop. A send that fails because its topic no longer exists (deleted, on a broker that does not
create topics) is not an outage: TopicMissingError names the topic at once and the job stops. Report keys are stable per window, so consumers dedupe revisions and a compacted topic keeps
the latest one.
"""

from __future__ import annotations

import atexit
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from kafka.partitioner.default import DefaultPartitioner

from kldrift.events import DeadLetter
from kldrift.io.kafka_client import client_settings, ensure_topics, topic_exists
from kldrift.io.outage import Outage, TopicMissingError, is_unreachable, stop_job
from kldrift.schemas.config import KafkaSpec
from kldrift.schemas.report import SCHEMA_VERSION, ReportRecord
from kldrift.schemas.report_wire import ReportWire

SinkRecords = ReportRecord | ReportWire | list[ReportRecord] | list[ReportWire]
"""What WriteReports takes: a record, or a block (Score's lists of msgspec records)."""

SEND_TIMEOUT_S = 60.0
FLUSH_SLICE_S = 5.0
MAX_BLOCK_MS = 5000
TOPIC_CHECK_S = 5.0
"""After a failed send, whether the topic still exists is asked at most this often."""


class OnePartitionFirst(DefaultPartitioner):
    """kafka-python's default partitioner (murmur2 of the key, as the Java client's), but a topic
    of one partition gets it without hashing the key: the default hashes every key whatever the
    partition count, in pure Python (about 10 us for a 75-byte report key), and a report topic that
    kldrift creates has one partition. Every other case is the default's, partition for
    partition."""

    def partition(
        self,
        topic: str,
        key: Any,
        serialized_key: bytes | None,
        value: Any,
        serialized_value: bytes | None,
        cluster: Any,
    ) -> int:
        partitions = cluster.partitions_for_topic(topic)
        if partitions is not None and len(partitions) == 1:
            return int(next(iter(partitions)))
        return int(super().partition(topic, key, serialized_key, value, serialized_value, cluster))


class _KafkaWriter(beam.DoFn):
    """Sends (key, value, headers) to one topic; every send of a bundle is acknowledged before the
    bundle ends."""

    def __init__(self, spec: KafkaSpec, topic: str, create_topic: bool | None = None) -> None:
        self._spec = spec
        self._topic = topic
        # None: the topic is known to exist (kldrift run ensures its topics at start); else it is
        # checked at set-up, and created when True.
        self._create_topic = create_topic

    def setup(self) -> None:
        from kafka import KafkaProducer

        if self._create_topic is not None:
            # Else a send to a missing topic waits for metadata like an outage, for minutes.
            ensure_topics(
                self._spec,
                {self._topic: 1},
                self._create_topic,
                how_to_create="pass create_topic=True to the sink",
            )

        settings = client_settings(self._spec, "producer")
        settings.setdefault("acks", "all")
        settings.setdefault("enable_idempotence", True)
        settings.setdefault("linger_ms", 5)
        settings.setdefault("partitioner", OnePartitionFirst())
        # send() blocks this long without metadata; an outage retries it until outage_timeout.
        settings.setdefault("max_block_ms", MAX_BLOCK_MS)
        self._producer = KafkaProducer(**settings)
        _quiet_exit_close(self._producer)
        self._pending: list[tuple[Any, Any]] = []
        self._topic_checked = 0.0

    def _failed(self, outage: Outage, err: BaseException) -> float:
        """A send failed as if Kafka were unreachable: TopicMissingError if its topic is gone,
        else the outage's backoff (KafkaOutageError past the timeout)."""
        self._check_topic()
        return outage.failed(err)

    def _check_topic(self) -> None:
        """After a send failed as if Kafka were unreachable: a topic that no longer exists (a
        broker answering that it does not know it) stops the job at once, naming the topic."""
        now = time.monotonic()
        if now - self._topic_checked < TOPIC_CHECK_S:
            return
        self._topic_checked = now
        try:
            exists = topic_exists(self._spec, self._topic)
        except Exception:  # the broker does not answer: an outage after all
            return
        if not exists:
            stop_job(
                TopicMissingError(
                    f"topic {self._topic} does not exist (deleted?) on "
                    f"{self._spec.bootstrap_servers}: {self._what} stopped. Offsets are committed "
                    "only up to what was written: recreate the topic and start the job again "
                    "(start_from: committed)"
                )
            )

    def start_bundle(self) -> None:
        self._pending = []

    @property
    def _what(self) -> str:
        return f"writing to {self._topic}"

    def _outage(self) -> Outage:
        return Outage(self._spec.bootstrap_servers, self._spec.outage_timeout, self._what)

    def _send(
        self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        message = (key, value, headers)
        self._pending.append((message, self._enqueue(message, self._outage())))

    def _enqueue(
        self, message: tuple[bytes | None, bytes | None, list[tuple[str, bytes]]], outage: Outage
    ) -> Any:
        """The producer's future for `message`. send() blocks (max_block_ms) while it has no
        metadata: tried again during an outage (KafkaOutageError past the timeout)."""
        key, value, headers = message
        while True:
            try:
                return self._producer.send(self._topic, value=value, key=key, headers=headers)
            except Exception as err:
                if not is_unreachable(err):
                    raise
                time.sleep(self._failed(outage, err))

    def finish_bundle(self) -> None:
        """Every send of the bundle acknowledged; sends that failed because Kafka was unreachable
        are sent again (KafkaOutageError past kafka.outage_timeout); other errors raise, and the
        bundle fails and is retried."""
        outage = self._outage()
        pending = self._pending
        while pending:
            try:
                self._producer.flush(timeout=FLUSH_SLICE_S)
            except Exception as err:  # still in flight after FLUSH_SLICE_S
                if not is_unreachable(err):
                    raise
            still: list[tuple[Any, Any]] = []
            for message, future in pending:
                if not future.is_done:
                    still.append((message, future))
                elif future.failed():
                    if not is_unreachable(future.exception):
                        raise future.exception
                    self._failed(outage, future.exception)  # raises past the outage timeout
                    still.append((message, self._enqueue(message, outage)))
            if still and all(not f.is_done for _, f in still):
                self._failed(outage, TimeoutError(f"{len(still)} sends unacknowledged"))
            pending = still
        self._pending = []

    def teardown(self) -> None:
        producer = getattr(self, "_producer", None)
        if producer is not None:
            # What is left unsent belongs to bundles that did not complete (read again later).
            with contextlib.suppress(Exception):
                producer.close(timeout=SEND_TIMEOUT_S)


class _WriteReport(_KafkaWriter):
    """A report or a window summary, or a list of them (a block: kldrift.transforms.batches); its
    `record` header says which (as its JSON does). The element is passed on as it came."""

    def process(self, element: SinkRecords) -> Iterator[SinkRecords]:
        for report in element if isinstance(element, list) else (element,):
            self._send(
                report.message_key.encode(),
                report.to_json_bytes(),
                [
                    ("schema_version", _SCHEMA_VERSION),
                    ("content-type", b"application/json"),
                    ("record", report.record.encode()),
                ],
            )
        yield element


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
        # A record with no offset (the library on a user's PCollection) has no key to share: no
        # compaction may fold it into another.
        key = None
        if dead_letter.offset >= 0:
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


_SCHEMA_VERSION = str(SCHEMA_VERSION).encode()


class WriteReports(beam.PTransform):
    """DriftReports and WindowSummaries, or lists of them -> the report topic; passes them on once
    written."""

    def __init__(self, spec: KafkaSpec) -> None:
        super().__init__()
        self._spec = spec

    def expand(self, reports: beam.PCollection) -> beam.PCollection:
        # Untyped: the elements are records or lists of them (blocks).
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


def _sink_spec(
    bootstrap_servers: str,
    topic: str,
    client: dict[str, str | int | float | bool] | None,
    outage_timeout: float,
) -> KafkaSpec:
    """The settings a sink uses, validated now (a bad one fails at pipeline construction, naming
    the field). A sink reads no topic: its own topic stands in for the input one."""
    from kldrift.schemas.config import parse_kafka_spec

    spec = parse_kafka_spec(
        {
            "bootstrap_servers": bootstrap_servers,
            "input_topic": topic,
            "output_topic": topic,
            "dead_letter_topic": topic,
            "client": client or {},
            "outage_timeout": outage_timeout,
        }
    )
    client_settings(spec, "producer")  # an unknown setting fails now, naming it
    return spec


class _WriteToKafka(beam.PTransform):
    """A public sink: its settings validated at construction, its topic checked at set-up."""

    _WRITER: type[_KafkaWriter]

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        *,
        client: dict[str, str | int | float | bool] | None = None,
        outage_timeout: float = 300.0,
        create_topic: bool = False,
    ) -> None:
        super().__init__()
        self._spec = _sink_spec(bootstrap_servers, topic, client, outage_timeout)
        self._topic = topic
        self._create_topic = create_topic

    def expand(self, elements: beam.PCollection) -> beam.PCollection:
        writer = self._WRITER(self._spec, self._topic, self._create_topic)
        return elements | "Send" >> beam.ParDo(writer)


class WriteReportsToKafka(_WriteToKafka):
    """DriftReports (and WindowSummaries) -> a Kafka topic, as `kldrift run` writes them; passes
    them on once the broker acknowledged them. Write the composite's "reports" and "summaries"
    flattened into one PCollection to give consumers both record kinds, as `kldrift run` does.

    Each report's key is stable per (pipeline, key, feature, window), so a consumer keeps the
    newest revision and a compacted topic keeps one report per window. Sends use acks=all and an
    idempotent producer; a bundle completes only when all its sends are acknowledged (at-least-once:
    a bundle the runner retries sends again, with the same keys). An unreachable cluster is ridden
    out for `outage_timeout` seconds, then the bundle fails.

    Args:
        bootstrap_servers: ``host:port[,host:port...]``.
        topic: the report topic.
        client: extra kafka-python producer settings (security_protocol, sasl_*, ssl_*, ...).
        outage_timeout: seconds to keep retrying while the cluster is unreachable.
        create_topic: create the topic (1 partition) when it does not exist; else a missing
            topic fails the workers' set-up, naming it.
    """

    _WRITER = _WriteReport


class WriteDeadLettersToKafka(_WriteToKafka):
    """DeadLetters -> a Kafka topic, as `kldrift run` writes them: the raw record as the value, the
    reason, detail and source in headers. Args as WriteReportsToKafka's."""

    _WRITER = _WriteDeadLetter


def _quiet_exit_close(producer: Any) -> None:
    """kafka-python closes every producer at interpreter exit, flushing for 1 s; with the broker
    gone (a job stopped past kafka.outage_timeout) that flush raises and Python prints its traceback
    after kldrift run's one-line error. Unsent records there are of bundles that never completed
    (their input is read again after a restart), so the close at exit is made quiet."""
    cleanup = getattr(producer, "_cleanup", None)
    if cleanup is None:
        return
    atexit.unregister(cleanup)

    def close_quietly() -> None:
        with contextlib.suppress(Exception):
            cleanup()

    atexit.register(close_quietly)
