"""Bin: each event batch binned with numpy into counts per (key, pane), emitted as one key block per
(shard of keys, pane) (kldrift.key_blocks).

Every feature's slots lie side by side in one array (feature_slots), and the keys of a shard in one
block, so Beam's per-element cost is paid once per (shard, pane), not once per key and feature. Dead letters (undecodable records, and events
whose every window has closed) leave here on the "dead_letters" output.

Silent emptiness is said here: counters per dead-letter reason and per feature's values (read by
`kldrift replay`), and, at most once per WARN_INTERVAL_S of wall-clock time per worker process, a
warning on the `kldrift.transforms.bin` logger when records were dead-lettered or a feature had no
value in any event binned since the last one (what `kldrift run` shows while it runs).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam import typehints
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from kldrift import metrics
from kldrift.binning import FeatureBins, feature_values
from kldrift.events import NO_WATERMARK, DeadLetter, EventBatch
from kldrift.io import batch_coder  # noqa: F401  # registers the batch coders
from kldrift.io.resume import ResumePoint
from kldrift.key_blocks import KeyBlock, shard_of
from kldrift.other_values import count_other_values
from kldrift.schemas.config import PipelineConfig
from kldrift.transforms.histogram_coder import KeyBlockHint
from kldrift.transforms.outputs import DEAD_LETTERS

WARN_INTERVAL_S = 60.0
"""The least wall-clock time between two emptiness warnings of a worker process."""
WARN_INTERVAL_ENV = "KLDRIFT_WARN_INTERVAL_S"
"""For tests only: an environment variable that replaces WARN_INTERVAL_S (seconds), read when a
worker sets the Bin step up."""

_LOG = logging.getLogger(metrics.WARNINGS_LOGGER)

FeatureSlots = tuple[tuple[str, int, int], ...]
"""(feature, first slot, end slot) per feature: where its counts lie in a (key, pane) array."""
PANE_COUNTS = typehints.Tuple[int, KeyBlockHint]
"""BinPanes' main output, (shard, block): the shard (kldrift.key_blocks.shard_of) as the grouping
key, its keys' counts in one KeyBlock with KeyBlockCoder."""


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
        # The same in every copy of this step a worker deserialises: its one EmptinessWatch.
        self._watch_id = uuid.uuid4().hex

    def setup(self) -> None:
        self._binned = metrics.counter(metrics.EVENTS_BINNED)
        self._dead = metrics.counter(metrics.RECORDS_DEAD_LETTERED)
        self._too_late = metrics.counter(metrics.EVENTS_TOO_LATE)
        self._reread = metrics.counter(metrics.EVENTS_ALREADY_REPORTED)
        self._dead_by_reason: dict[str, Any] = {}
        names = [b.name for b in self._feature_bins]
        # Per feature, its missing and its invalid slot: counted only when not 0 (rare), so an
        # ordinary batch pays one numpy sum for them and no counter.
        self._absent_slots = np.array(
            [slot for _, _, end in feature_slots(self._feature_bins) for slot in (end - 2, end - 1)]
        )
        self._absent = [
            metrics.counter(prefix + n)
            for n in names
            for prefix in (metrics.FEATURE_MISSING, metrics.FEATURE_INVALID)
        ]
        interval_s = float(os.environ.get(WARN_INTERVAL_ENV, WARN_INTERVAL_S))
        self._watch = _shared_watch(self._watch_id, names, interval_s)

    def process(
        self, batch: EventBatch, timestamp: Any = beam.DoFn.TimestampParam
    ) -> Iterator[Any]:
        self._watch.read(batch.records)
        yield from self._bin(batch, timestamp)
        self._watch.warn_when_due(time.monotonic())

    def _bin(self, batch: EventBatch, timestamp: Timestamp) -> Iterator[Any]:
        # Dead letters are stamped at least at the read's watermark, never late downstream: the
        # step after the sinks (kldrift.io.acked) then knows when they are written.
        dead_stamp = Timestamp(micros=max(timestamp.micros, batch.watermark_us))
        for dead_letter in batch.dead_letters:
            yield _dead(dead_letter, dead_stamp)
        if batch.dead_letters:
            self._count_dead(Counter(d.reason for d in batch.dead_letters))
        if not len(batch):
            return
        pane_start = (batch.event_time_us // self._period_us) * self._period_us
        if self._resume is not None:
            batch, pane_start = self._skip_already_reported(batch, pane_start, self._resume)
        on_time = self._split_too_late(batch, pane_start)
        for dead_letter in on_time[1]:
            yield _dead(dead_letter, dead_stamp)
        events, pane_start = on_time[0]
        if not len(events):
            return
        self._binned.inc(len(events))
        yield from self._pane_counts(events, pane_start, timestamp)

    def _count_dead(self, by_reason: Mapping[str, int]) -> None:
        for reason, count in by_reason.items():
            counter = self._dead_by_reason.get(reason)
            if counter is None:
                counter = metrics.counter(metrics.DEAD_LETTERS_BY_REASON + reason)
                self._dead_by_reason[reason] = counter
            counter.inc(count)
            self._dead.inc(count)
        self._watch.dead_lettered(by_reason)

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
        return batch.take(keep, watermark_us=watermark_us), pane_start[keep]

    def _split_too_late(
        self, batch: EventBatch, pane_start: np.ndarray
    ) -> tuple[tuple[EventBatch, np.ndarray], list[DeadLetter]]:
        if batch.watermark_us == NO_WATERMARK:
            return (batch, pane_start), []
        too_late = pane_start + self._horizon_us <= batch.watermark_us
        if not too_late.any():
            return (batch, pane_start), []
        late_rows = np.flatnonzero(too_late)
        self._too_late.inc(len(late_rows))
        self._count_dead({"too_late": len(late_rows)})
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
        return (batch.take(keep), pane_start[keep]), dead

    def _pane_counts(
        self, events: EventBatch, pane_start: np.ndarray, timestamp: Timestamp
    ) -> Iterator[TimestampedValue]:
        keys = events.keys
        distinct_keys = sorted(set(keys), key=lambda k: (k is not None, k or ""))
        groups, group_of_event = _key_pane_groups(distinct_keys, keys, pane_start, self._period_us)
        n_groups = groups.shape[1]
        input_us = timestamp.micros
        blocks = []
        others: dict[int, dict[str, Counter[str]]] = {}
        for feature_bins in self._feature_bins:
            values = feature_values(feature_bins, events.column)
            block = feature_bins.count_groups(values, group_of_event, n_groups)
            blocks.append(block)
            other = feature_bins.n_bins - 1
            # Only a categorical feature with values in __other__ pays for naming them.
            if feature_bins.categories is not None and block[:, other].any():
                codes = feature_bins.codes(values)
                for g, named in count_other_values(values, codes, other, group_of_event).items():
                    others.setdefault(g, {})[feature_bins.name] = named
        counts = np.hstack(blocks)
        self._count_absent(len(events), counts)
        # One block per (shard, pane): the groups are sorted by key, then pane.
        shards = [shard_of(key) for key in distinct_keys]
        by_block: dict[tuple[int, int], list[int]] = {}
        for g, (code, start) in enumerate(zip(groups[0].tolist(), groups[1].tolist(), strict=True)):
            by_block.setdefault((shards[code], start), []).append(g)
        for (shard, start), rows in by_block.items():
            keys_of_block = [distinct_keys[groups[0, g]] for g in rows]
            key_block = KeyBlock(
                keys_of_block,
                counts[rows],
                {keys_of_block[i]: others[g] for i, g in enumerate(rows) if g in others},
            )
            stamp_us = max(start, input_us)
            yield TimestampedValue((shard, key_block), Timestamp(micros=stamp_us))

    def _count_absent(self, binned: int, counts: np.ndarray) -> None:
        """Each feature's missing and invalid values among the `binned` events of `counts`."""
        absent = counts[:, self._absent_slots].sum(axis=0)
        if absent.any():
            for counter, count in zip(self._absent, absent.tolist(), strict=True):
                if count:
                    counter.inc(count)
        self._watch.binned(binned, absent.reshape(-1, 2))


def _key_pane_groups(
    distinct_keys: list[str | None], keys: list[str | None], pane_start: np.ndarray, period_us: int
) -> tuple[np.ndarray, np.ndarray]:
    """The (key code, pane start) pairs present, sorted (shape 2 x groups; a key's code is its
    place in `distinct_keys`), and each event's group."""
    key_code = dict(zip(distinct_keys, range(len(distinct_keys)), strict=True))
    key_codes = np.fromiter(map(key_code.__getitem__, keys), np.int64, len(keys))
    first = int(pane_start.min())
    pane_index = (pane_start - first) // period_us
    panes = int(pane_index.max()) + 1
    if panes * len(distinct_keys) >= 2**62:  # no one integer per pair: pairs as columns
        pairs, group_of_event = np.unique(
            np.stack([key_codes, pane_start]), axis=1, return_inverse=True
        )
        return pairs, group_of_event.reshape(-1)
    # One integer per (key, pane), in the same order as the pairs: key first, then pane.
    group_ids, group_of_event = np.unique(key_codes * panes + pane_index, return_inverse=True)
    groups = np.stack([group_ids // panes, (group_ids % panes) * period_us + first])
    return groups, group_of_event.reshape(-1)


class EmptinessWatch:
    """What the Bin steps of one pipeline in this process dead-lettered, and each feature's missing
    and invalid values among the events they binned, since the last warning: one warning line
    for the dead letters and one per feature without a value in any event binned, at most once
    per `interval_s`.

    >>> watch = EmptinessWatch(["latency_ms", "amount"], interval_s=60, now=0.0)
    >>> watch.read(12)
    >>> watch.dead_lettered({"missing_event_time": 2})
    >>> watch.binned(10, np.array([[10, 0], [3, 0]]))  # (missing, invalid) per feature
    >>> watch.lines(now=30.0)
    []
    >>> for line in watch.lines(now=61.0):
    ...     print(line)
    kldrift: last 61 s: 2 of 12 records dead-lettered (2 missing_event_time)
    kldrift: last 61 s: feature 'latency_ms': missing in all 10 events binned (renamed field?)
    >>> watch.lines(now=200.0)  # nothing read since
    []
    """

    def __init__(self, features: list[str], interval_s: float, now: float) -> None:
        self._features = features
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._start(now)

    def _start(self, now: float) -> None:
        self._since = now
        self._records = 0
        self._dead: Counter[str] = Counter()
        self._binned = 0
        self._absent = np.zeros((len(self._features), 2), np.int64)

    def read(self, records: int) -> None:
        with self._lock:
            self._records += records

    def dead_lettered(self, by_reason: Mapping[str, int]) -> None:
        with self._lock:
            self._dead.update(by_reason)

    def binned(self, events: int, absent: np.ndarray) -> None:
        """`events` binned, of which absent[f] = (missing, invalid) for feature f."""
        with self._lock:
            self._binned += events
            self._absent += absent

    def lines(self, now: float) -> list[str]:
        """The warning lines due at `now` (none before `interval_s` has passed); starts over."""
        with self._lock:
            if now - self._since < self._interval_s:
                return []
            elapsed_s = now - self._since
            prefix = f"kldrift: last {elapsed_s:.{0 if elapsed_s >= 10 else 1}f} s: "
            lines = []
            dead = sum(self._dead.values())
            if dead:
                reasons = metrics.reasons_text(self._dead)
                lines.append(f"{prefix}{dead} of {self._records} records dead-lettered ({reasons})")
            for feature, (missing, invalid) in zip(
                self._features, self._absent.tolist(), strict=True
            ):
                line = metrics.empty_feature_line(feature, self._binned, missing, invalid)
                if line is not None:
                    lines.append(prefix + line)
            self._start(now)
            return lines

    def warn_when_due(self, now: float) -> None:
        for line in self.lines(now):
            _LOG.warning(line)


_WATCHES: dict[str, EmptinessWatch] = {}
_WATCHES_LOCK = threading.Lock()


def _shared_watch(watch_id: str, features: list[str], interval_s: float) -> EmptinessWatch:
    """One EmptinessWatch per Bin step per process, shared by the step's DoFn instances (a worker
    runs several bundles at once): one warning a minute, not one per instance."""
    with _WATCHES_LOCK:
        watch = _WATCHES.get(watch_id)
        if watch is None:
            watch = _WATCHES[watch_id] = EmptinessWatch(features, interval_s, time.monotonic())
        return watch


def _dead(dead_letter: DeadLetter, stamp: Timestamp) -> beam.pvalue.TaggedOutput:
    return beam.pvalue.TaggedOutput(DEAD_LETTERS, TimestampedValue(dead_letter, stamp))


def _rfc3339_us(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1_000_000, tz=UTC).isoformat()
