"""Stop `kldrift run` mid-stream and start it again from the group's committed offsets (Prism keeps
no state across runs, so committed offsets plus their resume metadata are the design): every window
is reported with its complete counts, none is lost, and what the second run recounts is exactly
the windows still open COMMIT_DELAY_S before the stop, each reported again identically.
Real broker, Prism, a live stream that keeps flowing while the job is down."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from _jobs import (
    STOPPED_BY_CTRL_C,
    LiveEvents,
    ReportTail,
    assert_clean_stop,
    job_kafka,
    last_window_reported,
    latency_job,
    streaming_job,
    wait_for,
    window_counts,
)
from kafka import KafkaConsumer, TopicPartition

from kldrift.io.kafka_source import COMMIT_DELAY_S
from kldrift.local import flink
from kldrift.local.kafka import create_topics
from kldrift.schemas.report import DriftReport

pytestmark = pytest.mark.services

SIZE_S, PERIOD_S, LATENESS_S = 6, 2, 2


def _committed(bootstrap: str, topic: str, group: str, partitions: int) -> list:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    try:
        return [
            consumer.committed(TopicPartition(topic, p), metadata=True) for p in range(partitions)
        ]
    finally:
        consumer.close()


_FLINK = ("--runner", "FlinkRunner", "--flink_master=[local]")
RUNNERS = {  # runner args, partitions, readers, (kldrift run flags, readers) of the second run
    # The second run resumes with two readers in worker processes of their own (`kldrift run
    # --worker-processes`): the restart guarantee across that change, and in that mode, at no
    # extra job's cost.
    "prism": ((), 2, 1, (("--worker-processes",), 2)),
    # One reader per partition, two task slots: each reader commits by the slowest one's progress.
    # (Flink with one reader is not run as well: this case holds all it would check, and each
    # Flink case costs about a minute and a half of the suite's budget.)
    "flink-3-readers": ((*_FLINK, "--parallelism=2"), 3, 3, ((), 3)),
}


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_restart_from_committed_offsets_loses_no_window_and_counts_each_event_once(
    tmp_path: Path, kafka_bootstrap: str, runner: str
) -> None:
    runner_args, partitions, readers, (flags_b, readers_b) = RUNNERS[runner]
    if runner.startswith("flink"):
        flink.ensure_installed()  # installed by the set-up; FlinkSetupError fails the test
    run_id = uuid.uuid4().hex[:8]
    kafka = job_kafka(
        kafka_bootstrap,
        "restart",
        run_id,
        start_from="committed",
        max_delay="500ms",
        idle_timeout="2s",
        readers=readers,
    )
    config_path = latency_job(tmp_path, f"restart-{run_id}", kafka, SIZE_S, PERIOD_S, LATENESS_S)
    (tmp_path / "b").mkdir()
    config_b = latency_job(
        tmp_path / "b", f"restart-{run_id}", dict(kafka, readers=readers_b), SIZE_S, PERIOD_S,
        LATENESS_S,
    )  # fmt: skip
    create_topics(kafka_bootstrap, {kafka["input_topic"]: partitions})
    group = f"kldrift.restart-{run_id}"
    args = ("--config", str(config_path), "--", "--job_server_timeout=20", *runner_args)
    args_b = ("--config", str(config_b), *flags_b, "--", "--job_server_timeout=20", *runner_args)

    events = LiveEvents(kafka_bootstrap, kafka["input_topic"], partitions, seed=8).start()
    first = ReportTail(kafka_bootstrap, kafka["output_topic"])
    second: ReportTail | None = None
    try:
        with streaming_job(*args) as run_a:
            wait_for(lambda: bool(first.poll()), 90, "the first run's first report")
            time.sleep(COMMIT_DELAY_S + 12)  # long enough for commits past reported windows
            stopped_at = time.time()
        committed = _committed(kafka_bootstrap, kafka["input_topic"], group, partitions)
        time.sleep(3)  # the stream flows on while no job runs
        second_started_ms = time.time() * 1000
        second = ReportTail(kafka_bootstrap, kafka["output_topic"])
        with streaming_job(*args_b) as run_b:
            wait_for(
                lambda: any(r.window_start.timestamp() > stopped_at + 6 for r in second.poll()),
                90,
                "the second run to report windows after the stop",
            )
            last_window_reported(events, second, SIZE_S, PERIOD_S)
    finally:
        events.stop()
        first.close()
        if second is not None:
            second.close()
    assert run_a.returncode == STOPPED_BY_CTRL_C and run_b.returncode == STOPPED_BY_CTRL_C, (
        run_b.output[-3000:]
    )
    if not runner.startswith("flink"):
        # Ctrl-C with worker processes stops as the in-process job does (test_stop): the
        # processes' output goes quiet with the stop, so only the totals and `stopped` follow.
        assert_clean_stop(run_b)
    # The report topic holds both runs' reports; the first run's were written before the second
    # run started.
    reports_a: list[DriftReport] = []
    reports_b: list[DriftReport] = []
    for report, arrived_ms in zip(second.reports, second.arrived_ms, strict=True):
        (reports_a if arrived_ms < second_started_ms else reports_b).append(report)
    assert reports_a and reports_b

    # The first run committed behind what it had read, with the resume point as metadata.
    for offset in committed:
        resume = json.loads(offset.metadata)
        assert offset.offset <= resume["read_to"]
    assert any(o.offset < json.loads(o.metadata)["read_to"] for o in committed)
    assert "  resumes  windows closed by" in run_b.output

    # Expected, counted here: every (key, window) holding an event, with its event count.
    expected = window_counts(events.sent, SIZE_S, PERIOD_S)

    # Every report of either run has its window's complete count: none is partial.
    for report in reports_a + reports_b:
        window = (report.key, report.window_start.timestamp())
        assert report.count == expected[window], f"{window}: {report.count} != {expected[window]}"
    # No window is lost: each one holding events is reported by one run or both.
    reported = {(r.key, r.window_start.timestamp()) for r in reports_a + reports_b}
    assert set(expected) <= reported, sorted(set(expected) - reported)[:5]

    # What the second run recounts: windows the first run had reported but that were still open
    # COMMIT_DELAY_S before the stop, each reported again with the same counts and KL.
    by_window_a = {(r.key, r.window_start.timestamp()): r for r in reports_a if r.revision == 0}
    recounted = [r for r in reports_b if (r.key, r.window_start.timestamp()) in by_window_a]
    for report in recounted:
        before = by_window_a[(report.key, report.window_start.timestamp())]
        assert (report.count, report.kl_bits) == (before.count, before.kl_bits)
    floor_s = max(json.loads(o.metadata)["floor_us"] for o in committed) / 1e6
    for report in recounted:  # only windows not yet closed at the floor come back
        assert report.window_end.timestamp() + LATENESS_S > floor_s
    totals = run_b.totals
    reread = sum(json.loads(o.metadata)["read_to"] - o.offset for o in committed)
    if totals.get("records_consumed"):  # a cancelled Prism job may not report metrics
        # It read from the committed offsets to the end: `reread` records a second time.
        assert totals["records_consumed"] == len(events.sent) - sum(o.offset for o in committed)
        assert totals["records_consumed"] == (
            totals["events_binned"]
            + totals["records_dead_lettered"]
            + totals["events_already_reported"]
        )
    print(
        f"restart on {runner}: first run {len(reports_a)} reports, second {len(reports_b)}; "
        f"{len(recounted)} windows reported again; {reread} records read again; totals of the "
        f"second run {totals}"
    )
