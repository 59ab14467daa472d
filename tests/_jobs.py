"""Helpers for end-to-end tests of `kldrift run`: the CLI, waiting, tailing the report topic, and a
streaming job that is always stopped (SIGINT, then the process group killed) with its output kept."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from kafka import KafkaConsumer, TopicPartition

from kldrift.local import flink, procs
from kldrift.schemas.baseline import Baseline, FeatureBaseline
from kldrift.schemas.report import DriftReport, WindowSummary, parse_report_record
from kldrift.synthetic import LATENCY_EDGES, demo_config, make_event

KLDRIFT = str(Path(sys.executable).with_name("kldrift"))

LATENCY_BASELINE = Baseline.create(
    [
        FeatureBaseline(
            name="latency_ms",
            kind="numeric",
            edges=LATENCY_EDGES,
            counts=[5, 60, 120, 200, 350, 200, 50, 15, 1],
        )
    ],
    source="test",
    created_at="2026-11-25T00:00:00Z",
)
"""A one-feature baseline (the synthetic events' latency_ms) for the restart tests."""
LATENCY_FEATURES = [{"name": "latency_ms", "kind": "numeric", "edges": LATENCY_EDGES}]


def latency_job(
    tmp_path: Path, name: str, kafka: dict | None, size_s: int, period_s: int, lateness_s: int
) -> Path:
    """A one-feature job (latency_ms against LATENCY_BASELINE) written to tmp_path/config.yaml."""
    (tmp_path / "baseline.json").write_text(LATENCY_BASELINE.model_dump_json())
    config = demo_config(
        name=name,
        size=f"{size_s}s",
        period=f"{period_s}s",
        allowed_lateness=f"{lateness_s}s",
        kafka=kafka,
        baseline=str(tmp_path / "baseline.json"),
        features=LATENCY_FEATURES,
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def trained_job(
    tmp_path: Path,
    name: str,
    kafka: dict,
    size_s: int,
    period_s: int,
    lateness_s: int,
    *,
    training_events: int,
    partitions: int,
    features: list[dict] | None = None,
) -> Path:
    """A job of the synthetic events (all four features unless `features`) written to
    tmp_path/config.yaml, its baseline built by `kldrift baseline` from `training_events`
    synthetic training events into tmp_path/baseline.json, and its input topic created with
    `partitions` partitions."""
    from kldrift.local.kafka import create_topics
    from kldrift.synthetic import training_lines

    baseline = tmp_path / "baseline.json"
    config = demo_config(
        name=name,
        size=f"{size_s}s",
        period=f"{period_s}s",
        allowed_lateness=f"{lateness_s}s",
        kafka=kafka,
        baseline=str(baseline),
        features=features,
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    training = tmp_path / "training.jsonl"
    training.write_bytes(b"\n".join(training_lines(training_events)) + b"\n")
    built = run_cli(
        "baseline", "--config", str(path), "--input", str(training), "--output", str(baseline)
    )
    assert built.returncode == 0, built.stderr[-3000:]
    create_topics(kafka["bootstrap_servers"], {kafka["input_topic"]: partitions})
    return path


def window_starts(t: float, size_s: int, period_s: int) -> list[float]:
    """The starts of the sliding windows holding event time `t`."""
    last = math.floor(t / period_s) * period_s
    return [float(last - i * period_s) for i in range(size_s // period_s)]


def last_window_reported(
    events: LiveEvents, tail: ReportTail, size_s: int, period_s: int, timeout_s: float = 60
) -> None:
    """Stop the producer, wait for the report of the window holding its last event, then drain
    the report topic (the other keys' reports of that window, late revisions)."""
    events.stop()
    last_start = window_starts(events.sent[-1]["ts"], size_s, period_s)[0]
    wait_for(lambda: tail.has(last_start), timeout_s, "the last window's report")
    tail.drain()


def window_counts(events: list[dict], size_s: int, period_s: int) -> Counter:
    """Worked out here, independently of kldrift: the number of `events` in each (key, window
    start) of sliding windows `size_s` every `period_s` (the synthetic events' key is `model`)."""
    counts: Counter = Counter()
    for event in events:
        for start in window_starts(event["ts"], size_s, period_s):
            counts[(event["model"], start)] += 1
    return counts


def last_counts(reports: list[DriftReport]) -> dict[tuple[str | None, float], int]:
    """Each (key, window start)'s count in the newest of its reports (`reports` in the order they
    reached the topic)."""
    return {(r.key, r.window_start.timestamp()): r.count for r in reports}


def run_cli(
    *args: str,
    timeout: float = 180,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    """`kldrift ARGS`, its output captured; `env` adds to this process's environment."""
    return subprocess.run(
        [KLDRIFT, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **env} if env else None,
        cwd=cwd,
    )


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class ReportTail:
    """Consumes the report topic as the job writes it: the features' reports in `reports` (with
    each one's CreateTime in `arrived_ms`), the window summaries in `summaries`."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = KafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
        )
        self.reports: list[DriftReport] = []
        self.arrived_ms: list[int] = []
        self.summaries: list[WindowSummary] = []

    def poll(self) -> list[DriftReport]:
        for records in self.consumer.poll(timeout_ms=200).values():
            for record in records:
                parsed = parse_report_record(record.value)
                if isinstance(parsed, WindowSummary):
                    self.summaries.append(parsed)
                else:
                    self.reports.append(parsed)
                    self.arrived_ms.append(record.timestamp)
        return self.reports

    def drain(self, quiet_s: float = 2.0) -> list[DriftReport]:
        """Every report on the topic so far: polls until none arrives for `quiet_s`."""
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < quiet_s:
            before = len(self.reports)
            if len(self.poll()) > before:
                quiet_since = time.monotonic()
        return self.reports

    def has(self, window_start: float, revision: int = 0, key: str | None = None) -> bool:
        return any(
            r.window_start.timestamp() == window_start
            and r.revision == revision
            and (key is None or r.key == key)
            for r in self.poll()
        )

    def close(self) -> None:
        self.consumer.close()


STOPPED_BY_CTRL_C = 130
"""`kldrift run`'s exit code after SIGINT (Ctrl-C) stopped it cleanly: 128 + 2, the shell's way."""
STOPPED_BY_SIGTERM = 143
"""Likewise after SIGTERM: 128 + 15."""


@dataclass
class Job:
    process: subprocess.Popen
    output: str = ""
    returncode: int | None = None
    totals: dict[str, int] = field(default_factory=dict)


@contextmanager
def streaming_job(*args: str) -> Iterator[Job]:
    """`kldrift run ARGS` in its own process group; on exit it is stopped like Ctrl-C (SIGINT; it
    then exits STOPPED_BY_CTRL_C) and killed if it does not stop within 60 s. A failure inside the
    block is re-raised with the job's output appended."""
    process = subprocess.Popen(
        [KLDRIFT, "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    job = Job(process)
    failure: BaseException | None = None
    try:
        yield job
    except BaseException as err:
        failure = err
    finally:
        stop(job)
    if failure is not None:
        raise AssertionError(f"{failure}\njob output:\n{job.output[-6000:]}") from failure


STOP_LINES = [
    "kldrift run: stopping (cancelling the job)",
    "kldrift run: totals: ",
    "kldrift run: stopped",
]
"""What a stop prints (line beginnings), after which nothing."""


def assert_clean_stop(job: Job) -> int:
    """A job stopped like Ctrl-C exited 130 with no traceback, one totals line, and after
    `stopping` nothing but the totals and `stopped`; returns the index of its `stopping` line."""
    lines = job.output.splitlines()
    assert job.returncode == STOPPED_BY_CTRL_C, job.output[-4000:]
    assert "Traceback" not in job.output, job.output[-6000:]
    assert sum("kldrift run: totals:" in line for line in lines) == 1, job.output[-4000:]
    stopping = lines.index(STOP_LINES[0])
    after = lines[stopping:]
    assert len(after) == len(STOP_LINES), after
    assert all(line.startswith(b) for line, b in zip(after, STOP_LINES, strict=True)), after
    assert job.totals["records_consumed"] > 0
    return stopping


def stop(job: Job, signum: int = signal.SIGINT) -> None:
    """Stop the job with `signum` (like Ctrl-C by default) and keep its output, exit code and
    totals; kill it if it does not stop within 60 s. Nothing happens to a job already stopped."""
    if job.returncode is not None:
        return
    if signum == signal.SIGINT:  # as a terminal's Ctrl-C: to the job's whole process group
        os.killpg(job.process.pid, signum)
    else:  # as `docker stop` or Kubernetes: to the process only
        job.process.send_signal(signum)
    try:
        _keep(job, job.process.communicate(timeout=60)[0])
    except subprocess.TimeoutExpired:
        os.killpg(job.process.pid, signal.SIGKILL)
        _keep(job, job.process.communicate()[0])


def wait_ended(job: Job, timeout_s: float) -> float:
    """Seconds until the job exits by itself (subprocess.TimeoutExpired if not within
    `timeout_s`), its output, exit code and totals kept."""
    started = time.monotonic()
    _keep(job, job.process.communicate(timeout=timeout_s)[0])
    return time.monotonic() - started


def _keep(job: Job, output: str) -> None:
    job.output = output
    job.returncode = job.process.returncode
    job.totals = parse_totals(output)


def parse_totals(output: str) -> dict[str, int]:
    """The counters of the job's `kldrift run: totals:` line ({} if it printed none)."""
    line = next((line for line in output.splitlines() if "totals:" in line), None)
    if line is None:
        return {}
    # "name number" pairs; none when the runner serves no metrics ("not available from ...").
    pairs = re.findall(r"([a-z_]+) (\d+)", line.split("totals:")[1])
    return {name: int(value) for name, value in pairs}


def job_kafka(bootstrap: str, prefix: str, run_id: str, **settings: str) -> dict[str, str]:
    """A config's `kafka:` section with topics of their own (`PREFIX-events-RUNID`, ...)."""
    return {
        "bootstrap_servers": bootstrap,
        "input_topic": f"{prefix}-events-{run_id}",
        "output_topic": f"{prefix}-drift-{run_id}",
        "dead_letter_topic": f"{prefix}-dead-{run_id}",
        **settings,
    }


class LiveEvents:
    """A producer thread sending synthetic events stamped with the wall clock (about 100 per
    second, keys model-a/model-b alternating, dealt round-robin to `partitions`) until stopped;
    `sent` holds every event sent."""

    def __init__(self, bootstrap: str, topic: str, partitions: int = 1, seed: int = 3) -> None:
        from kafka import KafkaProducer

        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        self.topic = topic
        self.partitions = partitions
        self.seed = seed
        self.sent: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = np.random.default_rng(self.seed)
        while not self._stop.is_set():
            i = len(self.sent)
            event = make_event(rng, time.time(), ("model-a", "model-b")[i % 2], 0.0)
            self.producer.send(
                self.topic, json.dumps(event).encode(), partition=i % self.partitions
            )
            self.sent.append(event)
            time.sleep(0.01)
        self.producer.flush()

    def start(self) -> LiveEvents:
        self._thread.start()
        return self

    def grow(self, partitions: int, timeout_s: float = 30) -> None:
        """Deal the next events over `partitions` partitions, once the producer knows them (the
        topic was grown to that many)."""
        deadline = time.monotonic() + timeout_s
        while len(self.producer.partitions_for(self.topic) or ()) < partitions:
            if time.monotonic() > deadline:
                raise AssertionError(f"the producer never saw {partitions} partitions")
            self.producer._metadata.request_update()
            time.sleep(0.2)
        self.partitions = partitions

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(timeout=10)
            self.producer.close()

    def __enter__(self) -> LiveEvents:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


# --- kldrift watch ---------------------------------------------------------------------------


def report_topic_config(tmp_path: Path, bootstrap: str, name: str) -> tuple[str, Path]:
    """A fresh report topic (`NAME-RUNID`, one partition) and tmp_path/config.yaml, a job of the
    synthetic features named `name` whose kafka.output_topic is that topic."""
    from kldrift.local.kafka import create_topics

    topic = f"{name}-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, {topic: 1})
    kafka = {
        "bootstrap_servers": bootstrap,
        "input_topic": "unused",
        "output_topic": topic,
        "dead_letter_topic": "unused-dead",
    }
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(demo_config(name=name, kafka=kafka)))
    return topic, config


def send_reports(bootstrap: str, topic: str, reports: list) -> None:
    """Write `reports` (or window summaries) to `topic` as the job does (keyed by their message key)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    for report in reports:
        producer.send(topic, report.to_json_bytes(), key=report.message_key.encode())
    producer.close()


@dataclass
class Watch:
    group: str
    output: str = ""
    returncode: int | None = None


@contextmanager
def watcher(config: Path, *args: str) -> Iterator[Watch]:
    """`kldrift watch --config CONFIG --group (fresh) --from-beginning ARGS`; on exit it is stopped
    like Ctrl-C (SIGINT) and its output kept. A failure inside the block is re-raised with the
    watcher's output appended."""
    watch = Watch(group=f"watchers-{uuid.uuid4().hex[:6]}")
    process = subprocess.Popen(
        [
            KLDRIFT,
            "watch",
            "--config",
            str(config),
            "--group",
            watch.group,
            "--from-beginning",
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    failure: BaseException | None = None
    try:
        yield watch
    except BaseException as err:
        failure = err
    finally:
        process.send_signal(signal.SIGINT)
        watch.output, _ = process.communicate(timeout=30)
        watch.returncode = process.returncode
    if failure is not None:
        raise AssertionError(f"{failure}\nwatch output:\n{watch.output[-6000:]}") from failure


def committed(bootstrap: str, group: str, topic: str) -> int | None:
    """The offset `group` committed on partition 0 of `topic` (None if none)."""
    checker = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    try:
        return checker.committed(TopicPartition(topic, 0))
    finally:
        checker.close()


def flink_job_server_pids(under: int | None = None) -> set[int]:
    """Live processes whose command line names Beam's Flink job server launcher jar; with `under`,
    only descendants of that process (another test may run its own job server meanwhile)."""
    parents = {process.pid: process.ppid for process in procs.live_processes()}
    found = {pid for pid in parents if flink.JAR_NAME in (procs.cmdline(pid) or "")}
    if under is None:
        return found

    def descends(pid: int) -> bool:
        while pid > 1:
            if pid == under:
                return True
            pid = parents.get(pid, 0)
        return False

    return {pid for pid in found if descends(pid)}


def replayed_reports(
    tmp_path: Path, config_path: Path, events: list[dict]
) -> dict[str, DriftReport]:
    """`kldrift replay` of `events` (written as JSON lines) with `config_path`: its reports by
    message key."""
    events_file = tmp_path / "replayed-events.jsonl"
    events_file.write_text("".join(json.dumps(e) + "\n" for e in events))
    out = tmp_path / "replayed-reports.jsonl"
    replayed = run_cli(
        "replay", "--config", str(config_path), "--input", str(events_file), "--output", str(out)
    )
    assert replayed.returncode == 0, replayed.stderr[-3000:]
    return {
        r.message_key: r for r in map(DriftReport.from_json_bytes, out.read_bytes().splitlines())
    }
