"""What operators do to a running `kldrift run` (issue #23), on a real broker and Prism.

Stopping it: Ctrl-C (SIGINT) exits 130, SIGTERM 143, and a stop prints `stopping`, the totals and
`stopped`, no traceback."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from _jobs import (
    STOPPED_BY_CTRL_C,
    LiveEvents,
    ReportTail,
    job_kafka,
    latency_job,
    stop,
    streaming_job,
    wait_for,
)

from kldrift.local.kafka import create_topics

pytestmark = pytest.mark.services

SIZE_S, PERIOD_S, LATENESS_S = 4, 2, 2
BEAM_START_LINES = 8
"""At most this many lines Beam and Prism log while the job starts (6 with Beam 2.78: three
output-type-hint warnings, Prism's start and endpoint, an empty-transform note)."""
STOP_LINES = [
    "kldrift run: stopping (cancelling the job)",
    "kldrift run: totals: ",
    "kldrift run: stopped",
]
"""What a stop prints (line beginnings), after which nothing."""


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
        kafka_bootstrap,
        "stop",
        run_id,
        start_from="earliest",
        max_delay="500ms",
        idle_timeout="2s",
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
    assert job.returncode == STOPPED_BY_CTRL_C, job.output[-4000:]
    assert "Traceback" not in job.output, job.output[-6000:]
    assert sum("kldrift run: totals:" in line for line in lines) == 1, job.output[-4000:]
    stopping = lines.index(STOP_LINES[0])
    after = lines[stopping:]
    assert len(after) == len(STOP_LINES), after
    assert all(line.startswith(b) for line, b in zip(after, STOP_LINES, strict=True)), after
    assert job.totals["records_consumed"] > 0
    banner = _banner_lines(lines)
    assert len(lines) <= banner + BEAM_START_LINES + len(STOP_LINES), job.output
    print(
        f"stop: exit {job.returncode}, {len(lines)} lines of output ({banner} banner, "
        f"{stopping - banner} from Beam and Prism while starting, {len(after)} stopping)"
    )
