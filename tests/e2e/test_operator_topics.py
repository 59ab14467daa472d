"""An operator deletes the report topic, then the dead-letter topic, under a running `kldrift run`
(the local broker does not create topics on its own): the job stops at once with one line naming
the topic; nothing is committed past what was written, so once the topic is recreated a restart
from `committed` writes every report and dead letter that was lost. Real broker, Prism."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from _jobs import (
    LiveEvents,
    ReportTail,
    committed,
    job_kafka,
    last_counts,
    last_window_reported,
    latency_job,
    streaming_job,
    wait_ended,
    wait_for,
    window_counts,
)
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from kldrift.local.kafka import create_topics

pytestmark = pytest.mark.services

SIZE_S, PERIOD_S, LATENESS_S = 4, 2, 2
POISON = b"not json, dead-lettered"


def _delete(bootstrap: str, topic: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics([topic])
    finally:
        admin.close()


def _dead_letters(bootstrap: str, topic: str) -> list[bytes]:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    try:
        return [record.value for record in consumer]
    finally:
        consumer.close()


def test_deleted_output_topics_stop_the_job_in_one_line_and_a_restart_loses_nothing(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    run_id = uuid.uuid4().hex[:8]
    kafka = job_kafka(
        kafka_bootstrap,
        "deleted",
        run_id,
        start_from="committed",
        max_delay="500ms",
        idle_timeout="2s",
    )
    config = latency_job(tmp_path, f"deleted-{run_id}", kafka, SIZE_S, PERIOD_S, LATENESS_S)
    create_topics(kafka_bootstrap, {kafka["input_topic"]: 2})
    reports, dead = kafka["output_topic"], kafka["dead_letter_topic"]
    topic_in, group = kafka["input_topic"], f"kldrift.deleted-{run_id}"
    args = ("--config", str(config))
    events = LiveEvents(kafka_bootstrap, kafka["input_topic"], 2, seed=31).start()
    tails = [ReportTail(kafka_bootstrap, reports)]
    try:
        # 1. The report topic is deleted under the first run.
        with streaming_job(*args) as first:
            wait_for(lambda: len(tails[0].poll()) >= 4, 90, "the first reports")
            wait_for(lambda: bool(committed(kafka_bootstrap, group, topic_in)), 60, "a commit")
            tails[0].poll()
            _delete(kafka_bootstrap, reports)
            stopped_in_s = wait_ended(first, 120)
        create_topics(kafka_bootstrap, {reports: 1})
        time.sleep(2)
        # 2. The second run rewrites what was lost; then the dead-letter topic is deleted and a
        # poison record arrives.
        tails.append(ReportTail(kafka_bootstrap, reports))
        with streaming_job(*args) as second:
            wait_for(lambda: bool(tails[1].poll()), 90, "the second run's reports")
            resumed_at = committed(kafka_bootstrap, group, topic_in) or 0
            wait_for(
                lambda: (committed(kafka_bootstrap, group, topic_in) or 0) > resumed_at,
                60,
                "the second run's commit",
            )
            _delete(kafka_bootstrap, dead)
            producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
            producer.send(kafka["input_topic"], POISON, partition=0)
            producer.close()
            dead_stopped_in_s = wait_ended(second, 120)
        create_topics(kafka_bootstrap, {dead: 1})
        time.sleep(2)
        # 3. The third run writes the poison record's dead letter and the reports in between.
        with streaming_job(*args) as third:
            restarted = time.time()
            wait_for(
                lambda: any(r.window_start.timestamp() > restarted + 2 for r in tails[1].poll()),
                90,
                "the third run's reports",
            )
            last_window_reported(events, tails[1], SIZE_S, PERIOD_S)
    finally:
        events.stop()
        for tail in tails:
            tail.close()

    for job, topic in ((first, reports), (second, dead)):
        lines = job.output.splitlines()
        named = [line for line in lines if f"topic {topic} does not exist (deleted?)" in line]
        assert len(named) == 1 and named[0].startswith("kldrift: error: "), job.output[-3000:]
        assert "Traceback" not in job.output, job.output[-3000:]
        assert job.returncode == 1
    assert POISON in _dead_letters(kafka_bootstrap, dead)

    expected = window_counts(events.sent, SIZE_S, PERIOD_S)
    # The first topic's reports, then the recreated one's, in the order they arrived.
    last = last_counts([report for tail in tails for report in tail.reports])
    missing = sorted(w for w in expected if w not in last)
    wrong = sorted(
        (w, last[w], expected[w]) for w in expected if w in last and last[w] != expected[w]
    )
    print(
        f"report topic deleted: job stopped after {stopped_in_s:.1f} s; dead-letter topic deleted: "
        f"stopped after {dead_stopped_in_s:.1f} s; {len(events.sent)} events, {len(expected)} "
        f"(key, window)s checked, {len(wrong)} wrong, {len(missing)} missing; totals of the "
        f"runs: {first.totals} / {second.totals} / {third.totals}"
    )
    assert not missing, missing[:5]
    assert not wrong, wrong[:5]
