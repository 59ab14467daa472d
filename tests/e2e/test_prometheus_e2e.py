"""A real Prometheus (Debian's package, started here on a free port) scrapes `kldrift exporter`
every second while `kldrift run` (Prism, real broker) scores a live demo-style stream that drifts
halfway: PromQL over Prometheus's HTTP API returns what the reports on the topic carry, the dead
letters by reason, the job group's input lag and the baseline id; the dashboard's queries and the
alert rules evaluate on the live series."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from _jobs import (
    KLDRIFT,
    STOPPED_BY_CTRL_C,
    ReportTail,
    job_kafka,
    streaming_job,
    trained_job,
    wait_for,
)
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from kldrift.consumer import read_reports
from kldrift.local import prometheus
from kldrift.schemas.baseline import Baseline
from kldrift.schemas.report import DriftReport, WindowSummary
from kldrift.synthetic import make_event

pytestmark = pytest.mark.services

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
PIPELINE = "prom-e2e"
SIZE_S, PERIOD_S = 6, 2
PARTITIONS = 2
FEATURES = ("latency_ms", "amount", "payload.country", "device")


class _Exporter:
    """`kldrift exporter` on a free port, its output collected by a thread."""

    def __init__(self, config: Path) -> None:
        self.process = subprocess.Popen(
            [
                KLDRIFT,
                "exporter",
                "--config",
                str(config),
                "--port",
                "0",
                "--address",
                "127.0.0.1",
                "--offsets-interval",
                "1s",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def address(self) -> str:
        wait_for(lambda: any("/metrics" in line for line in self.lines), 60, "the exporter")
        line = next(line for line in self.lines if "/metrics" in line)
        return line.split("http://")[1].split("/")[0]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(timeout=5)


def _prometheus(data_dir: Path, targets: list[str]) -> prometheus.LocalPrometheus:
    try:
        prometheus.require()
    except prometheus.PrometheusSetupError as err:
        pytest.fail(str(err))  # never skipped: the set-up installs it
    return prometheus.LocalPrometheus(
        data_dir, targets, scrape_interval_s=1.0, rule_files=[MONITORING / "alerts.yaml"]
    )


def _by_pair(result: list[dict]) -> dict[tuple[str, str], float]:
    return {(s["metric"]["key"], s["metric"]["feature"]): float(s["value"][1]) for s in result}


def _newest_per_pair(reports: list[DriftReport]) -> dict[tuple[str, str], DriftReport]:
    """Independently of the exporter: per (key, feature), the newest window's highest revision."""
    newest: dict[tuple[str, str], DriftReport] = {}
    for report in reports:
        pair = (report.key or "", report.feature)
        order = (report.window_end.timestamp(), report.revision)
        current = newest.get(pair)
        if current is None or order > (current.window_end.timestamp(), current.revision):
            newest[pair] = report
    return newest


def _group_lag(bootstrap: str, topic: str, group: str) -> int:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        ends = consumer.end_offsets(tps)
        return sum(ends[tp] - (consumer.committed(tp) or 0) for tp in tps)
    finally:
        consumer.close()


def test_prometheus_scrapes_the_exporter_and_promql_returns_the_reports_values(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    run_id = uuid.uuid4().hex[:8]
    kafka = job_kafka(
        kafka_bootstrap,
        "prom",
        run_id,
        start_from="earliest",
        idle_timeout="2s",
        max_delay="1s",
        group_id=f"kldrift.{PIPELINE}.{run_id}",
    )
    config_path = trained_job(
        tmp_path, PIPELINE, kafka, SIZE_S, PERIOD_S, 2, training_events=5000, partitions=PARTITIONS
    )
    baseline_path = tmp_path / "baseline.json"
    baseline_id = Baseline.model_validate_json(baseline_path.read_text()).id

    exporter = _Exporter(config_path)  # before the job: the report topics do not exist yet
    prom = _prometheus(tmp_path / "prometheus", [])
    tail = ReportTail(kafka_bootstrap, kafka["output_topic"])
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    sent = 0
    try:
        prom.targets = [exporter.address()]
        prom.start()
        with streaming_job("--config", str(config_path)) as job:
            # About 14 s of events, 100 per second of event time, each stamped with its own slot
            # of a fixed grid and sent once the wall clock reaches it (in catch-up bursts when the
            # machine is loaded, so every window gets its events whatever the load); latency and
            # country drift from the 7th second on. The last event falls just before a period
            # boundary, so the newest window holds a whole period of events (~100 per key), enough
            # to be flagged (5 values per occupied bin).
            rng = np.random.default_rng(4)
            started = time.time()
            end = math.ceil((started + 14) / PERIOD_S) * PERIOD_S - 0.1
            stamps = np.arange(started, end, 0.01).tolist()
            for stamp in stamps:
                time.sleep(max(0.0, stamp - time.time()))
                drift = 1.5 if stamp >= started + 7 else 0.0
                event = make_event(rng, stamp, ("model-a", "model-b")[sent % 2], drift)
                producer.send(
                    kafka["input_topic"], json.dumps(event).encode(), partition=sent % PARTITIONS
                )
                sent += 1
            last = stamps[-1]
            malformed = [b"not json", b"{still not json", json.dumps({"ts": last}).encode()]
            for i, value in enumerate(malformed):
                producer.send(kafka["input_topic"], value, partition=i % PARTITIONS)
            sent += len(malformed)
            producer.flush()
            last_start = math.floor(last / PERIOD_S) * PERIOD_S
            # The idle partitions' watermark follows the wall clock: every window closes.
            wait_for(lambda: tail.has(last_start), 120, "the last window's reports")
            time.sleep(2)
        assert job.returncode == STOPPED_BY_CTRL_C, job.output[-3000:]

        # What the topics say, read independently of the exporter.
        records = [m.report for m in read_reports(kafka_bootstrap, kafka["output_topic"])]
        reports = [r for r in records if isinstance(r, DriftReport)]
        summaries = [r for r in records if isinstance(r, WindowSummary)]
        dead = KafkaConsumer(
            kafka["dead_letter_topic"],
            bootstrap_servers=kafka_bootstrap,
            auto_offset_reset="earliest",
            consumer_timeout_ms=3000,
        )
        reasons = Counter(dict(m.headers)["reason"].decode() for m in dead)
        dead.close()
        assert reasons["not_json"] == 2 and reasons["missing_key"] == 1
        lag = _group_lag(kafka_bootstrap, kafka["input_topic"], kafka["group_id"])
        newest = _newest_per_pair(reports)
        assert set(newest) == {(k, f) for k in ("model-a", "model-b") for f in FEATURES}

        # Prometheus has scraped everything once the counters agree with the topics.
        def scraped(promql: str) -> float | None:
            result = prom.query(promql)
            return float(result[0]["value"][1]) if result else None

        pipeline = f'pipeline="{PIPELINE}"'
        wait_for(
            lambda: (
                scraped(f"kldrift_reports_total{{{pipeline}}}") == len(reports)
                and scraped(f"sum(kldrift_dead_letters_total{{{pipeline}}})") == reasons.total()
                and scraped(f"kldrift_input_consumer_lag_records{{{pipeline}}}") == lag
            ),
            60,
            "Prometheus to scrape the exporter's final state",
        )

        # Per (key, feature): the gauges are the newest window's latest report, exactly.
        def gauge(name: str) -> dict[tuple[str, str], float]:
            return _by_pair(prom.query(f"{name}{{{pipeline}}}"))

        expected = {
            "kldrift_kl_bits": lambda r: r.kl_bits,
            "kldrift_kl_debiased_bits": lambda r: r.kl_bits_debiased,
            "kldrift_p_value": lambda r: r.p_value,
            "kldrift_drift": lambda r: float(r.drift),
            "kldrift_window_events": lambda r: float(r.count),
            "kldrift_window_missing_ratio": lambda r: r.missing / (r.count + r.missing + r.invalid),
            "kldrift_window_end_timestamp_seconds": lambda r: r.window_end.timestamp(),
            "kldrift_report_revision": lambda r: float(r.revision),
        }
        for name, value_of in expected.items():
            assert gauge(name) == {pair: value_of(r) for pair, r in newest.items()}, name
        # Per key: the window summary gauges are the newest window's latest summary, exactly.
        newest_summary: dict[str, WindowSummary] = {}
        for summary in summaries:
            order = (summary.window_end.timestamp(), summary.revision)
            current = newest_summary.get(summary.key or "")
            if current is None or order > (current.window_end.timestamp(), current.revision):
                newest_summary[summary.key or ""] = summary
        assert set(newest_summary) == {"model-a", "model-b"}
        for name, value_of in {
            "kldrift_window_drift": lambda s: float(s.drift),
            "kldrift_window_combined_p_value": lambda s: s.combined_p_value,
            "kldrift_window_features_drifted": lambda s: float(len(s.features_drifted)),
        }.items():
            scraped_by_key = {
                series["metric"]["key"]: float(series["value"][1])
                for series in prom.query(f"{name}{{{pipeline}}}")
            }
            assert scraped_by_key == {k: value_of(s) for k, s in newest_summary.items()}, name
        # The drift halfway through shows: latency's newest windows are flagged for both keys.
        assert gauge("kldrift_drift")[("model-a", "latency_ms")] == 1.0
        assert gauge("kldrift_drift")[("model-b", "latency_ms")] == 1.0
        # Report lag = the scrape's wall-clock time minus the window's end.
        lag_error = prom.query(
            f"abs(kldrift_report_lag_seconds{{{pipeline}}} - (timestamp(kldrift_report_lag_"
            f"seconds{{{pipeline}}}) - kldrift_window_end_timestamp_seconds{{{pipeline}}}))"
        )
        assert len(lag_error) == len(newest) and max(float(s["value"][1]) for s in lag_error) < 2

        # Per pipeline: dead letters by reason, input records, lag, baseline, threshold, period.
        by_reason = {
            s["metric"]["reason"]: float(s["value"][1])
            for s in prom.query(f"kldrift_dead_letters_total{{{pipeline}}}")
        }
        assert by_reason == {reason: float(n) for reason, n in reasons.items()}
        assert scraped(f"kldrift_input_records_total{{{pipeline}}}") == sent
        assert [s["metric"]["baseline_id"] for s in prom.query("kldrift_baseline_info")] == [
            baseline_id
        ]
        assert scraped(f"kldrift_drift_threshold_bits{{{pipeline}}}") == 0.05
        assert scraped(f"kldrift_window_period_seconds{{{pipeline}}}") == PERIOD_S

        example = f'kldrift_kl_debiased_bits{{{pipeline},key="model-a",feature="latency_ms"}}'
        answer = prom.query(example)
        report = newest[("model-a", "latency_ms")]
        print(
            f"\nPromQL: {example}\nanswer: {answer}\nreport: window {report.window_start} - "
            f"{report.window_end} rev {report.revision}: kl_bits_debiased "
            f"{report.kl_bits_debiased!r}, p_value {report.p_value!r}, drift {report.drift}"
        )

        # Every dashboard query runs on the live series and returns data.
        dashboard = json.loads((MONITORING / "dashboard.json").read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                promql = (
                    target["expr"]
                    .replace("$__rate_interval", "1m")
                    .replace('=~"$pipeline"', f'="{PIPELINE}"')
                    .replace('=~"$key"', '=~".*"')
                    .replace('=~"$feature"', '=~".*"')
                )
                assert prom.query(promql), f"panel {panel['title']!r}: no data for {promql}"
        # The alert rules evaluate on these series without errors.
        wait_for(
            lambda: all(
                rule["health"] == "ok"
                for group in prom.api("rules")["groups"]
                for rule in group["rules"]
            ),
            30,
            "every alert rule to evaluate",
        )
    finally:
        tail.close()
        producer.close()
        prom.stop()
        exporter.stop()
    assert exporter.process.returncode == 0, "\n".join(exporter.lines[-40:])
    assert "exporter: stopped" in exporter.lines
