"""End to end on a real broker and Prism in streaming mode: `kldrift run` reads a topic with a
known shift, malformed, out-of-order, late and too-late records, and writes reports and dead
letters that agree with `kldrift replay` on the same events."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from _jobs import (
    STOPPED_BY_CTRL_C,
    ReportTail,
    job_kafka,
    run_cli,
    streaming_job,
    trained_job,
    wait_for,
)
from kafka import KafkaConsumer, KafkaProducer

from kldrift.consumer import LatestRevisions
from kldrift.schemas.report import DriftReport, WindowSummary, parse_report_record
from kldrift.synthetic import SyntheticStream

pytestmark = pytest.mark.services

SIZE_S, PERIOD_S, LATENESS_S = 20, 10, 10
PARTITIONS = 3


def _windows_of(t: float) -> list[int]:
    """Starts of the sliding windows [k*period, k*period + size) holding event time t."""
    last = math.floor(t / PERIOD_S) * PERIOD_S
    return [last - i * PERIOD_S for i in range(SIZE_S // PERIOD_S)]


class _Topic:
    def __init__(self, bootstrap: str, name: str) -> None:
        self.name = name
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
        self.sent: list[tuple[int, bytes]] = []
        self._next = 0

    def send(self, value: bytes, partition: int | None = None) -> None:
        if partition is None:
            partition = self._next % PARTITIONS
            self._next += 1
        self.producer.send(self.name, value=value, partition=partition)
        self.sent.append((partition, value))

    def flush(self) -> None:
        self.producer.flush()


@pytest.fixture()
def job_files(tmp_path: Path, kafka_bootstrap: str) -> dict[str, Path]:
    run_id = uuid.uuid4().hex[:8]
    kafka = job_kafka(
        kafka_bootstrap, "e2e", run_id, start_from="earliest", idle_timeout="5s", max_delay="3s"
    )
    config_path = trained_job(
        tmp_path,
        "e2e",
        kafka,
        SIZE_S,
        PERIOD_S,
        LATENESS_S,
        training_events=20_000,
        partitions=PARTITIONS,
    )
    return {"config": config_path, "dir": tmp_path, "kafka": kafka}  # type: ignore[dict-item]


def test_run_on_kafka_matches_replay_and_accounts_for_every_record(
    job_files: dict, kafka_bootstrap: str
) -> None:
    kafka = job_files["kafka"]
    # Event time starts ~25 s after now, so the idle rule (watermark follows wall-clock time
    # minus 5 s on quiet partitions) cannot close windows while the test produces phase by
    # phase; it closes them all ~70 s later, once wall-clock time has passed the data.
    t0 = math.ceil((time.time() + 25) / PERIOD_S) * PERIOD_S
    stream = SyntheticStream(
        start=t0, duration=60, rate=30, drift_at=t0 + 30, drift_size=1.5, seed=11
    )
    lines = list(stream.lines())
    times = stream.event_times()
    rng = np.random.default_rng(5)
    topic = _Topic(kafka_bootstrap, kafka["input_topic"])

    # Phase 1: events up to t0 + 35 s, shuffled in 2 s blocks (out of order by less than the
    # watermark's max_delay of 3 s), plus malformed records.
    phase1 = [i for i in range(len(lines)) if times[i] < t0 + 35]
    # Wrong types are binned as `invalid`, not dead-lettered.
    wrong_types = {"ts": t0 + 12.5, "model": "model-a", "latency_ms": "fast", "device": {"x": 1}}
    topic.send(json.dumps(wrong_types).encode())
    for block_start in range(0, len(phase1), 60):
        block = phase1[block_start : block_start + 60]
        for i in rng.permutation(block):
            topic.send(lines[i])
    malformed = [
        b"not json at all",
        b"[1, 2, 3]",
        json.dumps({"model": "model-a", "latency_ms": 3.0}).encode(),  # no event time
        json.dumps({"ts": "yesterday", "model": "model-a"}).encode(),
        json.dumps({"ts": t0 + 1, "latency_ms": 1.0}).encode(),  # no key
    ]
    for value in malformed:
        topic.send(value)
    topic.flush()

    tail = ReportTail(kafka_bootstrap, kafka["output_topic"])
    # A short job-server timeout: the job must outlive Beam's state-stream timeout.
    with streaming_job(
        "--config", str(job_files["config"]), "--", "--job_server_timeout=20"
    ) as job:
        try:
            # The watermark (t0 + 35 - 3) passes t0 + 30: window [t0+10, t0+30) reports revision 0.
            wait_for(lambda: tail.has(t0 + 10), 60, "the first reports")
            # Phase 2: a late event inside that window, within allowed lateness -> revision 1.
            # (On Prism a late revision is emitted when the watermark next crosses a window end.)
            late = dict(json.loads(lines[phase1[-1]]), ts=t0 + 25.0, model="model-b")
            topic.send(json.dumps(late).encode(), partition=0)
            topic.flush()
            time.sleep(3)  # the job reads it while the watermark is still before t0 + 40
            # Phase 3: the rest in order, then one event so late every window holding it closed.
            for i in range(len(phase1), len(lines)):
                topic.send(lines[i])
            too_late = dict(json.loads(lines[0]), ts=t0 + 5.0)
            topic.flush()
            time.sleep(3)  # let the job read phase 3: the watermark is then far past t0 + 30
            topic.send(json.dumps(too_late).encode(), partition=1)
            topic.flush()
            last_window = _windows_of(float(times[-1]))[0]
            # After the idle timeout the watermark follows wall-clock time: every window closes.
            wait_for(lambda: tail.has(last_window), 150, "the last window's report")
            wait_for(lambda: tail.has(t0 + 10, 1, "model-b"), 10, "the late revision")
            time.sleep(2)
            tail.drain()
        except BaseException as err:
            seen = sorted({(r.window_start.timestamp() - t0, r.revision) for r in tail.reports})
            raise AssertionError(f"{err}\nwindows seen (start - t0, revision): {seen}") from err
        finally:
            tail.close()
            topic.producer.close()
    output = job.output
    assert job.returncode == STOPPED_BY_CTRL_C, output[-4000:]
    assert "kldrift run: stopped" in output

    # Dead letters: the malformed records and the too-late one, each with its reason.
    dead = KafkaConsumer(
        kafka["dead_letter_topic"],
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    dead_letters = list(dead)
    dead.close()
    reasons = Counter(dict(m.headers)["reason"].decode() for m in dead_letters)
    assert reasons == Counter(
        {
            "not_json": 1,
            "not_object": 1,
            "missing_event_time": 1,
            "invalid_event_time": 1,
            "missing_key": 1,
            "too_late": 1,
        }
    )
    dead_values = Counter(m.value for m in dead_letters)
    assert dead_values[json.dumps(too_late).encode()] == 1

    # The binned events are every consumed record that was not dead-lettered.
    consumed = Counter(value for _, value in topic.sent)
    binned_values = consumed - dead_values
    assert sum(consumed.values()) == sum(binned_values.values()) + len(dead_letters)
    binned_events = [json.loads(v) for v in binned_values.elements()]

    reports = tail.reports
    revision0 = [r for r in reports if r.revision == 0]
    by_window = Counter((r.key, r.feature, r.window_start.timestamp()) for r in revision0)
    assert max(by_window.values()) == 1, "a window reported revision 0 twice"
    expected_windows = {
        (event["model"], feature, float(start))
        for event in binned_events
        for feature in ("latency_ms", "amount", "payload.country", "device")
        for start in _windows_of(event["ts"])
    }
    assert set(by_window) == expected_windows

    # Every binned event is counted in each of its size/period windows (final revisions).
    latest = LatestRevisions()
    for report in reports:
        latest.offer(report)
    per_key_feature: Counter = Counter()
    for r in latest.by_key.values():
        per_key_feature[(r.key, r.feature)] += r.count + r.missing + r.invalid
    events_per_key = Counter(e["model"] for e in binned_events)
    for (key, _feature), total in per_key_feature.items():
        assert total == (SIZE_S // PERIOD_S) * events_per_key[key]

    # The late event produced revision 1 of its window, one event more than revision 0.
    rev = {
        r.revision: r
        for r in reports
        if r.window_start.timestamp() == t0 + 10
        and r.key == "model-b"
        and r.feature == "latency_ms"
    }
    assert rev[1].count + rev[1].missing + rev[1].invalid == (
        rev[0].count + rev[0].missing + rev[0].invalid + 1
    )

    # Streaming's final revisions equal replay over the binned events.
    events_file = job_files["dir"] / "binned.jsonl"
    events_file.write_bytes(b"\n".join(binned_values.elements()) + b"\n")
    replay_out = job_files["dir"] / "replay.jsonl"
    replayed = run_cli(
        "replay",
        "--config",
        str(job_files["config"]),
        "--input",
        str(events_file),
        "--output",
        str(replay_out),
        "--summaries",
        str(job_files["dir"] / "summaries.jsonl"),
    )
    assert replayed.returncode == 0, replayed.stderr[-3000:]
    replay_reports = [
        DriftReport.from_json_bytes(line) for line in replay_out.read_bytes().split(b"\n") if line
    ]
    assert len(replay_reports) == len(latest.by_key)
    for expected in replay_reports:
        actual = latest.by_key[expected.message_key]
        assert (actual.count, actual.missing, actual.invalid) == (
            expected.count,
            expected.missing,
            expected.invalid,
        )
        if expected.kl_bits is None:
            assert actual.kl_bits is None
        else:
            assert actual.kl_bits == pytest.approx(expected.kl_bits, abs=1e-12, rel=0)
            assert actual.p_value == pytest.approx(expected.p_value, abs=1e-300, rel=1e-9)

    # One summary per (key, window, revision) the job reported (in no set order); each window's
    # newest equals replay's summary of the same window.
    reported = {(r.key, r.window_start, r.revision) for r in reports}
    summarised = Counter((s.key, s.window_start, s.revision) for s in tail.summaries)
    assert set(summarised) == reported and max(summarised.values()) == 1
    newest_summary = LatestRevisions()
    for summary in tail.summaries:
        newest_summary.offer(summary)
    replay_summaries = [
        parse_report_record(line)
        for line in (job_files["dir"] / "summaries.jsonl").read_bytes().splitlines()
    ]
    assert len(replay_summaries) == len(newest_summary.by_key) == len(by_window) // 4
    for expected_summary in replay_summaries:
        actual_summary = newest_summary.by_key[expected_summary.message_key]
        assert isinstance(actual_summary, WindowSummary)
        assert isinstance(expected_summary, WindowSummary)
        assert actual_summary.events == expected_summary.events
        assert actual_summary.features_drifted == expected_summary.features_drifted
        assert actual_summary.drift == expected_summary.drift
        if expected_summary.combined_p_value is not None:
            assert actual_summary.combined_p_value == pytest.approx(
                expected_summary.combined_p_value, rel=1e-9, abs=1e-300
            )
    assert any(s.drift for s in replay_summaries) and not all(s.drift for s in replay_summaries)

    # Drift: latency windows wholly before the shift are calm, wholly after are flagged.
    for r in latest.by_key.values():
        if r.feature != "latency_ms":
            continue
        start = r.window_start.timestamp()
        if start + SIZE_S <= t0 + 30:
            assert not r.drift, f"false alarm in {r.window_start}"
        elif start >= t0 + 30 and r.count >= 100:
            assert r.drift, f"missed drift in {r.window_start}"

    # The job's own totals agree: consumed = binned + dead-lettered.
    totals = job.totals
    if totals["records_consumed"]:  # a cancelled Prism job may not report metrics
        assert totals["records_consumed"] == sum(consumed.values())
        assert (
            totals["records_consumed"] == totals["events_binned"] + totals["records_dead_lettered"]
        )
