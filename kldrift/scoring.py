"""A window's stacked counts (every feature's slots) against a baseline -> one DriftReport per
feature, with Benjamini-Hochberg q-values over those features, and the window's one verdict over
them (WindowSummary, Cauchy combination). Pure numpy/scipy, no Beam."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, NamedTuple

import numpy as np
from scipy.stats import false_discovery_control

from kldrift import divergence
from kldrift.binning import FeatureBins
from kldrift.schemas.baseline import Baseline
from kldrift.schemas.config import DriftSpec
from kldrift.schemas.report import DriftReport, OtherValue, TopBinReport, WindowSummary
from kldrift.schemas.report_wire import (
    DriftReportWire,
    OtherValueWire,
    TopBinWire,
    WindowSummaryWire,
)

AnyReport = DriftReport | DriftReportWire
"""A feature's report as the library hands it out (pydantic) or as the job writes it (msgspec)."""


class _Kinds(NamedTuple):
    report: type
    top_bin: type
    other_value: type
    summary: type


_MODELS = _Kinds(DriftReport, TopBinReport, OtherValue, WindowSummary)
_WIRE = _Kinds(DriftReportWire, TopBinWire, OtherValueWire, WindowSummaryWire)

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

    # Derived once per job, not per report (the dataclass is frozen; cached_property writes
    # the instance dict directly).
    @cached_property
    def label_list(self) -> list[str]:
        return list(self.labels)

    @cached_property
    def q_list(self) -> list[float]:
        return [float(x) for x in self.q]

    @cached_property
    def missing_share(self) -> float | None:
        """The baseline's (missing + invalid) / all events; None when the baseline does not say."""
        return _share(self.unusable, float(self.counts.sum()))


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


def decision_p_value(report: AnyReport) -> float | None:
    """The p-value the report's decision rule compares with `significance`."""
    return _decision_p_value(report.decision, report.p_value, report.p_value_above_threshold)


def _decision_p_value(
    decision: str | None, p_value: float | None, p_value_above_threshold: float | None
) -> float | None:
    return p_value_above_threshold if decision == "confident" else p_value


def with_q_values(reports: list[DriftReport]) -> list[DriftReport]:
    """The reports with `q_value`: Benjamini-Hochberg over the decision p-values of those that
    have one (`bh_q_values`); null where the p-value is null."""
    q_values = bh_q_values([decision_p_value(r) for r in reports])
    return [
        r if q is None else r.model_copy(update={"q_value": q})
        for r, q in zip(reports, q_values, strict=True)
    ]


def bh_q_values(p_values: Sequence[float | None]) -> list[float | None]:
    """Benjamini-Hochberg q-values of the p-values that are not None (None stays None): the same
    floats as `scipy.stats.false_discovery_control(ps, method="bh")`, computed on Python floats
    (the same operations: p x (m / rank), a running minimum from the largest p, clipped to
    [0, 1]). scipy's array machinery, and its argsort (which releases the GIL, so a busy worker
    thread waits to get it back), cost more than the rest of a window's scoring."""
    scored = [(i, p) for i, p in enumerate(p_values) if p is not None]
    result: list[float | None] = [None] * len(p_values)
    if not scored:
        return result
    ps = [p for _, p in scored]
    if not all(0.0 <= p <= 1.0 for p in ps):  # NaN too: scipy raises, naming the range
        q_array = false_discovery_control(ps, method="bh")
        qs = [float(q) for q in q_array]
    elif len(ps) == 1:
        qs = ps  # scipy returns a single p-value as it is
    else:
        m = len(ps)
        # Ties get the same q whatever their order, so any sort by p gives scipy's floats.
        order = sorted(range(m), key=ps.__getitem__)
        qs = [0.0] * m
        running = math.inf
        for rank in range(m, 0, -1):
            position = order[rank - 1]
            running = min(running, ps[position] * (m / rank))
            qs[position] = 0.0 if not running > 0.0 else min(running, 1.0)
    for (i, _), q in zip(scored, qs, strict=True):
        result[i] = float(q)
    return result


@dataclass(frozen=True)
class WindowCounts:
    """One (key, window, revision) to score: every feature's slots (bins, missing, invalid) side
    by side in `counts`, as the job's `slots` say."""

    key: str | None
    window_start: datetime
    window_end: datetime
    revision: int
    counts: np.ndarray
    other_values: Mapping[str, Mapping[str, int]] | None = None


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
    (bins, missing, invalid) side by side as `slots` says. `windows_reports` for one window."""
    window = WindowCounts(key, window_start, window_end, revision, counts, other_values)
    (reports,) = windows_reports(
        pipeline=pipeline,
        windows=[window],
        slots=slots,
        references=references,
        drift_spec=drift_spec,
        baseline_id=baseline_id,
    )
    return reports


def windows_reports(
    *,
    pipeline: str,
    windows: Sequence[WindowCounts],
    slots: Sequence[tuple[str, int, int]],
    references: Sequence[FeatureReference],
    drift_spec: DriftSpec,
    baseline_id: str,
    wire: bool = False,
) -> list[list[Any]]:
    """Per window, one report per feature, with q-values across the window's features. Each
    feature is scored for all the windows at once (`divergence.score_windows` over a windows x
    bins array); the reports are then built window by window: DriftReports, or with `wire`
    DriftReportWires (the same fields, built without validation: what the job's sinks write)."""
    kinds = _WIRE if wire else _MODELS
    if not windows:
        return []
    stacked = np.stack([window.counts for window in windows])
    per_feature = [
        _feature_scores(stacked[:, start:end], reference, drift_spec)
        for (_, start, end), reference in zip(slots, references, strict=True)
    ]
    return [
        _reports(pipeline, window, slots, references, drift_spec, baseline_id, scores, kinds)
        for window, scores in zip(windows, zip(*per_feature, strict=True), strict=True)
    ]


class _FeatureScore(NamedTuple):
    missing: int
    invalid: int
    result: divergence.Divergence


def _feature_scores(
    feature_counts: np.ndarray, reference: FeatureReference, drift_spec: DriftSpec
) -> list[_FeatureScore]:
    """One feature's slots of many windows (windows x (bins + 2)) scored together."""
    n_bins = len(reference.counts)
    missing = feature_counts[:, n_bins].astype(np.int64)
    invalid = feature_counts[:, n_bins + 1].astype(np.int64)
    # Counts from binning against a baseline checked when loaded: nothing to check again.
    results = divergence.score_windows(
        np.ascontiguousarray(feature_counts[:, :n_bins], dtype=np.float64),
        reference.counts,
        divergence.WindowsOptions(
            smoothing=drift_spec.smoothing,
            threshold_bits=drift_spec.threshold_bits,
            significance=drift_spec.significance,
            labels=reference.labels,
            decision=drift_spec.decision,
            baseline_unusable=reference.unusable,
        ),
        windows_unusable=missing + invalid,
    )
    return [
        _FeatureScore(m, i, result)
        for m, i, result in zip(missing.tolist(), invalid.tolist(), results, strict=True)
    ]


def _reports(
    pipeline: str,
    window: WindowCounts,
    slots: Sequence[tuple[str, int, int]],
    references: Sequence[FeatureReference],
    drift_spec: DriftSpec,
    baseline_id: str,
    scores: Sequence[_FeatureScore],
    kinds: _Kinds = _MODELS,
) -> list[Any]:
    """One window's reports, from its features' scores, built as `kinds` says."""
    q_values = bh_q_values(
        [
            _decision_p_value(
                drift_spec.decision, score.result.p_value, score.result.p_value_above_threshold
            )
            for score in scores
        ]
    )
    reports = []
    for (feature, start, _), reference, (missing, invalid, result), q_value in zip(
        slots, references, scores, q_values, strict=True
    ):
        events = result.count + missing + invalid
        others = (window.other_values or {}).get(feature, {}) if reference.categorical else None
        reports.append(
            kinds.report(
                pipeline=pipeline,
                key=window.key,
                feature=feature,
                window_start=window.window_start,
                window_end=window.window_end,
                revision=window.revision,
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
                    kinds.top_bin(
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
                q_value=q_value,
                bins=list(reference.label_list),
                counts=window.counts[start : start + len(reference.counts)].tolist(),
                baseline_q=list(reference.q_list),
                other_values=(
                    _top_other_values(others, kinds.other_value) if others is not None else None
                ),
                missing_share=(missing + invalid) / events if events else None,
                baseline_missing_share=reference.missing_share,
                missing_p_value=result.missing_p_value,
                missing_drift=result.missing_drift,
            )
        )
    return reports


def _share(unusable: int | None, binned: float) -> float | None:
    return None if unusable is None else unusable / (binned + unusable)


def _top_other_values(counts: Mapping[str, int], kind: type = OtherValue) -> list[Any]:
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [kind(value=v, count=c) for v, c in ranked[:OTHER_VALUES_SHOWN] if c > 0]


P_CAP = 0.99
"""The largest p-value the Cauchy combination takes as it is (see cauchy_combined_p_value)."""


def cauchy_combined_p_value(p_values: Sequence[float]) -> float | None:
    """The Cauchy combination of p-values with equal weights (Liu & Xie, JASA 115:393, 2020):
    T = mean(tan((1/2 - p_i) pi)), combined p = P(Cauchy > T). Valid whatever the dependence
    between the tests (exactly so as the significance level goes to 0); None for no p-values.

    Computed without cancellation: tan((1/2 - p) pi) = 1/tan(p pi), and P(Cauchy > T) =
    arctan(1/T)/pi for T > 0. A p-value above P_CAP counts as P_CAP: at exactly 1 (a window
    identical in shape to the baseline) tan(-pi/2) would outweigh any evidence of the others.

    Examples
    --------
    One p-value comes back as it is; equal p-values combine to the same (fully dependent tests
    lose nothing); one tiny p-value dominates:

    >>> round(cauchy_combined_p_value([0.2]), 12)
    0.2
    >>> round(cauchy_combined_p_value([0.03, 0.03, 0.03]), 12)
    0.03
    >>> round(cauchy_combined_p_value([1e-8, 0.5, 0.9]), 10)
    3e-08
    >>> round(cauchy_combined_p_value([1e-6, 1.0]), 8)  # 1.0 counts as 0.99
    2e-06
    """
    if not p_values:
        return None
    ps = np.asarray(p_values, dtype=np.float64)
    if not np.all((ps >= 0.0) & (ps <= 1.0)):
        raise ValueError(f"p-values must lie in [0, 1]: {p_values}")
    if np.any(ps == 0.0):
        return 0.0
    statistic = float(np.mean(1.0 / np.tan(np.minimum(ps, P_CAP) * math.pi)))
    if statistic > 0:
        return math.atan(1.0 / statistic) / math.pi
    return 0.5 - math.atan(statistic) / math.pi


def window_summary(reports: Sequence[AnyReport], drift_spec: DriftSpec) -> Any:
    """One verdict over the reports of one (key, window, revision) (every feature's): a
    WindowSummary, or a WindowSummaryWire for DriftReportWires."""
    first = reports[0]
    decision_ps = [p for p in map(decision_p_value, reports) if p is not None]
    combined = cauchy_combined_p_value(decision_ps)
    drifted = [r.feature for r in reports if r.drift]
    q_values = [r.q_value for r in reports if r.q_value is not None]
    debiased = [r.kl_bits_debiased for r in reports if r.kl_bits_debiased is not None]
    kind = WindowSummaryWire if isinstance(first, DriftReportWire) else WindowSummary
    return kind(
        record="window_summary",
        pipeline=first.pipeline,
        key=first.key,
        window_start=first.window_start,
        window_end=first.window_end,
        revision=first.revision,
        events=first.count + first.missing + first.invalid,
        features=len(reports),
        features_checked=len(decision_ps),
        features_drifted=drifted,
        min_q_value=min(q_values) if q_values else None,
        combined_p_value=combined,
        max_kl_bits_debiased=max(debiased) if debiased else None,
        decision=drift_spec.decision,
        significance=drift_spec.significance,
        drift=bool(drifted) and combined is not None and combined < drift_spec.significance,
        baseline_id=first.baseline_id,
    )
