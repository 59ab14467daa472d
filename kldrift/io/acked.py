"""PublishAcknowledged: how far the sinks have written, committed to Kafka for the readers.

A report or dead letter leaves a sink only once the broker acknowledged it (the sink's bundle
flushes before it completes), so the watermark after both sinks is the sinks' acknowledged
progress: once it passes T, every report and dead letter stamped before T is on its topic. One
stateful step keeps an event-time timer 1 ms past the newest element it saw; when it fires at T,
it commits T (resume.encode_acked) to the group GROUP.acked on partition 0 of the report topic. The
Kafka readers commit their floor no further than that (kldrift.io.resume): a sink that cannot
write holds the watermark, and the commits stop with it.

Reports are stamped at their window's end + allowed_lateness - 1 ms (transforms.revise), dead
letters at least at their partition's watermark when read (transforms.bin), so neither is late
here.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.transforms import userstate, window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils.timestamp import Timestamp

from kldrift.events import NO_WATERMARK
from kldrift.io import resume
from kldrift.io.kafka_client import client_settings
from kldrift.io.outage import is_unreachable
from kldrift.schemas.config import KafkaSpec

_LOG = logging.getLogger(__name__)
COMMIT_TIMEOUT_MS = 2000
TIMER_STEP_US = 1000
"""Timers are kept to the millisecond by the runners: one fires 1 ms past the newest element."""
ACKED_PARTITION = 0
"""The report topic's partition whose offset, in GROUP.acked, carries the acknowledged progress."""


def acked_group(group_id: str) -> str:
    return group_id + resume.ACKED_GROUP_SUFFIX


class _PublishAcked(beam.DoFn):
    """One key: the newest element time seen and an event-time timer just past it; each firing
    commits the time it fired at as the sinks' acknowledged progress of this run."""

    NEWEST = userstate.ReadModifyWriteStateSpec("newest_us", VarIntCoder())
    ARMED = userstate.ReadModifyWriteStateSpec("armed_us", VarIntCoder())
    FIRE = userstate.TimerSpec("acked", TimeDomain.WATERMARK)

    def __init__(self, spec: KafkaSpec, group_id: str, run: str) -> None:
        self._spec = spec
        self._group_id = group_id
        self._run = run

    def setup(self) -> None:
        self._consumer: Any = None

    def teardown(self) -> None:
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                self._consumer.close()
            self._consumer = None

    def process(
        self,
        element: tuple[int, int],
        timestamp: Any = beam.DoFn.TimestampParam,
        newest: Any = beam.DoFn.StateParam(NEWEST),
        armed: Any = beam.DoFn.StateParam(ARMED),
        timer: Any = beam.DoFn.TimerParam(FIRE),
    ) -> Iterator[Any]:
        stamp_us = int(timestamp.micros)
        if (newest.read() or NO_WATERMARK) < stamp_us:
            newest.write(stamp_us)
        if armed.read() is None:
            _arm(timer, armed, stamp_us + TIMER_STEP_US)
        return iter(())

    @userstate.on_timer(FIRE)
    def fired(
        self,
        fired_at: Any = beam.DoFn.TimestampParam,
        newest: Any = beam.DoFn.StateParam(NEWEST),
        armed: Any = beam.DoFn.StateParam(ARMED),
        timer: Any = beam.DoFn.TimerParam(FIRE),
    ) -> Iterator[Any]:
        acked_us = int(fired_at.micros)
        self._publish(acked_us)
        newest_us = newest.read()
        if newest_us is not None and newest_us + TIMER_STEP_US > acked_us:
            _arm(timer, armed, newest_us + TIMER_STEP_US)
        else:
            armed.clear()
        return iter(())

    def _publish(self, acked_us: int) -> None:
        """Commit `acked_us`; an unreachable broker leaves the previous commit (only more
        cautious) and the next firing commits again."""
        from kafka import KafkaConsumer, TopicPartition
        from kafka.structs import OffsetAndMetadata

        tp = TopicPartition(self._spec.output_topic, ACKED_PARTITION)
        try:
            if self._consumer is None:
                self._consumer = KafkaConsumer(
                    **client_settings(self._spec, "consumer"),
                    group_id=acked_group(self._group_id),
                    enable_auto_commit=False,
                )
            # The report topic's end offset: the group's lag there reads 0, not the whole topic.
            end = self._consumer.end_offsets([tp], timeout_ms=COMMIT_TIMEOUT_MS).get(tp, 0)
            self._consumer.commit(
                {tp: OffsetAndMetadata(end, resume.encode_acked(self._run, acked_us), -1)},
                timeout_ms=COMMIT_TIMEOUT_MS,
            )
        except Exception as err:
            if not is_unreachable(err):
                raise
            _LOG.debug("acknowledged progress not committed (%s)", err)


def _arm(timer: Any, armed: Any, at_us: int) -> None:
    timer.set(Timestamp(micros=at_us))
    armed.write(at_us)


def fetch_acked(consumer: Any, spec: KafkaSpec, run: str, timeout_ms: int) -> int | None:
    """The acknowledged progress this run's sinks committed (None before the first), read with a
    consumer of the GROUP.acked group."""
    from kafka import TopicPartition

    tp = TopicPartition(spec.output_topic, ACKED_PARTITION)
    committed = consumer._coordinator.fetch_committed_offsets([tp], timeout_ms=timeout_ms)
    return resume.decode_acked(getattr(committed.get(tp), "metadata", None), run)


class PublishAcknowledged(beam.PTransform):
    """(reports written, dead letters written) -> nothing: commits how far both sinks have
    written (see the module docstring)."""

    def __init__(self, spec: KafkaSpec, group_id: str, run: str) -> None:
        super().__init__()
        self._spec = spec
        self._group_id = group_id
        self._run = run

    def expand(self, written: Any) -> beam.PCollection:  # a tuple of PCollections
        # Reports are in their revision windows, dead letters in the global window: each is put in
        # the global window before the Flatten (whose inputs must share a windowing).
        rewindowed = [
            pcoll
            | f"OneKey{i}" >> beam.Map(lambda _: (0, 0)).with_output_types(tuple[int, int])
            | f"Global{i}" >> beam.WindowInto(window.GlobalWindows())
            for i, pcoll in enumerate(written)
        ]
        return (
            rewindowed
            | "Written" >> beam.Flatten()
            | "Commit"
            >> beam.ParDo(_PublishAcked(self._spec, self._group_id, self._run)).with_input_types(
                tuple[int, int]
            )
        )
