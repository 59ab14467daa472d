"""Figures without Beam or Kafka: the numpy limit and what batch tools do (recompute per window)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import numpy as np

from kldrift.binning import FeatureBins
from kldrift.events import EventDecoder, RecordBatch, field_getter
from kldrift.schemas.config import PipelineConfig

BATCH = 4096
"""Events per batch, as kldrift's file reader batches them (kldrift.io.files.BATCH_LINES)."""


def feature_bins(config: PipelineConfig) -> list[FeatureBins]:
    bins = []
    for spec in config.features:
        if spec.kind == "numeric":
            assert spec.edges is not None
            bins.append(FeatureBins.numeric(spec.name, spec.edges))
        else:
            assert spec.categories is not None
            bins.append(FeatureBins.categorical(spec.name, spec.categories))
    return bins


def numpy_limit_s(lines: Sequence[bytes], config: PipelineConfig) -> float:
    """Seconds to parse every line with the fastest JSON decoder kldrift uses (msgspec, as
    EventDecoder does) and count every feature with FeatureBins.count."""
    bins = feature_bins(config)
    getters = [field_getter(b.name) for b in bins]
    totals = [np.zeros(b.n_bins + 2, dtype=np.int64) for b in bins]
    fast_loads = msgspec.json.Decoder().decode
    started = time.perf_counter()
    for first in range(0, len(lines), BATCH):
        events = [fast_loads(line) for line in lines[first : first + BATCH]]
        for index, (b, get) in enumerate(zip(bins, getters, strict=True)):
            totals[index] += b.count([get(e) for e in events])
    elapsed = time.perf_counter() - started
    assert all(int(t.sum()) == len(lines) for t in totals)
    return elapsed


def decode_bin_s(lines: Sequence[bytes], config: PipelineConfig) -> float:
    """Seconds for kldrift's own per-batch core without Beam: EventDecoder.decode_columns (JSON,
    event time, key, the features' fields) then count_groups per (key, pane) for every feature,
    as its Bin step does."""
    bins = feature_bins(config)
    decoder = EventDecoder(config)
    period_us = config.window.period_us
    started = time.perf_counter()
    for first in range(0, len(lines), BATCH):
        values = list(lines[first : first + BATCH])
        batch = decoder.decode_columns(RecordBatch(values, list(range(len(values)))))
        pane = (batch.event_time_us // period_us) * period_us
        key_index = {k: i for i, k in enumerate(sorted(set(batch.keys), key=str))}
        key_codes = np.fromiter((key_index[k] for k in batch.keys), np.int64, len(batch.keys))
        groups, group_of = np.unique(np.stack([key_codes, pane]), axis=1, return_inverse=True)
        for b in bins:
            b.count_groups(batch.column(b.name), group_of.reshape(-1), groups.shape[1])
    return time.perf_counter() - started


def recompute_window_s(
    lines: Sequence[bytes], times: np.ndarray, config: PipelineConfig, windows: int = 10
) -> tuple[float, int]:
    """Median seconds to rebuild one window's histograms from its raw events (json.loads + bin
    every feature with FeatureBins.count), over `windows` consecutive windows one period apart in
    the middle of the data; and the median number of events per window."""
    bins = feature_bins(config)
    getters = [field_getter(b.name) for b in bins]
    size, period = config.window.size, config.window.period
    middle = float(np.median(times))
    first_start = (middle // period) * period - size
    durations, counts = [], []
    for i in range(windows):
        start = first_start + i * period
        lo, hi = np.searchsorted(times, [start, start + size], side="left")
        window_lines = lines[lo:hi]
        started = time.perf_counter()
        events = [json.loads(line) for line in window_lines]
        for b, get in zip(bins, getters, strict=True):
            b.count([get(e) for e in events])
        durations.append(time.perf_counter() - started)
        counts.append(len(window_lines))
    return float(np.median(durations)), int(np.median(counts))


def evidently_window_s(
    lines: Sequence[bytes],
    times: np.ndarray,
    config: PipelineConfig,
    training: Sequence[dict[str, Any]],
) -> tuple[float | None, str]:
    """Seconds for evidently's data-drift preset with the KL stat test on one window (the middle
    one) against the training data, with how it went. (None, why) when evidently is not
    importable: it is not a kldrift dependency and is never installed by the benchmarks."""
    try:
        import pandas as pd
    except ImportError:
        return None, "evidently not importable (pandas missing)"
    try:
        try:  # evidently >= 0.7
            from evidently import Report
            from evidently.presets import DataDriftPreset
        except ImportError:  # evidently 0.4-0.6
            from evidently.metric_preset import DataDriftPreset
            from evidently.report import Report
    except ImportError:
        return None, "evidently not importable (not installed; not a kldrift dependency)"
    names = [f.name for f in config.features]
    size = config.window.size
    start = (float(np.median(times)) // config.window.period) * config.window.period
    lo, hi = np.searchsorted(times, [start, start + size], side="left")

    def frame(events: Sequence[dict[str, Any]]) -> Any:
        return pd.DataFrame({n: [field_getter(n)(e) for e in events] for n in names})

    reference = frame(training)
    try:
        started = time.perf_counter()
        current = frame([json.loads(line) for line in lines[lo:hi]])
        report = Report([DataDriftPreset(stattest="kl_div")])
        try:
            report.run(reference_data=reference, current_data=current)
        except TypeError:
            report.run(current, reference)
        return time.perf_counter() - started, "evidently DataDriftPreset(stattest='kl_div')"
    except Exception as err:  # an evidently version this code does not know
        return None, f"evidently failed: {type(err).__name__}: {str(err)[:120]}"
