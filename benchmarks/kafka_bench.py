"""Figures on a real Kafka broker: raw kafka-python produce/consume, `kldrift run` on a pre-loaded
topic (throughput, peak RSS) and on a live stream (report latency, RSS growth)."""

from __future__ import annotations

import contextlib
import json
import math
import re
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import data
from benchmarks.procs import (
    children,
    cpu_seconds,
    peak_rss_mb,
    rss_mb,
    runner_child,
    stop_group,
)
from kldrift.events import EventDecoder, RecordBatch
from kldrift.io import kafka_records
from kldrift.io.kafka_source import FETCH_PARTITION_BYTES
from kldrift.local import procs
from kldrift.local.kafka import create_topics
from kldrift.schemas.config import PipelineConfig
from kldrift.synthetic import make_event

PARTITIONS = 3
POLL_MAX_RECORDS = 2000
"""kafka-python max_poll_records of the raw consumer: kldrift's kafka.poll_max_records default."""
RAW_CONSUMER = {
    "max_poll_records": POLL_MAX_RECORDS,
    "max_partition_fetch_bytes": FETCH_PARTITION_BYTES,
}
"""The raw consumer's settings: kldrift's reader's. kafka-python reads the benchmark's topic
faster with them than with its defaults (500 records per poll, 1 MiB fetches), so the ceiling is
not a slowed one (benchmarks/README, "Issue 27 in the eighth session")."""
REPO = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# -- raw kafka-python ------------------------------------------------------------------------


def _producer(bootstrap: str, **settings: Any) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=bootstrap, **settings)


def produce(
    bootstrap: str, topic: str, lines: Sequence[bytes], tail: Sequence[bytes] = ()
) -> float:
    """Send `lines` round-robin over the topic's partitions, then each of `tail` to every
    partition; returns seconds from the first send to the end of flush()."""
    producer = _producer(bootstrap, acks=1, linger_ms=10, batch_size=256 * 1024)
    try:
        producer.partitions_for(topic)  # metadata first, outside the timing
        started = time.perf_counter()
        for i, line in enumerate(lines):
            producer.send(topic, value=line, partition=i % PARTITIONS)
        for line in tail:
            for partition in range(PARTITIONS):
                producer.send(topic, value=line, partition=partition)
        producer.flush()
        return time.perf_counter() - started
    finally:
        producer.close()


def consume(
    bootstrap: str, topic: str, decode: PipelineConfig | None = None, bulk: bool = False
) -> tuple[float, int]:
    """Drain the topic from its start with one kafka-python consumer (settings as kldrift's
    reader's: RAW_CONSUMER); with `decode`, also decode every poll's records as kldrift's reader
    does (EventDecoder.decode_columns); with `bulk`, the consumer parses record batches as kldrift's
    reader does (kldrift.io.kafka_records).
    Returns (seconds from the first poll to the last record, records)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        **RAW_CONSUMER,
    )
    if bulk and not kafka_records.install(consumer):
        raise RuntimeError("kldrift's bulk record parse does not fit this kafka-python")
    decoder = EventDecoder(decode) if decode is not None else None
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        begin = consumer.beginning_offsets(tps)
        end = consumer.end_offsets(tps)
        total = sum(end[tp] - begin[tp] for tp in tps)
        count = 0
        started = time.perf_counter()
        while count < total:
            for tp, records in consumer.poll(timeout_ms=100).items():
                count += len(records)
                if decoder is not None:
                    offsets, values = kafka_records.offsets_and_values(records)
                    decoder.decode_columns(RecordBatch(values, offsets, topic, tp[1]))
        return time.perf_counter() - started, count
    finally:
        consumer.close()


def fetched_responses(bootstrap: str, topic: str) -> list[tuple[int, bytes]]:
    """The raw fetch responses (fetch offset, bytes) of every partition of the topic, read from its
    start by a kafka-python consumer that keeps them."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.consumer.fetcher import Fetcher

    fetched: list[tuple[int, bytes]] = []

    class Keeping(Fetcher.PartitionRecords):
        def __init__(self, fetch_offset: int, tp: Any, records: Any, *args: Any, **kw: Any):
            fetched.append((fetch_offset, bytes(records._buffer)))
            super().__init__(fetch_offset, tp, records, *args, **kw)

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        **RAW_CONSUMER,
    )
    consumer._fetcher.PartitionRecords = Keeping
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        while any(consumer.position(tp) < end[tp] for tp in tps):
            consumer.poll(timeout_ms=100)
        return fetched
    finally:
        consumer.close()


def parse_rates(fetched: list[tuple[int, bytes]], rounds: int = 5) -> dict[str, float]:
    """Records/s of kafka-python's record parse and of kldrift's bulk parse over the same raw
    fetch responses, each taken `POLL_MAX_RECORDS` at a time into the offsets and values the reader
    uses (before the bulk parse: `[r.value for r in records]` and `[r.offset ...]`). The two
    alternate for `rounds` rounds; the median round of each."""
    from kafka.consumer.fetcher import Fetcher
    from kafka.record.memory_records import MemoryRecords
    from kafka.structs import TopicPartition

    tp = TopicPartition("bench", 0)
    kinds = {"kafka_python": Fetcher.PartitionRecords, "bulk": kafka_records.BulkPartitionRecords}
    seconds: dict[str, list[float]] = {kind: [] for kind in kinds}
    counts: dict[str, int] = {}
    for _ in range(rounds):
        for kind, records_class in kinds.items():
            count = 0
            started = time.perf_counter()
            for fetch_offset, raw in fetched:
                part = records_class(fetch_offset, tp, MemoryRecords(raw))
                while part:
                    records = part.take(POLL_MAX_RECORDS)
                    if records:
                        offsets, _ = kafka_records.offsets_and_values(records)
                        count += len(offsets)
            seconds[kind].append(time.perf_counter() - started)
            counts[kind] = count
    if counts["bulk"] != counts["kafka_python"]:
        raise RuntimeError(f"the parses took {counts} records from the same responses")
    return {kind: counts[kind] / statistics.median(seconds[kind]) for kind in kinds}


# -- watching a job from outside -------------------------------------------------------------


def _epoch_s(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class ReportTail(threading.Thread):
    """Consumes the report topic; keeps (producer timestamp in s, report fields) per report. The
    timestamp is the record's CreateTime, set by the job's producer when it sent the report."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        from kafka import KafkaConsumer

        self.consumer = KafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
        )
        self.reports: list[tuple[float, dict[str, Any]]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                for records in self.consumer.poll(timeout_ms=200).values():
                    for record in records:
                        report = json.loads(record.value)
                        if report.get("record") == "window_summary":
                            continue  # the window's verdict: latency is timed on its reports
                        fields = {
                            "key": report["key"],
                            "feature": report["feature"],
                            "window_start": _epoch_s(report["window_start"]),
                            "window_end": _epoch_s(report["window_end"]),
                            "revision": report["revision"],
                        }
                        self.reports.append((record.timestamp / 1000.0, fields))
        except BaseException as err:  # reported by the caller
            self.error = err
        finally:
            self.consumer.close()

    def first_reports(self, keep: Callable[[dict[str, Any]], bool]) -> dict[tuple, float]:
        """{(key, feature, window_start): arrival} of each revision-0 report that `keep` accepts."""
        found: dict[tuple, float] = {}
        for arrived, r in list(self.reports):
            if r["revision"] == 0 and keep(r):
                found.setdefault((r["key"], r["feature"], r["window_start"]), arrived)
        return found


def _group_offsets(admin: Any, group: str) -> dict[Any, Any]:
    """A consumer group's committed offsets (kafka-python 2.x and 3.x spell this differently)."""
    if hasattr(admin, "list_consumer_group_offsets"):
        return dict(admin.list_consumer_group_offsets(group))
    return dict(admin.list_group_offsets(group).get(group, {}))


class CommitWatcher(threading.Thread):
    """Polls the job's consumer group offsets. The reader commits the offsets it resumes from at
    the start of every read slice, before polling, so the first commit marks its first read."""

    def __init__(self, bootstrap: str, group: str, interval_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        from kafka import KafkaAdminClient

        self.admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        self.group = group
        self.interval_s = interval_s
        self.progress: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    @property
    def first_read(self) -> float | None:
        return self.progress[0][0] if self.progress else None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    offsets = _group_offsets(self.admin, self.group)
                except Exception as err:  # e.g. the group has no coordinator yet
                    self.error = err
                else:
                    if offsets:
                        total = sum(max(o.offset, 0) for o in offsets.values())
                        self.progress.append((time.time(), total))
                self.stop.wait(self.interval_s)
        finally:
            self.admin.close()


class MemorySampler(threading.Thread):
    """RSS of the job's Python process (its SDK harness too: LOOPBACK) and of its runner child
    (Prism, or the Flink job server's JVM); and the CPU seconds each has used. Keeps the pids of
    the runner processes it saw, so the harness can check they ended even if the job failed."""

    def __init__(self, pid: int, interval_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[tuple[float, float, float]] = []
        self.cpu: list[tuple[float, float, float]] = []
        self.runner: str | None = None
        """The runner's kind once seen: "prism" or "flink_job_server"."""
        self.runner_pids: list[tuple[int, str]] = []
        """(pid, kind) of every runner process seen."""
        self.worker_cpu: dict[int, list[tuple[float, float]]] = {}
        """(time, CPU seconds) of each SDK worker process (`kldrift run --worker-processes`)."""
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(self.interval_s)

    def sample(self) -> None:
        now = time.time()
        worker, worker_cpu = rss_mb(self.pid), cpu_seconds(self.pid)
        found = runner_child(self.pid)
        runner_mb = runner_cpu = None
        if found is not None:
            pid, self.runner = found
            if found not in self.runner_pids:
                self.runner_pids.append(found)
            runner_mb, runner_cpu = rss_mb(pid), cpu_seconds(pid)
        if worker is not None and runner_mb is not None:
            self.samples.append((now, worker, runner_mb))
        if worker_cpu is not None and runner_cpu is not None:
            self.cpu.append((now, worker_cpu, runner_cpu))
        for pid in worker_processes(self.pid):
            seconds = cpu_seconds(pid)
            if seconds is not None:
                self.worker_cpu.setdefault(pid, []).append((now, seconds))

    def cpu_between(self, start: float, end: float) -> dict[str, Any] | None:
        """CPU seconds used by the worker and by the runner process between two moments (nearest
        samples). `runner_cpu_s` is Prism's or the Flink job server JVM's (`runner` says which);
        `prism_cpu_s` repeats it for Prism (the key of earlier results)."""
        if len(self.cpu) < 2:
            return None
        first = min(self.cpu, key=lambda s: abs(s[0] - start))
        last = min(self.cpu, key=lambda s: abs(s[0] - end))
        if last[0] <= first[0]:
            return None
        cpu = {
            "seconds": last[0] - first[0],
            "worker_cpu_s": last[1] - first[1],
            "runner": self.runner,
            "runner_cpu_s": last[2] - first[2],
        }
        if self.runner == "prism":
            cpu["prism_cpu_s"] = cpu["runner_cpu_s"]
        if self.worker_cpu:
            cpu["worker_processes_cpu_s"] = sorted(
                (_used_between(samples, start, end) for samples in self.worker_cpu.values()),
                reverse=True,
            )
        return cpu


def _used_between(samples: list[tuple[float, float]], start: float, end: float) -> float:
    """CPU seconds a process used between two moments (its nearest samples; 0 before its first)."""
    before = [cpu for t, cpu in samples if t <= start]
    until = [cpu for t, cpu in samples if t <= end]
    return round((until[-1] if until else 0.0) - (before[-1] if before else 0.0), 2)


WORKER_MODULE = "kldrift.local.worker_processes"


def worker_processes(pid: int) -> list[int]:
    """The SDK worker processes `kldrift run --worker-processes` (process `pid`) started."""
    return [child for child, _ in children(pid) if WORKER_MODULE in (procs.cmdline(child) or "")]


def job_peaks(pid: int) -> dict[str, Any]:
    """Peak RSS (VmHWM, MB) of a running job's Python process and of its runner process (Prism or
    the Flink job server JVM), and the runner's pid and kind."""
    found = runner_child(pid)
    runner, kind = found if found is not None else (None, None)
    peaks = {
        "worker": peak_rss_mb(pid),
        "runner": peak_rss_mb(runner) if runner is not None else None,
        "runner_pid": runner,
        "runner_kind": kind,
    }
    processes = [peak_rss_mb(p) for p in worker_processes(pid)]
    if processes:
        peaks["worker_processes"] = processes
    return peaks


# -- kldrift run ---------------------------------------------------------------------------


@dataclass
class Job:
    """One `kldrift run` subprocess with its own topics and consumer group."""

    bootstrap: str
    workdir: Path
    name: str
    input_topic: str
    config: dict[str, Any]
    proc: subprocess.Popen | None = None
    kafka: dict[str, Any] = field(default_factory=dict)
    runner_args: tuple[str, ...] = ()
    """Beam flags after `--` (another runner than Prism)."""
    kafka_extra: dict[str, Any] = field(default_factory=dict)
    """More `kafka:` settings (e.g. readers)."""
    run_flags: tuple[str, ...] = ()
    """Flags of `kldrift run` itself (e.g. --worker-processes)."""

    def start(self, baseline: Path) -> None:
        run_id = uuid.uuid4().hex[:8]
        self.kafka = {
            "bootstrap_servers": self.bootstrap,
            "input_topic": self.input_topic,
            "output_topic": f"bench.{self.name}.reports.{run_id}",
            "dead_letter_topic": f"bench.{self.name}.dead.{run_id}",
            "group_id": f"bench.{self.name}.{run_id}",
            "start_from": "earliest",
            "max_delay": f"{data.MAX_DELAY_S}s",
            "idle_timeout": f"{data.IDLE_TIMEOUT_S}s",
            **self.kafka_extra,
        }
        create_topics(self.bootstrap, {self.kafka["output_topic"]: 1})
        create_topics(self.bootstrap, {self.kafka["dead_letter_topic"]: 1})
        config = dict(self.config, kafka=self.kafka, baseline=str(baseline))
        path = self.workdir / f"{self.name}-{run_id}.json"
        path.write_text(json.dumps(config, indent=1))
        self.log_path = self.workdir / f"{self.name}-{run_id}.log"
        self.started_at = time.time()
        with self.log_path.open("w") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kldrift.cli", "run", "--config", str(path), *self.run_flags]
                + (["--", *self.runner_args] if self.runner_args else []),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=REPO,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)

    def output(self, tail_chars: int = 3000) -> str:
        try:
            return self.log_path.read_text()[-tail_chars:]
        except OSError:
            return ""

    def ended(self) -> bool:
        """The process exited, or `kldrift run` printed that its job ended (it then exits)."""
        if not self.alive():
            return True
        text = self.output(200_000)
        return "kldrift run: job ended" in text or "kldrift run: job failed" in text

    def failure(self) -> str:
        """When the job ended, its exit code and the first error its output shows."""
        code = self.proc.poll() if self.proc is not None else None
        lines = [line.strip() for line in self.output(200_000).splitlines()]
        errors = [line for line in lines if re.match(r"^\w+(Error|Exception)\b.*:", line)]
        for i, line in enumerate(lines):
            if line.startswith("kldrift run: job failed"):
                status = next((x for x in lines[i : i + 4] if x.startswith("status =")), "")
                errors.insert(0, f"{line} {status}".strip())
                break
        after = time.time() - self.started_at
        return (
            f"{after:.0f} s after start, exit {code}; first error: "
            f"{errors[0] if errors else 'none printed'}"
        )

    def totals(self) -> dict[str, int]:
        for line in self.output(100_000).splitlines():
            if "totals:" in line:
                # Prism's log lines can land on the same line (same stderr): take name-number pairs.
                after = line.split("totals:", 1)[1]
                return {name: int(value) for name, value in re.findall(r"([a-z_]+) (\d+)", after)}
        return {}


class JobDied(RuntimeError):
    """`kldrift run` exited before the benchmark was done with it."""


def _wait(predicate: Callable[[], bool], timeout_s: float, job: Job, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if not job.alive():
            raise JobDied(
                f"kldrift run exited while waiting for {what} ({job.failure()})\n{job.output()}"
            )
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}:\n{job.output()}")


def streaming_trial(
    bootstrap: str,
    workdir: Path,
    config: dict[str, Any],
    baseline: Path,
    input_topic: str,
    expected: set[tuple[str, float]],
    events: int,
    runner_args: tuple[str, ...] = (),
    kafka_extra: dict[str, Any] | None = None,
    runner_pids: list[tuple[int, str]] | None = None,
    job_name: str = "stream",
    run_flags: tuple[str, ...] = (),
) -> dict[str, Any]:
    """`kldrift run` over the pre-loaded topic; events/s from its first read (first offset commit
    seen) to the arrival of the last data window's first report. The topic ends with a sentinel
    event per partition far past the data, so the watermark passes every data window's end as soon
    as it is read: no idle-timeout wait is included. The wait for the reports is bounded
    (TimeoutError); the job is stopped in every case. The (pid, kind) of the runner processes seen
    (Prism, the Flink job server) are appended to `runner_pids`, even if the trial fails.
    `job_name` names the job's config, log and topics in the work dir."""
    features = [f["name"] for f in config["features"]]
    wanted = {(k, f, float(s)) for k, s in expected for f in features}
    job = Job(
        bootstrap,
        workdir,
        job_name,
        input_topic,
        config,
        runner_args=runner_args,
        kafka_extra=dict(kafka_extra or {}),
        run_flags=run_flags,
    )
    job.start(baseline)
    tail = ReportTail(bootstrap, job.kafka["output_topic"])
    watcher = CommitWatcher(bootstrap, job.kafka["group_id"])
    sampler = MemorySampler(job.pid, interval_s=0.25)
    tail.start()
    watcher.start()
    sampler.start()
    started = time.time()
    peaks: dict[str, Any] = {}
    try:

        def arrived() -> dict[tuple, float]:
            return tail.first_reports(lambda r: r["key"] != data.SENTINEL_KEY)

        _wait(
            lambda: wanted <= set(arrived()),
            120 + events / 500,
            job,
            f"{len(wanted)} data-window reports",
        )
        peaks = job_peaks(job.pid)
    finally:
        sampler.stop.set()
        sampler.join(5)
        sampler.sample()  # a runner started after the last sample is still seen
        job.stop()
        tail.stop.set()
        watcher.stop.set()
        tail.join(10)
        watcher.join(10)
        if runner_pids is not None:
            runner_pids.extend(sampler.runner_pids)
    if tail.error is not None:
        raise tail.error
    first_read = watcher.first_read
    if first_read is None:
        raise RuntimeError(
            f"never saw the job's consumer group commit an offset (last error: {watcher.error!r})"
        )
    reports = arrived()
    last = max(reports[w] for w in wanted)
    first_report = min(reports[w] for w in wanted)
    read_all = next((t for t, offset in watcher.progress if offset >= events), None)
    # Events are uniform in event time: the first half's windows done -> half the events done.
    middle = statistics.median(s for _, s in expected)
    half = max(t for w, t in reports.items() if w in wanted and w[2] <= middle)
    halves_eps = None
    if first_read < half < last:
        halves_eps = (events / 2 / (half - first_read), events / 2 / (last - half))
    return {
        "eps": events / (last - first_read),
        "read_eps": events / (read_all - first_read) if read_all else None,
        "cpu": sampler.cpu_between(first_read, last),
        "halves_eps": halves_eps,
        "seconds": last - first_read,
        "startup_s": first_read - started,
        "first_report_after_s": first_report - first_read,
        "reports": len(wanted),
        "peak_rss_mb": peaks,
        "totals": job.totals(),
    }


class LiveProducer(threading.Thread):
    """Produces events in real time (event time = wall-clock time at the send) at `rate`/s, round
    robin over the partitions; drift from `drift_at` on. Keeps every event time sent."""

    def __init__(self, bootstrap: str, topic: str, rate: float, drift_at: float) -> None:
        super().__init__(daemon=True)
        self.producer = _producer(bootstrap, linger_ms=5)
        self.topic = topic
        self.rate = rate
        self.drift_at = drift_at
        self.times: list[float] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = np.random.default_rng(data.SEED)
        tick_s = 0.1
        per_tick = max(1, round(self.rate * tick_s))
        began = time.monotonic()
        tick = 0
        try:
            while not self.stop.is_set():
                for _ in range(per_tick):
                    now = time.time()
                    drift = 1.0 if now >= self.drift_at else 0.0
                    key = ["model-a", "model-b"][int(rng.integers(2))]
                    event = make_event(rng, now, key, drift)
                    partition = len(self.times) % PARTITIONS
                    self.producer.send(self.topic, json.dumps(event).encode(), partition=partition)
                    self.times.append(event["ts"])
                self.producer.flush()
                tick += 1
                self.stop.wait(max(0.0, began + tick * tick_s - time.monotonic()))
        except BaseException as err:  # reported by the caller
            self.error = err
        finally:
            self.producer.close()


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def live_run(
    bootstrap: str,
    workdir: Path,
    config: dict[str, Any],
    baseline: Path,
    steady_s: float,
    rate: float,
) -> dict[str, Any]:
    """`kldrift run` on a live stream for `steady_s` s after its first report: report latency
    (from sending the first event at or past a window's end to that window's report arriving) and
    RSS growth of the job (worker process and Prism) over the steady part."""
    topic = f"bench.live.events.{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, {topic: PARTITIONS})
    period = int(config["window"]["period"].rstrip("s"))
    features = [f["name"] for f in config["features"]]
    job = Job(bootstrap, workdir, "live", topic, config)
    job.start(baseline)
    tail = ReportTail(bootstrap, job.kafka["output_topic"])
    tail.start()
    producer = LiveProducer(bootstrap, topic, rate, drift_at=time.time() + 15 + steady_s / 2)
    producer.start()
    sampler = MemorySampler(job.pid)
    peaks: dict[str, Any] = {}
    failure = None
    try:
        _wait(lambda: bool(tail.reports), 180, job, "the first live report")
        steady_start = time.time()
        sampler.start()
        deadline = steady_start + steady_s
        while time.time() < deadline:
            if job.ended():
                # Keep what was measured up to here; the caller reports the failure.
                failure = f"kldrift run ended during the live run ({job.failure()})"
                break
            if producer.error is not None:
                raise producer.error
            time.sleep(0.5)
        steady_end = time.time()
        sampler.stop.set()
        sampler.join(5)
        producer.stop.set()
        producer.join(10)
        sent = np.array(producer.times)
        last_sent = float(sent.max())
        # Windows closed by the data itself (an event at or past end + max_delay was sent).
        first_end = (int(steady_start) // period + 1) * period
        ends = [
            e
            for e in range(first_end, int(last_sent) + 1, period)
            if e + data.MAX_DELAY_S <= last_sent
        ]
        wanted = {(k, f, float(e)) for e in ends for k in ("model-a", "model-b") for f in features}
        size = int(config["window"]["size"].rstrip("s"))

        def arrived() -> dict[tuple, float]:
            return {
                (k, f, s + size): t for (k, f, s), t in tail.first_reports(lambda r: True).items()
            }

        with contextlib.suppress(TimeoutError, JobDied):
            _wait(
                lambda: wanted <= set(arrived()),
                2 * period + data.IDLE_TIMEOUT_S + 15,
                job,
                "the live windows' reports",
            )
        if failure is None and job.ended():
            failure = f"kldrift run ended before the live run's last reports ({job.failure()})"
        peaks = job_peaks(job.pid)
    finally:
        producer.stop.set()
        sampler.stop.set()
        job.stop()
        tail.stop.set()
        tail.join(10)
    reports = arrived()
    latencies, from_watermark, missing = [], [], 0
    sent.sort()
    for key, feature, end in sorted(wanted):
        if (key, feature, end) not in reports:
            missing += 1
            continue
        past_end = float(sent[np.searchsorted(sent, end, side="left")])
        past_delay = float(sent[np.searchsorted(sent, end + data.MAX_DELAY_S, side="left")])
        latencies.append(reports[(key, feature, end)] - past_end)
        from_watermark.append(reports[(key, feature, end)] - past_delay)
    samples = sampler.samples or [(time.time(), math.nan, math.nan)]
    head, tail_samples = samples[:5], samples[-5:]
    growth_worker = _median([s[1] for s in tail_samples]) - _median([s[1] for s in head])
    growth_prism = _median([s[2] for s in tail_samples]) - _median([s[2] for s in head])
    return {
        "latencies_s": latencies,
        "latency_from_watermark_s": from_watermark,
        "windows": len(ends),
        "missing_reports": missing,
        "rss_growth_mb": {
            "worker": growth_worker,
            "prism": growth_prism,
            "total": growth_worker + growth_prism,
            "start_worker": _median([s[1] for s in head]),
            "start_prism": _median([s[2] for s in head]),
            "seconds": samples[-1][0] - samples[0][0],
            "samples": len(samples),
        },
        "peak_rss_mb": peaks,
        "events_sent": len(sent),
        "totals": job.totals(),
        "cpu": sampler.cpu_between(steady_start, steady_end),
        "failure": failure,
        "job_output": job.output(6000) if failure else "",
    }
