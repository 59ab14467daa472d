"""What operators do to a running `kldrift run` (issue #23), on a real broker and Prism.

Stopping it: Ctrl-C (SIGINT) exits 130, SIGTERM 143, and a stop prints `stopping`, the totals and
`stopped`, no traceback. A partition whose producer starts late and far behind: its records are
dead-lettered `too_late` (the partition went idle, so its watermark followed the wall clock), every
one accounted for; the other partitions' windows are reported exactly."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from _jobs import (
    STOP_LINES,
    STOPPED_BY_SIGTERM,
    LiveEvents,
    ReportTail,
    assert_clean_stop,
    job_kafka,
    latency_job,
    stop,
    streaming_job,
    wait_for,
    window_counts,
    window_starts,
)
from kafka import KafkaConsumer, KafkaProducer

from kldrift.consumer import LatestRevisions
from kldrift.local.kafka import create_topics
from kldrift.synthetic import make_event

pytestmark = pytest.mark.services

SIZE_S, PERIOD_S, LATENESS_S = 4, 2, 2
BEAM_START_LINES = 8
"""At most this many lines Beam and Prism log while the job starts (6 with Beam 2.78: three
output-type-hint warnings, Prism's start and endpoint, an empty-transform note)."""


def _banner_lines(lines: list[str]) -> int:
    """The banner: `kldrift run: pipeline ...` and its indented lines."""
    first = next(i for i, line in enumerate(lines) if line.startswith("kldrift run: pipeline"))
    end = first + 1
    while end < len(lines) and lines[end].startswith("  "):
        end += 1
    return end - first


def test_ctrl_c_stops_the_job_with_exit_130_its_totals_and_no_traceback(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    run_id = uuid.uuid4().hex[:8]
    kafka = job_kafka(
        kafka_bootstrap, "stop", run_id, start_from="earliest", max_delay="500ms", idle_timeout="2s"
    )
    config = latency_job(tmp_path, f"stop-{run_id}", kafka, SIZE_S, PERIOD_S, LATENESS_S)
    create_topics(kafka_bootstrap, {kafka["input_topic"]: 1})
    tail = ReportTail(kafka_bootstrap, kafka["output_topic"])
    events = LiveEvents(kafka_bootstrap, kafka["input_topic"])
    with events, streaming_job("--config", str(config)) as job:
        try:
            wait_for(lambda: bool(tail.poll()), 90, "the first report")
        finally:
            tail.close()
        stop(job)  # SIGINT, mid-stream: the reader is polling a live partition
    lines = job.output.splitlines()  # kldrift run writes all of this to stderr
    stopping = assert_clean_stop(job)
    after = lines[stopping:]
    banner = _banner_lines(lines)
    assert len(lines) <= banner + BEAM_START_LINES + len(STOP_LINES), job.output
    print(
        f"stop: exit {job.returncode}, {len(lines)} lines of output ({banner} banner, "
        f"{stopping - banner} from Beam and Prism while starting, {len(after)} stopping)"
    )


LATE_S = 7200  # the late producer's clock: 2 hours behind
LATE_RATE = 50  # events/s on the late partition


def _late_producer(bootstrap: str, topic: str, seconds: float) -> list[dict]:
    """Events on partition 2 stamped LATE_S behind the wall clock, LATE_RATE a second."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    rng = np.random.default_rng(5)
    sent: list[dict] = []
    end = time.time() + seconds
    while (now := time.time()) < end:
        event = make_event(rng, now - LATE_S, ("model-a", "model-b")[len(sent) % 2], 0.0)
        producer.send(topic, json.dumps(event).encode(), partition=2)
        sent.append(event)
        time.sleep(1 / LATE_RATE)
    producer.flush()
    producer.close()
    return sent


def test_a_partition_whose_producer_starts_late_far_behind_is_dead_lettered_too_late(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    """Partitions 0 and 1: live events stamped with the wall clock from before the job starts;
    partition 2: nothing until the job has reported, then 5 s of events 2 hours old. Partition 2
    went idle (idle_timeout 2 s): its watermark follows the wall clock, and its late records are
    too late for windows closed long ago. The job is stopped with SIGTERM."""
    run_id = uuid.uuid4().hex[:8]
    kafka = job_kafka(
        kafka_bootstrap, "late", run_id, start_from="earliest", max_delay="500ms", idle_timeout="2s"
    )
    config = latency_job(tmp_path, f"late-{run_id}", kafka, SIZE_S, PERIOD_S, LATENESS_S)
    create_topics(kafka_bootstrap, {kafka["input_topic"]: 3})
    live = LiveEvents(kafka_bootstrap, kafka["input_topic"], partitions=2, seed=6).start()
    tail = ReportTail(kafka_bootstrap, kafka["output_topic"])
    late: list[dict] = []
    late_ended_s = 0.0
    try:
        with streaming_job("--config", str(config)) as job:
            wait_for(lambda: bool(tail.poll()), 90, "the first report")
            late = _late_producer(kafka_bootstrap, kafka["input_topic"], 5)
            late_ended_s = time.time()
            live.stop()
            # After idle_timeout without records partition 2 follows the wall clock again.
            last_start = window_starts(live.sent[-1]["ts"], SIZE_S, PERIOD_S)[0]
            wait_for(lambda: tail.has(last_start), 60, "the last live window's report")
            time.sleep(2)
            tail.drain()
            stop(job, signal.SIGTERM)
    finally:
        live.stop()
        tail.close()
    assert job.returncode == STOPPED_BY_SIGTERM, job.output[-4000:]
    assert "Traceback" not in job.output, job.output[-6000:]

    # Every late event is on the dead-letter topic, too_late, from partition 2.
    consumer = KafkaConsumer(
        kafka["dead_letter_topic"],
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    dead = list(consumer)
    consumer.close()
    headers = [dict(m.headers) for m in dead]
    assert Counter((h["reason"], h["source_partition"]) for h in headers) == {
        (b"too_late", b"2"): len(late)
    }
    assert sorted(json.loads(m.value)["ts"] for m in dead) == sorted(e["ts"] for e in late)

    # Every (key, window) of the live partitions' events, with its exact count (last revision).
    expected = window_counts(live.sent, SIZE_S, PERIOD_S)
    latest = LatestRevisions()
    for report in tail.reports:
        latest.offer(report)
    reported = {(r.key, r.window_start.timestamp()): r.count for r in latest.by_key.values()}
    wrong = [(w, reported.get(w), n) for w, n in expected.items() if reported.get(w) != n]
    assert set(reported) == set(expected)
    assert wrong == []

    # Its records held the job's watermark while they came (activity, but too old to move it),
    # then it was idle again: reports of the other partitions resumed.
    resumed_s = min(a / 1000 for a in tail.arrived_ms if a / 1000 > late_ended_s) - late_ended_s

    totals = job.totals
    assert totals, f"no totals line in the job's output:\n{job.output[-3000:]}"
    consumed = len(live.sent) + len(late)
    assert totals["records_consumed"] == consumed
    assert totals["records_consumed"] == totals["events_binned"] + totals["records_dead_lettered"]
    assert totals["events_binned"] == len(live.sent)
    assert totals["records_dead_lettered"] == totals["events_too_late"] == len(late)
    print(
        f"late partition: consumed {consumed}, binned {totals['events_binned']}, dead-lettered "
        f"{totals['records_dead_lettered']} (too_late, all of partition 2's {len(late)}); windows "
        f"checked {len(expected)}, wrong {len(wrong)}; reports resumed {resumed_s:.1f} s after "
        f"partition 2's last record; exit {job.returncode} on SIGTERM"
    )
