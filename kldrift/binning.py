"""The one binning definition, used by the baseline builder, replay and streaming alike.

Numeric edges e[0..m-1] give m+1 bins, index = searchsorted(edges, x, side="right"):
(-inf,e0), [e0,e1), ..., [e(m-1),+inf). Categorical: the listed categories in order, then
`__other__`. Absent/null/NaN values are `missing`; values of the wrong type are `invalid`.

A feature's counts are one int64 array of n_bins + 2 slots: the bins, then missing, then invalid.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np

from kldrift.events import field_getter
from kldrift.exceptions import BaselineMismatch as BaselineMismatch
from kldrift.schemas.baseline import Baseline, FeatureBaseline
from kldrift.schemas.config import (
    OTHER_CATEGORY,
    FeatureSpec,
    JointFeature,
    NumericFeature,
    PipelineConfig,
)

_NUMBER_TYPES = frozenset({int, float})
_NUMBER_OR_NONE = frozenset({int, float, type(None)})


def _is_number(value: Any) -> bool:
    """Numbers, including a Parquet or Avro decimal (a Decimal), which bins as its float."""
    return isinstance(value, int | float | Decimal | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def as_float(value: Any) -> float:
    """A number or None as a float; an int beyond float range lies past every edge (+-inf)."""
    if value is None:
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def category_of(value: Any) -> str | None:
    """The category a categorical feature's value counts under: a string as is, a boolean as
    "true"/"false", an integer as its decimal text; None for anything else (null, a float, an
    object, a list), which is missing or invalid."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return None


def _edge_text(edge: float) -> str:
    return format(edge, ".10g")


@dataclass(frozen=True, eq=False)
class FeatureBins:
    """How one feature's values map to bins.

    Examples
    --------
    Edges 0, 10, 100 make 4 bins, then the missing slot (4) and the invalid slot (5):

    >>> latency = FeatureBins.numeric("latency_ms", [0, 10, 100])
    >>> latency.labels
    ('(-inf, 0)', '[0, 10)', '[10, 100)', '[100, +inf)')
    >>> latency.codes([-1, 0, 9.5, 10, 100, None, "fast"]).tolist()
    [0, 1, 1, 2, 3, 4, 5]
    >>> latency.count([5, 7, 50, None]).tolist()
    [0, 2, 1, 0, 1, 0]

    Categories in order, then ``__other__``; an integer matches its text, a float is invalid:

    >>> country = FeatureBins.categorical("country", ["US", "DE"])
    >>> country.codes(["DE", "FR", None, 1.5]).tolist()
    [1, 2, 3, 4]

    A joint pairs two features' bins: 4 x 3 cells, the first part's bin varying slowest; a
    value is a pair, missing (invalid) when either part is:

    >>> pair = FeatureBins.joint("latency_by_country", latency, country)
    >>> pair.n_bins, pair.labels[3]
    (12, '[0, 10) & US')
    >>> pair.codes([(5, "US"), (500, "FR"), (5, None), (None, 1.5)]).tolist()
    [3, 11, 12, 13]
    """

    name: str
    kind: str
    edges: np.ndarray | None = None
    categories: tuple[str, ...] | None = None
    parts: tuple[FeatureBins, FeatureBins] | None = None
    """A joint's two features, in cell order."""

    @property
    def n_bins(self) -> int:
        if self.edges is not None:
            return len(self.edges) + 1
        if self.parts is not None:
            return self.parts[0].n_bins * self.parts[1].n_bins
        assert self.categories is not None
        return len(self.categories) + 1

    @property
    def missing_slot(self) -> int:
        return self.n_bins

    @property
    def invalid_slot(self) -> int:
        return self.n_bins + 1

    @property
    def labels(self) -> tuple[str, ...]:
        if self.parts is not None:
            first, second = self.parts
            return tuple(f"{a} & {b}" for a in first.labels for b in second.labels)
        if self.categories is not None:
            return (*self.categories, OTHER_CATEGORY)
        assert self.edges is not None
        edges = [_edge_text(e) for e in self.edges]
        inner = [f"[{a}, {b})" for a, b in itertools.pairwise(edges)]
        return (f"(-inf, {edges[0]})", *inner, f"[{edges[-1]}, +inf)")

    @classmethod
    def numeric(cls, name: str, edges: Sequence[float]) -> FeatureBins:
        return cls(name, "numeric", edges=np.asarray(edges, dtype=np.float64))

    @classmethod
    def categorical(cls, name: str, categories: Sequence[str]) -> FeatureBins:
        return cls(name, "categorical", categories=tuple(categories))

    @classmethod
    def joint(cls, name: str, first: FeatureBins, second: FeatureBins) -> FeatureBins:
        return cls(name, "joint", parts=(first, second))

    @property
    def of(self) -> list[str] | None:
        """A joint's two feature names; None for a plain feature."""
        return None if self.parts is None else [self.parts[0].name, self.parts[1].name]

    def codes(self, values: Sequence[Any]) -> np.ndarray:
        """A slot per value: its bin, or missing_slot, or invalid_slot. A joint's values are
        pairs (as `value_getter` reads them)."""
        if self.edges is not None:
            return self._numeric_codes(values)
        if self.parts is not None:
            first, second = self.parts
            return self.joint_codes(
                first.codes([v[0] for v in values]), second.codes([v[1] for v in values])
            )
        return self._categorical_codes(values)

    def joint_codes(self, first_codes: np.ndarray, second_codes: np.ndarray) -> np.ndarray:
        """A joint's slots from its parts' slots: invalid if either part is, else missing if
        either part is, else the cell (first bin x second's bins + second bin)."""
        assert self.parts is not None
        first, second = self.parts
        codes = first_codes * second.n_bins + second_codes
        missing = (first_codes == first.missing_slot) | (second_codes == second.missing_slot)
        invalid = (first_codes == first.invalid_slot) | (second_codes == second.invalid_slot)
        codes[missing] = self.missing_slot
        codes[invalid] = self.invalid_slot
        return codes

    def _numeric_codes(self, values: Sequence[Any]) -> np.ndarray:
        assert self.edges is not None
        types = set(map(type, values))
        if types <= _NUMBER_OR_NONE:
            try:
                numbers = np.array(values, dtype=np.float64)  # None -> nan
            except OverflowError:  # an int too large for a float (valid JSON)
                numbers = np.array([as_float(v) for v in values], dtype=np.float64)
            invalid = None
        else:
            usable = [_is_number(v) or v is None for v in values]
            numbers = np.array(
                [as_float(v) if ok else math.nan for v, ok in zip(values, usable, strict=True)],
                dtype=np.float64,
            )
            invalid = ~np.asarray(usable, dtype=bool)
        codes = np.searchsorted(self.edges, numbers, side="right")
        codes[np.isnan(numbers)] = self.missing_slot
        if invalid is not None:
            codes[invalid] = self.invalid_slot
        return codes

    def _categorical_codes(self, values: Sequence[Any]) -> np.ndarray:
        index = self._category_index
        other = self.n_bins - 1
        missing, invalid = self.missing_slot, self.invalid_slot
        if set(map(type, values)) <= {str}:
            return np.fromiter((index.get(v, other) for v in values), np.int64, len(values))
        codes = []
        for value in values:
            if value is None:
                codes.append(missing)
                continue
            category = category_of(value)
            codes.append(invalid if category is None else index.get(category, other))
        return np.asarray(codes, dtype=np.int64)

    @property
    def _category_index(self) -> dict[str, int]:
        cached = self.__dict__.get("_index")
        if cached is None:
            assert self.categories is not None
            cached = {c: i for i, c in enumerate(self.categories)}
            object.__setattr__(self, "_index", cached)
        return cached

    def count(self, values: Sequence[Any]) -> np.ndarray:
        """Counts over all values: n_bins + 2 slots (bins, missing, invalid)."""
        return np.bincount(self.codes(values), minlength=self.n_bins + 2).astype(np.int64)

    def count_groups(self, values: Sequence[Any], group: np.ndarray, n_groups: int) -> np.ndarray:
        """Counts per group (shape n_groups x (n_bins + 2)); `group[i]` is value i's group."""
        width = self.n_bins + 2
        flat = group.astype(np.int64) * width + self.codes(values)
        return np.bincount(flat, minlength=n_groups * width).reshape(n_groups, width)


def feature_values(bins: FeatureBins, column: Callable[[str], list[Any]]) -> list[Any]:
    """A feature's values in a batch whose (dotted) fields `column(path)` reads: its field's, or a
    joint's pairs (as `value_getter` reads them from each event)."""
    if bins.parts is None:
        return column(bins.name)
    first, second = (column(part.name) for part in bins.parts)
    return list(zip(first, second, strict=True))


def value_getter(bins: FeatureBins) -> Callable[[dict[str, Any]], Any]:
    """What a feature reads from an event: its (dotted) field, or a joint's pair of fields."""
    if bins.parts is None:
        return field_getter(bins.name)
    get_first, get_second = (field_getter(part.name) for part in bins.parts)
    return lambda event: (get_first(event), get_second(event))


def bins_from_baseline(feature: FeatureBaseline, baseline: Baseline | None = None) -> FeatureBins:
    """A feature's bins as a baseline stored them (a joint's parts from `baseline`)."""
    if feature.kind == "joint":
        assert feature.of is not None and baseline is not None
        first, second = (bins_from_baseline(baseline.feature(name)) for name in feature.of)
        return FeatureBins.joint(feature.name, first, second)
    if feature.kind == "numeric":
        assert feature.edges is not None
        return FeatureBins.numeric(feature.name, feature.edges)
    assert feature.categories is not None
    return FeatureBins.categorical(feature.name, feature.categories)


def bins_from_spec(spec: FeatureSpec) -> FeatureBins | None:
    """A plain feature's bins fixed by the config itself; None where they are learned from the
    baseline (and for a joint: see `bins_from_config`)."""
    if isinstance(spec, JointFeature):
        return None
    if isinstance(spec, NumericFeature):
        return FeatureBins.numeric(spec.name, spec.edges) if spec.edges is not None else None
    if spec.categories is not None:
        return FeatureBins.categorical(spec.name, spec.categories)
    return None


def with_joints(
    config: PipelineConfig, plain: Mapping[str, FeatureBins | None]
) -> list[FeatureBins | None]:
    """Every config feature's bins in config order: the plain ones from `plain`, each joint
    paired from its parts' (None where a part's are None)."""
    resolved: list[FeatureBins | None] = []
    for spec in config.features:
        if isinstance(spec, JointFeature):
            first, second = (plain[name] for name in spec.of)
            pair = None if first is None or second is None else (first, second)
            resolved.append(None if pair is None else FeatureBins.joint(spec.name, *pair))
        else:
            resolved.append(plain[spec.name])
    return resolved


def bins_from_config(config: PipelineConfig) -> list[FeatureBins | None]:
    """Every feature's bins as fixed by the config alone, in config order (None: learned)."""
    plain = {s.name: bins_from_spec(s) for s in config.features if not isinstance(s, JointFeature)}
    return with_joints(config, plain)


def resolve_bins(config: PipelineConfig, baseline: Baseline) -> list[FeatureBins]:
    """Every config feature's bins, checked against the baseline; BaselineMismatch names the feature."""
    resolved = []
    for spec in config.features:
        try:
            stored = baseline.feature(spec.name)
        except KeyError:
            raise BaselineMismatch(
                f"feature {spec.name!r} is in the config but not in baseline {baseline.id[:12]}: "
                "rebuild the baseline with this config"
            ) from None
        _check_matches(spec, stored)
        resolved.append(bins_from_baseline(stored, baseline))
    return resolved


def _check_matches(spec: FeatureSpec, stored: FeatureBaseline) -> None:
    where = f"feature {spec.name!r}"
    if spec.kind != stored.kind:
        raise BaselineMismatch(f"{where}: config says {spec.kind}, baseline has {stored.kind}")
    if isinstance(spec, JointFeature):
        if list(spec.of) != list(stored.of or []):
            raise BaselineMismatch(
                f"{where}: config pairs {spec.of}, the baseline's joint pairs {stored.of}"
            )
        return
    _check_learned_with(spec, stored)
    if isinstance(spec, NumericFeature):
        if spec.edges is not None and list(spec.edges) != list(stored.edges or []):
            raise BaselineMismatch(f"{where}: config edges differ from the baseline's edges")
        if spec.bins is not None and len(stored.edges or []) + 1 > spec.bins:
            raise BaselineMismatch(
                f"{where}: baseline has {len(stored.edges or []) + 1} bins, config asks {spec.bins}"
            )
        return
    if spec.categories is not None and list(spec.categories) != list(stored.categories or []):
        raise BaselineMismatch(f"{where}: config categories differ from the baseline's categories")
    if spec.top_k is not None and len(stored.categories or []) > spec.top_k:
        raise BaselineMismatch(
            f"{where}: baseline has {len(stored.categories or [])} categories, top_k is {spec.top_k}"
        )


def _check_learned_with(spec: FeatureSpec, stored: FeatureBaseline) -> None:
    """Where the config asks for learned bins and the baseline recorded what its bins were learned
    with, the two must be the same. A baseline without the record (built before it existed) gets
    the size checks below; fixed edges or categories in the config are compared as such."""
    if stored.learned_with is None:
        return
    ((setting, learned_with),) = stored.learned_with.items()
    asked = getattr(spec, setting, None)
    if asked is not None and asked != learned_with:
        raise BaselineMismatch(
            f"feature {spec.name!r}: baseline was learned with {setting}: {learned_with}, "
            f"config asks {setting}: {asked}: rebuild the baseline with this config"
        )


def bins_differ(current: Sequence[FeatureBins], candidate: Sequence[FeatureBins]) -> str | None:
    """The first feature whose bins differ between two resolved bin lists, else None."""
    for a, b in zip(current, candidate, strict=True):
        same_edges = (a.edges is None and b.edges is None) or (
            a.edges is not None and b.edges is not None and np.array_equal(a.edges, b.edges)
        )
        if (
            a.name != b.name
            or a.kind != b.kind
            or not same_edges
            or a.categories != b.categories
            or a.of != b.of
        ):
            return a.name
    return None
