"""The guard of tests/conftest.py trips: a test not marked `services` that starts a Kafka broker,
Prism or Prometheus, in this process or in a `kldrift` child process, is refused before the
service runs, and the refusal names the service."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import apache_beam as beam
import pytest
from _jobs import latency_job
from _service_guard import ServiceStartForbidden, service_of

from kldrift.local.kafka import LocalKafka
from kldrift.local.prometheus import LocalPrometheus
from kldrift.local.runners import local_runner_args
from kldrift.pipeline.options import pipeline_options

KLDRIFT = str(Path(sys.executable).with_name("kldrift"))


def test_commands_that_start_services_are_told_apart_from_tools() -> None:
    assert service_of(["/usr/bin/java", "-cp", "lib/*", "kafka.Kafka", "s.properties"])
    assert service_of(["java", "-jar", "beam-runners-flink-job-server.jar"])
    assert service_of(["/home/u/.cache/kldrift/bin/prism-2.77.0/prism", "--job_port=0"])
    assert service_of(["/usr/bin/prometheus", "--config.file=p.yml"]) == "Prometheus"
    assert service_of(["/usr/bin/java", "-version"]) is None  # a version probe
    assert service_of(["/usr/bin/promtool", "check", "rules", "alerts.yaml"]) is None
    assert service_of([sys.executable, "-c", "pass"]) is None


def test_a_kafka_broker_is_refused(tmp_path: Path, expect_guard: Callable[[], str]) -> None:
    broker = LocalKafka(data_dir=tmp_path / "kafka")
    try:
        with pytest.raises(ServiceStartForbidden, match="JVM"):
            broker.start()
        assert not broker.is_running()
    finally:
        broker.stop()
    assert "started a JVM" in expect_guard()


def test_prism_is_refused_when_a_pipeline_runs(expect_guard: Callable[[], str]) -> None:
    # Beam keeps one Prism per process for every pipeline: without its own, this pipeline would use
    # one an earlier test started, and no process would be started to refuse.
    options = pipeline_options(
        local_runner_args(["--experiments=disable_prism_server_singleton"]), streaming=False
    )
    # Beam may wrap the guard's error in its own.
    with pytest.raises(Exception), beam.Pipeline(options=options) as p:  # noqa: B017
        _ = p | beam.Create([1, 2, 3])
    assert "started Beam's Prism runner" in expect_guard()


def test_prometheus_is_refused(tmp_path: Path, expect_guard: Callable[[], str]) -> None:
    prometheus = LocalPrometheus(tmp_path / "prom", ["127.0.0.1:9"])
    try:
        with pytest.raises(ServiceStartForbidden, match="Prometheus"):
            prometheus.start()
    finally:
        prometheus.stop()
    assert "started Prometheus" in expect_guard()


def test_a_kldrift_child_process_is_refused_prism(
    tmp_path: Path, expect_guard: Callable[[], str]
) -> None:
    config = latency_job(tmp_path, "guard", None, size_s=4, period_s=2, lateness_s=0)
    (tmp_path / "events.jsonl").write_text('{"ts": 1700000000, "model": "m", "latency_ms": 3}\n')
    done = subprocess.run(
        [
            KLDRIFT,
            "replay",
            "--config",
            str(config),
            "--input",
            str(tmp_path / "events.jsonl"),
            "--output",
            str(tmp_path / "reports.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0, done.stdout + done.stderr
    refused = expect_guard()
    assert "a child process (" in refused and "replay" in refused
    assert "started Beam's Prism runner" in refused
