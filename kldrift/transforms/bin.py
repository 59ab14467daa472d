"""Bin: each event batch binned with numpy into counts per (key, pane).

Every feature's slots lie side by side in one array (feature_slots), so Beam's per-element cost is
paid once per (key, pane), not once per feature. Dead letters (undecodable records, and events
whose every window has closed) leave here on the "dead_letters" output.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam import typehints
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from kldrift import metrics
from kldrift.binning import FeatureBins, value_getter
from kldrift.events import NO_WATERMARK, DeadLetter, EventBatch
from kldrift.io.resume import ResumePoint
from kldrift.other_values import CountsWithOthers, Histogram, count_other_values
from kldrift.schemas.config import PipelineConfig
from kldrift.transforms.histogram_coder import HistogramHint
from kldrift.transforms.outputs import DEAD_LETTERS

FeatureSlots = tuple[tuple[str, int, int], ...]
"""(feature, first slot, end slot) per feature: where its counts lie in a (key, pane) array."""
PANE_COUNTS = typehints.Tuple[typehints.Any, HistogramHint]
"""BinPanes' main output, (key, counts): the counts with HistogramCoder; the key left untyped keeps
Beam's deterministic fallback coder for grouping (what jobs before HistogramCoder used)."""


def feature_slots(feature_bins: list[FeatureBins]) -> FeatureSlots:
    """Each feature's slots (n_bins + 2 of them) in the stacked counts array, in config order."""
    slots = []
    start = 0
    for bins in feature_bins:
        end = start + bins.n_bins + 2
        slots.append((bins.name, start, end))
        start = end
    return tuple(slots)


class BinPanes(beam.DoFn):
    """Bins one EventBatch into counts per (key, pane), every feature's slots in one array (see
    feature_slots); emits dead letters."""

    def __init__(
        self,
        config: PipelineConfig,
        feature_bins: list[FeatureBins],
        resume: ResumePoint | None = None,
    ) -> None:
        self._config = config
        self._feature_bins = feature_bins
        self._resume = resume
        self._period_us = config.window.period_us
        # An event is too late only when every window containing it has closed.
        self._horizon_us = config.window.size_us + config.window.allowed_lateness_us

    def setup(self) -> None:
        self._getters = [value_getter(b) for b in self._feature_bins]
        self._binned = metrics.counter(metrics.EVENTS_BINNED)
        self._dead = metrics.counter(metrics.RECORDS_DEAD_LETTERED)
        self._too_late = metrics.counter(metrics.EVENTS_TOO_LATE)
        self._reread = metrics.counter(metrics.EVENTS_ALREADY_REPORTED)

    def process(
        self, batch: EventBatch, timestamp: Any = beam.DoFn.TimestampParam
    ) -> Iterator[Any]:
        # Dead letters are stamped at least at the read's watermark, never late downstream: the
        # step after the sinks (kldrift.io.acked) then knows when they are written.
        dead_stamp = Timestamp(micros=max(timestamp.micros, batch.watermark_us))
        for dead_letter in batch.dead_letters:
            yield _dead(dead_letter, dead_stamp)
        self._dead.inc(len(batch.dead_letters))
        if not batch.events:
            return
        pane_start = (batch.event_time_us // self._period_us) * self._period_us
        if self._resume is not None:
            batch, pane_start = self._skip_already_reported(batch, pane_start, self._resume)
        on_time = self._split_too_late(batch, pane_start)
        for dead_letter in on_time[1]:
            yield _dead(dead_letter, dead_stamp)
        events, keys, pane_start = on_time[0]
        if not events:
            return
        self._binned.inc(len(events))
        yield from self._pane_counts(events, keys, pane_start, timestamp)

    def _skip_already_reported(
        self, batch: EventBatch, pane_start: np.ndarray, resume: ResumePoint
    ) -> tuple[EventBatch, np.ndarray]:
        """After a restart: events the previous run read whose every window it reported are
        skipped (counted once, there); the others' closing is judged at least at the floor."""
        closed = pane_start + self._horizon_us <= resume.floor_us
        if not closed.any():
            return batch, pane_start
        read_before = np.fromiter(
            (resume.read_before(batch.source, batch.partition, o) for o in batch.offsets),
            bool,
            len(batch.offsets),
        )
        skip = closed & read_before
        self._reread.inc(int(skip.sum()))
        keep = np.flatnonzero(~skip)
        watermark_us = max(batch.watermark_us, resume.floor_us)
        kept = dataclasses.replace(
            batch,
            events=[batch.events[i] for i in keep],
            event_time_us=batch.event_time_us[keep],
            keys=[batch.keys[i] for i in keep],
            values=[batch.values[i] for i in keep],
            offsets=[batch.offsets[i] for i in keep],
            watermark_us=watermark_us,
            dead_letters=[],
        )
        return kept, pane_start[keep]

    def _split_too_late(
        self, batch: EventBatch, pane_start: np.ndarray
    ) -> tuple[tuple[list[dict], list[str | None], np.ndarray], list[DeadLetter]]:
        if batch.watermark_us == NO_WATERMARK:
            return (batch.events, batch.keys, pane_start), []
        too_late = pane_start + self._horizon_us <= batch.watermark_us
        if not too_late.any():
            return (batch.events, batch.keys, pane_start), []
        late_rows = np.flatnonzero(too_late)
        self._too_late.inc(len(late_rows))
        self._dead.inc(len(late_rows))
        dead = [
            DeadLetter(
                batch.values[i],
                "too_late",
                "every window containing this event had closed (watermark "
                f"{_rfc3339_us(batch.watermark_us)}, allowed_lateness "
                f"{self._config.window.allowed_lateness:g}s)",
                batch.source,
                batch.partition,
                batch.offsets[i],
            )
            for i in late_rows
        ]
        keep = np.flatnonzero(~too_late)
        events = [batch.events[i] for i in keep]
        keys = [batch.keys[i] for i in keep]
        return (events, keys, pane_start[keep]), dead

    def _pane_counts(
        self,
        events: list[dict],
        keys: list[str | None],
        pane_start: np.ndarray,
        timestamp: Timestamp,
    ) -> Iterator[TimestampedValue]:
        distinct_keys = sorted(set(keys), key=lambda k: (k is not None, k or ""))
        key_code = {k: i for i, k in enumerate(distinct_keys)}
        key_codes = np.fromiter((key_code[k] for k in keys), np.int64, len(keys))
        groups, group_of_event = np.unique(
            np.stack([key_codes, pane_start]), axis=1, return_inverse=True
        )
        group_of_event = group_of_event.reshape(-1)
        n_groups = groups.shape[1]
        input_us = timestamp.micros
        blocks = []
        others: dict[int, dict[str, Counter[str]]] = {}
        for feature_bins, get in zip(self._feature_bins, self._getters, strict=True):
            values = [get(e) for e in events]
            block = feature_bins.count_groups(values, group_of_event, n_groups)
            blocks.append(block)
            other = feature_bins.n_bins - 1
            # Only a categorical feature with values in __other__ pays for naming them.
            if feature_bins.categories is not None and block[:, other].any():
                codes = feature_bins.codes(values)
                for g, named in count_other_values(values, codes, other, group_of_event).items():
                    others.setdefault(g, {})[feature_bins.name] = named
        counts = np.hstack(blocks)
        for g in range(n_groups):
            stamp_us = max(int(groups[1, g]), input_us)
            histogram: Histogram = counts[g]
            if g in others:
                histogram = CountsWithOthers(counts[g], others[g])
            yield TimestampedValue(
                (distinct_keys[groups[0, g]], histogram), Timestamp(micros=stamp_us)
            )


def _dead(dead_letter: DeadLetter, stamp: Timestamp) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput(DEAD_LETTERS, TimestampedValue(dead_letter, stamp))


def _rfc3339_us(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1_000_000, tz=UTC).isoformat()
