"""`kldrift baseline`: a Beam batch job that learns bins where the config asks and counts the
training data with the same binning code as streaming."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import apache_beam as beam
import numpy as np
from apache_beam import typehints
from apache_beam.io.filesystems import FileSystems

from kldrift.binning import (
    FeatureBins,
    as_float,
    bins_from_spec,
    category_of,
    feature_values,
    with_joints,
)
from kldrift.events import EventBatch, encodable
from kldrift.io.baselines import read_baseline
from kldrift.io.files import ReadRecordBatches, require_paths
from kldrift.pipeline.options import pipeline_options
from kldrift.schemas.baseline import Baseline, BaselineError
from kldrift.schemas.config import (
    CategoricalFeature,
    FeatureSpec,
    JointFeature,
    NumericFeature,
    PipelineConfig,
)
from kldrift.training import feature_baseline
from kldrift.transforms.decode import DecodeRecords
from kldrift.transforms.histogram_coder import HistogramHint
from kldrift.transforms.panes import SumCounts


def learn_edges(quantiles: Sequence[float]) -> list[float]:
    """Interior quantiles as strictly increasing edges (ties collapse; at least one edge)."""
    values = np.asarray(quantiles, dtype=np.float64)
    interior = np.unique(values[1:-1]) if len(values) > 2 else np.unique(values)
    if len(interior) == 0:
        interior = np.unique(values)[:1]
    return [float(e) for e in interior]


def learn_categories(counts: Counter, top_k: int) -> list[str]:
    """The top_k most frequent categories; ties by name, so the result is deterministic."""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [name for name, _ in ranked[:top_k]]


def _in_range(batch: EventBatch, start_us: int | None, end_us: int | None) -> EventBatch:
    if start_us is None and end_us is None:
        return batch
    times = batch.event_time_us
    keep = np.ones(len(times), dtype=bool)
    if start_us is not None:
        keep &= times >= start_us
    if end_us is not None:
        keep &= times < end_us
    return batch.take(np.flatnonzero(keep))


def _numeric_samples(batch: EventBatch, names: list[str]) -> Iterator[tuple[str, float]]:
    for name in names:
        codes_source = FeatureBins.numeric(name, [0.0])
        values = batch.column(name)
        codes = codes_source.codes(values)
        usable = codes < codes_source.missing_slot
        for value, ok in zip(values, usable, strict=True):
            # Values past every float (1e400, 10**400) lie in the outer bins whatever the edges.
            if ok and math.isfinite(number := as_float(value)):
                yield name, number


def _category_counts(batch: EventBatch, names: list[str]) -> Iterator[tuple[str, Counter]]:
    for name in names:
        counts: Counter = Counter()
        for value in batch.column(name):
            category = category_of(value)
            # A lone surrogate cannot be a category (it is counted in __other__ when binned).
            if category is not None and (category.isascii() or encodable(category)):
                counts[category] += 1
        yield name, counts


def _merge_counters(counters: Any) -> Counter:
    total: Counter = Counter()
    for counter in counters:
        total.update(counter)
    return total


class _CountFeatures(beam.DoFn):
    def process(
        self, batch: EventBatch, learned: dict[str, FeatureBins]
    ) -> Iterator[tuple[str, np.ndarray]]:
        for name, bins in learned.items():
            yield name, bins.count(feature_values(bins, batch.column))


def _resolve(
    config: PipelineConfig, edges: dict[str, list[float]], cats: dict[str, Counter]
) -> dict[str, FeatureBins]:
    resolved: dict[str, FeatureBins] = {}
    for spec in config.features:
        if isinstance(spec, JointFeature):
            continue  # paired below, from its parts' bins
        fixed = bins_from_spec(spec)
        if fixed is not None:
            resolved[spec.name] = fixed
        elif isinstance(spec, NumericFeature):
            if spec.name not in edges:
                raise BaselineError(f"feature {spec.name!r}: no numeric values to learn edges from")
            resolved[spec.name] = FeatureBins.numeric(spec.name, edges[spec.name])
        else:
            assert spec.top_k is not None
            counts = cats.get(spec.name, Counter())
            if not counts:
                raise BaselineError(f"feature {spec.name!r}: no category values to learn from")
            resolved[spec.name] = FeatureBins.categorical(
                spec.name, learn_categories(counts, spec.top_k)
            )
    every = with_joints(config, resolved)
    return {spec.name: bins for spec, bins in zip(config.features, every, strict=True) if bins}


def build_baseline(
    config: PipelineConfig,
    input_pattern: str,
    output: str,
    *,
    start_us: int | None = None,
    end_us: int | None = None,
    beam_args: Sequence[str] = (),
    input_format: str | None = None,
) -> Baseline:
    """Run the batch job, write the baseline JSON to `output` and return it. `input_format`: one
    of kldrift.io.files.FILE_FORMATS, else each file's extension decides."""
    paths = require_paths(input_pattern, input_format)
    numeric = [f for f in config.features if isinstance(f, NumericFeature) and f.bins is not None]
    categorical = [
        f.name for f in config.features if isinstance(f, CategoricalFeature) and f.top_k is not None
    ]
    source = ",".join(paths)
    options = pipeline_options(beam_args, streaming=False)
    with beam.Pipeline(options=options) as pipeline:
        batches = (
            pipeline
            | "Read" >> ReadRecordBatches(paths, file_format=input_format)
            | "DecodeRecords" >> DecodeRecords(config)
            | "EventRange" >> beam.Map(_in_range, start_us, end_us)
        )
        edges = [
            batches
            | f"Samples[{spec.name}]" >> beam.FlatMap(_numeric_samples, [spec.name])
            | f"Quantiles[{spec.name}]"
            >> beam.ApproximateQuantiles.PerKey(num_quantiles=(spec.bins or 2) + 1)
            for spec in numeric
        ]
        all_edges = (edges or [pipeline | "NoNumeric" >> beam.Create([])]) | beam.Flatten()
        categories = (
            batches
            | "CategoryCounts" >> beam.FlatMap(_category_counts, categorical)
            | "MergeCounts" >> beam.CombinePerKey(_merge_counters)
        )
        learned = (
            pipeline
            | "Start" >> beam.Create([None])
            | "Resolve"
            >> beam.Map(
                lambda _, e, c: _resolve(config, {k: learn_edges(v) for k, v in e.items()}, c),
                beam.pvalue.AsDict(all_edges),
                beam.pvalue.AsDict(categories),
            )
        )
        _ = (
            batches
            | "Count" >> beam.ParDo(_CountFeatures(), beam.pvalue.AsSingleton(learned))
            | "Sum" >> beam.CombinePerKey(SumCounts())
            | "Gather" >> beam.combiners.ToDict()
            | "Assemble"
            >> beam.Map(_assemble, config, beam.pvalue.AsSingleton(learned), source)
            # The counts' hint stated (not read from _assemble's annotation): arrays or None.
            .with_input_types(
                typehints.Dict[str, HistogramHint], typehints.Any, typehints.Any, typehints.Any
            )
            | "Write" >> beam.Map(_write, output)
        )
    return read_baseline(output, None)


def _assemble(
    counts: dict[str, np.ndarray],
    config: PipelineConfig,
    learned: dict[str, FeatureBins],
    source: str,
) -> Baseline:
    features = []
    for spec in config.features:
        bins = learned[spec.name]
        feature_counts = counts.get(spec.name)
        if feature_counts is None:
            feature_counts = np.zeros(bins.n_bins + 2, dtype=np.int64)
        features.append(feature_baseline(bins, feature_counts, "the input", _asked(spec)))
    created_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return Baseline.create(features, source=source, created_at=created_at)


def _asked(spec: FeatureSpec) -> dict[Literal["bins", "top_k"], int] | None:
    """What the config asked of a feature whose bins are learned (recorded in the baseline, so a
    config asking otherwise is refused); None where the config fixes the bins."""
    if isinstance(spec, NumericFeature) and spec.bins is not None:
        return {"bins": spec.bins}
    if isinstance(spec, CategoricalFeature) and spec.top_k is not None:
        return {"top_k": spec.top_k}
    return None


def _write(baseline: Baseline, output: str) -> None:
    with FileSystems.create(output) as handle:
        handle.write(baseline.model_dump_json(indent=2).encode() + b"\n")
