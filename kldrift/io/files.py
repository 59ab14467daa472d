"""Bounded file sources (JSON lines or CSV, read in batches) and small sorted-file sinks."""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindows

from kldrift.events import RecordBatch
from kldrift.exceptions import InputNotFound

BATCH_LINES = 4096
PROGRESS_EVERY_S = 5.0


def match_paths(pattern: str) -> list[str]:
    """Files matching a path or glob (local, gs://, s3://, hdfs://); empty if none."""
    results = FileSystems.match([pattern])[0].metadata_list
    return sorted(m.path for m in results)


def require_paths(pattern: str) -> list[str]:
    """Files matching `pattern`; InputNotFound (a user error) when there are none."""
    paths = match_paths(pattern)
    if not paths:
        raise InputNotFound(f"no file matches --input {pattern}")
    return paths


def _csv_cell(text: str | list[str]) -> Any:
    if isinstance(text, list):  # the cells past the header's, under the key null
        return [_csv_cell(cell) for cell in text]
    if text == "":
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


class _ReadBatches(beam.DoFn):
    """One file -> RecordBatch chunks. CSV rows become JSON objects (numbers where they parse)."""

    def __init__(self, batch_lines: int = BATCH_LINES) -> None:
        self._batch_lines = batch_lines

    def process(self, path: str) -> Iterator[RecordBatch]:
        lines = self._csv_lines(path) if path.endswith(".csv") else self._json_lines(path)
        values: list[bytes] = []
        offsets: list[int] = []
        last_report = time.monotonic()
        for line_number, value in lines:
            values.append(value)
            offsets.append(line_number)
            if len(values) >= self._batch_lines:
                yield RecordBatch(values, offsets, source=path)
                values, offsets = [], []
                if time.monotonic() - last_report > PROGRESS_EVERY_S:
                    print(f"kldrift: read {line_number} lines of {path}", file=sys.stderr)
                    last_report = time.monotonic()
        if values:
            yield RecordBatch(values, offsets, source=path)

    @staticmethod
    def _json_lines(path: str) -> Iterator[tuple[int, bytes]]:
        with FileSystems.open(path) as handle:
            for line_number, line in enumerate(handle, start=1):
                value = line.rstrip(b"\r\n")
                if value.strip():
                    yield line_number, value

    @staticmethod
    def _csv_lines(path: str) -> Iterator[tuple[int, bytes]]:
        """Rows as JSON objects. A row with bytes that are not UTF-8 yields its cells as read (not
        JSON, so a `not_json` dead letter); no cell is too large (csv's default limit: 128 KiB)."""
        csv.field_size_limit(2**31 - 1)
        with FileSystems.open(path) as handle:
            text = io.TextIOWrapper(handle, encoding="utf-8", errors="surrogateescape", newline="")
            reader = csv.DictReader(text)
            for row in reader:
                event = {name: _csv_cell(cell or "") for name, cell in row.items()}
                try:
                    value = json.dumps(event, ensure_ascii=False).encode("utf-8")
                except UnicodeEncodeError:
                    cells = (c if isinstance(c, str) else ",".join(c) for c in row.values() if c)
                    value = ",".join(cells).encode("utf-8", "surrogateescape")
                yield reader.line_num, value


class ReadRecordBatches(beam.PTransform):
    """Files (already matched) -> RecordBatch elements of up to `batch_lines` records."""

    def __init__(self, paths: list[str], batch_lines: int = BATCH_LINES) -> None:
        super().__init__()
        self._paths = paths
        self._batch_lines = batch_lines

    def expand(self, pipeline: beam.pvalue.PBegin) -> beam.PCollection[RecordBatch]:
        return (
            pipeline
            | "Paths" >> beam.Create(self._paths)
            | "ReadBatches"
            >> beam.ParDo(_ReadBatches(self._batch_lines)).with_output_types(RecordBatch)
        )


class _WriteSortedLines(beam.DoFn):
    def __init__(self, path: str) -> None:
        self._path = path

    def process(self, keyed_lines: list[tuple[Any, bytes]]) -> Iterator[int]:
        keyed_lines.sort(key=lambda pair: pair[0])
        with FileSystems.create(self._path) as handle:
            for _, line in keyed_lines:
                handle.write(line + b"\n")
        yield len(keyed_lines)


class WriteSortedLines(beam.PTransform):
    """(sort_key, line bytes) pairs -> one file, sorted by key. For bounded, modest outputs."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path

    def expand(self, keyed_lines: beam.PCollection) -> beam.PCollection[int]:
        return (
            keyed_lines
            | "Global" >> beam.WindowInto(GlobalWindows())
            | "Gather" >> beam.combiners.ToList()
            | "Write" >> beam.ParDo(_WriteSortedLines(self._path))
        )
