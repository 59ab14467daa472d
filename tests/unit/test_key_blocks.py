"""Key blocks: per-key sums of blocks with different keys (against sums worked out here per key),
the raw `__other__` values merged and bounded, the SumBlocks CombineFn whole and split (the TFDV
way), and the shard of a key stable across processes."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import numpy as np

from kldrift.key_blocks import SHARDS, KeyBlock, block_of, shard_of, sum_blocks
from kldrift.other_values import OTHER_VALUES_KEPT, CountsWithOthers
from kldrift.transforms.panes import SumBlocks


def _block(rows: dict[str | None, list[int]], others: dict | None = None) -> KeyBlock:
    return KeyBlock(list(rows), np.array(list(rows.values()), dtype=np.int64), others or {})


A = _block({"a": [1, 0, 2], None: [0, 5, 0]})
B = _block({"b": [3, 3, 3], "a": [1, 1, 1]}, {"b": {"color": Counter(teal=2)}})
C = _block({None: [2, 0, 0]}, {None: {"color": Counter(teal=1, plum=4)}})


def _as_dict(block: KeyBlock) -> dict:
    return {
        key: (block.counts[row].tolist(), block.others.get(key, {}))
        for row, key in enumerate(block.keys)
    }


WANT = {
    "a": ([2, 1, 3], {}),
    None: ([2, 5, 0], {"color": Counter(teal=1, plum=4)}),
    "b": ([3, 3, 3], {"color": Counter(teal=2)}),
}


def test_blocks_sum_per_key_whatever_their_keys() -> None:
    total = sum_blocks([A, B, C])
    assert _as_dict(total) == WANT
    assert total.keys == ["a", None, "b"]  # order of first appearance
    assert A.counts.tolist() == [[1, 0, 2], [0, 5, 0]]  # the parts are not changed
    assert sum_blocks([A, A]).counts.tolist() == [[2, 0, 4], [0, 10, 0]]


def test_other_values_stay_bounded_as_in_a_single_histogram() -> None:
    many = {f"v{i:02d}": i + 1 for i in range(OTHER_VALUES_KEPT + 5)}
    parts = [
        _block({"a": [1]}, {"a": {"c": Counter(dict(list(many.items())[:10]))}}),
        _block({"a": [1]}, {"a": {"c": Counter(dict(list(many.items())[10:]))}}),
    ]
    kept = sum_blocks(parts).others["a"]["c"]
    assert len(kept) == OTHER_VALUES_KEPT
    assert kept == Counter(dict(sorted(many.items(), key=lambda kv: -kv[1])[:OTHER_VALUES_KEPT]))


def test_sum_blocks_combines_whole_or_split() -> None:
    fn = SumBlocks()
    whole = fn.create_accumulator()
    for block in (A, None, B, C):
        whole = fn.add_input(whole, block)
    left = fn.add_input(fn.add_input(fn.create_accumulator(), A), None)
    right = fn.add_input(fn.add_input(fn.create_accumulator(), B), C)
    merged = fn.merge_accumulators([left, fn.create_accumulator(), right])
    assert _as_dict(fn.extract_output(whole)) == WANT
    assert _as_dict(fn.extract_output(merged)) == WANT
    assert fn.extract_output(fn.create_accumulator()) is None


def test_a_row_is_its_keys_histogram_and_back() -> None:
    assert C.histogram(0) == CountsWithOthers(
        np.array([2, 0, 0]), {"color": C.others[None]["color"]}
    )
    assert A.histogram(0).tolist() == [1, 0, 2]  # type: ignore[union-attr]
    assert block_of(B.histograms()) == B


def test_a_keys_shard_is_the_same_in_another_process() -> None:
    keys = ["model-a", "tenant-42", "ü", ""]
    here = [shard_of(k) for k in keys]
    there = subprocess.run(
        [
            sys.executable,
            "-c",
            f"from kldrift.key_blocks import shard_of; print([shard_of(k) for k in {keys!r}])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert str(here) == there
    assert all(0 <= s < SHARDS for s in here) and shard_of(None) == 0
    assert len({shard_of(f"k{i}") for i in range(1000)}) == SHARDS
