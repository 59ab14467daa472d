"""Fetched Kafka record batches to (offset, value) pairs in bulk, for the reader's consumer.

kafka-python parses each record of a fetch response in Python, a varint at a time, and builds a
DefaultRecord and a ConsumerRecord per record: 45% of the streaming worker's samples before this
module. The reader's consumer keeps everything else of kafka-python (fetch requests, positions,
seeks, commits, each batch's CRC check, its codecs, transaction markers and aborted transactions)
and swaps only the step that turns one partition's fetched bytes into records
(``Fetcher.PartitionRecords``): a message-format v2 batch is walked here, the records' lengths in
a Python loop and their fields all at once with numpy (`vector_records`); small batches, and
records with headers, a field at a time (`walk_records`). Its records come out as
``(offset, value)`` tuples, all the reader uses (keys, timestamps and headers are not kept). What
is not that plain layout (legacy v0/v1 message sets, a batch whose bytes do not add up, a codec
that is not installed) is parsed by kafka-python's own code, record by record, so its records and
its errors are kafka-python's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from operator import itemgetter
from typing import Any

import numpy as np
from kafka import codec as kafka_codec
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.protocol.consumer import IsolationLevel
from kafka.record.default_records import DefaultRecordBatch
from kafka.record.util import decode_varint

Record = tuple[int, bytes | None]
"""A record as the reader's consumer returns it: (offset, value); value None is a tombstone."""
_OFFSET, _VALUE = itemgetter(0), itemgetter(1)

VECTOR_MIN_RECORDS = 64
"""Batches of at least this many records are parsed with numpy (`vector_records`); smaller ones
record by record (`walk_records`), where numpy's fixed cost per call would outweigh it (measured
with 125-byte JSON values: per record, walk 1.3 us at any size; numpy 4.2 us at 16 records, 2.1
at 32, 1.3 at 64, 0.6 at 256)."""

_HEADER_BYTES = DefaultRecordBatch.HEADER_STRUCT.size
"""Bytes of a v2 batch before its records (61): offset, length, epoch, magic, CRC... count."""
_VARINT_MAX_BYTES = 5
"""The longest varint (an int32 field) `vector_records` reads; longer ones go to `walk_records`."""
_VARLONG_MAX_BYTES = 10
_PADDING = 2 * _VARLONG_MAX_BYTES
"""Zero bytes after the records, so that reading a varint at a record's end stays in the array."""
_STEPS = np.arange(_VARLONG_MAX_BYTES)
_SHIFTS = (7 * _STEPS).astype(np.int64)

_CODECS: dict[int, tuple[Callable[[], bool], Callable[[Any], bytes], bool]] = {
    # compression type: (installed?, decode, wants bytes rather than a memoryview), as
    # kafka-python's DefaultRecordBatch._maybe_uncompress calls them
    1: (kafka_codec.has_gzip, kafka_codec.gzip_decode, False),
    2: (kafka_codec.has_snappy, kafka_codec.snappy_decode, True),
    3: (kafka_codec.has_lz4, kafka_codec.lz4_decode, True),
    4: (kafka_codec.has_zstd, kafka_codec.zstd_decode, True),
}


def walk_records(
    data: bytes, pos: int, count: int, base_offset: int
) -> tuple[list[int], list[bytes | None], int] | None:
    """The offsets and values of `count` v2 records from `pos` to the end of `data`, and the bytes
    they take (kafka-python's ``size_in_bytes`` summed), parsed as kafka-python's
    ``DefaultRecordBatch`` does; None where its records do not add up to exactly `data`."""
    offsets: list[int] = []
    values: list[bytes | None] = []
    size = 0
    for _ in range(count):
        parsed = _record(data, pos)
        if parsed is None:
            return None
        pos, delta, value, length = parsed
        offsets.append(base_offset + delta)
        values.append(value)
        size += length
    if pos != len(data):
        return None
    return offsets, values, size


def _record(data: bytes, pos: int) -> tuple[int, int, bytes | None, int] | None:
    """One record at `pos`: (its end, offset delta, value, length), or None if it is not one. The
    fields are read as kafka-python's DefaultRecordBatch._read_msg reads them (the attributes and
    header keys too, which kafka-python decodes as UTF-8)."""
    try:
        length, pos = decode_varint(data, pos)
        end = pos + length
        _, pos = decode_varint(data, pos)  # attributes
        _, pos = decode_varint(data, pos)  # timestamp delta
        delta, pos = decode_varint(data, pos)
        key_length, pos = decode_varint(data, pos)
        if key_length > 0:
            pos += key_length
        value_length, pos = decode_varint(data, pos)
        value = None
        if value_length >= 0:
            value = data[pos : pos + value_length]
            pos += value_length
        headers, pos = decode_varint(data, pos)
        if headers < 0:
            return None
        for _ in range(headers):
            key_length, pos = decode_varint(data, pos)
            if key_length < 0:
                return None
            data[pos : pos + key_length].decode("utf-8")
            pos += key_length
            header_length, pos = decode_varint(data, pos)
            if header_length > 0:
                pos += header_length
    except (ValueError, IndexError):  # UnicodeDecodeError is a ValueError
        return None
    if pos != end or length < 0:
        return None
    return pos, delta, value, length


def vector_records(
    data: bytes, pos: int, count: int, base_offset: int
) -> tuple[list[int], list[bytes | None], int] | None:
    """As `walk_records`, with the records' fields read by numpy for all records at once: only the
    chain of record lengths is walked in Python. Records with headers are read by `_record`, and
    a batch with a field longer than numpy reads here (an attribute or a varint of more bytes
    than its type needs) by `walk_records`."""
    parsed = _vector_records(data, pos, count, base_offset)
    return walk_records(data, pos, count, base_offset) if parsed is None else parsed


def _vector_records(
    data: bytes, pos: int, count: int, base_offset: int
) -> tuple[list[int], list[bytes | None], int] | None:
    bounds = _record_bounds(data, pos, count)
    if bounds is None:
        return None
    starts, ends = bounds
    padded = np.zeros(len(data) + _PADDING, np.uint8)
    padded[: len(data)] = np.frombuffer(data, np.uint8)
    record_ends = np.asarray(ends, np.int64)
    at = np.asarray(starts, np.int64)
    if (padded[at] >= 0x80).any():  # attributes (a varint in kafka-python's reading) of 2+ bytes
        return None
    at += 1
    fields: list[np.ndarray] = []
    for width in (_VARLONG_MAX_BYTES, _VARINT_MAX_BYTES, _VARINT_MAX_BYTES, _VARINT_MAX_BYTES):
        # timestamp delta, offset delta, key length (then the key), value length
        if (at >= record_ends).any():  # a field past its record's end: not a record
            return None
        field, taken = _varints(padded, at, width)
        if not taken.all():  # a varint longer than read here
            return None
        at += taken
        if len(fields) == 2:
            at += np.maximum(field, 0)
        fields.append(field)
    _, deltas, _, value_lengths = fields
    value_ends = at + np.maximum(value_lengths, 0)
    # The plain record ends with its value and a header count of 0 (one byte 0x00).
    plain = (value_ends + 1 == record_ends) & (padded[np.minimum(value_ends, len(data))] == 0)
    offsets = (deltas + base_offset).tolist()
    values: list[bytes | None] = [
        data[start:end] for start, end in zip(at.tolist(), value_ends.tolist(), strict=True)
    ]
    for row in np.flatnonzero(value_lengths < 0).tolist():
        values[row] = None  # a tombstone
    for row in np.flatnonzero(~plain).tolist():  # headers, or bytes that do not add up
        parsed = _record(data, ends[row - 1] if row else pos)
        if parsed is None:
            return None
        _, delta, values[row], _ = parsed
        offsets[row] = base_offset + delta
    return offsets, values, sum(ends) - sum(starts)


def _record_bounds(data: bytes, pos: int, count: int) -> tuple[list[int], list[int]] | None:
    """Where the fields of each of `count` records start (after its length) and where it ends;
    None unless they fill `data` from `pos` exactly."""
    starts: list[int] = []
    ends: list[int] = []
    try:
        for _ in range(count):
            first = data[pos]
            if first < 0x80:  # one byte (zigzag: even is >= 0)
                zigzag = first
                pos += 1
            elif data[pos + 1] < 0x80:  # two bytes: up to 8 KiB
                zigzag = (first & 0x7F) | (data[pos + 1] << 7)
                pos += 2
            else:
                length, pos = decode_varint(data, pos)
                zigzag = -1 if length < 0 else length << 1
            if zigzag & 1:  # a negative length
                return None
            starts.append(pos)
            pos += zigzag >> 1
            ends.append(pos)
    except (IndexError, ValueError):
        return None
    if pos != len(data):
        return None
    return starts, ends


def _varints(padded: np.ndarray, at: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The zigzag varints at positions `at` of `padded`: (values, bytes each takes; 0 where one
    takes more than `width` bytes, its value then meaningless)."""
    first = padded[at].astype(np.int64)
    more = first >= 0x80
    if not more.any():
        return (first >> 1) ^ -(first & 1), np.ones(len(at), np.int64)
    second = padded[at + 1].astype(np.int64)
    if not (more & (second >= 0x80)).any():  # one or two bytes each: the common case
        raw = np.where(more, (first & 0x7F) | (second << 7), first)
        taken = more + 1
    else:
        raw, taken = _long_varints(padded, at, width)
    if width > _VARINT_MAX_BYTES:  # a varlong: only its length is wanted (its value may overflow)
        return raw, taken
    return (raw >> 1) ^ -(raw & 1), taken


def _long_varints(padded: np.ndarray, at: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """`_varints` read a byte at a time: (unsigned values, bytes each takes or 0)."""
    window = padded[at[:, None] + _STEPS[:width]]
    last = window < 0x80
    taken = last.argmax(axis=1) + 1
    taken[~last.any(axis=1)] = 0
    kept = _STEPS[:width] < taken[:, None]
    return (((window & 0x7F).astype(np.int64) << _SHIFTS[:width]) * kept).sum(axis=1), taken


def batch_records(batch: DefaultRecordBatch) -> tuple[list[int], list[bytes | None], int] | None:
    """A v2 batch's offsets, values and bytes (see `walk_records`), its records decompressed with
    kafka-python's codecs; None where kafka-python's own parse is wanted (a codec not installed, a
    payload that does not decompress, records that do not add up)."""
    buffer = batch._buffer  # kafka-python's copy of the batch's bytes
    count = batch.records_count
    compression = batch.compression_type
    if compression == 0:
        data, pos = bytes(buffer), _HEADER_BYTES
    else:
        known = _CODECS.get(compression)
        if known is None or not known[0]():
            return None
        _, decode, wants_bytes = known
        payload = memoryview(buffer)[_HEADER_BYTES:]
        try:
            data = decode(payload.tobytes() if wants_bytes else payload)
        except Exception:  # kafka-python's parse raises its own error for it
            return None
        data, pos = bytes(data), 0
    parse = vector_records if count >= VECTOR_MIN_RECORDS else walk_records
    return parse(data, pos, count, batch.base_offset)


class BulkPartitionRecords(Fetcher.PartitionRecords):
    """kafka-python's PartitionRecords (one partition's fetched records, taken a poll at a time)
    whose records are (offset, value) tuples parsed a batch at a time (`batch_records`).

    Positions move exactly as kafka-python's: a take moves `next_fetch_offset` past the last
    record taken; skipped control and aborted batches, and the end of the fetched data, move it to
    the batch's next offset; records before the fetch offset (the start of a batch fetched from
    its middle) are skipped. Deserializers are not applied: the consumer has none."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        records = args[2] if len(args) > 2 else kwargs["records"]
        self.record_iterator = self._batches(records)
        self._ready: list[Record] = []
        self._taken = 0

    def take(self, n: int | None = None) -> list[Record]:
        self._maybe_raise_next_inline_exception()
        taken: list[Record] = []
        try:
            while n is None or len(taken) < n:
                if self._taken == len(self._ready):
                    if self.record_iterator is None:
                        break
                    chunk = next(self.record_iterator, None)
                    if chunk is None:
                        break
                    self._ready, self._taken = chunk, 0
                stop = len(self._ready) if n is None else self._taken + n - len(taken)
                taken.extend(self._ready[self._taken : stop])
                self._taken = min(stop, len(self._ready))
                self.next_fetch_offset = taken[-1][0] + 1
        except Exception as err:  # as kafka-python: records first, the error on the next take
            if not taken:
                raise
            self._next_inline_exception = err
        return taken

    def drain(self) -> None:
        self._ready, self._taken = [], 0
        super().drain()

    def _batches(self, records: Any) -> Iterator[list[Record]]:
        """Each batch's records from the fetch offset on, as kafka-python's _unpack_records walks
        them (CRC, transactions, control batches), skipping batches without any."""
        batch = records.next_batch()
        last_batch = None
        while batch is not None:
            last_batch = batch
            if self.check_crcs and not batch.validate_crc():
                raise CorruptRecordError(
                    f"Record batch for partition {self.topic_partition} at offset "
                    f"{batch.base_offset} failed crc check"
                )
            if batch.magic == 2:
                self.leader_epoch = batch.leader_epoch
                if self._skipped(batch):
                    self.next_fetch_offset = batch.next_offset
                    batch = records.next_batch()
                    continue
            chunk, failure = self._records(batch)
            if chunk and chunk[0][0] < self.fetch_offset:
                kept = [r for r in chunk if r[0] >= self.fetch_offset]
                self.next_fetch_offset = chunk[len(chunk) - len(kept) - 1][0] + 1
                chunk = kept
            if chunk:
                yield chunk
            if failure is not None:
                raise failure
            batch = records.next_batch()
        # Format v2 keeps a batch's last offset even when compaction removed its last record:
        # the next fetch starts after the batch (kafka-python's rule).
        if last_batch is not None and last_batch.magic == 2:
            self.next_fetch_offset = last_batch.next_offset
        self.drain()

    def _skipped(self, batch: DefaultRecordBatch) -> bool:
        """Whether a v2 batch gives no records: a control batch (a transaction's marker) or, when
        reading committed records only, a batch of an aborted transaction (kafka-python's rule)."""
        if self.isolation_level == IsolationLevel.READ_COMMITTED and batch.has_producer_id():
            self._consume_aborted_transactions_up_to(batch.last_offset)
            if self._contains_abort_marker(batch):
                self.aborted_producer_ids.discard(batch.producer_id)
            elif self._is_batch_aborted(batch):
                return True
        return bool(batch.is_control_batch)

    def _records(self, batch: Any) -> tuple[list[Record], Exception | None]:
        """A batch's records, in bulk for v2, else (and when the bulk parse declines) with
        kafka-python's parse; and the error that parse met after them, if any (raised once they
        are taken, as kafka-python does)."""
        if batch.magic == 2:
            parsed = batch_records(batch)
            if parsed is not None:
                offsets, values, size = parsed
                self.records_read += len(offsets)
                self.bytes_read += size
                return list(zip(offsets, values, strict=True)), None
        chunk: list[Record] = []
        try:
            for record in batch:
                if self.check_crcs and not record.validate_crc():
                    raise CorruptRecordError(
                        f"Record for partition {self.topic_partition} at offset "
                        f"{record.offset} failed crc check"
                    )
                self.records_read += 1
                self.bytes_read += record.size_in_bytes
                chunk.append((record.offset, record.value))
        except Exception as err:
            return chunk, err
        return chunk, None


def install(consumer: Any) -> bool:
    """Make a KafkaConsumer return (offset, value) records parsed by BulkPartitionRecords; False
    (kafka-python's own records kept) for a consumer with deserializers or a kafka-python whose
    Fetcher is not the one this was written for."""
    fetcher: Any = getattr(consumer, "_fetcher", None)
    if (
        type(fetcher) is not Fetcher
        or Fetcher.PartitionRecords is not BulkPartitionRecords.__base__
        or fetcher.config.get("key_deserializer") is not None
        or fetcher.config.get("value_deserializer") is not None
    ):
        return False
    fetcher.PartitionRecords = BulkPartitionRecords
    return True


def offsets_and_values(records: list[Any]) -> tuple[list[int], list[bytes | None]]:
    """A poll's records of one partition as offsets and values: (offset, value) tuples of an
    installed consumer, or kafka-python's ConsumerRecords."""
    if type(records[0]) is tuple:
        return list(map(_OFFSET, records)), list(map(_VALUE, records))
    return [r.offset for r in records], [r.value for r in records]
