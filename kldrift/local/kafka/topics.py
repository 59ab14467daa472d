"""Creating topics on the local broker and waiting until each partition has a leader."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from kldrift.local.kafka.install import LocalKafkaError
from kldrift.local.kafka.process import _admin


def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    replication_factor: int = 1,
    topic_configs: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    client: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create each `{name: partitions}` topic that does not exist yet; returns the names created.

    Idempotent: an existing topic is accepted as it is (its partition count is not changed).
    Returns once every listed topic has a leader for each partition. `topic_configs` (e.g.
    ``{"retention.ms": "600000"}``) applies to the topics created.
    """
    from kldrift.io.kafka_client import create_missing_topics

    for name, partitions in topics.items():
        if not name or int(partitions) < 1:
            raise ValueError(f"topic {name!r}: need a name and at least 1 partition")
    deadline = time.monotonic() + timeout
    admin = _admin(bootstrap, timeout, client)
    try:
        created = create_missing_topics(
            admin,
            topics,
            topic_configs={name: dict(topic_configs or {}) for name in topics},
            replication_factor=replication_factor,
            timeout_ms=int(timeout * 1000),
        )
        _wait_for_leaders(admin, list(topics), deadline)
    finally:
        admin.close()
    return created


def _wait_for_leaders(admin: Any, names: list[str], deadline: float) -> None:
    pending: dict[str, str] = {}
    while True:
        try:
            described = {t.get("name"): t for t in admin.describe_topics(names)}
        except Exception as err:  # retried until the deadline
            described = {}
            pending = {n: f"{type(err).__name__}" for n in names}
        else:
            pending = {}
            for name in names:
                info = described.get(name)
                if info is None or info.get("error_code", 0) != 0:
                    pending[name] = "not in metadata yet"
                    continue
                parts = info.get("partitions") or []
                if not parts or any(
                    p.get("error_code", 0) != 0 or p.get("leader_id", p.get("leader", -1)) < 0
                    for p in parts
                ):
                    pending[name] = "partitions without a leader"
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise LocalKafkaError(f"topics not ready in time: {pending}")
        time.sleep(0.1)
