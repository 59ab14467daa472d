"""Revisions: a sliding window's discarding firings (deltas) -> running totals numbered 0, 1, 2...

ReviseStamp (StampAtReviseEnd) restamps each firing at the window's end + allowed_lateness - 1 ms,
ReviseWindows puts it in FixedWindows(period, offset) ending there, and Revise (stateful) keeps the
window's totals (per key of its shard) in that window's state.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam import typehints
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfoTiming

from kldrift.key_blocks import KeyBlock, block_of
from kldrift.other_values import Histogram, add_into, copy_histogram
from kldrift.transforms.bin import FeatureSlots
from kldrift.transforms.histogram_coder import KeyBlockHint
from kldrift.transforms.sliding import SLIDE_KEY, SlideKey

STAMPED_DELTA = typehints.Tuple[SLIDE_KEY, typehints.Tuple[KeyBlockHint, bool]]
"""ReviseStamp's output, ((shard, window_start_us), (delta, first_firing)): a deterministic key
coder for the stateful Revise, KeyBlockCoder for the delta block."""
REVISION = typehints.Tuple[SLIDE_KEY, KeyBlockHint, typehints.List[int]]
"""Revise's output, ((shard, window_start_us), totals, revisions): each key's running total (a
KeyBlock with KeyBlockCoder) and, per row, its revision."""

KeyTotals = dict[str | None, tuple[Histogram, int]]
"""Revise's state per (shard, window): each key's running total and its last revision."""


class Revise(beam.DoFn):
    """Turns a window's discarding firings (deltas) into revisions: running totals numbered 0, 1, 2...
    per key.

    State is per (shard, window): each key's total, all features in one array (each event adds one
    to every feature's slots, a bin, missing or invalid, so a window's revisions are the same for
    all its features; Score splits its totals per feature). A delta block reports only the keys it
    holds: late data for one key is a revision of that key alone, numbered from its own last one.

    Invariant: the state's window ends at the sliding window's end + allowed_lateness (ReviseStamp,
    ReviseWindows), so the state lives as long as the sliding window accepts late data, also on a
    runner that drops a stateful DoFn's state at its window's end whatever the allowed lateness
    (Prism 2.77, which does not implement allowed lateness: apache/beam#31463).
    Invariant: revisions are counted here, not from the runner's pane index, so they agree on
    runners that fire an extra closing pane (Prism, in accumulating mode; see apache/beam#36142).
    """

    # Pickled: the state is a dict of each key's total and revision, read back only on late data.
    TOTAL = beam.transforms.userstate.ReadModifyWriteStateSpec("total", beam.coders.PickleCoder())

    def __init__(self, slots: FeatureSlots) -> None:
        self._slots = slots

    def process(
        self,
        element: tuple[SlideKey, tuple[KeyBlock | None, bool]],
        total_state: Any = beam.DoFn.StateParam(TOTAL),
    ) -> Iterator[tuple[SlideKey, KeyBlock, list[int]]]:
        slide_key, (delta, first_firing) = element
        if delta is None:
            return
        occupied = np.flatnonzero(delta.counts.any(axis=1)).tolist()
        if not occupied:
            return
        # The window's first (on-time) firing has no earlier totals: skip the state read, a
        # blocking round trip to the runner per (shard, window).
        totals: KeyTotals = {} if first_firing else (total_state.read() or {})
        histograms: list[tuple[str | None, Histogram]] = []
        revisions: list[int] = []
        for row in occupied:
            key = delta.keys[row]
            previous = totals.get(key)
            part = delta.histogram(row)
            if previous is None:
                total, revision = copy_histogram(part), 0
            else:
                total, revision = add_into(copy_histogram(previous[0]), part), previous[1] + 1
            totals[key] = (total, revision)
            histograms.append((key, total))
            revisions.append(revision)
        total_state.write(totals)
        # All features together: Score splits them and computes q-values across them.
        yield slide_key, block_of(histograms), revisions


class StampAtReviseEnd(beam.DoFn):
    """Re-stamps a sliding window's firing at end + allowed_lateness - 1 ms (later, never earlier),
    and marks the window's first firing (on time, pane index 0) for Revise: the pane info does
    not survive the re-windowing. Anything else, an unknown pane info included, is not first."""

    def __init__(self, allowed_lateness_us: int) -> None:
        self._lateness_us = allowed_lateness_us

    def process(
        self,
        element: tuple[SlideKey, KeyBlock | None],
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
    firing is revision 0. Keeping no state saves the runner two state requests per (shard, window)
    (Prism: about half its CPU with 1,000 keys; benchmarks/PRISM_PROFILE.md) and the keyed
    shuffle a stateful step needs.

    Invariant: a firing not flagged first (a late one) would need the window's earlier total; it
    fails the job, naming the window, rather than reporting a wrong revision."""

    def process(
        self, element: tuple[SlideKey, tuple[KeyBlock | None, bool]]
    ) -> Iterator[tuple[SlideKey, KeyBlock, list[int]]]:
        (shard, window_start), (delta, first_firing) = element
        if delta is None:
            return
        occupied = np.asarray(delta.counts.any(axis=1))
        if not occupied.any():
            return
        if not first_firing:
            seen = occupied.tolist()
            keys = [key for key, row_seen in zip(delta.keys, seen, strict=True) if row_seen]
            raise RuntimeError(
                f"window starting {Timestamp(micros=window_start).to_rfc3339()} of key "
                f"{keys[0]!r} fired again in a batch job: revisions need the streaming Revise step"
            )
        if not occupied.all():
            rows = np.flatnonzero(occupied).tolist()
            delta = block_of((delta.keys[row], delta.histogram(row)) for row in rows)
        yield (shard, window_start), delta, [0] * len(delta)
