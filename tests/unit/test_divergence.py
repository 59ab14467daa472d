"""Tests for kldrift.divergence against scipy and hand-worked numbers."""

from __future__ import annotations

import math
import zlib
from decimal import Decimal, localcontext

import numpy as np
import pytest
from _oracle import expected_fields, williams
from scipy.optimize import brentq
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2, chi2_contingency, entropy

from kldrift import divergence
from kldrift.divergence import (
    Divergence,
    TopBin,
    baseline_probabilities,
    cross_entropy_bits,
    debias_kl_bits,
    entropy_bits,
    g_test_p_value,
    js_bits,
    kl_bits,
    psi,
    score,
)

LN2 = math.log(2.0)
ABS_TOL = 1e-12


def _histogram_case(name: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Seeded (window counts, baseline counts, smoothing) for one named situation."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    if name == "zeros_in_window":
        window = rng.poisson(3.0, 50).astype(float)
        window[::3] = 0.0
        return window, rng.poisson(40.0, 50).astype(float) + 1.0, 0.0
    if name == "zeros_in_baseline_smoothed":
        baseline = rng.poisson(20.0, 40).astype(float)
        baseline[::4] = 0.0
        return rng.poisson(10.0, 40).astype(float) + 1.0, baseline, 0.5
    if name == "one_bin":
        return np.array([17.0]), np.array([4.0]), 0.0
    if name == "two_bins":
        return np.array([13.0, 29.0]), np.array([410.0, 95.0]), 1.0
    if name == "5000_bins":
        return (
            rng.multinomial(200_000, rng.dirichlet(np.ones(5000))).astype(float),
            rng.multinomial(1_000_000, rng.dirichlet(np.ones(5000))).astype(float),
            0.5,
        )
    if name == "huge_counts":
        return (
            np.round(rng.dirichlet(np.ones(30)) * 1e12),
            np.round(rng.dirichlet(np.ones(30)) * 3e12),
            0.0,
        )
    raise AssertionError(name)


HISTOGRAM_CASES = [
    "zeros_in_window",
    "zeros_in_baseline_smoothed",
    "one_bin",
    "two_bins",
    "5000_bins",
    "huge_counts",
]


def _reference_p_q(name: str) -> tuple[np.ndarray, np.ndarray]:
    """P = c / N and Q = (b + a) / (M + B a), written out here rather than taken from the module."""
    window, baseline, smoothing = _histogram_case(name)
    p = window / window.sum()
    q = (baseline + smoothing) / (baseline.sum() + baseline.size * smoothing)
    return p, q


# --- information measures against scipy --------------------------------------------------------


@pytest.mark.parametrize("name", HISTOGRAM_CASES)
def test_kl_bits_matches_scipy_entropy(name: str) -> None:
    p, q = _reference_p_q(name)
    assert kl_bits(p, q) == pytest.approx(entropy(p, q, base=2), abs=ABS_TOL, rel=0)


@pytest.mark.parametrize("name", HISTOGRAM_CASES)
def test_entropy_bits_matches_scipy_entropy(name: str) -> None:
    p, _ = _reference_p_q(name)
    assert entropy_bits(p) == pytest.approx(entropy(p, base=2), abs=ABS_TOL, rel=0)


@pytest.mark.parametrize("name", HISTOGRAM_CASES)
def test_cross_entropy_bits_matches_scipy_entropy_sum(name: str) -> None:
    p, q = _reference_p_q(name)
    expected = entropy(p, base=2) + entropy(p, q, base=2)
    assert cross_entropy_bits(p, q) == pytest.approx(expected, abs=ABS_TOL, rel=0)


@pytest.mark.parametrize("name", HISTOGRAM_CASES)
def test_cross_entropy_is_entropy_plus_kl(name: str) -> None:
    p, q = _reference_p_q(name)
    assert cross_entropy_bits(p, q) == pytest.approx(
        entropy_bits(p) + kl_bits(p, q), abs=ABS_TOL, rel=0
    )


def test_baseline_probabilities_are_additively_smoothed() -> None:
    # b = [0, 2, 6], a = 1: q = [1, 3, 7] / (8 + 3) = [1/11, 3/11, 7/11]
    q = baseline_probabilities([0, 2, 6], smoothing=1.0)
    np.testing.assert_allclose(q, [1 / 11, 3 / 11, 7 / 11], rtol=0, atol=1e-15)


def test_kl_is_infinite_when_window_bin_is_missing_from_unsmoothed_baseline() -> None:
    p = np.array([0.5, 0.5, 0.0])
    q = np.array([0.0, 0.25, 0.75])
    assert entropy(p, q, base=2) == math.inf
    assert kl_bits(p, q) == math.inf
    assert cross_entropy_bits(p, q) == math.inf


@pytest.mark.parametrize("name", HISTOGRAM_CASES)
def test_js_bits_is_squared_scipy_jensenshannon(name: str) -> None:
    p, q = _reference_p_q(name)
    expected = jensenshannon(p, q, base=2) ** 2
    assert js_bits(p, q) == pytest.approx(expected, abs=ABS_TOL, rel=0)


def test_js_bits_of_disjoint_distributions_is_one_bit() -> None:
    assert js_bits([0.5, 0.5, 0.0, 0.0], [0.0, 0.0, 0.25, 0.75]) == pytest.approx(1.0, abs=1e-15)


# --- PSI -------------------------------------------------------------------------------------


def test_psi_hand_worked_without_smoothing() -> None:
    # c = [2, 1, 1] -> p' = [1/2, 1/4, 1/4];  b = [1, 1, 2] -> q = [1/4, 1/4, 1/2]
    # (1/2 - 1/4) ln 2 + 0 + (1/4 - 1/2) ln(1/2) = ln2/4 + ln2/4 = ln2/2 = 0.34657...
    assert psi([2, 1, 1], [1, 1, 2], smoothing=0.0) == pytest.approx(LN2 / 2, abs=1e-15)


def test_psi_hand_worked_with_smoothing() -> None:
    # a = 1: c = [3, 0, 1] -> p' = [4, 1, 2] / 7;  b = [1, 1, 2] -> q = [2, 2, 3] / 7
    # (2/7) ln 2 + (-1/7) ln(1/2) + (-1/7) ln(2/3) = (3/7) ln 2 + (1/7) ln(3/2) = 0.354987...
    expected = 3 / 7 * LN2 + 1 / 7 * math.log(1.5)
    assert psi([3, 0, 1], [1, 1, 2], smoothing=1.0) == pytest.approx(expected, abs=1e-15)


def test_psi_ignores_bins_empty_on_both_sides() -> None:
    # Same as the unsmoothed example plus a bin with c = b = 0, whose term is the limit 0.
    assert psi([2, 1, 1, 0], [1, 1, 2, 0], smoothing=0.0) == pytest.approx(LN2 / 2, abs=1e-15)


@pytest.mark.parametrize(
    ("window", "baseline"),
    [([1, 0, 1], [1, 1, 2]), ([1, 2, 1], [1, 1, 0])],
    ids=["empty_in_window", "empty_in_baseline"],
)
def test_psi_is_infinite_when_a_bin_is_empty_on_one_side(
    window: list[int], baseline: list[int]
) -> None:
    assert psi(window, baseline, smoothing=0.0) == math.inf


# --- debiasing -------------------------------------------------------------------------------


def test_debias_hand_worked() -> None:
    # c = [30, 10, 0], b = [20, 20, 0]: p = [3/4, 1/4, 0], q = [1/2, 1/2, 0]
    # KL = 3/4 log2(3/2) + 1/4 log2(1/2) = 0.438722 - 0.25 = 0.188722 bits
    # B_eff = 2 (the third bin is empty on both sides), N = M = 40
    # bias = (2 - 1) (1/40 + 1/40) / (2 ln 2) = 0.05 / 1.386294 = 0.036067 bits
    kl = 0.75 * math.log2(1.5) + 0.25 * math.log2(0.5)
    expected = kl - 0.05 / (2 * LN2)
    assert expected == pytest.approx(0.152655, abs=1e-6)
    assert debias_kl_bits(kl, [30, 10, 0], [20, 20, 0]) == pytest.approx(expected, abs=1e-15)


def test_debias_floors_at_zero() -> None:
    # c = [3, 1], b = [2, 2]: KL = 0.188722 bits < bias = (1/4 + 1/4) / (2 ln 2) = 0.360674 bits
    kl = 0.75 * math.log2(1.5) + 0.25 * math.log2(0.5)
    assert debias_kl_bits(kl, [3, 1], [2, 2]) == 0.0


def test_debias_removes_most_of_the_bias_of_same_distribution_samples() -> None:
    rng = np.random.default_rng(20240611)
    bins, window_size, repetitions = 20, 200, 2000
    baseline = rng.multinomial(1_000_000, rng.dirichlet(np.full(bins, 5.0))).astype(float)
    q = baseline / baseline.sum()
    plug_in, debiased = [], []
    for _ in range(repetitions):
        window = rng.multinomial(window_size, q)
        kl = entropy(window / window_size, q, base=2)
        plug_in.append(kl)
        debiased.append(debias_kl_bits(kl, window, baseline))
    expected_bias = (bins - 1) / (2 * window_size * LN2)  # 0.0685 bits
    # Observed over seeds: plug-in mean 1.03-1.04 x expected_bias; debiased mean 0.14-0.15 x plug-in
    # mean; what is left comes from the floor at 0 clipping the negative half of the sampling noise.
    assert 0.9 * expected_bias < np.mean(plug_in) < 1.15 * expected_bias
    assert 0.0 <= np.mean(debiased) < 0.2 * np.mean(plug_in)


# --- G-test ----------------------------------------------------------------------------------


def _scipy_g_test_p_value(window: np.ndarray, baseline: np.ndarray) -> float:
    """scipy's G (chi2_contingency, log-likelihood) divided by Williams' q, chi-square tail."""
    occupied = (window + baseline) > 0
    table = np.vstack((window[occupied], baseline[occupied]))
    if table.shape[1] < 2:
        return 1.0
    result = chi2_contingency(table, correction=False, lambda_="log-likelihood")
    return float(chi2.sf(result.statistic / williams(table), result.dof))


def test_g_test_p_value_matches_scipy_chi2_contingency() -> None:
    rng = np.random.default_rng(31337)
    compared = 0
    for _ in range(500):
        bins = int(rng.integers(2, 80))
        size = 10 ** rng.uniform(0.5, 5)
        window = rng.poisson(rng.dirichlet(np.ones(bins)) * size).astype(float)
        shifted = rng.dirichlet(np.ones(bins)) if rng.random() < 0.5 else None
        baseline_p = shifted if shifted is not None else window / max(window.sum(), 1)
        baseline = rng.poisson(baseline_p * size * rng.uniform(0.2, 20)).astype(float)
        if window.sum() == 0 or baseline.sum() == 0 or np.count_nonzero(window + baseline) < 2:
            continue
        expected = _scipy_g_test_p_value(window, baseline)
        assert g_test_p_value(window, baseline) == pytest.approx(expected, rel=1e-9, abs=1e-300)
        compared += 1
    assert compared > 400


@pytest.mark.parametrize(
    ("window", "baseline"),
    [([5], [9]), ([0, 5, 0], [0, 7, 0])],
    ids=["one_bin", "one_occupied_bin"],
)
def test_g_test_p_value_is_one_with_fewer_than_two_occupied_bins(
    window: list[int], baseline: list[int]
) -> None:
    assert _scipy_g_test_p_value(np.array(window), np.array(baseline)) == 1.0
    assert g_test_p_value(window, baseline) == 1.0


def _decimal_g_statistic(table: np.ndarray) -> float:
    """2 sum O ln(O / E) in 60-digit decimal arithmetic."""
    with localcontext() as context:
        context.prec = 60
        cells = [[Decimal(int(x)) for x in row] for row in table]
        rows = [sum(row) for row in cells]
        columns = [sum(column) for column in zip(*cells, strict=True)]
        total = sum(rows)
        g = Decimal(0)
        for i, row in enumerate(cells):
            for j, observed in enumerate(row):
                if observed > 0:
                    g += observed * (observed * total / (rows[i] * columns[j])).ln()
        return float(2 * g)


def test_g_test_p_value_is_accurate_for_huge_nearly_equal_counts() -> None:
    # With counts ~1e12 the G terms O ln(O/E) are ~1e7 each but G is ~1e2: naive summation (as in
    # scipy) loses ~6 digits here, the module's cancellation-free sum must not.
    rng = np.random.default_rng(99)
    bins = 10
    q = rng.dirichlet(np.ones(bins))
    baseline = np.round(q * 1e12)
    window = np.round(q * (1 + rng.normal(0, 2e-5, bins)) * 1e12)
    g = _decimal_g_statistic(np.vstack((window, baseline)))
    expected = chi2.sf(g, bins - 1)
    assert 1e-40 < expected < 1e-3
    assert g_test_p_value(window, baseline) == pytest.approx(expected, rel=1e-8, abs=0)


# --- score -----------------------------------------------------------------------------------


def _score(window: object, baseline: object, **overrides: object) -> Divergence:
    bins = len(np.atleast_1d(np.asarray(baseline)))
    options: dict[str, object] = {
        "smoothing": 0.5,
        "threshold_bits": 0.05,
        "significance": 0.01,
        "labels": [f"bin{i}" for i in range(bins)],
    }
    options.update(overrides)
    return score(window, baseline, **options)  # type: ignore[arg-type]


def test_score_fields_match_scipy_references() -> None:
    rng = np.random.default_rng(4242)
    baseline = rng.multinomial(50_000, rng.dirichlet(np.ones(300))).astype(float)
    window = rng.multinomial(3_000, rng.dirichlet(np.ones(300))).astype(float)
    p = window / window.sum()
    q = (baseline + 0.5) / (baseline.sum() + 300 * 0.5)
    result = _score(window, baseline)
    assert result.count == 3_000
    assert result.kl_bits == pytest.approx(entropy(p, q, base=2), abs=ABS_TOL, rel=0)
    assert result.entropy_bits == pytest.approx(entropy(p, base=2), abs=ABS_TOL, rel=0)
    assert result.js_bits == pytest.approx(jensenshannon(p, q, base=2) ** 2, abs=ABS_TOL, rel=0)
    assert result.p_value == pytest.approx(
        _scipy_g_test_p_value(window, baseline), rel=1e-9, abs=1e-300
    )


def test_score_of_empty_window_has_no_divergences() -> None:
    result = _score([0, 0, 0], [5, 1, 3])
    assert result == Divergence(
        count=0,
        kl_bits=None,
        kl_bits_debiased=None,
        entropy_bits=None,
        cross_entropy_bits=None,
        js_bits=None,
        psi=None,
        p_value=None,
        drift=False,
        top_bins=(),
    )


def test_score_flags_a_clear_shift() -> None:
    rng = np.random.default_rng(2024)
    baseline = rng.multinomial(100_000, np.full(20, 1 / 20))
    shifted = np.r_[np.full(5, 0.12), np.full(15, 0.4 / 15)]
    result = _score(rng.multinomial(2_000, shifted), baseline)
    assert result.kl_bits_debiased is not None and result.kl_bits_debiased > 0.05
    assert result.p_value is not None and result.p_value < 0.01
    assert result.drift


def test_score_does_not_flag_samples_of_the_baseline_distribution() -> None:
    rng = np.random.default_rng(2025)
    baseline = rng.multinomial(100_000, rng.dirichlet(np.full(20, 3.0)))
    q = baseline / baseline.sum()
    flagged = [_score(rng.multinomial(2_000, q), baseline).drift for _ in range(50)]
    assert not any(flagged)


def test_top_bins_hand_worked() -> None:
    # p = [1, 4, 3, 2] / 10, q = [4, 3, 2, 1] / 10 (no smoothing); p log2(p/q) per bin:
    #   a: 0.1 log2(1/4) = -0.2 (negative: left out)   b: 0.4 log2(4/3) = 0.166015
    #   c: 0.3 log2(3/2) = 0.175489                     d: 0.2 log2(2)   = 0.2
    result = _score([1, 4, 3, 2], [4, 3, 2, 1], smoothing=0.0, labels=["a", "b", "c", "d"])
    expected = [
        ("d", 0.2, 0.1, 0.2),
        ("c", 0.3, 0.2, 0.3 * math.log2(1.5)),
        ("b", 0.4, 0.3, 0.4 * math.log2(4 / 3)),
    ]
    assert all(isinstance(b, TopBin) for b in result.top_bins)
    assert [b.label for b in result.top_bins] == [label for label, *_ in expected]
    actual = [(b.window_p, b.baseline_q, b.contribution_bits) for b in result.top_bins]
    np.testing.assert_allclose(actual, [values for _, *values in expected], rtol=0, atol=1e-15)


def test_top_bins_break_ties_by_lower_bin_index_and_respect_top_n() -> None:
    # p = [0, 1/3, 1/3, 1/3], q = [1/4] * 4: bins 1..3 each contribute (1/3) log2(4/3).
    result = _score([0, 5, 5, 5], [3, 3, 3, 3], smoothing=0.0, labels=list("wxyz"), top_n=2)
    assert [b.label for b in result.top_bins] == ["x", "y"]
    assert result.top_bins[0].contribution_bits == pytest.approx(
        math.log2(4 / 3) / 3, rel=1e-14, abs=0
    )


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window", "baseline", "overrides", "argument"),
    [
        ([1, 2], [1, 2, 3], {}, "window_counts and baseline_counts"),
        ([], [], {}, "window_counts"),
        ([1, -1, 2], [1, 1, 1], {}, "window_counts"),
        ([1, 1, 2], [1, -1, 1], {}, "baseline_counts"),
        ([1, math.nan, 2], [1, 1, 1], {}, "window_counts"),
        ([1, 1, 2], [1, 1, math.nan], {}, "baseline_counts"),
        ([1, 1, 2], [0, 0, 0], {}, "baseline_counts"),
        ([1, 1, 2], [1, 1, 1], {"smoothing": -0.1}, "smoothing"),
        ([1, 1, 2], [1, 1, 1], {"labels": ["a", "b"]}, "labels"),
    ],
    ids=[
        "length_mismatch",
        "empty",
        "negative_window",
        "negative_baseline",
        "nan_window",
        "nan_baseline",
        "empty_baseline",
        "negative_smoothing",
        "labels_length",
    ],
)
def test_score_validation_error_names_the_argument(
    window: list[float], baseline: list[float], overrides: dict[str, object], argument: str
) -> None:
    with pytest.raises(ValueError, match=argument):
        _score(window, baseline, **overrides)


def test_debias_rejects_an_empty_baseline_by_name() -> None:
    with pytest.raises(ValueError, match="baseline_counts"):
        debias_kl_bits(0.1, [1, 2], [0, 0])


def test_kl_bits_rejects_mismatched_lengths_by_name() -> None:
    with pytest.raises(ValueError, match="p and q"):
        kl_bits([0.5, 0.5], [1.0])


def test_a_window_too_small_for_the_g_test_is_scored_but_never_flagged() -> None:
    # 8 values all in one of 10 equally likely bins: KL = log2(10) = 3.32 bits and the G-test (even
    # Williams-corrected) gives p < 1e-3, but the chi-square approximation needs about 5 values per bin (N >= 50).
    baseline = [1000] * 10
    small = [8] + [0] * 9
    p_small = _scipy_g_test_p_value(np.array(small, float), np.array(baseline, float))
    assert p_small < 1e-3
    scored = divergence.score(
        small, baseline, smoothing=0.0, threshold_bits=0.05, significance=0.01, labels=LABELS10
    )
    assert scored.kl_bits == pytest.approx(math.log2(10), abs=1e-12)
    assert scored.p_value == pytest.approx(p_small, rel=1e-9)
    assert not divergence.g_test_is_reliable(small, baseline) and not scored.drift
    large = [50] + [0] * 9  # N = 50 = 5 x 10 bins: flagged
    assert divergence.g_test_is_reliable(large, baseline)
    assert divergence.score(
        large, baseline, smoothing=0.0, threshold_bits=0.05, significance=0.01, labels=LABELS10
    ).drift


LABELS10 = [f"b{i}" for i in range(10)]


@pytest.mark.parametrize("n_bins", [2, 9, 10, 33, 1000])
def test_boundary_nulls_of_many_windows_equal_each_window_scored_alone(
    n_bins: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Score computes the minimum-effect test's null for a bundle's windows at once: every
    window must get the very floats (and so the very p_value_above_threshold) it gets alone,
    whatever block it falls in; windows without the test get None."""
    rng = np.random.default_rng(n_bins)
    baseline = rng.integers(0, 500, size=n_bins).astype(np.float64)
    baseline[0] += 1
    windows = [
        rng.multinomial(n, rng.dirichlet(np.ones(n_bins) * a)).astype(np.float64)
        for n, a in zip(
            rng.choice([1, 7, 40, 3000], size=60), rng.choice([0.2, 1, 20], size=60), strict=True
        )
    ]
    windows[5] = np.zeros(n_bins)  # empty: no test
    windows[6] = np.zeros(n_bins)
    windows[6][np.argmax(baseline)] = 3  # one occupied bin if the baseline has one: maybe a test
    # Small blocks, so windows fall in several blocks of several rows.
    monkeypatch.setattr(divergence, "_NULL_BLOCK", n_bins * 7)
    for threshold in (0.01, 0.3):
        together = divergence.boundary_nulls(windows, baseline, threshold)
        for window, null in zip(windows, together, strict=True):
            occupied = divergence._occupied_bins(window, baseline)
            if window.sum() == 0 or np.count_nonzero(occupied) < 2:
                assert null is None
                continue
            scale, noncentrality = divergence.above_threshold_null(window, baseline, threshold)
            assert null is not None
            assert (null[0], null[1]) == (float(scale[0]), float(noncentrality[0]))
            labels = [str(i) for i in range(n_bins)]
            options = {"smoothing": 0.5, "threshold_bits": threshold, "significance": 0.01}
            alone = divergence.score_window(window, baseline, labels=labels, **options)
            batched = divergence.score_window(
                window, baseline, labels=labels, boundary_null=null, **options
            )
            assert batched == alone
    assert divergence.boundary_nulls(windows, baseline, 0.0) == [None] * len(windows)
    assert divergence.boundary_nulls(windows, baseline, math.inf) == [None] * len(windows)


def _adversarial_windows() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(window counts, baseline counts) the boundary share's root finding could get wrong: nearly
    all mass in one bin, a window with empty bins (``f'(1)`` infinite), baseline bins of tiny
    ``q``, 1000 bins, 2 bins."""
    rng = np.random.default_rng(27)
    baseline = rng.integers(50, 500, 10).astype(np.float64)
    huge = np.array([1e9, 1e9, 0, 0, 3, 1e9, 0, 0, 0, 0], np.float64)
    baseline_1000 = rng.integers(0, 50, 1000).astype(np.float64)
    baseline_1000[0] += 1
    return {
        "one_bin": (np.array([1e6] + [0] * 8 + [1], np.float64), baseline),
        "one_bin_300": (np.array([300] + [0] * 8 + [1], np.float64), baseline),
        "empty_bins": (np.array([0, 0, 30, 0, 0, 0, 5, 0, 0, 0], np.float64), baseline),
        "tiny_q": (np.array([100, 100, 20, 7, 0, 90, 0, 0, 0, 0], np.float64), huge),
        "1000_bins": (
            rng.multinomial(3000, rng.dirichlet(np.ones(1000) * 0.1)).astype(np.float64),
            baseline_1000,
        ),
        "2_bins": (np.array([90, 10], np.float64), np.array([50, 50], np.float64)),
    }


ADVERSARIAL_WINDOWS = _adversarial_windows()

# Thresholds as fractions of the window's plug-in KL: the root near 1, in the middle, near 0, and
# tau so small that the root is ~1e-5 or below.
THRESHOLD_FRACTIONS = {
    "1-1e-12": 1 - 1e-12,
    "1-1e-6": 1 - 1e-6,
    "0.5": 0.5,
    "1e-3": 1e-3,
    "1e-9": 1e-9,
    "1e-14": 1e-14,
}


def _boundary_q_p(window: np.ndarray, baseline: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """README's boundary q = (b + 1/2) / (M + B_eff / 2) over the occupied bins (0 elsewhere)
    and p_hat = c / N, written out here."""
    occupied = (window + baseline) > 0
    q = np.where(occupied, (baseline + 0.5) / (baseline.sum() + 0.5 * occupied.sum()), 0.0)
    return q, window / window.sum()


def _reference_boundary_share(q: np.ndarray, p_hat: np.ndarray, tau: float) -> float:
    """The s with KL((1 - s) q + s p_hat || q) = tau for these float q and p_hat: brentq on the
    gap summed in 50-digit decimals (so rounding in the sum does not move the root)."""
    pairs = [
        (Decimal(qi), Decimal(pi))
        for qi, pi in zip(q.tolist(), p_hat.tolist(), strict=True)
        if qi > 0
    ]

    def gap(s: float) -> float:
        with localcontext() as context:
            context.prec = 50
            share = Decimal(s)
            total = Decimal(0)
            for qi, pi in pairs:
                m = (1 - share) * qi + share * pi
                if m > 0:
                    total += m * (m / qi).ln()
            return float(total - Decimal(tau))

    eps = float(np.finfo(np.float64).eps)
    return float(brentq(gap, 0.0, 1.0, xtol=1e-300, rtol=4 * eps, maxiter=500))


def _adversarial_cases() -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    cases = []
    for name, (window, baseline) in ADVERSARIAL_WINDOWS.items():
        q, p_hat = _boundary_q_p(window, baseline)
        observed_bits = float(entropy(p_hat, q, base=2))
        for label, fraction in THRESHOLD_FRACTIONS.items():
            cases.append((f"{name}@{label}", window, baseline, observed_bits * fraction))
    return cases


ADVERSARIAL_CASES = _adversarial_cases()


@pytest.fixture(scope="module")
def adversarial_roots() -> dict[str, float]:
    roots = {}
    for name, window, baseline, threshold_bits in ADVERSARIAL_CASES:
        q, p_hat = _boundary_q_p(window, baseline)
        roots[name] = _reference_boundary_share(q, p_hat, threshold_bits * LN2)
    return roots


@pytest.mark.parametrize("case", ADVERSARIAL_CASES, ids=[case[0] for case in ADVERSARIAL_CASES])
def test_boundary_share_is_the_root_as_closely_as_its_divergence_in_floats_can_tell(
    case: tuple[str, np.ndarray, np.ndarray, float], adversarial_roots: dict[str, float]
) -> None:
    """Newton's share is the root of KL((1 - s) q + s p_hat || q) = tau to a few ulps, except
    where the float sum of the divergence cannot tell (tau ~ 1e-12 nats and below: its terms
    of size s |p - q| cancel to ~s^2): there within 4 ulps of that sum's magnitude over f'."""
    name, window, baseline, threshold_bits = case
    q, p_hat = _boundary_q_p(window, baseline)
    tau = threshold_bits * LN2
    root = adversarial_roots[name]
    share = divergence._boundary_shares(q[None, :], p_hat[None, :], tau)[0]
    assert 0 < root < 1
    assert abs(share - root) <= _root_error_bound(q, p_hat, root)
    if tau >= 1e-6:
        assert share == pytest.approx(root, rel=2e-15)


def _root_error_bound(q: np.ndarray, p_hat: np.ndarray, root: float) -> float:
    """How far from `root` a share can be found with the divergence summed in floats: 4 ulps of
    the share, plus 4 ulps of the sum's magnitude (its terms' absolute values) over f'(root)."""
    mixed = (1 - root) * q + root * p_hat
    log_ratio = np.log(np.divide(mixed, q, where=q > 0, out=np.ones_like(q)))
    magnitude = float(np.sum(np.abs(mixed * log_ratio)))
    slope = float(np.sum((p_hat - q) * log_ratio))
    eps = float(np.finfo(np.float64).eps)
    return 4 * eps * root + 4 * eps * magnitude / slope


def test_boundary_share_of_random_windows_is_the_root() -> None:
    """Windows of 2 to 50 bins, 2 to 5,000 events, baselines with empty bins, thresholds from
    just below the plug-in KL to 1e-4 of it: each share within `_root_error_bound`."""
    rng = np.random.default_rng(2027)
    checked = 0
    for _ in range(150):
        bins = int(rng.choice([2, 3, 10, 50]))
        baseline = rng.integers(0, 300, bins).astype(np.float64) * (rng.random(bins) < 0.8)
        baseline[0] += 1
        shape = np.ones(bins) * rng.choice([0.1, 1.0, 10.0])
        events = int(rng.choice([2, 7, 100, 5000]))
        window = rng.multinomial(events, rng.dirichlet(shape)).astype(np.float64)
        q, p_hat = _boundary_q_p(window, baseline)
        tau = float(entropy(p_hat, q)) * float(rng.choice([0.999, 0.5, 0.1, 1e-4]))
        if not tau > 0:
            continue
        root = _reference_boundary_share(q, p_hat, tau)
        share = divergence._boundary_shares(q[None, :], p_hat[None, :], tau)[0]
        assert abs(share - root) <= _root_error_bound(q, p_hat, root)
        checked += 1
    assert checked > 100


def test_boundary_shares_of_adversarial_rows_together_equal_each_row_alone() -> None:
    """Rows whose roots lie near 0, in the middle and near 1, stopping after different numbers of
    steps, in one call: each row's share has the bits it has alone."""
    rows = [
        _boundary_q_p(window, baseline)
        for window, baseline in ADVERSARIAL_WINDOWS.values()
        if window.size == 10
    ]
    q, p_hat = np.array([row[0] for row in rows]), np.array([row[1] for row in rows])
    observed = np.array([entropy(p, q_row) for q_row, p in rows])
    for tau in (1e-14, 1e-6, 1e-2, *(observed * (1 - 1e-9))):
        beyond = observed > tau
        together = divergence._boundary_shares(q[beyond], p_hat[beyond], tau)
        alone = [
            divergence._boundary_shares(q[i : i + 1], p_hat[i : i + 1], tau)[0]
            for i in np.flatnonzero(beyond)
        ]
        assert len(alone) >= 1 and together.tolist() == alone


@pytest.mark.parametrize("case", ADVERSARIAL_CASES, ids=[case[0] for case in ADVERSARIAL_CASES])
def test_minimum_effect_p_value_of_adversarial_windows_matches_the_oracle(
    case: tuple[str, np.ndarray, np.ndarray, float],
) -> None:
    """tests/_oracle.py's minimum-effect test (brentq for the boundary share) to 1e-9."""
    _, window, baseline, threshold_bits = case
    expected = expected_fields(window, baseline, smoothing=0.5, threshold=threshold_bits)
    assert divergence.p_value_above_threshold(window, baseline, threshold_bits) == pytest.approx(
        expected["p_value_above_threshold"], rel=1e-9, abs=1e-300
    )


DIVERGENCE_FIELDS = (
    "kl_bits",
    "kl_bits_debiased",
    "entropy_bits",
    "cross_entropy_bits",
    "js_bits",
    "psi",
)
P_VALUE_FIELDS = ("p_value", "p_value_above_threshold", "missing_p_value")


def _random_windows(
    rng: np.random.Generator, n_bins: int, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """A baseline with some empty bins and windows of every kind Score meets: empty, one occupied
    bin, a few events over many bins, many events, bins the baseline never saw."""
    baseline = rng.integers(0, 400, size=n_bins) * (rng.random(n_bins) < 0.8)
    baseline[0] += 1
    windows = np.stack(
        [
            rng.multinomial(n, rng.dirichlet(np.ones(n_bins) * a))
            for n, a in zip(
                rng.choice([0, 1, 7, 40, 400, 30_000], size=count),
                rng.choice([0.2, 1.0, 20.0], size=count),
                strict=True,
            )
        ]
    )
    windows[1] = 0
    windows[1][0] = 9  # one occupied bin if the baseline has only bin 0 there
    return windows.astype(np.float64), baseline.astype(np.float64)


@pytest.mark.parametrize("n_bins", [1, 2, 9, 33, 300])
@pytest.mark.parametrize("decision", ["estimate", "confident"])
def test_windows_scored_together_equal_each_window_scored_alone(
    n_bins: int, decision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Score scores a bundle's windows of one feature as one windows x bins array: every field
    of every window must be what `score_window` gives that window alone (to rounding: 1e-12
    relative for divergences, 1e-9 for p-values), decisions and top bins the same."""
    rng = np.random.default_rng(100 + n_bins)
    monkeypatch.setattr(divergence, "_NULL_BLOCK", n_bins * 7)  # several blocks of windows
    labels = [f"b{i}" for i in range(n_bins)]
    verdicts = set()
    for trial in range(6):
        windows, baseline = _random_windows(rng, n_bins, 40)
        unusable = rng.integers(0, 30, size=len(windows)) * (rng.random(len(windows)) < 0.5)
        options = {
            "smoothing": (0.0, 0.5)[trial % 2],
            "threshold_bits": (0.05, 0.0, 0.3, math.inf, 0.01, 0.05)[trial],
            "significance": 0.01,
            "labels": labels,
            "top_n": (5, 0, 3, 5, 1, 40)[trial],
            "decision": decision,
            "baseline_unusable": (None, 0, 25)[trial % 3],
        }
        together = divergence.score_windows(
            windows, baseline, divergence.WindowsOptions(**options), unusable.astype(np.int64)
        )
        assert len(together) == len(windows)
        for window, window_unusable, batched in zip(windows, unusable, together, strict=True):
            alone = divergence.score_window(
                window, baseline, window_unusable=int(window_unusable), **options
            )
            for field in DIVERGENCE_FIELDS + P_VALUE_FIELDS:
                value, expected = getattr(batched, field), getattr(alone, field)
                if expected is None or math.isinf(expected):
                    assert value == expected, field
                else:
                    rel = 1e-12 if field in DIVERGENCE_FIELDS else 1e-9
                    assert value == pytest.approx(expected, rel=rel, abs=1e-300), field
            assert (batched.count, batched.drift, batched.missing_drift) == (
                alone.count,
                alone.drift,
                alone.missing_drift,
            )
            assert [t.label for t in batched.top_bins] == [t.label for t in alone.top_bins]
            for top, top_alone in zip(batched.top_bins, alone.top_bins, strict=True):
                assert (top.window_p, top.baseline_q) == (top_alone.window_p, top_alone.baseline_q)
                assert top.contribution_bits == pytest.approx(top_alone.contribution_bits, 1e-12)
            verdicts.add(alone.drift)
    if n_bins > 1:
        assert verdicts == {True, False}  # both outcomes occur: the comparison bites
