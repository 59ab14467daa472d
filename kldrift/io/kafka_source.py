"""ReadEventsFromKafka: an unbounded splittable read of JSON events with kafka-python (not Beam's
cross-language ReadFromKafka; its step label in `kldrift run` is "ReadFromKafka", kept for `--update`).

Each reader is one SDF element owning a set of partitions; its restriction is the next offset of
every one of them, so a runner checkpoint resumes exactly where it stopped. Each poll of a
partition becomes one EventBatch (decoded once, here, because the watermark is event time),
timestamped at its earliest event and carrying that partition's watermark as of the read, so the
composite can dead-letter events that are too late.

Watermark per partition: newest event time seen minus `max_delay`; after `idle_timeout` without
records it follows wall-clock time minus `idle_timeout + max_delay`, so windows close on quiet
topics (the policy of Beam Java KafkaIO's CustomTimestampPolicyWithLimitedDelay). A reader's
watermark is the minimum over its partitions. Events more than `max_future` ahead of the wall
clock are dead letters (the decoder checks the bound this reader hands it), so a bad producer
clock never moves a watermark. Idle means the broker answered that the partition is read to its
end: while it does not answer (an outage) the watermark stays, so the events produced meanwhile
are not too late; the reader backs off between read slices and fails after
`kafka.outage_timeout`.

Commits (restart safety, kldrift.io.resume): the reader tracks, per partition, the batches whose
windows may still be open (in the restriction, so a runner checkpoint keeps them) and commits, when
it resumes from a checkpoint, the first offset of the first batch not closed by the job's floor:
its watermark of COMMIT_DELAY_S ago, no further than what the sinks acknowledged (kldrift.io.acked)
and, with several readers, the minimum over every reader's (they publish theirs in their commits);
that floor, the offsets read and the window are the metadata. A job restarted from committed
offsets reads those records again and knows (ResumePoint) which windows were reported and which
records were counted. A reader that finds another run committing on its partitions (two jobs on
one group) says so once.

Partitions added to the topic while the job runs are looked for every `kafka.partition_discovery`
(the consumer's metadata is refreshed at half that): partition p belongs to reader p % readers,
which claims it in its restriction (NewPartitions) and reads it from its beginning, its watermark
starting at the reader's (a watermark cannot go back: the records it got before it was found are
late data for windows still open, counted within allowed lateness).

`kafka.readers` sets how many readers share the partitions. Prism (2.77) takes the watermark of
the last checkpointed restriction as the whole read's, not the minimum over restrictions, so with
several readers one reader's progress makes another's records late: keep 1 reader on Prism (the
default); on Flink or Dataflow, which take the minimum, use up to one reader per partition.
ReadEventsPerReader (`kldrift run --worker-processes`) reads each reader in a stage of its own,
whose watermark is its reader's: several readers are safe there on Prism too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker
from apache_beam.io.watermark_estimators import WatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.transforms.resources import ResourceHint
from apache_beam.transforms.window import TimestampedValue
from apache_beam.typehints.decorators import no_annotations
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Duration, Timestamp

from kldrift import metrics
from kldrift.events import NO_WATERMARK, EventBatch, EventDecoder, RecordBatch
from kldrift.formats import RegistryUnreachable, record_format
from kldrift.formats.registry import shown_url
from kldrift.io import (
    batch_coder,  # noqa: F401  # registers the batch coders
    resume,
)
from kldrift.io.acked import acked_group, fetch_acked
from kldrift.io.kafka_client import client_settings
from kldrift.io.outage import Outage, is_unreachable
from kldrift.io.resume import Offsets, PartitionResume, Pending, ResumePoint
from kldrift.schemas.config import PipelineConfig

_LOG = logging.getLogger(__name__)
_NO_HOLD = 2**63 - 1
"""No bound on the floor."""
COMMIT_DELAY_S = 10.0
"""Offsets are committed for windows closed by the watermark of this long ago (wall clock): the
time their reports have had to reach Kafka before a restart relies on them."""
READ_SLICE_S = 1.0
"""How long one process() call reads before handing back a checkpoint (and its watermark)."""
READ_SLICE_BEHIND_S = 30.0
"""How long it reads on while behind the partitions' ends (a backlog). Every checkpoint in the
middle of a backlog costs Prism 2.77 dearly: draining 200,000 pre-loaded events took 14 s of
Prism CPU in 1 s slices and 7 s in 3 s slices, but 2 s when the backlog fitted in one slice, and
reports came 1.8x sooner. A reader that has caught up keeps 1 s slices, so a live stream's
watermark, and its reports, are as prompt as before."""
IDLE_RESUME_S = 0.2
COMMIT_INTERVAL_S = 1.0
"""At most one commit (and one fetch of the other readers' commits) per reader this often."""
PROBE_INTERVAL_S = 1.0
"""How often, at most, a reader with idle partitions asks the broker for their end offsets."""
PROBE_TIMEOUT_MS = 2000
"""How long a reader waits for the broker's answer (end offsets, commits) before counting it as
unreachable: the watermark then stays where the last answer left it."""
OUTAGE_PROBE_S = 5.0
"""A reader without records for this long asks the broker whether it is caught up."""
FETCH_PARTITION_BYTES = 8 << 20
"""kafka-python's max_partition_fetch_bytes for the readers (its default: 1 MiB), unless the
config's kafka.client sets it. Reading a backlog, a reader waits for every fetch response whose
records it has used up; with 8 MiB a partition's backlog comes in an eighth of the round trips.
A fetch response stays within fetch_max_bytes (50 MiB) however many partitions it holds, so the
memory bound is the same. The figures: benchmarks/README, "Issue 27 in the eighth session"."""


@dataclass(frozen=True)
class ReaderStart:
    """One element per reader: its topic and where to start in each of its partitions.

    `run` names this run of the job and `partitions` are all of the topic's partitions (other
    readers publish their progress in their commits, see kldrift.io.resume); `floor_us` and
    `read_to` are the resume point the run started from, committed again until the job's floor
    is known."""

    topic: str
    offsets: Offsets
    run: str = ""
    partitions: tuple[int, ...] = ()
    floor_us: int = NO_WATERMARK
    read_to: Offsets = ()
    reader: int = 0
    readers: int = 1

    def owns(self, partition: int) -> bool:
        """Whether a partition found after the start is this reader's: partitions are dealt
        round-robin, so partition p is reader p % readers's."""
        return partition % self.readers == self.reader


@dataclass(frozen=True)
class PartitionOffsets:
    """The restriction: from `start` on; `end` is set only on a checkpoint's finished part.
    `pending` is what a restart would have to read again (see resume.safe_offsets)."""

    start: Offsets
    end: Offsets | None = None
    pending: Pending = ()


@dataclass(frozen=True)
class Claim:
    """A read batch: the partition's next offset after it, its first offset, when every window
    holding one of its records has closed (closing_us), and the watermark whose windows' reports
    are known written (done_us: pending batches closed by then are dropped)."""

    partition: int
    next_offset: int
    first_offset: int
    closing_us: int
    done_us: int


@dataclass(frozen=True)
class NewPartitions:
    """Partitions added to the topic while the job runs, claimed by the reader that owns them, each
    with the offset it is read from (its beginning)."""

    offsets: Offsets


class _OffsetsTracker(RestrictionTracker):
    """Claims read batches (Claim); splits only at a checkpoint (fraction 0), handing the rest and
    the pending batches to the residual."""

    def __init__(self, restriction: PartitionOffsets) -> None:
        self._restriction = restriction
        self._next = dict(restriction.start)
        self._pending: dict[int, list[tuple[int, int]]] = {p: [] for p in self._next}
        for partition, first, closing in restriction.pending:
            self._pending[partition].append((first, closing))
        self._checkpointed = False

    def current_restriction(self) -> PartitionOffsets:
        return self._restriction

    def try_claim(self, position: Claim | NewPartitions) -> bool:
        if self._checkpointed:
            return False
        if isinstance(position, NewPartitions):
            for partition, offset in position.offsets:
                self._next.setdefault(partition, offset)
                self._pending.setdefault(partition, [])
            return True
        partition = position.partition
        if partition not in self._next:
            return False
        self._next[partition] = max(self._next[partition], position.next_offset)
        resume.add_pending(
            self._pending[partition], position.first_offset, position.closing_us, position.done_us
        )
        return True

    def try_split(self, fraction_of_remainder: float) -> Any:
        if fraction_of_remainder != 0 or self._checkpointed:
            return None
        self._checkpointed = True
        reached = tuple(sorted(self._next.items()))
        pending = tuple(
            (p, first, closing)
            for p in sorted(self._pending)
            for first, closing in self._pending[p]
        )
        primary = PartitionOffsets(self._restriction.start, reached)
        self._restriction = primary
        return primary, PartitionOffsets(reached, None, pending)

    def check_done(self) -> None:
        return None  # an unbounded read is never done; checkpoints hand the rest back

    def current_progress(self) -> RestrictionProgress:
        # An unbounded read has no fraction done; state it as 0. Given as completed/remaining
        # instead, Beam replaces `completed` with output bytes (NaN before its first sample) and a
        # split request from the runner then failed the bundle converting NaN to an integer.
        return RestrictionProgress(fraction=0.0)

    def is_bounded(self) -> bool:
        return self._restriction.end is not None


class _ReaderRestrictions(RestrictionProvider):
    def initial_restriction(self, element: ReaderStart) -> PartitionOffsets:
        return PartitionOffsets(element.offsets)

    def create_tracker(self, restriction: PartitionOffsets) -> _OffsetsTracker:
        return _OffsetsTracker(restriction)

    def restriction_size(self, element: ReaderStart, restriction: PartitionOffsets) -> int:
        return 1  # unknown backlog; equal weight per reader

    def truncate(self, element: ReaderStart, restriction: PartitionOffsets) -> None:
        return None  # on drain, stop reading


WatermarkState = tuple[dict[int, tuple[int, float]], tuple[tuple[float, int], ...]]
"""({partition: (watermark in micros, wall-clock s of its last record)},
((wall-clock s, reader watermark), ...) samples of the last COMMIT_DELAY_S)."""


class _ReaderWatermark(WatermarkEstimator):
    """The reader's event-time watermark per partition, and samples of it over wall-clock time.

    Beam hands process() a thread-safe wrapper that exposes methods only, hence no attributes.
    """

    def __init__(self, state: WatermarkState | None) -> None:
        partitions, history = state or ({}, ())
        self._partitions = dict(partitions)
        self._history = list(history)

    def observe_timestamp(self, timestamp: Timestamp) -> None:
        pass

    def current_watermark(self) -> Timestamp:
        micros = min((wm for wm, _ in self._partitions.values()), default=NO_WATERMARK)
        return MIN_TIMESTAMP if micros == NO_WATERMARK else Timestamp(micros=micros)

    def get_estimator_state(self) -> WatermarkState:
        return dict(self._partitions), tuple(self._history)

    def sample(self, now: float) -> None:
        """Record the reader's watermark now; keep the samples of the last COMMIT_DELAY_S and the
        newest one before."""
        self._history.append((now, self.current_watermark().micros))
        old = [i for i, (at, _) in enumerate(self._history) if now - at >= COMMIT_DELAY_S]
        if len(old) > 1:
            del self._history[: old[-1]]

    def done_watermark(self, now: float) -> int:
        """The reader's watermark COMMIT_DELAY_S ago (NO_WATERMARK if none is that old): the
        windows it closed have had that long to be reported."""
        old = [wm for at, wm in self._history if now - at >= COMMIT_DELAY_S]
        return old[-1] if old else NO_WATERMARK

    def start(self, partitions: list[int], now: float) -> None:
        for partition in partitions:
            self._partitions.setdefault(partition, (NO_WATERMARK, now))

    def add_partitions(self, partitions: list[int], now: float) -> None:
        """Partitions found while the job runs start at the reader's watermark (it cannot go back):
        their records are on time for every window still open, late within allowed lateness."""
        current = min((wm for wm, _ in self._partitions.values()), default=NO_WATERMARK)
        for partition in partitions:
            self._partitions.setdefault(partition, (current, now))

    def partitions(self) -> list[int]:
        return list(self._partitions)

    def partition_watermark(self, partition: int) -> int:
        return self._partitions[partition][0]

    def records_seen(self, partition: int, newest_event_us: int, now: float) -> None:
        watermark, _ = self._partitions[partition]
        self._partitions[partition] = (max(watermark, newest_event_us), now)

    def restart_idle_clocks(self, now: float) -> None:
        """Every partition counts as quiet only from `now` on (see _recovered)."""
        for partition, (watermark, last_record_s) in self._partitions.items():
            self._partitions[partition] = (watermark, max(last_record_s, now))

    def idle_partitions(self, now: float, idle_s: float) -> list[int]:
        return [p for p, (_, last_s) in self._partitions.items() if now - last_s >= idle_s]

    def advance_idle(
        self, now: float, idle_s: float, watermark_us: int, caught_up: frozenset[int]
    ) -> None:
        """Partitions without records for `idle_s` that the broker confirmed caught up (at `now`,
        when it answered) follow `watermark_us`."""
        for partition, (watermark, last_record_s) in self._partitions.items():
            if partition in caught_up and now - last_record_s >= idle_s:
                self._partitions[partition] = (max(watermark, watermark_us), last_record_s)


class _ReaderWatermarks(WatermarkEstimatorProvider):
    def initial_estimator_state(self, element: ReaderStart, restriction: PartitionOffsets) -> None:
        return None

    def create_watermark_estimator(self, state: WatermarkState | None) -> _ReaderWatermark:
        return _ReaderWatermark(state)


class _ReadPartitions(beam.DoFn):
    def __init__(self, config: PipelineConfig, group_id: str, run: str = "") -> None:
        assert config.kafka is not None
        self._config = config
        self._spec = config.kafka
        # This job's run, as the Acknowledged step knows it. Not the elements' `run`: a Flink job
        # restored from a checkpoint carries the elements (and their run) of the job it restores.
        self._run = run
        self._group_id = group_id
        self._max_delay_us = round(self._spec.max_delay * 1_000_000)
        self._idle_s = self._spec.idle_timeout
        self._max_future_us = round(self._spec.max_future * 1_000_000)
        self._period_us = config.window.period_us
        self._horizon_us = config.window.size_us + config.window.allowed_lateness_us
        self._window: resume.Window = (
            config.window.size_us,
            config.window.period_us,
            config.window.allowed_lateness_us,
        )

    def setup(self) -> None:
        self._decoder = EventDecoder(self._config)
        self._format = record_format(self._spec.format, self._spec.schema_registry)
        self._registry_outage: Outage | None = None
        self._consumers: dict[tuple[str, tuple[int, ...]], Any] = {}
        self._committed: dict[tuple[str, tuple[int, ...]], tuple[float, Any]] = {}
        self._published: dict[tuple[str, tuple[int, ...]], tuple[float, int | None]] = {}
        self._outages: dict[tuple[str, tuple[int, ...]], Outage] = {}
        self._confirmed: dict[tuple[str, tuple[int, ...]], tuple[float, frozenset[int]]] = {}
        self._discovered: dict[tuple[str, int], float] = {}
        self._known: dict[str, tuple[int, ...]] = {}
        self._other_runs: set[str] = set()
        self._consumed = metrics.counter(metrics.RECORDS_CONSUMED)

    def teardown(self) -> None:
        for consumer in self._consumers.values():
            consumer.close()
        self._consumers = {}

    def _consumer(self, topic: str, offsets: Offsets) -> Any:
        from kafka import TopicPartition

        from kldrift.io import kafka_records

        partitions = tuple(p for p, _ in offsets)
        consumer = self._consumers.get((topic, partitions))
        if consumer is None:
            self._close_superseded(topic, partitions)
            consumer = self._new_consumer(
                self._group_id,
                # Metadata at half the partition discovery interval (kafka-python's: 5 minutes).
                {
                    "metadata_max_age_ms": max(500, round(self._spec.partition_discovery * 500)),
                    "max_partition_fetch_bytes": FETCH_PARTITION_BYTES,
                },
                max_poll_records=self._spec.poll_max_records,
            )
            # Its records come as (offset, value) pairs parsed a batch at a time.
            kafka_records.install(consumer)
            consumer.assign([TopicPartition(topic, p) for p in partitions])
            self._consumers[(topic, partitions)] = consumer
        for partition, offset in offsets:
            tp = TopicPartition(topic, partition)
            if consumer.position(tp, timeout_ms=PROBE_TIMEOUT_MS) != offset:
                consumer.seek(tp, offset)
        return consumer

    def _close_superseded(self, topic: str, partitions: tuple[int, ...]) -> None:
        """A reader that took on new partitions reads them with a new consumer: close the old."""
        for key in [k for k in self._consumers if k[0] == topic and set(k[1]) < set(partitions)]:
            self._consumers.pop(key).close()

    def _acked_consumer(self) -> Any:
        """A consumer of GROUP.acked, where the sinks commit their acknowledged progress; kept
        among the DoFn's consumers (closed with them)."""
        key = (acked_group(self._group_id), ())
        if key not in self._consumers:
            self._consumers[key] = self._new_consumer(acked_group(self._group_id))
        return self._consumers[key]

    def _new_consumer(
        self, group_id: str, defaults: dict[str, Any] | None = None, **fixed: Any
    ) -> Any:
        """A consumer of `group_id` that commits only when told: the config's client settings
        over `defaults` (and the bootstrap timeout), `fixed` over all."""
        from kafka import KafkaConsumer

        settings = {
            "bootstrap_timeout_ms": PROBE_TIMEOUT_MS,
            **(defaults or {}),
            **client_settings(self._spec, "consumer"),
        }
        return KafkaConsumer(**settings, group_id=group_id, enable_auto_commit=False, **fixed)

    def _discover(self, consumer: Any, element: ReaderStart, start: Offsets, now: float) -> Offsets:
        """Partitions added to the topic since the start that this reader owns, with their
        beginning offsets; looked for at most every kafka.partition_discovery."""
        from kafka import TopicPartition

        key = (element.topic, element.reader)
        if now - self._discovered.get(key, 0.0) < self._spec.partition_discovery:
            return ()
        self._discovered[key] = now
        try:
            found = set(consumer.partitions_for_topic(element.topic))
        except Exception as err:
            if not is_unreachable(err):
                raise
            return ()
        have = {p for p, _ in start}
        self._known[element.topic] = tuple(sorted(found | set(element.partitions) | have))
        new = sorted(
            p for p in found if p not in have and p not in element.partitions and element.owns(p)
        )
        if not new:
            return ()
        tps = [TopicPartition(element.topic, p) for p in new]
        try:
            beginning = consumer.beginning_offsets(tps, timeout_ms=PROBE_TIMEOUT_MS)
        except Exception as err:
            if not is_unreachable(err):
                raise
            return ()
        _LOG.warning(
            "kafka: partition(s) %s added to %s: reading them from their beginning",
            ", ".join(map(str, new)),
            element.topic,
        )
        return tuple((p, int(beginning[tp])) for p, tp in zip(new, tps, strict=True))

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element: ReaderStart,
        tracker: Any = beam.DoFn.RestrictionParam(_ReaderRestrictions()),
        watermark: Any = beam.DoFn.WatermarkEstimatorParam(_ReaderWatermarks()),
    ) -> Iterator[Any]:
        from kldrift.io.kafka_records import offsets_and_values

        restriction = tracker.current_restriction()
        start = restriction.start
        outage = self._outage(element.topic, start)
        try:
            consumer = self._consumer(element.topic, start)
        except Exception as err:  # Kafka unreachable: try again later, the watermark waits
            if not is_unreachable(err):
                raise
            tracker.defer_remainder(Duration(seconds=outage.failed(err)))
            return
        now = time.time()
        watermark.start([p for p, _ in start], now)
        own_done_us = watermark.done_watermark(now)
        floor_us: int | None = None
        if outage.since is None:  # commits wait for the broker too (the next resume retries)
            try:
                floor_us = self._job_floor(consumer, element, start, own_done_us, now)
                self._commit(consumer, element, restriction, own_done_us, floor_us, now)
            except Exception as err:
                if not is_unreachable(err):
                    raise
        # Pending batches are dropped once closed by the job's floor (none while it is unknown).
        done_us = NO_WATERMARK if floor_us is None else floor_us
        watermark.sample(now)
        added = self._discover(consumer, element, start, now) if outage.since is None else ()
        if added:  # read from the next call, with a consumer assigned them too
            if tracker.try_claim(NewPartitions(added)):
                watermark.add_partitions([p for p, _ in added], now)
                tracker.defer_remainder()
            return
        started = time.monotonic()
        while True:
            polled = consumer.poll(timeout_ms=100)
            now = time.time()
            for tp, records in sorted(polled.items(), key=lambda item: item[0].partition):
                if not records:
                    continue
                offsets, values = offsets_and_values(records)
                try:
                    batch = self._decode(
                        element.topic, tp.partition, offsets, values, watermark, now
                    )
                except RegistryUnreachable as err:  # unclaimed records are read again later
                    wait_s = self._registry_failed(element.topic, err)
                    tracker.defer_remainder(Duration(seconds=wait_s))
                    return
                newest_us = int(batch.event_time_us.max()) if len(batch.event_time_us) else None
                claim = Claim(
                    tp.partition,
                    offsets[-1] + 1,
                    offsets[0],
                    self._closing_us(batch, newest_us),
                    done_us,
                )
                if not tracker.try_claim(claim):
                    return
                _recovered(outage, watermark, now)
                self._consumed.inc(len(records))
                yield self._observed(batch, newest_us, watermark, now)
            backoff_s = self._advance_idle(consumer, element.topic, watermark, outage, now)
            if backoff_s is not None:  # Kafka unreachable: not idleness, the watermark waits
                tracker.defer_remainder(Duration(seconds=backoff_s))
                return
            if not any(polled.values()):
                tracker.defer_remainder(Duration(seconds=IDLE_RESUME_S))
                return
            elapsed = time.monotonic() - started
            if elapsed >= READ_SLICE_BEHIND_S or (
                elapsed >= READ_SLICE_S and not _behind(consumer)
            ):
                break
        tracker.defer_remainder()

    def _registry_failed(self, topic: str, err: RegistryUnreachable) -> float:
        """The schema registry did not answer: as with a Kafka outage, the watermark waits and the
        job fails after kafka.outage_timeout; the seconds to back off."""
        if self._registry_outage is None:
            registry = self._spec.schema_registry
            assert registry is not None
            self._registry_outage = Outage(
                shown_url(registry.url),
                self._spec.outage_timeout,
                f"reading {topic}",
                service="the schema registry",
            )
        return self._registry_outage.failed(err)

    def _outage(self, topic: str, offsets: Offsets) -> Outage:
        key = (topic, tuple(p for p, _ in offsets))
        if key not in self._outages:
            self._outages[key] = Outage(
                self._spec.bootstrap_servers, self._spec.outage_timeout, f"reading {topic}"
            )
        return self._outages[key]

    def _advance_idle(
        self, consumer: Any, topic: str, watermark: Any, outage: Outage, now: float
    ) -> float | None:
        """Partitions idle for idle_timeout follow wall-clock time, as of the broker's last answer
        that they are caught up (end offset = position), asked at most every PROBE_INTERVAL_S. An
        unanswered ask is an outage, not idleness: the watermark stays, so events produced
        meanwhile are not too late; returns the seconds to back off then, else None."""
        # Asked after OUTAGE_PROBE_S at most, so an outage is noticed whatever idle_timeout is.
        idle = watermark.idle_partitions(now, min(self._idle_s, OUTAGE_PROBE_S))
        if not idle:
            return None
        key = (topic, tuple(sorted(watermark.partitions())))
        confirmed = self._confirmed.get(key)
        if confirmed is None or now - confirmed[0] >= PROBE_INTERVAL_S or outage.since is not None:
            from kafka import TopicPartition

            asked = time.time()
            tps = [TopicPartition(topic, p) for p in idle]
            try:
                ends = consumer.end_offsets(tps, timeout_ms=PROBE_TIMEOUT_MS)
                positions = {tp: consumer.position(tp, timeout_ms=PROBE_TIMEOUT_MS) for tp in tps}
            except Exception as err:
                if not is_unreachable(err):
                    raise
                return outage.failed(err)
            _recovered(outage, watermark, asked)
            caught_up = frozenset(tp.partition for tp in tps if positions[tp] >= ends[tp])
            confirmed = (asked, caught_up)
            self._confirmed[key] = confirmed
        at, caught_up = confirmed
        idle_us = round(self._idle_s * 1_000_000)
        watermark.advance_idle(
            at, self._idle_s, round(at * 1_000_000) - idle_us - self._max_delay_us, caught_up
        )
        return None

    def _decode(
        self,
        topic: str,
        partition: int,
        offsets: list[int],
        values: list[bytes | None],
        watermark: Any,
        now: float,
    ) -> EventBatch:
        raw = RecordBatch(
            values,
            offsets,
            source=topic,
            partition=partition,
            watermark_us=watermark.partition_watermark(partition),
            max_event_time_us=round(now * 1_000_000) + self._max_future_us,
        )
        if self._format is None:
            return self._decoder.decode_columns(raw)
        parsed, problems = self._format.decode(raw.values)
        if self._registry_outage is not None:
            self._registry_outage.reached()
        return self._decoder.decode_parsed(raw, parsed, problems)

    def _closing_us(self, batch: EventBatch, newest_us: int | None) -> int:
        """When every window holding one of the batch's events has closed (pane start + size +
        allowed lateness of its newest event); for dead letters only, the watermark of the read."""
        if newest_us is None:
            return batch.watermark_us
        closing = (newest_us // self._period_us) * self._period_us + self._horizon_us
        # Its dead letters are stamped at least at the read's watermark (transforms.bin): the
        # batch is done only once they are acknowledged too.
        return max(closing, batch.watermark_us + 1)

    def _observed(
        self, batch: EventBatch, newest_us: int | None, watermark: Any, now: float
    ) -> TimestampedValue:
        """The claimed batch moves its partition's watermark and is stamped at its earliest event.
        A batch of dead letters only is not activity: a partition that receives nothing but
        undecodable or future-stamped records still goes idle and lets the job's watermark on."""
        if newest_us is not None:
            watermark.records_seen(batch.partition, newest_us - self._max_delay_us, now)
            return TimestampedValue(batch, Timestamp(micros=int(batch.event_time_us.min())))
        return TimestampedValue(batch, watermark.current_watermark())

    def _job_floor(
        self, consumer: Any, element: ReaderStart, start: Offsets, own_done_us: int, now: float
    ) -> int | None:
        """The floor this reader may commit by (see kldrift.io.resume): its own done watermark,
        held back to the other readers' published ones and to what the sinks have acknowledged
        (kldrift.io.acked); None while either is unknown. Asked at most every COMMIT_INTERVAL_S
        (an older answer is only more cautious)."""
        own = {p for p, _ in start}
        key = (element.topic, tuple(sorted(own)))
        cached = self._published.get(key)
        if cached is not None and now - cached[0] < COMMIT_INTERVAL_S:
            held = cached[1]
        else:
            partitions = self._known.get(element.topic) or element.partitions
            every = sorted(set(partitions) | own)
            fetched = dict(zip(every, _published(consumer, element.topic, every), strict=True))
            self._notice_other_runs(element, own, fetched)
            others = [fetched[p] for p in every if p not in own]
            others_floor = resume.published_floor(element.run, others) if others else None
            acked = self._acked()
            if acked is None or (others and others_floor is None):
                held = None
            else:
                held = acked if others_floor is None else min(acked, others_floor)
            self._published[key] = (now, held)
        return None if held is None else min(own_done_us, held)

    def _acked(self) -> int | None:
        """What the sinks acknowledged in this run (kldrift.io.acked); without commits there is
        no acknowledging step and nothing to hold the floor back for."""
        if not self._spec.commit_offsets:
            return _NO_HOLD
        return fetch_acked(self._acked_consumer(), self._spec, self._run, PROBE_TIMEOUT_MS)

    def _notice_other_runs(
        self, element: ReaderStart, own: set[int], fetched: dict[int, PartitionResume | None]
    ) -> None:
        """Once this reader has committed, a commit of another run on its own partitions means a
        second job reads with the same group: said once per other run."""
        if (element.topic, tuple(sorted(own))) not in self._committed:
            return
        for partition in sorted(own):
            fields = fetched.get(partition)
            if fields is None or fields.run in ("", element.run) or fields.run in self._other_runs:
                continue
            self._other_runs.add(fields.run)
            _LOG.warning(
                "kafka: another job (run %s) commits offsets of group %s on %s partition %d: two "
                "jobs share the consumer group, so each reads every partition and every window is "
                "reported twice. Stop one of them, or give each its own kafka.group_id",
                fields.run,
                self._group_id,
                element.topic,
                partition,
            )

    def _commit(
        self,
        consumer: Any,
        element: ReaderStart,
        restriction: PartitionOffsets,
        own_done_us: int,
        floor_us: int | None,
        now: float,
    ) -> None:
        """Commit, when this restriction resumes (the runner has checkpointed everything before
        its start; Prism does not support bundle finalization, which would otherwise be the hook),
        the offsets a restart must read from, with the resume point as metadata (see
        kldrift.io.resume). While the job's floor is unknown, the run's starting resume point."""
        if not self._spec.commit_offsets:
            return
        key = (element.topic, tuple(p for p, _ in restriction.start))
        last = self._committed.get(key)
        if last is not None and now - last[0] < COMMIT_INTERVAL_S:
            return
        carried = dict(element.read_to)
        read_to = {p: max(o, carried.get(p, o)) for p, o in restriction.start}
        if floor_us is None:
            offsets = element.offsets
            floor_us = element.floor_us
        else:
            offsets = resume.safe_offsets(restriction.start, restriction.pending, floor_us)
            floor_us = max(floor_us, element.floor_us)
        marker = (offsets, floor_us, tuple(sorted(read_to.items())), own_done_us)
        if last is not None and last[1] == marker:
            return
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        consumer.commit(
            {
                TopicPartition(element.topic, p): OffsetAndMetadata(
                    offset,
                    resume.encode(
                        resume.PartitionResume(
                            floor_us, read_to[p], element.run, own_done_us, self._window
                        )
                    ),
                    -1,
                )
                for p, offset in offsets
            },
            timeout_ms=PROBE_TIMEOUT_MS,
        )
        self._committed[key] = (now, marker)


def _recovered(outage: Outage, watermark: Any, at: float) -> None:
    """Kafka answered at `at`. After an outage, producers resend what they buffered meanwhile, and
    it reaches the broker after the broker answers again: a partition counts as idle (its watermark
    following the wall clock) only after idle_timeout of quiet from then on, not from before the
    outage, or those events would be too late."""
    if outage.since is not None:
        watermark.restart_idle_clocks(at)
    outage.reached(at)


def _published(consumer: Any, topic: str, partitions: list[int]) -> list[PartitionResume | None]:
    """The resume fields other readers committed for `partitions` (None where there are none),
    in one OffsetFetch request."""
    from kafka import TopicPartition

    tps = [TopicPartition(topic, p) for p in partitions]
    committed = consumer._coordinator.fetch_committed_offsets(tps, timeout_ms=PROBE_TIMEOUT_MS)
    return [resume.decode(getattr(committed.get(tp), "metadata", None)) for tp in tps]


def _behind(consumer: Any) -> bool:
    """Whether any assigned partition has records past the consumer's position (as of the last
    fetch response)."""
    for tp in consumer.assignment():
        highwater = consumer.highwater(tp)
        if highwater is not None and consumer.position(tp) < highwater:
            return True
    return False


def reader_starts(
    topic: str,
    offsets: dict[int, int],
    readers: int,
    run: str = "",
    resume_from: ResumePoint | None = None,
) -> list[ReaderStart]:
    """Partitions dealt round-robin to `readers` readers (never more readers than partitions),
    each carrying the run's name and the resume point it started from for its partitions."""
    partitions = sorted(offsets)
    count = max(1, min(readers, len(partitions)))
    floor_us = NO_WATERMARK if resume_from is None else resume_from.floor_us
    read_to = {} if resume_from is None else resume_from.read_to
    return [
        ReaderStart(
            topic,
            tuple((p, offsets[p]) for p in partitions[i::count]),
            run=run,
            partitions=tuple(partitions),
            floor_us=floor_us,
            read_to=tuple(
                (p, read_to[(topic, p)]) for p in partitions[i::count] if (topic, p) in read_to
            ),
            reader=i,
            readers=count,
        )
        for i in range(count)
    ]


class ReaderProcessHint(ResourceHint):
    """The resource hint `kldrift_reader_process=i` of reader i's steps under `kldrift run
    --worker-processes`: steps with distinct hints get distinct environments, hence (on Prism)
    distinct SDK workers; runners that do not know it ignore it."""

    urn = "beam:resources:kldrift_reader_process:v1"


ResourceHint.register_resource_hint("kldrift_reader_process", ReaderProcessHint)


class ReadEventsPerReader(beam.PTransform):
    """Readers -> one PCollection of EventBatch per reader, each read by a step of its own
    (`Read0`, `Read1`, ...) in an environment of its own (ReaderProcessHint): Prism starts one SDK
    worker per environment and runs their bundles concurrently, so with worker processes
    (kldrift.local.worker_processes) each reader parses and decodes on a core of its own. Each
    read is its own stage, with its own watermark: Prism's one-watermark-per-read limit (see the
    module docstring) does not apply, and the composite's Flatten takes the minimum."""

    def __init__(self, config: PipelineConfig, starts: list[ReaderStart], group_id: str) -> None:
        super().__init__()
        self._config = config
        self._starts = starts
        self._group_id = group_id

    @no_annotations  # Beam takes no tuple of PCollections as an output hint (it warns)
    def expand(self, pipeline: beam.pvalue.PBegin) -> tuple[beam.PCollection[EventBatch], ...]:
        run = self._starts[0].run if self._starts else ""
        return tuple(
            pipeline
            | f"Partitions{i}" >> beam.Create([start])
            | (
                f"Read{i}"
                >> beam.ParDo(_ReadPartitions(self._config, self._group_id, run))
                .with_output_types(EventBatch)
                .with_resource_hints(kldrift_reader_process=str(i))
            )
            for i, start in enumerate(self._starts)
        )


class ReadEventsFromKafka(beam.PTransform):
    """Readers (partitions with start offsets, resolved at start) -> EventBatch, one per poll of a
    partition."""

    def __init__(self, config: PipelineConfig, starts: list[ReaderStart], group_id: str) -> None:
        super().__init__()
        self._config = config
        self._starts = starts
        self._group_id = group_id

    def expand(self, pipeline: beam.pvalue.PBegin) -> beam.PCollection[EventBatch]:
        run = self._starts[0].run if self._starts else ""
        read = _ReadPartitions(self._config, self._group_id, run)
        return (
            pipeline
            | "Partitions" >> beam.Create(self._starts)
            | "Read" >> beam.ParDo(read).with_output_types(EventBatch)
        )
