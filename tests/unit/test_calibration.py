"""How often the drift flag is wrong, by seeded simulation: p-values calibrated at N ~ 80 (Williams'
correction), stationary windows flagged at most at `significance` under both rules, windows at or
below the threshold flagged at most at `significance` under `confident`, drifted windows flagged.

Windows and baselines are multinomial samples; each bound is a binomial one (3.5 standard errors
of the share over the windows simulated), so a seeded run fails only if the rule is off.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import chi2, chi2_contingency

from kldrift import divergence
from kldrift.power import drifted_distribution, flag_rates
from kldrift.schemas.config import DriftSpec

SIGNIFICANCE, THRESHOLD, SMOOTHING = 0.01, 0.05, 0.5
BASELINE_SIZE = 50_000
NINE_BINS = np.array([0.05, 0.1, 0.15, 0.2, 0.2, 0.15, 0.08, 0.05, 0.02])
# The small-N case: 5 bins, two of them with 3-7% of the mass.
FIVE_BINS = np.array([0.3, 0.3, 0.34, 0.03, 0.03])


def _slack(rate: float, windows: int) -> float:
    return 3.5 * math.sqrt(rate * (1 - rate) / windows)


def _scores(window: np.ndarray, baseline: np.ndarray, decision: str) -> divergence.Divergence:
    return divergence.score(
        window,
        baseline,
        smoothing=SMOOTHING,
        threshold_bits=THRESHOLD,
        significance=SIGNIFICANCE,
        labels=[f"b{i}" for i in range(len(baseline))],
        decision=decision,
    )


def test_p_values_are_calibrated_at_n_80_with_williams_correction() -> None:
    rng = np.random.default_rng(2026)
    windows, level = 20_000, 0.05
    corrected, plain = [], []
    for _ in range(windows):
        window = rng.multinomial(80, FIVE_BINS).astype(float)
        baseline = rng.multinomial(BASELINE_SIZE, FIVE_BINS).astype(float)
        corrected.append(divergence.g_test_p_value(window, baseline))
        occupied = (window + baseline) > 0
        table = np.array([window[occupied], baseline[occupied]])
        plain.append(chi2_contingency(table, correction=False, lambda_="log-likelihood").pvalue)
    share = np.mean(np.array(corrected) < level)
    uncorrected = np.mean(np.array(plain) < level)
    assert abs(share - level) <= _slack(level, windows), share
    # Without the correction the test rejects too often here (the issue measured 5.6-7.1%).
    assert uncorrected > level + _slack(level, windows) > share


@pytest.mark.parametrize("window_events", [80, 500, 5000])
def test_stationary_windows_are_flagged_at_most_at_the_significance(window_events: int) -> None:
    rng = np.random.default_rng(window_events)
    windows = 3000
    flagged = {"estimate": 0, "confident": 0}
    below = 0
    for _ in range(windows):
        window = rng.multinomial(window_events, NINE_BINS).astype(float)
        baseline = rng.multinomial(BASELINE_SIZE, NINE_BINS).astype(float)
        for rule in flagged:
            result = _scores(window, baseline, rule)
            flagged[rule] += result.drift
        below += result.p_value is not None and result.p_value < SIGNIFICANCE
    # The G-test alone rejects at its nominal rate (within the binomial bound)...
    assert abs(below / windows - SIGNIFICANCE) <= _slack(SIGNIFICANCE, windows)
    # ...and each rule flags no more often: estimate also needs the debiased KL above 0.05 bits.
    for rule, count in flagged.items():
        assert count / windows <= SIGNIFICANCE + _slack(SIGNIFICANCE, windows), rule


@pytest.mark.parametrize("kind", ["numeric", "categorical"])
@pytest.mark.parametrize("multiple", [0.8, 1.0])
@pytest.mark.parametrize("window_events", [80, 500, 5000])
def test_confident_flags_windows_at_or_below_the_threshold_at_most_at_the_significance(
    kind: str, multiple: float, window_events: int
) -> None:
    # numeric: a location tilt; categorical: mass into the rarest (last) bin, the case where a plain
    # noncentral chi-square rejected twice as often as it should.
    rng = np.random.default_rng(7 + window_events)
    windows = 6000
    baseline = rng.multinomial(BASELINE_SIZE, NINE_BINS).astype(float)
    q = divergence.baseline_probabilities(baseline, SMOOTHING)
    truth, _ = drifted_distribution(q, kind, multiple * THRESHOLD)
    assert divergence.kl_bits(truth, q) == pytest.approx(multiple * THRESHOLD, rel=1e-9)
    sample = rng.multinomial(window_events, truth, size=windows)
    spec = DriftSpec(
        smoothing=SMOOTHING,
        threshold_bits=THRESHOLD,
        significance=SIGNIFICANCE,
        decision="confident",
    )
    rate = flag_rates(sample, baseline, spec)["confident"].mean()
    assert rate <= SIGNIFICANCE + _slack(SIGNIFICANCE, windows)


def test_the_estimate_rule_flags_a_fifth_of_windows_just_below_the_threshold() -> None:
    # What `confident` is for: at 0.8 x threshold and N = 500, `estimate` flags many windows.
    rng = np.random.default_rng(80)
    baseline = rng.multinomial(BASELINE_SIZE, NINE_BINS).astype(float)
    q = divergence.baseline_probabilities(baseline, SMOOTHING)
    truth, _ = drifted_distribution(q, "numeric", 0.8 * THRESHOLD)
    sample = rng.multinomial(500, truth, size=4000)
    rates = flag_rates(sample, baseline, DriftSpec(threshold_bits=THRESHOLD))
    assert rates["estimate"].mean() > 0.1
    assert rates["confident"].mean() <= SIGNIFICANCE


@pytest.mark.parametrize("decision", ["estimate", "confident"])
def test_a_drifted_stream_is_flagged(decision: str) -> None:
    # Windows of 5,000 events whose true KL is 2 x threshold (0.1 bits): flagged nearly always.
    rng = np.random.default_rng(99)
    baseline = rng.multinomial(BASELINE_SIZE, NINE_BINS).astype(float)
    truth, _ = drifted_distribution(
        divergence.baseline_probabilities(baseline, SMOOTHING), "numeric", 2 * THRESHOLD
    )
    flagged = [
        _scores(rng.multinomial(5000, truth).astype(float), baseline, decision).drift
        for _ in range(300)
    ]
    assert np.mean(flagged) >= 0.97


def test_williams_correction_is_the_textbook_one_on_a_hand_worked_table() -> None:
    # README's worked example: G = 7.598, q = 1.014315, p = P(chi2_1 > G / q).
    g = chi2_contingency(
        np.array([[30, 10], [50, 50]]), correction=False, lambda_="log-likelihood"
    ).statistic
    q = 1 + (140 * (1 / 40 + 1 / 100) - 1) * (140 * (1 / 80 + 1 / 60) - 1) / (6 * 140)
    assert q == pytest.approx(1.014315, abs=1e-6)
    assert divergence.g_test_p_value([30, 10], [50, 50]) == pytest.approx(
        chi2.sf(g / q, 1), rel=1e-12
    )
