"""An operator restarts `kldrift run` with a changed window, and deploys the same job twice.

A resume point written with another window is refused in one line naming the change and the
choices; with --reset-resume every window the restarted job reports holds its complete count
(never a partial window as revision 0). Two jobs on one consumer group each say so in one line.
Real broker, Prism, a live stream."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from _jobs import (
    LiveEvents,
    ReportTail,
    committed,
    job_kafka,
    last_window_reported,
    latency_job,
    run_cli,
    streaming_job,
    wait_for,
    window_counts,
)

from kldrift.local.kafka import create_topics

pytestmark = pytest.mark.services

PERIOD_S, LATENESS_S = 2, 2


def test_a_changed_window_is_refused_and_reset_resume_reports_only_complete_windows(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    run_id = uuid.uuid4().hex[:8]
    name = f"resize-{run_id}"
    kafka = job_kafka(
        kafka_bootstrap,
        "resize",
        run_id,
        start_from="committed",
        max_delay="500ms",
        idle_timeout="2s",
    )
    config = latency_job(tmp_path, name, kafka, 4, PERIOD_S, LATENESS_S)
    create_topics(kafka_bootstrap, {kafka["input_topic"]: 2})
    group, topic = f"kldrift.{name}", kafka["input_topic"]
    events = LiveEvents(kafka_bootstrap, topic, 2, seed=41).start()
    tail = ReportTail(kafka_bootstrap, kafka["output_topic"])
    try:
        with streaming_job("--config", str(config)):
            wait_for(lambda: bool(tail.poll()), 90, "the first run's reports")
            wait_for(lambda: bool(committed(kafka_bootstrap, group, topic)), 60, "a commit")
        # The window grows from 4 s to 8 s.
        config = latency_job(tmp_path, name, kafka, 8, PERIOD_S, LATENESS_S)
        refused = run_cli("run", "--config", str(config), timeout=120)
        first_report = len(tail.poll())
        with streaming_job("--config", str(config), "--reset-resume") as resized:
            restarted = time.time()
            wait_for(
                lambda: any(r.window_start.timestamp() > restarted for r in tail.poll()),
                90,
                "the resized windows",
            )
            last_window_reported(events, tail, 8, PERIOD_S)
    finally:
        events.stop()
        tail.close()

    assert refused.returncode == 2, refused.stderr[-3000:]
    errors = [line for line in refused.stderr.splitlines() if line.startswith("kldrift: error:")]
    assert len(errors) == 1 and "window.size 4 s -> 8 s" in errors[0], refused.stderr[-3000:]
    assert "--reset-resume" in errors[0] and "kafka.group_id" in errors[0]
    assert "Traceback" not in refused.stderr

    expected = window_counts(events.sent, 8, PERIOD_S)
    resized_reports = tail.reports[first_report:]
    eight_s = [r for r in resized_reports if (r.window_end - r.window_start).total_seconds() == 8]
    assert eight_s, "the resized job reported no 8 s window"
    wrong = [
        (r.key, r.window_start.isoformat(), r.revision, r.count)
        for r in eight_s
        if r.count != expected[(r.key, r.window_start.timestamp())]
    ]
    first_start = min(r.window_start.timestamp() for r in eight_s)
    reported = {(r.key, r.window_start.timestamp()) for r in eight_s}
    missing = sorted(w for w in expected if w[1] >= first_start and w not in reported)
    print(
        f"window 4 s -> 8 s: refused without --reset-resume; with it, {len(eight_s)} reports of "
        f"{len(reported)} (key, window)s from {first_start:.0f} on, {len(wrong)} wrong, "
        f"{len(missing)} missing; resized run totals {resized.totals}"
    )
    assert not wrong, wrong[:5]
    assert not missing, missing[:5]


def test_a_second_job_on_the_same_group_is_noticed_in_one_line(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    run_id = uuid.uuid4().hex[:8]
    kafka = job_kafka(
        kafka_bootstrap,
        "twice",
        run_id,
        start_from="committed",
        max_delay="500ms",
        idle_timeout="2s",
    )
    config = latency_job(tmp_path, f"twice-{run_id}", kafka, 4, PERIOD_S, LATENESS_S)
    create_topics(kafka_bootstrap, {kafka["input_topic"]: 2})
    group, topic = f"kldrift.twice-{run_id}", kafka["input_topic"]
    events = LiveEvents(kafka_bootstrap, topic, 2, seed=43).start()
    tail = ReportTail(kafka_bootstrap, kafka["output_topic"])
    try:
        with (
            streaming_job("--config", str(config)) as one,
            streaming_job("--config", str(config)) as two,
        ):
            wait_for(lambda: bool(tail.poll()), 90, "reports")
            wait_for(lambda: bool(committed(kafka_bootstrap, group, topic)), 60, "a commit")
            time.sleep(8)  # both commit, each sees the other's
        tail.drain()  # what the jobs wrote before they stopped
    finally:
        events.stop()
        tail.close()
    for job in (one, two):
        said = [line for line in job.output.splitlines() if "another job (run " in line]
        assert len(said) == 1, job.output[-3000:]
        assert f"group {group}" in said[0] and "kafka.group_id" in said[0]
    # Each job counts every event: a window's reports (both jobs', every revision) reach its
    # count and never pass it.
    expected = window_counts(events.sent, 4, PERIOD_S)
    most: dict = {}
    for report in tail.reports:
        window = (report.key, report.window_start.timestamp())
        most[window] = max(most.get(window, 0), report.count)
    wrong = sorted((w, n, expected[w]) for w, n in most.items() if n != expected[w])
    twice = Counter((r.key, r.window_start.timestamp(), r.revision) for r in tail.reports)
    print(
        f"double deploy: {len(most)} (key, window)s reported, {len(wrong)} wrong, "
        f"{sum(1 for n in twice.values() if n > 1)} (key, window, revision)s reported twice; "
        f"totals {one.totals} / {two.totals}; said: {said[0]}"
    )
    assert not wrong, wrong[:5]
