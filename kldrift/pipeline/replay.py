"""`kldrift replay`: the streaming composite over a bounded file, in event time, to a sorted file."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any

import apache_beam as beam

from kldrift import metrics
from kldrift.events import DeadLetter, dead_letter_json
from kldrift.io.files import (
    ReadRecordBatches,
    WriteSortedBlocks,
    WriteSortedLines,
    delete_spills,
    require_paths,
)
from kldrift.pipeline.heap import older_objects_frozen
from kldrift.pipeline.options import pipeline_options
from kldrift.schemas.baseline import Baseline
from kldrift.schemas.config import PipelineConfig
from kldrift.schemas.report import DriftReport, ReportRecord
from kldrift.schemas.report_wire import DriftReportWire, ReportWire, json_text
from kldrift.transforms.batches import DEAD_LETTERS, REPORTS, SUMMARIES, SlidingKLFromBatches
from kldrift.transforms.decode import DecodeRecords


@dataclass(frozen=True)
class ReplaySummary:
    """What a replay's counters say: every record read is binned or dead-lettered, once."""

    reports: int
    dead_letters: int
    events_binned: int
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    """Records dead-lettered per reason (kldrift.events.DEAD_LETTER_REASONS): they sum to
    dead_letters."""
    feature_missing: dict[str, int] = field(default_factory=dict)
    """Per feature of the config: events binned without its value (absent, null, NaN)."""
    feature_invalid: dict[str, int] = field(default_factory=dict)
    """Per feature of the config: events binned with a value of a type its kind does not take."""

    @property
    def records_read(self) -> int:
        return self.events_binned + self.dead_letters

    def emptiness_lines(self) -> list[str]:
        """A line per dead-letter reason (the most frequent first), then one per feature with no
        value in any event binned."""
        lines = metrics.dead_letter_lines(self.dead_letter_reasons)
        for feature, missing in self.feature_missing.items():
            invalid = self.feature_invalid.get(feature, 0)
            line = metrics.empty_feature_line(feature, self.events_binned, missing, invalid)
            if line is not None:
                lines.append(line)
        return lines

    def empty_features(self) -> list[str]:
        """The features with no value in a bin in any event binned (none if none was binned)."""
        return [
            name
            for name, missing in self.feature_missing.items()
            if metrics.no_value_in_any(
                self.events_binned, missing, self.feature_invalid.get(name, 0)
            )
        ]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def report_sort_keys(records: Sequence[ReportRecord | ReportWire]) -> list[tuple]:
    """Each record's sort key in replay's output: (window start, key, feature, revision). The
    window start as integer microseconds (the same order as the datetime: Beam's default coder
    pickles a datetime), computed once per distinct datetime of the records (a block's: a few
    windows)."""
    fields: Iterable[tuple[datetime, str | None, str, int]]
    if all(isinstance(record, _FEATURE_RECORDS) for record in records):
        fields = map(_FEATURE_SORT_FIELDS, records)
    else:
        fields = (_sort_fields(record) for record in records)
    starts: dict[datetime, int] = {}
    keys = []
    for start, key, feature, revision in fields:
        start_us = starts.get(start)
        if start_us is None:
            start_us = starts[start] = (start - _EPOCH) // _MICROSECOND
        keys.append((start_us, key or "", feature, revision))
    return keys


def _sort_fields(record: ReportRecord | ReportWire) -> tuple[datetime, str | None, str, int]:
    feature = record.feature if isinstance(record, _FEATURE_RECORDS) else ""
    return record.window_start, record.key, feature, record.revision


_FEATURE_SORT_FIELDS = attrgetter("window_start", "key", "feature", "revision")
_FEATURE_RECORDS = (DriftReport, DriftReportWire)


def build_replay(
    pipeline: beam.Pipeline,
    config: PipelineConfig,
    baseline: Baseline,
    paths: list[str],
    output: str,
    dead_letter_output: str | None,
    summary_output: str | None = None,
    input_format: str | None = None,
) -> list[str]:
    """The replay job's steps on `pipeline`; returns the spill prefixes of its sorted writes (for
    `delete_spills` when the job fails before its last step)."""
    outputs = (
        pipeline
        | "Read" >> ReadRecordBatches(paths, file_format=input_format)
        | "DecodeRecords" >> DecodeRecords(config)
        | "SlidingKLDivergence"
        >> SlidingKLFromBatches(
            config, baseline, single_firing=True, summaries=summary_output is not None
        )
    )
    # Reports and summaries come in blocks (a list per shard of keys and window): one element
    # for many lines, spilled to files rather than sent through the runner line by line.
    # The lines are written where they are spilled (no step, no element, between).
    writes = [WriteSortedBlocks(output, keyed_lines)]
    _ = outputs[REPORTS] | "WriteReports" >> writes[0]
    if summary_output is not None:
        writes.append(WriteSortedBlocks(summary_output, keyed_lines))
        _ = outputs[SUMMARIES] | "WriteSummaries" >> writes[1]
    if dead_letter_output is not None:
        _ = (
            outputs[DEAD_LETTERS]
            | "DeadLetterLines" >> beam.Map(_dead_letter_line)
            | "WriteDeadLetters" >> WriteSortedLines(dead_letter_output)
        )
    return [write.spill_prefix for write in writes]


def keyed_lines(records: list[Any]) -> tuple[list[tuple], bytes]:
    """A block of DriftReports or WindowSummaries as its JSON lines' sort keys and its JSON lines
    (each ended by a newline, one text)."""
    return report_sort_keys(records), json_text(records)


def _dead_letter_line(dead_letter: DeadLetter) -> tuple[tuple, bytes]:
    return (dead_letter.source, dead_letter.offset), dead_letter_json(dead_letter)


def run_replay(
    config: PipelineConfig,
    baseline: Baseline,
    input_pattern: str,
    output: str,
    dead_letter_output: str | None = None,
    beam_args: Sequence[str] = (),
    summary_output: str | None = None,
    input_format: str | None = None,
) -> ReplaySummary:
    """Replay the events of `input_pattern`: reports to `output` (one JSON per line, sorted by
    window, key, feature), and optionally dead letters and window summaries to their files.
    `input_format`: one of kldrift.io.files.FILE_FORMATS, else each file's extension decides."""
    paths = require_paths(input_pattern, input_format)
    pipeline = beam.Pipeline(options=pipeline_options(beam_args, streaming=False))
    spill_prefixes = build_replay(
        pipeline,
        config,
        baseline,
        paths,
        output,
        dead_letter_output,
        summary_output,
        input_format,
    )
    try:
        with older_objects_frozen():
            result = pipeline.run()
            result.wait_until_finish()
    finally:  # a failed or interrupted job leaves no spill file beside its outputs
        for prefix in spill_prefixes:
            delete_spills(prefix)
    counters = _counters(result)
    features = [f.name for f in config.features]
    return ReplaySummary(
        reports=counters.get(metrics.REPORTS, 0),
        dead_letters=counters.get(metrics.RECORDS_DEAD_LETTERED, 0),
        events_binned=counters.get(metrics.EVENTS_BINNED, 0),
        dead_letter_reasons=_with_prefix(counters, metrics.DEAD_LETTERS_BY_REASON),
        feature_missing={f: counters.get(metrics.FEATURE_MISSING + f, 0) for f in features},
        feature_invalid={f: counters.get(metrics.FEATURE_INVALID + f, 0) for f in features},
    )


def _counters(result: beam.runners.runner.PipelineResult) -> dict[str, int]:
    """The job's kldrift counters by name, summed over steps (committed, else attempted)."""
    metric_filter = beam.metrics.MetricsFilter().with_namespace(metrics.NAMESPACE)
    totals: dict[str, int] = {}
    for counter in result.metrics().query(metric_filter)["counters"]:
        name = counter.key.metric.name
        totals[name] = totals.get(name, 0) + (counter.committed or counter.attempted or 0)
    return totals


def _with_prefix(counters: dict[str, int], prefix: str) -> dict[str, int]:
    return {
        name.removeprefix(prefix): value
        for name, value in counters.items()
        if name.startswith(prefix) and value > 0
    }
