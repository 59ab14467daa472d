"""Hand-made drift reports and window summaries for consumer-side tests (the values matter only
through `drift`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kldrift.schemas.report import DriftReport, WindowSummary

START = datetime(2024, 1, 1, tzinfo=UTC)


def make_report(
    minute: int,
    drift: bool,
    *,
    pipeline: str = "p",
    key: str = "m1",
    feature: str = "latency_ms",
    revision: int = 0,
    window_minutes: int = 10,
) -> DriftReport:
    """A report for the window ending `minute` minutes after START."""
    return DriftReport(
        pipeline=pipeline,
        key=key,
        feature=feature,
        window_start=START + timedelta(minutes=minute - window_minutes),
        window_end=START + timedelta(minutes=minute),
        revision=revision,
        count=100,
        missing=0,
        invalid=0,
        kl_bits=0.3 if drift else 0.01,
        kl_bits_debiased=0.25 if drift else 0.0,
        entropy_bits=1.0,
        cross_entropy_bits=1.3,
        js_bits=0.05,
        psi=0.2,
        p_value=1e-6 if drift else 0.5,
        threshold_bits=0.05,
        significance=0.01,
        drift=drift,
        top_bins=[],
        baseline_id="b",
    )


def make_summary(
    minute: int,
    drift: bool,
    *,
    pipeline: str = "p",
    key: str = "m1",
    revision: int = 0,
    window_minutes: int = 10,
    drifted: tuple[str, ...] = ("latency_ms",),
) -> WindowSummary:
    """A window summary for the window ending `minute` minutes after START (`drifted` names the
    features that drifted when `drift`)."""
    return WindowSummary(
        record="window_summary",
        pipeline=pipeline,
        key=key,
        window_start=START + timedelta(minutes=minute - window_minutes),
        window_end=START + timedelta(minutes=minute),
        revision=revision,
        events=100,
        features=2,
        features_checked=2,
        features_drifted=list(drifted) if drift else [],
        min_q_value=1e-4 if drift else 0.5,
        combined_p_value=1e-4 if drift else 0.5,
        max_kl_bits_debiased=0.3 if drift else 0.0,
        decision="estimate",
        significance=0.01,
        drift=drift,
        baseline_id="b1",
    )
