"""PaneToWindows: each pane's key block keyed once per sliding window holding it (size/period of
them), stamped at that window's last millisecond and summed per window within a bundle. SlidingHistograms
(panes.WindowedSum over FixedWindows(period)) then fires each at its sliding window's end."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam import typehints
from apache_beam.transforms import window
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from kldrift import metrics
from kldrift.io import resume
from kldrift.key_blocks import KeyBlock, sum_blocks
from kldrift.transforms.histogram_coder import KeyBlockHint

SlideKey = tuple[int, int]
"""(shard, window start in microseconds): the grouping key of sliding-window key blocks."""

SLIDE_KEY = typehints.Tuple[int, int]
WINDOW_ELEMENT = typehints.Tuple[SLIDE_KEY, KeyBlockHint]
"""((shard, window_start_us), block): typed so the stateful Revise step gets a deterministic key
coder, and the block KeyBlockCoder."""


class PaneToWindows(beam.DoFn):
    """A pane's key block -> one element per sliding window holding the pane (size/period of
    them), the window's start in the key, timestamped at the end of its own window.

    Invariant: an element waiting in SlidingHistograms holds that stage's watermark only at the
    end of its own sliding window, so a closed window's late firing is never held back by the
    elements of windows still open. Prism 2.77 holds a grouping stage's input watermark at its
    buffered elements' timestamps (no Beam issue found, checked 2026-12-01; README "Runner
    notes"), which Beam's SlidingWindows would break.

    Invariant: one element per (shard, window) per bundle reaches SlidingHistograms, whatever
    size/period is: the panes of a bundle are summed here and emitted when it ends, as a lifted
    combiner would; Prism does not lift combiners for count-triggered windows (apache/beam#33881).
    """

    def __init__(
        self,
        size_us: int,
        period_us: int,
        reported_until_us: int | None = None,
        event_slots: int | None = None,
    ) -> None:
        self._size_us = size_us
        self._period_us = period_us
        # After a restart, windows ending at or before this were reported by the previous run.
        self._reported_until_us = reported_until_us
        # The first feature's slots (bins, missing, invalid): each event adds one to exactly one.
        self._event_slots = event_slots

    def setup(self) -> None:
        self._windowed = metrics.counter(metrics.EVENTS_WINDOWED)

    def start_bundle(self) -> None:
        self._parts: dict[SlideKey, list[KeyBlock]] = {}

    def process(
        self, element: tuple[int, KeyBlock | None], pane: Any = beam.DoFn.WindowParam
    ) -> Iterable[WindowedValue]:
        # Emits nothing here: a bundle's parts are summed and emitted in finish_bundle. The
        # iterable return type is what Beam (2.78+) checks a DoFn's process annotation against.
        shard, block = element
        if block is None:
            return ()
        event_slots = getattr(self, "_event_slots", None)  # None in a job pickled before it
        if event_slots:
            self._windowed.inc(int(block.counts[:, :event_slots].sum()))
        pane_start = pane.start.micros
        first = pane_start - self._size_us + self._period_us
        if self._reported_until_us is not None:
            first = max(
                first,
                resume.first_unreported_window(
                    first, self._reported_until_us, self._size_us, self._period_us
                ),
            )
        parts = self._parts
        for window_start in range(first, pane_start + 1, self._period_us):
            slot = (shard, window_start)
            window_parts = parts.get(slot)
            if window_parts is None:
                parts[slot] = [block]
            else:
                window_parts.append(block)
        return ()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        parts, self._parts = self._parts, {}
        for (shard, window_start), window_parts in parts.items():
            total = sum_blocks(window_parts)
            end_us = window_start + self._size_us
            # In the window SlidingHistograms will assign it to (by this timestamp) anyway.
            yield WindowedValue(
                ((shard, window_start), total),
                Timestamp(micros=end_us - 1000),
                (
                    window.IntervalWindow(
                        Timestamp(micros=end_us - self._period_us), Timestamp(micros=end_us)
                    ),
                ),
            )
