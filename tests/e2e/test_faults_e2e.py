"""Poison records and bad clocks on a real broker and Prism: `kldrift run` reads a live stream
carrying the whole battery (tombstone, empty, invalid UTF-8, 100,000-deep nesting, 5 MB records,
NaN/Infinity/1e400, 30-digit integers, times as text/bools, objects/lists as values, a year-9000
event, an hour-old event, and year-5 and 1970 events among the first records read) among good events, keeps running, dead-letters each bad record with
its reason, and reports every window of the good events exactly (counts, and KL against scipy)."""

from __future__ import annotations

import json
import math
import re
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _jobs import STOPPED_BY_CTRL_C, ReportTail, job_kafka, streaming_job, trained_job, wait_for
from kafka import KafkaConsumer, KafkaProducer
from scipy.stats import entropy

from kldrift.consumer import LatestRevisions
from kldrift.synthetic import COUNTRIES, LATENCY_EDGES, make_event

pytestmark = pytest.mark.services

SIZE_S, PERIOD_S, LATENESS_S = 10, 5, 5
FEATURES = [
    {"name": "latency_ms", "kind": "numeric", "edges": LATENCY_EDGES},
    {"name": "payload.country", "kind": "categorical", "categories": COUNTRIES[:4]},
]
SMOOTHING = 0.5
YEAR_9000 = 221_845_392_000  # 9000-01-01T00:00:00Z, epoch seconds
YEAR_5 = -62_000_000_000  # 0005-04-19T09:46:40Z: a producer clock far behind
BIG = 5_000_000  # bytes: the broker takes them compressed (gzip), the reader decompresses


def _windows_of(t: float) -> list[int]:
    last = math.floor(t / PERIOD_S) * PERIOD_S
    return [last - i * PERIOD_S for i in range(SIZE_S // PERIOD_S)]


def _slot(feature: str, value: object) -> str | int:
    """README's binning rules, written out here: a bin index, or 'missing' / 'invalid'."""
    if feature == "latency_ms":
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "missing"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "invalid"
        return int(np.searchsorted(LATENCY_EDGES, min(value, 1e300), side="right"))
    if value is None:
        return "missing"
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, int):
        value = str(value)
    if not isinstance(value, str):
        return "invalid"
    categories = COUNTRIES[:4]
    return categories.index(value) if value in categories else len(categories)


def _value(event: dict, feature: str) -> object:
    if feature == "payload.country":
        payload = event.get("payload")
        return payload.get("country") if isinstance(payload, dict) else None
    return event.get(feature)


def _battery(now: float) -> tuple[list[tuple[bytes | None, str]], list[dict]]:
    """(raw value, dead-letter reason) of each record to dead-letter, and the odd but valid events
    (key `poison`) to bin: invalid or missing values, huge numbers, a 5 MB event."""
    good = {"model": "model-a", "latency_ms": 12.0, "payload": {"country": "US"}}
    dead: list[tuple[bytes | None, str]] = [
        (None, "null_value"),  # a tombstone
        (b"", "not_json"),
        (b"\xff\xfe\x00\xd8garbage", "not_json"),  # invalid UTF-8 (and UTF-16)
        (b"x" * BIG, "not_json"),  # a 5 MB dead letter: cut to fit one producer request
        (b"[" * 100_000 + b"]" * 100_000, "too_deep"),
        (b'{"ts": NaN, "model": "model-a"}', "invalid_event_time"),
        (b'{"ts": Infinity, "model": "model-a"}', "invalid_event_time"),
        (b'{"ts": 1e400, "model": "model-a"}', "invalid_event_time"),
        (b'{"ts": 123456789012345678901234567890, "model": "model-a"}', "invalid_event_time"),
        (json.dumps({**good, "ts": "yesterday"}).encode(), "invalid_event_time"),
        (json.dumps({**good, "ts": str(int(now))}).encode(), "invalid_event_time"),
        (json.dumps({**good, "ts": True}).encode(), "invalid_event_time"),
        (json.dumps({**good, "ts": now, "model": {"id": 1}}).encode(), "missing_key"),
        (json.dumps({**good, "ts": YEAR_9000}).encode(), "future_event_time"),
    ]
    rfc3339 = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f"{now % 1:.6f}"[1:] + "Z"
    binned = [
        {
            "ts": now,
            "model": "poison",
            "latency_ms": 5.0,
            "payload": {"country": "US"},
            "pad": "y" * BIG,
        },
        {"ts": now, "model": "poison", "latency_ms": math.nan, "payload": {"country": math.inf}},
        {
            "ts": now,
            "model": "poison",
            "latency_ms": 10**30,
            "payload": {"country": 123456789012345678901234567890},
        },
        {"ts": now, "model": "poison", "latency_ms": {"a": 1}, "payload": [1, 2]},
        {"ts": rfc3339, "model": "poison", "latency_ms": "fast", "payload": {"country": True}},
    ]
    return dead, binned


def _baseline(job_files: dict) -> dict[str, dict]:
    return {f["name"]: f for f in json.loads(job_files["baseline"].read_text())["features"]}


def _final_reports(reports: list) -> dict[tuple, Any]:
    """(key, feature, window start) -> the window's last revision."""
    latest = LatestRevisions()
    for report in reports:
        latest.offer(report)
    return {(r.key, r.feature, r.window_start.timestamp()): r for r in latest.by_key.values()}


def _check_windows(
    events: list[dict], reported: dict[tuple, Any], baseline: dict[str, dict]
) -> tuple[dict[tuple, Counter], list[tuple]]:
    """The windows `events` fill, and those reported wrong: the reported windows must be exactly
    these, each with its counts as binned by README's rules and KL(P || Q) from scipy, with
    Q = (baseline counts + smoothing) normalised."""
    expected: dict[tuple, Counter] = {}
    for event in events:
        for feature in baseline:
            for start in _windows_of(event["ts"]):
                slots = expected.setdefault((event["model"], feature, float(start)), Counter())
                slots[_slot(feature, _value(event, feature))] += 1
    assert set(reported) == set(expected)
    wrong = []
    for window, slots in expected.items():
        report = reported[window]
        stored = baseline[window[1]]
        n_bins = len(stored["counts"])
        counts = np.array([slots[i] for i in range(n_bins)], dtype=float)
        q = (np.array(stored["counts"]) + SMOOTHING) / (sum(stored["counts"]) + n_bins * SMOOTHING)
        kl_bits = entropy(counts / counts.sum(), q, base=2)
        if (report.count, report.missing, report.invalid) != (
            int(counts.sum()),
            slots["missing"],
            slots["invalid"],
        ) or report.kl_bits != pytest.approx(kl_bits, abs=1e-12, rel=1e-9):
            wrong.append((window, report.count, int(counts.sum()), report.kl_bits, kl_bits))
    return expected, wrong


@pytest.fixture()
def job_files(tmp_path: Path, kafka_bootstrap: str, request: pytest.FixtureRequest) -> dict:
    run_id = uuid.uuid4().hex[:8]
    kafka = job_kafka(
        kafka_bootstrap, "faults", run_id, start_from="earliest", idle_timeout="3s", max_delay="1s"
    )
    config_path = trained_job(
        tmp_path,
        "faults",
        kafka,
        SIZE_S,
        PERIOD_S,
        LATENESS_S,
        training_events=5_000,
        partitions=getattr(request, "param", 1),
        features=FEATURES,
    )
    return {"config": config_path, "kafka": kafka, "baseline": tmp_path / "baseline.json"}


def test_poison_records_and_bad_clocks_never_stop_the_job_nor_spoil_a_window(
    job_files: dict, kafka_bootstrap: str
) -> None:
    kafka = job_files["kafka"]
    topic = kafka["input_topic"]
    producer = KafkaProducer(
        bootstrap_servers=kafka_bootstrap,
        acks="all",
        compression_type="gzip",
        max_request_size=4 * BIG,
    )
    rng = np.random.default_rng(12)
    good: list[dict] = []
    dead_sent: list[tuple[bytes | None, str]] = []
    binned_poison: list[dict] = []

    def send_good(seconds: float) -> None:
        end = time.time() + seconds
        while time.time() < end:
            event = make_event(rng, time.time(), ("model-a", "model-b")[len(good) % 2], 0.0)
            producer.send(topic, json.dumps(event).encode())
            good.append(event)
            time.sleep(0.02)
        producer.flush()

    # Among the first records the fresh job reads (no watermark yet): a producer clock far behind
    # and an unset one (1970). Before min_event_time they opened year-5 and 1970 windows.
    early = {"model": "model-a", "latency_ms": 12.0, "payload": {"country": "US"}}
    early_dead = [
        (json.dumps({**early, "ts": YEAR_5}).encode(), "past_event_time"),
        (json.dumps({**early, "ts": 0}).encode(), "past_event_time"),
    ]
    for value, _ in early_dead:
        producer.send(topic, value)
    producer.flush()
    tail = ReportTail(kafka_bootstrap, kafka["output_topic"])
    with streaming_job("--config", str(job_files["config"])) as job:
        try:
            send_good(4)
            first_end = _windows_of(good[0]["ts"])[0] + SIZE_S
            wait_for(lambda: any(r.window_end.timestamp() >= first_end for r in tail.poll()), 90,
                     "the first report")  # fmt: skip
            # The job is reading: now the battery, in one stream with the good events.
            now = time.time()
            dead_sent, binned_poison = _battery(now)
            hour_old = dict(good[-1], ts=now - 3600)  # a producer clock an hour behind
            dead_sent.append((json.dumps(hour_old).encode(), "too_late"))
            for value, _ in dead_sent:
                producer.send(topic, value, key=b"battery")  # a tombstone needs a key
            for event in binned_poison:
                producer.send(topic, json.dumps(event).encode())
            producer.flush()
            dead_sent = early_dead + dead_sent
            battery_at = time.time()
            send_good(15)
            # After the idle timeout the watermark follows wall-clock time: every window closes.
            last_window = _windows_of(good[-1]["ts"])[0]
            wait_for(lambda: any(r.window_start.timestamp() == last_window for r in tail.poll()),
                     60, "the last window's report")  # fmt: skip
            time.sleep(2)
            tail.drain()
        finally:
            tail.close()
            producer.close()
    assert job.returncode == STOPPED_BY_CTRL_C, job.output[-4000:]
    assert "kldrift run: stopped" in job.output

    # Every bad record is on the dead-letter topic once, with its reason.
    consumer = KafkaConsumer(
        kafka["dead_letter_topic"],
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    dead_letters = list(consumer)
    consumer.close()
    reasons = Counter(dict(m.headers)["reason"].decode() for m in dead_letters)
    assert reasons == Counter(reason for _, reason in dead_sent)
    big = [m for m in dead_letters if dict(m.headers).get("value_truncated_from")]
    assert [int(dict(m.headers)["value_truncated_from"]) for m in big] == [BIG]
    assert big[0].value == b"x" * len(big[0].value)
    assert 0 < len(big[0].value) < BIG
    assert [m.value for m in dead_letters if dict(m.headers)["reason"] == b"null_value"] == [None]
    assert sorted(
        dict(m.headers)["detail"].decode()
        for m in dead_letters
        if dict(m.headers)["reason"] == b"past_event_time"
    ) == [
        "event time 0005-04-19T09:46:40Z is before min_event_time 2000-01-01T00:00:00Z",
        "event time 1970-01-01T00:00:00Z is before min_event_time 2000-01-01T00:00:00Z",
    ]

    # The job's totals: consumed = binned + dead-lettered, and each as sent.
    consumed = len(good) + len(binned_poison) + len(dead_sent)
    totals = job.totals
    assert totals, f"no totals line in the job's output:\n{job.output[-3000:]}"
    assert totals["records_consumed"] == consumed
    assert totals["events_binned"] == len(good) + len(binned_poison)
    assert totals["records_dead_lettered"] == len(dead_sent)
    assert totals["events_too_late"] == 1

    # Every window of the good events and no other (none in year 5 or 1970): final counts as
    # produced, KL as scipy computes it.
    baseline = _baseline(job_files)
    reported = _final_reports(tail.reports)
    expected, wrong = _check_windows(
        good, {k: r for k, r in reported.items() if k[0] != "poison"}, baseline
    )
    assert wrong == []
    after = [w for w in expected if w[2] >= battery_at - SIZE_S]

    # The odd but valid events are binned as README says, in their size/period windows each.
    poison = Counter()
    for (key, feature, _), r in reported.items():
        if key == "poison":
            poison[(feature, "count")] += r.count
            poison[(feature, "missing")] += r.missing
            poison[(feature, "invalid")] += r.invalid
    hand = Counter()
    for event in binned_poison:
        for feature in baseline:
            slot = _slot(feature, _value(event, feature))
            hand[(feature, slot if isinstance(slot, str) else "count")] += SIZE_S // PERIOD_S
    assert poison == hand
    print(
        f"faults e2e: consumed {consumed}, binned {len(good) + len(binned_poison)}, "
        f"dead-lettered {len(dead_sent)} {dict(reasons)}; windows checked {len(expected)} "
        f"({len(after)} holding or after the battery), wrong {len(wrong)}"
    )


LAG_S = 15


WARN_INTERVAL_S = 5
WARNING = re.compile(r"kldrift: last [\d.]+ s: (\d+) of (\d+) records dead-lettered \((.*)\)$")


@pytest.mark.parametrize("job_files", [3], indirect=True)
def test_a_partition_behind_holds_windows_back_and_one_of_future_garbage_does_not(
    job_files: dict, kafka_bootstrap: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Partition 0: good events stamped with the wall clock; partition 1: good events from a
    producer whose clock is LAG_S behind; partition 2: nothing but year-9000 events. The job
    warns of the dead letters while it runs (every WARN_INTERVAL_S here, every minute by
    default)."""
    monkeypatch.setenv("KLDRIFT_WARN_INTERVAL_S", str(WARN_INTERVAL_S))
    kafka = job_files["kafka"]
    topic = kafka["input_topic"]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    rng = np.random.default_rng(21)
    good: list[dict] = []
    future_sent = 0
    tail = ReportTail(kafka_bootstrap, kafka["output_topic"])
    first_report_s = None
    with streaming_job("--config", str(job_files["config"])) as job:
        try:
            stop_at = time.time() + 35
            while (now := time.time()) < stop_at:
                partition = len(good) % 2
                stamp = now - LAG_S * partition
                event = make_event(rng, stamp, ("model-a", "model-b")[len(good) // 2 % 2], 0.0)
                producer.send(topic, json.dumps(event).encode(), partition=partition)
                good.append(event)
                if len(good) % 4 == 0:
                    future = dict(event, ts=YEAR_9000 + len(good))
                    producer.send(topic, json.dumps(future).encode(), partition=2)
                    future_sent += 1
                if first_report_s is None and tail.poll():
                    first_report_s = time.time()
                time.sleep(0.02)
            producer.flush()
            stopped_s = time.time()
            last_window = _windows_of(max(e["ts"] for e in good))[0]
            wait_for(lambda: any(r.window_start.timestamp() == last_window for r in tail.poll()),
                     60, "the last window's report")  # fmt: skip
            time.sleep(2)
            tail.drain()
        finally:
            tail.close()
            producer.close()
    assert job.returncode == STOPPED_BY_CTRL_C, job.output[-4000:]

    # Nothing lost, nothing too late, every window exact; only the year-9000 events dead.
    expected, wrong = _check_windows(good, _final_reports(tail.reports), _baseline(job_files))
    assert wrong == []
    totals = job.totals
    assert totals, f"no totals line in the job's output:\n{job.output[-3000:]}"
    assert totals["records_consumed"] == len(good) + future_sent
    assert totals["events_binned"] == len(good)
    assert totals["records_dead_lettered"] == future_sent
    assert totals["events_too_late"] == 0

    # While it ran, the job said what it dead-lettered and why, WARN_INTERVAL_S apart at most:
    # only future_event_time, never more than were sent. No feature went without values.
    warnings = [m for m in map(WARNING.match, job.output.splitlines()) if m]
    assert len(warnings) >= 3, job.output[-4000:]
    assert all(m.group(3) == f"{m.group(1)} future_event_time" for m in warnings)
    assert sum(int(m.group(1)) for m in warnings) <= future_sent
    assert sum(int(m.group(2)) for m in warnings) <= len(good) + future_sent
    said = [line for line in job.output.splitlines() if line.startswith("kldrift: last")]
    assert len(said) == len(warnings), said

    # The garbage-only partition went idle: windows closed while it was still being written to.
    assert first_report_s is not None and first_report_s < stopped_s
    # The lagging partition held the job's watermark: no window closed before the lagging
    # producer's clock passed its end (reports' CreateTime, ms, same machine clock).
    early = [
        (r.window_end.timestamp(), arrived / 1000)
        for r, arrived in zip(tail.reports, tail.arrived_ms, strict=True)
        if r.window_end.timestamp() + LAG_S < stopped_s
        and arrived / 1000 < r.window_end.timestamp() + LAG_S
    ]
    assert early == []
    print(
        f"clocks e2e: consumed {len(good) + future_sent}, binned {len(good)}, dead-lettered "
        f"{future_sent} (future_event_time); windows checked {len(expected)}, wrong {len(wrong)}; "
        f"{len(warnings)} warnings while it ran, of {sum(int(m.group(1)) for m in warnings)} "
        "future_event_time"
    )
    print("\n".join(said))
