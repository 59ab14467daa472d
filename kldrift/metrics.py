"""The job's Beam metrics: one namespace and every counter name, for the steps that count and the
CLI that prints them; and the lines that say what the dead-letter and feature counters show."""

from __future__ import annotations

from collections.abc import Mapping

NAMESPACE = "kldrift"

RECORDS_CONSUMED = "records_consumed"
"""Records the Kafka reader handed on (decoded or dead-lettered)."""
EVENTS_BINNED = "events_binned"
RECORDS_DEAD_LETTERED = "records_dead_lettered"
EVENTS_TOO_LATE = "events_too_late"
EVENTS_WINDOWED = "events_windowed"
"""Events in the pane histograms that reached the sliding windows (PaneToWindows): binned events
the runner did not drop as too late. events_binned - events_windowed, once a job has drained, is
what the runner dropped (the library on a user's PCollection, where kldrift cannot see the
watermark); while it runs, it also holds events of panes not yet fired."""
EVENTS_ALREADY_REPORTED = "events_already_reported"
"""Events a restarted job read again whose every window the previous run reported (skipped)."""
REPORTS = "reports"
WINDOWS_DRIFTED = "windows_drifted"
BASELINES_SWAPPED = "baselines_swapped"
BASELINES_REJECTED = "baselines_rejected"

TOTALS = (
    RECORDS_CONSUMED,
    EVENTS_BINNED,
    RECORDS_DEAD_LETTERED,
    EVENTS_TOO_LATE,
    REPORTS,
    EVENTS_ALREADY_REPORTED,
    BASELINES_SWAPPED,
    BASELINES_REJECTED,
)
"""The counters `kldrift run` prints when a job ends, in that order."""

DEAD_LETTERS_BY_REASON = "dead_letters_"
"""Prefix of a counter per dead-letter reason (`dead_letters_missing_event_time`, ...): records
dead-lettered for it. They sum to records_dead_lettered."""
FEATURE_MISSING = "feature_missing_"
"""Prefix of a counter per feature (`feature_missing_latency_ms`): binned events without the
feature's value (absent, null, NaN)."""
FEATURE_INVALID = "feature_invalid_"
"""Prefix of a counter per feature: binned events whose value is of a type the feature's kind
does not take. events_binned - missing - invalid of a feature had a value in one of its bins."""


def counter(name: str):
    """A Beam counter of kldrift's namespace (call in a DoFn's setup)."""
    import apache_beam as beam

    return beam.metrics.Metrics.counter(NAMESPACE, name)


WARNINGS_LOGGER = "kldrift.transforms.bin"
"""The logger of the Bin step's warnings while a job runs (records dead-lettered, features without
values), at most one round of them per minute per worker process."""


def dead_letter_lines(by_reason: Mapping[str, int]) -> list[str]:
    """`dead letters: N REASON`, a line per reason dead-lettered for, the most frequent first.

    >>> dead_letter_lines({"not_json": 2, "missing_event_time": 30000, "too_late": 0})
    ['dead letters: 30000 missing_event_time', 'dead letters: 2 not_json']
    """
    return [f"dead letters: {count} {reason}" for reason, count in ranked_reasons(by_reason)]


def ranked_reasons(by_reason: Mapping[str, int]) -> list[tuple[str, int]]:
    """(reason, count) of the reasons with a count, the most frequent first (then by name)."""
    ranked = sorted(by_reason.items(), key=lambda item: (-item[1], item[0]))
    return [(reason, count) for reason, count in ranked if count > 0]


def reasons_text(by_reason: Mapping[str, int]) -> str:
    """`30000 missing_event_time, 2 not_json`: the reasons with their counts, the most first."""
    return ", ".join(f"{count} {reason}" for reason, count in ranked_reasons(by_reason))


def no_value_in_any(binned: int, missing: int, invalid: int) -> bool:
    """Whether a feature had no value in a bin in any of `binned` events (> 0)."""
    return binned > 0 and missing + invalid >= binned


def empty_feature_line(feature: str, binned: int, missing: int, invalid: int) -> str | None:
    """A line for a feature whose values were all missing or invalid among `binned` events (> 0),
    else None.

    >>> empty_feature_line("latency_ms", 30000, 30000, 0)
    "feature 'latency_ms': missing in all 30000 events binned (renamed field?)"
    >>> empty_feature_line("amount", 10, 0, 10)
    "feature 'amount': invalid in all 10 events binned (a type its kind does not take)"
    >>> empty_feature_line("amount", 10, 4, 6)
    "feature 'amount': missing or invalid in all 10 events binned (4 missing, 6 invalid)"
    >>> empty_feature_line("amount", 10, 1, 8) is None
    True
    """
    if not no_value_in_any(binned, missing, invalid):
        return None
    if missing == binned:
        return f"feature '{feature}': missing in all {binned} events binned (renamed field?)"
    if invalid == binned:
        return (
            f"feature '{feature}': invalid in all {binned} events binned "
            "(a type its kind does not take)"
        )
    return (
        f"feature '{feature}': missing or invalid in all {binned} events binned "
        f"({missing} missing, {invalid} invalid)"
    )
