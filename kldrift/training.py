"""A baseline from training events held in memory (a notebook, a test, a small training set), with
the same binning as every job. Learned bins (`bins: N`, `top_k`) need `kldrift baseline`."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from kldrift.binning import FeatureBins, bins_from_config, value_getter
from kldrift.schemas.baseline import Baseline, BaselineError, FeatureBaseline
from kldrift.schemas.config import PipelineConfig


def baseline_from_events(
    config: PipelineConfig, events: Iterable[dict[str, Any]], *, source: str = "in memory"
) -> Baseline:
    """Count training events into a baseline with the config's bins.

    Every feature must fix its bins in the config (`edges` or `categories`); a feature that learns
    them raises BaselineError naming it. Event time and key are not read: every event counts.

    Examples:
        >>> from kldrift import parse_config
        >>> config = parse_config({
        ...     "name": "shop", "event_time_field": "ts",
        ...     "window": {"size": "1m", "period": "30s"},
        ...     "features": [{"name": "country", "kind": "categorical",
        ...                   "categories": ["de", "fr"]}]})
        >>> baseline = baseline_from_events(
        ...     config, [{"country": "de"}, {"country": "fr"}, {"country": "us"}, {}])
        >>> feature = baseline.feature("country")
        >>> feature.counts, feature.missing  # de, fr, __other__; one event had no country
        ([1, 1, 1], 1)
    """
    rows = list(events)
    features = []
    for spec, bins in zip(config.features, bins_from_config(config), strict=True):
        if bins is None:
            raise BaselineError(
                f"feature {spec.name!r} learns its bins from the data: give it `edges` or "
                "`categories` (a joint: give its parts theirs), or build the baseline with "
                "`kldrift baseline`"
            )
        get = value_getter(bins)
        counts = bins.count([get(event) for event in rows])
        features.append(feature_baseline(bins, counts, f"the {len(rows)} training events"))
    created_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return Baseline.create(features, source=source, created_at=created_at)


def feature_baseline(
    bins: FeatureBins,
    counts: np.ndarray,
    source: str,
    learned_with: dict[Literal["bins", "top_k"], int] | None = None,
) -> FeatureBaseline:
    """One feature's baseline from its counts (bins, then missing and invalid), with what the config
    asked where the bins were learned; BaselineError, naming the feature and `source`, when no
    value fell in a bin."""
    if counts[: bins.n_bins].sum() == 0:
        raise BaselineError(
            f"feature {bins.name!r}: no binnable values in {source} "
            f"({int(counts[bins.missing_slot])} missing, {int(counts[bins.invalid_slot])} invalid)"
        )
    return FeatureBaseline(
        name=bins.name,
        kind=bins.kind,
        edges=[float(e) for e in bins.edges] if bins.edges is not None else None,
        categories=list(bins.categories) if bins.categories is not None else None,
        of=bins.of,
        counts=[int(c) for c in counts[: bins.n_bins]],
        missing=int(counts[bins.missing_slot]),
        invalid=int(counts[bins.invalid_slot]),
        learned_with=learned_with,
    )
