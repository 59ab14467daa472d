"""Divergence of a window histogram from a baseline histogram, in bits.

Pure numpy/scipy scoring used by the drift detector: KL, entropy, JS, PSI, a G-test and top bins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import chdtrc, entr, rel_entr, xlogy
from scipy.stats import ncx2

try:  # the ufunc behind ncx2.sf (scipy >= 1.14); without it every call takes ncx2.sf
    from scipy.special._ufuncs import _ncx2_sf as _ncx2_sf_ufunc
except ImportError:  # pragma: no cover - other scipy versions
    _ncx2_sf_ufunc = None

__all__ = [
    "DECISIONS",
    "Divergence",
    "DriftStatistics",
    "TopBin",
    "TopBinColumns",
    "WindowScores",
    "WindowsOptions",
    "above_threshold_null",
    "baseline_probabilities",
    "boundary_nulls",
    "cross_entropy_bits",
    "debias_kl_bits",
    "drift_statistics",
    "entropy_bits",
    "g_test_p_value",
    "js_bits",
    "kl_bits",
    "missing_share_p_value",
    "p_value_above_threshold",
    "psi",
    "score",
    "score_window",
    "score_windows",
    "window_scores",
]

_LN2 = math.log(2.0)

DECISIONS = ("estimate", "confident")
"""How `drift` is decided: `estimate` = debiased KL above the threshold and G-test p below the
significance; `confident` = the minimum-effect test's p (H0: KL <= threshold) below the
significance."""

Counts = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class TopBin:
    """One bin's share of the KL divergence.

    Attributes
    ----------
    label : str
        The bin's label.
    window_p : float
        Probability of the bin in the window, ``c_i / N``.
    baseline_q : float
        Smoothed probability of the bin in the baseline.
    contribution_bits : float
        ``p_i * log2(p_i / q_i)``; positive, ``inf`` when ``q_i == 0``.
    """

    label: str
    window_p: float
    baseline_q: float
    contribution_bits: float


@dataclass(frozen=True, slots=True)
class Divergence:
    """Scores of one window against its baseline.

    Every divergence is ``None`` when the window is empty (``count == 0``).

    Attributes
    ----------
    count : int
        Number of observations in the window, ``N``.
    kl_bits : float or None
        Plug-in ``KL(P || Q)`` in bits.
    kl_bits_debiased : float or None
        ``kl_bits`` minus its expected sampling bias, floored at 0.
    entropy_bits : float or None
        ``H(P)`` in bits.
    cross_entropy_bits : float or None
        ``H(P, Q)`` in bits.
    js_bits : float or None
        Jensen-Shannon divergence of ``P`` and ``Q`` in bits.
    psi : float or None
        Population stability index (natural log, unitless).
    p_value : float or None
        G-test of homogeneity of the window and baseline counts (Williams-corrected).
    drift : bool
        The decision rule's verdict (``decision``; see ``score``).
    top_bins : tuple of TopBin
        Bins contributing most to ``kl_bits``, largest first.
    p_value_above_threshold : float or None
        Minimum-effect test of H0: ``KL <= threshold_bits`` (see ``p_value_above_threshold``).
    missing_p_value : float or None
        Two-proportion test of the window's share of missing or invalid values against the
        baseline's; None when unknown.
    missing_drift : bool
        The share of missing or invalid values rose with ``missing_p_value < significance``.
    """

    count: int
    kl_bits: float | None
    kl_bits_debiased: float | None
    entropy_bits: float | None
    cross_entropy_bits: float | None
    js_bits: float | None
    psi: float | None
    p_value: float | None
    drift: bool
    top_bins: tuple[TopBin, ...]
    p_value_above_threshold: float | None = None
    missing_p_value: float | None = None
    missing_drift: bool = False


# --- validation -------------------------------------------------------------------------------


def _as_histogram(values: ArrayLike, name: str) -> Counts:
    """Return ``values`` as a 1-D float64 array of finite, non-negative numbers."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite (no NaN or inf)")
    if np.any(array < 0):
        raise ValueError(f"{name} must not contain negative values")
    return array


def _as_histogram_pair(
    first: ArrayLike, second: ArrayLike, first_name: str, second_name: str
) -> tuple[Counts, Counts]:
    """Validate two histograms over the same bins."""
    a = _as_histogram(first, first_name)
    b = _as_histogram(second, second_name)
    if a.size != b.size:
        raise ValueError(
            f"{first_name} and {second_name} must have the same length, got {a.size} and {b.size}"
        )
    return a, b


def _as_counts(window_counts: ArrayLike, baseline_counts: ArrayLike) -> tuple[Counts, Counts]:
    """Validate window and baseline counts; the baseline must not be empty."""
    window, baseline = _as_histogram_pair(
        window_counts, baseline_counts, "window_counts", "baseline_counts"
    )
    _check_baseline_total(baseline)
    return window, baseline


def _check_baseline_total(baseline: Counts) -> None:
    if not baseline.sum() > 0:
        raise ValueError("baseline_counts must have a positive total (M > 0)")


def _check_window_total(window: Counts) -> None:
    if not window.sum() > 0:
        raise ValueError("window_counts must have a positive total (N > 0)")


def _check_smoothing(smoothing: float) -> None:
    if not (math.isfinite(smoothing) and smoothing >= 0):
        raise ValueError(f"smoothing must be a finite number >= 0, got {smoothing!r}")


# --- probabilities and information measures ---------------------------------------------------


def _smoothed_probabilities(counts: Counts, smoothing: float) -> Counts:
    return (counts + smoothing) / (counts.sum() + counts.size * smoothing)


def baseline_probabilities(baseline_counts: ArrayLike, smoothing: float) -> Counts:
    """Additively smoothed baseline distribution ``q = (b + a) / (M + B a)``.

    Parameters
    ----------
    baseline_counts : array_like
        Baseline counts ``b`` over ``B`` bins; non-negative with a positive total ``M``.
    smoothing : float
        Pseudo-count ``a >= 0`` added to every bin. With ``a == 0`` bins never seen in the
        baseline get ``q == 0``.

    Returns
    -------
    numpy.ndarray
        ``q``, float64, sums to 1.

    Raises
    ------
    ValueError
        If the counts are invalid or sum to 0, or ``smoothing`` is negative.

    Examples
    --------
    Counts 3 and 1 with one pseudo-count each: ``(3 + 1) / (4 + 2)`` and ``(1 + 1) / (4 + 2)``.

    >>> baseline_probabilities([3, 1], smoothing=1.0).round(4).tolist()
    [0.6667, 0.3333]
    >>> baseline_probabilities([3, 1], smoothing=0.0).tolist()
    [0.75, 0.25]
    """
    baseline = _as_histogram(baseline_counts, "baseline_counts")
    _check_baseline_total(baseline)
    _check_smoothing(smoothing)
    return _smoothed_probabilities(baseline, smoothing)


def _kl_contributions_bits(p: Counts, q: Counts) -> Counts:
    """Per-bin ``p log2(p / q)``: 0 where ``p == 0``, ``inf`` where ``p > 0 == q``."""
    return np.asarray(rel_entr(p, q), dtype=np.float64) / _LN2


def _kl_bits(p: Counts, q: Counts) -> float:
    return float(np.sum(rel_entr(p, q)) / _LN2)


def kl_bits(p: ArrayLike, q: ArrayLike) -> float:
    """Kullback-Leibler divergence ``KL(P || Q) = sum p log2(p / q)`` in bits.

    Bins with ``p == 0`` contribute 0.

    Parameters
    ----------
    p, q : array_like
        Probability vectors over the same bins.

    Returns
    -------
    float
        Divergence in bits; ``math.inf`` if some bin has ``p > 0`` and ``q == 0`` (possible
        only when the baseline was not smoothed).

    Examples
    --------
    ``0.5 log2(0.5 / 0.25) + 0.5 log2(0.5 / 0.75) = 0.5 + 0.5 log2(2 / 3) = 1 - log2(3) / 2``:

    >>> round(kl_bits([0.5, 0.5], [0.25, 0.75]), 6)
    0.207519
    >>> kl_bits([0.5, 0.5], [0.5, 0.5]), kl_bits([0.5, 0.5], [1.0, 0.0])
    (0.0, inf)
    """
    p_arr, q_arr = _as_histogram_pair(p, q, "p", "q")
    return _kl_bits(p_arr, q_arr)


def _entropy_bits(p: Counts) -> float:
    return float(np.sum(entr(p)) / _LN2)


def entropy_bits(p: ArrayLike) -> float:
    """Shannon entropy ``H(P) = -sum p log2 p`` in bits, over bins with ``p > 0``.

    Parameters
    ----------
    p : array_like
        Probability vector.

    Returns
    -------
    float
        Entropy in bits.

    Examples
    --------
    ``-(0.5 log2 0.5 + 2 * 0.25 log2 0.25) = 0.5 + 1``:

    >>> entropy_bits([0.5, 0.25, 0.25])
    1.5
    """
    return _entropy_bits(_as_histogram(p, "p"))


def _cross_entropy_bits(p: Counts, q: Counts) -> float:
    return float(-np.sum(xlogy(p, q)) / _LN2)


def cross_entropy_bits(p: ArrayLike, q: ArrayLike) -> float:
    """Cross-entropy ``H(P, Q) = -sum p log2 q`` in bits, over bins with ``p > 0``.

    Equals ``entropy_bits(p) + kl_bits(p, q)`` up to rounding.

    Parameters
    ----------
    p, q : array_like
        Probability vectors over the same bins.

    Returns
    -------
    float
        Cross-entropy in bits; ``math.inf`` if some bin has ``p > 0`` and ``q == 0``.
    """
    p_arr, q_arr = _as_histogram_pair(p, q, "p", "q")
    return _cross_entropy_bits(p_arr, q_arr)


def _js_bits(p: Counts, q: Counts) -> float:
    m = 0.5 * (p + q)
    nats = 0.5 * (np.sum(rel_entr(p, m)) + np.sum(rel_entr(q, m)))
    return max(0.0, float(nats / _LN2))


def js_bits(p: ArrayLike, q: ArrayLike) -> float:
    """Jensen-Shannon divergence ``(KL(P || M) + KL(Q || M)) / 2``, ``M = (P + Q) / 2``, in bits.

    It is symmetric, always finite and lies in ``[0, 1]``.

    Parameters
    ----------
    p, q : array_like
        Probability vectors over the same bins.

    Returns
    -------
    float
        Divergence in bits (the square of scipy's Jensen-Shannon *distance* with base 2).

    Examples
    --------
    Disjoint distributions are 1 bit apart; identical ones 0.

    >>> js_bits([1.0, 0.0], [0.0, 1.0]), js_bits([0.3, 0.7], [0.3, 0.7])
    (1.0, 0.0)
    """
    p_arr, q_arr = _as_histogram_pair(p, q, "p", "q")
    return _js_bits(p_arr, q_arr)


def _psi(window: Counts, q: Counts, smoothing: float) -> float:
    p = _smoothed_probabilities(window, smoothing)
    seen = (p > 0) | (q > 0)
    p, q = p[seen], q[seen]
    with np.errstate(divide="ignore"):
        terms = (p - q) * np.log(p / q)
    return float(np.sum(terms))


def psi(window_counts: ArrayLike, baseline_counts: ArrayLike, smoothing: float) -> float:
    """Population stability index ``sum (p' - q) ln(p' / q)`` (natural log, unitless).

    Both sides are smoothed alike: ``p' = (c + a) / (N + B a)``, ``q = (b + a) / (M + B a)``.

    Parameters
    ----------
    window_counts, baseline_counts : array_like
        Counts over the same bins; both must have a positive total.
    smoothing : float
        Pseudo-count ``a >= 0`` added to every bin of both histograms.

    Returns
    -------
    float
        The index. Bins empty on both sides contribute 0 (the limit); a bin empty on exactly one
        side makes it ``math.inf``. Each term is non-negative.

    Examples
    --------
    60/40 against 50/50: ``0.1 ln(0.6 / 0.5) + (-0.1) ln(0.4 / 0.5) = 0.1 ln 1.5``.

    >>> round(psi([60, 40], [50, 50], smoothing=0.0), 6)
    0.040547
    """
    window, baseline = _as_counts(window_counts, baseline_counts)
    _check_window_total(window)
    _check_smoothing(smoothing)
    return _psi(window, _smoothed_probabilities(baseline, smoothing), smoothing)


# --- sampling bias and significance -----------------------------------------------------------


def _occupied_bins(window: Counts, baseline: Counts) -> NDArray[np.bool_]:
    return (window + baseline) > 0


def _kl_bias_bits(occupied_bins: int, window_total: float, baseline_total: float) -> float:
    return (occupied_bins - 1) * (1.0 / window_total + 1.0 / baseline_total) / (2.0 * _LN2)


def debias_kl_bits(kl_bits: float, window_counts: ArrayLike, baseline_counts: ArrayLike) -> float:
    """Subtract the expected sampling bias from a plug-in KL estimate, flooring at 0.

    The plug-in ``KL(P_hat || Q_hat)`` of two samples from the *same* distribution is not 0:
    to second order ``2 ln(2) N M / (N + M) * KL`` is the G statistic, chi-squared with
    ``B_eff - 1`` degrees of freedom, so the plug-in estimate is biased upwards by about
    ``(B_eff - 1) (1/N + 1/M) / (2 ln 2)`` bits (the Miller-Madow correction, applied to both
    samples). ``B_eff`` is the number of bins with ``c + b > 0``.

    Parameters
    ----------
    kl_bits : float
        Plug-in KL divergence of the window from the baseline, in bits.
    window_counts, baseline_counts : array_like
        The counts the estimate came from; both must have a positive total.

    Returns
    -------
    float
        ``max(0, kl_bits - bias)``; ``inf`` stays ``inf``.

    Raises
    ------
    ValueError
        If either total is 0 (``baseline_counts`` with ``M == 0`` is not a baseline).

    Examples
    --------
    Two occupied bins, N = 100 window events, M = 200 baseline events: the bias is
    ``(2 - 1) (1/100 + 1/200) / (2 ln 2) = 0.010820`` bits.

    >>> round(debias_kl_bits(0.1, [50, 50], [100, 100]), 6)
    0.08918
    >>> debias_kl_bits(0.005, [50, 50], [100, 100])  # below the bias: floored
    0.0
    """
    window, baseline = _as_counts(window_counts, baseline_counts)
    _check_window_total(window)
    occupied = int(np.count_nonzero(_occupied_bins(window, baseline)))
    return _debias(kl_bits, occupied, float(window.sum()), float(baseline.sum()))


def _debias(kl: float, occupied: int, window_total: float, baseline_total: float) -> float:
    return max(0.0, kl - _kl_bias_bits(occupied, window_total, baseline_total))


def _g_statistic(table: Counts) -> float:
    """``G = 2 sum O ln(O / E)`` of a contingency table, summed without cancellation.

    Because ``sum O == sum E``, each term is rewritten as ``O ln(O/E) - (O - E) >= 0`` and the
    logarithm is taken with ``log1p`` on ``(O - E) / E``: this keeps ``G`` accurate when the
    counts are huge and ``O`` is close to ``E``.
    """
    row_totals = table.sum(axis=1, keepdims=True)
    column_totals = table.sum(axis=0, keepdims=True)
    expected = row_totals * column_totals / table.sum()
    excess = table - expected
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = table * np.log1p(excess / expected) - excess
    terms = np.where(table > 0, terms, expected)
    return float(2.0 * np.sum(terms))


def _williams_q(table: Counts) -> float:
    """Williams' correction ``q`` of an ``R x C`` table: ``G / q`` follows chi-square more closely
    when expected counts are small (Williams 1976; Sokal and Rohlf, Biometry, 17.2):
    ``q = 1 + (T sum 1/r_i - 1)(T sum 1/c_j - 1) / (6 T (R - 1)(C - 1))``, T the table total,
    r, c the row and column totals (all positive here). It tends to 1 as counts grow."""
    total = float(table.sum())
    rows, columns = table.shape
    row_term = total * float(np.sum(1.0 / table.sum(axis=1))) - 1.0
    column_term = total * float(np.sum(1.0 / table.sum(axis=0))) - 1.0
    return 1.0 + row_term * column_term / (6.0 * total * (rows - 1) * (columns - 1))


def _corrected_g(window: Counts, baseline: Counts, occupied: NDArray[np.bool_]) -> float:
    """Williams-corrected G of the ``2 x B_eff`` table ``[c; b]`` over the occupied bins."""
    table = np.vstack((window[occupied], baseline[occupied]))
    return _g_statistic(table) / _williams_q(table)


def _g_test_p_value(window: Counts, baseline: Counts, occupied: NDArray[np.bool_]) -> float:
    degrees_of_freedom = int(np.count_nonzero(occupied)) - 1
    if degrees_of_freedom < 1:
        return 1.0
    return _g_p_value(degrees_of_freedom, _corrected_g(window, baseline, occupied))


def _g_p_value(degrees_of_freedom: int, g: float) -> float:
    return float(chdtrc(degrees_of_freedom, g))


def above_threshold_null(
    window: NDArray[np.float64],
    baseline: NDArray[np.float64],
    threshold_bits: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The null distribution of the corrected G at the boundary KL = threshold, per row of
    ``window`` (rows are windows over the same bins as ``baseline``): G ~ scale x noncentral
    chi-square(B_eff - 1, noncentrality). Returns (scale, noncentrality), each one per row.

    To second order in P - Q, G is noncentral chi-square with noncentrality
    ``2 N_eff KL`` (nats), ``N_eff = N M / (N + M)``; its variance ``2 df + 8 N_eff KL`` assumes
    ``Var_P[ln(p/q)] = 2 KL``. Drift into a rare bin has a larger variance, so that test rejects
    too often at the boundary (measured: 2% at a nominal 1%). The boundary point in the window's
    direction, ``P_t = (1 - s) q + s p_hat`` with ``KL(P_t || q) = threshold``
    (``q = (b + 1/2) / (M + B_eff / 2)`` over occupied bins), gives the variance
    ``V = Var_P_t[ln(P_t / q)]``; G's mean ``mu = df + 2 N_eff threshold`` and variance
    ``2 df + 4 N_eff V`` are then matched by ``scale x chi'^2(df, nc)`` with ``scale >= 1`` (never
    narrower than the plain noncentral chi-square). A window whose plug-in KL is below the
    threshold keeps scale 1.
    """
    c = np.atleast_2d(np.asarray(window, dtype=np.float64))
    b = np.asarray(baseline, dtype=np.float64)[None, :]
    n = c.sum(axis=1)
    m = float(b.sum())
    occupied = (c + b) > 0
    dof = np.maximum(occupied.sum(axis=1) - 1, 1).astype(np.float64)
    effective = n * m / (n + m)
    tau = max(threshold_bits, 0.0) * _LN2
    mean = dof + 2.0 * effective * tau
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(occupied, (b + 0.5) / (m + 0.5 * occupied.sum(axis=1, keepdims=True)), 0.0)
        p_hat = c / n[:, None]
        observed = np.sum(rel_entr(p_hat, q), axis=1)
        beyond = observed > tau
        if tau <= 0 or not beyond.any():
            # Every row keeps scale 1: the boundary point's variance is not needed.
            return np.ones(len(n)), np.maximum(mean - dof, 0.0)
        # s in (0, 1) with KL((1 - s) q + s p_hat || q) = tau, for the rows beyond tau (the
        # others keep scale 1 whatever s is).
        if beyond.all():
            high = _boundary_shares(q, p_hat, tau)
        else:
            high = np.ones(len(n))
            rows_beyond = np.flatnonzero(beyond)
            high[rows_beyond] = _boundary_shares(q[rows_beyond], p_hat[rows_beyond], tau)
        mixed = (1.0 - high[:, None]) * q + high[:, None] * p_hat
        log_ratio = np.where(mixed > 0, np.log(mixed / q), 0.0)
    first = np.sum(mixed * log_ratio, axis=1)
    variance_of_log = np.maximum(np.sum(mixed * log_ratio**2, axis=1) - first**2, 0.0)
    variance = 2.0 * dof + 4.0 * effective * variance_of_log
    # scale a, noncentrality l with a (dof + l) = mean and 2 a^2 (dof + 2 l) = variance:
    # 2 dof a^2 - 4 mean a + variance = 0, the root that is 1 when variance = 4 mean - 2 dof.
    discriminant = np.maximum(16.0 * mean**2 - 8.0 * dof * variance, 0.0)
    scale = (4.0 * mean - np.sqrt(discriminant)) / (4.0 * dof)
    scale = np.where(beyond & (tau > 0), np.maximum(scale, 1.0), 1.0)
    noncentrality = np.maximum(mean / scale - dof, 0.0)
    return scale, noncentrality


_SHARE_TOLERANCE = 4.0 * np.finfo(np.float64).eps
"""`_boundary_shares` stops a row when its Newton step is at most this relative to its share."""

_SHARE_STEPS = 100
"""`_boundary_shares`' most steps per row (it takes about five; bisection alone would bring a
share above 1e-15 within a few ulps in 100)."""


def _boundary_shares(
    q: NDArray[np.float64], p_hat: NDArray[np.float64], tau: float
) -> NDArray[np.float64]:
    """Per row, the share s in (0, 1) with ``f(s) = KL((1 - s) q + s p_hat || q) = tau``, for rows
    with ``f(1) > tau`` (q zero only where p_hat is: the bins no one saw).

    With ``d = p_hat - q`` and ``r = ln(m / q) = log1p(s d / q)``, ``m = (1 - s) q + s p_hat``:
    ``f(s) = sum q r + s sum d r`` and ``f'(s) = sum d r + sum d``. ``f`` is convex and increasing
    on [0, 1] with ``f(0) = f'(0) = 0``: a Newton step from any point lands at or right of the
    root, and from the right it falls to the root quadratically, never past it. A row starts at
    ``sqrt(2 tau / chi2)`` (``chi2 = f''(0)``) and takes Newton steps, bisecting its bracket
    [low, high] instead when a step would leave it (``f'(1)`` is infinite when p_hat has an empty
    bin). It stops when its step is at most `_SHARE_TOLERANCE` of its share (and takes it), or
    when a Newton step from the right crossed the root, or would cross a point left of it: then
    rounding in ``f`` decides the side, and the share is as close to the root as ``f`` in floats
    can tell. A row's operations depend on that row alone (rows that stopped leave the arrays),
    so a row gets the same bits alone or among others."""
    rows = len(q)
    base = np.where(q > 0, q, 1.0)  # in the bins no one saw q = 1 (and d = 0): terms of exactly 0
    slope = p_hat - q
    ratio = slope / base
    slope_total = np.asarray(np.einsum("ij->i", slope), dtype=np.float64)
    shares = np.ones(rows)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        share = np.minimum(np.sqrt(2.0 * tau / _row_dots(slope, ratio)), 0.5)
        share = np.where(share > 0.0, share, 0.5)
        low: Counts = np.zeros(rows)
        high: Counts = np.ones(rows)
        from_right: NDArray[np.bool_] = np.zeros(rows, np.bool_)  # a Newton step from the right
        live: NDArray[np.bool_] = np.ones(rows, np.bool_)
        index: NDArray[np.intp] = np.arange(rows)
        scratch = np.empty_like(q)
        for _ in range(_SHARE_STEPS):
            value, derivative = _share_gap(base, slope, ratio, slope_total, share, tau, scratch)
            newton = share - value / derivative
            above = value > 0.0
            tiny = np.abs(newton - share) <= _SHARE_TOLERANCE * share
            done = live & (tiny | (from_right & ~above) | (above & (newton <= low)))
            shares[index[done]] = np.where(tiny, newton, share)[done]
            live &= ~done
            remaining = np.count_nonzero(live)
            if remaining == 0:
                return shares
            np.copyto(high, share, where=above)
            np.copyto(low, share, where=~above)
            inside = (newton > low) & (newton < high)
            from_right = above & inside
            share = np.where(inside, newton, 0.5 * (low + high))
            if remaining <= len(live) // 2:  # the rows that stopped leave the arrays
                keep = live
                index, live, from_right = index[keep], live[keep], from_right[keep]
                share, low, high, slope_total = (
                    share[keep],
                    low[keep],
                    high[keep],
                    slope_total[keep],
                )
                base, slope, ratio = base[keep], slope[keep], ratio[keep]
    shares[index[live]] = high[live]
    return shares


def _share_gap(
    base: Counts,
    slope: Counts,
    ratio: Counts,
    slope_total: Counts,
    share: Counts,
    tau: float,
    scratch: Counts,
) -> tuple[Counts, Counts]:
    """`_boundary_shares`' ``f(s) - tau`` and ``f'(s)`` of each row at its `share`; `scratch`
    (at least as many rows) holds ``r``."""
    log_ratio = scratch[: len(share)]
    np.multiply(ratio, share[:, None], out=log_ratio)
    np.log1p(log_ratio, out=log_ratio)
    slope_part = _row_dots(slope, log_ratio)
    return _row_dots(base, log_ratio) + share * slope_part - tau, slope_part + slope_total


def _row_dots(a: Counts, b: Counts) -> Counts:
    """``sum(a * b, axis=1)`` of two C-contiguous arrays: einsum's loop over each row's bins, the
    same bits for a row whatever the rows around it."""
    return np.asarray(np.einsum("ij,ij->i", a, b), dtype=np.float64)


def _p_above_threshold(
    window: Counts,
    baseline: Counts,
    occupied: NDArray[np.bool_],
    threshold_bits: float,
    g: float | None = None,
    boundary_null: BoundaryNull | None = None,
) -> float:
    """`g`: the corrected G of (window, baseline), when the caller has it already;
    `boundary_null`: this window's row of `above_threshold_null`, when the caller computed it
    for many windows at once (`boundary_nulls`)."""
    degrees_of_freedom = int(np.count_nonzero(occupied)) - 1
    if degrees_of_freedom < 1 or threshold_bits == math.inf:
        return 1.0
    if g is None:
        g = _corrected_g(window, baseline, occupied)
    if threshold_bits <= 0:
        return float(chdtrc(degrees_of_freedom, g))
    if boundary_null is None:
        scales, noncentralities = above_threshold_null(window, baseline, threshold_bits)
        boundary_null = (float(scales[0]), float(noncentralities[0]))
    scale, noncentrality = boundary_null
    return _ncx2_sf(g / scale, degrees_of_freedom, noncentrality)


BoundaryNull = tuple[float, float]
"""One window's (scale, noncentrality) from `above_threshold_null`."""

_NULL_BLOCK = 1 << 18
"""Elements (windows x bins) per `above_threshold_null` call in `boundary_nulls`: the boundary
share's temporaries stay a few MB whatever the number of windows."""


def boundary_nulls(
    windows: ArrayLike, baseline: Counts, threshold_bits: float
) -> list[BoundaryNull | None]:
    """`above_threshold_null` for many windows (rows of counts over the same bins as `baseline`)
    at once (its Newton steps then cost a few numpy calls per block of windows, not per window), for
    the windows whose minimum-effect test needs it (a positive total, two occupied bins or more,
    a finite threshold above 0); None for the others. Each row gives the same floats as a call
    for that window alone: the rows are reduced one by one along the bins
    (tests/unit/test_divergence.py checks this)."""
    rows = np.asarray(windows, dtype=np.float64).reshape(-1, baseline.size)
    if not (0.0 < threshold_bits < math.inf):
        return [None] * len(rows)
    occupied = np.count_nonzero(_occupied_bins(rows, baseline), axis=1)
    needed = (rows.sum(axis=1) > 0) & (occupied >= 2)
    scales, noncentralities = _boundary_null_rows(rows, baseline, threshold_bits, needed)
    return [
        (scale, noncentrality) if need else None
        for need, scale, noncentrality in zip(
            needed.tolist(), scales.tolist(), noncentralities.tolist(), strict=True
        )
    ]


def _boundary_null_rows(
    rows: Counts, baseline: Counts, threshold_bits: float, needed: NDArray[np.bool_]
) -> tuple[Counts, Counts]:
    """(scale, noncentrality) of `above_threshold_null` for the `needed` rows, a block of rows
    per call (the boundary share's temporaries stay a few MB); scale 1 and noncentrality 0 for the
    others."""
    scales, noncentralities = np.ones(len(rows)), np.zeros(len(rows))
    indices = np.flatnonzero(needed)
    rows_per_block = max(1, _NULL_BLOCK // max(baseline.size, 1))
    for first in range(0, len(indices), rows_per_block):
        block = indices[first : first + rows_per_block]
        scales[block], noncentralities[block] = above_threshold_null(
            rows[block], baseline, threshold_bits
        )
    return scales, noncentralities


def _ncx2_sf(x: float, df: int, nc: float) -> float:
    """`ncx2.sf(x, df, nc)`: inside the support with nc > 0, straight from the ufunc that
    ncx2.sf ends in (the same value, without rv_continuous's per-call argument handling, which
    was most of a report's scoring time); anything else through ncx2.sf."""
    if _ncx2_sf_ufunc is not None and df > 0 and 0.0 < nc < math.inf and 0.0 < x < math.inf:
        with np.errstate(over="ignore"):
            return float(_ncx2_sf_ufunc(x, df, nc))
    if df > 0 and nc == 0.0 and 0.0 < x < math.inf:
        return float(chdtrc(df, x))  # what ncx2.sf computes for nc == 0 (chi2.sf)
    return float(ncx2.sf(x, df, nc))


def p_value_above_threshold(
    window_counts: ArrayLike, baseline_counts: ArrayLike, threshold_bits: float
) -> float:
    """P-value of the minimum-effect test H0: ``KL(P || Q) <= threshold_bits``.

    The Williams-corrected G of the ``2 x B_eff`` table ``[c; b]`` is compared with G's
    distribution when the true divergence equals the threshold (the least favourable point of
    H0): a noncentral chi-square of ``B_eff - 1`` degrees of freedom and noncentrality
    ``2 ln2 N_eff threshold_bits``, ``N_eff = N M / (N + M)``, widened to the variance of the
    boundary point in the window's direction (``above_threshold_null``). A small value says the
    window's divergence is above the threshold, not merely above 0. With
    ``threshold_bits == 0`` it equals ``g_test_p_value``.

    Parameters
    ----------
    window_counts, baseline_counts : array_like
        Counts over the same bins; both must have a positive total.
    threshold_bits : float
        The divergence H0 allows, bits (>= 0).

    Returns
    -------
    float
        The p-value; 1.0 when fewer than two bins are occupied.

    Examples
    --------
    A window of 90/10 against a 50/50 baseline: its plug-in KL is 0.531 bits, far above 0
    (``threshold_bits=0`` is the G-test) and above 0.2 bits at the 1% level, but not shown to be
    above 0.5 bits by 100 events.

    >>> w, b = [90, 10], [50, 50]
    >>> p_value_above_threshold(w, b, 0.0) == g_test_p_value(w, b)
    True
    >>> p_value_above_threshold(w, b, 0.2) < 0.01, p_value_above_threshold(w, b, 0.5) > 0.05
    (True, True)
    """
    window, baseline = _as_counts(window_counts, baseline_counts)
    _check_window_total(window)
    if not (math.isfinite(threshold_bits) and threshold_bits >= 0):
        raise ValueError(f"threshold_bits must be a finite number >= 0, got {threshold_bits!r}")
    return _p_above_threshold(window, baseline, _occupied_bins(window, baseline), threshold_bits)


def missing_share_p_value(
    window_unusable: int, window_events: int, baseline_unusable: int, baseline_events: int
) -> float:
    """Two-proportion test (Williams-corrected G-test of the 2 x 2 table) of the share of
    missing or invalid values in the window against the baseline's; 1.0 when neither has any.

    Parameters
    ----------
    window_unusable, baseline_unusable : int
        Missing plus invalid values.
    window_events, baseline_events : int
        All events (binned + missing + invalid); both positive.
    """
    for name, value in (("window_events", window_events), ("baseline_events", baseline_events)):
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {value!r}")
    for name, part, whole in (
        ("window_unusable", window_unusable, window_events),
        ("baseline_unusable", baseline_unusable, baseline_events),
    ):
        if not 0 <= part <= whole:
            raise ValueError(f"{name} must be between 0 and its events, got {part!r}")
    table = np.array(
        [
            [window_events - window_unusable, window_unusable],
            [baseline_events - baseline_unusable, baseline_unusable],
        ],
        dtype=np.float64,
    )
    if table[:, 0].sum() == 0 or table[:, 1].sum() == 0:
        return 1.0
    return float(chdtrc(1, _g_statistic(table) / _williams_q(table)))


MIN_MEAN_EXPECTED = 5.0
"""The G-test's chi-square approximation is trusted when the window's mean expected count per
occupied bin, N / B_eff, is at least this (the average-expected-frequency guideline of Roscoe and
Byars; Cochran's stricter every-bin rule would silence windows over tail bins the baseline rarely
fills)."""


def g_test_is_reliable(window_counts: ArrayLike, baseline_counts: ArrayLike) -> bool:
    """Whether the window is large enough for its G-test p-value: N >= 5 x B_eff. Below that (a
    small window over many bins, e.g. a partial first window) the p-value is too small and a
    window could be flagged without drift."""
    window, baseline = _as_counts(window_counts, baseline_counts)
    return _g_test_reliable(window, baseline, _occupied_bins(window, baseline))


def _g_test_reliable(window: Counts, baseline: Counts, occupied: NDArray[np.bool_]) -> bool:
    return bool(float(window.sum()) >= MIN_MEAN_EXPECTED * int(np.count_nonzero(occupied)))


def g_test_p_value(window_counts: ArrayLike, baseline_counts: ArrayLike) -> float:
    """P-value of the G-test of homogeneity of window and baseline counts.

    The test runs on the ``2 x B_eff`` table ``[c; b]`` of the bins with ``c + b > 0``, with
    ``B_eff - 1`` degrees of freedom. G is divided by Williams' correction ``q`` (``_williams_q``),
    which keeps the p-value calibrated when expected counts are small (N ~ 80); without it,
    ``scipy.stats.chi2_contingency(table, correction=False, lambda_="log-likelihood")`` gives G.

    Parameters
    ----------
    window_counts, baseline_counts : array_like
        Counts over the same bins; both must have a positive total.

    Returns
    -------
    float
        The p-value; 1.0 when fewer than two bins are occupied.

    Examples
    --------
    The same proportions in window and baseline give G = 0, so p = 1; 90/10 against 50/50 is
    far from homogeneous.

    >>> g_test_p_value([10, 10], [20, 20])
    1.0
    >>> g_test_p_value([90, 10], [50, 50]) < 1e-9
    True
    >>> g_test_p_value([7, 0], [5, 0])  # one occupied bin: nothing to test
    1.0
    """
    window, baseline = _as_counts(window_counts, baseline_counts)
    _check_window_total(window)
    return _g_test_p_value(window, baseline, _occupied_bins(window, baseline))


# --- top bins ---------------------------------------------------------------------------------


def _top_bin_indices(contributions: Counts, top_n: int) -> list[int]:
    """Indices of the ``top_n`` largest positive contributions; ties go to the lower index.

    A stable sort of Python floats: numpy's argsort and partition release the GIL even for a
    handful of bins, and a busy pipeline worker then waits to get it back."""
    if top_n <= 0:
        return []
    values = contributions.tolist()
    candidates = [i for i, value in enumerate(values) if value > 0]
    return sorted(candidates, key=lambda i: -values[i])[:top_n]


def _top_bins(
    p: Counts, q: Counts, contributions: Counts, labels: Sequence[str], top_n: int
) -> tuple[TopBin, ...]:
    return tuple(
        TopBin(
            label=labels[i],
            window_p=float(p[i]),
            baseline_q=float(q[i]),
            contribution_bits=float(contributions[i]),
        )
        for i in _top_bin_indices(contributions, top_n)
    )


# --- scoring ----------------------------------------------------------------------------------


def _check_score_options(
    bins: int,
    threshold_bits: float,
    significance: float,
    labels: Sequence[str],
    top_n: int,
    decision: str,
) -> None:
    if math.isnan(threshold_bits):
        raise ValueError("threshold_bits must not be NaN")
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    if not 0.0 <= significance <= 1.0:
        raise ValueError(f"significance must be in [0, 1], got {significance!r}")
    if len(labels) != bins:
        raise ValueError(f"labels must have one entry per bin ({bins}), got {len(labels)}")
    if top_n < 0:
        raise ValueError(f"top_n must be >= 0, got {top_n!r}")


def _empty_window(missing_p: float | None, missing_drift: bool) -> Divergence:
    return Divergence(
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
        missing_p_value=missing_p,
        missing_drift=missing_drift,
    )


def _missing_test(
    window_unusable: int,
    window_total: float,
    baseline_unusable: int | None,
    baseline_total: float,
    significance: float,
) -> tuple[float | None, bool]:
    """(p-value, flag) of the missing-or-invalid share against the baseline's."""
    window_events = round(window_total) + window_unusable
    if baseline_unusable is None or window_events == 0:
        return None, False
    baseline_events = round(baseline_total) + baseline_unusable
    p = missing_share_p_value(window_unusable, window_events, baseline_unusable, baseline_events)
    rose = window_unusable * baseline_events > baseline_unusable * window_events
    return p, bool(rose and p < significance)


def score(
    window_counts: ArrayLike,
    baseline_counts: ArrayLike,
    *,
    smoothing: float,
    threshold_bits: float,
    significance: float,
    labels: Sequence[str],
    top_n: int = 5,
    decision: str = "estimate",
    window_unusable: int = 0,
    baseline_unusable: int | None = None,
) -> Divergence:
    """Score a window histogram against a baseline histogram.

    Parameters
    ----------
    window_counts : array_like
        Window counts ``c`` over ``B`` bins, ``N = sum(c)``; ``P = c / N``.
    baseline_counts : array_like
        Baseline counts ``b`` over the same bins, with ``M = sum(b) > 0``.
    smoothing : float
        Pseudo-count ``a >= 0`` for the baseline, ``Q = (b + a) / (M + B a)``. With ``a == 0``
        a window bin never seen in the baseline makes KL and cross-entropy ``inf``.
    threshold_bits : float
        Drift needs ``kl_bits_debiased`` above this.
    significance : float
        Drift needs the decision's p-value below this, and the test's approximation to hold
        (``g_test_is_reliable``: at least 5 values per occupied bin on average).
    labels : sequence of str
        One label per bin, used in ``top_bins``.
    top_n : int, default 5
        Maximum number of ``top_bins``.
    decision : {"estimate", "confident"}, default "estimate"
        ``estimate``: drift when ``kl_bits_debiased > threshold_bits`` and
        ``p_value < significance``; ``confident``: drift when
        ``p_value_above_threshold < significance`` (H0: KL <= threshold rejected).
    window_unusable : int, default 0
        The window's missing plus invalid values (not in ``window_counts``).
    baseline_unusable : int or None, default None
        The baseline's missing plus invalid values; None skips the missing-share test.

    Returns
    -------
    Divergence
        All measures; divergences are ``None`` and ``drift`` is False for an empty window.

    Raises
    ------
    ValueError
        On invalid counts, smoothing, significance, labels or ``top_n``; the message names the
        argument.

    Examples
    --------
    >>> d = score([300, 100], [200, 200], smoothing=0.0, threshold_bits=0.05,
    ...           significance=0.01, labels=["cat", "dog"])
    >>> round(d.kl_bits, 4), round(d.kl_bits_debiased, 4), d.p_value < 1e-10, d.drift
    (0.1887, 0.1851, True, True)
    >>> [b.label for b in d.top_bins]
    ['cat']
    """
    window, baseline = _as_counts(window_counts, baseline_counts)
    return score_window(
        window,
        baseline,
        smoothing=smoothing,
        threshold_bits=threshold_bits,
        significance=significance,
        labels=labels,
        top_n=top_n,
        decision=decision,
        window_unusable=window_unusable,
        baseline_unusable=baseline_unusable,
    )


def score_window(
    window: Counts,
    baseline: Counts,
    *,
    smoothing: float,
    threshold_bits: float,
    significance: float,
    labels: Sequence[str],
    top_n: int = 5,
    decision: str = "estimate",
    window_unusable: int = 0,
    baseline_unusable: int | None = None,
    boundary_null: BoundaryNull | None = None,
) -> Divergence:
    """``score`` for count arrays already known good, as a pipeline's are: ``window`` and
    ``baseline`` 1-D float64 over the same bins, finite and non-negative, the baseline's total
    positive. The arrays are not checked again (that was a tenth of a window's scoring); the
    options are. ``boundary_null``: this window's entry of ``boundary_nulls`` (same arrays,
    same threshold), computed for many windows at once; None computes it here."""
    _check_smoothing(smoothing)
    _check_score_options(window.size, threshold_bits, significance, labels, top_n, decision)
    window_total = float(window.sum())
    missing_p, missing_drift = _missing_test(
        window_unusable, window_total, baseline_unusable, float(baseline.sum()), significance
    )
    if window_total == 0:
        return _empty_window(missing_p, missing_drift)

    p = window / window_total
    q = _smoothed_probabilities(baseline, smoothing)
    contributions = _kl_contributions_bits(p, q)
    kl = float(np.sum(contributions))
    occupied = _occupied_bins(window, baseline)
    occupied_count = int(np.count_nonzero(occupied))
    debiased = _debias(kl, occupied_count, window_total, float(baseline.sum()))
    # One corrected G for both tests.
    g = _corrected_g(window, baseline, occupied) if occupied_count >= 2 else None
    p_value = 1.0 if g is None else _g_p_value(occupied_count - 1, g)
    p_above = _p_above_threshold(window, baseline, occupied, threshold_bits, g, boundary_null)
    if decision == "confident":
        decided = p_above < significance
    else:
        decided = debiased > threshold_bits and p_value < significance
    return Divergence(
        count=round(window_total),
        kl_bits=kl,
        kl_bits_debiased=debiased,
        entropy_bits=_entropy_bits(p),
        cross_entropy_bits=_cross_entropy_bits(p, q),
        js_bits=_js_bits(p, q),
        psi=_psi(window, q, smoothing),
        p_value=p_value,
        drift=decided and _g_test_reliable(window, baseline, occupied),
        top_bins=_top_bins(p, q, contributions, labels, top_n),
        p_value_above_threshold=p_above,
        missing_p_value=missing_p,
        missing_drift=missing_drift,
    )


# --- many windows at once ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DriftStatistics:
    """What the drift decision takes, for many windows over the same bins (rows of counts, each
    with a positive total) at once: one entry per window. The statistics of `score_window`,
    computed over a (windows x bins) array.

    Attributes
    ----------
    totals : numpy.ndarray
        ``N`` per window.
    p : numpy.ndarray
        ``c / N``, windows x bins.
    contributions_bits : numpy.ndarray
        ``p log2(p / q)``, windows x bins.
    kl_bits, kl_bits_debiased, p_value, p_value_above_threshold : numpy.ndarray
        As in `Divergence`.
    reliable : numpy.ndarray of bool
        The G-test's approximation holds (``g_test_is_reliable``).
    """

    totals: Counts
    p: Counts
    contributions_bits: Counts
    kl_bits: Counts
    kl_bits_debiased: Counts
    p_value: Counts
    p_value_above_threshold: Counts
    reliable: NDArray[np.bool_]

    def drift(self, decision: str, threshold_bits: float, significance: float) -> NDArray[np.bool_]:
        """Each window's verdict under `decision` (see `score`)."""
        if decision == "confident":
            decided = self.p_value_above_threshold < significance
        else:
            decided = (self.kl_bits_debiased > threshold_bits) & (self.p_value < significance)
        return decided & self.reliable


def drift_statistics(
    windows: Counts, baseline: Counts, q: Counts, threshold_bits: float
) -> DriftStatistics:
    """`DriftStatistics` of the rows of `windows` (float64, each row's total positive) against
    `baseline` (its total positive), `q` the smoothed baseline (`baseline_probabilities`)."""
    totals = windows.sum(axis=1)
    p = windows / totals[:, None]
    contributions = _kl_contributions_bits(p, q[None, :])
    kl = contributions.sum(axis=1)
    occupied = np.count_nonzero(_occupied_bins(windows, baseline), axis=1)
    bias = _kl_bias_bits(occupied, totals, float(baseline.sum()))
    g = _corrected_g_rows(windows, baseline)
    testable = occupied >= 2
    degrees_of_freedom = np.maximum(occupied - 1, 1)
    p_value = np.where(testable, chdtrc(degrees_of_freedom, g), 1.0)
    return DriftStatistics(
        totals=totals,
        p=p,
        contributions_bits=contributions,
        kl_bits=kl,
        kl_bits_debiased=np.maximum(0.0, kl - bias),
        p_value=p_value,
        p_value_above_threshold=_p_above_threshold_rows(
            windows, baseline, g, degrees_of_freedom, testable, threshold_bits
        ),
        reliable=totals >= MIN_MEAN_EXPECTED * occupied,
    )


def _corrected_g_rows(windows: Counts, baseline: Counts) -> Counts:
    """Williams-corrected G of each row's ``2 x B_eff`` table ``[c; b]`` (`_g_statistic` /
    `_williams_q` of each row's table, the unoccupied bins masked instead of dropped). Rows need
    a positive total; a row with fewer than two occupied bins gets a G no test uses."""
    window_totals = windows.sum(axis=1, keepdims=True)
    baseline_total = float(baseline.sum())
    table_totals = window_totals + baseline_total
    columns = windows + baseline[None, :]
    occupied = columns > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = _g_terms(windows, window_totals * columns / table_totals) + _g_terms(
            baseline[None, :], baseline_total * columns / table_totals
        )
        g = 2.0 * np.where(occupied, terms, 0.0).sum(axis=1)
        inverse_columns = np.where(occupied, 1.0 / columns, 0.0).sum(axis=1)
    totals = table_totals[:, 0]
    row_term = totals * (1.0 / window_totals[:, 0] + 1.0 / baseline_total) - 1.0
    column_term = totals * inverse_columns - 1.0
    degrees_of_freedom = np.maximum(np.count_nonzero(occupied, axis=1) - 1, 1)
    williams = 1.0 + row_term * column_term / (6.0 * totals * degrees_of_freedom)
    return np.asarray(g / williams, dtype=np.float64)


def _g_terms(observed: Counts, expected: Counts) -> Counts:
    """`_g_statistic`'s terms of one row of a table: ``O ln(O / E) - (O - E)``, ``E`` where
    ``O == 0``."""
    excess = observed - expected
    terms = observed * np.log1p(excess / expected) - excess
    return np.where(observed > 0, terms, expected)


def _p_above_threshold_rows(
    windows: Counts,
    baseline: Counts,
    g: Counts,
    degrees_of_freedom: NDArray[np.int64],
    testable: NDArray[np.bool_],
    threshold_bits: float,
) -> Counts:
    """`_p_above_threshold` of each row; `g` its corrected G."""
    if threshold_bits == math.inf:
        return np.ones(len(g))
    if threshold_bits <= 0:
        return np.where(testable, chdtrc(degrees_of_freedom, g), 1.0)
    scales, noncentralities = _boundary_null_rows(windows, baseline, threshold_bits, testable)
    with np.errstate(over="ignore"):
        survival = ncx2.sf(g / scales, degrees_of_freedom, noncentralities)
    return np.where(testable, survival, 1.0)


@dataclass(frozen=True, slots=True)
class WindowsOptions:
    """`score_windows`' options: those of `score`, the same for every window of one feature."""

    smoothing: float
    threshold_bits: float
    significance: float
    labels: Sequence[str]
    top_n: int = 5
    decision: str = "estimate"
    baseline_unusable: int | None = None


def score_windows(
    windows: Counts,
    baseline: Counts,
    options: WindowsOptions,
    windows_unusable: NDArray[np.int64] | None = None,
) -> list[Divergence]:
    """`score_window` of each row of `windows` (windows x bins, float64, as a pipeline's are:
    finite, non-negative, over the bins of `baseline`), computed together over the array: one
    numpy or scipy call per measure for all the windows, not per window. `windows_unusable`:
    each window's missing plus invalid values (None: 0). The same values as `score_window`
    within rounding (tests/unit/test_divergence.py: 1e-12 relative for the divergences, 1e-9 for
    the p-values; decisions and top bins the same). `window_scores` as one Divergence per
    window."""
    return window_scores(windows, baseline, options, windows_unusable).divergences()


@dataclass(frozen=True, slots=True)
class TopBinColumns:
    """The top bins (`Divergence.top_bins`) of many windows as arrays, windows x ``k`` (``k`` =
    min(top_n, bins)): row r's top bins are its first ``count[r]`` entries, largest first."""

    index: NDArray[np.intp]
    """the bins' indices"""
    window_p: Counts
    baseline_q: Counts
    contribution_bits: Counts
    count: NDArray[np.intp]
    """top bins per window (those with a positive contribution; 0 for an empty window)"""

    def kept(self) -> NDArray[np.bool_]:
        """Windows x k: the entries that are top bins."""
        return np.arange(self.index.shape[1])[None, :] < self.count[:, None]


@dataclass(frozen=True, slots=True)
class WindowScores:
    """`score_window` of many windows of one feature, as columns (one entry per window): what
    `score_windows` returns, before it is cut into one `Divergence` per window. An empty
    window (``count == 0``, `scored` False) has NaN divergences and p-values (None in its
    Divergence), drift False and no top bins.

    Attributes
    ----------
    labels : sequence of str
        The bins' labels.
    scored : numpy.ndarray of bool
        The window has values (``count > 0``).
    missing_p_value, missing_drift : list
        As in `Divergence`, one per window.
    The others: as in `Divergence`, one entry per window.
    """

    labels: Sequence[str]
    count: NDArray[np.int64]
    scored: NDArray[np.bool_]
    kl_bits: Counts
    kl_bits_debiased: Counts
    entropy_bits: Counts
    cross_entropy_bits: Counts
    js_bits: Counts
    psi: Counts
    p_value: Counts
    p_value_above_threshold: Counts
    drift: NDArray[np.bool_]
    top_bins: TopBinColumns
    missing_p_value: list[float | None]
    missing_drift: list[bool]

    def divergences(self) -> list[Divergence]:
        """One Divergence per window (the same floats)."""
        results = [
            _empty_window(p, flag)
            for p, flag in zip(self.missing_p_value, self.missing_drift, strict=True)
        ]
        top = self.top_bins
        columns = zip(
            np.flatnonzero(self.scored).tolist(),
            *(
                values[self.scored].tolist()
                for values in (
                    self.count,
                    self.kl_bits,
                    self.kl_bits_debiased,
                    self.entropy_bits,
                    self.cross_entropy_bits,
                    self.js_bits,
                    self.psi,
                    self.p_value,
                    self.drift,
                    self.p_value_above_threshold,
                    top.index,
                    top.window_p,
                    top.baseline_q,
                    top.contribution_bits,
                    top.count,
                )
            ),
            strict=True,
        )
        for (
            i,
            count,
            kl,
            debiased,
            entropy,
            cross,
            js,
            psi_,
            p_value,
            drift,
            p_above,
            indices,
            shares,
            qs,
            bits,
            kept,
        ) in columns:
            results[i] = Divergence(
                count=count,
                kl_bits=kl,
                kl_bits_debiased=debiased,
                entropy_bits=entropy,
                cross_entropy_bits=cross,
                js_bits=js,
                psi=psi_,
                p_value=p_value,
                drift=drift,
                top_bins=tuple(
                    TopBin(label=self.labels[b], window_p=p, baseline_q=q, contribution_bits=c)
                    for b, p, q, c in zip(
                        indices[:kept], shares[:kept], qs[:kept], bits[:kept], strict=True
                    )
                ),
                p_value_above_threshold=p_above,
                missing_p_value=self.missing_p_value[i],
                missing_drift=self.missing_drift[i],
            )
        return results


def window_scores(
    windows: Counts,
    baseline: Counts,
    options: WindowsOptions,
    windows_unusable: NDArray[np.int64] | None = None,
) -> WindowScores:
    """`score_windows` as columns: every measure of every window (rows of `windows`) from one
    numpy or scipy call over the windows x bins array (`drift_statistics` and the rest), the
    top bins from one stable sort of the windows x bins contributions."""
    smoothing, threshold_bits, significance = (
        options.smoothing,
        options.threshold_bits,
        options.significance,
    )
    labels, top_n, decision = options.labels, options.top_n, options.decision
    _check_smoothing(smoothing)
    _check_score_options(baseline.size, threshold_bits, significance, labels, top_n, decision)
    totals = windows.sum(axis=1)
    unusable = np.zeros(len(windows), np.int64) if windows_unusable is None else windows_unusable
    missing_ps, missing_drifts = _missing_tests(
        unusable, totals, options.baseline_unusable, float(baseline.sum()), significance
    )
    scored = totals > 0
    rows_scored = np.flatnonzero(scored)
    n, k = len(windows), min(top_n, baseline.size)
    columns = {name: np.full(n, np.nan) for name in _SCORE_COLUMNS}
    count = np.zeros(n, np.int64)
    drift = np.zeros(n, np.bool_)
    top = TopBinColumns(
        index=np.zeros((n, k), np.intp),
        window_p=np.zeros((n, k)),
        baseline_q=np.zeros((n, k)),
        contribution_bits=np.zeros((n, k)),
        count=np.zeros(n, np.intp),
    )
    if len(rows_scored):
        q = _smoothed_probabilities(baseline, smoothing)
        rows = windows[rows_scored]
        statistics = drift_statistics(rows, baseline, q, threshold_bits)
        p = statistics.p
        mixture = 0.5 * (p + q[None, :])
        measured = {
            "kl_bits": statistics.kl_bits,
            "kl_bits_debiased": statistics.kl_bits_debiased,
            "entropy_bits": np.sum(entr(p), axis=1) / _LN2,
            "cross_entropy_bits": -np.sum(xlogy(p, q[None, :]), axis=1) / _LN2,
            "js_bits": np.maximum(
                0.0,
                0.5
                * (np.sum(rel_entr(p, mixture), axis=1) + np.sum(rel_entr(q, mixture), axis=1))
                / _LN2,
            ),
            "psi": _psi_rows(rows, statistics.totals, q, smoothing),
            "p_value": statistics.p_value,
            "p_value_above_threshold": statistics.p_value_above_threshold,
        }
        for name, values in measured.items():
            columns[name][rows_scored] = values
        count[rows_scored] = np.rint(statistics.totals)
        drift[rows_scored] = statistics.drift(decision, threshold_bits, significance)
        _fill_top_bins(top, rows_scored, statistics, q, k)
    return WindowScores(
        labels=labels,
        count=count,
        scored=scored,
        drift=drift,
        top_bins=top,
        missing_p_value=missing_ps,
        missing_drift=missing_drifts,
        **columns,
    )


_SCORE_COLUMNS = (
    "kl_bits",
    "kl_bits_debiased",
    "entropy_bits",
    "cross_entropy_bits",
    "js_bits",
    "psi",
    "p_value",
    "p_value_above_threshold",
)


def _fill_top_bins(
    top: TopBinColumns, rows: NDArray[np.intp], statistics: DriftStatistics, q: Counts, k: int
) -> None:
    """`_top_bins` of each of `rows` into `top`: one stable sort of the windows x bins
    contributions (ties to the lower bin), then the positive ones among each row's first k
    (a prefix: the sort puts every positive contribution before the others)."""
    if k == 0:
        return
    order = np.argsort(-statistics.contributions_bits, axis=1, kind="stable")[:, :k]
    contributions = np.take_along_axis(statistics.contributions_bits, order, axis=1)
    top.index[rows] = order
    top.window_p[rows] = np.take_along_axis(statistics.p, order, axis=1)
    top.baseline_q[rows] = q[order]
    top.contribution_bits[rows] = contributions
    top.count[rows] = np.count_nonzero(contributions > 0, axis=1)


def _psi_rows(windows: Counts, totals: Counts, q: Counts, smoothing: float) -> Counts:
    """`_psi` of each row; bins empty on both sides masked to 0 rather than dropped."""
    p = (windows + smoothing) / (totals + windows.shape[1] * smoothing)[:, None]
    seen = (p > 0) | (q[None, :] > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = (p - q[None, :]) * np.log(p / q[None, :])
    return np.asarray(np.where(seen, terms, 0.0).sum(axis=1), dtype=np.float64)


def _missing_tests(
    windows_unusable: NDArray[np.int64],
    totals: Counts,
    baseline_unusable: int | None,
    baseline_total: float,
    significance: float,
) -> tuple[list[float | None], list[bool]]:
    """`_missing_test` of each window: the 2 x 2 tables' corrected G, one call for all."""
    windows = len(totals)
    if baseline_unusable is None:
        return [None] * windows, [False] * windows
    window_events = np.rint(totals).astype(np.int64) + windows_unusable
    baseline_events = round(baseline_total) + baseline_unusable
    tested = np.flatnonzero(window_events > 0)
    usable = window_events[tested] - windows_unusable[tested]
    table = np.stack((usable, windows_unusable[tested]), axis=1).astype(np.float64)
    baseline_row = np.array([baseline_events - baseline_unusable, baseline_unusable], np.float64)
    g = _corrected_g_rows(table, baseline_row)
    two_columns = np.count_nonzero(_occupied_bins(table, baseline_row), axis=1) == 2
    tested_ps = np.where(two_columns, chdtrc(1, g), 1.0)
    rose = windows_unusable[tested] * baseline_events > baseline_unusable * window_events[tested]
    p_values: list[float | None] = [None] * windows
    flags = [False] * windows
    for i, p, flag in zip(
        tested.tolist(),
        tested_ps.tolist(),
        (rose & (tested_ps < significance)).tolist(),
        strict=True,
    ):
        p_values[i], flags[i] = p, flag
    return p_values, flags
