"""Consuming drift reports: typed records (the producer's own models: a feature's report or a
window's summary), dedupe of revisions, the retraining trigger policy, and a consumer that commits
only after a handler succeeded."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from kldrift.schemas.report import DriftReport, ReportRecord, WindowSummary, parse_report_record


@dataclass(frozen=True)
class ReportMessage:
    """A report (or window summary) with where it came from (for committing) and its message key."""

    report: ReportRecord
    key: str
    partition: int
    offset: int


def parse_report_message(message: Any) -> ReportMessage:
    """A kafka-python ConsumerRecord -> ReportMessage (raises on a malformed record)."""
    report = parse_report_record(message.value)
    key = message.key.decode() if message.key else report.message_key
    return ReportMessage(report, key, message.partition, message.offset)


def read_reports(
    bootstrap: str,
    topic: str,
    *,
    idle_timeout_s: float = 2.0,
    settings: dict[str, Any] | None = None,
) -> Iterator[ReportMessage]:
    """Every report on `topic` from the beginning, stopping after `idle_timeout_s` without one."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=int(idle_timeout_s * 1000),
        **(settings or {}),
    )
    try:
        for message in consumer:
            yield parse_report_message(message)
    finally:
        consumer.close()


class LatestRevisions:
    """Keeps the highest revision per message key (a window's identity): the dedupe a consumer of
    an at-least-once stream needs."""

    def __init__(self) -> None:
        self.by_key: dict[str, ReportRecord] = {}

    def offer(self, report: ReportRecord) -> bool:
        """True when `report` is new: a window not seen, or a higher revision of one."""
        key = report.message_key
        current = self.by_key.get(key)
        if current is not None and current.revision >= report.revision:
            return False
        self.by_key[key] = report
        return True


@dataclass(frozen=True)
class Trigger:
    """A retraining trigger: at least k of the last m windows of a scope drifted."""

    pipeline: str
    key: str | None
    feature: str | None
    """None when the trigger is for the whole key."""
    window_end: str
    """RFC 3339 end of the window that completed the condition."""
    drifted_windows: int
    considered_windows: int
    features: list[str]
    """The features that drifted in the considered windows."""
    kl_bits_debiased: float
    """The largest debiased KL, bits, among the drifted windows considered."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class RetrainTrigger:
    """Fires when at least `k` of the last `m` windows drift, per (key, feature) or per key (from
    the features' reports), or per key from the window summaries (`scope="window"`: one verdict
    per window, with the summary's stated error rate; the feature reports are then not read).

    Windows are identified by their end; a later revision of a window replaces its earlier one.
    After firing, a scope is quiet for `cooldown_s` seconds of event time (window ends), so one
    drift episode yields one retraining. State lives in memory: after a restart the policy needs
    m windows again (or start the consumer from earlier offsets).

    With `fdr` a window counts as drifted only if its report is flagged and its `q_value`
    (Benjamini-Hochberg over the features of its key, window and revision) is below `fdr`; a
    report without a q-value (report schema 1) counts by its flag alone. A summary's q-value is
    its `min_q_value`.
    """

    def __init__(
        self,
        k: int = 3,
        m: int = 5,
        cooldown_s: float = 1800.0,
        scope: str = "feature",
        features: set[str] | None = None,
        fdr: float | None = None,
    ) -> None:
        if fdr is not None and not 0 < fdr <= 1:
            raise ValueError(f"fdr must be in (0, 1], got {fdr!r}")
        if not 1 <= k <= m:
            raise ValueError(f"k ({k}) must be between 1 and m ({m})")
        if scope not in ("feature", "key", "window"):
            raise ValueError(f"scope must be 'feature', 'key' or 'window', not {scope!r}")
        if scope == "window" and features is not None:
            raise ValueError("a window summary covers every feature: no features with scope window")
        if cooldown_s < 0:
            raise ValueError("cooldown must not be negative")
        self.k, self.m, self.cooldown_s, self.scope = k, m, cooldown_s, scope
        self.features = features
        self.fdr = fdr
        # scope -> window end (epoch s) -> feature -> latest report of that window
        self._windows: dict[tuple, dict[float, dict[str, ReportRecord]]] = {}
        self._last_fired: dict[tuple, float] = {}

    def pending(self) -> bool:
        """True while some scope holds a drifted window that has not fired a trigger yet."""
        for scope, windows in self._windows.items():
            fired = self._last_fired.get(scope, float("-inf"))
            for end, by_feature in windows.items():
                if end > fired and any(self.drifted(r) for r in by_feature.values()):
                    return True
        return False

    def drifted(self, report: ReportRecord) -> bool:
        """Whether the report (or summary) counts as a drifted window for this policy."""
        if not report.drift:
            return False
        q_value = report.min_q_value if isinstance(report, WindowSummary) else report.q_value
        return self.fdr is None or q_value is None or q_value < self.fdr

    def _scope_of(self, report: DriftReport) -> tuple:
        if self.scope == "key":
            return (report.pipeline, report.key)
        return (report.pipeline, report.key, report.feature)

    def offer(self, report: ReportRecord) -> Trigger | None:
        """Take one report or summary; return a Trigger if it completes the condition."""
        if isinstance(report, WindowSummary):
            if self.scope != "window":
                return None
            scope, slot = (report.pipeline, report.key), ""
        else:
            if self.scope == "window":
                return None
            if self.features is not None and report.feature not in self.features:
                return None
            scope, slot = self._scope_of(report), report.feature
        windows = self._windows.setdefault(scope, {})
        end = report.window_end.timestamp()
        current = windows.setdefault(end, {}).get(slot)
        if current is not None and current.revision > report.revision:
            return None
        windows[end][slot] = report
        for old in sorted(windows)[: -self.m]:
            del windows[old]
        return self._check(scope, report, windows, end)

    def _check(
        self,
        scope: tuple,
        report: ReportRecord,
        windows: dict[float, dict[str, ReportRecord]],
        end: float,
    ) -> Trigger | None:
        if end != max(windows) or not self.drifted(report):
            return None  # only the newest window, drifting itself, completes a condition
        drifted = [
            [r for r in by_feature.values() if self.drifted(r)]
            for _, by_feature in sorted(windows.items())
        ]
        count = sum(1 for reports in drifted if reports)
        if count < self.k:
            return None
        last = self._last_fired.get(scope)
        if last is not None and end - last < self.cooldown_s:
            return None
        self._last_fired[scope] = end
        flagged = [r for reports in drifted for r in reports]
        return Trigger(
            pipeline=report.pipeline,
            key=report.key,
            feature=report.feature
            if isinstance(report, DriftReport) and self.scope == "feature"
            else None,
            window_end=report.window_end.isoformat().replace("+00:00", "Z"),
            drifted_windows=count,
            considered_windows=len(windows),
            features=sorted({name for r in flagged for name in _drifted_features(r)}),
            kl_bits_debiased=max(_kl_bits_debiased(r) or 0.0 for r in flagged),
        )


def _drifted_features(record: ReportRecord) -> list[str]:
    return record.features_drifted if isinstance(record, WindowSummary) else [record.feature]


def _kl_bits_debiased(record: ReportRecord) -> float | None:
    if isinstance(record, WindowSummary):
        return record.max_kl_bits_debiased
    return record.kl_bits_debiased


class ReportConsumer:
    """The report topic as typed reports, committing an offset only when told to: call `commit`
    after your handler succeeded, so a crash re-delivers (at-least-once) rather than loses."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group_id: str,
        *,
        from_beginning: bool = False,
        settings: dict[str, Any] | None = None,
    ) -> None:
        from kafka import KafkaConsumer

        self.topic = topic
        self._consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
            **(settings or {}),
        )

    def poll(self, timeout_s: float = 1.0) -> list[ReportMessage]:
        batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000))
        messages = [parse_report_message(m) for records in batches.values() for m in records]
        return sorted(messages, key=lambda m: (m.partition, m.offset))

    def commit(self, message: ReportMessage) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        tp = TopicPartition(self.topic, message.partition)
        self._consumer.commit({tp: OffsetAndMetadata(message.offset + 1, "", -1)})

    def seek_back(self, message: ReportMessage) -> None:
        """Read `message` again on the next poll (its handler failed)."""
        from kafka import TopicPartition

        self._consumer.seek(TopicPartition(self.topic, message.partition), message.offset)

    def close(self) -> None:
        self._consumer.close()
