"""`kldrift exporter`: Prometheus metrics of one pipeline, read from its report and dead-letter
topics and its consumer group's offsets on the input topic.

Per (pipeline, key, feature) the gauges show the newest window's latest revision; the number of
(key, feature) pairs exported is capped (`max_pairs`), and reports beyond the cap are counted, not
exported. Counters count the records read since the exporter started (after its look-back).
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kldrift.schemas.report import DriftReport, WindowSummary, parse_report_record

PAIR_LABELS = ("pipeline", "key", "feature")
MAX_REASONS = 20
"""Distinct dead-letter reasons exported (kldrift writes 6); more are counted as `other`."""

# name -> (help, value of a report or None when the window had no value for it)
_PAIR_GAUGES: dict[str, tuple[str, Callable[[DriftReport], float | None]]] = {
    "kldrift_kl_bits": ("KL(window || baseline), plug-in estimate, bits", lambda r: r.kl_bits),
    "kldrift_kl_debiased_bits": (
        "KL minus its small-sample bias, floored at 0, bits",
        lambda r: r.kl_bits_debiased,
    ),
    "kldrift_p_value": ("G-test p-value, window vs baseline counts", lambda r: r.p_value),
    "kldrift_drift": ("1 if the window is flagged as drifted, else 0", lambda r: float(r.drift)),
    "kldrift_window_events": ("events binned in the window for this feature", lambda r: r.count),
    "kldrift_window_missing_ratio": (
        "share of the window's events without a value for this feature",
        lambda r: _share(r.missing, r),
    ),
    "kldrift_window_invalid_ratio": (
        "share of the window's events whose value had the wrong type",
        lambda r: _share(r.invalid, r),
    ),
    "kldrift_report_revision": ("revision of the window's latest report", lambda r: r.revision),
    "kldrift_window_end_timestamp_seconds": (
        "end of the newest reported window, event time, Unix seconds",
        lambda r: r.window_end.timestamp(),
    ),
}


# name -> (help, value of a window summary or None)
_SUMMARY_GAUGES: dict[str, tuple[str, Callable[[WindowSummary], float | None]]] = {
    "kldrift_window_drift": (
        "1 if the newest window's summary says drift (one verdict over its features), else 0",
        lambda s: float(s.drift),
    ),
    "kldrift_window_combined_p_value": (
        "Cauchy combination of the newest window's feature p-values",
        lambda s: s.combined_p_value,
    ),
    "kldrift_window_features_drifted": (
        "features whose report says drift in the newest window",
        lambda s: len(s.features_drifted),
    ),
}


def _share(part: int, report: DriftReport) -> float | None:
    total = report.count + report.missing + report.invalid
    return part / total if total else None


Newest = TypeVar("Newest", DriftReport, WindowSummary)


@dataclass
class _Latest(Generic[Newest]):
    """The newest report of a (key, feature), or the newest window summary of a key."""

    record: Newest
    produced_at_s: float
    """When the job wrote it (its Kafka timestamp), Unix seconds."""


class DriftMetrics(Collector):
    """The exporter's state and its Prometheus view, fed one record at a time (thread-safe: a
    Kafka thread feeds it while the HTTP server's thread collects)."""

    def __init__(
        self,
        pipeline: str,
        *,
        window_size_s: float,
        window_period_s: float,
        max_pairs: int = 1000,
        forget_after_s: float = 6 * 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_pairs < 1:
            raise ValueError(f"max_pairs must be at least 1, not {max_pairs}")
        self.pipeline = pipeline
        self.window_size_s = window_size_s
        self.window_period_s = window_period_s
        self.max_pairs = max_pairs
        self.forget_after_s = forget_after_s
        self.clock = clock
        self._lock = threading.Lock()
        self._pairs: dict[tuple[str, str], _Latest[DriftReport]] = {}
        self._summaries: dict[str, _Latest[WindowSummary]] = {}
        self._reports = 0
        self._other_pipelines = 0
        self._dropped = 0
        self._unreadable: dict[str, int] = {}
        self._kafka_errors = 0
        self._dead_letters: dict[str, int] = {}
        self._newest: DriftReport | None = None
        self._last_report_s: float | None = None
        self._input_end: int | None = None
        self._input_lag: int | None = None

    def offer_report(self, report: DriftReport, produced_at_s: float) -> None:
        """One report from the topic; `produced_at_s` is its Kafka timestamp, Unix seconds."""
        with self._lock:
            if report.pipeline != self.pipeline:
                self._other_pipelines += 1
                return
            self._reports += 1
            self._last_report_s = max(self._last_report_s or produced_at_s, produced_at_s)
            if self._newest is None or _order(report) >= _order(self._newest):
                self._newest = report
            self._keep_newest(
                self._pairs, (report.key or "", report.feature), report, produced_at_s
            )

    def offer_summary(self, summary: WindowSummary, produced_at_s: float) -> None:
        """One window summary from the topic: the newest window's is exported per key, under the
        same cap and forgetting as the (key, feature) pairs. `produced_at_s`: its Kafka
        timestamp, Unix seconds."""
        with self._lock:
            if summary.pipeline != self.pipeline:
                self._other_pipelines += 1
                return
            self._keep_newest(self._summaries, summary.key or "", summary, produced_at_s)

    def _keep_newest(
        self, table: dict[Any, _Latest[Newest]], name: Any, record: Newest, produced_at_s: float
    ) -> None:
        """`record` becomes `table[name]` unless that holds a newer window; a new name needs
        room under max_pairs (stale names are forgotten first), else it is counted dropped."""
        current = table.get(name)
        if current is None:
            self._forget_stale()
            if len(table) >= self.max_pairs:
                self._dropped += 1
                return
        elif _order(record) < _order(current.record):
            return  # a revision of an older window: the gauges show the newest window
        table[name] = _Latest(record, produced_at_s)

    def offer_dead_letter(self, reason: str) -> None:
        with self._lock:
            if reason not in self._dead_letters and len(self._dead_letters) >= MAX_REASONS:
                reason = "other"  # another producer's headers must not grow the label set
            self._dead_letters[reason] = self._dead_letters.get(reason, 0) + 1

    def offer_kafka_error(self) -> None:
        with self._lock:
            self._kafka_errors += 1

    def offer_unreadable(self, topic: str) -> None:
        """A record on `topic` that is not a report (or not readable): counted, not exported."""
        with self._lock:
            self._unreadable[topic] = self._unreadable.get(topic, 0) + 1

    def set_input_offsets(self, end_offsets: int, lag_records: int | None) -> None:
        """The input topic's summed log-end offsets and the job group's lag (None: no commits)."""
        with self._lock:
            self._input_end = end_offsets
            self._input_lag = lag_records

    def _forget_stale(self) -> None:
        """Drop pairs and keys' summaries whose latest record was written more than
        forget_after_s ago: their key or feature stopped reporting, and their room under the cap
        goes to new ones."""
        horizon = self.clock() - self.forget_after_s
        for pair in [p for p, v in self._pairs.items() if v.produced_at_s < horizon]:
            del self._pairs[pair]
        for key in [k for k, v in self._summaries.items() if v.produced_at_s < horizon]:
            del self._summaries[key]

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self._forget_stale()
            yield from self._collect_pairs(self.clock())
            yield from self._collect_summaries()
            yield from self._collect_pipeline()

    def _collect_pairs(self, now: float) -> Iterator[Metric]:
        families = {
            name: GaugeMetricFamily(name, help_text, labels=PAIR_LABELS)
            for name, (help_text, _) in _PAIR_GAUGES.items()
        }
        lag = GaugeMetricFamily(
            "kldrift_report_lag_seconds",
            "wall-clock time now minus the end of the newest reported window, seconds",
            labels=PAIR_LABELS,
        )
        for (key, feature), pair in sorted(self._pairs.items()):
            labels = [self.pipeline, key, feature]
            for name, (_, value_of) in _PAIR_GAUGES.items():
                value = value_of(pair.record)
                if value is not None and not math.isnan(value):
                    families[name].add_metric(labels, float(value))
            lag.add_metric(labels, now - pair.record.window_end.timestamp())
        yield from families.values()
        yield lag

    def _collect_summaries(self) -> Iterator[Metric]:
        families = {
            name: GaugeMetricFamily(name, help_text, labels=["pipeline", "key"])
            for name, (help_text, _) in _SUMMARY_GAUGES.items()
        }
        for key, entry in sorted(self._summaries.items()):
            for name, (_, value_of) in _SUMMARY_GAUGES.items():
                value = value_of(entry.record)
                if value is not None:
                    families[name].add_metric([self.pipeline, key], float(value))
        yield from families.values()

    def _collect_pipeline(self) -> Iterator[Metric]:
        p = [self.pipeline]
        yield _counter("kldrift_reports", "reports read from the report topic", p, self._reports)
        dead = CounterMetricFamily(
            "kldrift_dead_letters",
            "records read from the dead-letter topic, by their reason header",
            labels=["pipeline", "reason"],
        )
        for reason, count in sorted(self._dead_letters.items()):
            dead.add_metric([self.pipeline, reason], count)
        yield dead
        yield _gauge("kldrift_window_size_seconds", "window size", p, self.window_size_s)
        yield _gauge("kldrift_window_period_seconds", "window period", p, self.window_period_s)
        if self._newest is not None:
            yield _gauge(
                "kldrift_drift_threshold_bits",
                "debiased KL threshold of the newest report, bits",
                p,
                self._newest.threshold_bits,
            )
            yield _gauge(
                "kldrift_drift_significance",
                "p-value threshold of the newest report",
                p,
                self._newest.significance,
            )
            info = GaugeMetricFamily(
                "kldrift_baseline_info",
                "the baseline in force: baseline_id of the newest window's report (value 1)",
                labels=["pipeline", "baseline_id"],
            )
            info.add_metric([self.pipeline, self._newest.baseline_id], 1.0)
            yield info
        if self._last_report_s is not None:
            yield _gauge(
                "kldrift_last_report_timestamp_seconds",
                "when the job wrote its latest report (Kafka timestamp), Unix seconds",
                p,
                self._last_report_s,
            )
        if self._input_end is not None:
            yield _counter(
                "kldrift_input_records",
                "records appended to the input topic (sum of its partitions' log-end offsets)",
                p,
                self._input_end,
            )
        if self._input_lag is not None:
            yield _gauge(
                "kldrift_input_consumer_lag_records",
                "input records not yet committed by the job's consumer group (sum over partitions)",
                p,
                self._input_lag,
            )
        yield _gauge("kldrift_exporter_pairs", "(key, feature) pairs exported", p, len(self._pairs))
        yield _gauge(
            "kldrift_exporter_max_pairs", "cap on (key, feature) pairs exported", p, self.max_pairs
        )
        yield _counter(
            "kldrift_exporter_dropped_reports",
            "reports not exported because their (key, feature) was beyond the cap",
            p,
            self._dropped,
        )
        yield _counter(
            "kldrift_exporter_other_pipeline_reports",
            "reports of another pipeline on the report topic (not exported)",
            p,
            self._other_pipelines,
        )
        yield _counter(
            "kldrift_exporter_kafka_errors",
            "Kafka errors while reading (the exporter retries; values may be stale meanwhile)",
            p,
            self._kafka_errors,
        )
        unreadable = CounterMetricFamily(
            "kldrift_exporter_unreadable_records",
            "records that could not be read as a report or dead letter, by topic",
            labels=["pipeline", "topic"],
        )
        for topic, count in sorted(self._unreadable.items()):
            unreadable.add_metric([self.pipeline, topic], count)
        yield unreadable


def _order(report: DriftReport | WindowSummary) -> tuple[float, int]:
    return (report.window_end.timestamp(), report.revision)


def _gauge(name: str, help_text: str, labels: list[str], value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text, labels=["pipeline"])
    family.add_metric(labels, float(value))
    return family


def _counter(name: str, help_text: str, labels: list[str], value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_text, labels=["pipeline"])
    family.add_metric(labels, float(value))
    return family


# --- Kafka side --------------------------------------------------------------------------------


def _header(headers: Iterable[tuple[str, bytes]] | None, name: str) -> str | None:
    for key, value in headers or ():
        if key == name:
            return value.decode(errors="replace")
    return None


class TopicFeed:
    """Reads the report and dead-letter topics from `start_s` (Unix seconds) on, without a
    consumer group (nothing committed: the exporter is a read-only view), and the job group's
    committed offsets on the input topic."""

    def __init__(
        self,
        metrics: DriftMetrics,
        settings: dict[str, Any],
        *,
        report_topic: str,
        dead_letter_topic: str,
        input_topic: str,
        job_group: str,
        start_s: float,
    ) -> None:
        from kafka import KafkaConsumer

        self.metrics = metrics
        self.report_topic = report_topic
        self.dead_letter_topic = dead_letter_topic
        self.input_topic = input_topic
        self.start_s = start_s
        self._consumer = KafkaConsumer(**settings, group_id=None, enable_auto_commit=False)
        # Never subscribes, so it joins no group: it only reads the job group's commits.
        self._offsets = KafkaConsumer(**settings, group_id=job_group, enable_auto_commit=False)
        self._assigned: set[Any] = set()

    @property
    def assigned(self) -> bool:
        return bool(self._assigned)

    def refresh_assignment(self) -> None:
        """Assign partitions of the two topics that appeared since (topics may not exist yet)."""
        from kafka import TopicPartition

        found = set()
        for topic in (self.report_topic, self.dead_letter_topic):
            for partition in self._consumer.partitions_for_topic(topic) or ():
                found.add(TopicPartition(topic, partition))
        new = found - self._assigned
        if not new:
            return
        self._consumer.assign(sorted(found))
        starts = self._consumer.offsets_for_times({tp: int(self.start_s * 1000) for tp in new})
        ends = self._consumer.end_offsets(list(new))
        for tp in new:
            found_at = starts.get(tp)
            self._consumer.seek(tp, found_at.offset if found_at is not None else ends[tp])
        self._assigned = found

    def poll(self, timeout_s: float) -> int:
        """Feed what arrived within `timeout_s`; returns how many records were read."""
        read = 0
        for tp, records in self._consumer.poll(timeout_ms=int(timeout_s * 1000)).items():
            for record in records:
                read += 1
                if tp.topic == self.report_topic:
                    self._offer_report(record)
                else:
                    self.metrics.offer_dead_letter(_header(record.headers, "reason") or "unknown")
        return read

    def _offer_report(self, record: Any) -> None:
        try:
            report = parse_report_record(record.value)
        except ValueError as err:
            self.metrics.offer_unreadable(self.report_topic)
            first = str(err).splitlines()[0][:200]
            print(
                f"exporter: {self.report_topic} partition {record.partition} offset "
                f"{record.offset} is not a drift report ({first}); counted, skipped",
                file=sys.stderr,
                flush=True,
            )
            return
        if isinstance(report, WindowSummary):
            self.metrics.offer_summary(report, record.timestamp / 1000.0)
            return
        self.metrics.offer_report(report, record.timestamp / 1000.0)

    def refresh_input_offsets(self) -> None:
        """Input log-end offsets and the job group's lag: Σ(end - committed) over partitions the
        group committed, plus Σ(end - beginning) over those it has not (None if it committed
        none, e.g. `commit_offsets: false`)."""
        from kafka import TopicPartition

        partitions = self._offsets.partitions_for_topic(self.input_topic)
        if not partitions:
            return
        tps = [TopicPartition(self.input_topic, p) for p in sorted(partitions)]
        ends = self._offsets.end_offsets(tps)
        beginnings = self._offsets.beginning_offsets(tps)
        committed = {tp: self._offsets.committed(tp) for tp in tps}
        lag: int | None = None
        if any(c is not None for c in committed.values()):
            lag = sum(
                ends[tp] - (c if c is not None else beginnings[tp]) for tp, c in committed.items()
            )
        self.metrics.set_input_offsets(sum(ends.values()), lag)

    def close(self) -> None:
        self._consumer.close()
        self._offsets.close()


def run_exporter(
    feed: TopicFeed,
    metrics: DriftMetrics,
    *,
    port: int,
    address: str,
    offsets_interval_s: float,
    stop: threading.Event,
) -> int:
    """Serve `metrics` on http://ADDRESS:PORT/metrics and feed it until `stop` is set."""
    from kafka.errors import KafkaError
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    server, thread = start_http_server(port, address, registry=registry)
    print(
        f"exporter: serving {metrics.pipeline}'s metrics on "
        f"http://{address}:{server.server_port}/metrics",
        flush=True,
    )
    next_offsets = 0.0
    try:
        while not stop.is_set():
            try:
                if time.monotonic() >= next_offsets:
                    next_offsets = time.monotonic() + offsets_interval_s
                    feed.refresh_assignment()
                    feed.refresh_input_offsets()
                if feed.assigned:
                    feed.poll(timeout_s=0.5)
                else:
                    stop.wait(0.5)
            except KafkaError as err:
                # Kafka unavailable for a while: keep serving the last values, try again.
                metrics.offer_kafka_error()
                print(f"exporter: Kafka: {type(err).__name__}: {err}", file=sys.stderr, flush=True)
                stop.wait(min(offsets_interval_s, 5.0))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        feed.close()
    print("exporter: stopped", flush=True)
    return 0
