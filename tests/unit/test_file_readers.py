"""Parquet and Avro files read without a runner: the format by extension or `--format`, one-line
errors naming an unreadable file, row numbers across chunks, and timestamps read as the event time
JSON gives the same instant (epoch ms or µs, RFC 3339 text)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from unittest.mock import patch

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _file_formats import config, events, write_avro, write_jsonl, write_parquet
from hypothesis import given, settings
from hypothesis import strategies as st

from kldrift.binning import FeatureBins
from kldrift.events import EventDecoder, RecordBatch
from kldrift.exceptions import UnreadableInput, UserError
from kldrift.io import files
from kldrift.io.files import _ReadBatches, format_of, require_paths
from kldrift.io.parquet_avro import avro_chunks, parquet_chunks
from kldrift.schemas.config import parse_config

ROWS = events(60)


@pytest.mark.parametrize(
    ("path", "given", "expected"),
    [
        ("training/part-0.parquet", None, "parquet"),
        ("gs://bucket/x.PQ", None, "parquet"),
        ("s3://bucket/part.avro", None, "avro"),
        ("rows.csv", None, "csv"),
        ("events.jsonl", None, "jsonl"),
        ("events.ndjson", None, "jsonl"),
        ("events", None, "jsonl"),
        ("dump.bin", "parquet", "parquet"),
    ],
)
def test_the_format_is_the_extensions_unless_given(path: str, given: str, expected: str) -> None:
    assert format_of(path, given) == expected


@pytest.mark.parametrize("suffix", ["parquet", "avro"])
def test_a_file_not_of_its_format_fails_in_one_line_naming_it(tmp_path: Path, suffix: str) -> None:
    path = write_jsonl(tmp_path / f"events.{suffix}", ROWS[:3])
    with pytest.raises(UnreadableInput) as raised:
        require_paths(str(path))
    message = str(raised.value)
    assert message.startswith(f"{path}: not a") and "\n" not in message


def test_format_given_overrides_the_extension(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "events.jsonl", ROWS[:3])
    assert require_paths(str(path), "parquet") == [str(path)]
    with pytest.raises(UnreadableInput, match="not an Avro container file"):
        require_paths(str(path), "avro")
    with pytest.raises(UserError, match="--format xml: not one of jsonl, csv, parquet, avro"):
        require_paths(str(path), "xml")


def test_a_truncated_parquet_file_fails_naming_it(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "events.parquet", ROWS)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # the footer (schema, row groups) is gone
    with pytest.raises(UnreadableInput, match=r"events\.parquet: not a Parquet file"):
        require_paths(str(path))


@pytest.mark.parametrize("write", [write_parquet, write_avro])
def test_rows_come_in_chunks_numbered_from_one(tmp_path: Path, write) -> None:
    parquet = write is write_parquet
    path = write(tmp_path / f"events.{'parquet' if parquet else 'avro'}", ROWS[:50])
    chunks = parquet_chunks if parquet else avro_chunks
    read = list(chunks(str(path), 16))
    assert [len(records) for records, _ in read] == [16, 16, 16, 2]
    assert [row for _, rows in read for row in rows] == list(range(1, 51))
    records = [record for chunk, _ in read for record in chunk]
    # Nested records as dicts, nulls as None, the enum and the dictionary column as text.
    assert [r["payload"] for r in records] == [row["payload"] for row in ROWS[:50]]
    assert [r["latency_ms"] for r in records] == [row["latency_ms"] for row in ROWS[:50]]
    assert [r["device"] for r in records] == [row["device"] for row in ROWS[:50]]


def _event_times(values: list, config_overrides: dict | None = None) -> list[int]:
    job = parse_config({**config(Path("b.json")), **(config_overrides or {})})
    batch = RecordBatch(values, list(range(1, len(values) + 1)))
    decoded = EventDecoder(job).decode(batch)
    assert not decoded.dead_letters, decoded.dead_letters
    return decoded.event_time_us.tolist()


def test_timestamps_are_the_event_time_of_the_same_epoch_value(tmp_path: Path) -> None:
    # 2023-11-14T22:13:20.123456789Z in every Parquet unit and zone, and Avro's two logical types.
    ns = 1_700_000_000_123_456_789
    columns = {
        "ts_ns_utc": pa.array([ns], pa.timestamp("ns", tz="UTC")),
        "ts_us_paris": pa.array([ns // 1000], pa.timestamp("us", tz="Europe/Paris")),
        "ts_ms_naive": pa.array([ns // 1_000_000], pa.timestamp("ms")),
        "ts_s": pa.array([ns // 1_000_000_000], pa.timestamp("s", tz="UTC")),
    }
    path = tmp_path / "times.parquet"
    pq.write_table(pa.table(columns), path)
    (record,), _ = next(parquet_chunks(str(path), 10))
    expected_us = {
        "ts_ns_utc": 1_700_000_000_123_456,  # nanoseconds truncated to the µs
        "ts_us_paris": 1_700_000_000_123_456,  # the instant, whatever the zone
        "ts_ms_naive": 1_700_000_000_123_000,  # naive: UTC
        "ts_s": 1_700_000_000_000_000,
    }
    for name, micros in expected_us.items():
        assert _event_times([{**record, "model": "a"}], {"event_time_field": name}) == [micros]
    # The same instants as JSON gives them: epoch ms (event_time_unit ms) and RFC 3339 text.
    assert _event_times([json.dumps({"ts": 1_700_000_000_123, "model": "a"}).encode()]) == [
        1_700_000_000_123_000
    ]
    text = json.dumps({"ts": "2023-11-14T22:13:20.123456Z", "model": "a"}).encode()
    assert _event_times([text]) == [1_700_000_000_123_456]

    schema = {
        "type": "record",
        "name": "T",
        "fields": [
            {"name": "ms", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "us", "type": {"type": "long", "logicalType": "timestamp-micros"}},
            {"name": "day", "type": {"type": "int", "logicalType": "date"}},
        ],
    }
    avro = tmp_path / "times.avro"
    moment = datetime(2023, 11, 14, 22, 13, 20, 123456, tzinfo=UTC)
    with avro.open("wb") as handle:
        fastavro.writer(handle, schema, [{"ms": moment, "us": moment, "day": moment.date()}])
    (avro_record,), _ = next(avro_chunks(str(avro), 10))
    for name, micros in {
        "ms": 1_700_000_000_123_000,
        "us": 1_700_000_000_123_456,
        "day": 1_699_920_000_000_000,  # 2023-11-14T00:00:00Z, as the text "2023-11-14" gives
    }.items():
        assert _event_times([{**avro_record, "model": "a"}], {"event_time_field": name}) == [micros]
    assert _event_times([json.dumps({"ts": "2023-11-14", "model": "a"}).encode()]) == [
        1_699_920_000_000_000
    ]


def test_a_parquet_batch_decodes_to_the_json_batchs_events(tmp_path: Path) -> None:
    rows = events(40)
    json_path = write_jsonl(tmp_path / "e.jsonl", rows)
    parquet_path = write_parquet(tmp_path / "e.parquet", rows)
    decoder = EventDecoder(parse_config(config(tmp_path / "b.json")))
    (from_json,) = [decoder.decode(b) for b in _ReadBatches().process(str(json_path))]
    (from_parquet,) = [decoder.decode(b) for b in _ReadBatches().process(str(parquet_path))]
    assert from_parquet.event_time_us.tolist() == from_json.event_time_us.tolist()
    assert from_parquet.keys == from_json.keys and from_parquet.offsets == from_json.offsets
    without_time = [{k: v for k, v in e.items() if k != "ts"} for e in from_parquet.events]
    assert without_time == [{k: v for k, v in e.items() if k != "ts"} for e in from_json.events]


def test_a_decimal_column_bins_as_the_json_number(tmp_path: Path) -> None:
    # Money in a data lake is a decimal: Parquet decimal128 and Avro `decimal` come as Decimals.
    amounts = ["0.50", "1.00", "2.25", "10.00", None]
    path = tmp_path / "amounts.parquet"
    column = pa.array([None if a is None else Decimal(a) for a in amounts], pa.decimal128(9, 2))
    pq.write_table(pa.table({"amount": column}), path)
    (records, _), *_ = list(parquet_chunks(str(path), 10))
    bins = FeatureBins.numeric("amount", [1.0, 2.25])
    from_json = [json.loads(f'{{"amount": {a or "null"}}}')["amount"] for a in amounts]
    assert bins.codes([r["amount"] for r in records]).tolist() == bins.codes(from_json).tolist()
    assert bins.codes(from_json).tolist() == [0, 1, 2, 2, bins.missing_slot]


def test_a_timestamp_past_year_9999_is_an_invalid_event_time(tmp_path: Path) -> None:
    # pyarrow cannot make a datetime of it; the reader must not fail, the record is dead-lettered.
    path = tmp_path / "far.parquet"
    micros = [1_700_000_000_000_000, 253_402_300_800_000_000, None]  # 2023, 10000-01-01, null
    pq.write_table(pa.table({"ts": pa.array(micros, pa.timestamp("us")), "model": ["a"] * 3}), path)
    job = parse_config(config(tmp_path / "b.json"))
    (batch,) = list(_ReadBatches().process(str(path)))
    decoded = EventDecoder(job).decode(batch)
    assert decoded.event_time_us.tolist() == [1_700_000_000_000_000]
    assert [(d.reason, d.offset) for d in decoded.dead_letters] == [
        ("invalid_event_time", 2),
        ("missing_event_time", 3),
    ]


def test_a_corrupt_block_fails_in_one_line_naming_the_file_and_row(tmp_path: Path) -> None:
    # Headers and footers intact (the start-up check passes); the data behind them garbled.
    rows = events()  # 600 rows: 12 kB of Parquet
    parquet = write_parquet(tmp_path / "events.parquet", rows)
    data = bytearray(parquet.read_bytes())
    data[4:3000] = b"\xab" * 2996  # the first row group's page headers
    parquet.write_bytes(bytes(data))
    avro = write_avro(tmp_path / "events.avro", rows)
    data = bytearray(avro.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 300] = b"\xab" * 300
    avro.write_bytes(bytes(data))
    assert require_paths(str(tmp_path / "events.*")) == [str(avro), str(parquet)]
    for path, chunks, what in (
        (parquet, parquet_chunks, "Parquet at row 1"),
        (avro, avro_chunks, "Avro at record"),
    ):
        with pytest.raises(UnreadableInput) as raised:
            list(chunks(str(path), 16))
        message = str(raised.value)
        assert message.startswith(f"{path}: unreadable {what}") and "\n" not in message


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from([b'{"a": 1}', b"", b" ", b"\r", b"\t\x0b", b"x" * 40, b"ab\r\r"])),
    st.sampled_from([b"", b"\n", b"\r\n", b"\n\n"]),
    st.sampled_from([1, 3, 64, 1 << 20]),
    st.sampled_from([1, 2, 5, 4096]),
)
def test_json_lines_are_the_files_lines_whatever_the_block_size(
    tmp_path_factory: pytest.TempPathFactory,
    lines: list[bytes],
    end: bytes,
    read_bytes: int,
    batch_lines: int,
) -> None:
    """Each non-blank line, without its line end, numbered as iterating over the file numbers
    it, in batches of `batch_lines`, whatever the blocks the file is read in."""
    path = tmp_path_factory.mktemp("lines") / "events.jsonl"
    path.write_bytes(b"\n".join(lines) + end)
    with path.open("rb") as handle:
        expected = [
            (number, line.rstrip(b"\r\n"))
            for number, line in enumerate(handle, start=1)
            if line.strip()
        ]
    with patch.object(files, "READ_BYTES", read_bytes):
        batches = list(files._json_line_batches(str(path), batch_lines))
    pairs = [pair for offsets, values in batches for pair in zip(offsets, values, strict=True)]
    assert pairs == expected
    assert [len(offsets) for offsets, _ in batches[:-1]] == [batch_lines] * (len(batches) - 1)
