"""The revision steps over key blocks. Replay's stateless FirstFiring: every window's one firing is
revision 0, an empty firing yields nothing, and a second (late) firing fails loudly instead of
being numbered 0 again. The streaming Revise: revisions are numbered per key of a shard's block,
so late data for one key revises that key alone."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest

from kldrift.key_blocks import KeyBlock
from kldrift.transforms.revise import FirstFiring, Revise

WINDOW_START_US = 1_700_000_400 * 1_000_000  # 2023-11-14T22:20:00Z
SLIDE_KEY = (5, WINDOW_START_US)


def _block(rows: dict[str | None, list[int]], others: dict | None = None) -> KeyBlock:
    return KeyBlock(list(rows), np.array(list(rows.values()), dtype=np.int64), others or {})


def _fire(delta: KeyBlock | None, first_firing: bool) -> list:
    return list(FirstFiring().process((SLIDE_KEY, (delta, first_firing))))


def test_a_first_firing_is_revision_0_with_its_counts() -> None:
    ((slide_key, totals, revisions),) = _fire(_block({"model-a": [3, 0, 1, 0, 0]}), True)
    assert (slide_key, totals.keys, revisions) == (SLIDE_KEY, ["model-a"], [0])
    assert totals.counts.tolist() == [[3, 0, 1, 0, 0]]


def test_a_first_firing_leaves_out_keys_without_counts() -> None:
    delta = _block({"a": [0, 0, 0], "b": [1, 2, 0]}, {"b": {"country": Counter(x=2)}})
    ((_, totals, revisions),) = _fire(delta, True)
    assert (totals.keys, totals.counts.tolist(), revisions) == (["b"], [[1, 2, 0]], [0])
    assert totals.others == {"b": {"country": Counter(x=2)}}


@pytest.mark.parametrize("delta", [None, _block({"model-a": [0, 0, 0, 0, 0]})])
def test_an_empty_firing_reports_nothing(delta: KeyBlock | None) -> None:
    assert _fire(delta, True) == [] and _fire(delta, False) == []


def test_a_second_firing_fails_naming_the_window() -> None:
    with pytest.raises(RuntimeError, match=r"2023-11-14T22:20:00Z of key 'model-a' fired again"):
        _fire(_block({"model-a": [1, 0, 0, 0, 0]}), False)


class _State:
    """A ReadModifyWriteState held in memory (what the runner keeps per (shard, window))."""

    def __init__(self) -> None:
        self.value: Any = None

    def read(self) -> Any:
        return self.value

    def write(self, value: Any) -> None:
        self.value = value


def _revise(state: _State, delta: KeyBlock, first_firing: bool) -> list:
    revise = Revise((("f", 0, 3),))
    return list(revise.process((SLIDE_KEY, (delta, first_firing)), total_state=state))


def test_late_data_of_one_key_revises_that_key_alone() -> None:
    state = _State()
    ((_, totals, revisions),) = _revise(state, _block({"a": [1, 0, 0], "b": [0, 2, 0]}), True)
    assert (totals.keys, totals.counts.tolist(), revisions) == (
        ["a", "b"],
        [[1, 0, 0], [0, 2, 0]],
        [0, 0],
    )
    ((_, totals, revisions),) = _revise(state, _block({"b": [1, 0, 1]}), False)
    assert (totals.keys, totals.counts.tolist(), revisions) == (["b"], [[1, 2, 1]], [1])
    ((_, totals, revisions),) = _revise(state, _block({"a": [0, 0, 4], "b": [1, 0, 0]}), False)
    assert totals.keys == ["a", "b"]
    assert (totals.counts.tolist(), revisions) == ([[1, 0, 4], [2, 2, 1]], [1, 2])


def test_a_key_first_seen_in_a_late_firing_is_its_revision_0() -> None:
    state = _State()
    _revise(state, _block({"a": [1, 0, 0]}), True)
    ((_, totals, revisions),) = _revise(state, _block({"c": [0, 0, 3]}), False)
    assert (totals.keys, totals.counts.tolist(), revisions) == (["c"], [[0, 0, 3]], [0])


def test_revise_does_not_change_the_delta_it_was_given() -> None:
    state = _State()
    first = _block({"a": [1, 0, 0]})
    _revise(state, first, True)
    _revise(state, _block({"a": [1, 1, 1]}), False)
    assert first.counts.tolist() == [[1, 0, 0]]
