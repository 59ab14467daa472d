"""The local Apache Kafka broker (kldrift.local.kafka): real broker, real kafka-python clients."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from kldrift.local import kafka as local_kafka
from kldrift.local.kafka import (
    KAFKA_VERSION,
    LocalKafka,
    LocalKafkaError,
    create_topics,
    pid_alive,
)
from kldrift.local.kafka import broker as kafka_broker
from kldrift.local.kafka import process as kafka_process

pytestmark = pytest.mark.services

KLDRIFT = Path(sys.executable).with_name("kldrift")


def _topic(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = [producer.send(topic, key=k, value=v) for k, v in records]
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close(timeout=10)


def _consume_assigned(bootstrap: str, topic: str, partitions: int, expected: int) -> list:
    """Read `expected` records from the start of every partition (no consumer group)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        return _drain(consumer, expected)
    finally:
        consumer.close()


def _drain(consumer: KafkaConsumer, expected: int, timeout: float = 60.0) -> list:
    records: list = []
    deadline = time.monotonic() + timeout
    while len(records) < expected and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    return records


def _java_processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live (non-zombie) processes whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and "java" in cmdline and pid_alive(int(entry.name)):
            found.append((int(entry.name), cmdline))
    return found


def test_produce_consume_round_trip_three_partitions(kafka_bootstrap: str) -> None:
    topic = _topic("roundtrip")
    assert create_topics(kafka_bootstrap, {topic: 3}) == [topic]
    n = 300
    sent = [(f"key-{i % 37}".encode(), f"value-{i}".encode()) for i in range(n)]
    _produce(kafka_bootstrap, topic, sent)

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=_topic("group"),  # a real consumer group: exercises __consumer_offsets (RF 1)
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    try:
        records = _drain(consumer, n)
        consumer.commit()
    finally:
        consumer.close()

    assert len(records) == n
    assert {r.value for r in records} == {v for _, v in sent}
    assert {r.key for r in records} == {k for k, _ in sent}
    assert {(r.key, r.value) for r in records} == set(sent)
    assert {r.partition for r in records} == {0, 1, 2}


def test_create_topics_is_idempotent(kafka_bootstrap: str) -> None:
    one, three = _topic("idem1"), _topic("idem3")
    assert sorted(create_topics(kafka_bootstrap, {one: 1, three: 3})) == sorted([one, three])
    assert create_topics(kafka_bootstrap, {one: 1, three: 3}) == []
    # An existing topic is accepted as it is, even if asked with another partition count.
    extra = _topic("idem-extra")
    assert create_topics(kafka_bootstrap, {three: 5, extra: 2}) == [extra]

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = {t["name"]: t for t in admin.describe_topics([one, three, extra])}
    finally:
        admin.close()
    assert {name: len(t["partitions"]) for name, t in described.items()} == {
        one: 1,
        three: 3,
        extra: 2,
    }
    with pytest.raises(ValueError):
        create_topics(kafka_bootstrap, {_topic("bad"): 0})


def test_auto_topic_creation_is_disabled(kafka_bootstrap: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        missing = _topic("never-created")
        admin.describe_topics([missing])  # a metadata request must not create it
        assert missing not in admin.list_topics()
    finally:
        admin.close()


def _kldrift(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(KLDRIFT), "local", "kafka", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def test_cli_start_status_stop(tmp_path: Path) -> None:
    assert KLDRIFT.exists(), f"{KLDRIFT} is not installed (pip install -e .)"
    home = tmp_path / "home"
    home.mkdir()
    # Reuse the installed jars (no second download): the CLI only needs <home>/kafka-<v>/lib.
    (home / f"kafka-{KAFKA_VERSION}").symlink_to(local_kafka.ensure_installed().parent)
    env = dict(os.environ, KLDRIFT_HOME=str(home))

    try:
        first = _kldrift(env, "start")
        assert first.returncode == 0, first.stdout + first.stderr
        bootstrap = first.stdout.strip().splitlines()[-1]
        assert bootstrap.startswith("127.0.0.1:"), first.stdout

        state_file = home / "run" / "kafka" / "state.json"
        assert state_file.is_file()
        status = _kldrift(env, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.startswith(f"running at {bootstrap} (pid "), status.stdout
        pid = int(status.stdout.rsplit("(pid ", 1)[1].rstrip(")\n"))
        assert pid_alive(pid, str(home))

        second = _kldrift(env, "start")
        assert second.returncode == 0, second.stdout + second.stderr
        assert second.stdout.strip().splitlines()[-1] == bootstrap
        again = _kldrift(env, "status")
        assert again.stdout == status.stdout  # same address, same pid

        topic = _topic("cli")
        create_topics(bootstrap, {topic: 1})
        _produce(bootstrap, topic, [(b"k", b"through the CLI broker")])
        records = _consume_assigned(bootstrap, topic, 1, 1)
        assert [(r.key, r.value) for r in records] == [(b"k", b"through the CLI broker")]
    finally:
        stop = _kldrift(env, "stop")
    assert stop.returncode == 0, stop.stdout + stop.stderr

    # The broker was orphaned when the CLI exited; an init that does not reap (as in some
    # containers) leaves a zombie entry, which pid_alive counts as gone.
    assert not pid_alive(pid)
    assert _java_processes_mentioning(str(home)) == []
    assert not (home / "run" / "kafka").exists()
    final = _kldrift(env, "status")
    assert final.returncode == 3
    assert final.stdout.strip() == "not running"
    assert _kldrift(env, "stop").returncode == 0  # stopping again is fine


def test_failed_start_reports_the_log_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "broker"
    # The broker's port is taken (bound, not listening: connections are refused), also on the
    # one retry with "new" ports: the JVM must fail to bind and exit.
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        taken = busy.getsockname()[1]
        controller = kafka_process._free_ports(1)[0]
        monkeypatch.setattr(kafka_broker, "_free_ports", lambda count: [taken, controller])
        broker = LocalKafka(data_dir=data_dir, start_timeout=60)
        with pytest.raises(LocalKafkaError) as failure:
            broker.start()
    message = str(failure.value)
    assert "did not start" in message
    assert "server.log" in message
    assert "Address already in use" in message
    assert not broker.is_running()
    assert _java_processes_mentioning(str(data_dir)) == []


def test_missing_maven_or_java_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KLDRIFT_HOME", str(tmp_path / "empty-home"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    local_kafka.java_executable.cache_clear()
    try:
        with pytest.raises(LocalKafkaError, match="`mvn`"):
            local_kafka.ensure_installed()
        with pytest.raises(LocalKafkaError, match="`java`"):
            local_kafka.java_executable()
    finally:
        local_kafka.java_executable.cache_clear()
    assert not (tmp_path / "empty-home" / f"kafka-{KAFKA_VERSION}").exists()


def test_restart_in_place_keeps_data_port_and_topics_and_stop_leaves_no_java_process(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "broker"
    broker = LocalKafka(data_dir=data_dir)
    last_pid: int | None = None
    try:
        broker.start()
        bootstrap, first_pid = broker.bootstrap, broker.pid
        assert not broker.reused
        running = _java_processes_mentioning(str(data_dir))
        assert [p for p, _ in running] == [first_pid]
        assert "kafka.Kafka" in running[0][1]
        # Its log goes through SLF4J 2 -> log4j2 to the data dir.
        assert "Kafka Server started" in (data_dir / "server.log").read_text()
        assert "SLF4J" not in (data_dir / "kafka.out").read_text()
        topic = _topic("inplace")
        create_topics(bootstrap, {topic: 2})
        sent = [(f"k{i}".encode(), f"before the crash {i}".encode()) for i in range(20)]
        _produce(bootstrap, topic, sent)

        broker.kill()  # a crash: SIGKILL, nothing cleaned up
        assert first_pid is not None and not pid_alive(first_pid)
        broker.start()
        assert broker.reused and broker.bootstrap == bootstrap and broker.pid != first_pid
        _produce(bootstrap, topic, [(b"k", b"after the crash")])

        broker.restart()  # a clean stop keeping the data, then a start in place
        assert broker.reused and broker.bootstrap == bootstrap
        records = _consume_assigned(bootstrap, topic, 2, len(sent) + 1)
        assert sorted((r.key, r.value) for r in records) == sorted(
            [*sent, (b"k", b"after the crash")]
        )
        # The previous run's log is kept beside the new one.
        assert (data_dir / "server.log.previous").is_file()
        last_pid = broker.pid
    finally:
        broker.stop()
    assert last_pid is not None and not pid_alive(last_pid)
    assert _java_processes_mentioning(str(data_dir)) == []
    broker.stop()  # idempotent


def test_restart_in_place_says_which_port_is_taken(tmp_path: Path) -> None:
    data_dir = tmp_path / "broker"
    broker = LocalKafka(data_dir=data_dir)
    try:
        broker.start()
        port = broker.port
        broker.kill()
        with socket.socket() as squatter:  # another process now listens on the broker's port
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", port))
            squatter.listen()
            with pytest.raises(LocalKafkaError) as failure:
                broker.start()
        message = str(failure.value)
        assert f"127.0.0.1:{port}" in message and "taken by another process" in message
        assert "--port" in message
        assert not broker.is_running()
        broker.start()  # free again: it restarts in place
        assert broker.reused and broker.port == port
    finally:
        broker.stop()


def test_cli_start_after_a_crash_restarts_in_place_and_restart_keeps_data(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / f"kafka-{KAFKA_VERSION}").symlink_to(local_kafka.ensure_installed().parent)
    env = dict(os.environ, KLDRIFT_HOME=str(home))
    data_dir = tmp_path / "my-kafka"
    port = kafka_process._free_ports(1)[0]
    try:
        first = _kldrift(env, "start", "--port", str(port), "--data-dir", str(data_dir))
        assert first.returncode == 0, first.stdout + first.stderr
        bootstrap = first.stdout.strip().splitlines()[-1]
        assert bootstrap == f"127.0.0.1:{port}"
        topic = _topic("cli-crash")
        create_topics(bootstrap, {topic: 1})
        _produce(bootstrap, topic, [(b"k", b"kept")])
        pid = int(_kldrift(env, "status").stdout.rsplit("(pid ", 1)[1].rstrip(")\n"))

        os.kill(pid, 9)  # the broker dies
        wait = time.monotonic() + 10
        while pid_alive(pid) and time.monotonic() < wait:
            time.sleep(0.1)
        assert _kldrift(env, "status").returncode == 3

        again = _kldrift(env, "start")  # no options: the recorded data dir and port
        assert again.returncode == 0, again.stdout + again.stderr
        assert "restarted in place" in again.stdout
        assert again.stdout.strip().splitlines()[-1] == bootstrap
        assert [r.value for r in _consume_assigned(bootstrap, topic, 1, 1)] == [b"kept"]

        restarted = _kldrift(env, "restart")
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        assert restarted.stdout.strip().splitlines()[-1] == bootstrap
        new_pid = int(_kldrift(env, "status").stdout.rsplit("(pid ", 1)[1].rstrip(")\n"))
        assert new_pid != pid
        assert [r.value for r in _consume_assigned(bootstrap, topic, 1, 1)] == [b"kept"]

        other = _kldrift(env, "start", "--security", "ssl")  # it runs plaintext: refused
        assert other.returncode == 2
        assert "already running" in other.stderr and "plaintext" in other.stderr
    finally:
        stop = _kldrift(env, "stop")
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert f"data kept in {data_dir}" in stop.stdout  # a --data-dir is the user's
    assert (data_dir / "kraft-logs").is_dir()
    assert _java_processes_mentioning(str(data_dir)) == []


def test_cli_start_with_sasl_writes_client_settings_without_printing_the_password(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / f"kafka-{KAFKA_VERSION}").symlink_to(local_kafka.ensure_installed().parent)
    env = dict(os.environ, KLDRIFT_HOME=str(home))
    try:
        started = _kldrift(env, "start", "--security", "sasl_plaintext")
        assert started.returncode == 0, started.stdout + started.stderr
        bootstrap = started.stdout.strip().splitlines()[-1]
        client_file = home / "run" / "kafka" / "data" / "client.yaml"
        assert str(client_file) in started.stdout
        assert client_file.stat().st_mode & 0o077 == 0  # only its owner reads it
        import yaml

        client = yaml.safe_load(client_file.read_text())
        assert client["security_protocol"] == "SASL_PLAINTEXT"
        password = client["sasl_plain_password"]
        assert len(password) >= 16
        assert password not in started.stdout + started.stderr
        # The settings reach the broker; without them it refuses the client.
        topic = _topic("sasl-cli")
        create_topics(bootstrap, {topic: 1}, client=client)
        with pytest.raises(Exception):  # noqa: B017 - kafka-python's error type varies
            create_topics(bootstrap, {_topic("plain"): 1}, timeout=5.0)
    finally:
        stop = _kldrift(env, "stop")
    assert stop.returncode == 0, stop.stdout + stop.stderr
