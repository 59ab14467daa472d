"""The SumCounts CombineFn, checked the way TFDV checks its combiners: all inputs into one
accumulator, split across accumulators and merged, merged in other orders, inputs left intact."""

from __future__ import annotations

import numpy as np
import pytest

from kldrift.transforms.panes import SumCounts

WIDTH = 7  # e.g. 5 bins + missing + invalid


@pytest.fixture
def inputs() -> list[np.ndarray | None]:
    rng = np.random.default_rng(1234)
    counts: list[np.ndarray | None] = [
        rng.integers(0, 1_000, size=WIDTH, dtype=np.int64) for _ in range(12)
    ]
    counts[3] = None  # empty panes sum to None
    counts[8] = None
    counts[0] = np.zeros(WIDTH, dtype=np.int64)
    counts[5] = np.full(WIDTH, 2**40, dtype=np.int64)  # large counts do not overflow int64
    return counts


def _expected(inputs: list[np.ndarray | None]) -> np.ndarray:
    return np.sum(np.stack([c for c in inputs if c is not None]), axis=0)


def _accumulate(fn: SumCounts, inputs: list[np.ndarray | None]) -> np.ndarray | None:
    accumulator = fn.create_accumulator()
    for counts in inputs:
        accumulator = fn.add_input(accumulator, counts)
    return accumulator


def _copies(inputs: list[np.ndarray | None]) -> list[np.ndarray | None]:
    return [None if c is None else c.copy() for c in inputs]


def _assert_unchanged(now: list[np.ndarray | None], before: list[np.ndarray | None]) -> None:
    assert len(now) == len(before)
    for i, (a, b) in enumerate(zip(now, before, strict=True)):
        if b is None:
            assert a is None, i
        else:
            np.testing.assert_array_equal(a, b, err_msg=f"input {i} was modified")


def test_whole_all_inputs_into_one_accumulator(inputs: list[np.ndarray | None]) -> None:
    fn = SumCounts()

    out = fn.extract_output(_accumulate(fn, inputs))

    assert out is not None
    np.testing.assert_array_equal(out, _expected(inputs))
    assert out.dtype == np.int64


def test_split_into_three_accumulators_and_merged(inputs: list[np.ndarray | None]) -> None:
    fn = SumCounts()
    parts = [inputs[0:4], inputs[4:5], inputs[5:]]

    merged = fn.merge_accumulators([_accumulate(fn, part) for part in parts])

    np.testing.assert_array_equal(fn.extract_output(merged), _expected(inputs))


@pytest.mark.parametrize("order", [(2, 0, 1), (1, 2, 0), (0, 2, 1)])
def test_merged_in_another_order(inputs: list[np.ndarray | None], order: tuple[int, ...]) -> None:
    fn = SumCounts()
    parts = [inputs[0:3], inputs[3:9], inputs[9:]]
    accumulators = [_accumulate(fn, parts[i]) for i in order]

    merged = fn.merge_accumulators(accumulators)

    np.testing.assert_array_equal(fn.extract_output(merged), _expected(inputs))


def test_merged_in_stages(inputs: list[np.ndarray | None]) -> None:
    fn = SumCounts()
    a, b, c = (_accumulate(fn, part) for part in (inputs[:2], inputs[2:7], inputs[7:]))

    merged = fn.merge_accumulators([c, fn.merge_accumulators([b, a])])

    np.testing.assert_array_equal(fn.extract_output(merged), _expected(inputs))


def test_adding_leaves_the_inputs_unchanged(inputs: list[np.ndarray | None]) -> None:
    fn = SumCounts()
    before = _copies(inputs)

    _accumulate(fn, inputs)
    _accumulate(fn, inputs[::-1])

    _assert_unchanged(inputs, before)


def test_merge_only_reuses_the_first_accumulator(inputs: list[np.ndarray | None]) -> None:
    fn = SumCounts()
    accumulators = [_accumulate(fn, part) for part in (inputs[:4], inputs[4:8], inputs[8:])]
    before_inputs = _copies(inputs)
    before_rest = _copies(accumulators[1:])

    merged = fn.merge_accumulators(accumulators)

    assert merged is accumulators[0]  # Beam allows modifying and returning the first one
    _assert_unchanged(accumulators[1:], before_rest)
    _assert_unchanged(inputs, before_inputs)
    np.testing.assert_array_equal(merged, _expected(inputs))


def test_none_inputs_from_empty_panes_are_ignored() -> None:
    fn = SumCounts()
    counts = np.array([1, 0, 2, 0, 0, 0, 3], dtype=np.int64)

    out = fn.extract_output(_accumulate(fn, [None, counts, None, counts, None]))

    assert out is not None
    assert out.tolist() == [2, 0, 4, 0, 0, 0, 6]  # counts + counts


def test_none_accumulators_are_skipped_in_a_merge() -> None:
    fn = SumCounts()
    counts = np.arange(WIDTH, dtype=np.int64)

    merged = fn.merge_accumulators(
        [fn.create_accumulator(), _accumulate(fn, [counts]), fn.create_accumulator()]
    )

    assert merged is not None
    assert merged.tolist() == list(range(WIDTH))


def test_nothing_added_gives_none() -> None:
    fn = SumCounts()

    assert fn.extract_output(fn.create_accumulator()) is None
    assert fn.extract_output(_accumulate(fn, [None, None])) is None
    assert fn.extract_output(fn.merge_accumulators([])) is None
    assert fn.extract_output(fn.merge_accumulators([None, None])) is None
