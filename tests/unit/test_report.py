"""The drift report on the wire: RFC 3339 UTC times, JSON round trip, the Kafka message key."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from kldrift.schemas.report import SCHEMA_VERSION, DriftReport, TopBinReport

START = datetime(2024, 1, 1, 0, 0, tzinfo=UTC)
END = datetime(2024, 1, 1, 0, 10, tzinfo=UTC)


def _report(**changes: Any) -> DriftReport:
    fields: dict[str, Any] = {
        "pipeline": "checkout-model",
        "key": "eu-west",
        "feature": "latency_ms",
        "window_start": START,
        "window_end": END,
        "revision": 0,
        "count": 1200,
        "missing": 3,
        "invalid": 1,
        "kl_bits": 0.125,
        "kl_bits_debiased": 0.1,
        "entropy_bits": 2.5,
        "cross_entropy_bits": 2.625,  # entropy + KL
        "js_bits": 0.03,
        "psi": 0.09,
        "p_value": 1e-6,
        "threshold_bits": 0.05,
        "significance": 0.01,
        "drift": True,
        "top_bins": [
            TopBinReport(bin="[10, +inf)", window_p=0.5, baseline_q=0.25, contribution_bits=0.5)
        ],
        "baseline_id": "ab" * 32,
    }
    fields.update(changes)
    return DriftReport(**fields)


def test_window_times_serialise_as_rfc3339_utc_with_z() -> None:
    wire = json.loads(_report().to_json_bytes())

    assert wire["window_start"] == "2024-01-01T00:00:00Z"
    assert wire["window_end"] == "2024-01-01T00:10:00Z"
    assert wire["schema_version"] == SCHEMA_VERSION


def test_sub_second_window_times_keep_their_microseconds() -> None:
    start = datetime(2024, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)

    wire = json.loads(_report(window_start=start).to_json_bytes())

    assert wire["window_start"] == "2024-01-01T00:00:00.500000Z"
    assert DriftReport.from_json_bytes(json.dumps(wire)).window_start == start


def test_json_round_trip_is_equal() -> None:
    report = _report()

    again = DriftReport.from_json_bytes(report.to_json_bytes())

    assert again == report
    assert again.window_start.utcoffset() is not None
    assert again.window_start == START  # the same instant, 2024-01-01T00:00:00Z
    assert again.top_bins[0].bin == "[10, +inf)"


def test_json_round_trip_with_nulls_and_no_key() -> None:
    report = _report(key=None, kl_bits=None, p_value=None, top_bins=[], drift=False, count=0)

    assert DriftReport.from_json_bytes(report.to_json_bytes().decode()) == report


def test_message_key_names_pipeline_key_feature_and_window() -> None:
    assert _report().message_key == (
        "checkout-model|eu-west|latency_ms|2024-01-01T00:00:00Z|2024-01-01T00:10:00Z"
    )
    assert _report(key=None).message_key == (
        "checkout-model||latency_ms|2024-01-01T00:00:00Z|2024-01-01T00:10:00Z"
    )


def test_message_key_is_the_same_for_every_revision_of_a_window() -> None:
    first = _report(revision=0, count=1200, kl_bits=0.125)
    revised = _report(revision=1, count=1250, kl_bits=0.2, drift=False)

    assert first.message_key == revised.message_key
    assert (
        first.message_key != _report(window_end=datetime(2024, 1, 1, 0, 11, tzinfo=UTC)).message_key
    )
    assert first.message_key != _report(feature="amount").message_key


def test_message_key_survives_the_wire() -> None:
    report = _report()

    assert DriftReport.from_json_bytes(report.to_json_bytes()).message_key == report.message_key


def test_extra_fields_are_refused() -> None:
    wire = json.loads(_report().to_json_bytes())
    wire["kl_nats"] = 0.09

    with pytest.raises(ValidationError, match="kl_nats"):
        DriftReport.from_json_bytes(json.dumps(wire))
    with pytest.raises(ValidationError, match="extra"):
        TopBinReport(bin="a", window_p=0.1, baseline_q=0.1, contribution_bits=0.0, note="x")  # type: ignore[call-arg]


def test_window_times_without_a_time_zone_are_refused() -> None:
    # A naive time would be read as local time by some consumers: the contract is UTC.
    with pytest.raises(ValidationError, match="window_start"):
        _report(window_start=datetime(2024, 1, 1, 0, 0))
    wire = json.loads(_report().to_json_bytes())
    wire["window_end"] = "2024-01-01T00:10:00"
    with pytest.raises(ValidationError, match="window_end"):
        DriftReport.from_json_bytes(json.dumps(wire))


def test_negative_revision_and_counts_are_refused() -> None:
    with pytest.raises(ValidationError, match="revision"):
        _report(revision=-1)
    with pytest.raises(ValidationError, match="count"):
        _report(count=-5)
