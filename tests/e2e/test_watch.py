"""`kldrift watch --on-drift` on a real broker: the trigger reaches the command, a failing command
is retried with backoff, and the offset is committed only after it succeeded."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml
from _reports import make_report
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from kldrift.local.kafka import create_topics
from kldrift.schemas.report import DriftReport
from kldrift.synthetic import demo_config

pytestmark = pytest.mark.services

KLDRIFT = str(Path(sys.executable).with_name("kldrift"))


def _report(minute: int, drift: bool) -> DriftReport:
    return make_report(minute, drift, pipeline="watch-test", key="model-a", window_minutes=2)


def _watch_config(tmp_path: Path, kafka_bootstrap: str) -> tuple[str, Path]:
    """A fresh report topic and a config whose kafka.output_topic is it."""
    topic = f"watch-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, {topic: 1})
    kafka = {
        "bootstrap_servers": kafka_bootstrap,
        "input_topic": "unused",
        "output_topic": topic,
        "dead_letter_topic": "unused-dead",
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(demo_config(name="watch-test", kafka=kafka)))
    return topic, config


def _committed(kafka_bootstrap: str, group: str, topic: str) -> int | None:
    checker = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group)
    try:
        return checker.committed(TopicPartition(topic, 0))
    finally:
        checker.close()


def test_watch_runs_the_command_retries_a_failure_and_commits_after_success(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    topic, config = _watch_config(tmp_path, kafka_bootstrap)
    # The command fails on its first run and succeeds on the second; it keeps what it was given.
    attempts, received = tmp_path / "attempts", tmp_path / "trigger.json"
    script = tmp_path / "retrain.sh"
    script.write_text(
        "#!/bin/sh\n"
        f'echo x >> "{attempts}"\n'
        f'if [ "$(wc -l < "{attempts}")" -lt 2 ]; then echo "orchestrator down" >&2; exit 7; fi\n'
        f'cat > "{received}"\n'
        f'echo "$KLDRIFT_KEY $KLDRIFT_FEATURE" >> "{received}.env"\n'
    )
    script.chmod(0o755)

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    flags = [False, True, False, True, True]  # the 5th window completes 3 of the last 5
    for minute, flag in enumerate(flags, start=1):
        report = _report(minute, flag)
        producer.send(topic, report.to_json_bytes(), key=report.message_key.encode())
    producer.close()

    group = f"watchers-{uuid.uuid4().hex[:6]}"
    watcher = subprocess.Popen(
        [
            KLDRIFT,
            "watch",
            "--config",
            str(config),
            "--on-drift",
            str(script),
            "--k",
            "3",
            "--m",
            "5",
            "--group",
            group,
            "--from-beginning",
            "--retry-backoff",
            "0.3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not received.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.5)
    finally:
        watcher.send_signal(signal.SIGINT)
        output, _ = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, output
    assert received.exists(), output
    trigger = json.loads(received.read_text())
    assert trigger["key"] == "model-a" and trigger["feature"] == "latency_ms"
    assert trigger["drifted_windows"] == 3 and trigger["considered_windows"] == 5
    assert trigger["window_end"] == "2024-01-01T00:05:00Z"
    assert (tmp_path / "trigger.json.env").read_text().strip() == "model-a latency_ms"
    assert attempts.read_text().count("x") == 2
    assert "failed (attempt 1): exit code 7: orchestrator down" in output
    assert "retraining triggered for model-a latency_ms (attempt 2)" in output
    assert output.count("DRIFT") == 3

    # Every report up to the trigger is committed: a restarted watcher would not see them again.
    committed = _committed(kafka_bootstrap, group, topic)
    assert committed == len(flags)


def test_a_command_that_keeps_failing_leaves_the_drift_episode_uncommitted(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    topic, config = _watch_config(tmp_path, kafka_bootstrap)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for minute, flag in enumerate([False, True, True], start=1):
        producer.send(topic, _report(minute, flag).to_json_bytes())
    producer.close()
    group = f"watchers-{uuid.uuid4().hex[:6]}"
    watcher = subprocess.Popen(
        [
            KLDRIFT,
            "watch",
            "--config",
            str(config),
            "--on-drift",
            "exit 3",
            "--k",
            "2",
            "--m",
            "3",
            "--group",
            group,
            "--from-beginning",
            "--retry-backoff",
            "0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    time.sleep(8)
    watcher.send_signal(signal.SIGINT)
    output, _ = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, output
    assert "failed (attempt 2)" in output
    committed = _committed(kafka_bootstrap, group, topic)
    # Only the calm first window is committed; the two drifted ones will be delivered again.
    assert committed == 1
