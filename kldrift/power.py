"""The drift flag's operating characteristic for a baseline: how often each decision rule flags a
window whose true divergence is 0, 0.5, 0.8, 1, 2 or 4 x the threshold, by simulation (seeded,
vectorised numpy; the same statistics as `divergence.score`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import rel_entr

from kldrift.divergence import DECISIONS, baseline_probabilities, drift_statistics
from kldrift.schemas.baseline import Baseline
from kldrift.schemas.config import DriftSpec, PipelineConfig

MULTIPLES = (0.0, 0.5, 0.8, 1.0, 2.0, 4.0)
"""True divergences simulated, as multiples of threshold_bits."""
_LN2 = math.log(2.0)


@dataclass(frozen=True)
class PowerCell:
    """The share of simulated windows flagged, per rule, at one (feature, N, true KL)."""

    feature: str
    shape: str
    window_events: int
    multiple: float
    kl_bits: float
    """the simulated windows' true KL(P || Q), bits (may fall short of multiple x threshold when
    the shape cannot reach it; see `shape`)"""
    flag_rate: dict[str, float]
    """decision rule -> share of windows flagged"""


@dataclass(frozen=True)
class PowerTable:
    threshold_bits: float
    significance: float
    windows: int
    cells: list[PowerCell]


def drifted_distribution(
    q: np.ndarray, kind: str, kl_bits: float, cells: tuple[int, int] | None = None
) -> tuple[np.ndarray, str]:
    """A distribution P with KL(P || q) = kl_bits, and its shape's name.

    numeric: an exponential tilt along the bins, P ∝ q exp(t z), z the standardised bin index
    (a shift of location); categorical: mass moved into the last bin, `__other__`, P = (1 - e) q
    + e 1_other (a new category); joint (`cells` = its parts' bin counts): a tilt along the
    product of the parts' standardised bin indices, P ∝ q exp(t z_i w_j), which changes how the
    two go together far more than either alone. If the shape cannot reach kl_bits it goes as far
    as it can.
    """
    if kl_bits <= 0:
        return q.copy(), _shape_name(kind)
    if kind in ("numeric", "joint"):
        if kind == "joint":
            assert cells is not None and cells[0] * cells[1] == q.size
            z = np.outer(_standardised(cells[0]), _standardised(cells[1])).ravel()
        else:
            z = _standardised(q.size)

        def shaped(t: float) -> np.ndarray:
            w = np.log(q) + t * z
            w = np.exp(w - w.max())
            return w / w.sum()

        limit = 1.0
        while _kl(shaped(limit), q) < kl_bits and limit < 1e3:
            limit *= 2
    else:

        def shaped(t: float) -> np.ndarray:
            p = (1.0 - t) * q
            p[-1] += t
            return p

        limit = 1.0
    if _kl(shaped(limit), q) <= kl_bits:
        return shaped(limit), _shape_name(kind)
    t = brentq(lambda x: _kl(shaped(x), q) - kl_bits, 0.0, limit, xtol=1e-14, rtol=1e-12)
    return shaped(t), _shape_name(kind)


def _standardised(size: int) -> np.ndarray:
    z = np.arange(size, dtype=np.float64)
    return (z - z.mean()) / z.std() if size > 1 else z


def _shape_name(kind: str) -> str:
    names = {"numeric": "location tilt", "joint": "association tilt"}
    return names.get(kind, "mass into __other__")


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum(rel_entr(p, q)) / _LN2)


def flag_rates(
    window_counts: np.ndarray, baseline_counts: np.ndarray, drift: DriftSpec
) -> dict[str, np.ndarray]:
    """Per simulated window (rows of `window_counts`, each with events), whether each decision
    rule flags it: the statistics of `divergence.score`, vectorised over rows
    (`divergence.drift_statistics`)."""
    baseline = np.asarray(baseline_counts, dtype=np.float64)
    statistics = drift_statistics(
        np.asarray(window_counts, dtype=np.float64),
        baseline,
        baseline_probabilities(baseline, drift.smoothing),
        drift.threshold_bits,
    )
    return {
        rule: statistics.drift(rule, drift.threshold_bits, drift.significance) for rule in DECISIONS
    }


def window_sizes_around(window_events: int) -> list[int]:
    """N / 4, N / 2, N, 2 N, 4 N (at least 1 each, no repeats)."""
    sizes = [max(1, round(window_events * f)) for f in (0.25, 0.5, 1.0, 2.0, 4.0)]
    return sorted(set(sizes))


def operating_characteristic(
    config: PipelineConfig,
    baseline: Baseline,
    window_events: int,
    *,
    windows: int = 2000,
    seed: int = 0,
    multiples: Sequence[float] = MULTIPLES,
    sizes: Sequence[int] | None = None,
) -> PowerTable:
    """Flag rates per feature of `config` against `baseline`, for windows of about
    `window_events` events, at true KL = multiple x threshold, under both decision rules.

    The windows are multinomial samples of size N from the drifted distribution (see
    `drifted_distribution`) around the baseline's smoothed shares, scored against the baseline's
    own counts.
    """
    if window_events < 1:
        raise ValueError(f"window_events must be at least 1, got {window_events!r}")
    if windows < 1:
        raise ValueError(f"windows must be at least 1, got {windows!r}")
    rng = np.random.default_rng(seed)
    drift = config.drift
    cells = []
    for spec in config.features:
        stored = baseline.feature(spec.name)
        counts = np.asarray(stored.counts, dtype=np.float64)
        # The truth under "no drift": the baseline's shares, smoothed so every bin can occur.
        q = baseline_probabilities(counts, max(drift.smoothing, 1e-9))
        joint_cells = _joint_cells(baseline, stored.of)
        for n in sizes or window_sizes_around(window_events):
            for multiple in multiples:
                p, shape = drifted_distribution(
                    q, stored.kind, multiple * drift.threshold_bits, joint_cells
                )
                sample = rng.multinomial(n, p, size=windows)
                flagged = flag_rates(sample, counts, drift)
                cells.append(
                    PowerCell(
                        feature=spec.name,
                        shape=shape,
                        window_events=n,
                        multiple=multiple,
                        kl_bits=_kl(p, q),
                        flag_rate={rule: float(flagged[rule].mean()) for rule in DECISIONS},
                    )
                )
    return PowerTable(drift.threshold_bits, drift.significance, windows, cells)


def _joint_cells(baseline: Baseline, of: list[str] | None) -> tuple[int, int] | None:
    """A joint's (first part's bins, second part's bins); None for a plain feature."""
    if of is None:
        return None
    first, second = (len(baseline.feature(name).counts) for name in of)
    return first, second


def format_power_table(table: PowerTable) -> str:
    """One Markdown table per feature: rows (N, rule), columns true KL; cells % of windows flagged."""
    lines = [
        f"Share of windows flagged as drift (% of {table.windows:,} simulated windows per cell); "
        f"threshold {table.threshold_bits:g} bits, significance {table.significance:g}.",
    ]
    features = list(dict.fromkeys(cell.feature for cell in table.cells))
    for feature in features:
        cells = [c for c in table.cells if c.feature == feature]
        multiples = list(dict.fromkeys(c.multiple for c in cells))
        kl_of = {c.multiple: c.kl_bits for c in cells}
        lines += [
            "",
            f"{feature} ({cells[0].shape})",
            "| N (events/window) | rule | "
            + " | ".join(f"KL {m:g}x = {kl_of[m]:.3g} bits" for m in multiples)
            + " |",
            "|---|---|" + "---|" * len(multiples),
        ]
        for n in dict.fromkeys(c.window_events for c in cells):
            for rule in DECISIONS:
                rates = {c.multiple: c.flag_rate[rule] for c in cells if c.window_events == n}
                lines.append(
                    f"| {n:,} | {rule} | "
                    + " | ".join(f"{100 * rates[m]:.1f}%" for m in multiples)
                    + " |"
                )
    return "\n".join(lines)


@dataclass(frozen=True)
class FalseTriggers:
    """A stationary stream's false alarms for one feature and rule, per simulated day."""

    feature: str
    rule: str
    windows_per_day: float
    window_flag_rate: float
    """share of windows flagged"""
    flags_per_day: float
    triggers_per_day: float
    """k-of-m triggers (with cooldown) per day"""


def false_triggers_per_day(
    config: PipelineConfig,
    baseline: Baseline,
    events_per_second: float,
    *,
    k: int = 3,
    m: int = 5,
    cooldown_s: float = 1800.0,
    days: float = 30.0,
    seed: int = 0,
) -> list[FalseTriggers]:
    """Simulate a stationary stream (the baseline's own shares) pane by pane, sum panes into the
    config's sliding windows (overlapping windows share panes, so their flags are correlated as
    in a real job), flag each window under both rules and run the k-of-m trigger with its
    cooldown over the window ends: false flags and false triggers per day, per feature."""
    rng = np.random.default_rng(seed)
    spec = config.window
    panes_per_window = spec.panes_per_window
    pane_events = events_per_second * spec.period
    n_windows = round(days * 86_400 / spec.period)
    results = []
    for feature_spec in config.features:
        counts = np.asarray(baseline.feature(feature_spec.name).counts, dtype=np.float64)
        q = counts / counts.sum()
        sizes = rng.poisson(pane_events, size=n_windows + panes_per_window - 1)
        panes = np.stack([rng.multinomial(n, q) for n in sizes]) if len(sizes) else np.zeros((0,))
        running = np.vstack([np.zeros((1, q.size)), np.cumsum(panes, axis=0)])
        windows = running[panes_per_window:] - running[:-panes_per_window]
        occupied = windows.sum(axis=1) > 0
        flags = flag_rates(windows[occupied], counts, config.drift)
        for rule in DECISIONS:
            flagged = np.zeros(n_windows, dtype=bool)
            flagged[occupied] = flags[rule]
            triggers = _k_of_m_triggers(flagged, k, m, cooldown_s / spec.period)
            results.append(
                FalseTriggers(
                    feature=feature_spec.name,
                    rule=rule,
                    windows_per_day=86_400 / spec.period,
                    window_flag_rate=float(flagged.mean()),
                    flags_per_day=float(flagged.sum() / days),
                    triggers_per_day=triggers / days,
                )
            )
    return results


def _k_of_m_triggers(flagged: np.ndarray, k: int, m: int, cooldown_windows: float) -> int:
    """Triggers of `consumer.RetrainTrigger` over a sequence of window flags: at a flagged window
    with at least k flagged among the last m, unless within the cooldown of the last trigger."""
    in_last_m = np.convolve(flagged.astype(np.int64), np.ones(m, dtype=np.int64))[: len(flagged)]
    candidates = np.flatnonzero(flagged & (in_last_m >= k))
    fired, last = 0, -math.inf
    for index in candidates:
        if index - last >= cooldown_windows:
            fired, last = fired + 1, float(index)
    return fired


def format_false_triggers(rows: list[FalseTriggers], k: int, m: int) -> str:
    lines = [
        f"| feature | rule | windows flagged (%) | flags per day | {k}-of-{m} triggers per day |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.feature} | {row.rule} | {100 * row.window_flag_rate:.3f}% | "
            f"{row.flags_per_day:.1f} | {row.triggers_per_day:.2f} |"
        )
    return "\n".join(lines)
