"""Where a baseline comes from: a local file, a Beam FileSystems URL (gs://, s3://, hdfs://...) or a
compacted Kafka topic (`kafka://TOPIC`), whose newest record is the baseline in force.

A running job watches a `kafka://` baseline with `BaselineTopic.poll()`: every `refresh` seconds
it reads the newest record and hands back a baseline it has not seen yet; while Kafka is
unreachable it keeps the baseline it has and tries again at each refresh, for up to
`kafka.outage_timeout`. Publishing is `publish_baseline()` (`kldrift baseline publish`). Records
are keyed `baseline`, so compaction keeps the newest one.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from kldrift.io.kafka_client import KafkaSetupError, client_settings, ensure_topics
from kldrift.io.outage import Outage, is_unreachable
from kldrift.schemas.baseline import Baseline, BaselineError, load_baseline, parse_baseline
from kldrift.schemas.config import KafkaSpec

KAFKA_SCHEME = "kafka://"
RECORD_KEY = b"baseline"
READ_TIMEOUT_S = 10.0
_LOG = logging.getLogger(__name__)


def topic_of(location: str) -> str | None:
    """The topic of a `kafka://TOPIC` location, else None."""
    if not location.startswith(KAFKA_SCHEME):
        return None
    topic = location.removeprefix(KAFKA_SCHEME).strip("/")
    if not topic or "/" in topic:
        raise BaselineError(f"baseline: {location!r} is not kafka://TOPIC")
    return topic


def read_baseline(location: str, kafka: KafkaSpec | None = None) -> Baseline:
    """The baseline at `location`; BaselineError naming the location and what is wrong."""
    topic = topic_of(location)
    if topic is not None:
        if kafka is None:
            raise BaselineError(f"baseline: {location} needs the config's `kafka` section")
        reader = BaselineTopic(kafka, topic)
        try:
            newest = reader.newest()
        finally:
            reader.close()  # its consumer's IO thread would outlive the read
        if newest is None:
            raise BaselineError(
                f"baseline: topic {topic!r} holds no baseline yet: publish one with "
                "`kldrift baseline publish`"
            )
        return newest
    if "://" in location:
        return _read_url(location)
    return load_baseline(location)


def _read_url(location: str) -> Baseline:
    from apache_beam.io.filesystems import FileSystems

    try:
        with FileSystems.open(location) as handle:
            text = handle.read()
    except ValueError as err:  # no filesystem for the scheme: Beam names the extra to install
        raise BaselineError(f"baseline: cannot read {location}: {err}") from None
    except Exception as err:  # each filesystem raises its own kind (IOError, BeamIOError...)
        raise BaselineError(
            f"baseline: cannot read {location}: {type(err).__name__}: {err}{_extra_hint(location, err)}"
        ) from None
    return parse_baseline(text, location)


_SCHEME_EXTRAS = {"gs": "gcp", "s3": "aws", "az": "azure", "azfs": "azure"}
"""Beam's pip extra that brings each scheme's filesystem client."""


def _extra_hint(location: str, err: Exception) -> str:
    """Beam 2.78 registers the gs:// filesystem without its client and fails at open saying only
    that "GCP dependencies are not installed": name the extra that installs them."""
    extra = _SCHEME_EXTRAS.get(location.partition("://")[0])
    if extra is None or "not installed" not in str(err):
        return ""
    return f" (pip install 'apache-beam[{extra}]')"


class BaselineTopic:
    """The newest baseline on a compacted topic, read with kafka-python (picklable: the consumer is
    made on first use, so a Beam worker builds its own)."""

    def __init__(self, kafka: KafkaSpec, topic: str, refresh_s: float = 30.0) -> None:
        self.kafka = kafka
        self.topic = topic
        self.refresh_s = refresh_s
        self._last_check = -float("inf")
        self._last_position: tuple[int, int] | None = None
        self._consumer: Any = None
        self._unreachable: Outage | None = None

    @property
    def location(self) -> str:
        return KAFKA_SCHEME + self.topic

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_consumer": None}

    def poll(self) -> Baseline | None:
        """At most every `refresh_s` seconds: a baseline newer than the last one seen, else None.
        A record that is not a valid baseline raises BaselineError once (the caller logs it)."""
        now = time.monotonic()
        if now - self._last_check < self.refresh_s:
            return None
        self._last_check = now
        try:
            found = self._newest_record()
        except Exception as err:  # keep the current baseline; retried at the next refresh
            self.close()
            if is_unreachable(err):  # said once by the kafka connection log; fails when too long
                self._outage().failed(err)
            else:
                _LOG.warning(
                    "baseline %s: cannot read the topic (%s); retrying", self.location, err
                )
            return None
        self._outage().reached()
        if found is None or found[0] == self._last_position:
            return None
        return self._parse(found)

    def _outage(self) -> Outage:
        if self._unreachable is None:
            self._unreachable = Outage(
                self.kafka.bootstrap_servers,
                self.kafka.outage_timeout,
                f"watching the baseline {self.location}",
            )
        return self._unreachable

    def newest(self) -> Baseline | None:
        """The newest baseline on the topic now (None if it is empty); BaselineError if invalid."""
        found = self._newest_record()
        return None if found is None else self._parse(found)

    def _parse(self, found: tuple[tuple[int, int], bytes]) -> Baseline:
        """The record's baseline, remembered as seen (even if invalid: it is reported once)."""
        self._last_position = found[0]
        return parse_baseline(found[1], f"{self.location} offset {found[0][1]}")

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _newest_record(self) -> tuple[tuple[int, int], bytes] | None:
        """((partition, offset), value) of the newest record by timestamp, or None."""
        from kafka import TopicPartition

        consumer = self._connected()
        partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            raise BaselineError(
                f"baseline: topic {self.topic!r} does not exist on {self.kafka.bootstrap_servers}"
            )
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        starts = consumer.beginning_offsets(tps)
        newest: tuple[int, tuple[int, int], bytes] | None = None
        for tp in tps:
            if ends[tp] <= starts[tp]:
                continue
            record = self._last_record(consumer, tp, ends[tp])
            if record is not None and (newest is None or record.timestamp >= newest[0]):
                newest = (record.timestamp, (tp.partition, record.offset), record.value)
        return None if newest is None else (newest[1], newest[2])

    @staticmethod
    def _last_record(consumer: Any, tp: Any, end: int) -> Any:
        consumer.seek(tp, max(0, end - 1))
        deadline = time.monotonic() + READ_TIMEOUT_S
        last = None
        while consumer.position(tp) < end and time.monotonic() < deadline:
            for record in consumer.poll(timeout_ms=500).get(tp, []):
                last = record
        return last

    def _connected(self) -> Any:
        if self._consumer is None:
            from kafka import KafkaConsumer

            settings = client_settings(self.kafka, "consumer")
            self._consumer = KafkaConsumer(**settings, enable_auto_commit=False, group_id=None)
        return self._consumer


def publish_baseline(baseline: Baseline, location: str, kafka: KafkaSpec) -> tuple[int, int]:
    """Send `baseline` to a `kafka://TOPIC` (created compacted if missing and allowed);
    returns (partition, offset)."""
    from kafka import KafkaProducer

    topic = topic_of(location)
    if topic is None:
        raise BaselineError(f"baseline: {location!r} is not kafka://TOPIC")
    ensure_topics(kafka, {topic: 1}, create=kafka.create_topics, topic_configs={topic: _COMPACTED})
    producer = KafkaProducer(**client_settings(kafka, "producer"), acks="all")
    try:
        sent = producer.send(topic, key=RECORD_KEY, value=baseline.model_dump_json().encode())
        metadata = sent.get(timeout=READ_TIMEOUT_S)
    except Exception as err:
        raise KafkaSetupError(f"cannot publish the baseline to {location}: {err}") from None
    finally:
        producer.close()
    return metadata.partition, metadata.offset


_COMPACTED = {"cleanup.policy": "compact"}
