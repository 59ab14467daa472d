"""Bounded file sources (JSON lines, CSV, Parquet, Avro; read in batches) and small sorted-file
sinks."""

from __future__ import annotations

import csv
import io
import json
import mmap
import os
import pickle
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from itertools import repeat
from pathlib import Path
from typing import Any, NamedTuple

import apache_beam as beam
import msgspec
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.transforms.window import GlobalWindow, GlobalWindows
from apache_beam.utils.windowed_value import WindowedValue

from kldrift.events import RecordBatch
from kldrift.exceptions import InputNotFound, UserError
from kldrift.io import (
    FILE_FORMATS,
    batch_coder,  # noqa: F401  # registers the batch coders
)
from kldrift.io.parquet_avro import avro_chunks, check_header, parquet_chunks

BATCH_LINES = 4096
READ_BYTES = 1 << 20
"""How much of a JSON lines file is read at a time."""
PROGRESS_EVERY_S = 5.0

_BY_EXTENSION = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".avro": "avro"}


def match_paths(pattern: str) -> list[str]:
    """Files matching a path or glob (local, gs://, s3://, hdfs://); empty if none."""
    results = FileSystems.match([pattern])[0].metadata_list
    return sorted(m.path for m in results)


def require_paths(pattern: str, file_format: str | None = None) -> list[str]:
    """Files matching `pattern`; InputNotFound (a user error) when there are none, UnreadableInput
    naming the first Parquet or Avro file that does not start as one."""
    if file_format is not None and file_format not in FILE_FORMATS:
        raise UserError(f"--format {file_format}: not one of {', '.join(FILE_FORMATS)}")
    paths = match_paths(pattern)
    if not paths:
        raise InputNotFound(f"no file matches --input {pattern}")
    for path in paths:
        check_header(path, format_of(path, file_format))
    return paths


def require_writable(path: str, flag: str) -> None:
    """UserError, before any job starts, when a local output path cannot be written: a directory,
    a folder that does not exist, or one this user cannot write to. URLs are left to their
    filesystem."""
    if "://" in path:
        return
    target = Path(path)
    folder = target.parent
    if target.is_dir():
        raise UserError(f"{flag} {path}: is a directory, not a file")
    if not folder.is_dir():
        raise UserError(f"{flag} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise UserError(f"{flag} {path}: not writable")


def format_of(path: str, file_format: str | None = None) -> str:
    """A file's format: `file_format` if given, else by its extension (JSON lines by default)."""
    if file_format is not None:
        return file_format
    name = path.rsplit("/", 1)[-1].lower()
    dot = name.rfind(".")
    return _BY_EXTENSION.get(name[dot:], "jsonl") if dot >= 0 else "jsonl"


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
    """One file -> RecordBatch chunks. CSV rows become JSON objects (numbers where they parse);
    Parquet and Avro records come as the objects themselves (dicts), which EventDecoder takes as
    parsed JSON."""

    def __init__(self, batch_lines: int = BATCH_LINES, file_format: str | None = None) -> None:
        self._batch_lines = batch_lines
        self._file_format = file_format

    def process(self, path: str) -> Iterator[RecordBatch]:
        file_format = format_of(path, self._file_format)
        if file_format in ("parquet", "avro"):
            chunks = parquet_chunks if file_format == "parquet" else avro_chunks
            for records, rows in chunks(path, self._batch_lines):
                yield RecordBatch(records, rows, source=path)  # type: ignore[arg-type]
            return
        if file_format != "csv":
            for line_numbers, lines in _json_line_batches(path, self._batch_lines):
                yield RecordBatch(lines, line_numbers, source=path)
            return
        csv_rows = self._csv_lines(path)
        values: list[bytes] = []
        offsets: list[int] = []
        last_report = time.monotonic()
        for line_number, value in csv_rows:
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


def _json_line_batches(path: str, batch_lines: int) -> Iterator[tuple[list[int], list[bytes]]]:
    """The non-blank lines of a JSON lines file (without their line ends), at most `batch_lines`
    at a time, with their line numbers (from 1, blank lines counted): the file is read a block
    at a time and each block's lines are split and sorted out without a Python step per line."""
    pending_offsets: list[int] = []
    pending: list[bytes] = []
    last_report = time.monotonic()
    for first, lines in _line_blocks(path):
        values = list(map(bytes.rstrip, lines, repeat(b"\r\n", len(lines))))
        blank = np.fromiter(map(len, map(bytes.strip, values)), np.int64, len(values)) == 0
        if blank.any():
            kept = np.flatnonzero(~blank).tolist()
            values = [values[i] for i in kept]
            offsets = [first + i for i in kept]
        else:
            offsets = list(range(first, first + len(values)))
        pending_offsets += offsets
        pending += values
        while len(pending) >= batch_lines:
            yield pending_offsets[:batch_lines], pending[:batch_lines]
            del pending_offsets[:batch_lines], pending[:batch_lines]
            if time.monotonic() - last_report > PROGRESS_EVERY_S:
                print(f"kldrift: read {first + len(lines) - 1} lines of {path}", file=sys.stderr)
                last_report = time.monotonic()
    if pending:
        yield pending_offsets, pending


def _line_blocks(path: str) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the first line, the lines without their \\n) per block of the file read, as
    iterating over the file would have given them."""
    line_number = 1
    rest: list[bytes] = []  # the line the last block ended in, in pieces
    with FileSystems.open(path) as handle:
        while block := handle.read(READ_BYTES):
            lines = block.split(b"\n")
            if len(lines) == 1:
                rest.append(block)
                continue
            if rest:
                lines[0] = b"".join([*rest, lines[0]])
            tail = lines.pop()
            rest = [tail] if tail else []
            yield line_number, lines
            line_number += len(lines)
    if rest:
        yield line_number, [b"".join(rest)]


class ReadRecordBatches(beam.PTransform):
    """Files (already matched) -> RecordBatch elements of up to `batch_lines` records; each file
    read as `file_format` (FILE_FORMATS), or as its extension says."""

    def __init__(
        self, paths: list[str], batch_lines: int = BATCH_LINES, file_format: str | None = None
    ) -> None:
        super().__init__()
        self._paths = paths
        self._batch_lines = batch_lines
        self._file_format = file_format

    def expand(self, pipeline: beam.pvalue.PBegin) -> beam.PCollection[RecordBatch]:
        return (
            pipeline
            | "Paths" >> beam.Create(self._paths)
            | "ReadBatches"
            >> beam.ParDo(_ReadBatches(self._batch_lines, self._file_format)).with_output_types(
                RecordBatch
            )
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


KeyedLines = tuple[list[Any], bytes]
"""A block's lines' sort keys, and its lines as one text: one line per key, in the keys' order,
each ended by a newline (so no line holds one)."""


def pairs_keyed_lines(pairs: list[tuple[Any, bytes]]) -> KeyedLines:
    """A block given as (sort key, line) pairs, as KeyedLines."""
    return [key for key, _ in pairs], b"".join(line + b"\n" for _, line in pairs)


class _SpillBlocks(beam.DoFn):
    """Blocks -> one spill per bundle beside the output, two files: the bundle's lines sorted by
    key (`<spill>.lines`) and its index (`<spill>.index`, read back by this job only: the lines'
    count, lengths and sort keys, see _write_index); the spill's path leaves when the bundle
    ends. A bundle that fails leaves files no path names: _WriteSortedSpills deletes them with
    the others. The lines stay slices of their blocks' texts until written (no copy of each)."""

    def __init__(self, prefix: str, keyed_lines: Callable[[Any], KeyedLines]) -> None:
        self._prefix = prefix
        self._keyed_lines = keyed_lines

    def start_bundle(self) -> None:
        self._keys: list[Any] = []
        self._lines: list[memoryview] = []

    def process(self, block: Any) -> Iterator[str]:
        keys, text = self._keyed_lines(block)
        lines = _text_lines(text)
        if len(lines) != len(keys):
            raise ValueError(f"a block of {len(keys)} sort keys has {len(lines)} lines")
        self._keys.extend(keys)
        self._lines.extend(lines)
        return iter(())

    def finish_bundle(self) -> Iterator[WindowedValue]:
        keys, lines = self._keys, self._lines
        self._keys, self._lines = [], []
        if not keys:
            return
        order = sorted(range(len(keys)), key=keys.__getitem__)  # stable, as the pairs' sort was
        lines = [lines[i] for i in order]
        spill = f"{self._prefix}{uuid.uuid4().hex}"
        _write_views(f"{spill}.lines", lines)
        _write_index(
            f"{spill}.index", np.fromiter(map(len, lines), np.int64), [keys[i] for i in order]
        )
        yield WindowedValue(spill, GlobalWindow().max_timestamp(), (GlobalWindow(),))


def _text_lines(text: bytes) -> list[memoryview]:
    """Each line of `text` (lines ended by a newline), its newline included, as a slice of it."""
    if not text:
        return []
    ends = np.flatnonzero(np.frombuffer(text, np.uint8) == _NEWLINE) + 1
    if not len(ends) or ends[-1] != len(text):
        raise ValueError("a block's text does not end with a newline")
    starts = np.concatenate(([0], ends[:-1]))
    view = memoryview(text)
    return [view[start:end] for start, end in zip(starts.tolist(), ends.tolist(), strict=True)]


_NEWLINE = ord("\n")


def _write_views(path: str, lines: list[memoryview]) -> None:
    """`lines` (each with its newline) into a new file at `path`: a local one with writev, many
    lines per system call; another filesystem's through Beam's FileSystems, joined in chunks."""
    if "://" in path:
        with FileSystems.create(path) as handle:
            for first in range(0, len(lines), _JOINED_LINES):
                handle.write(b"".join(lines[first : first + _JOINED_LINES]))
        return
    with open(path, "wb") as output:
        for first in range(0, len(lines), _WRITEV_LINES):
            _write_all(output.fileno(), lines[first : first + _WRITEV_LINES])


_JOINED_LINES = 4096
"""Lines joined per write to a non-local file: no buffer of a whole output's size is built."""
_WRITEV_LINES = 512
"""Lines per writev call (under IOV_MAX, 1024)."""


class _SpillIndex(NamedTuple):
    """A spill's lines' sort keys and lengths (with their newlines), in the file's order."""

    keys: list[Any]
    lengths: np.ndarray


def _write_index(path: str, lengths: np.ndarray, keys: list[Any]) -> None:
    """A spill's index: its line count (8 bytes), the lines' lengths (int64 each), then their sort
    keys: MessagePack after a b"m" (5x faster than pickle for replay's (int, str, str, int) keys),
    or pickled after a b"p" for keys MessagePack cannot hold (a lone surrogate, a big int)."""
    try:
        encoded = b"m" + _KEYS_ENCODER.encode(keys)
    except (TypeError, ValueError, OverflowError):
        encoded = b"p" + pickle.dumps(keys, protocol=pickle.HIGHEST_PROTOCOL)
    with FileSystems.create(path) as handle:
        handle.write(np.int64(len(lengths)).tobytes())
        handle.write(np.asarray(lengths, np.int64).tobytes())
        handle.write(encoded)


def _spill_count(spill: str) -> int:
    """How many lines a spill holds (its index's first 8 bytes: the keys are not read)."""
    with FileSystems.open(f"{spill}.index") as handle:
        return _index_count(handle.read(8))


def _index_count(index: bytes) -> int:
    return int(np.frombuffer(index[:8], np.int64)[0])


def _spill_index(spill: str) -> _SpillIndex:
    with FileSystems.open(f"{spill}.index") as handle:
        data = handle.read()
    count = _index_count(data)
    lengths = np.frombuffer(data[8 : 8 * (count + 1)], np.int64)
    at = 8 * (count + 1)
    kind, encoded = data[at : at + 1], memoryview(data)[at + 1 :]
    keys = _KEYS_DECODER.decode(encoded) if kind == b"m" else pickle.loads(encoded)
    return _SpillIndex(keys, lengths)


_KEYS_ENCODER = msgspec.msgpack.Encoder()
_KEYS_DECODER = msgspec.msgpack.Decoder(list[tuple])
"""Sort keys come back as tuples, as they were written (those inside them as lists: the order
of lists is the order of tuples)."""


class _WriteSortedSpills(beam.DoFn):
    def __init__(self, path: str, prefix: str) -> None:
        self._path = path
        self._prefix = prefix

    def process(self, spills: list[str]) -> Iterator[int]:
        if len(spills) == 1:  # one bundle: its lines are the output, sorted already
            lines = _spill_count(spills[0])
            _move_into(f"{spills[0]}.lines", self._path)
        else:
            lines = _merge_spills(spills, self._path)
        delete_spills(self._prefix)  # every spill of the job, those of failed bundles too
        yield lines


def _move_into(spill_lines: str, path: str) -> None:
    """A spill's lines become the output: renamed, when the output is a URL, a regular file or
    not there yet; otherwise (a link, a device such as /dev/stdout, a pipe) written through it,
    as any other output is."""
    local = "://" not in path
    if (
        not local
        or not os.path.lexists(path)
        or (os.path.isfile(path) and not os.path.islink(path))
    ):
        FileSystems.rename([spill_lines], [path])
        return
    with FileSystems.open(spill_lines) as source, FileSystems.create(path) as output:
        shutil.copyfileobj(source, output, _COPY_BYTES)


_COPY_BYTES = 1 << 20


def _merged_order(indexes: list[_SpillIndex]) -> list[int]:
    """The order of the spills' lines (numbered across the spills, in their order) by key."""
    keys = [key for index in indexes for key in index.keys]
    # Sorted runs one after the other: the (stable) sort merges them.
    return sorted(range(len(keys)), key=keys.__getitem__)


def _merge_spills(spills: list[str], path: str) -> int:
    """The lines of several spills (each sorted by key), sorted by key, into `path`; how many.
    Local spills are mapped, not read: their lines are written to `path` straight from the
    mappings (no copy of the text in this process: the output is the size of the job's reports,
    hundreds of MB at 10,000 keys). A mapping closes when its last line is dropped."""
    indexes = [_spill_index(spill) for spill in spills]
    order = _merged_order(indexes)
    lines: list[memoryview] = []
    for spill, index in zip(spills, indexes, strict=True):
        lines.extend(_spill_lines(f"{spill}.lines", index.lengths))
    _write_views(path, [lines[i] for i in order])
    return len(order)


def _spill_lines(path: str, lengths: np.ndarray) -> list[memoryview]:
    """Each line of the spill at `path` (their lengths given), as a slice of its mapping when it
    is local, else of its bytes."""
    if not len(lengths):
        return []
    if "://" in path:
        with FileSystems.open(path) as handle:
            view = memoryview(handle.read())
    else:
        with open(path, "rb") as handle:
            view = memoryview(mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    return [view[start:end] for start, end in zip(starts.tolist(), ends.tolist(), strict=True)]


def _write_all(fd: int, buffers: list[memoryview]) -> None:
    """os.writev until every byte of `buffers` is written (a write may stop short)."""
    while buffers:
        written = os.writev(fd, buffers)
        done = 0
        while done < len(buffers) and written >= len(buffers[done]):
            written -= len(buffers[done])
            done += 1
        buffers = buffers[done:]
        if buffers and written:
            buffers[0] = buffers[0][written:]


def delete_spills(prefix: str) -> int:
    """Delete the spill files under `prefix` (a WriteSortedBlocks' `spill_prefix`); how many."""
    (matched,) = FileSystems.match([f"{prefix}*"])
    paths = [found.path for found in matched.metadata_list]
    if paths:
        FileSystems.delete(paths)
    return len(paths)


class WriteSortedBlocks(beam.PTransform):
    """Blocks of lines -> one file, sorted by key: WriteSortedLines for blocks of lines (a block
    of reports), whose lines do not cross the runner one by one: each bundle spills its lines,
    sorted, to a file beside the output, and one step merges them into the output (one bundle's
    spill is the output as it is) and deletes the spills. `keyed_lines` turns a block into its
    lines and their sort keys (by default a block is a list of (sort key, line) pairs), inside
    the spilling step. For bounded outputs that fit in one worker's memory."""

    def __init__(
        self, path: str, keyed_lines: Callable[[Any], KeyedLines] = pairs_keyed_lines
    ) -> None:
        super().__init__()
        self._keyed_lines = keyed_lines
        # Beam's local filesystem matches absolute patterns only: a relative output's spills
        # would not be found, so not deleted.
        self._path = path if "://" in path else os.path.abspath(path)
        self.spill_prefix = f"{self._path}.spill-{uuid.uuid4().hex[:12]}-"
        """Where this write's spill files go: a job that fails before its last step leaves them,
        and its runner deletes them with `delete_spills`."""

    def expand(self, blocks: beam.PCollection) -> beam.PCollection[int]:
        prefix = self.spill_prefix
        return (
            blocks
            | "Global" >> beam.WindowInto(GlobalWindows())
            | "Spill" >> beam.ParDo(_SpillBlocks(prefix, self._keyed_lines)).with_output_types(str)
            | "Gather" >> beam.combiners.ToList()
            | "Write" >> beam.ParDo(_WriteSortedSpills(self._path, prefix))
        )
