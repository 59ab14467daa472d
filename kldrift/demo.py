"""`kldrift demo`: the whole loop on one machine in about a minute.

A local Kafka broker, a baseline built from synthetic training data, the streaming job on the local
runner, and a live synthetic stream in accelerated event time that drifts at a known moment. A live
table shows the latest report per (key, feature); at the end a summary, the reports and plots.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from kldrift.schemas.report import DriftReport, parse_report_record
from kldrift.synthetic import (
    AVRO_EVENT_SCHEMA,
    avro_record,
    demo_config,
    make_event,
    training_lines,
)

KEYS = ["model-a", "model-b"]
MALFORMED = [b"{not json", b'{"model": "model-a", "latency_ms": 3}']


@dataclass
class DemoOptions:
    out_dir: Path
    duration_s: float = 40.0
    """Wall-clock seconds of live events."""
    speed: float = 60.0
    """Event-time seconds per wall-clock second."""
    rate: float = 400.0
    """Events per wall-clock second."""
    drift_at: float = 0.5
    """When drift starts, as a fraction of the run."""
    drift_size: float = 1.0
    bootstrap: str | None = None
    format: str = "json"
    """json, or avro: events written with confluent-kafka's AvroSerializer through a local
    Schema Registry (kldrift.local.registry)."""
    window: str = "2m"
    period: str = "30s"
    live: bool = True
    plots: bool = True


@dataclass
class DemoResult:
    reports: list[DriftReport]
    drift_at_s: float
    """Epoch seconds (event time) at which drift was injected."""
    events_produced: int
    dead_letters: int
    out_dir: Path
    plots: list[Path] = field(default_factory=list)

    @property
    def first_drift(self) -> DriftReport | None:
        """The earliest flagged report of a window that ends after the injected moment."""
        flagged = [r for r in self.reports if r.drift and not self._before_drift(r)]
        return min(flagged, key=lambda r: r.window_end) if flagged else None

    @property
    def before_drift(self) -> list[DriftReport]:
        """Reports of windows that ended at or before the injected moment: a flag there is a false
        alarm, which each report's test raises in at most about `significance` of such windows."""
        return [r for r in self.reports if self._before_drift(r)]

    def _before_drift(self, report: DriftReport) -> bool:
        return report.window_end.timestamp() <= self.drift_at_s


def _say(message: str) -> None:
    print(f"demo: {message}", flush=True)


@contextlib.contextmanager
def _broker(bootstrap: str | None, out_dir: Path) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    from kldrift.local.kafka import LocalKafka, ensure_installed

    ensure_installed()
    _say("starting a local Kafka broker")
    broker = LocalKafka(data_dir=out_dir / "kafka")
    broker.start()
    _say(f"Kafka broker at {broker.bootstrap} (log {broker.log_path})")
    try:
        yield broker.bootstrap
    finally:
        broker.stop()
        _say("Kafka broker stopped")


@contextlib.contextmanager
def _registry(options: DemoOptions, out_dir: Path) -> Iterator[str | None]:
    """A local Schema Registry's URL for --format avro (stopped after), None for JSON."""
    if options.format == "json":
        yield None
        return
    from kldrift.local.registry import LocalRegistry

    _say("starting a local Schema Registry (Apicurio, in-memory)")
    registry = LocalRegistry(out_dir / "registry").start()
    _say(f"Schema Registry at {registry.url} in {registry.startup_seconds:.1f} s")
    try:
        yield registry.url
    finally:
        registry.stop()
        _say("Schema Registry stopped")


def _write_config(options: DemoOptions, bootstrap: str, registry: str | None = None) -> Path:
    run_id = str(int(time.time()))
    kafka = {
        "bootstrap_servers": bootstrap,
        "input_topic": f"demo.events.{run_id}",
        "output_topic": f"demo.drift.{run_id}",
        "dead_letter_topic": f"demo.dead-letter.{run_id}",
        "start_from": "earliest",
        "idle_timeout": "5s",
        "max_delay": "2s",
    }
    if registry is not None:
        kafka["format"] = options.format
        kafka["schema_registry"] = {"url": registry}  # type: ignore[assignment]
    config = demo_config(
        size=options.window,
        period=options.period,
        allowed_lateness="30s",
        kafka=kafka,
        baseline=str(options.out_dir / "baseline.json"),
    )
    path = options.out_dir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _build_baseline(config_path: Path, out_dir: Path) -> None:
    from kldrift.local.runners import local_runner_args
    from kldrift.pipeline.baseline import build_baseline
    from kldrift.schemas.config import load_config

    training = out_dir / "training.jsonl"
    training.write_bytes(b"\n".join(training_lines(20_000, seed=3)) + b"\n")
    _say("building the baseline from 20,000 training events (a Beam batch job)")
    baseline = build_baseline(
        load_config(config_path),
        str(training),
        str(out_dir / "baseline.json"),
        beam_args=local_runner_args([]),
    )
    _say(f"baseline {baseline.id[:12]} written to {out_dir / 'baseline.json'}")


class _Producer(threading.Thread):
    """Produces the live stream in accelerated event time: event time runs `speed` x wall-clock
    time, from now on, so the watermark follows the data and never the idle rule."""

    def __init__(
        self, options: DemoOptions, bootstrap: str, topic: str, registry: str | None = None
    ) -> None:
        super().__init__(daemon=True)
        from kafka import KafkaProducer

        self.options = options
        self.topic = topic
        self.encode = _encoder(topic, registry)
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
        self.start_event_s = time.time()
        self.end_event_s = self.start_event_s + options.duration_s * options.speed
        self.drift_at_s = self.start_event_s + options.drift_at * options.duration_s * options.speed
        self.produced = 0
        self.event_time_s = self.start_event_s
        self.stop_requested = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._produce()
        except BaseException as err:  # reported by the main thread
            self.error = err

    def _produce(self) -> None:
        rng = np.random.default_rng(42)
        wall0 = time.monotonic()
        tick_s = 0.1
        per_tick = max(1, round(self.options.rate * tick_s))
        malformed_at = {int(self.options.duration_s / tick_s * f) for f in (0.3, 0.7)}
        tick = 0
        while not self.stop_requested.is_set():
            wall = time.monotonic() - wall0
            if wall >= self.options.duration_s:
                break
            base = self.start_event_s + wall * self.options.speed
            step = tick_s * self.options.speed / per_tick
            for i in range(per_tick):
                t = base + i * step
                drift = self.options.drift_size if t >= self.drift_at_s else 0.0
                key = KEYS[int(rng.integers(len(KEYS)))]
                event = make_event(rng, t, key, drift)
                self.producer.send(self.topic, self.encode(event))
            self.produced += per_tick
            self.event_time_s = base
            if tick in malformed_at:
                for value in MALFORMED:
                    self.producer.send(self.topic, value)
            tick += 1
            time.sleep(max(0.0, (tick * tick_s) - (time.monotonic() - wall0)))
        self.producer.flush()
        self.producer.close()


def _encoder(topic: str, registry: str | None) -> Callable[[dict], bytes]:
    """An event's Kafka value: JSON, or Avro framed for the registry by confluent-kafka's
    AvroSerializer (which registers the schema under TOPIC-value)."""
    if registry is None:
        return lambda event: json.dumps(event).encode()
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    serialize = AvroSerializer(
        SchemaRegistryClient({"url": registry}), json.dumps(AVRO_EVENT_SCHEMA)
    )
    context = SerializationContext(topic, MessageField.VALUE)

    def encode(event: dict) -> bytes:
        value = serialize(avro_record(event), context)
        assert value is not None
        return value

    return encode


def _fmt_time(epoch_s: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(epoch_s))


def _iso(epoch_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_s))


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render_table(latest: dict[tuple[str | None, str], DriftReport]) -> list[str]:
    """The live table: one row per (key, feature), its latest window."""
    header = (
        f"{'key':<9} {'feature':<16} {'window end':<10} {'events':>7} {'KL bits':>9} "
        f"{'debiased':>9} {'p-value':>9}  drift"
    )
    rows = [header, "-" * len(header)]
    for (key, feature), r in sorted(latest.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
        rows.append(
            f"{key or '-':<9} {feature:<16} {_fmt_time(r.window_end.timestamp()):<10} "
            f"{r.count:>7} {_fmt(r.kl_bits, '9.4f')} {_fmt(r.kl_bits_debiased, '9.4f')} "
            f"{_fmt(r.p_value, '9.2g')}  {'DRIFT' if r.drift else ''}"
        )
    return rows


class _Screen:
    def __init__(self, live: bool) -> None:
        self.live = live and sys.stdout.isatty()
        self.last_lines = 0
        self.last_print = 0.0

    def show(self, lines: list[str]) -> None:
        if self.live:
            if self.last_lines:
                sys.stdout.write(f"\x1b[{self.last_lines}F\x1b[J")
            sys.stdout.write("\n".join(lines) + "\n")
            sys.stdout.flush()
            self.last_lines = len(lines)
        elif time.monotonic() - self.last_print > 10:
            print(lines[0], flush=True)
            self.last_print = time.monotonic()


def _start_job(config_path: Path, log_path: Path) -> subprocess.Popen:
    log = log_path.open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "kldrift.cli", "run", "--config", str(config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop_job(job: subprocess.Popen) -> None:
    if job.poll() is not None:
        return
    job.send_signal(signal.SIGINT)
    try:
        job.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()


def _count_dead_letters(bootstrap: str, topic: str) -> int:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=2000
    )
    try:
        return sum(1 for _ in consumer)
    finally:
        consumer.close()


def _library_logs_to(path: Path) -> None:
    """The log records of the libraries the demo runs in this process (Beam's Prism job server and
    runner while the baseline is built, kafka-python) go to `path`, not the terminal, for the rest
    of the process: the demo's own lines are what a newcomer reads. Not undone: Beam logs the
    Prism job server's shutdown at exit."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


def run_demo(options: DemoOptions) -> DemoResult:
    """Run the demo; every service it started is stopped when it returns or raises."""
    out_dir = options.out_dir
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    _library_logs_to(out_dir / "demo.log")
    with _broker(options.bootstrap, out_dir) as bootstrap, _registry(options, out_dir) as registry:
        config_path = _write_config(options, bootstrap, registry)
        config = yaml.safe_load(config_path.read_text())["kafka"]
        from kldrift.local.kafka import create_topics

        create_topics(bootstrap, {config["input_topic"]: 3, config["output_topic"]: 1})
        _build_baseline(config_path, out_dir)
        job_log = out_dir / "job.log"
        _say(f"starting the streaming job on the local runner (log {job_log})")
        job = _start_job(config_path, job_log)
        try:
            return _stream_and_watch(options, bootstrap, config, job, out_dir, registry)
        finally:
            _stop_job(job)
            _say("streaming job stopped")


def _stream_and_watch(
    options: DemoOptions,
    bootstrap: str,
    kafka: dict[str, Any],
    job: subprocess.Popen,
    out_dir: Path,
    registry: str | None = None,
) -> DemoResult:
    from kafka import KafkaConsumer

    producer = _Producer(options, bootstrap, kafka["input_topic"], registry)
    consumer = KafkaConsumer(
        kafka["output_topic"], bootstrap_servers=bootstrap, auto_offset_reset="earliest"
    )
    reports: list[DriftReport] = []
    latest: dict[tuple[str | None, str], DriftReport] = {}
    screen = _Screen(options.live)
    _say(
        f"producing {options.rate:.0f} events/s for {options.duration_s:.0f} s at "
        f"{options.speed:.0f}x event time; drift of size {options.drift_size:g} at "
        f"{_fmt_time(producer.drift_at_s)} (event time)"
    )
    producer.start()
    settle_deadline: float | None = None
    try:
        while True:
            for records in consumer.poll(timeout_ms=250).values():
                for record in records:
                    report = parse_report_record(record.value)
                    if not isinstance(report, DriftReport):
                        continue  # a window summary: the demo shows the features' reports
                    reports.append(report)
                    latest[(report.key, report.feature)] = report
            if job.poll() is not None:
                raise RuntimeError(f"the streaming job exited early; see {out_dir / 'job.log'}")
            if producer.error is not None:
                raise producer.error
            progress = (
                f"event time {_fmt_time(producer.event_time_s)}, {producer.produced:,} events "
                f"produced, {len(reports)} reports received"
            )
            screen.show([progress, "", *render_table(latest)])
            if not producer.is_alive():
                settle_deadline = settle_deadline or time.monotonic() + 8
                if time.monotonic() > settle_deadline:
                    break
    finally:
        producer.stop_requested.set()
        producer.join(timeout=10)
        consumer.close()
    dead = _count_dead_letters(bootstrap, kafka["dead_letter_topic"])
    reports_path = out_dir / "reports.jsonl"
    reports_path.write_bytes(b"".join(r.to_json_bytes() + b"\n" for r in reports))
    result = DemoResult(reports, producer.drift_at_s, producer.produced, dead, out_dir)
    if options.plots:
        result.plots = _plots(reports_path, out_dir)
    return result


def _plots(reports_path: Path, out_dir: Path) -> list[Path]:
    try:
        from kldrift.report import write_report
    except ImportError as err:  # matplotlib is an optional extra
        _say(f"plots skipped: {err}")
        return []
    return write_report(reports_path, out_dir / "plots")


def summary(result: DemoResult) -> list[str]:
    first = result.first_drift
    windows = {r.message_key for r in result.reports}
    lines = [
        f"windows scored: {len(windows)} ({len(result.reports)} reports incl. revisions)",
        f"events produced: {result.events_produced:,}; dead-lettered: {result.dead_letters}",
        f"drift injected at {_iso(result.drift_at_s)} (event time)",
    ]
    calm = result.before_drift
    if calm:
        false_alarms = sum(r.drift for r in calm)
        lines.append(
            f"false alarms: {false_alarms} of {len(calm)} reports of windows that ended before the "
            f"drift were flagged (each tested at significance {calm[0].significance:g})"
        )
    if first is None:
        lines.append("drift first flagged: never")
    else:
        lines.append(
            f"drift first flagged: window {_fmt_time(first.window_start.timestamp())}-"
            f"{_fmt_time(first.window_end.timestamp())} ({first.key}, {first.feature}, "
            f"{first.kl_bits_debiased:.3f} bits debiased, p = {first.p_value:.2g})"
        )
    lines.append(f"reports: {result.out_dir / 'reports.jsonl'}")
    if result.plots:
        lines.append(f"plots: {result.out_dir / 'plots' / 'index.html'}")
    return lines


def main(options: DemoOptions) -> int:
    previous = signal.getsignal(signal.SIGINT)
    try:
        result = run_demo(options)
    except KeyboardInterrupt:
        _say("interrupted; everything stopped")
        return 0
    finally:
        signal.signal(signal.SIGINT, previous)
    print()
    for line in summary(result):
        print(f"demo: {line}")
    return 0
