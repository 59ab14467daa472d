"""Scoring's shortcuts around scipy give scipy's floats bit for bit: Benjamini-Hochberg q-values
for many windows at once, top bins by one sort, ncx2.sf with no noncentrality, the Cauchy
combination of many windows at once. Replay output must not change by a bit when a shortcut is
taken."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import rel_entr
from scipy.stats import false_discovery_control, ncx2

from kldrift import divergence
from kldrift.scoring import (
    P_CAP,
    bh_q_value_rows,
    bh_q_values,
    cauchy_combined_p_value,
    cauchy_combined_p_values,
)


def _p_value_sets() -> list[list[float]]:
    rng = np.random.default_rng(17)
    sets: list[list[float]] = [[0.5], [0.0, 1.0], [1.0, 1.0, 1.0], [0.01, 0.01, 0.02]]
    for trial in range(4000):
        m = int(rng.integers(2, 12))
        if trial % 3 == 0:
            ps = rng.random(m)
        elif trial % 3 == 1:  # ties, the ends of [0, 1], tiny values
            ps = rng.choice([0.0, 1.0, 0.5, 1e-300, 0.01, 0.02], m)
        else:
            ps = 10 ** (-rng.random(m) * 20)
        sets.append([float(p) for p in ps])
    return sets


def test_q_values_are_scipys_benjamini_hochberg_to_the_bit() -> None:
    for ps in _p_value_sets():
        expected = np.atleast_1d(false_discovery_control(ps, method="bh"))
        got = bh_q_values(ps)
        assert [float(q).hex() for q in expected] == [q.hex() for q in got if q is not None], ps


def test_q_values_skip_missing_p_values_and_keep_their_places() -> None:
    expected = false_discovery_control([0.01, 0.04], method="bh")
    assert bh_q_values([None, 0.01, None, 0.04]) == [None, expected[0], None, expected[1]]
    assert bh_q_values([None, None]) == [None, None]
    assert bh_q_values([]) == []


def test_q_values_refuse_a_p_value_outside_zero_one_like_scipy() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        bh_q_values([0.2, float("nan")])
    with pytest.raises(ValueError, match="between 0 and 1"):
        bh_q_values([0.2, 1.5])


def test_top_bins_are_the_largest_contributions_ties_to_the_lower_bin() -> None:
    rng = np.random.default_rng(3)
    for _ in range(2000):
        bins = int(rng.integers(1, 40))
        window = rng.integers(0, 4, bins).astype(float)
        window[0] += 1.0
        baseline = rng.integers(0, 3, bins).astype(float) + float(rng.random() < 0.5)
        baseline[-1] += 1.0
        smoothing = float(rng.choice([0.0, 0.5]))
        top_n = int(rng.integers(0, 7))
        labels = [f"b{i}" for i in range(bins)]
        d = divergence.score(
            window,
            baseline,
            smoothing=smoothing,
            threshold_bits=0.05,
            significance=0.01,
            labels=labels,
            top_n=top_n,
        )
        # Independently: every positive p log2(p / q), largest first, the lower bin on ties.
        p = window / window.sum()
        q = (baseline + smoothing) / (baseline.sum() + bins * smoothing)
        contributions = rel_entr(p, q) / np.log(2)
        expected = sorted(
            (i for i in range(bins) if contributions[i] > 0), key=lambda i: (-contributions[i], i)
        )[:top_n]
        assert [t.label for t in d.top_bins] == [labels[i] for i in expected]
        assert [t.contribution_bits for t in d.top_bins] == pytest.approx(
            [contributions[i] for i in expected], rel=1e-12
        )


def test_ncx2_sf_without_noncentrality_is_scipys() -> None:
    rng = np.random.default_rng(5)
    for _ in range(5000):
        x, df = float(rng.random() * 60), int(rng.integers(1, 40))
        for nc in (0.0, float(rng.random() * 10)):
            assert divergence._ncx2_sf(x, df, nc).hex() == float(ncx2.sf(x, df, nc)).hex()


def _p_value_rows(rng: np.random.Generator, tests: int) -> tuple[np.ndarray, np.ndarray]:
    """200 windows x `tests` p-values (uniform, tiny, ties, 0 and 1), some of them absent."""
    kinds = [
        rng.random((200, tests)),
        10 ** (-rng.random((200, tests)) * 20),
        rng.choice([0.0, 1.0, 0.5, 1e-300, 0.01, 0.02], (200, tests)),
    ]
    ps = np.where(rng.random((200, tests)) < 0.5, kinds[0], kinds[int(rng.integers(1, 3))])
    present = rng.random((200, tests)) < rng.choice([1.0, 0.8, 0.3])
    present[0], present[1:3] = False, True  # a window with none, windows with all
    return np.where(present, ps, np.nan), present


@pytest.mark.parametrize("tests", [1, 2, 5, 9, 20])
def test_q_values_of_many_windows_are_scipys_row_by_row_to_the_bit(tests: int) -> None:
    rng = np.random.default_rng(tests)
    for _ in range(20):
        ps, present = _p_value_rows(rng, tests)
        rows = bh_q_value_rows(ps, present)
        for row, p_row, kept in zip(rows, ps, present, strict=True):
            assert np.isnan(row[~kept]).all()
            if kept.any():
                expected = np.atleast_1d(false_discovery_control(p_row[kept], method="bh"))
                assert [q.hex() for q in expected.tolist()] == [q.hex() for q in row[kept]]


def _cauchy_written_out(p_values: list[float]) -> float:
    """Liu and Xie's combination as cauchy_combined_p_value computed it for one window alone
    before it was computed for many (numpy's 1-D mean), kept here as the reference."""
    ps = np.asarray(p_values, dtype=np.float64)
    if np.any(ps == 0.0):
        return 0.0
    statistic = float(np.mean(1.0 / np.tan(np.minimum(ps, P_CAP) * math.pi)))
    if statistic > 0:
        return math.atan(1.0 / statistic) / math.pi
    return 0.5 - math.atan(statistic) / math.pi


@pytest.mark.parametrize("tests", [1, 2, 5, 9, 20])
def test_cauchy_combination_of_many_windows_is_each_window_s_alone_to_the_bit(tests: int) -> None:
    rng = np.random.default_rng(100 + tests)
    for _ in range(10):
        ps, present = _p_value_rows(rng, tests)
        combined = cauchy_combined_p_values(ps, present)
        for value, p_row, kept in zip(combined, ps, present, strict=True):
            if not kept.any():
                assert value is None
                continue
            expected = _cauchy_written_out(p_row[kept].tolist())
            assert value is not None and value.hex() == expected.hex()
            assert cauchy_combined_p_value(p_row[kept].tolist()) == value
