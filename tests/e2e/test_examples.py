"""The examples in examples/ and README's "Use it in your own Beam pipeline": the file pipeline runs
on Prism and reports what `kldrift replay` reports on the same file; the Pub/Sub -> Kafka job is
built offline (no Pub/Sub, no Dataflow here) and checked for the steps it must hold; the public
Kafka sinks write to a real broker what `kldrift run` writes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from kafka import KafkaConsumer

from kldrift import (
    DeadLetter,
    DriftReport,
    WriteDeadLettersToKafka,
    WriteReportsToKafka,
    baseline_from_events,
    parse_config,
)
from kldrift.local.prism import ensure_installed
from kldrift.local.runners import local_runner_args
from kldrift.pipeline.options import pipeline_options
from kldrift.pipeline.replay import run_replay

pytestmark = pytest.mark.services
ROOT = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000
CONFIG_DATA = {
    "name": "example-test",
    "event_time_field": "ts",
    "key_field": "model",
    "window": {"size": "20s", "period": "10s"},
    "features": [
        {"name": "x", "kind": "numeric", "edges": [0, 10]},
        {"name": "color", "kind": "categorical", "categories": ["red", "green"]},
    ],
}


def _write_job(tmp_path: Path) -> tuple[Path, Path]:
    """A config (with its baseline file) and an events file with two malformed lines."""
    config = parse_config(CONFIG_DATA)
    training = [{"x": i % 15 - 2, "color": ["red", "green", "blue"][i % 3]} for i in range(90)]
    baseline = tmp_path / "baseline.json"
    baseline.write_text(baseline_from_events(config, training).model_dump_json())
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({**CONFIG_DATA, "baseline": str(baseline)}))
    events = [
        {"ts": T0 + i * 0.7, "model": "ab"[i % 2], "x": i % 13, "color": ["red", "blue"][i % 2]}
        for i in range(60)
    ]
    lines = [json.dumps(e).encode() for e in events]
    lines[10:10] = [b"{broken", b'{"model": "a"}']
    events_path = tmp_path / "events.jsonl"
    events_path.write_bytes(b"\n".join(lines) + b"\n")
    return config_path, events_path


def test_the_file_pipeline_example_reports_what_replay_does(tmp_path: Path) -> None:
    config_path, events_path = _write_job(tmp_path)
    output = tmp_path / "reports"
    prism = [
        "--runner=PrismRunner",
        f"--prism_location={ensure_installed()}",
        "--environment_type=LOOPBACK",
    ]
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "beam_pipeline.py"),
            str(config_path),
            str(events_path),
            str(output),
            *prism,
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    reports = sorted(
        (
            DriftReport.model_validate_json(line)
            for path in output.glob("reports-*.jsonl")
            for line in path.read_text().splitlines()
        ),
        key=lambda r: (r.window_start, r.key or "", r.feature, r.revision),
    )
    dead = [
        line for path in output.glob("dead-letters-*.txt") for line in path.read_text().splitlines()
    ]

    from kldrift import load_config, read_baseline

    config = load_config(config_path)
    replay_out, replay_dead = tmp_path / "replay.jsonl", tmp_path / "replay-dead.jsonl"
    run_replay(
        config,
        read_baseline(config.baseline),
        str(events_path),
        str(replay_out),
        str(replay_dead),
        beam_args=local_runner_args([]),
    )
    expected = [DriftReport.model_validate_json(x) for x in replay_out.read_text().splitlines()]
    assert len(expected) == 2 * 2 * 6  # 2 keys x 2 features x windows [-10, 10) ... [40, 60)
    assert reports == expected  # the same computation: equal to the last bit
    reasons = sorted(json.loads(x)["reason"] for x in replay_dead.read_text().splitlines())
    assert reasons == ["missing_event_time", "not_json"]
    assert sorted(d.split("reason='")[1].split("'")[0] for d in dead) == reasons


def test_the_dataflow_example_builds_offline_with_every_step(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import dataflow_pipeline
    finally:
        sys.path.remove(str(ROOT / "examples"))
    config_path, _ = _write_job(tmp_path)
    args, beam_args = dataflow_pipeline.parse_args(
        [
            "--config",
            str(config_path),
            "--subscription",
            "projects/my-project/subscriptions/ev",
            "--bootstrap",
            "broker:9092",
            "--topic",
            "drift",
            "--runner",
            "DataflowRunner",
        ]
    )
    assert beam_args == ["--runner", "DataflowRunner"]
    pipeline = beam.Pipeline(options=PipelineOptions(["--streaming"]))
    dataflow_pipeline.build(pipeline, args)
    labels = {t.unique_name for t in pipeline.to_runner_api().components.transforms.values()}
    for step in (
        "ReadEvents",
        "SlidingKLDivergence/Batch",
        "SlidingKLDivergence/Bin",
        "SlidingKLDivergence/PaneHistograms",
        "SlidingKLDivergence/Revise",
        "SlidingKLDivergence/Score",
        "WriteReports/Send",
        "WriteDeadLetters/Send",
    ):
        assert step in labels, f"{step} missing from {sorted(labels)}"


def test_the_kafka_sinks_write_what_kldrift_run_writes(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    config_path, events_path = _write_job(tmp_path)
    from kldrift import load_config, read_baseline

    config = load_config(config_path)
    out = tmp_path / "replay.jsonl"
    run_replay(
        config,
        read_baseline(config.baseline),
        str(events_path),
        str(out),
        beam_args=local_runner_args([]),
    )
    reports = [DriftReport.model_validate_json(x) for x in out.read_text().splitlines()]
    dead = [DeadLetter(b"{broken", "not_json", "bad syntax", "SlidingKLDivergence")]
    topic = f"library-sink-{tmp_path.name}"
    # The broker does not create topics on first use: a missing topic fails, naming it, at once
    # (not after the outage timeout, as an unreachable cluster would).
    started = time.monotonic()
    unreachable_s = 3600  # how long an unreachable cluster would be waited for
    sink = WriteReportsToKafka(kafka_bootstrap, topic, outage_timeout=unreachable_s)
    with (
        pytest.raises(Exception, match=f"{topic} do not exist.*create_topic=True"),
        beam.Pipeline(options=pipeline_options(local_runner_args([]), streaming=False)) as pipeline,
    ):
        _ = pipeline | beam.Create(reports) | sink
    assert time.monotonic() - started < unreachable_s / 10
    with beam.Pipeline(
        options=pipeline_options(local_runner_args([]), streaming=False)
    ) as pipeline:
        _ = (
            pipeline
            | "Reports" >> beam.Create(reports)
            | WriteReportsToKafka(kafka_bootstrap, topic, create_topic=True)
        )
        _ = (
            pipeline
            | "Dead" >> beam.Create(dead)
            | WriteDeadLettersToKafka(kafka_bootstrap, topic + ".dead", create_topic=True)
        )
    consumer = KafkaConsumer(
        topic,
        topic + ".dead",
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    messages = list(consumer)
    consumer.close()
    written = {m.key.decode(): m for m in messages if m.topic == topic}
    assert len(written) == len(reports)
    for report in reports:
        message = written[report.message_key]  # pipeline|key|feature|start|end
        assert DriftReport.model_validate_json(message.value) == report
        assert dict(message.headers)["schema_version"] == str(report.schema_version).encode()
    [dead_message] = [m for m in messages if m.topic == topic + ".dead"]
    assert dead_message.value == b"{broken"
    assert dead_message.key is None  # no offset: nothing for compaction to fold it into
    assert dict(dead_message.headers)["reason"] == b"not_json"


def test_readme_shows_the_example_pipeline_as_it_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Use it in your own Beam pipeline", 1)[1]
    snippet = section.split("```python\n", 1)[1].split("```", 1)[0]
    example = {
        line.strip() for line in (ROOT / "examples" / "beam_pipeline.py").read_text().splitlines()
    }
    missing = [line for line in snippet.splitlines() if line.strip() not in example]
    assert not missing, f"README's pipeline differs from examples/beam_pipeline.py: {missing}"


def test_the_retrain_consumer_example_retrains_from_window_summaries(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    """examples/retrain_consumer.py on a real broker: every feature report of a model drifts, its
    window summaries say 3 of 5 windows drifted; it writes one retraining job, for the model."""
    import os
    import signal
    import uuid

    from _jobs import send_reports, wait_for
    from _reports import make_report, make_summary

    from kldrift.local.kafka import create_topics

    topic = f"examples-retrain-{uuid.uuid4().hex[:8]}"
    create_topics(kafka_bootstrap, {topic: 1})
    records: list = []
    for minute, drift in enumerate([False, True, True, False, True], start=1):
        records.append(make_report(minute, True, key="model-a"))
        records.append(make_summary(minute, drift, key="model-a"))
    send_reports(kafka_bootstrap, topic, records)
    jobs = tmp_path / "jobs"
    consumer = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "examples" / "retrain_consumer.py"),
            "--bootstrap",
            kafka_bootstrap,
            "--topic",
            topic,
            "--group",
            f"retrain-{uuid.uuid4().hex[:8]}",
            "--jobs",
            str(jobs),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        wait_for(lambda: jobs.exists() and any(jobs.iterdir()), 60, "the retraining job file")
        time.sleep(1.0)
    finally:
        consumer.send_signal(signal.SIGINT)
        output, _ = consumer.communicate(timeout=30)
    [job] = list(jobs.iterdir())
    trigger = json.loads(job.read_text())
    assert trigger["key"] == "model-a" and trigger["feature"] is None
    assert trigger["drifted_windows"] == 3 and trigger["window_end"] == "2024-01-01T00:05:00Z"
    assert output.count('"combined_p_value"') == 5 and "Traceback" not in output, output
