"""Counts that also name the raw values behind categorical `__other__` bins.

A (key, pane) or window histogram is an int64 array (every feature's slots side by side). When
some categorical value fell into `__other__`, it travels as `CountsWithOthers`: the same array
plus, per feature, a bounded count of those raw values (the `OTHER_VALUES_KEPT` most frequent;
beyond that the kept counts are approximate: values dropped from one pane cannot come back).
Histograms without such values stay plain arrays, so the numpy path is unchanged for them.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

OTHER_VALUES_KEPT = 20
"""Raw `__other__` values kept per feature in a pane or window histogram."""
MAX_VALUE_CHARS = 100
"""Longer raw values are cut to this many characters."""


class CountsWithOthers:
    """A counts array and, per feature, counts of the raw values binned as `__other__`."""

    __slots__ = ("counts", "others")

    def __init__(self, counts: np.ndarray, others: dict[str, Counter[str]]) -> None:
        self.counts = counts
        self.others = others

    def __getstate__(self) -> tuple[np.ndarray, dict[str, Counter[str]]]:
        return self.counts, self.others

    def __setstate__(self, state: tuple[np.ndarray, dict[str, Counter[str]]]) -> None:
        self.counts, self.others = state

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CountsWithOthers)
            and np.array_equal(self.counts, other.counts)
            and self.others == other.others
        )

    def __repr__(self) -> str:
        return f"CountsWithOthers({self.counts!r}, {self.others!r})"


Histogram = np.ndarray | CountsWithOthers


def counts_of(histogram: Histogram) -> np.ndarray:
    return histogram.counts if isinstance(histogram, CountsWithOthers) else histogram


def others_of(histogram: Histogram) -> dict[str, Counter[str]]:
    return histogram.others if isinstance(histogram, CountsWithOthers) else {}


def copy_histogram(histogram: Histogram) -> Histogram:
    """An int64 copy the caller may add into in place."""
    if isinstance(histogram, CountsWithOthers):
        return CountsWithOthers(
            np.array(histogram.counts, dtype=np.int64, copy=True),
            {f: Counter(c) for f, c in histogram.others.items()},
        )
    return np.array(histogram, dtype=np.int64, copy=True)


def add_into(total: Histogram, part: Histogram) -> Histogram:
    """`total + part`, reusing `total` (which must be the caller's own copy); `part` is intact."""
    if not isinstance(part, CountsWithOthers):
        if isinstance(total, CountsWithOthers):
            total.counts += part
            return total
        total += part
        return total
    if not isinstance(total, CountsWithOthers):
        total = CountsWithOthers(total, {})
    total.counts += part.counts
    for feature, values in part.others.items():
        kept = total.others.setdefault(feature, Counter())
        kept.update(values)
        if len(kept) > OTHER_VALUES_KEPT:
            total.others[feature] = Counter(dict(kept.most_common(OTHER_VALUES_KEPT)))
    return total


def category_text(value: Any) -> str:
    """A raw categorical value as binning compares it (text as is, integers and booleans as text),
    cut to MAX_VALUE_CHARS; a lone surrogate (JSON allows one, UTF-8 cannot carry it) is shown
    escaped, so the report stays encodable."""
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    text = text[:MAX_VALUE_CHARS]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def count_other_values(
    values: list[Any], codes: np.ndarray, other_code: int, group_of_event: np.ndarray
) -> dict[int, Counter[str]]:
    """Per group, counts of the raw values whose code is `other_code`, bounded as above."""
    per_group: dict[int, Counter[str]] = {}
    for row in np.flatnonzero(codes == other_code):
        group = int(group_of_event[row])
        per_group.setdefault(group, Counter())[category_text(values[row])] += 1
    for group, counter in per_group.items():
        if len(counter) > OTHER_VALUES_KEPT:
            per_group[group] = Counter(dict(counter.most_common(OTHER_VALUES_KEPT)))
    return per_group
