"""The window summary: the Cauchy combination against independent computations, its calibration on
stationary streams whose features depend on each other, and what consumers do with it (the retrain
policy's `window` scope, the exporter's gauges)."""

from __future__ import annotations

import math
import time
from datetime import timedelta

import numpy as np
import pytest
from _reports import START, make_report, make_summary
from scipy.stats import binom, cauchy

from kldrift import baseline_from_events, parse_config
from kldrift.binning import resolve_bins, value_getter
from kldrift.consumer import RetrainTrigger
from kldrift.exporter import DriftMetrics
from kldrift.schemas.report import WindowSummary, parse_report_record, report_json_schema
from kldrift.scoring import (
    cauchy_combined_p_value,
    feature_references,
    window_reports,
    window_summary,
)
from kldrift.transforms.bin import feature_slots

pytestmark = pytest.mark.unit

EDGES = [-1.0, -0.3, 0.3, 1.0]
CONFIG = parse_config(
    {
        "name": "calibration",
        "event_time_field": "ts",
        "window": {"size": "10m", "period": "10m"},
        "features": [
            {"name": "a", "kind": "numeric", "edges": EDGES},
            {"name": "a_noisy", "kind": "numeric", "edges": EDGES},  # a + small noise
            {"name": "a_copy", "kind": "numeric", "edges": EDGES},  # a itself
            {"name": "device", "kind": "categorical", "categories": ["ios", "android"]},
            {"name": "a_by_device", "kind": "joint", "of": ["a", "device"]},
        ],
    }
)


def _events(rng: np.random.Generator, n: int) -> list[dict]:
    """A stationary stream whose features depend on each other: a_copy is a, a_noisy is a plus
    noise a tenth its size, and the device leans on the sign of a."""
    a = rng.normal(size=n)
    noisy = a + rng.normal(scale=0.1, size=n)
    ios = rng.random(n) < np.where(a > 0, 0.7, 0.3)
    return [
        {
            "a": float(x),
            "a_noisy": float(y),
            "a_copy": float(x),
            "device": "ios" if i else "android",
        }
        for x, y, i in zip(a, noisy, ios, strict=True)
    ]


def _summaries(windows: int, events_per_window: int, seed: int) -> list[WindowSummary]:
    """Each window binned with the job's bins and scored as Score does (window_reports, then
    window_summary), against a baseline of 20,000 events from the same stream."""
    rng = np.random.default_rng(seed)
    baseline = baseline_from_events(CONFIG, _events(rng, 20_000))
    bins = resolve_bins(CONFIG, baseline)
    references = feature_references(bins, baseline, CONFIG.drift.smoothing)
    getters = [value_getter(b) for b in bins]
    summaries = []
    for w in range(windows):
        events = _events(rng, events_per_window)
        counts = np.concatenate(
            [b.count([get(e) for e in events]) for b, get in zip(bins, getters, strict=True)]
        )
        reports = window_reports(
            pipeline="calibration",
            key=None,
            window_start=START + timedelta(minutes=10 * w),
            window_end=START + timedelta(minutes=10 * (w + 1)),
            revision=0,
            counts=counts,
            slots=feature_slots(bins),
            references=references,
            drift_spec=CONFIG.drift,
            baseline_id=baseline.id,
        )
        summaries.append(window_summary(reports, CONFIG.drift))
    return summaries


@pytest.fixture(scope="module")
def stationary() -> list[WindowSummary]:
    return _summaries(windows=2000, events_per_window=400, seed=2026)


@pytest.mark.parametrize("alpha", [0.1, 0.05, 0.01])
def test_combined_p_value_is_calibrated_on_stationary_dependent_features(
    stationary: list[WindowSummary], alpha: float
) -> None:
    """P(combined p < alpha) = alpha when nothing drifted, although the five tests share their
    events (a_copy's p-value is a's): within the binomial 99.9% interval of 2,000 windows."""
    below = sum(s.combined_p_value < alpha for s in stationary)  # type: ignore[operator]
    low, high = binom.ppf([0.0005, 0.9995], len(stationary), alpha)
    assert low <= below <= high, (below, low, high)


def test_the_summary_verdict_false_alarms_less_than_its_significance(
    stationary: list[WindowSummary],
) -> None:
    drifted = sum(s.drift for s in stationary)
    assert drifted <= binom.ppf(0.9995, len(stationary), CONFIG.drift.significance)
    assert all(s.features == s.features_checked == 5 for s in stationary)


def test_cauchy_combination_equals_liu_and_xie_written_out() -> None:
    rng = np.random.default_rng(5)
    for size in (1, 2, 3, 7):
        for _ in range(50):
            p_values = list(rng.uniform(1e-6, 0.98, size=size))
            t = np.mean(np.tan((0.5 - np.array(p_values)) * np.pi))
            assert cauchy_combined_p_value(p_values) == pytest.approx(cauchy.sf(t), rel=1e-9)
    # Far in the tail, where 0.5 - arctan(t)/pi cancels: P(Cauchy > t) ~ 1/(pi t).
    tiny = cauchy_combined_p_value([1e-300, 0.5])
    assert tiny == pytest.approx(2e-300, rel=1e-9)
    assert cauchy_combined_p_value([]) is None
    assert cauchy_combined_p_value([0.0, 0.7]) == 0.0
    with pytest.raises(ValueError, match="p-values"):
        cauchy_combined_p_value([1.5])


def test_a_p_value_of_one_does_not_mask_another_features_drift() -> None:
    """An unchanged feature's G-test gives p = 1 exactly; tan(-pi/2) would drown any evidence."""
    assert cauchy_combined_p_value([1e-9, 1.0, 1.0]) < 1e-8


def _summary(minute: int, drift: bool, key: str = "m1", revision: int = 0) -> WindowSummary:
    return make_summary(minute, drift, key=key, revision=revision)


def test_retrain_policy_with_window_scope_reads_summaries_only() -> None:
    policy = RetrainTrigger(k=2, m=3, cooldown_s=0, scope="window")
    # Feature reports, drifted or not, do not count in window scope.
    assert policy.offer(make_report(1, True)) is None
    assert policy.offer(make_report(2, True)) is None
    assert policy.offer(_summary(1, True)) is None
    assert policy.offer(_summary(2, False)) is None
    trigger = policy.offer(_summary(3, True))
    assert trigger is not None
    assert (trigger.key, trigger.feature, trigger.drifted_windows) == ("m1", None, 2)
    assert trigger.features == ["latency_ms"] and trigger.kl_bits_debiased == 0.3
    # And feature scope leaves the summaries alone.
    per_feature = RetrainTrigger(k=1, m=1, cooldown_s=0)
    assert per_feature.offer(_summary(4, True)) is None
    with pytest.raises(ValueError, match="scope window"):
        RetrainTrigger(scope="window", features={"latency_ms"})


def test_a_summary_round_trips_through_the_topic_format_and_the_schema() -> None:
    import jsonschema

    summary = _summary(3, True)
    assert parse_report_record(summary.to_json_bytes()) == summary
    report = make_report(3, True)
    assert parse_report_record(report.to_json_bytes()) == report
    validator = jsonschema.Draft202012Validator(report_json_schema())
    validator.validate(summary.model_dump(mode="json"))
    validator.validate(report.model_dump(mode="json"))
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({**summary.model_dump(mode="json"), "events": "many"})
    assert summary.message_key == report.message_key.replace("|latency_ms|", "||")


def test_the_exporter_shows_the_newest_summary_per_key() -> None:
    metrics = DriftMetrics("p", window_size_s=600, window_period_s=60)
    now = time.time()
    metrics.offer_summary(_summary(5, True, key="a"), now)
    metrics.offer_summary(_summary(4, False, key="a"), now)  # an older window: ignored
    metrics.offer_summary(_summary(5, False, key="b"), now)
    values = {
        (family.name, sample.labels["key"]): sample.value
        for family in metrics.collect()
        if family.name.startswith("kldrift_window_")
        for sample in family.samples
        if "key" in sample.labels and "feature" not in sample.labels
    }
    assert values[("kldrift_window_drift", "a")] == 1.0
    assert values[("kldrift_window_drift", "b")] == 0.0
    assert values[("kldrift_window_combined_p_value", "a")] == pytest.approx(1e-4)
    assert values[("kldrift_window_features_drifted", "a")] == 1.0
    assert not math.isnan(values[("kldrift_window_combined_p_value", "b")])
