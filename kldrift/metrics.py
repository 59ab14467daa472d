"""The job's Beam metrics: one namespace and every counter name, for the steps that count and the
CLI that prints them."""

from __future__ import annotations

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


def counter(name: str):
    """A Beam counter of kldrift's namespace (call in a DoFn's setup)."""
    import apache_beam as beam

    return beam.metrics.Metrics.counter(NAMESPACE, name)
