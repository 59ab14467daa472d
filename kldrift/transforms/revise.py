"""Revisions: a sliding window's discarding firings (deltas) -> running totals numbered 0, 1, 2...

ReviseStamp (StampAtReviseEnd) restamps each firing at the window's end + allowed_lateness - 1 ms,
ReviseWindows puts it in FixedWindows(period, offset) ending there, and Revise (stateful) keeps the
window's total in that window's state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam import typehints
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfoTiming

from kldrift.other_values import Histogram, add_into, copy_histogram, counts_of
from kldrift.transforms.bin import FeatureSlots
from kldrift.transforms.histogram_coder import HistogramHint
from kldrift.transforms.sliding import SLIDE_KEY, SlideKey

STAMPED_DELTA = typehints.Tuple[SLIDE_KEY, typehints.Tuple[HistogramHint, bool]]
"""ReviseStamp's output, ((key, window_start_us), (delta, first_firing)): a deterministic key
coder for the stateful Revise, HistogramCoder for the delta."""
REVISION = typehints.Tuple[SLIDE_KEY, HistogramHint, int]
"""Revise's output, ((key, window_start_us), total, revision), the total with HistogramCoder."""


class Revise(beam.DoFn):
    """Turns a window's discarding firings (deltas) into revisions: running totals numbered 0, 1, 2...

    State is per (key, window), all features in one array: each event adds one to every feature's
    slots (a bin, missing or invalid), so a window's revisions are the same for all its features;
    Score splits its totals per feature.

    Invariant: the state's window ends at the sliding window's end + allowed_lateness (ReviseStamp,
    ReviseWindows), so the state lives as long as the sliding window accepts late data, also on a
    runner that drops a stateful DoFn's state at its window's end whatever the allowed lateness
    (Prism 2.77, which does not implement allowed lateness: apache/beam#31463).
    Invariant: revisions are counted here, not from the runner's pane index, so they agree on
    runners that fire an extra closing pane (Prism, in accumulating mode; see apache/beam#36142).
    """

    # Still pickled: another coder would make a running job's state unreadable after an update,
    # for about 2% of the worker's time with 1,000 keys (README "Coders, and upgrading").
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


class StampAtReviseEnd(beam.DoFn):
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


class FirstFiring(beam.DoFn):
    """Revise for a batch job (`kldrift replay`), without state: there the watermark passes a
    window's end only once all input is read, so every window fires once, on time, and that
    firing is revision 0. Keeping no state saves the runner two state requests per (key, window)
    (Prism: about half its CPU with 1,000 keys; benchmarks/PRISM_PROFILE.md) and the keyed
    shuffle a stateful step needs.

    Invariant: a firing not flagged first (a late one) would need the window's earlier total; it
    fails the job, naming the window, rather than reporting a wrong revision."""

    def process(
        self, element: tuple[SlideKey, tuple[Histogram | None, bool]]
    ) -> Iterator[tuple[SlideKey, Histogram, int]]:
        (key, window_start), (delta, first_firing) = element
        if delta is None or not counts_of(delta).any():
            return
        if not first_firing:
            raise RuntimeError(
                f"window starting {Timestamp(micros=window_start).to_rfc3339()} of key {key!r} "
                "fired again in a batch job: revisions need the streaming Revise step"
            )
        yield (key, window_start), delta, 0
