"""The retraining policy: k of the last m windows, per (key, feature) or per key, with cooldown."""

from __future__ import annotations

import pytest
from _reports import make_report

from kldrift.consumer import LatestRevisions, RetrainTrigger
from kldrift.schemas.report import DriftReport


def _report(
    minute: int, drift: bool, feature: str = "latency_ms", key: str = "m1", revision: int = 0
) -> DriftReport:
    return make_report(minute, drift, feature=feature, key=key, revision=revision)


def _fired(policy: RetrainTrigger, flags: list[bool], **kwargs) -> list[int]:
    return [
        minute
        for minute, flag in enumerate(flags, start=1)
        if policy.offer(_report(minute, flag, **kwargs)) is not None
    ]


def test_fires_when_k_of_the_last_m_windows_drift() -> None:
    policy = RetrainTrigger(k=3, m=5, cooldown_s=0)
    # windows 1..8: drift at 2, 4, 5 -> third drifted window among the last five is window 5
    assert _fired(policy, [False, True, False, True, True, False, False, False]) == [5]


def test_drift_outside_the_last_m_windows_does_not_count() -> None:
    policy = RetrainTrigger(k=2, m=3, cooldown_s=0)
    assert _fired(policy, [True, False, False, True, False, False]) == []


def test_cooldown_in_event_time_suppresses_a_second_trigger() -> None:
    policy = RetrainTrigger(k=1, m=1, cooldown_s=5 * 60)
    # every window drifts; fires at 1, then again only 5 minutes of window ends later
    assert _fired(policy, [True] * 12) == [1, 6, 11]


def test_key_scope_combines_features_and_feature_filter_ignores_others() -> None:
    policy = RetrainTrigger(k=2, m=3, cooldown_s=0, scope="key")
    assert policy.offer(_report(1, True, feature="amount")) is None
    trigger = policy.offer(_report(2, True, feature="latency_ms"))
    assert trigger is not None and trigger.feature is None and trigger.key == "m1"
    assert trigger.features == ["amount", "latency_ms"]

    only_latency = RetrainTrigger(k=1, m=1, cooldown_s=0, features={"latency_ms"})
    assert only_latency.offer(_report(1, True, feature="amount")) is None
    assert only_latency.offer(_report(1, True, feature="latency_ms")) is not None


def test_keys_are_independent_and_a_later_revision_replaces_a_window() -> None:
    policy = RetrainTrigger(k=2, m=2, cooldown_s=0)
    assert policy.offer(_report(1, True, key="a")) is None
    assert policy.offer(_report(2, True, key="b")) is None  # another key: its own count
    # Window 1 of key a is revised to calm, then window 2 drifts: only one drifted window.
    assert policy.offer(_report(1, False, key="a", revision=1)) is None
    assert policy.offer(_report(2, True, key="a")) is None
    assert policy.pending()


def test_bad_parameters_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="k"):
        RetrainTrigger(k=6, m=5)
    with pytest.raises(ValueError, match="scope"):
        RetrainTrigger(scope="model")


def test_latest_revisions_keeps_the_highest_revision_per_window() -> None:
    latest = LatestRevisions()
    assert latest.offer(_report(1, False, revision=0))
    assert latest.offer(_report(1, True, revision=2))
    assert not latest.offer(_report(1, False, revision=1))
    assert [r.revision for r in latest.by_key.values()] == [2]


def test_with_fdr_a_flagged_window_counts_only_below_the_q_value() -> None:
    policy = RetrainTrigger(k=2, m=3, cooldown_s=0, fdr=0.05)

    def flagged(minute: int, q_value: float | None) -> DriftReport:
        return _report(minute, True).model_copy(update={"q_value": q_value})

    assert policy.offer(flagged(1, 0.2)) is None  # flagged, but q = 0.2: not counted
    assert policy.offer(flagged(2, 0.01)) is None  # first counted window
    trigger = policy.offer(flagged(3, None))  # a version-1 report counts by its flag
    assert trigger is not None and trigger.drifted_windows == 2
    assert not RetrainTrigger(fdr=0.05).drifted(
        _report(1, False).model_copy(update={"q_value": 0.001})
    )
    with pytest.raises(ValueError, match="fdr"):
        RetrainTrigger(fdr=0)
