"""Replay's stateless revision step: every window's one firing is revision 0, an empty firing
yields nothing, and a second (late) firing fails loudly instead of being numbered 0 again."""

from __future__ import annotations

import numpy as np
import pytest

from kldrift.transforms.revise import FirstFiring

WINDOW_START_US = 1_700_000_400 * 1_000_000  # 2023-11-14T22:20:00Z


def _fire(delta: np.ndarray | None, first_firing: bool) -> list:
    return list(FirstFiring().process((("model-a", WINDOW_START_US), (delta, first_firing))))


def test_a_first_firing_is_revision_0_with_its_counts() -> None:
    (((key, start), total, revision),) = _fire(np.array([3, 0, 1, 0, 0]), True)
    assert (key, start, revision) == ("model-a", WINDOW_START_US, 0)
    assert total.tolist() == [3, 0, 1, 0, 0]


@pytest.mark.parametrize("delta", [None, np.zeros(5, dtype=np.int64)])
def test_an_empty_firing_reports_nothing(delta: np.ndarray | None) -> None:
    assert _fire(delta, True) == [] and _fire(delta, False) == []


def test_a_second_firing_fails_naming_the_window() -> None:
    with pytest.raises(RuntimeError, match=r"2023-11-14T22:20:00Z of key 'model-a' fired again"):
        _fire(np.array([1, 0, 0, 0, 0]), False)
