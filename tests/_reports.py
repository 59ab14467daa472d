"""Hand-made drift reports for consumer-side tests (the values matter only through `drift`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from kldrift.schemas.report import DriftReport

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
