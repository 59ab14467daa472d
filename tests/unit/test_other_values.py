"""Counts that carry the raw values behind `__other__`: summed by SumCounts the TFDV way (whole,
split and merged, other orders, inputs intact), bounded, and plain arrays left plain."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from kldrift.other_values import (
    OTHER_VALUES_KEPT,
    CountsWithOthers,
    add_into,
    copy_histogram,
    count_other_values,
    counts_of,
    others_of,
)
from kldrift.transforms.panes import SumCounts

WIDTH = 6


@pytest.fixture
def inputs() -> list:
    rng = np.random.default_rng(77)
    values: list = []
    for i in range(10):
        counts = rng.integers(0, 100, size=WIDTH, dtype=np.int64)
        if i % 3 == 0:
            named = Counter({str(v): int(rng.integers(1, 5)) for v in rng.choice(8, size=3)})
            values.append(CountsWithOthers(counts, {"country": named}))
        else:
            values.append(counts)
    values[4] = None  # an empty pane
    return values


def _expected(inputs: list) -> tuple[np.ndarray, Counter]:
    present = [v for v in inputs if v is not None]
    total = np.sum([v.counts if isinstance(v, CountsWithOthers) else v for v in present], axis=0)
    named: Counter = Counter()
    for v in present:
        if isinstance(v, CountsWithOthers):
            named.update(v.others["country"])
    return total, named


def _accumulate(fn: SumCounts, inputs: list):
    accumulator = fn.create_accumulator()
    for value in inputs:
        accumulator = fn.add_input(accumulator, value)
    return accumulator


def _snapshot(inputs: list) -> list:
    return [None if v is None else copy_histogram(v) for v in inputs]


@pytest.mark.parametrize("split", [None, (0, 1, 2), (2, 0, 1), (1, 2, 0)])
def test_sum_counts_adds_counts_and_named_values_however_split(inputs: list, split) -> None:
    fn = SumCounts()
    before = _snapshot(inputs)
    if split is None:
        out = fn.extract_output(_accumulate(fn, inputs))
    else:
        parts = [inputs[0:3], inputs[3:7], inputs[7:]]
        out = fn.extract_output(fn.merge_accumulators([_accumulate(fn, parts[i]) for i in split]))
    total, named = _expected(inputs)
    np.testing.assert_array_equal(counts_of(out), total)
    assert others_of(out) == {"country": named}
    for a, b in zip(inputs, before, strict=True):  # inputs intact, named values included
        assert (a is None and b is None) or (
            np.array_equal(counts_of(a), counts_of(b)) and others_of(a) == others_of(b)
        )


def test_plain_arrays_stay_plain() -> None:
    fn = SumCounts()
    out = fn.extract_output(_accumulate(fn, [np.ones(WIDTH, np.int64)] * 3))
    assert isinstance(out, np.ndarray) and out.tolist() == [3] * WIDTH


def test_named_values_are_bounded_to_the_most_frequent() -> None:
    many = Counter({f"v{i:02d}": i + 1 for i in range(OTHER_VALUES_KEPT + 10)})
    total = add_into(np.zeros(2, np.int64), CountsWithOthers(np.ones(2, np.int64), {"f": many}))
    kept = others_of(total)["f"]
    assert len(kept) == OTHER_VALUES_KEPT
    assert set(kept) == {f"v{i:02d}" for i in range(10, OTHER_VALUES_KEPT + 10)}


def test_count_other_values_names_raw_values_per_group_as_text() -> None:
    values = ["BR", "US", 7, True, "BR", "MX", "BR"]
    codes = np.array([4, 0, 4, 4, 4, 4, 4])  # 4 = __other__
    group = np.array([0, 0, 0, 1, 1, 1, 0])
    assert count_other_values(values, codes, 4, group) == {
        0: Counter({"BR": 2, "7": 1}),
        1: Counter({"true": 1, "BR": 1, "MX": 1}),
    }


def test_a_lone_surrogate_value_is_named_escaped_so_the_report_encodes() -> None:
    """JSON may carry "\\ud800" (json.loads accepts it) but UTF-8 cannot: the report names it
    escaped instead of failing to serialise (which failed `kldrift replay` on such a record)."""
    import json

    from kldrift.other_values import category_text

    raw = json.loads('"BR\\ud800"')
    named = category_text(raw)
    assert named == "BR\\ud800"
    named.encode("utf-8")  # would raise for the raw value
    assert category_text("BR") == "BR" and category_text(True) == "true"
