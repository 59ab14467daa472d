"""The report topic's records as msgspec Structs: what `kldrift run` and `kldrift replay` build and
write per (key, feature, window, revision), without pydantic's validation per report.

Each Struct has the fields of its pydantic model (kldrift.schemas.report) in the same order with
the same defaults (but for DriftReportWire's first two: see it), and `to_json_bytes()` writes the
JSON the model writes: the same keys in the same order and the same values
(tests/unit/test_report_wire.py parses both, field by field, and compares the JSON Schemas).
One difference in the text, none in the values: msgspec writes a float of 1e16 or more as `1e16`
where pydantic writes `1e+16`. The pydantic models stay the contract of
the topic and of the library (`to_model()` gives one, validated).

The Structs are not tracked by Python's cyclic garbage collector (`gc=False`): a record holds
strings, numbers, datetimes and lists of them, never itself, and the collector's passes over
a bundle's hundreds of thousands of records cost the job more than building them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Literal

import msgspec

from kldrift.schemas.report import (
    SCHEMA_VERSION,
    DriftReport,
    WindowSummary,
    window_message_key,
)

UtcDatetime = Annotated[datetime, msgspec.Meta(tz=True)]
"""An aware datetime (pydantic's AwareDatetime), a date-time string in the JSON Schema."""


class TopBinWire(msgspec.Struct, frozen=True, gc=False):
    """kldrift.schemas.report.TopBinReport."""

    bin: str
    window_p: float
    baseline_q: float
    contribution_bits: float


class OtherValueWire(msgspec.Struct, frozen=True, gc=False):
    """kldrift.schemas.report.OtherValue."""

    value: str
    count: int


class DriftReportWire(msgspec.Struct, frozen=True, gc=False):
    """kldrift.schemas.report.DriftReport, field for field. Built with positional arguments (see
    `report_wire_row`), half the cost of keywords at a report per (key, feature, window):
    so `schema_version` and `record`, which come first, have no default here (the model's are
    SCHEMA_VERSION and "feature"); every record has them, and they are in its JSON as in the
    model's."""

    schema_version: int
    record: Literal["feature"]
    pipeline: str
    key: str | None
    feature: str
    window_start: UtcDatetime
    window_end: UtcDatetime
    revision: int
    count: int
    missing: int
    invalid: int
    kl_bits: float | None
    kl_bits_debiased: float | None
    entropy_bits: float | None
    cross_entropy_bits: float | None
    js_bits: float | None
    psi: float | None
    p_value: float | None
    threshold_bits: float
    significance: float
    drift: bool
    top_bins: list[TopBinWire]
    baseline_id: str
    decision: Literal["estimate", "confident"] | None = None
    p_value_above_threshold: float | None = None
    q_value: float | None = None
    bins: list[str] | None = None
    counts: list[int] | None = None
    baseline_q: list[float] | None = None
    other_values: list[OtherValueWire] | None = None
    missing_share: float | None = None
    baseline_missing_share: float | None = None
    missing_p_value: float | None = None
    missing_drift: bool | None = None

    @property
    def message_key(self) -> str:
        """As DriftReport.message_key."""
        return window_message_key(
            self.pipeline, self.key, self.feature, self.window_start, self.window_end
        )

    def to_json_bytes(self) -> bytes:
        return _ENCODER.encode(self)

    def to_model(self) -> DriftReport:
        """The pydantic DriftReport of the same JSON (validated)."""
        return DriftReport.model_validate_json(self.to_json_bytes())


class WindowSummaryWire(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """kldrift.schemas.report.WindowSummary, field for field."""

    schema_version: int = SCHEMA_VERSION
    record: Literal["window_summary"]
    pipeline: str
    key: str | None
    window_start: UtcDatetime
    window_end: UtcDatetime
    revision: int
    events: int
    features: int
    features_checked: int
    features_drifted: list[str]
    min_q_value: float | None
    combined_p_value: float | None
    combination: Literal["cauchy"] = "cauchy"
    max_kl_bits_debiased: float | None
    decision: Literal["estimate", "confident"]
    significance: float
    drift: bool
    baseline_id: str

    @property
    def message_key(self) -> str:
        """As WindowSummary.message_key."""
        return window_message_key(self.pipeline, self.key, "", self.window_start, self.window_end)

    def to_json_bytes(self) -> bytes:
        return _ENCODER.encode(self)

    def to_model(self) -> WindowSummary:
        """The pydantic WindowSummary of the same JSON (validated)."""
        return WindowSummary.model_validate_json(self.to_json_bytes())


REPORT_FIELDS = DriftReportWire.__struct_fields__[2:]
"""The fields of a report after `schema_version` and `record`: `report_wire_row`'s arguments."""


report_wire_row = functools.partial(DriftReportWire, SCHEMA_VERSION, "feature")
"""REPORT_FIELDS' values, in order -> a DriftReportWire of this schema version (a partial: no
Python frame per report)."""


ReportWire = DriftReportWire | WindowSummaryWire
"""A record of the report topic, as `kldrift run` and `kldrift replay` build it."""

_ENCODER = msgspec.json.Encoder()


def json_text(records: Sequence[ReportWire | DriftReport | WindowSummary]) -> bytes:
    """The records' `to_json_bytes()`, each ended by a newline, as one text; msgspec records in
    one encoder call (their JSON has no newline inside a record: strings escape it)."""
    if all(type(r) is DriftReportWire or type(r) is WindowSummaryWire for r in records):
        return _ENCODER.encode_lines(records)
    return b"".join(r.to_json_bytes() + b"\n" for r in records)
