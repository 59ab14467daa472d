"""A real, local Apache Kafka broker for development, tests and the demo (no Docker, no mocks).

kldrift reads events from and reports drift to Kafka. To run that end to end on one machine, this
module installs and runs a genuine single-node Apache Kafka broker in KRaft mode (broker and
controller in one JVM) listening on 127.0.0.1 only:

* `ensure_installed()` fetches the broker jars once from Maven Central with `mvn` (the packaged
  ``kafka-pom.xml``) into ``cache_dir()/kafka-<KAFKA_VERSION>/lib``; later calls are offline.
* `LocalKafka` formats a fresh data dir (or restarts the cluster already in it, same ports), starts
  the broker, waits until it answers and stops it (process group SIGTERM, then SIGKILL); its client
  listener is plaintext, SASL/PLAIN or TLS (`security`). It is a context manager; the test suite's
  session fixture ``kafka_bootstrap`` uses it.
* `create_topics()` creates topics idempotently (the broker has auto topic creation disabled).
* `cli()` backs ``kldrift local kafka start|stop|restart|status``: one persistent background
  broker whose state lives under ``cache_dir()/run/kafka/``.

Needs Java 17+ on PATH (or $JAVA_HOME) and, for the first install only, Maven.
"""

from kldrift.local.kafka.broker import LocalKafka
from kldrift.local.kafka.install import (
    DEFAULT_START_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    KAFKA_VERSION,
    LocalKafkaError,
    ensure_installed,
    install_dir,
    java_executable,
)
from kldrift.local.kafka.process import pid_alive, random_cluster_id, wait_until_ready
from kldrift.local.kafka.security import SASL_USER, SECURITY_MODES
from kldrift.local.kafka.service import BrokerState, CliOptions, cli, read_state, run_dir
from kldrift.local.kafka.topics import create_topics

__all__ = [
    "DEFAULT_START_TIMEOUT",
    "DEFAULT_STOP_TIMEOUT",
    "KAFKA_VERSION",
    "SASL_USER",
    "SECURITY_MODES",
    "BrokerState",
    "CliOptions",
    "LocalKafka",
    "LocalKafkaError",
    "cli",
    "create_topics",
    "ensure_installed",
    "install_dir",
    "java_executable",
    "pid_alive",
    "random_cluster_id",
    "read_state",
    "run_dir",
    "wait_until_ready",
]
