"""The exporter's metrics, fed by hand-made reports (no Kafka): which report the gauges show, the
values and units they carry, the cardinality cap and what it drops, counters by reason, and the
Prometheus text format a scrape returns."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from _reports import START, make_report, make_summary
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kldrift.exporter import MAX_REASONS, DriftMetrics
from kldrift.schemas.report import DriftReport

NOW = (START + timedelta(minutes=30)).timestamp()


def _metrics(clock: Callable[[], float] = lambda: NOW, **kwargs: object) -> DriftMetrics:
    return DriftMetrics("p", window_size_s=600, window_period_s=60, clock=clock, **kwargs)  # type: ignore[arg-type]


def _scrape(metrics: DriftMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """What Prometheus would read: {(sample name, sorted labels): value}."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _pair(name: str, key: str = "m1", feature: str = "latency_ms") -> tuple:
    return (name, (("feature", feature), ("key", key), ("pipeline", "p")))


def _one(name: str, **labels: str) -> tuple:
    return (name, tuple(sorted({"pipeline": "p", **labels}.items())))


def test_gauges_show_the_newest_windows_latest_revision() -> None:
    metrics = _metrics()
    metrics.offer_report(make_report(5, drift=False), NOW - 60)
    metrics.offer_report(make_report(6, drift=True), NOW - 50)
    # A late revision of the older window arrives after the newer window: it does not win.
    metrics.offer_report(make_report(5, drift=False, revision=1), NOW - 40)
    scraped = _scrape(metrics)
    assert scraped[_pair("kldrift_drift")] == 1.0
    assert scraped[_pair("kldrift_window_end_timestamp_seconds")] == (
        (START + timedelta(minutes=6)).timestamp()
    )
    # A revision of the newest window replaces it.
    metrics.offer_report(make_report(6, drift=False, revision=1), NOW - 30)
    scraped = _scrape(metrics)
    assert scraped[_pair("kldrift_drift")] == 0.0
    assert scraped[_pair("kldrift_report_revision")] == 1.0
    assert scraped[_one("kldrift_reports_total")] == 4.0


def test_values_and_units_are_the_reports() -> None:
    report = make_report(7, drift=True).model_copy(
        update={"count": 80, "missing": 15, "invalid": 5, "p_value": 3.5e-9}
    )
    metrics = _metrics()
    metrics.offer_report(report, NOW - 10)
    scraped = _scrape(metrics)
    assert scraped[_pair("kldrift_kl_bits")] == 0.3
    assert scraped[_pair("kldrift_kl_debiased_bits")] == 0.25
    assert scraped[_pair("kldrift_p_value")] == 3.5e-9
    assert scraped[_pair("kldrift_window_events")] == 80
    assert scraped[_pair("kldrift_window_missing_ratio")] == pytest.approx(15 / 100)
    assert scraped[_pair("kldrift_window_invalid_ratio")] == pytest.approx(5 / 100)
    # Lag: wall clock (minute 30) minus window end (minute 7) = 23 minutes.
    assert scraped[_pair("kldrift_report_lag_seconds")] == 23 * 60
    assert scraped[_one("kldrift_drift_threshold_bits")] == 0.05
    assert scraped[_one("kldrift_window_period_seconds")] == 60
    assert scraped[_one("kldrift_last_report_timestamp_seconds")] == NOW - 10
    assert scraped[_one("kldrift_baseline_info", baseline_id="b")] == 1.0


def test_a_window_without_values_exports_no_divergence() -> None:
    empty = make_report(7, drift=False).model_copy(
        update={
            "count": 0,
            "missing": 12,
            "kl_bits": None,
            "kl_bits_debiased": None,
            "p_value": None,
        }
    )
    metrics = _metrics()
    metrics.offer_report(empty, NOW)
    scraped = _scrape(metrics)
    assert _pair("kldrift_kl_bits") not in scraped
    assert _pair("kldrift_p_value") not in scraped
    assert scraped[_pair("kldrift_window_missing_ratio")] == 1.0
    assert scraped[_pair("kldrift_drift")] == 0.0


def test_the_cap_bounds_pairs_and_counts_what_it_dropped() -> None:
    clock = [NOW]
    metrics = _metrics(lambda: clock[0], max_pairs=2, forget_after_s=600)
    for minute in (1, 2):
        for feature in ("a", "b", "c"):
            metrics.offer_report(make_report(minute, drift=False, feature=feature), NOW)
    scraped = _scrape(metrics)
    exported = {labels for name, labels in scraped if name == "kldrift_drift"}
    assert exported == {_pair("x", feature="a")[1], _pair("x", feature="b")[1]}
    assert scraped[_one("kldrift_exporter_dropped_reports_total")] == 2.0
    assert scraped[_one("kldrift_exporter_pairs")] == 2.0
    assert scraped[_one("kldrift_exporter_max_pairs")] == 2.0
    # 15 minutes later, pairs silent for longer than forget_after (10 minutes) give their room
    # to new ones.
    clock[0] = NOW + 900
    metrics.offer_report(make_report(3, drift=True, feature="c"), NOW + 900)
    scraped = _scrape(metrics)
    assert {labels for name, labels in scraped if name == "kldrift_drift"} == {
        _pair("x", feature="c")[1]
    }


def test_window_summaries_share_the_cap_and_are_forgotten_like_pairs() -> None:
    clock = [NOW]
    metrics = _metrics(lambda: clock[0], max_pairs=2, forget_after_s=600)
    for key in ("a", "b", "c"):
        metrics.offer_summary(make_summary(1, drift=False, key=key), NOW)
    scraped = _scrape(metrics)
    assert {dict(labels)["key"] for name, labels in scraped if name == "kldrift_window_drift"} == {
        "a",
        "b",
    }
    assert scraped[_one("kldrift_exporter_dropped_reports_total")] == 1.0
    # Key b keeps reporting; a falls silent. 15 minutes on, a (silent for longer than
    # forget_after) is forgotten and its room goes to the new key c.
    clock[0] = NOW + 900
    metrics.offer_summary(make_summary(15, drift=True, key="b"), NOW + 600)
    metrics.offer_summary(make_summary(16, drift=True, key="c"), NOW + 900)
    scraped = _scrape(metrics)
    drift = {
        dict(labels)["key"]: value
        for (name, labels), value in scraped.items()
        if name == "kldrift_window_drift"
    }
    assert drift == {"b": 1.0, "c": 1.0}


def test_dead_letters_by_reason_and_reports_of_other_pipelines() -> None:
    metrics = _metrics()
    for reason in ("not_json", "too_late", "not_json"):
        metrics.offer_dead_letter(reason)
    metrics.offer_report(make_report(3, drift=True, pipeline="other"), NOW)
    metrics.offer_unreadable("reports")
    metrics.set_input_offsets(end_offsets=1200, lag_records=35)
    scraped = _scrape(metrics)
    assert scraped[_one("kldrift_dead_letters_total", reason="not_json")] == 2.0
    assert scraped[_one("kldrift_dead_letters_total", reason="too_late")] == 1.0
    assert scraped[_one("kldrift_exporter_other_pipeline_reports_total")] == 1.0
    assert scraped[_one("kldrift_reports_total")] == 0.0
    assert not any(name == "kldrift_drift" for name, _ in scraped)
    assert scraped[_one("kldrift_exporter_unreadable_records_total", topic="reports")] == 1.0
    assert scraped[_one("kldrift_input_consumer_lag_records")] == 35.0
    assert scraped[_one("kldrift_input_records_total")] == 1200.0


def test_a_key_less_pipeline_exports_an_empty_key_label() -> None:
    report: DriftReport = make_report(3, drift=False).model_copy(update={"key": None})
    metrics = _metrics()
    metrics.offer_report(report, NOW)
    assert _scrape(metrics)[_pair("kldrift_drift", key="")] == 0.0


def test_max_pairs_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_pairs"):
        _metrics(max_pairs=0)


def test_dead_letter_reasons_are_capped() -> None:
    metrics = _metrics()
    for i in range(MAX_REASONS + 5):
        metrics.offer_dead_letter(f"reason-{i}")
    metrics.offer_dead_letter("reason-0")
    scraped = _scrape(metrics)
    reasons = {
        dict(labels)["reason"]: value
        for (name, labels), value in scraped.items()
        if name == "kldrift_dead_letters_total"
    }
    assert len(reasons) == MAX_REASONS + 1
    assert reasons["reason-0"] == 2.0 and reasons["other"] == 5.0
