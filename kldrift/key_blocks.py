"""Key blocks: the counts of many keys as one value, so that a many-keys job pays a runner's
per-element cost per block of keys, not per key.

A `KeyBlock` holds keys (one row each) and a keys x slots int64 count matrix (every feature's slots
side by side, as a (key, pane) array), plus the raw `__other__` values of the keys that have some
(kldrift.other_values). Keys are grouped into `SHARDS` blocks by a stable hash (`shard_of`): the
grouping key of the panes, sliding windows and revisions is the shard, the value its block.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Iterable, Iterator

import numpy as np

from kldrift.other_values import OTHER_VALUES_KEPT, CountsWithOthers, Histogram

SHARDS = 16
"""Blocks of keys: each (pane, sliding window, revision) is one element per shard holding keys.
Enough for a runner to spread the work over a few workers, few enough that a block of many keys
amortises the runner's per-element cost."""

Others = dict[str, Counter[str]]
"""Per feature, counts of the raw values binned as `__other__` (kldrift.other_values)."""


def shard_of(key: str | None) -> int:
    """The shard of a key: stable across processes and runs (CRC-32 of its UTF-8), None in 0.

    >>> shard_of(None), shard_of("model-a"), shard_of("model-a") == shard_of("model-a")
    (0, 13, True)
    """
    if key is None:
        return 0
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % SHARDS


class KeyBlock:
    """Counts of several keys: `keys[i]`'s counts are `counts[i]`; `others[key]` the raw
    `__other__` values of a key that has some. Keys are distinct. Never changed in place."""

    __slots__ = ("counts", "keys", "others")

    def __init__(
        self, keys: list[str | None], counts: np.ndarray, others: dict[str | None, Others]
    ) -> None:
        self.keys = keys
        self.counts = counts
        self.others = others

    def __getstate__(self) -> tuple:
        return self.keys, self.counts, self.others

    def __setstate__(self, state: tuple) -> None:
        self.keys, self.counts, self.others = state

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, KeyBlock)
            and self.keys == other.keys
            and np.array_equal(self.counts, other.counts)
            and self.others == other.others
        )

    def __repr__(self) -> str:
        return f"KeyBlock({self.keys!r}, {self.counts!r}, {self.others!r})"

    def __len__(self) -> int:
        return len(self.keys)

    def histogram(self, row: int) -> Histogram:
        """Row `row` as a Histogram (a view of the row, with its key's `__other__` values)."""
        others = self.others.get(self.keys[row])
        if others:
            return CountsWithOthers(self.counts[row], others)
        return self.counts[row]

    def histograms(self) -> Iterator[tuple[str | None, Histogram]]:
        for row, key in enumerate(self.keys):
            yield key, self.histogram(row)


def block_of(histograms: Iterable[tuple[str | None, Histogram]]) -> KeyBlock:
    """A KeyBlock of (key, histogram) pairs with distinct keys (at least one)."""
    keys: list[str | None] = []
    rows: list[np.ndarray] = []
    others: dict[str | None, Others] = {}
    for key, histogram in histograms:
        keys.append(key)
        if isinstance(histogram, CountsWithOthers):
            rows.append(histogram.counts)
            if histogram.others:
                others[key] = histogram.others
        else:
            rows.append(histogram)
    return KeyBlock(keys, np.array(rows, dtype=np.int64, ndmin=2), others)


def sum_blocks(blocks: list[KeyBlock]) -> KeyBlock:
    """The sum of blocks (at least one) per key, keys in order of first appearance; the raw
    `__other__` values are merged and kept bounded as kldrift.other_values.add_into keeps them.
    The blocks are not changed; a single block is returned as it is."""
    if len(blocks) == 1:
        return blocks[0]
    first = blocks[0]
    if all(block.keys == first.keys for block in blocks):
        index = {key: row for row, key in enumerate(first.keys)}
        total = np.add.reduce([block.counts for block in blocks], dtype=np.int64)
    else:
        index = {}
        for block in blocks:
            for key in block.keys:
                index.setdefault(key, len(index))
        total = np.zeros((len(index), first.counts.shape[1]), dtype=np.int64)
        for block in blocks:
            total[[index[key] for key in block.keys]] += block.counts
    others: dict[str | None, Others] = {}
    for block in blocks:
        for key, part in block.others.items():
            merge_others(others.setdefault(key, {}), part)
    return KeyBlock(list(index), total, others)


def merge_others(total: Others, part: Others) -> None:
    """Adds `part`'s raw values into `total` (the caller's own), keeping OTHER_VALUES_KEPT per
    feature; `part` is intact."""
    for feature, values in part.items():
        kept = total.setdefault(feature, Counter())
        kept.update(values)
        if len(kept) > OTHER_VALUES_KEPT:
            total[feature] = Counter(dict(kept.most_common(OTHER_VALUES_KEPT)))
