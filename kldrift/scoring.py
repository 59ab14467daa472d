"""A window's stacked counts (every feature's slots) against a baseline -> one DriftReport per
feature, with Benjamini-Hochberg q-values over those features. Pure numpy/scipy, no Beam."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from scipy.stats import false_discovery_control

from kldrift import divergence
from kldrift.binning import FeatureBins
from kldrift.schemas.baseline import Baseline
from kldrift.schemas.config import DriftSpec
from kldrift.schemas.report import DriftReport, OtherValue, TopBinReport

OTHER_VALUES_SHOWN = 5
"""How many raw `__other__` values a report names (the most frequent)."""


@dataclass(frozen=True)
class FeatureReference:
    """One feature's baseline as scoring needs it."""

    name: str
    labels: tuple[str, ...]
    counts: np.ndarray
    """float64 count per bin"""
    q: np.ndarray
    """smoothed share per bin"""
    unusable: int | None
    """missing + invalid values of the baseline; None for a baseline file that does not say"""
    categorical: bool


def feature_references(
    feature_bins: Sequence[FeatureBins], baseline: Baseline, smoothing: float
) -> list[FeatureReference]:
    """The baseline's arrays per feature, in the order of `feature_bins` (the stacked slots')."""
    references = []
    for bins in feature_bins:
        stored = baseline.feature(bins.name)
        counts = np.asarray(stored.counts, dtype=np.float64)
        references.append(
            FeatureReference(
                name=bins.name,
                labels=bins.labels,
                counts=counts,
                q=divergence.baseline_probabilities(counts, smoothing),
                unusable=(
                    stored.missing + stored.invalid
                    if {"missing", "invalid"} & stored.model_fields_set
                    else None
                ),
                categorical=bins.categories is not None,
            )
        )
    return references


def decision_p_value(report: DriftReport) -> float | None:
    """The p-value the report's decision rule compares with `significance`."""
    if report.decision == "confident":
        return report.p_value_above_threshold
    return report.p_value


def with_q_values(reports: list[DriftReport]) -> list[DriftReport]:
    """The reports with `q_value`: Benjamini-Hochberg over the decision p-values of those that
    have one (scipy.stats.false_discovery_control); null where the p-value is null."""
    indexed = [(i, decision_p_value(r)) for i, r in enumerate(reports)]
    scored = [(i, p) for i, p in indexed if p is not None]
    if not scored:
        return reports
    q_values = false_discovery_control([p for _, p in scored], method="bh")
    result = list(reports)
    for (i, _), q in zip(scored, q_values, strict=True):
        result[i] = reports[i].model_copy(update={"q_value": float(q)})
    return result


def window_reports(
    *,
    pipeline: str,
    key: str | None,
    window_start: datetime,
    window_end: datetime,
    revision: int,
    counts: np.ndarray,
    slots: Sequence[tuple[str, int, int]],
    references: Sequence[FeatureReference],
    drift_spec: DriftSpec,
    baseline_id: str,
    other_values: Mapping[str, Mapping[str, int]] | None = None,
) -> list[DriftReport]:
    """One report per feature of a (key, window, revision); `counts` holds every feature's slots
    (bins, missing, invalid) side by side as `slots` says."""
    reports = []
    for (feature, start, end), reference in zip(slots, references, strict=True):
        feature_counts = counts[start:end]
        n_bins = len(reference.counts)
        missing, invalid = int(feature_counts[n_bins]), int(feature_counts[n_bins + 1])
        window = feature_counts[:n_bins]
        result = divergence.score(
            window,
            reference.counts,
            smoothing=drift_spec.smoothing,
            threshold_bits=drift_spec.threshold_bits,
            significance=drift_spec.significance,
            labels=reference.labels,
            decision=drift_spec.decision,
            window_unusable=missing + invalid,
            baseline_unusable=reference.unusable,
        )
        events = result.count + missing + invalid
        others = (other_values or {}).get(feature, {}) if reference.categorical else None
        reports.append(
            DriftReport(
                pipeline=pipeline,
                key=key,
                feature=feature,
                window_start=window_start,
                window_end=window_end,
                revision=revision,
                count=result.count,
                missing=missing,
                invalid=invalid,
                kl_bits=result.kl_bits,
                kl_bits_debiased=result.kl_bits_debiased,
                entropy_bits=result.entropy_bits,
                cross_entropy_bits=result.cross_entropy_bits,
                js_bits=result.js_bits,
                psi=result.psi,
                p_value=result.p_value,
                threshold_bits=drift_spec.threshold_bits,
                significance=drift_spec.significance,
                drift=result.drift,
                top_bins=[
                    TopBinReport(
                        bin=top.label,
                        window_p=top.window_p,
                        baseline_q=top.baseline_q,
                        contribution_bits=top.contribution_bits,
                    )
                    for top in result.top_bins
                ],
                baseline_id=baseline_id,
                decision=drift_spec.decision,
                p_value_above_threshold=result.p_value_above_threshold,
                bins=list(reference.labels),
                counts=[int(c) for c in window],
                baseline_q=[float(x) for x in reference.q],
                other_values=_top_other_values(others) if others is not None else None,
                missing_share=(missing + invalid) / events if events else None,
                baseline_missing_share=_share(reference.unusable, float(reference.counts.sum())),
                missing_p_value=result.missing_p_value,
                missing_drift=result.missing_drift,
            )
        )
    return with_q_values(reports)


def _share(unusable: int | None, binned: float) -> float | None:
    return None if unusable is None else unusable / (binned + unusable)


def _top_other_values(counts: Mapping[str, int]) -> list[OtherValue]:
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [OtherValue(value=v, count=c) for v, c in ranked[:OTHER_VALUES_SHOWN] if c > 0]
