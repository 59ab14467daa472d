"""Report fields worked out from a window's and a baseline's counts with scipy, independently of
kldrift's code (README's "The math" written out): the oracle the report tests compare with."""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq
from scipy.stats import chi2, chi2_contingency, entropy, ncx2


def williams(table: np.ndarray) -> float:
    """Williams' correction q of a (rows x columns) table's G statistic."""
    n = table.sum()
    rows, columns = table.shape
    row_part = n * np.sum(1 / table.sum(axis=1)) - 1
    column_part = n * np.sum(1 / table.sum(axis=0)) - 1
    return 1 + row_part * column_part / (6 * n * (rows - 1) * (columns - 1))


def p_above_threshold(
    counts: np.ndarray, b: np.ndarray, g: float, threshold: float, smoothing: float = 0.5
) -> float:
    """README's minimum-effect test written out: G against scale x chi'^2(df, nc), matching G's
    mean and variance at the boundary point (1 - s) q + s p_hat with KL = threshold (brentq)."""
    n, m, dof = counts.sum(), b.sum(), len(b) - 1
    n_eff, tau = n * m / (n + m), threshold * math.log(2)
    q = (b + smoothing) / (m + smoothing * len(b))
    p_hat = counts / n
    mean = dof + 2 * n_eff * tau
    if entropy(p_hat, q) <= tau:
        return float(ncx2.sf(g, dof, 2 * n_eff * tau))
    s = brentq(lambda s: entropy((1 - s) * q + s * p_hat, q) - tau, 0, 1, xtol=1e-15)
    boundary = (1 - s) * q + s * p_hat
    log_ratio = np.log(boundary / q, where=boundary > 0, out=np.zeros_like(q))
    v = (boundary * log_ratio**2).sum() - (boundary * log_ratio).sum() ** 2
    variance = 2 * dof + 4 * n_eff * v
    roots = np.roots([2 * dof, -4 * mean, variance])
    scale = max(1.0, float(np.min(roots.real)))
    return float(ncx2.sf(g / scale, dof, max(mean / scale - dof, 0.0)))


def expected_fields(
    counts: np.ndarray, baseline: np.ndarray, *, smoothing: float, threshold: float
) -> dict[str, float]:
    """A non-empty window's divergences, bias correction and tests, from its bin counts and the
    baseline's: KL, H and H(P,Q) by scipy.stats.entropy in bits against the smoothed baseline;
    debiased KL = KL - (B_eff - 1)(1/N + 1/M)/(2 ln 2), B_eff the bins with c + b > 0; the G-test
    on the (2 x B_eff) table with Williams' correction; the minimum-effect test."""
    counts = np.asarray(counts, dtype=float)
    baseline = np.asarray(baseline, dtype=float)
    n, m = counts.sum(), baseline.sum()
    q = (baseline + smoothing) / (m + smoothing * len(baseline))
    p = counts / n
    kl = float(entropy(p, q, base=2))
    h = float(entropy(p, base=2))
    occupied = (counts + baseline) > 0
    b_eff = int(occupied.sum())
    table = np.array([counts[occupied], baseline[occupied]])
    g = chi2_contingency(table, correction=False, lambda_="log-likelihood").statistic
    g /= williams(table)
    return {
        "kl_bits": kl,
        "entropy_bits": h,
        "cross_entropy_bits": h + kl,
        "kl_bits_debiased": max(0.0, kl - (b_eff - 1) * (1 / n + 1 / m) / (2 * math.log(2))),
        "p_value": float(chi2.sf(g, b_eff - 1)),
        "p_value_above_threshold": p_above_threshold(
            counts[occupied], baseline[occupied], g, threshold, smoothing
        ),
    }
