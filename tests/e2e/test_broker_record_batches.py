"""The reader's bulk parse (kldrift.io.kafka_records) on record batches a real broker serves: the
raw bytes of every fetch response go through kafka-python's parse and the bulk parse, which must
take the same records at the same positions; and a consumer with the bulk parse installed reads a
topic exactly as a plain kafka-python consumer does, committed transactions and aborted ones too.

Batches of every codec kafka-python has installed (none and gzip always; zstd, snappy, lz4 where
their packages are), tombstones, null and empty keys and values, headers, 300 KB values, batches of
one record and of hundreds; the reader's own consumer (its 8 MiB fetches, and a config's override)
reads them as plain kafka-python does. About 17 s on a running broker."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka import codec as kafka_codec
from kafka.consumer.fetcher import Fetcher
from kafka.record.memory_records import MemoryRecords

from kldrift.io import kafka_records
from kldrift.io.kafka_records import BulkPartitionRecords, offsets_and_values
from kldrift.io.kafka_source import FETCH_PARTITION_BYTES, _ReadPartitions
from kldrift.local.kafka import create_topics
from kldrift.schemas.config import PipelineConfig

pytestmark = pytest.mark.services

CODECS = {"gzip": kafka_codec.has_gzip, "zstd": kafka_codec.has_zstd}
CODECS |= {"snappy": kafka_codec.has_snappy, "lz4": kafka_codec.has_lz4}
INSTALLED = [None] + [name for name, installed in CODECS.items() if installed()]
"""The producers' compression types here: None, gzip, zstd (lz4 and snappy when installed)."""


def _records(
    count: int, seed: int, big: bool = True
) -> list[tuple[bytes | None, bytes | None, list[Any]]]:
    """(key, value, headers) of every kind: tombstones, empty values, 300 KB values (unless not
    `big`: those cut a batch short), JSON lines."""
    rng = random.Random(seed)
    records = []
    kinds = ["json", "json", "json", "tombstone", "empty", "bytes"] + (["big"] if big else [])
    for i in range(count):
        kind = rng.choice(kinds)
        value: bytes | None = {
            "json": b'{"ts": %d, "model": "model-a", "latency_ms": %d}' % (1_765_000_000 + i, i),
            "tombstone": None,
            "empty": b"",
            "big": rng.randbytes(300_000),
            "bytes": rng.randbytes(rng.randrange(1, 200)),
        }[kind]
        key = rng.choice([None, b"", b"model-%d" % (i % 3)])
        if value is None and key is None:  # kafka-python's producer sends no null/null record
            key = b"gone"
        headers = rng.choice([[], [], [("trace", b"t%d" % i), ("empty", b"")]])
        records.append((key, value, headers))
    return records


def _produce(bootstrap: str, topic: str) -> int:
    """Each codec's records in large batches (300 sent before a flush, with and without 300 KB
    values) and in batches of one."""
    sent = 0
    for seed, compression in enumerate(INSTALLED):
        producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            compression_type=compression,
            linger_ms=50,
            batch_size=512 * 1024,
            max_request_size=2 * 1024 * 1024,
        )
        try:
            for big, count in ((True, 300), (False, 300)):
                for key, value, headers in _records(count, seed, big):
                    producer.send(topic, key=key, value=value, headers=headers, partition=0)
                producer.flush(timeout=60)
            for key, value, headers in _records(5, seed + 100):
                producer.send(topic, key=key, value=value, headers=headers, partition=0)
                producer.flush(timeout=60)
            sent += 605
        finally:
            producer.close()
    return sent


def _consumer(bootstrap: str, topic: str, **settings: Any) -> KafkaConsumer:
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **settings
    )
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    return consumer


def _read_all(consumer: KafkaConsumer, topic: str) -> tuple[list[Any], int]:
    """Every record up to the partition's end, as (offset, value), and the position then."""
    tp = TopicPartition(topic, 0)
    end = consumer.end_offsets([tp])[tp]
    read: list[Any] = []
    for _ in range(2000):
        if consumer.position(tp) >= end:
            break
        for records in consumer.poll(timeout_ms=200).values():
            offsets, values = offsets_and_values(records)
            read.extend(zip(offsets, values, strict=True))
    return read, consumer.position(tp)


def _read_both_ways(
    bootstrap: str, topic: str, capture: bool = False, **settings: Any
) -> tuple[list[Any], int, list[Any], int]:
    """The topic read by kafka-python's parse and by the bulk parse (`kafka_records.install`):
    (its records, its end position) each way. `capture`: the plain read keeps each fetch
    response's raw bytes in `_Captured.fetched`."""
    plain = _consumer(bootstrap, topic, **settings)
    if capture:
        _Captured.fetched = []
        plain._fetcher.PartitionRecords = _Captured
    bulk = _consumer(bootstrap, topic, **settings)
    try:
        assert kafka_records.install(bulk)
        expected, plain_end = _read_all(plain, topic)
        read, bulk_end = _read_all(bulk, topic)
    finally:
        plain.close()
        bulk.close()
    return expected, plain_end, read, bulk_end


class _Captured(Fetcher.PartitionRecords):
    """kafka-python's PartitionRecords, keeping each fetch response's raw bytes."""

    fetched: list[tuple[int, bytes]] = []

    def __init__(self, fetch_offset: int, tp: Any, records: Any, *args: Any, **kw: Any) -> None:
        self.fetched.append((fetch_offset, bytes(records._buffer)))
        super().__init__(fetch_offset, tp, records, *args, **kw)


def _counted(parse: Any, counts: dict[str, int]) -> Any:
    """`parse`, counting the batches it parsed."""

    def counting(*args: Any) -> Any:
        result = parse(*args)
        counts[parse.__name__] += result is not None
        return result

    return counting


def _takes(cls: type, fetch_offset: int, raw: bytes, size: int | None) -> list[Any]:
    part = cls(fetch_offset, TopicPartition("t", 0), MemoryRecords(raw))
    takes = []
    while part:
        taken = part.take(size)
        takes.append(
            (
                [(r[0], r[1]) if type(r) is tuple else (r.offset, r.value) for r in taken],
                part.next_fetch_offset,
            )
        )
    return takes


def test_broker_batches_parse_as_kafka_python_parses_them(
    kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed = {"vector_records": 0, "walk_records": 0}
    for name in parsed:
        monkeypatch.setattr(kafka_records, name, _counted(getattr(kafka_records, name), parsed))
    topic = f"records-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, {topic: 1})
    sent = _produce(kafka_bootstrap, topic)
    expected, plain_end, read, bulk_end = _read_both_ways(
        kafka_bootstrap, topic, capture=True, max_poll_records=37
    )
    assert len(expected) == sent and plain_end == sent
    assert read == expected and bulk_end == plain_end
    assert any(value is None for _, value in read) and any(len(v or b"") > 250_000 for _, v in read)
    assert parsed["vector_records"] > 0 and parsed["walk_records"] > 0  # large and small batches
    # The same raw fetch responses through both parses, a take of 37, 1 and all at a time.
    assert len(_Captured.fetched) > 1
    for fetch_offset, raw in _Captured.fetched:
        for size in (37, 1, None):
            assert _takes(BulkPartitionRecords, fetch_offset, raw, size) == _takes(
                Fetcher.PartitionRecords, fetch_offset, raw, size
            )


def test_transactions_read_as_kafka_python_reads_them(kafka_bootstrap: str) -> None:
    """A committed transaction, an aborted one, then plain records: read_committed skips the
    aborted one, read_uncommitted does not; the markers are never records."""
    topic = f"records-tx-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, {topic: 1})
    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=f"kldrift-test-{uuid.uuid4().hex[:8]}"
    )
    try:
        producer.init_transactions()
        for outcome in ("commit", "abort", "commit"):
            producer.begin_transaction()
            for i in range(50):
                producer.send(topic, value=b"%s-%d" % (outcome.encode(), i), partition=0)
            producer.flush(timeout=30)
            if outcome == "commit":
                producer.commit_transaction()
            else:
                producer.abort_transaction()
    finally:
        producer.close()
    for isolation in ("read_committed", "read_uncommitted"):
        expected, plain_end, read, bulk_end = _read_both_ways(
            kafka_bootstrap, topic, isolation_level=isolation, max_poll_records=20
        )
        assert read == expected and bulk_end == plain_end
        values = [value for _, value in read]
        assert values.count(b"abort-0") == (0 if isolation == "read_committed" else 1)
        assert len(values) == (100 if isolation == "read_committed" else 150)


def _reader(bootstrap: str, topic: str, client: dict[str, Any]) -> _ReadPartitions:
    config = PipelineConfig.model_validate(
        {
            "name": "fetch",
            "event_time_field": "ts",
            "window": {"size": "1m", "period": "1m"},
            "features": [{"name": "x", "kind": "numeric", "edges": [0, 1]}],
            "kafka": {
                "bootstrap_servers": bootstrap,
                "input_topic": topic,
                "output_topic": f"{topic}.reports",
                "dead_letter_topic": f"{topic}.dead",
                "group_id": "fetch",
                "client": client,
            },
        }
    )
    reader = _ReadPartitions(config, f"fetch-{uuid.uuid4().hex[:8]}")
    reader.setup()
    return reader


@pytest.mark.parametrize(
    ("client", "fetch_bytes"),
    [({}, FETCH_PARTITION_BYTES), ({"max_partition_fetch_bytes": 65536}, 65536)],
    ids=["reader-default", "config-override"],
)
def test_reader_consumer_fetch_size(
    kafka_bootstrap: str, client: dict[str, Any], fetch_bytes: int
) -> None:
    """The reader's consumer fetches 8 MiB per partition unless kafka.client says otherwise, and
    reads the topic (300 KB values, batches of one and of hundreds) as plain kafka-python does."""
    topic = f"records-fetch-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, {topic: 1})
    sent = _produce(kafka_bootstrap, topic)
    reader = _reader(kafka_bootstrap, topic, client)
    plain = _consumer(kafka_bootstrap, topic)
    try:
        consumer = reader._consumer(topic, ((0, 0),))
        assert consumer.config["max_partition_fetch_bytes"] == fetch_bytes
        read, end = _read_all(consumer, topic)
        expected, plain_end = _read_all(plain, topic)
    finally:
        reader.teardown()
        plain.close()
    assert len(read) == sent and end == plain_end == sent
    assert read == expected
