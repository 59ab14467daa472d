"""The report sinks' partitioner (kldrift.io.kafka_sink.OnePartitionFirst) on a real broker: each
report key lands on the partition kafka-python's default partitioner (murmur2, as the Java
client's) gives it, on a topic of one partition and on one of several, so consumers keyed by
report find every revision of a window where they found the first. About 3 s on a running
broker."""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaProducer

from kldrift.io.kafka_sink import OnePartitionFirst
from kldrift.local.kafka import create_topics

pytestmark = pytest.mark.services

KEYS = [f"bench|key-{i}|amount|2023-11-14T22:{i % 60:02d}:00Z".encode() for i in range(200)]
KEYS += [b"", "ключ-é|\u00ff".encode(), b"x" * 301]


def _partitions(bootstrap: str, topic: str, **settings: object) -> list[int]:
    """The partition each of KEYS was written to, by a producer with `settings`."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, **settings)
    try:
        futures = [producer.send(topic, key=key, value=b"{}") for key in KEYS]
        producer.flush(timeout=60)
        return [future.get(timeout=60).partition for future in futures]
    finally:
        producer.close()


@pytest.mark.parametrize("partition_count", [1, 5])
def test_reports_land_where_the_default_partitioner_puts_them(
    kafka_bootstrap: str, partition_count: int
) -> None:
    topic = f"report-partitions-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, {topic: partition_count})
    default = _partitions(kafka_bootstrap, topic)
    ours = _partitions(kafka_bootstrap, topic, partitioner=OnePartitionFirst())
    assert ours == default
    assert set(default) == set(range(partition_count))  # the keys spread over every partition
