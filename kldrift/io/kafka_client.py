"""kafka-python client settings from the config (pass-through, secrets masked), topics, offsets."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import Any

from kldrift.exceptions import KafkaSetupError as KafkaSetupError
from kldrift.io.kafka_log import last_problem
from kldrift.schemas.config import KafkaSpec

CONNECT_TIMEOUT_S = 10
RECONNECT_BACKOFF_MAX_MS = 2000
_SECRET = re.compile(
    r"password|secret|token|sasl_oauth|ssl_context|user\.info|credential", re.IGNORECASE
)


def masked(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings safe to print: secret values replaced by '***'."""
    return {k: ("***" if _SECRET.search(k) else v) for k, v in settings.items()}


def client_settings(spec: KafkaSpec, client: str) -> dict[str, Any]:
    """Settings for one kafka-python client class ('consumer', 'producer', 'admin').

    The config's `client` mapping applies to every client; each keeps only the keys it knows, so
    one mapping can carry consumer and producer settings together.
    """
    known = _known_keys(client)
    settings: dict[str, Any] = {
        "bootstrap_servers": spec.bootstrap_servers.split(","),
        # kafka-python backs off up to 30 s between reconnects: after an outage the job would
        # idle that long with the broker back.
        "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
    }
    unknown = [k for k in spec.client if k not in _all_known_keys()]
    if unknown:
        raise KafkaSetupError(
            f"kafka.client: unknown kafka-python setting(s) {', '.join(sorted(unknown))}"
        )
    settings.update({k: v for k, v in spec.client.items() if k in known})
    return settings


def _known_keys(client: str) -> frozenset[str]:
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

    classes = {"consumer": KafkaConsumer, "producer": KafkaProducer, "admin": KafkaAdminClient}
    return frozenset(classes[client].DEFAULT_CONFIG)


def _all_known_keys() -> frozenset[str]:
    return _known_keys("consumer") | _known_keys("producer") | _known_keys("admin")


def ensure_topics(
    spec: KafkaSpec,
    topics: Mapping[str, int],
    create: bool,
    topic_configs: Mapping[str, Mapping[str, str]] | None = None,
    how_to_create: str = "set kafka.create_topics: true",
) -> None:
    """Check `topics` exist; create the missing ones (with `partitions` and `topic_configs`, e.g.
    cleanup.policy=compact) or fail naming them and `how_to_create` them."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    settings = client_settings(spec, "admin")
    settings.setdefault("request_timeout_ms", 15000)
    if "bootstrap_timeout_ms" in KafkaAdminClient.DEFAULT_CONFIG:  # kafka-python >= 3
        settings.setdefault("bootstrap_timeout_ms", CONNECT_TIMEOUT_S * 1000)
    try:
        admin = admin_client(settings)
    except KafkaError as err:
        raise KafkaSetupError(
            f"cannot reach Kafka at {spec.bootstrap_servers} within "
            f"{settings.get('bootstrap_timeout_ms', CONNECT_TIMEOUT_S * 1000) / 1000:g} s "
            f"({last_problem() or type(err).__name__}): check kafka.bootstrap_servers and "
            "kafka.client"
        ) from None
    try:
        existing = set(admin.list_topics())
        missing = [name for name in topics if name not in existing]
        if missing and not create:
            raise KafkaSetupError(
                f"topic(s) {', '.join(missing)} do not exist on {spec.bootstrap_servers}: create "
                f"them, or {how_to_create}"
            )
        create_missing_topics(admin, topics, topic_configs=topic_configs, existing=existing)
    finally:
        admin.close()


def admin_client(settings: Mapping[str, Any]) -> Any:
    """A KafkaAdminClient, or its error with nothing left running. kafka-python 3.0 starts the
    client's IO thread before it bootstraps and leaves it running when the bootstrap fails (an
    unreachable or not yet ready broker): that thread would log connection errors until exit."""
    from kafka import KafkaAdminClient

    made: list[Any] = []
    default_client = KafkaAdminClient.DEFAULT_CONFIG["kafka_client"]

    def client(**configs: Any) -> Any:
        made.append(default_client(**configs))
        return made[-1]

    try:
        return KafkaAdminClient(**settings, kafka_client=client)
    except Exception:
        for half_made in made:
            with contextlib.suppress(Exception):
                half_made.close()
            net = getattr(getattr(half_made, "_manager", None), "_net", None)
            if net is not None:
                with contextlib.suppress(Exception):
                    net.stop()
        raise


def create_missing_topics(
    admin: Any,
    topics: Mapping[str, int],
    *,
    topic_configs: Mapping[str, Mapping[str, str]] | None = None,
    replication_factor: int = 1,
    timeout_ms: int | None = None,
    existing: set[str] | None = None,
) -> list[str]:
    """Create, with a kafka-python admin client, each `{name: partitions}` topic not in `existing`
    (listed from the broker when not given), with its `topic_configs` (e.g. cleanup.policy=compact);
    returns the names created. A topic that exists, or is created meanwhile by someone else, is
    accepted as it is (its partition count is not changed)."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    if existing is None:
        existing = set(admin.list_topics())
    created: list[str] = []
    for name, partitions in topics.items():
        if name in existing:
            continue
        new = NewTopic(
            name,
            int(partitions),
            replication_factor,
            topic_configs=(topic_configs or {}).get(name),
        )
        try:
            admin.create_topics([new], timeout_ms=timeout_ms)
            created.append(name)
        except TopicAlreadyExistsError:
            pass  # created concurrently: fine
    return created


TOPIC_CHECK_TIMEOUT_MS = 3000


def topic_exists(spec: KafkaSpec, topic: str) -> bool:
    """Whether the cluster knows `topic` now (a short-lived admin client; raises if the cluster
    does not answer within TOPIC_CHECK_TIMEOUT_MS)."""
    settings = client_settings(spec, "admin")
    settings["request_timeout_ms"] = TOPIC_CHECK_TIMEOUT_MS
    settings["bootstrap_timeout_ms"] = TOPIC_CHECK_TIMEOUT_MS
    admin = admin_client(settings)
    try:
        return topic in set(admin.list_topics())
    finally:
        admin.close()


def partitions_of(spec: KafkaSpec, topic: str) -> list[int]:
    """The topic's partitions now; KafkaSetupError if it has none."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(**client_settings(spec, "consumer"))
    try:
        partitions = consumer.partitions_for_topic(topic)
    finally:
        consumer.close()
    if not partitions:
        raise KafkaSetupError(f"topic {topic!r} has no partitions on {spec.bootstrap_servers}")
    return sorted(partitions)


def start_offsets(spec: KafkaSpec, topic: str, partitions: list[int], group_id: str) -> list[int]:
    """Where reading starts in each partition, per `kafka.start_from`."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**client_settings(spec, "consumer"), group_id=group_id)
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        earliest = consumer.beginning_offsets(tps)
        latest = consumer.end_offsets(tps)
        if spec.start_from == "earliest":
            return [earliest[tp] for tp in tps]
        if spec.start_from == "latest":
            return [latest[tp] for tp in tps]
        if spec.start_from == "timestamp":
            assert spec.start_timestamp is not None
            found = consumer.offsets_for_times({tp: int(spec.start_timestamp * 1000) for tp in tps})
            return [found[tp].offset if found.get(tp) else latest[tp] for tp in tps]
        committed = [consumer.committed(tp) for tp in tps]
        return [c if c is not None else earliest[tp] for c, tp in zip(committed, tps, strict=True)]
    finally:
        consumer.close()
