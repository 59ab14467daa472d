"""A window's stacked counts (every feature's slots) against a baseline -> one DriftReport per
feature, with Benjamini-Hochberg q-values over those features, and the window's one verdict over
them (WindowSummary, Cauchy combination). Pure numpy/scipy, no Beam."""

from __future__ import annotations

import gc
import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, NamedTuple, TypeVar

import numpy as np
from scipy.stats import false_discovery_control

from kldrift import divergence
from kldrift.binning import FeatureBins
from kldrift.schemas.baseline import Baseline
from kldrift.schemas.config import DriftSpec
from kldrift.schemas.report import DriftReport, OtherValue, TopBinReport, WindowSummary
from kldrift.schemas.report_wire import (
    REPORT_FIELDS,
    DriftReportWire,
    OtherValueWire,
    TopBinWire,
    WindowSummaryWire,
    report_wire_row,
)

AnyReport = DriftReport | DriftReportWire
"""A feature's report as the library hands it out (pydantic) or as the job writes it (msgspec)."""


class _Kinds(NamedTuple):
    report_of: Callable[..., Any]
    """REPORT_FIELDS' values, in order -> a report (positional: half the cost of keywords)"""
    top_bin_of: Callable[[str, float, float, float], Any]
    """(bin, window_p, baseline_q, contribution_bits) -> a top bin record"""
    other_value: type
    summary: type


def _top_bin_model(
    label: str, window_p: float, baseline_q: float, contribution_bits: float
) -> TopBinReport:
    return TopBinReport(
        bin=label, window_p=window_p, baseline_q=baseline_q, contribution_bits=contribution_bits
    )


def _report_model(*values: Any) -> DriftReport:
    return DriftReport(**dict(zip(REPORT_FIELDS, values, strict=True)))


_MODELS = _Kinds(_report_model, _top_bin_model, OtherValue, WindowSummary)
_WIRE = _Kinds(report_wire_row, TopBinWire, OtherValueWire, WindowSummaryWire)

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


PValue = TypeVar("PValue", float | None, np.ndarray)


def decision_p_value(report: AnyReport) -> float | None:
    """The p-value the report's decision rule compares with `significance`."""
    return _decision_p_value(report.decision, report.p_value, report.p_value_above_threshold)


def _decision_p_value(
    decision: str | None, p_value: PValue, p_value_above_threshold: PValue
) -> PValue:
    """The decision rule's p-value: one report's (a float or None), or many windows' (arrays)."""
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
    floats as `scipy.stats.false_discovery_control(ps, method="bh")`. `bh_q_value_rows` of one
    row."""
    present = np.array([p is not None for p in p_values], dtype=np.bool_)
    ps = np.array([np.nan if p is None else p for p in p_values], dtype=np.float64)
    q_values = bh_q_value_rows(ps.reshape(1, -1), present.reshape(1, -1))[0]
    return [q if ok else None for q, ok in zip(q_values.tolist(), present.tolist(), strict=True)]


def bh_q_value_rows(p_values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values within each row of `p_values` (rows x tests, float64) over
    the entries `present` says (NaN elsewhere): per row the same floats as
    `scipy.stats.false_discovery_control(row[present], method="bh")`, by the same operations
    (p x (m / rank), a running minimum from the largest p, clipped to [0, 1]), for all the
    rows at once. scipy's per-call machinery, once per window, cost more than the rest of a
    window's scoring. A p-value outside [0, 1] (or NaN) raises scipy's ValueError."""
    ps = np.where(present, p_values, np.inf)
    if not np.all((ps >= 0.0) & (ps <= 1.0) | ~present):
        for row, kept in zip(p_values, present, strict=True):
            false_discovery_control(row[kept], method="bh")  # raises, naming the range
        raise ValueError(f"p-values must lie in [0, 1]: {p_values[present]}")
    tests = ps.shape[1]
    m = np.count_nonzero(present, axis=1)[:, None]
    ranks = np.arange(1, tests + 1)[None, :]
    # Ties get the same q whatever their order, so any sort by p gives scipy's floats.
    order = np.argsort(ps, axis=1, kind="stable")
    ascending = np.take_along_axis(ps, order, axis=1)
    with np.errstate(invalid="ignore"):
        scaled = np.where(ranks <= m, ascending * (m / ranks), np.inf)
    running = np.minimum.accumulate(scaled[:, ::-1], axis=1)[:, ::-1]
    q_sorted = np.where(running > 0.0, np.minimum(running, 1.0), 0.0)
    q_sorted = np.where(m == 1, ascending, q_sorted)  # scipy returns a single p-value as it is
    q_values = np.empty_like(q_sorted)
    np.put_along_axis(q_values, order, q_sorted, axis=1)
    return np.where(present, q_values, np.nan)


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
    """Per window, one report per feature, with q-values across the window's features
    (`rows_reports` of the windows): DriftReports, or with `wire` DriftReportWires (the same
    fields, built without validation: what the job's sinks write)."""
    if not windows:
        return []
    scored = _ScoredRows.of(WindowRows.of(windows), slots, references, drift_spec)
    with _gc_paused():
        reports = scored.reports(pipeline, baseline_id, _WIRE if wire else _MODELS)
    features = len(slots)
    return [reports[i : i + features] for i in range(0, len(reports), features)]


@dataclass(frozen=True)
class WindowRows:
    """Many (key, window, revision)s to score, as columns: window i is `keys[i]`,
    `window_starts[i]`, ..., its every feature's slots (bins, missing, invalid) side by side in
    `counts[i]`, as the job's `slots` say."""

    keys: Sequence[str | None]
    window_starts: Sequence[datetime]
    window_ends: Sequence[datetime]
    revisions: Sequence[int]
    counts: np.ndarray
    """windows x slots"""
    other_values: Sequence[Mapping[str, Mapping[str, int]] | None]

    @classmethod
    def of(cls, windows: Sequence[WindowCounts]) -> WindowRows:
        return cls(
            keys=[w.key for w in windows],
            window_starts=[w.window_start for w in windows],
            window_ends=[w.window_end for w in windows],
            revisions=[w.revision for w in windows],
            counts=np.stack([w.counts for w in windows]),
            other_values=[w.other_values for w in windows],
        )

    def __len__(self) -> int:
        return len(self.keys)


def rows_reports(
    *,
    pipeline: str,
    rows: WindowRows,
    slots: Sequence[tuple[str, int, int]],
    references: Sequence[FeatureReference],
    drift_spec: DriftSpec,
    baseline_id: str,
    summaries: bool = True,
) -> tuple[list[DriftReportWire], list[WindowSummaryWire]]:
    """What the job writes for many windows: one DriftReportWire per window and feature (window
    by window, the features in `slots` order), q-values across a window's features, and one
    WindowSummaryWire per window (`window_summary`'s; none unless `summaries`). Each feature is
    scored for all the windows at once (`divergence.window_scores` over a windows x bins array),
    the q-values and summaries over windows x features arrays; the records are built from those
    columns."""
    if not len(rows):
        return [], []
    scored = _ScoredRows.of(rows, slots, references, drift_spec)
    with _gc_paused():
        reports = scored.reports(pipeline, baseline_id, _WIRE)
        return reports, scored.summaries(pipeline, baseline_id) if summaries else []


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while many records are built (none refers to
    itself): otherwise every 700 new lists or records start a collection, and the older
    generations' collections walk every record built so far (measured: two thirds of the
    records' building time at 2,048 windows). Left off if it was off."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@dataclass(frozen=True)
class _FeatureColumns:
    """One feature's scores of many windows, with their missing and invalid values."""

    name: str
    start: int
    reference: FeatureReference
    missing: np.ndarray
    invalid: np.ndarray
    scores: divergence.WindowScores

    @classmethod
    def of(
        cls,
        counts: np.ndarray,
        slot: tuple[str, int, int],
        reference: FeatureReference,
        drift_spec: DriftSpec,
    ) -> _FeatureColumns:
        """Scored from this feature's slots of many windows (windows x (bins + 2))."""
        name, start, end = slot
        feature_counts = counts[:, start:end]
        n_bins = len(reference.counts)
        missing = feature_counts[:, n_bins].astype(np.int64)
        invalid = feature_counts[:, n_bins + 1].astype(np.int64)
        # Counts from binning against a baseline checked when loaded: nothing to check again.
        scores = divergence.window_scores(
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
        return cls(name, start, reference, missing, invalid, scores)

    def decision_p_values(self, decision: str | None) -> np.ndarray:
        """The p-value each window's decision compares with `significance` (NaN: none)."""
        return _decision_p_value(decision, self.scores.p_value, self.scores.p_value_above_threshold)


@dataclass(frozen=True)
class _ScoredRows:
    """Many windows' features scored (one `_FeatureColumns` per feature), with the windows x
    features q-values."""

    rows: WindowRows
    features: list[_FeatureColumns]
    drift_spec: DriftSpec
    decision_ps: np.ndarray
    """windows x features; NaN where a window's feature has no p-value (no values)"""
    q_values: np.ndarray
    """windows x features, NaN where the p-value is"""

    @classmethod
    def of(
        cls,
        rows: WindowRows,
        slots: Sequence[tuple[str, int, int]],
        references: Sequence[FeatureReference],
        drift_spec: DriftSpec,
    ) -> _ScoredRows:
        features = [
            _FeatureColumns.of(rows.counts, slot, reference, drift_spec)
            for slot, reference in zip(slots, references, strict=True)
        ]
        decision_ps = np.stack([f.decision_p_values(drift_spec.decision) for f in features], axis=1)
        present = np.stack([f.scores.scored for f in features], axis=1)
        q_values = bh_q_value_rows(decision_ps, present)
        return cls(rows, features, drift_spec, decision_ps, q_values)

    def reports(self, pipeline: str, baseline_id: str, kinds: _Kinds) -> list[Any]:
        """Every window's reports, window by window (the features in order within one)."""
        count = len(self.features)
        reports: list[Any] = [None] * (len(self.rows) * count)
        for i, feature in enumerate(self.features):
            reports[i::count] = self._feature_reports(
                pipeline, baseline_id, kinds, feature, self.q_values[:, i]
            )
        return reports

    def _feature_reports(
        self,
        pipeline: str,
        baseline_id: str,
        kinds: _Kinds,
        feature: _FeatureColumns,
        q_values: np.ndarray,
    ) -> list[Any]:
        rows, spec, scores, reference = (
            self.rows,
            self.drift_spec,
            feature.scores,
            feature.reference,
        )
        scored = scores.scored
        n_bins = len(reference.counts)
        events = scores.count + feature.missing + feature.invalid
        with np.errstate(invalid="ignore", divide="ignore"):
            missing_share = (feature.missing + feature.invalid) / events
        n = len(rows)
        # What every report of the block holds alike: one copy of the bins' labels and baseline
        # shares, shared by the reports (the records are frozen and nothing changes their lists).
        alike: dict[str, Any] = {
            "pipeline": pipeline,
            "feature": feature.name,
            "threshold_bits": spec.threshold_bits,
            "significance": spec.significance,
            "baseline_id": baseline_id,
            "decision": spec.decision,
            "bins": list(reference.label_list),
            "baseline_q": list(reference.q_list),
            "baseline_missing_share": reference.missing_share,
        }
        columns: dict[str, Iterable[Any]] = {
            field: itertools.repeat(value, n) for field, value in alike.items()
        }
        columns |= {
            "key": rows.keys,
            "window_start": rows.window_starts,
            "window_end": rows.window_ends,
            "revision": rows.revisions,
            "count": scores.count.tolist(),
            "missing": feature.missing.tolist(),
            "invalid": feature.invalid.tolist(),
            "kl_bits": _nullable(scores.kl_bits, scored),
            "kl_bits_debiased": _nullable(scores.kl_bits_debiased, scored),
            "entropy_bits": _nullable(scores.entropy_bits, scored),
            "cross_entropy_bits": _nullable(scores.cross_entropy_bits, scored),
            "js_bits": _nullable(scores.js_bits, scored),
            "psi": _nullable(scores.psi, scored),
            "p_value": _nullable(scores.p_value, scored),
            "drift": scores.drift.tolist(),
            "top_bins": _top_bin_lists(scores, kinds),
            "p_value_above_threshold": _nullable(scores.p_value_above_threshold, scored),
            "q_value": _nullable(q_values, scored),
            "counts": rows.counts[:, feature.start : feature.start + n_bins].tolist(),
            "other_values": self._other_values(feature, kinds),
            "missing_share": _nullable(missing_share, events > 0),
            "missing_p_value": scores.missing_p_value,
            "missing_drift": scores.missing_drift,
        }
        # Every field of a report, each a column of the block's rows, in the report's field order.
        assert columns.keys() == set(REPORT_FIELDS)
        rows_of_fields = zip(*map(columns.get, REPORT_FIELDS), strict=True)
        return list(itertools.starmap(kinds.report_of, rows_of_fields))

    def _other_values(self, feature: _FeatureColumns, kinds: _Kinds) -> Iterable[Any]:
        """Each window's most frequent `__other__` values of a categorical feature; None for
        another feature."""
        if not feature.reference.categorical:
            return itertools.repeat(None, len(self.rows))
        return [
            _top_other_values((others or {}).get(feature.name, {}), kinds.other_value)
            for others in self.rows.other_values
        ]

    def summaries(self, pipeline: str, baseline_id: str) -> list[WindowSummaryWire]:
        """Each window's WindowSummaryWire (`window_summary` of its reports)."""
        first = self.features[0]
        return _summaries(
            WindowSummaryWire,
            pipeline=pipeline,
            rows=self.rows,
            baseline_id=baseline_id,
            events=(first.scores.count + first.missing + first.invalid).tolist(),
            features=[f.name for f in self.features],
            decision_ps=self.decision_ps,
            present=np.stack([f.scores.scored for f in self.features], axis=1),
            drift=np.stack([f.scores.drift for f in self.features], axis=1),
            q_values=self.q_values,
            debiased=np.stack([f.scores.kl_bits_debiased for f in self.features], axis=1),
            drift_spec=self.drift_spec,
        )


def _nullable(values: np.ndarray, present: np.ndarray) -> list[Any]:
    """`values` as Python numbers, None where `present` is False."""
    if present.all():
        return values.tolist()
    return [v if ok else None for v, ok in zip(values.tolist(), present.tolist(), strict=True)]


def _top_bin_lists(scores: divergence.WindowScores, kinds: _Kinds) -> list[list[Any]]:
    """Each window's top bins as `kinds.top_bin` records, all built in one pass."""
    top = scores.top_bins
    kept = top.kept()
    labels = np.asarray(scores.labels, dtype=object)
    records = list(
        map(
            kinds.top_bin_of,
            labels[top.index[kept]].tolist(),
            top.window_p[kept].tolist(),
            top.baseline_q[kept].tolist(),
            top.contribution_bits[kept].tolist(),
        )
    )
    ends = np.cumsum(top.count).tolist()
    return [records[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)]


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
    `cauchy_combined_p_values` of one row.

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
    ps = np.asarray(p_values, dtype=np.float64).reshape(1, -1)
    (combined,) = cauchy_combined_p_values(ps, np.ones(ps.shape, dtype=np.bool_))
    return combined


def cauchy_combined_p_values(p_values: np.ndarray, present: np.ndarray) -> list[float | None]:
    """`cauchy_combined_p_value` of each row of `p_values` (rows x tests, float64) over the
    entries `present` says: rows with the same entries present are computed together, each
    row's mean over exactly its p-values (the same floats as one row alone)."""
    combined: list[float | None] = [None] * len(p_values)
    if p_values.size == 0:
        return combined
    checked = p_values[present]
    if not np.all((checked >= 0.0) & (checked <= 1.0)):
        raise ValueError(f"p-values must lie in [0, 1]: {checked.tolist()}")
    patterns, pattern_of_row = np.unique(present, axis=0, return_inverse=True)
    for index, pattern in enumerate(patterns):
        if not pattern.any():
            continue
        rows = np.flatnonzero(pattern_of_row.reshape(-1) == index)
        ps = np.ascontiguousarray(p_values[np.ix_(rows, np.flatnonzero(pattern))])
        with np.errstate(divide="ignore"):
            statistics = np.mean(1.0 / np.tan(np.minimum(ps, P_CAP) * math.pi), axis=1)
        zero = np.any(ps == 0.0, axis=1)
        for row, statistic, has_zero in zip(
            rows.tolist(), statistics.tolist(), zero.tolist(), strict=True
        ):
            combined[row] = 0.0 if has_zero else _cauchy_survival(statistic)
    return combined


def _cauchy_survival(statistic: float) -> float:
    """P(Cauchy > statistic), without cancellation for a large statistic."""
    if statistic > 0:
        return math.atan(1.0 / statistic) / math.pi
    return 0.5 - math.atan(statistic) / math.pi


def window_summary(reports: Sequence[AnyReport], drift_spec: DriftSpec) -> Any:
    """One verdict over the reports of one (key, window, revision) (every feature's): a
    WindowSummary, or a WindowSummaryWire for DriftReportWires."""
    first = reports[0]
    decision_ps = [decision_p_value(r) for r in reports]
    (summary,) = _summaries(
        WindowSummaryWire if isinstance(first, DriftReportWire) else WindowSummary,
        pipeline=first.pipeline,
        rows=WindowRows(
            keys=[first.key],
            window_starts=[first.window_start],
            window_ends=[first.window_end],
            revisions=[first.revision],
            counts=np.zeros((1, 0)),
            other_values=[None],
        ),
        baseline_id=first.baseline_id,
        events=[first.count + first.missing + first.invalid],
        features=[r.feature for r in reports],
        decision_ps=_row(decision_ps),
        present=np.array([[p is not None for p in decision_ps]], dtype=np.bool_),
        drift=np.array([[r.drift for r in reports]], dtype=np.bool_),
        q_values=_row([r.q_value for r in reports]),
        debiased=_row([r.kl_bits_debiased for r in reports]),
        drift_spec=drift_spec,
    )
    return summary


def _row(values: Sequence[float | None]) -> np.ndarray:
    """One row of floats, NaN for None."""
    return np.array([[np.nan if v is None else v for v in values]], dtype=np.float64)


def _summaries(
    kind: type,
    *,
    pipeline: str,
    rows: WindowRows,
    baseline_id: str,
    events: list[int],
    features: list[str],
    decision_ps: np.ndarray,
    present: np.ndarray,
    drift: np.ndarray,
    q_values: np.ndarray,
    debiased: np.ndarray,
    drift_spec: DriftSpec,
) -> list[Any]:
    """Each window's summary (`kind`) from its windows x features columns: the decision
    p-values (`present` says which exist), the drift flags, q-values and debiased KLs (NaN:
    none)."""
    combined = cauchy_combined_p_values(decision_ps, present)
    has_q, has_debiased = ~np.isnan(q_values), ~np.isnan(debiased)
    min_q = _nullable(np.where(has_q, q_values, np.inf).min(axis=1), has_q.any(axis=1))
    max_debiased = _nullable(
        np.where(has_debiased, debiased, -np.inf).max(axis=1), has_debiased.any(axis=1)
    )
    significance, decision = drift_spec.significance, drift_spec.decision
    return [
        kind(
            record="window_summary",
            pipeline=pipeline,
            key=key,
            window_start=window_start,
            window_end=window_end,
            revision=revision,
            events=window_events,
            features=len(features),
            features_checked=checked,
            features_drifted=drifted,
            min_q_value=q_value,
            combined_p_value=combined_p,
            max_kl_bits_debiased=kl,
            decision=decision,
            significance=significance,
            drift=bool(drifted) and combined_p is not None and combined_p < significance,
            baseline_id=baseline_id,
        )
        for (
            key,
            window_start,
            window_end,
            revision,
            window_events,
            checked,
            drifted,
            q_value,
            combined_p,
            kl,
        ) in zip(
            rows.keys,
            rows.window_starts,
            rows.window_ends,
            rows.revisions,
            events,
            np.count_nonzero(present, axis=1).tolist(),
            [list(itertools.compress(features, flags)) for flags in drift.tolist()],
            min_q,
            combined,
            max_debiased,
            strict=True,
        )
    ]
