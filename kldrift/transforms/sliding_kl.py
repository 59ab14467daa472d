"""SlidingKLDivergence: event batches in, one DriftReport per (key, feature, sliding window, revision).

Steps (stable labels, so a Dataflow `--update` keeps state):
  Bin                 each batch binned with numpy into per-(key, pane) counts: every feature's
                      slots side by side in one array, so Beam's per-element cost is paid once
                      per (key, pane), not once per feature
  PaneHistograms      FixedWindows(period), sum of counts; late data fires discarding deltas
  PaneToWindows       each pane sum keyed once per sliding window holding it (size/period),
                      stamped at that window's last millisecond; summed per window per bundle
  SlidingHistograms   FixedWindows(period) over those stamps: fires at the sliding window's end;
                      sum of pane sums (deltas)
  ReviseStamp         restamped at window end + allowed_lateness - 1 ms, and
  ReviseWindows       FixedWindows(period, offset) ending there: the revision state's lifetime
  Revise              running total per window, numbered revisions 0, 1, 2...
  Score               divergence against the baseline (a construction argument, or a newer one
                      with the same bins from `baseline_updates`, e.g. a kafka:// topic) -> a
                      DriftReport per feature, q-values across the features of one (key,
                      window, revision)
Each event is counted once, whatever size/period is: the sliding step costs windows x bins.
Only standard WindowFns are used: Flink's and Dataflow's Java side reject pickled Python ones.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any, Protocol

import apache_beam as beam
import numpy as np
from apache_beam import typehints
from apache_beam.transforms import trigger, window
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp
from apache_beam.utils.windowed_value import PaneInfoTiming, WindowedValue

from kldrift.binning import BaselineMismatch, FeatureBins, bins_differ, resolve_bins
from kldrift.events import (
    NO_WATERMARK,
    DeadLetter,
    EventBatch,
    EventDecoder,
    RecordBatch,
    ResumePoint,
)
from kldrift.events import field_getter as _field_getter
from kldrift.other_values import (
    CountsWithOthers,
    Histogram,
    add_into,
    copy_histogram,
    count_other_values,
    counts_of,
    others_of,
)
from kldrift.schemas.baseline import Baseline, BaselineError
from kldrift.schemas.config import PipelineConfig
from kldrift.schemas.report import DriftReport
from kldrift.scoring import FeatureReference, feature_references, window_reports

REPORTS = "reports"
DEAD_LETTERS = "dead_letters"
METRICS_NAMESPACE = "kldrift"
_LOG = logging.getLogger(__name__)

PaneKey = str | None
"""The value of key_field (None without one): the grouping key of pane histograms."""
SlideKey = tuple[str | None, int]
"""(key, window start in microseconds): the grouping key of sliding-window histograms."""
FeatureSlots = tuple[tuple[str, int, int], ...]
"""(feature, first slot, end slot) per feature: where its counts lie in a (key, pane) array."""


def feature_slots(feature_bins: list[FeatureBins]) -> FeatureSlots:
    """Each feature's slots (n_bins + 2 of them) in the stacked counts array, in config order."""
    slots = []
    start = 0
    for bins in feature_bins:
        end = start + bins.n_bins + 2
        slots.append((bins.name, start, end))
        start = end
    return tuple(slots)


class SumCounts(beam.CombineFn):
    """Sums count arrays (bins, missing, invalid), with the raw `__other__` values some carry
    (kldrift.other_values). The accumulator is an int64 array, a CountsWithOthers, or None."""

    def create_accumulator(self) -> Histogram | None:
        return None

    def add_input(
        self, accumulator: Histogram | None, counts: Histogram | None
    ) -> Histogram | None:
        if counts is None:  # an empty pane's sum
            return accumulator
        if accumulator is None:
            return copy_histogram(counts)
        return add_into(accumulator, counts)

    def merge_accumulators(self, accumulators: Iterable[Histogram | None]) -> Histogram | None:
        merged: Histogram | None = None
        for accumulator in accumulators:
            if accumulator is None:
                continue
            # Reusing the first accumulator is allowed by the contract.
            merged = accumulator if merged is None else add_into(merged, accumulator)
        return merged

    def extract_output(self, accumulator: Histogram | None) -> Histogram | None:
        return accumulator


class DecodeRecords(beam.PTransform):
    """RecordBatch -> EventBatch (JSON, event time, key); undecodable records ride in the batch as
    dead letters, emitted by SlidingKLDivergence's Bin step."""

    def __init__(self, config: PipelineConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, batches: beam.PCollection[RecordBatch]) -> beam.PCollection[EventBatch]:
        decoder = EventDecoder(self._config)
        return batches | "Decode" >> beam.Map(decoder.decode).with_output_types(EventBatch)


class _BinBatch(beam.DoFn):
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
        self._getters = [_field_getter(b.name) for b in self._feature_bins]
        self._binned = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "events_binned")
        self._dead = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "records_dead_lettered")
        self._too_late = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "events_too_late")
        self._reread = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "events_already_reported")

    def process(
        self, batch: EventBatch, timestamp: Any = beam.DoFn.TimestampParam
    ) -> Iterator[Any]:
        for dead_letter in batch.dead_letters:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter)
        self._dead.inc(len(batch.dead_letters))
        if not batch.events:
            return
        pane_start = (batch.event_time_us // self._period_us) * self._period_us
        if self._resume is not None:
            batch, pane_start = self._skip_already_reported(batch, pane_start, self._resume)
        on_time = self._split_too_late(batch, pane_start)
        for dead_letter in on_time[1]:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter)
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


_WINDOW_ELEMENT = typehints.Tuple[typehints.Tuple[typehints.Optional[str], int], typehints.Any]
"""((key, window_start_us), counts): typed so the stateful Revise step gets a deterministic key
coder."""


class _PaneToWindows(beam.DoFn):
    """A pane's counts -> one element per sliding window holding the pane (size/period of them),
    the window's start in the key, timestamped at the end of its own window.

    Prism (2.77) holds a grouping stage's input watermark at its buffered elements' timestamps.
    With Beam's SlidingWindows, elements buffered for a window still open carry timestamps before
    the end of the window that just closed, so a late firing of the closed window never became
    ready and late revisions were lost in live streams. One element per window, stamped at that
    window's last millisecond, holds the watermark only where that window itself ends.

    The panes of one bundle are summed per (key, window) here and emitted when the bundle ends:
    the combiner lifting that Prism does not do for triggered windows. Each window then costs one
    element per bundle, not one per pane (size/period of them), through SlidingHistograms.
    """

    def __init__(self, size_us: int, period_us: int, reported_until_us: int | None = None) -> None:
        self._size_us = size_us
        self._period_us = period_us
        # After a restart, windows ending at or before this were reported by the previous run.
        self._reported_until_us = reported_until_us

    def start_bundle(self) -> None:
        self._parts: dict[SlideKey, list[Histogram]] = {}

    def process(
        self, element: tuple[PaneKey, Histogram | None], pane: Any = beam.DoFn.WindowParam
    ) -> None:
        key, counts = element
        if counts is None:
            return
        pane_start = pane.start.micros
        first = pane_start - self._size_us + self._period_us
        if self._reported_until_us is not None:
            first = max(first, self._first_unreported(first))
        parts = self._parts
        for window_start in range(first, pane_start + 1, self._period_us):
            slot = (key, window_start)
            window_parts = parts.get(slot)
            if window_parts is None:
                parts[slot] = [counts]
            else:
                window_parts.append(counts)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        parts, self._parts = self._parts, {}
        for (key, window_start), window_parts in parts.items():
            total = window_parts[0] if len(window_parts) == 1 else _sum_parts(window_parts)
            end_us = window_start + self._size_us
            # In the window SlidingHistograms will assign it to (by this timestamp) anyway.
            yield WindowedValue(
                ((key, window_start), total),
                Timestamp(micros=end_us - 1000),
                (
                    window.IntervalWindow(
                        Timestamp(micros=end_us - self._period_us), Timestamp(micros=end_us)
                    ),
                ),
            )

    def _first_unreported(self, first: int) -> int:
        assert self._reported_until_us is not None
        unreported = self._reported_until_us - self._size_us + 1  # window end > reported_until
        steps = max(0, -(-(unreported - first) // self._period_us))
        return first + steps * self._period_us


def _sum_parts(parts: list[Histogram]) -> Histogram:
    if not any(isinstance(part, CountsWithOthers) for part in parts):
        return np.sum([counts_of(part) for part in parts], axis=0)
    total = copy_histogram(parts[0])
    for part in parts[1:]:
        total = add_into(total, part)
    return total


class _Revise(beam.DoFn):
    """Turns a window's discarding firings (deltas) into revisions: running totals numbered 0, 1, 2...

    State is per (key, window), all features in one array: each event adds one to every feature's
    slots (a bin, missing or invalid), so a window's revisions are the same for all its features;
    Score splits its totals per feature. Its input is re-windowed (ReviseStamp,
    ReviseWindows) into a window ending at the sliding window's end + allowed_lateness, so the state lives exactly as
    long as the sliding window accepts late data on every runner: Prism (2.77) drops a stateful
    DoFn's state as soon as the watermark passes its window's end, ignoring allowed lateness, which
    restarted every late revision at 0 with only the late delta. Counting revisions here, not from the runner's pane index, keeps
    them the same on runners that fire an extra closing pane (Prism does, in accumulating mode).
    """

    TOTAL = beam.transforms.userstate.ReadModifyWriteStateSpec("total", beam.coders.PickleCoder())

    def __init__(self, slots: FeatureSlots) -> None:
        self._slots = slots

    def process(
        self,
        element: tuple[SlideKey, tuple[Histogram | None, bool] | Histogram | None],
        total_state: Any = beam.DoFn.StateParam(TOTAL),
    ) -> Iterator[tuple[SlideKey, Histogram, int]]:
        (key, window_start), value = element
        delta: Histogram | None
        if isinstance(value, tuple):
            delta, first_firing = value
        else:  # an element of a job from before the first-firing flag (Dataflow --update)
            delta, first_firing = value, False
        if delta is None or not counts_of(delta).any():
            return
        # The window's first (on-time) firing has no earlier total: skip the state read, a
        # blocking round trip to the runner per (key, window) that bounded many-key jobs.
        previous = None if first_firing else total_state.read()
        if previous is None:
            total, revision = copy_histogram(delta), 0
        else:
            total, revision = add_into(copy_histogram(previous[0]), delta), previous[1] + 1
        total_state.write((total, revision))
        # All features together: Score splits them and computes q-values across them.
        yield (key, window_start), total, revision


class _StampAtReviseEnd(beam.DoFn):
    """Re-stamps a sliding window's firing at end + allowed_lateness - 1 ms (later, never earlier),
    and marks the window's first firing (on time, pane index 0) for Revise: the pane info does
    not survive the re-windowing. Anything else, an unknown pane info included, is not first."""

    def __init__(self, allowed_lateness_us: int) -> None:
        self._lateness_us = allowed_lateness_us

    def process(
        self,
        element: tuple[SlideKey, Histogram | None],
        sliding: Any = beam.DoFn.WindowParam,
        pane: Any = beam.DoFn.PaneInfoParam,
    ) -> Iterator[Any]:
        slide_key, delta = element
        first_firing = bool(
            pane.is_first and pane.index == 0 and pane.timing == PaneInfoTiming.ON_TIME
        )
        yield TimestampedValue(
            (slide_key, (delta, first_firing)),
            Timestamp(micros=sliding.end.micros + self._lateness_us - 1000),
        )


class BaselineUpdates(Protocol):
    """A source of newer baselines for a running job (kldrift.io.baselines.BaselineTopic)."""

    @property
    def location(self) -> str:
        """Where the baselines come from (for logs)."""
        ...

    def poll(self) -> Baseline | None:
        """A baseline not handed out before, or None; cheap when called per window."""
        ...


class _Score(beam.DoFn):
    """A window's counts against the baseline -> one DriftReport per feature, q-values across them.

    The baseline is the one given at construction, or the newest one `updates` handed out that
    has the job's bins (panes are binned with them); one with other bins is rejected and logged.
    Not a side input: Flink checkpoints of the operator state holding a side input fail
    (ClassCastException in the portable runner's state copy), so the job never checkpoints.
    """

    def __init__(
        self,
        config: PipelineConfig,
        feature_bins: list[FeatureBins],
        baseline: Baseline,
        updates: BaselineUpdates | None = None,
    ) -> None:
        self._config = config
        self._feature_bins = feature_bins
        self._initial = baseline
        self._updates = updates
        self._size_us = config.window.size_us
        self._slots = feature_slots(feature_bins)
        self._by_baseline: dict[str, list[FeatureReference]] = {}

    def setup(self) -> None:
        self._reports = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "reports")
        self._drift = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "windows_drifted")
        self._swapped = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "baselines_swapped")
        self._rejected = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "baselines_rejected")
        self._current: Baseline | None = None

    def _baseline(self) -> Baseline:
        current = self._current or self._initial
        if self._updates is None:
            return current
        try:
            candidate = self._updates.poll()
            if candidate is None or candidate.id == current.id:
                return current
            differs = bins_differ(self._feature_bins, resolve_bins(self._config, candidate))
            if differs is not None:
                raise BaselineMismatch(f"feature {differs!r}: its bins differ from the job's")
        except (BaselineError, BaselineMismatch) as err:
            self._rejected.inc()
            _LOG.error(
                "baseline %s rejected, keeping %s: %s", self._updates.location, current.id[:12], err
            )
            return current
        _LOG.warning(
            "baseline swapped: %s -> %s (from %s)",
            current.id[:12],
            candidate.id[:12],
            self._updates.location,
        )
        self._swapped.inc()
        self._current = candidate
        return candidate

    def _references(self, baseline: Baseline) -> list[FeatureReference]:
        cached = self._by_baseline.get(baseline.id)
        if cached is None:
            bins = resolve_bins(self._config, baseline)
            cached = feature_references(bins, baseline, self._config.drift.smoothing)
            self._by_baseline = {baseline.id: cached}
        return cached

    def process(
        self,
        element: tuple[SlideKey, Histogram, int],
    ) -> Iterator[DriftReport]:
        (key, window_start_us), histogram, revision = element
        baseline = self._baseline()
        reports = window_reports(
            pipeline=self._config.name,
            key=key,
            window_start=_datetime(Timestamp(micros=window_start_us)),
            window_end=_datetime(Timestamp(micros=window_start_us + self._size_us)),
            revision=revision,
            counts=counts_of(histogram),
            slots=self._slots,
            references=self._references(baseline),
            drift_spec=self._config.drift,
            baseline_id=baseline.id,
            other_values=others_of(histogram),
        )
        for report in reports:
            self._reports.inc()
            if report.drift:
                self._drift.inc()
            yield report


def _datetime(moment: Timestamp) -> datetime:
    return datetime.fromtimestamp(moment.micros / 1_000_000, tz=UTC)


def _rfc3339_us(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1_000_000, tz=UTC).isoformat()


class SlidingKLDivergence(beam.PTransform):
    """The composite users call: EventBatch -> {"reports": DriftReport, "dead_letters": DeadLetter}.

    `baseline` is checked against `config` at construction: a mismatch raises BaselineMismatch
    naming the feature before any pipeline starts. `baseline_updates` (optional) hands the running
    job newer baselines with the same bins; each report names the `baseline_id` it was scored with.
    """

    def __init__(
        self,
        config: PipelineConfig,
        baseline: Baseline,
        baseline_updates: BaselineUpdates | None = None,
        resume: ResumePoint | None = None,
    ) -> None:
        super().__init__()
        self._config = config
        self._baseline = baseline
        self._feature_bins = resolve_bins(config, baseline)
        self._updates = baseline_updates
        self._resume = resume

    @property
    def _reported_until_us(self) -> int | None:
        """After a restart: windows whose end + allowed_lateness <= the floor were reported."""
        if self._resume is None:
            return None
        return self._resume.floor_us - self._config.window.allowed_lateness_us

    def expand(self, batches: beam.PCollection[EventBatch]) -> dict[str, beam.PCollection]:
        spec = self._config.window
        period = Duration(micros=spec.period_us)
        lateness = spec.allowed_lateness_us
        binned = batches | "Bin" >> beam.ParDo(
            _BinBatch(self._config, self._feature_bins, self._resume)
        ).with_outputs(DEAD_LETTERS, main="pane_counts")
        windows = (
            binned.pane_counts
            | "PaneHistograms"
            >> _WindowedSum(
                window.FixedWindows(period),
                # Panes stay open until their last sliding window closes.
                allowed_lateness_us=lateness + spec.size_us,
            )
            | "PaneToWindows"
            >> beam.ParDo(
                _PaneToWindows(spec.size_us, spec.period_us, self._reported_until_us)
            ).with_output_types(_WINDOW_ELEMENT)
            # Standard WindowFns only (Flink's Java side rejects pickled Python ones). Elements are
            # stamped at their sliding window's last ms, so FixedWindows(period) gives the window
            # [start + size - period, start + size): the same end (firing) as [start, start + size).
            | "SlidingHistograms"
            >> _WindowedSum(window.FixedWindows(period), allowed_lateness_us=lateness)
            # Revise's state window ends at end + allowed_lateness: restamp to its last ms, then
            # FixedWindows(period) offset by lateness % period has a boundary exactly there.
            | "ReviseStamp"
            >> beam.ParDo(_StampAtReviseEnd(lateness)).with_output_types(_WINDOW_ELEMENT)
            | "ReviseWindows"
            >> beam.WindowInto(
                window.FixedWindows(period, offset=Timestamp(micros=lateness % spec.period_us))
            )
            | "Revise" >> beam.ParDo(_Revise(feature_slots(self._feature_bins)))
        )
        reports = windows | "Score" >> beam.ParDo(
            _Score(self._config, self._feature_bins, self._baseline, self._updates)
        ).with_output_types(DriftReport)
        return {REPORTS: reports, DEAD_LETTERS: binned[DEAD_LETTERS]}


class _WindowedSum(beam.PTransform):
    """Window, then sum counts per key; each firing emits only what arrived since the last one."""

    def __init__(self, windowfn: window.WindowFn, allowed_lateness_us: int) -> None:
        super().__init__()
        self._windowfn = windowfn
        self._allowed_lateness = Duration(micros=allowed_lateness_us)

    def expand(self, counts: beam.PCollection) -> beam.PCollection:
        return (
            counts
            | "Window"
            >> beam.WindowInto(
                self._windowfn,
                trigger=trigger.AfterWatermark(late=trigger.AfterCount(1)),
                accumulation_mode=trigger.AccumulationMode.DISCARDING,
                allowed_lateness=self._allowed_lateness,
            )
            | "Sum" >> beam.CombinePerKey(SumCounts())
        )
