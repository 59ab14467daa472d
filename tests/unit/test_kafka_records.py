"""The reader's bulk parse of fetched record batches (kldrift.io.kafka_records) gives the records,
positions and errors kafka-python's own parse gives, on batches built by kafka-python's producer
code (DefaultRecordBatchBuilder, LegacyRecordBatchBuilder) and on one encoded by hand."""

from __future__ import annotations

import random
import struct
from collections import namedtuple
from typing import Any

import crc32c
import pytest
from kafka import codec as kafka_codec
from kafka.consumer.fetcher import ConsumerRecord, Fetcher
from kafka.errors import CorruptRecordError
from kafka.protocol.consumer import IsolationLevel
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.legacy_records import LegacyRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords
from kafka.structs import TopicPartition

from kldrift.io import kafka_records
from kldrift.io.kafka_records import (
    VECTOR_MIN_RECORDS,
    BulkPartitionRecords,
    offsets_and_values,
    vector_records,
    walk_records,
)

TP = TopicPartition("events", 0)
AbortedTransaction = namedtuple("AbortedTransaction", "producer_id first_offset")
CODECS = {
    "none": (0, lambda: True),
    "gzip": (1, kafka_codec.has_gzip),
    "snappy": (2, kafka_codec.has_snappy),
    "lz4": (3, kafka_codec.has_lz4),
    "zstd": (4, kafka_codec.has_zstd),
}
_CRC_AT = struct.calcsize(">qiib")
_ATTRIBUTES_AT = struct.calcsize(">qiibI")


def _v2_batch(
    records: list[tuple[int, bytes | None, bytes | None, list[tuple[str, bytes | None]]]],
    base_offset: int = 0,
    compression: int = 0,
    producer_id: int = -1,
    transactional: bool = False,
) -> bytes:
    """A v2 batch of (offset delta, key, value, headers) records, built by kafka-python's
    producer code, at `base_offset` (the broker's field, outside the CRC)."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=compression,
        is_transactional=transactional,
        producer_id=producer_id,
        producer_epoch=0 if producer_id >= 0 else -1,
        base_sequence=0 if producer_id >= 0 else -1,
        batch_size=1 << 30,
    )
    for delta, key, value, headers in records:
        builder.append(
            delta, timestamp=1_765_000_000_000 + delta, key=key, value=value, headers=headers
        )
    return struct.pack(">q", base_offset) + bytes(builder.build())[8:]


def _control_batch(base_offset: int, producer_id: int, abort: bool) -> bytes:
    """A transaction marker: one record with key (version 0, type 0 abort / 1 commit), the batch's
    control attribute set and its CRC computed again."""
    key = struct.pack(">hh", 0, 0 if abort else 1)
    batch = bytearray(
        _v2_batch([(0, key, b"\x00" * 6, [])], base_offset, 0, producer_id, transactional=True)
    )
    (attributes,) = struct.unpack_from(">h", batch, _ATTRIBUTES_AT)
    struct.pack_into(">h", batch, _ATTRIBUTES_AT, attributes | DefaultRecordBatch.CONTROL_MASK)
    struct.pack_into(">I", batch, _CRC_AT, crc32c.crc32c(bytes(batch[_ATTRIBUTES_AT:])))
    return bytes(batch)


def _random_records(count: int, seed: int, headers: bool = True) -> list[Any]:
    """Records of every kind the reader meets: tombstones, empty and 9 KB values (a 3-byte
    length), null and empty keys, headers with null values, gaps in offsets (compaction)."""
    rng = random.Random(seed)
    records = []
    delta = 0
    for _ in range(count):
        size = rng.choice([0, 1, 60, 64, 130, 9000, -1])
        value = None if size < 0 else rng.randbytes(size)
        key = rng.choice([None, b"", b"model-a", b"k" * 200])
        record_headers = (
            [
                (f"h{i}", None if i == 1 else rng.randbytes(i * 3))
                for i in range(rng.choice([0, 1, 3]))
            ]
            if headers
            else []
        )
        records.append((delta, key, value, record_headers))
        delta += rng.choice([1, 1, 1, 2, 70])
    return records


def _takes(
    cls: type, fetched: bytes, fetch_offset: int, size: int | None, **settings: Any
) -> list[Any]:
    """Each take of `size` records while the fetcher would take (Fetcher._append: while the
    records are not drained): ((offset, value)s, next fetch offset, drained or not); an error as
    (its type, its message)."""
    part = cls(fetch_offset, TP, MemoryRecords(fetched), **settings)
    outcomes: list[Any] = []
    while part:
        try:
            taken = part.take(size)
        except Exception as err:
            outcomes.append((type(err), str(err)))
            break
        outcomes.append(([_pair(r) for r in taken], part.next_fetch_offset, bool(part)))
    return outcomes


def _pair(record: Any) -> tuple[int, bytes | None]:
    return record if type(record) is tuple else (record.offset, record.value)


def _same_as_kafka_python(fetched: bytes, fetch_offset: int = 0, **settings: Any) -> list[Any]:
    """Asserts both parses take the same records at the same positions, for several take sizes;
    returns kafka-python's takes of 5 records."""
    for size in (None, 5, 1000):
        expected = _takes(Fetcher.PartitionRecords, fetched, fetch_offset, size, **settings)
        assert _takes(BulkPartitionRecords, fetched, fetch_offset, size, **settings) == expected
    return _takes(Fetcher.PartitionRecords, fetched, fetch_offset, 5, **settings)


def test_a_batch_encoded_by_hand() -> None:
    """Two records, zigzag varints worked by hand: offset delta 0, no key, value '{"a":1}', no
    headers (length 13); offset delta 2, a tombstone, one header 'h' without value (length 9)."""
    first = bytes([0x1A, 0x00, 0x00, 0x00, 0x01, 0x0E]) + b'{"a":1}' + b"\x00"
    second = bytes([0x12, 0x00, 0x00, 0x04, 0x01, 0x01, 0x02, 0x02]) + b"h" + b"\x01"
    for parse in (walk_records, vector_records):
        assert parse(first + second, 0, 2, 100) == ([100, 102], [b'{"a":1}', None], 22)
        assert parse(first + second + b"\x00", 0, 2, 100) is None  # a byte left over
        assert parse(first + second, 0, 3, 100) is None  # a record missing
    # The attributes (0) written in two bytes, as kafka-python's varint reading allows: length 14.
    padded = bytes([0x1C, 0x80, 0x00, 0x00, 0x00, 0x01, 0x0E]) + b'{"a":1}' + b"\x00"
    for parse in (walk_records, vector_records):
        assert parse(padded + second, 0, 2, 100) == ([100, 102], [b'{"a":1}', None], 23)
    fetched = _v2_batch([(0, None, b'{"a":1}', []), (2, None, None, [("h", None)])], 100)
    takes = _same_as_kafka_python(fetched)
    # Drained by the take that found the end: the next fetch is after the batch's last offset.
    assert takes == [([(100, b'{"a":1}'), (102, None)], 103, False)]


@pytest.mark.parametrize("codec", list(CODECS))
@pytest.mark.parametrize("count", [1, VECTOR_MIN_RECORDS - 1, VECTOR_MIN_RECORDS, 400])
def test_producer_batches_as_kafka_python_reads_them(codec: str, count: int) -> None:
    compression, installed = CODECS[codec]
    if not installed():
        pytest.skip(f"kafka-python's {codec} codec is not installed")
    first = _random_records(count, seed=count)
    second = _random_records(count, seed=count + 1, headers=False)
    next_base = 1000 + first[-1][0] + 3  # a gap between batches, as compaction leaves
    fetched = _v2_batch(first, 1000, compression) + _v2_batch(second, next_base, compression)
    takes = _same_as_kafka_python(fetched)
    assert sum(len(t[0]) for t in takes if len(t) == 3) == 2 * count
    # Fetched from the middle of the first batch: its records before the fetch offset are skipped.
    middle = 1000 + first[count // 2][0]
    _same_as_kafka_python(fetched, fetch_offset=middle)
    _same_as_kafka_python(fetched, fetch_offset=middle + 1)


@pytest.mark.parametrize("headers", [False, True])
def test_both_parsers_read_every_record_as_kafka_python(headers: bool) -> None:
    records = _random_records(300, seed=7, headers=headers)
    batch = _v2_batch(records, 5000)
    expected = [(r.offset, r.value) for r in DefaultRecordBatch(batch)]
    body = batch[DefaultRecordBatch.HEADER_STRUCT.size :]
    for parse in (walk_records, vector_records):
        parsed = parse(body, 0, len(records), 5000)
        assert parsed is not None
        offsets, values, _ = parsed
        assert list(zip(offsets, values, strict=True)) == expected


def test_the_parse_is_ours_unless_a_batch_is_unusual(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain v2 batches never reach kafka-python's record parse; a legacy message set does."""
    parsed: list[int] = []
    original = kafka_records.batch_records

    def counted(batch: Any) -> Any:
        result = original(batch)
        parsed.append(result is not None)
        return result

    monkeypatch.setattr(kafka_records, "batch_records", counted)
    fetched = _v2_batch(_random_records(50, 1), 0) + _v2_batch(_random_records(3, 2), 200)
    _takes(BulkPartitionRecords, fetched, 0, None)
    assert parsed == [True, True]


@pytest.mark.parametrize("magic", [0, 1])
@pytest.mark.parametrize("compression", [0, 1])
def test_legacy_message_sets_are_kafka_pythons(magic: int, compression: int) -> None:
    builder = LegacyRecordBatchBuilder(
        magic=magic, compression_type=compression, batch_size=1 << 30
    )
    for offset in range(20):
        value = None if offset % 7 == 3 else b'{"ts": %d}' % offset
        builder.append(
            offset, timestamp=1_765_000_000_000 if magic else None, key=None, value=value
        )
    legacy = (
        struct.pack(">q", 40) + bytes(builder.build())[8:]
        if not compression
        else bytes(builder.build())
    )
    fetched = legacy + _v2_batch(_random_records(40, 3), 100)
    _same_as_kafka_python(fetched)
    _same_as_kafka_python(fetched, fetch_offset=45)


def test_transaction_markers_and_aborted_transactions() -> None:
    """Producer 7's transaction (offsets 0-2) is aborted (marker at 3); batch 4-5 is outside
    transactions; producer 8's (6-7) commits (marker at 8); producer 7's next transaction (9)
    commits (marker at 10)."""
    fetched = (
        _v2_batch([(d, None, b"t7-%d" % d, []) for d in range(3)], 0, 0, 7, transactional=True)
        + _control_batch(3, 7, abort=True)
        + _v2_batch([(0, None, b"plain-4", []), (1, None, b"plain-5", [])], 4)
        + _v2_batch([(d, None, b"t8-%d" % d, []) for d in range(2)], 6, 0, 8, transactional=True)
        + _control_batch(8, 8, abort=False)
        + _v2_batch([(0, None, b"t7-9", [])], 9, 0, 7, transactional=True)
        + _control_batch(10, 7, abort=False)
    )
    everything = _same_as_kafka_python(fetched, 0)
    assert [r for t in everything if len(t) == 3 for r in t[0]] == [
        (0, b"t7-0"),
        (1, b"t7-1"),
        (2, b"t7-2"),
        (4, b"plain-4"),
        (5, b"plain-5"),
        (6, b"t8-0"),
        (7, b"t8-1"),
        (9, b"t7-9"),
    ]
    assert everything[-1][1:] == (11, False)  # drained, past the last marker
    committed = _same_as_kafka_python(
        fetched,
        0,
        isolation_level=IsolationLevel.READ_COMMITTED,
        aborted_transactions=[AbortedTransaction(7, 0)],
    )
    assert [r[0] for t in committed if len(t) == 3 for r in t[0]] == [4, 5, 6, 7, 9]


def test_a_batch_whose_last_records_were_compacted_away() -> None:
    """Compaction keeps a v2 batch's last offset: the next fetch starts after it (20), not after
    the last record left (4)."""
    batch = bytearray(_v2_batch([(d, None, b"v%d" % d, []) for d in range(5)], 0))
    struct.pack_into(">i", batch, _ATTRIBUTES_AT + 2, 19)  # last offset delta
    struct.pack_into(">I", batch, _CRC_AT, crc32c.crc32c(bytes(batch[_ATTRIBUTES_AT:])))
    takes = _same_as_kafka_python(bytes(batch))
    assert takes == [([(d, b"v%d" % d) for d in range(5)], 5, True), ([], 20, False)]


def test_a_corrupt_batch_fails_as_in_kafka_python() -> None:
    good = _v2_batch(_random_records(40, 4), 0)
    bad = bytearray(_v2_batch(_random_records(40, 5), 300))
    bad[-3] ^= 0xFF
    takes = _same_as_kafka_python(good + bytes(bad))
    assert takes[-1][0] is CorruptRecordError  # the CRC, after the good batch's records
    assert sum(len(t[0]) for t in takes[:-1]) == 40


def test_records_that_do_not_add_up_fail_as_in_kafka_python() -> None:
    """Without the CRC check, a record whose length byte is off: kafka-python's parse takes the
    batch over, so the records before it come out and then kafka-python's error."""
    records = [(d, None, b"x" * 10, []) for d in range(VECTOR_MIN_RECORDS + 5)]
    batch = bytearray(_v2_batch(records, 0))
    record_bytes = 1 + 1 + 1 + 1 + 1 + 1 + 10 + 1  # length .. value, header count
    batch[DefaultRecordBatch.HEADER_STRUCT.size + 20 * record_bytes] += 2
    takes = _same_as_kafka_python(bytes(batch), check_crcs=False)
    assert takes[-1][0] is CorruptRecordError
    assert [r[0] for t in takes[:-1] for r in t[0]] == list(range(20))


def test_a_batch_cut_off_at_the_end_of_the_fetch_is_left_for_the_next() -> None:
    whole = _v2_batch(_random_records(50, 6), 0)
    cut = _v2_batch(_random_records(50, 7), 500)[:-30]
    takes = _same_as_kafka_python(whole + cut)
    assert [len(t[0]) for t in takes] == [5] * 10 + [0]


def test_offsets_and_values_of_either_kind_of_record() -> None:
    pairs = [(3, b"a"), (4, None)]
    consumer_records = [
        ConsumerRecord("t", 0, -1, offset, 0, 0, None, value, [], None, -1, -1, -1)
        for offset, value in pairs
    ]
    assert offsets_and_values(pairs) == ([3, 4], [b"a", None])
    assert offsets_and_values(consumer_records) == ([3, 4], [b"a", None])
