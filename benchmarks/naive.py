"""The obvious Beam pipeline a user would write first, for comparison with `kldrift replay`.

ReadFromText -> json.loads per event -> event-time timestamp -> SlidingWindows(size, period) ->
one (key, feature) -> bin element per feature per event -> CombinePerKey into a histogram per
(key, feature, window) -> KL against the smoothed baseline (scipy) -> WriteToText.

Written to be reasonable, not a straw man: bisect for numeric bins, a dict for categories, a dict
accumulator, scipy for KL, the same runner (Prism, LOOPBACK) as kldrift. What it does not do is
what kldrift does differently: batching events, vectorised binning, counting each event once per
period pane instead of once per sliding window (SlidingWindows assigns each event to size/period
windows).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io import ReadFromText, WriteToText
from apache_beam.transforms.window import SlidingWindows, TimestampedValue
from scipy.stats import entropy

from kldrift.local.runners import local_runner_args
from kldrift.pipeline.options import pipeline_options
from kldrift.schemas.baseline import Baseline
from kldrift.schemas.config import PipelineConfig


class _Feature:
    """One feature: how to read it from an event and which bin its value falls in."""

    def __init__(self, name: str, edges: Sequence[float] | None, categories: Sequence[str] | None):
        self.name = name
        self.path = name.split(".")
        self.edges = list(edges) if edges is not None else None
        self.index = {c: i for i, c in enumerate(categories)} if categories is not None else None
        self.n_bins = len(self.edges) + 1 if self.edges is not None else len(self.index or {}) + 1

    def value(self, event: dict[str, Any]) -> Any:
        value: Any = event
        for part in self.path:
            value = value.get(part) if isinstance(value, dict) else None
        return value

    def bin(self, value: Any) -> int:
        """The bin index; n_bins for a missing or unusable value."""
        if value is None:
            return self.n_bins
        if self.edges is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                return self.n_bins
            return bisect.bisect_right(self.edges, value)
        assert self.index is not None
        return self.index.get(value, self.n_bins - 1) if isinstance(value, str) else self.n_bins


def _features(baseline: Baseline, names: Sequence[str]) -> list[_Feature]:
    return [_Feature(f.name, f.edges, f.categories) for f in (baseline.feature(n) for n in names)]


class Histogram(beam.CombineFn):
    """bin index -> count, as a dict."""

    def create_accumulator(self) -> dict[int, int]:
        return {}

    def add_input(self, accumulator: dict[int, int], bin_index: int) -> dict[int, int]:
        accumulator[bin_index] = accumulator.get(bin_index, 0) + 1
        return accumulator

    def merge_accumulators(self, accumulators: Any) -> dict[int, int]:
        merged: dict[int, int] = {}
        for accumulator in accumulators:
            for bin_index, count in accumulator.items():
                merged[bin_index] = merged.get(bin_index, 0) + count
        return merged

    def extract_output(self, accumulator: dict[int, int]) -> dict[int, int]:
        return accumulator


class _BinEvent(beam.DoFn):
    def __init__(self, features: list[_Feature], key_field: str) -> None:
        self._features = features
        self._key_field = key_field

    def process(self, event: dict[str, Any]) -> Iterator[tuple[tuple[str, str], int]]:
        key = event[self._key_field]
        for feature in self._features:
            yield (key, feature.name), feature.bin(feature.value(event))


class _KL(beam.DoFn):
    """A window's histogram against the baseline (smoothed like kldrift's) -> one JSON line."""

    def __init__(self, baseline: Baseline, names: Sequence[str], smoothing: float) -> None:
        self._q = {}
        for name in names:
            counts = np.asarray(baseline.feature(name).counts, dtype=np.float64)
            self._q[name] = (counts + smoothing) / (counts.sum() + len(counts) * smoothing)

    def process(
        self, element: tuple[tuple[str, str], dict[int, int]], window: Any = beam.DoFn.WindowParam
    ) -> Iterator[str]:
        (key, feature), histogram = element
        q = self._q[feature]
        counts = np.zeros(len(q))
        for bin_index, count in histogram.items():
            if bin_index < len(q):
                counts[bin_index] = count
        total = counts.sum()
        kl = float(entropy(counts, q, base=2)) if total > 0 else None
        yield json.dumps(
            {
                "key": key,
                "feature": feature,
                "window_start": float(window.start),
                "count": int(total),
                "kl_bits": kl,
            }
        )


def build_naive(
    pipeline: beam.Pipeline,
    config: PipelineConfig,
    baseline: Baseline,
    input_path: str,
    output: str,
) -> None:
    names = [f.name for f in config.features]
    features = _features(baseline, names)
    time_field = config.event_time_field
    key_field = config.key_field or ""
    _ = (
        pipeline
        | "Read" >> ReadFromText(input_path)
        | "Parse" >> beam.Map(json.loads)
        | "EventTime" >> beam.Map(lambda e: TimestampedValue(e, e[time_field]))
        | "Sliding" >> beam.WindowInto(SlidingWindows(config.window.size, config.window.period))
        | "Bin" >> beam.ParDo(_BinEvent(features, key_field))
        | "Histogram" >> beam.CombinePerKey(Histogram())
        | "KL" >> beam.ParDo(_KL(baseline, names, config.drift.smoothing))
        | "Write" >> WriteToText(output, shard_name_template="")
    )


def run_naive(
    config: PipelineConfig,
    baseline: Baseline,
    input_path: str,
    output: str,
    beam_args: Sequence[str] = (),
) -> None:
    """Run the naive pipeline to completion on the default runner (Prism)."""
    options = pipeline_options(local_runner_args(beam_args), streaming=False)
    pipeline = beam.Pipeline(options=options)
    build_naive(pipeline, config, baseline, input_path, output)
    pipeline.run().wait_until_finish()
