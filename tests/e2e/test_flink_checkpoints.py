"""Flink with checkpoints, as production runs it: a live job on the embedded cluster with
`--checkpointing_interval` reports every window promptly with no task failure and no duplicate,
and a job restored from its retained checkpoint (`--savepoint_path`) loses no window, reports none
partial and counts no event twice; every report equals `kldrift replay`'s on the same events, and
no job server JVM outlives its job. Real broker, Beam's Flink job server, a live stream that keeps
flowing while no job runs."""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from _jobs import (
    STOPPED_BY_CTRL_C,
    LiveEvents,
    ReportTail,
    flink_job_server_pids,
    job_kafka,
    last_window_reported,
    latency_job,
    replayed_reports,
    streaming_job,
    wait_for,
    window_counts,
)

from kldrift.local import flink
from kldrift.local.kafka import create_topics
from kldrift.schemas.report import DriftReport

pytestmark = pytest.mark.services

SIZE_S, PERIOD_S, LATENESS_S, MAX_DELAY_S = 10, 5, 5, 0.5
PARTITIONS = 3
CHECKPOINT_MS = 2000
LIVE_S = 25
"""The first run's live span after its first report: about 12 checkpoints and 5 live windows per
key (40 s, 8 windows, before: 15 s of the suite's budget for windows of the same kind)."""


def _flink_args(checkpoints: Path, log: Path) -> tuple[str, ...]:
    return (
        "--runner", "FlinkRunner", "--flink_master=[local]", "--parallelism=1",
        "--job_server_timeout=20",
        f"--checkpointing_interval={CHECKPOINT_MS}",
        "--state_backend=filesystem",
        f"--state_backend_storage_path=file://{checkpoints}",
        "--externalized_checkpoints_enabled",
        "--retain_externalized_checkpoints_on_cancellation",
        # The job server's log, with Flink's checkpoint lines, to a file the test reads.
        f"--job_server_jvm_property=-Dorg.slf4j.simpleLogger.logFile={log}",
        "--job_server_jvm_property=-Dorg.slf4j.simpleLogger.log.org.apache.flink.runtime"
        ".checkpoint=info",
    )  # fmt: skip


def _newest_checkpoint(checkpoints: Path) -> Path:
    completed = [m.parent for m in checkpoints.glob("*/chk-*/_metadata")]
    assert completed, f"no completed checkpoint under {checkpoints}"
    return max(completed, key=lambda d: int(d.name.split("-")[1]))


def _checkpoint_bytes(log: str) -> list[int]:
    """Sizes of the checkpoints Flink completed (its 'Completed checkpoint N ... (B bytes' lines)."""
    return [int(b) for b in re.findall(r"Completed checkpoint \d+ for job \w+ \((\d+) bytes", log)]


def test_checkpointed_flink_job_reports_promptly_and_restores_exactly(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    flink.ensure_installed()  # installed by the set-up; FlinkSetupError fails the test
    run_id = uuid.uuid4().hex[:8]
    kafka = job_kafka(
        kafka_bootstrap,
        "checkpoints",
        run_id,
        start_from="committed",
        max_delay=f"{MAX_DELAY_S}s",
        idle_timeout="2s",
    )
    config_path = latency_job(
        tmp_path, f"checkpoints-{run_id}", kafka, SIZE_S, PERIOD_S, LATENESS_S
    )
    create_topics(kafka_bootstrap, {kafka["input_topic"]: PARTITIONS})
    checkpoints = tmp_path / "checkpoints"
    log_a, log_b = tmp_path / "job-server-a.log", tmp_path / "job-server-b.log"

    events = LiveEvents(kafka_bootstrap, kafka["input_topic"], PARTITIONS, seed=11).start()
    tail = ReportTail(kafka_bootstrap, kafka["output_topic"])
    try:
        with streaming_job(
            "--config", str(config_path), "--", *_flink_args(checkpoints, log_a)
        ) as run_a:  # fmt: skip
            wait_for(lambda: bool(tail.poll()), 120, "the first run's first report")
            job_servers = flink_job_server_pids(under=run_a.process.pid)
            warm_from = time.time() + PERIOD_S  # the windows the job was already live for
            time.sleep(LIVE_S)
            tail.drain()  # one poll after a quiet spell may return nothing yet
            stopped_at = time.time()
        reports_a = list(tail.reports)
        arrived_a = list(tail.arrived_ms)
        restored_from = _newest_checkpoint(checkpoints)
        time.sleep(3)  # the stream flows on while no job runs
        second_started_ms = time.time() * 1000
        with streaming_job(
            "--config", str(config_path), "--", *_flink_args(checkpoints, log_b),
            f"--savepoint_path=file://{restored_from}",
        ) as run_b:  # fmt: skip
            wait_for(
                lambda: any(r.window_start.timestamp() > stopped_at + SIZE_S for r in tail.poll()),
                120,
                "the restored run to report windows after the stop",
            )
            job_servers |= flink_job_server_pids(under=run_b.process.pid)
            last_window_reported(events, tail, SIZE_S, PERIOD_S)
    finally:
        events.stop()
        tail.close()
    assert run_a.returncode == STOPPED_BY_CTRL_C and run_b.returncode == STOPPED_BY_CTRL_C, (
        run_b.output[-3000:]
    )
    assert "on FlinkRunner" in run_a.output and "kldrift run: stopped" in run_a.output
    # Beam's Flink job service serves no metrics for a cancelled job: said, not printed as zeros.
    assert "totals: not available from FlinkRunner" in run_a.output, run_a.output[-3000:]
    # No job server JVM outlives its job (Beam stops it when `kldrift run` exits).
    assert len(job_servers) == 2, f"job server JVMs seen under the two runs: {job_servers}"
    wait_for(lambda: not (flink_job_server_pids() & job_servers), 15, "the job server JVMs to exit")
    assert f"restores Flink state from file://{restored_from}" in run_b.output
    # Flink itself says it restored that checkpoint (not a fresh start from committed offsets).
    restored_id = restored_from.name.split("-")[1]
    server_log_b = log_b.read_text()
    restored = rf"Restoring job \w+ from (Checkpoint|Savepoint) {restored_id} "
    assert re.search(restored, server_log_b), server_log_b[-3000:]

    # The first run: checkpoints completed all along, no task failed, every window promptly and
    # once. Prompt = within 2 periods + max_delay of the window's end (the watermark passes the
    # end max_delay after it; a bundle and a checkpoint may each hold it up to a period).
    server_log_a = log_a.read_text()
    sizes = _checkpoint_bytes(server_log_a)
    assert len(sizes) >= LIVE_S * 1000 // CHECKPOINT_MS // 2, f"{len(sizes)} checkpoints"
    assert "switched from RUNNING to FAILED" not in server_log_a
    revisions_a = Counter((r.key, r.window_start.timestamp(), r.revision) for r in reports_a)
    assert max(revisions_a.values()) == 1, "the checkpointed run reported a window twice"
    bound_s = 2 * PERIOD_S + MAX_DELAY_S
    live = [
        (r, ms / 1000 - r.window_end.timestamp())
        for r, ms in zip(reports_a, arrived_a, strict=True)
        if r.window_end.timestamp() >= warm_from
    ]
    assert len(live) >= 2 * (LIVE_S // PERIOD_S - 3)
    late = [(r.window_end.isoformat(), round(lag, 1)) for r, lag in live if lag > bound_s]
    assert not late, f"reports later than {bound_s} s after their window's end: {late}"

    # Both runs: every window holding events is reported, every report has its window's complete
    # count (nothing counted twice, nothing lost across the restore), and a window reported by
    # both runs (it closed after the checkpoint) is reported identically.
    expected = window_counts(events.sent, SIZE_S, PERIOD_S)
    reports: list[DriftReport] = tail.reports
    wrong = [
        f"{r.key} window {r.window_start.timestamp() - stopped_at:+.1f} s from the stop, "
        f"revision {r.revision}, sent {ms / 1000 - stopped_at:+.1f} s: count {r.count}, "
        f"expected {expected[(r.key, r.window_start.timestamp())]}"
        for r, ms in zip(reports, tail.arrived_ms, strict=True)
        if r.count != expected[(r.key, r.window_start.timestamp())]
    ]
    assert not wrong, "\n".join(wrong)
    reported = {(r.key, r.window_start.timestamp()) for r in reports}
    assert set(expected) <= reported, sorted(set(expected) - reported)[:5]
    first_seen: dict[tuple, DriftReport] = {}
    repeated = 0
    for report in reports:
        window = (report.key, report.window_start.timestamp(), report.revision)
        if window in first_seen:
            repeated += 1
            assert report.kl_bits == first_seen[window].kl_bits
        first_seen[window] = report
    reports_b = [
        r for r, ms in zip(reports, tail.arrived_ms, strict=True) if ms >= second_started_ms
    ]

    # The same events replayed in batch: every report of either run has replay's counts,
    # divergence and decision for its window (no window reported that replay does not report).
    batch = replayed_reports(tmp_path, config_path, events.sent)
    assert {r.message_key for r in reports} <= set(batch)
    for report in reports:
        want = batch[report.message_key]
        got = (report.count, report.missing, report.invalid, report.drift)
        assert got == (want.count, want.missing, want.invalid, want.drift), report.message_key
        assert report.kl_bits == pytest.approx(want.kl_bits, abs=1e-12, rel=0)
    print(
        f"flink checkpoints: first run {len(reports_a)} reports, {len(sizes)} checkpoints of "
        f"{min(sizes)}-{max(sizes)} bytes, lag after the window end max "
        f"{max(lag for _, lag in live):.1f} s; restored from {restored_from.name}: "
        f"{len(reports_b)} reports, {repeated} repeated identically"
    )
