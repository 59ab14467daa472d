"""ReadFromKafka: an unbounded splittable read with kafka-python, one restriction per partition.

The restriction is the partition's offset range [next offset, inf), so a runner checkpoint resumes
exactly where it stopped. Each poll becomes one EventBatch (decoded once, here, because the
watermark is event time): timestamped at its earliest event, carrying the partition's watermark
as of the read so the composite can dead-letter events that are too late.

Watermark per partition: newest event time seen minus `max_delay`; after `idle_timeout` without
records it follows wall-clock time minus `idle_timeout + max_delay`, so windows close on quiet
topics (the policy of Beam Java KafkaIO's CustomTimestampPolicyWithLimitedDelay).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import WatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp

from kldrift.events import NO_WATERMARK, EventBatch, EventDecoder, RecordBatch
from kldrift.io.kafka_client import client_settings
from kldrift.schemas.config import PipelineConfig

END_OF_PARTITION = 2**63 - 1
READ_SLICE_S = 1.0
"""How long one process() call reads before handing back a checkpoint (and its watermark)."""
IDLE_RESUME_S = 0.2


@dataclass(frozen=True)
class PartitionStart:
    """One element per partition: where to start reading."""

    topic: str
    partition: int
    offset: int


class _KafkaOffsetTracker(OffsetRestrictionTracker):
    """Offsets only advance by reading: no dynamic split into a future offset range, only the
    checkpoint split (fraction 0) that defer_remainder asks for."""

    def try_split(self, fraction_of_remainder: float) -> Any:
        if fraction_of_remainder != 0:
            return None
        return super().try_split(fraction_of_remainder)

    def is_bounded(self) -> bool:
        return False


class _PartitionRestrictions(RestrictionProvider):
    def initial_restriction(self, element: PartitionStart) -> OffsetRange:
        return OffsetRange(element.offset, END_OF_PARTITION)

    def create_tracker(self, restriction: OffsetRange) -> _KafkaOffsetTracker:
        return _KafkaOffsetTracker(restriction)

    def restriction_size(self, element: PartitionStart, restriction: OffsetRange) -> int:
        return 1  # unknown backlog; equal weight per partition

    def truncate(self, element: PartitionStart, restriction: OffsetRange) -> None:
        return None  # on drain, stop reading


class _EventTimeWatermark(WatermarkEstimator):
    """State: (watermark in micros, wall-clock seconds of the last record)."""

    def __init__(self, state: tuple[int, float] | None) -> None:
        self.watermark_us, self.last_record_s = state or (NO_WATERMARK, time.time())

    def observe_timestamp(self, timestamp: Timestamp) -> None:
        pass

    def current_watermark(self) -> Timestamp:
        if self.watermark_us == NO_WATERMARK:
            return MIN_TIMESTAMP
        return Timestamp(micros=self.watermark_us)

    def get_estimator_state(self) -> tuple[int, float]:
        return self.watermark_us, self.last_record_s

    # Beam hands process() a thread-safe wrapper that exposes methods only, hence no attributes.
    def watermark_micros(self) -> int:
        return self.watermark_us

    def idle_seconds(self, now: float) -> float:
        return now - self.last_record_s

    def record_seen(self, now: float) -> None:
        self.last_record_s = now

    def advance_to(self, watermark_us: int) -> None:
        self.watermark_us = max(self.watermark_us, watermark_us)


class _EventTimeWatermarks(WatermarkEstimatorProvider):
    def initial_estimator_state(self, element: PartitionStart, restriction: OffsetRange) -> None:
        return None

    def create_watermark_estimator(self, state: tuple[int, float] | None) -> _EventTimeWatermark:
        return _EventTimeWatermark(state)


class _ReadPartition(beam.DoFn):
    def __init__(self, config: PipelineConfig, group_id: str) -> None:
        assert config.kafka is not None
        self._config = config
        self._spec = config.kafka
        self._group_id = group_id
        self._max_delay_us = round(self._spec.max_delay * 1_000_000)
        self._idle_us = round(self._spec.idle_timeout * 1_000_000)

    def setup(self) -> None:
        self._decoder = EventDecoder(self._config)
        self._consumers: dict[tuple[str, int], Any] = {}
        self._committed: dict[Any, int] = {}
        self._consumed = beam.metrics.Metrics.counter("kldrift", "records_consumed")

    def teardown(self) -> None:
        for consumer in self._consumers.values():
            consumer.close()
        self._consumers = {}

    def _consumer(self, topic: str, partition: int, offset: int) -> Any:
        from kafka import KafkaConsumer, TopicPartition

        tp = TopicPartition(topic, partition)
        consumer = self._consumers.get((topic, partition))
        if consumer is None:
            consumer = KafkaConsumer(
                **client_settings(self._spec, "consumer"),
                group_id=self._group_id,
                enable_auto_commit=False,
                max_poll_records=self._spec.poll_max_records,
            )
            consumer.assign([tp])
            self._consumers[(topic, partition)] = consumer
        if consumer.position(tp) != offset:
            consumer.seek(tp, offset)
        return consumer

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element: PartitionStart,
        tracker: Any = beam.DoFn.RestrictionParam(_PartitionRestrictions()),
        watermark: Any = beam.DoFn.WatermarkEstimatorParam(_EventTimeWatermarks()),
    ) -> Iterator[Any]:
        from kafka import TopicPartition

        tp = TopicPartition(element.topic, element.partition)
        next_offset = tracker.current_restriction().start
        consumer = self._consumer(element.topic, element.partition, next_offset)
        self._commit(consumer, tp, next_offset)
        deadline = time.monotonic() + READ_SLICE_S
        while time.monotonic() < deadline:
            records = consumer.poll(timeout_ms=100).get(tp, [])
            if not records:
                self._advance_if_idle(watermark)
                tracker.defer_remainder(Duration(seconds=IDLE_RESUME_S))
                return
            if not tracker.try_claim(records[-1].offset):
                return
            self._consumed.inc(len(records))
            batch = self._decoder.decode(
                RecordBatch(
                    [r.value for r in records],
                    [r.offset for r in records],
                    source=element.topic,
                    partition=element.partition,
                    watermark_us=watermark.watermark_micros(),
                )
            )
            watermark.record_seen(time.time())
            yield self._timestamped(batch, watermark)
        tracker.defer_remainder()

    def _commit(self, consumer: Any, tp: Any, next_offset: int) -> None:
        """Commit the offset this restriction resumes from: the runner resumed us there, so it has
        checkpointed everything before it. (Prism does not support bundle finalization, which
        would otherwise be the hook.) Once per partition per new position."""
        if not self._spec.commit_offsets or self._committed.get(tp) == next_offset:
            return
        from kafka.structs import OffsetAndMetadata

        consumer.commit({tp: OffsetAndMetadata(next_offset, "", -1)})
        self._committed[tp] = next_offset

    def _timestamped(self, batch: EventBatch, watermark: _EventTimeWatermark) -> Any:
        if len(batch.event_time_us):
            earliest = int(batch.event_time_us.min())
            watermark.advance_to(int(batch.event_time_us.max()) - self._max_delay_us)
            return TimestampedValue(batch, Timestamp(micros=earliest))
        return TimestampedValue(batch, watermark.current_watermark())

    def _advance_if_idle(self, watermark: _EventTimeWatermark) -> None:
        now = time.time()
        if watermark.idle_seconds(now) * 1_000_000 >= self._idle_us:
            watermark.advance_to(round(now * 1_000_000) - self._idle_us - self._max_delay_us)


class ReadFromKafka(beam.PTransform):
    """Partitions (with start offsets, resolved at start) -> EventBatch, one per poll."""

    def __init__(self, config: PipelineConfig, starts: list[PartitionStart], group_id: str) -> None:
        super().__init__()
        self._config = config
        self._starts = starts
        self._group_id = group_id

    def expand(self, pipeline: beam.pvalue.PBegin) -> beam.PCollection[EventBatch]:
        return (
            pipeline
            | "Partitions" >> beam.Create(self._starts)
            | "Read"
            >> beam.ParDo(_ReadPartition(self._config, self._group_id)).with_output_types(
                EventBatch
            )
        )
