"""Shared pytest fixtures.

`kafka_bootstrap` (session scope) runs one real single-node Apache Kafka broker
(kldrift.local.kafka.LocalKafka) for the whole test run; tests that use it are marked
``@pytest.mark.services``.
"""

from __future__ import annotations

import atexit
from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``127.0.0.1:PORT`` of a local Kafka broker, started once and always stopped."""
    from kldrift.local.kafka import LocalKafka

    broker = LocalKafka(data_dir=tmp_path_factory.mktemp("kafka"))
    atexit.register(broker.stop)  # belt and braces: stop() is idempotent
    try:
        broker.start()
        yield broker.bootstrap
    finally:
        broker.stop()
