"""Panes: count arrays summed per key and window (SumCounts), or key blocks summed per shard and
window (SumBlocks: PaneHistograms, and SlidingHistograms again over sliding-window stamps); each
firing emits only what arrived since the last one."""

from __future__ import annotations

from collections.abc import Iterable

import apache_beam as beam
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Duration

from kldrift.key_blocks import KeyBlock, sum_blocks
from kldrift.other_values import Histogram, add_into, copy_histogram
from kldrift.transforms.histogram_coder import (
    HistogramCoder,
    HistogramHint,
    KeyBlockCoder,
    KeyBlockHint,
)

PaneKey = str | None
"""The value of key_field (None without one): the grouping key of pane histograms."""


@beam.typehints.with_input_types(HistogramHint)
@beam.typehints.with_output_types(HistogramHint)
class SumCounts(beam.CombineFn):
    """Sums count arrays (bins, missing, invalid), with the raw `__other__` values some carry
    (kldrift.other_values). The accumulator is an int64 array, a CountsWithOthers, or None; sums
    and accumulators cross the runner with HistogramCoder."""

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

    def get_accumulator_coder(self) -> HistogramCoder:
        return HistogramCoder()


@beam.typehints.with_input_types(KeyBlockHint)
@beam.typehints.with_output_types(KeyBlockHint)
class SumBlocks(beam.CombineFn):
    """Sums key blocks per key (kldrift.key_blocks.sum_blocks): the accumulator is a KeyBlock or
    None; sums and accumulators cross the runner with KeyBlockCoder."""

    def create_accumulator(self) -> KeyBlock | None:
        return None

    def add_input(self, accumulator: KeyBlock | None, block: KeyBlock | None) -> KeyBlock | None:
        if block is None:
            return accumulator
        return block if accumulator is None else sum_blocks([accumulator, block])

    def merge_accumulators(self, accumulators: Iterable[KeyBlock | None]) -> KeyBlock | None:
        blocks = [a for a in accumulators if a is not None]
        return sum_blocks(blocks) if blocks else None

    def extract_output(self, accumulator: KeyBlock | None) -> KeyBlock | None:
        return accumulator

    def get_accumulator_coder(self) -> KeyBlockCoder:
        return KeyBlockCoder()


class WindowedSum(beam.PTransform):
    """Window, then sum the key blocks per shard (SumBlocks); each firing emits only what arrived
    since the last one (steps "Window" and "Sum")."""

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
            | "Sum" >> beam.CombinePerKey(SumBlocks())
        )
