"""Scoring's shortcuts around scipy give scipy's floats bit for bit: Benjamini-Hochberg q-values
on Python floats, top bins by a Python sort, ncx2.sf with no noncentrality. Replay output must
not change by a bit when a shortcut is taken."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import rel_entr
from scipy.stats import false_discovery_control, ncx2

from kldrift import divergence
from kldrift.scoring import bh_q_values


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
