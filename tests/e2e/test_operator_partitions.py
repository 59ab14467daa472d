"""An operator grows the input topic: partitions added while `kldrift run` runs are found and read
from their beginning, and so are partitions added while it was stopped. Every (key, window)'s
last report holds the count of the events the broker acknowledged, and none is too late.
Real broker, Prism, a live stream with wall-clock event times."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from _jobs import (
    LiveEvents,
    ReportTail,
    job_kafka,
    last_counts,
    last_window_reported,
    latency_job,
    streaming_job,
    wait_for,
    window_counts,
)
from kafka import KafkaAdminClient
from kafka.admin import NewPartitions

from kldrift.local.kafka import create_topics

pytestmark = pytest.mark.services

SIZE_S, PERIOD_S, LATENESS_S = 4, 2, 8
"""Lateness covers the discovery delay (kafka.partition_discovery 2 s, metadata every 1 s): the
events a new partition got before it was found are late data for windows still open."""


def _grow(bootstrap: str, topic: str, partitions: int) -> float:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_partitions({topic: NewPartitions(total_count=partitions)})
    finally:
        admin.close()
    return time.time()


def test_partitions_added_while_running_and_while_stopped_are_read_and_counted(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    run_id = uuid.uuid4().hex[:8]
    kafka = job_kafka(
        kafka_bootstrap,
        "grow",
        run_id,
        start_from="committed",
        max_delay="500ms",
        idle_timeout="2s",
        partition_discovery="2s",
    )
    config = latency_job(tmp_path, f"grow-{run_id}", kafka, SIZE_S, PERIOD_S, LATENESS_S)
    create_topics(kafka_bootstrap, {kafka["input_topic"]: 3})
    tail = ReportTail(kafka_bootstrap, kafka["output_topic"])
    events = LiveEvents(kafka_bootstrap, kafka["input_topic"], 3, seed=23)
    try:
        events.start()
        with streaming_job("--config", str(config)) as first:
            wait_for(lambda: bool(tail.poll()), 90, "the first report")
            grown_at = _grow(kafka_bootstrap, kafka["input_topic"], 6)
            events.grow(6)
            wait_for(
                lambda: any(r.window_start.timestamp() > grown_at + 6 for r in tail.poll()),
                90,
                "windows after the partitions were added",
            )
        # Stopped: the topic grows again and the stream flows on.
        _grow(kafka_bootstrap, kafka["input_topic"], 8)
        events.grow(8)
        time.sleep(3)
        # The second run resumes from the group's commits; partitions 6, 7 have none.
        with streaming_job("--config", str(config)) as second:
            restarted_at = time.time()
            wait_for(
                lambda: any(r.window_start.timestamp() > restarted_at + 4 for r in tail.poll()),
                90,
                "the second run's windows",
            )
            last_window_reported(events, tail, SIZE_S, PERIOD_S)
        assert "partition(s) 3, 4, 5 added to" in first.output, first.output[-3000:]
    finally:
        events.stop()
        tail.close()

    expected = window_counts(events.sent, SIZE_S, PERIOD_S)
    last = last_counts(tail.reports)
    first_event = min(e["ts"] for e in events.sent)
    # Windows starting before the first event also hold only what was produced: all checked.
    checked = {w for w in expected if w[1] >= first_event - SIZE_S}
    missing = sorted(w for w in checked if w not in last)
    wrong = sorted(
        (w, last[w], expected[w]) for w in checked if w in last and last[w] != expected[w]
    )
    print(
        f"partitions 3 -> 6 running, -> 8 stopped: {len(events.sent)} events produced; "
        f"{len(checked)} (key, window)s checked, {len(wrong)} wrong, {len(missing)} missing; "
        f"totals first run {first.totals}, second {second.totals}"
    )
    assert not missing, missing[:5]
    assert not wrong, wrong[:5]
    for job in (first, second):
        if job.totals.get("records_consumed"):
            assert job.totals["events_too_late"] == 0, job.totals
            assert job.totals["records_consumed"] == (
                job.totals["events_binned"]
                + job.totals["records_dead_lettered"]
                + job.totals["events_already_reported"]
            )
