"""`kldrift replay`: the streaming composite over a bounded file, in event time, to a sorted file."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import apache_beam as beam

from kldrift import metrics
from kldrift.events import DeadLetter, dead_letter_json
from kldrift.io.files import ReadRecordBatches, WriteSortedLines, require_paths
from kldrift.pipeline.options import pipeline_options
from kldrift.schemas.baseline import Baseline
from kldrift.schemas.config import PipelineConfig
from kldrift.schemas.report import DriftReport, WindowSummary
from kldrift.transforms.batches import DEAD_LETTERS, REPORTS, SUMMARIES, SlidingKLFromBatches
from kldrift.transforms.decode import DecodeRecords


@dataclass(frozen=True)
class ReplaySummary:
    reports: int
    dead_letters: int
    events_binned: int


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def report_sort_key(report: DriftReport | WindowSummary) -> tuple:
    # The window start as integer microseconds (the same order as the datetime): Beam's default
    # coder pickles a datetime, once per report and shuffle.
    start_us = (report.window_start - _EPOCH) // _MICROSECOND
    feature = report.feature if isinstance(report, DriftReport) else ""
    return (start_us, report.key or "", feature, report.revision)


def build_replay(
    pipeline: beam.Pipeline,
    config: PipelineConfig,
    baseline: Baseline,
    paths: list[str],
    output: str,
    dead_letter_output: str | None,
    summary_output: str | None = None,
) -> None:
    outputs = (
        pipeline
        | "Read" >> ReadRecordBatches(paths)
        | "DecodeRecords" >> DecodeRecords(config)
        | "SlidingKLDivergence" >> SlidingKLFromBatches(config, baseline, single_firing=True)
    )
    _ = (
        outputs[REPORTS]
        | "ReportLines" >> beam.Map(lambda r: (report_sort_key(r), r.to_json_bytes()))
        | "WriteReports" >> WriteSortedLines(output)
    )
    if summary_output is not None:
        _ = (
            outputs[SUMMARIES]
            | "SummaryLines" >> beam.Map(lambda s: (report_sort_key(s), s.to_json_bytes()))
            | "WriteSummaries" >> WriteSortedLines(summary_output)
        )
    if dead_letter_output is not None:
        _ = (
            outputs[DEAD_LETTERS]
            | "DeadLetterLines" >> beam.Map(_dead_letter_line)
            | "WriteDeadLetters" >> WriteSortedLines(dead_letter_output)
        )


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
) -> ReplaySummary:
    """Replay the events of `input_pattern`: reports to `output` (one JSON per line, sorted by
    window, key, feature), and optionally dead letters and window summaries to their files."""
    paths = require_paths(input_pattern)
    pipeline = beam.Pipeline(options=pipeline_options(beam_args, streaming=False))
    build_replay(pipeline, config, baseline, paths, output, dead_letter_output, summary_output)
    result = pipeline.run()
    result.wait_until_finish()
    return ReplaySummary(
        reports=_counter(result, metrics.REPORTS),
        dead_letters=_counter(result, metrics.RECORDS_DEAD_LETTERED),
        events_binned=_counter(result, metrics.EVENTS_BINNED),
    )


def _counter(result: beam.runners.runner.PipelineResult, name: str) -> int:
    metric_filter = beam.metrics.MetricsFilter().with_namespace(metrics.NAMESPACE).with_name(name)
    query = result.metrics().query(metric_filter)
    return sum(c.committed or c.attempted or 0 for c in query["counters"])
