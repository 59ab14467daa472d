"""A broker outage under a live stream: `kldrift run` rides it out (the broker is killed, restarted
~20 s later on the same port and data dir, while the producer buffers), every window's final count
equals what was produced, nothing is too late; and past `kafka.outage_timeout` the job stops with
one clear line. Real broker (its own, so the session's stays up), Prism, the CLI."""

from __future__ import annotations

import json
import math
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _jobs import (
    STOPPED_BY_CTRL_C,
    Job,
    ReportTail,
    job_kafka,
    latency_job,
    streaming_job,
    wait_for,
    window_counts,
    window_starts,
)
from kafka import KafkaConsumer, KafkaProducer

from kldrift.local.kafka import LocalKafka, create_topics
from kldrift.synthetic import make_event

pytestmark = pytest.mark.services

SIZE_S, PERIOD_S, LATENESS_S = 6, 2, 2
PARTITIONS = 2
OUTAGE_S = 20.0


class _AckedEvents:
    """A producer thread (about 50 events/s, wall-clock event times, keys alternating, partitions
    round-robin) that keeps sending while the broker is away: kafka-python buffers and retries.
    `acked()` is every event the broker acknowledged, `failed` every send it did not."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            delivery_timeout_ms=120_000,
            reconnect_backoff_max_ms=1000,  # back soon after the broker: the job's resume is timed
        )
        self.topic = topic
        self.sent: list[tuple[dict, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = np.random.default_rng(12)
        while not self._stop.is_set():
            i = len(self.sent)
            event = make_event(rng, time.time(), ("model-a", "model-b")[i % 2], 0.0)
            future = self.producer.send(
                self.topic, json.dumps(event).encode(), partition=i % PARTITIONS
            )
            self.sent.append((event, future))
            time.sleep(0.02)

    def start(self) -> _AckedEvents:
        self._thread.start()
        return self

    def stop(self) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self._thread.join(timeout=10)
            self.producer.flush(timeout=120)
            self.producer.close(timeout=10)

    def acked(self) -> list[dict]:
        return [event for event, future in self.sent if future.succeeded()]

    def failed(self) -> int:
        return sum(1 for _, future in self.sent if not future.succeeded())


@pytest.fixture()
def own_broker(tmp_path: Path) -> Iterator[LocalKafka]:
    broker = LocalKafka(data_dir=tmp_path / "broker")
    try:
        yield broker.start()
    finally:
        broker.stop()


def _job_config(tmp_path: Path, bootstrap: str, **kafka_settings: str) -> tuple[Path, dict]:
    run_id = uuid.uuid4().hex[:8]
    kafka = job_kafka(
        bootstrap,
        "outage",
        run_id,
        start_from="earliest",
        max_delay="500ms",
        idle_timeout="2s",
        **kafka_settings,
    )
    path = latency_job(tmp_path, f"outage-{run_id}", kafka, SIZE_S, PERIOD_S, LATENESS_S)
    create_topics(bootstrap, {kafka["input_topic"]: PARTITIONS})
    return path, kafka


@contextmanager
def _reporting_job(
    tmp_path: Path, bootstrap: str, outage_timeout: str
) -> Iterator[tuple[Job, _AckedEvents, ReportTail, dict]]:
    """A job on a live stream of _AckedEvents, once its first report has arrived; the producer
    and the tail are stopped on exit."""
    config_path, kafka = _job_config(tmp_path, bootstrap, outage_timeout=outage_timeout)
    events = _AckedEvents(bootstrap, kafka["input_topic"]).start()
    tail = ReportTail(bootstrap, kafka["output_topic"])
    try:
        with streaming_job("--config", str(config_path), "--", "--job_server_timeout=20") as job:
            wait_for(lambda: bool(tail.poll()), 90, "the first report")
            yield job, events, tail, kafka
    finally:
        events.stop()
        tail.close()


def _dead_letter_reasons(bootstrap: str, topic: str) -> Counter:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    try:
        return Counter(dict(m.headers)["reason"].decode() for m in consumer)
    finally:
        consumer.close()


def test_broker_outage_under_a_live_stream_loses_no_window_and_counts_each_event_once(
    tmp_path: Path, own_broker: LocalKafka
) -> None:
    bootstrap = own_broker.bootstrap
    with _reporting_job(tmp_path, bootstrap, "90s") as (job, events, tail, kafka):
        time.sleep(4)
        outage_start = time.time()
        own_broker.kill()  # a crash: SIGKILL, the data dir stays
        time.sleep(OUTAGE_S)
        own_broker.start()  # same data dir, same port
        back_at = time.time()
        assert own_broker.reused and own_broker.bootstrap == bootstrap
        # Windows holding events produced during the outage get reported.
        wait_for(
            lambda: any(
                r.window_start.timestamp() > outage_start + OUTAGE_S / 2 for r in tail.poll()
            ),
            90,
            "reports of windows inside the outage",
        )
        first_after = min(
            (
                ms / 1000
                for r, ms in zip(tail.reports, tail.arrived_ms, strict=True)
                if r.window_end.timestamp() > outage_start
                and r.window_start.timestamp() < back_at
                and ms / 1000 > back_at
            ),
            default=math.nan,
        )
        time.sleep(3)
        events.stop()
        last_start = max(window_starts(e["ts"], SIZE_S, PERIOD_S)[0] for e in events.acked())
        wait_for(lambda: tail.has(last_start), 60, "the last window's report")
        time.sleep(3)
        tail.drain()
    assert job.returncode == STOPPED_BY_CTRL_C, job.output[-3000:]
    assert events.failed() == 0, "the producer gave up on events during the outage"
    acked = events.acked()
    produced_in_outage = sum(1 for e in acked if outage_start <= e["ts"] < back_at)
    assert produced_in_outage > 0.5 * OUTAGE_S * 40  # the producer kept going meanwhile

    # Expected, counted here from the events the broker acknowledged.
    expected = window_counts(acked, SIZE_S, PERIOD_S)
    latest: dict[tuple[str, float], tuple[int, int]] = {}
    seen: dict[tuple[str, float, int], int] = {}
    for report in tail.reports:
        window = (str(report.key), report.window_start.timestamp())
        # A duplicate (at-least-once) is the same revision of the same window with the same count.
        previous = seen.setdefault((*window, report.revision), report.count)
        assert previous == report.count, f"{window} revision {report.revision} differs"
        if window not in latest or latest[window][0] < report.revision:
            latest[window] = (report.revision, report.count)
    wrong = {
        w: (latest.get(w, (None, 0))[1], n)
        for w, n in expected.items()
        if latest.get(w, (0, -1))[1] != n
    }
    assert not wrong, f"{len(wrong)} of {len(expected)} windows wrong: {sorted(wrong.items())[:5]}"
    assert set(latest) == set(expected)

    reasons = _dead_letter_reasons(bootstrap, kafka["dead_letter_topic"])
    assert reasons == Counter(), reasons  # nothing too late: the watermark waited
    totals = job.totals
    if totals.get("records_consumed"):  # a cancelled Prism job may not report metrics
        assert totals["records_consumed"] == len(acked)
        assert totals["events_binned"] == len(acked)
    # One line when the connection was lost, one when it was back (not hundreds).
    connection_lines = [line for line in job.output.splitlines() if line.startswith("kafka: ")]
    assert any(" lost " in line for line in connection_lines), job.output[-3000:]
    assert any(" back " in line for line in connection_lines), job.output[-3000:]
    assert len(connection_lines) <= 6, connection_lines
    print(
        f"outage: {back_at - outage_start:.1f} s broker down (killed until it answered again); "
        f"{len(acked)} events produced ({produced_in_outage} during the outage); totals {totals}; "
        f"windows checked {len(expected)}, wrong {len(wrong)}; dead letters {dict(reasons)}; "
        f"first report of an outage window {first_after - back_at:.1f} s after the broker was "
        f"back; connection lines: {connection_lines}"
    )


def test_outage_longer_than_outage_timeout_stops_the_job_with_one_clear_line(
    tmp_path: Path, own_broker: LocalKafka
) -> None:
    bootstrap = own_broker.bootstrap
    with _reporting_job(tmp_path, bootstrap, "10s") as (job, events, tail, _):
        tail.close()
        events.stop()
        stopped_at = time.monotonic()
        own_broker.stop(remove_data=False)
        wait_for(lambda: job.process.poll() is not None, 120, "the job to give up")
        gave_up_after = time.monotonic() - stopped_at
        job.output = job.process.stdout.read() if job.process.stdout else ""
        job.returncode = job.process.returncode
    assert job.returncode not in (0, None), job.output[-3000:]
    lines = [line for line in job.output.splitlines() if "kafka.outage_timeout" in line]
    assert len(lines) == 1, job.output[-5000:]
    assert f"Kafka at {bootstrap} unreachable" in lines[0]
    assert "Traceback" not in job.output, job.output[-5000:]
    assert gave_up_after >= 10
    print(
        f"outage timeout 10 s: the job exited {job.returncode} after {gave_up_after:.0f} s: {lines[0]}"
    )


def _report_sink(bootstrap: str, topic: str, outage_timeout: str) -> Any:
    """The report sink's DoFn, run by hand (setup, bundle): sends expire after 3 s, well inside the
    outage, so only its own resend keeps them."""
    from kldrift.io.kafka_sink import _WriteReport
    from kldrift.schemas.config import KafkaSpec

    spec = KafkaSpec(
        bootstrap_servers=bootstrap,
        input_topic="unused",
        output_topic=topic,
        dead_letter_topic="unused",
        outage_timeout=outage_timeout,  # type: ignore[arg-type]
        client={"request_timeout_ms": 2000, "delivery_timeout_ms": 3000},
    )
    sink = _WriteReport(spec, topic)
    sink.setup()
    return sink


def test_report_sink_resends_what_failed_during_an_outage_and_loses_nothing(
    own_broker: LocalKafka,
) -> None:
    from _reports import make_report

    bootstrap = own_broker.bootstrap
    topic = f"outage-sink-{uuid.uuid4().hex[:8]}"
    create_topics(bootstrap, {topic: 1})
    sink = _report_sink(bootstrap, topic, "120s")
    reports = [make_report(minute, minute % 3 == 0) for minute in range(10, 40)]
    try:
        sink.start_bundle()
        for report in reports[:10]:
            list(sink.process(report))
        sink.finish_bundle()  # the broker is up: acknowledged
        own_broker.kill()
        sink.start_bundle()
        for report in reports[10:]:
            list(sink.process(report))
        restart = threading.Timer(10.0, own_broker.start)  # sends expire (3 s) meanwhile
        restart.start()
        began = time.monotonic()
        sink.finish_bundle()  # returns once every send of the bundle is acknowledged
        waited = time.monotonic() - began
        restart.join()
    finally:
        sink.teardown()
    assert waited >= 10  # it did wait for the broker

    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    try:
        keys = Counter(m.key.decode() for m in consumer)
    finally:
        consumer.close()
    # Every report is on the topic; a repeat (a resend of one that had arrived) has the same key.
    assert set(keys) == {r.message_key for r in reports}
    print(
        f"sink: 20 reports sent into an outage, all on the topic after {waited:.0f} s; repeats "
        f"{sum(keys.values()) - len(keys)}"
    )


def test_report_sink_gives_up_past_the_outage_timeout(own_broker: LocalKafka) -> None:
    from _reports import make_report

    from kldrift.io.outage import KafkaOutageError

    topic = f"outage-sink-{uuid.uuid4().hex[:8]}"
    create_topics(own_broker.bootstrap, {topic: 1})
    sink = _report_sink(own_broker.bootstrap, topic, "5s")
    try:
        sink.start_bundle()
        list(sink.process(make_report(10, False)))
        sink.finish_bundle()
        own_broker.kill()
        sink.start_bundle()
        list(sink.process(make_report(11, False)))
        began = time.monotonic()
        with pytest.raises(KafkaOutageError, match=r"longer than kafka.outage_timeout \(5 s\)"):
            sink.finish_bundle()  # fails the bundle: the runner retries it, nothing is dropped
        assert time.monotonic() - began >= 5
    finally:
        sink.teardown()
