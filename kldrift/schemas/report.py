"""The report topic's records: a DriftReport per (key, feature, window, revision), and a
WindowSummary per (key, window, revision), the one verdict over its features. Producer and
consumers share these models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter

SCHEMA_VERSION = 3
"""2 added the whole histogram, the minimum-effect and missing-share tests, q_value and the raw
values behind `__other__`; 3 added `record` and the window summary (its own record kind on the
same topic). Reports of versions 1 and 2 still parse (the newer fields take their defaults)."""


class TopBinReport(BaseModel):
    """A bin that contributes most to KL: p*log2(p/q) in bits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bin: str
    window_p: float
    baseline_q: float
    contribution_bits: float


class OtherValue(BaseModel):
    """A raw value that fell into a categorical feature's `__other__` bin, and how often."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: str
    count: int = Field(ge=1)


class DriftReport(BaseModel):
    """KL(window || baseline) and companions for one feature, one key, one sliding window."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    record: Literal["feature"] = Field(
        default="feature", description="the record kind: a feature's report (version 3)"
    )
    pipeline: str
    key: str | None = Field(description="value of key_field, null without one")
    feature: str
    window_start: AwareDatetime = Field(description="inclusive, RFC 3339 UTC")
    window_end: AwareDatetime = Field(description="exclusive, RFC 3339 UTC")
    revision: int = Field(ge=0, description="0 = first report, 1, 2... = updates from late data")
    count: int = Field(ge=0, description="events binned in this window (N)")
    missing: int = Field(ge=0, description="events without a value for this feature")
    invalid: int = Field(ge=0, description="events whose value had the wrong type")
    kl_bits: float | None = Field(description="KL(P||Q) in bits, plug-in estimate")
    kl_bits_debiased: float | None = Field(description="KL minus its small-sample bias, bits")
    entropy_bits: float | None = Field(description="H(P), bits")
    cross_entropy_bits: float | None = Field(description="H(P,Q) = H(P) + KL(P||Q), bits")
    js_bits: float | None = Field(description="Jensen-Shannon divergence, bits")
    psi: float | None = Field(description="population stability index (natural log)")
    p_value: float | None = Field(description="G-test of homogeneity, window vs baseline counts")
    threshold_bits: float
    significance: float
    drift: bool
    top_bins: list[TopBinReport]
    baseline_id: str
    # Version 2: null in reports of version 1.
    decision: Literal["estimate", "confident"] | None = Field(
        default=None, description="the rule that set `drift` (config drift.decision)"
    )
    p_value_above_threshold: float | None = Field(
        default=None,
        description="minimum-effect test of H0: KL <= threshold_bits (noncentral chi-square)",
    )
    q_value: float | None = Field(
        default=None,
        description="Benjamini-Hochberg q-value of the decision's p-value over the features of "
        "this (key, window, revision)",
    )
    bins: list[str] | None = Field(default=None, description="every bin's label, in bin order")
    counts: list[int] | None = Field(default=None, description="the window's count per bin")
    baseline_q: list[float] | None = Field(
        default=None, description="the baseline's smoothed share per bin"
    )
    other_values: list[OtherValue] | None = Field(
        default=None,
        description="categorical: the most frequent raw values counted in __other__ (up to 5)",
    )
    missing_share: float | None = Field(
        default=None, description="(missing + invalid) / all events of the window"
    )
    baseline_missing_share: float | None = Field(
        default=None, description="(missing + invalid) / all events of the baseline"
    )
    missing_p_value: float | None = Field(
        default=None, description="two-proportion test of missing_share vs baseline_missing_share"
    )
    missing_drift: bool | None = Field(
        default=None, description="missing_share rose with missing_p_value < significance"
    )

    @property
    def message_key(self) -> str:
        """`pipeline|key|feature|window_start|window_end`: the same for every revision of a window."""
        return window_message_key(
            self.pipeline, self.key, self.feature, self.window_start, self.window_end
        )

    def to_json_bytes(self) -> bytes:
        """`model_dump_json()` as bytes: its serializer's bytes, without the str round trip."""
        # Not msgspec: it writes 1e16 where pydantic writes 1e+16 (and an offset's seconds), and
        # checking every float and time in Python costs more than msgspec saves over this.
        return self.__pydantic_serializer__.to_json(self)

    @classmethod
    def from_json_bytes(cls, data: bytes | str) -> DriftReport:
        """A report from its JSON (a Kafka message's value).

        Examples
        --------
        >>> text = (
        ...     '{"pipeline": "checkout-model", "key": "model-a", "feature": "latency_ms", '
        ...     '"window_start": "2024-01-01T00:00:00Z", "window_end": "2024-01-01T00:10:00Z", '
        ...     '"revision": 0, "count": 100, "missing": 0, "invalid": 0, "kl_bits": 0.2075, '
        ...     '"kl_bits_debiased": 0.2, "entropy_bits": 1.0, "cross_entropy_bits": 1.2075, '
        ...     '"js_bits": 0.05, "psi": 0.2, "p_value": 1e-06, "threshold_bits": 0.05, '
        ...     '"significance": 0.01, "drift": true, "top_bins": [], "baseline_id": "b1"}'
        ... )
        >>> report = DriftReport.from_json_bytes(text)
        >>> report.window_end - report.window_start
        datetime.timedelta(seconds=600)
        >>> report.message_key
        'checkout-model|model-a|latency_ms|2024-01-01T00:00:00Z|2024-01-01T00:10:00Z'
        >>> DriftReport.from_json_bytes(report.to_json_bytes()) == report
        True
        """
        return cls.model_validate_json(data)


class WindowSummary(BaseModel):
    """One verdict per (key, window, revision): its features' reports combined.

    `combined_p_value` is the Cauchy combination of the features' decision p-values (Liu & Xie,
    "Cauchy combination test", JASA 115:393-402, 2020): valid whatever the dependence between
    features, so `drift` (combined_p_value < significance, and at least one feature's report
    says drift) is a false alarm in at most about `significance` of windows that did not drift.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: int = SCHEMA_VERSION
    record: Literal["window_summary"] = Field(description="the record kind: a window summary")
    pipeline: str
    key: str | None = Field(description="value of key_field, null without one")
    window_start: AwareDatetime = Field(description="inclusive, RFC 3339 UTC")
    window_end: AwareDatetime = Field(description="exclusive, RFC 3339 UTC")
    revision: int = Field(ge=0, description="as its features' reports: 0, then late-data updates")
    events: int = Field(ge=0, description="events of this key in the window")
    features: int = Field(ge=1, description="features reported (joints included)")
    features_checked: int = Field(
        ge=0, description="features with a decision p-value (values binned in the window)"
    )
    features_drifted: list[str] = Field(description="features whose report says drift")
    min_q_value: float | None = Field(description="the smallest q_value of its features' reports")
    combined_p_value: float | None = Field(
        description="Cauchy combination of the features' decision p-values (valid under any "
        "dependence between features); null when no feature was checked"
    )
    combination: Literal["cauchy"] = Field(default="cauchy", description="how p-values combine")
    max_kl_bits_debiased: float | None = Field(
        description="the largest debiased KL of its features' reports, bits"
    )
    decision: Literal["estimate", "confident"] = Field(
        description="the features' decision rule, whose p-values are combined"
    )
    significance: float
    drift: bool = Field(
        description="combined_p_value < significance and features_drifted is not empty"
    )
    baseline_id: str

    @property
    def message_key(self) -> str:
        """`pipeline|key||window_start|window_end`: its features' keys with the feature empty."""
        return window_message_key(self.pipeline, self.key, "", self.window_start, self.window_end)

    def to_json_bytes(self) -> bytes:
        """`model_dump_json()` as bytes: its serializer's bytes, without the str round trip."""
        return self.__pydantic_serializer__.to_json(self)


ReportRecord = DriftReport | WindowSummary
"""A record of the report topic."""


def parse_report_record(data: bytes | str) -> ReportRecord:
    """A report topic's record from its JSON: a WindowSummary when its `record` says so, else a
    DriftReport (versions 1-3). Raises pydantic's ValidationError for anything else.

    Examples
    --------
    >>> summary = parse_report_record(
    ...     '{"record": "window_summary", "pipeline": "shop", "key": null, '
    ...     '"window_start": "2024-01-01T00:00:00Z", "window_end": "2024-01-01T00:10:00Z", '
    ...     '"revision": 0, "events": 500, "features": 2, "features_checked": 2, '
    ...     '"features_drifted": ["latency_ms"], "min_q_value": 0.0004, '
    ...     '"combined_p_value": 0.0002, "max_kl_bits_debiased": 0.31, "decision": "estimate", '
    ...     '"significance": 0.01, "drift": true, "baseline_id": "b1"}'
    ... )
    >>> type(summary).__name__, summary.drift, summary.message_key
    ('WindowSummary', True, 'shop|||2024-01-01T00:00:00Z|2024-01-01T00:10:00Z')
    """
    return _RECORD.validate_json(data)


def _record_kind(value: Any) -> str | None:
    """The union member a record is: its `record`, "feature" when absent (versions 1 and 2)."""
    if isinstance(value, dict):
        return value.get("record", "feature")
    return getattr(value, "record", None)


_RECORD: TypeAdapter[ReportRecord] = TypeAdapter(
    Annotated[
        Annotated[DriftReport, Tag("feature")] | Annotated[WindowSummary, Tag("window_summary")],
        Discriminator(_record_kind),
    ]
)
"""Parses a record once, as the model its `record` names."""


def report_json_schema() -> dict[str, Any]:
    """The report topic's JSON Schema (draft 2020-12): a record is a feature's report or a window
    summary (`record` says which), for consumers in other languages."""
    schema = TypeAdapter(DriftReport | WindowSummary).json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "kldrift report topic record"
    return schema


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def window_message_key(
    pipeline: str, key: str | None, feature: str, window_start: datetime, window_end: datetime
) -> str:
    """`pipeline|key|feature|window_start|window_end`, the Kafka message key of a window's record
    (the feature empty for its summary): the same for every revision, so compaction keeps the
    newest. One format for the pydantic models and the job's msgspec records."""
    return "|".join([pipeline, key or "", feature, _rfc3339(window_start), _rfc3339(window_end)])
