"""The drift report: one JSON message per (key, feature, window, revision). Producer and consumers
share this model."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

SCHEMA_VERSION = 2
"""2 added the whole histogram, the minimum-effect and missing-share tests, q_value and the raw
values behind `__other__`; reports of version 1 still parse (the new fields are null)."""


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
        return "|".join(
            [
                self.pipeline,
                self.key or "",
                self.feature,
                _rfc3339(self.window_start),
                _rfc3339(self.window_end),
            ]
        )

    def to_json_bytes(self) -> bytes:
        return self.model_dump_json().encode()

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


def report_json_schema() -> dict[str, Any]:
    """The report's JSON Schema (draft 2020-12), for consumers in other languages."""
    schema = DriftReport.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
