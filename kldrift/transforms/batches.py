"""SlidingKLFromBatches: event batches in, one DriftReport per (key, feature, sliding window,
revision), in lists (one per block of keys and window), and dead letters.

Keys travel in blocks (kldrift.key_blocks): from Bin to Score an element is a (shard of keys, pane
or window) and its value a KeyBlock of that shard's keys, so Beam's per-element cost is paid per
block, not per key.

Steps (stable labels, so a Dataflow `--update` keeps state), one module each:
  Bin                 transforms.bin: each batch binned with numpy into per-(key, pane) counts,
                      every feature's slots side by side in one array, one block per (shard,
                      pane); dead letters
  PaneHistograms      transforms.panes: FixedWindows(period), sum of blocks per shard; late data
                      fires discarding deltas
  PaneToWindows       transforms.sliding: each pane block keyed once per sliding window holding it
                      (size/period), stamped at that window's last millisecond; summed per window
                      per bundle
  SlidingHistograms   transforms.panes again, over those stamps: fires at the sliding window's end;
                      sum of pane blocks (deltas)
  ReviseStamp         transforms.revise: restamped at window end + allowed_lateness - 1 ms, and
  ReviseWindows       FixedWindows(period, offset) ending there: the revision state's lifetime
  Revise              running totals per key of the window's block, numbered revisions 0, 1, 2...
                      per key (in a batch job, where every window fires once: revision 0, no
                      state)
  Score               transforms.score: divergence against the baseline (a construction argument,
                      or a newer one with the same bins from `baseline_updates`, e.g. a kafka://
                      topic) -> a DriftReport per feature, q-values across the features of one
                      (key, window, revision); a WindowSummary per (key, window, revision)
Each event is counted once, whatever size/period is: the sliding step costs windows x bins.
Only standard WindowFns are used: Flink's and Dataflow's Java side reject pickled Python ones.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam import typehints
from apache_beam.transforms import window
from apache_beam.typehints.decorators import no_annotations
from apache_beam.utils.timestamp import Duration, Timestamp

from kldrift.binning import resolve_bins
from kldrift.events import EventBatch
from kldrift.io import resume
from kldrift.io.resume import ResumePoint
from kldrift.schemas.baseline import Baseline
from kldrift.schemas.config import PipelineConfig
from kldrift.schemas.report_wire import DriftReportWire, WindowSummaryWire
from kldrift.transforms import report_coder  # noqa: F401  # registers the report coders
from kldrift.transforms.bin import PANE_COUNTS, BinPanes, feature_slots
from kldrift.transforms.outputs import DEAD_LETTERS, REPORTS, SUMMARIES
from kldrift.transforms.panes import WindowedSum
from kldrift.transforms.revise import (
    REVISION,
    STAMPED_DELTA,
    FirstFiring,
    Revise,
    StampAtReviseEnd,
)
from kldrift.transforms.score import BaselineUpdates, Score
from kldrift.transforms.sliding import WINDOW_ELEMENT, PaneToWindows

__all__ = ["DEAD_LETTERS", "REPORTS", "SUMMARIES", "SlidingKLFromBatches"]

REPORT_BLOCK = typehints.List[DriftReportWire]
"""Score's main output: the reports of one block of windows (one shard of keys, one window)."""
SUMMARY_BLOCK = typehints.List[WindowSummaryWire]
"""Score's SUMMARIES output: the window summaries of one block of windows."""


class SlidingKLFromBatches(beam.PTransform):
    """EventBatch -> {"reports": list[DriftReportWire], "summaries": list[WindowSummaryWire],
    "dead_letters": DeadLetter}: the steps wired together. Reports and summaries leave in blocks,
    one list per (shard of keys, window, firing), as msgspec Structs that write the JSON of the
    pydantic models (kldrift.schemas.report_wire); every record of a list has the list's
    timestamp and window.

    Internal: what the Kafka source (`kldrift run`, with `resume` after a restart) and file replay
    use. The public composite on any PCollection is kldrift.transforms.sliding_kl.SlidingKLDivergence.

    `baseline` is checked against `config` at construction: a mismatch raises BaselineMismatch
    naming the feature before any pipeline starts. `baseline_updates` (optional) hands the running
    job newer baselines with the same bins; each report names the `baseline_id` it was scored with.
    `single_firing`: the job is a batch job (replay), where every window fires once, so its
    revisions need no state (transforms.revise.FirstFiring). `summaries=False`: no window
    summaries are computed (a replay that writes none); the output is then empty.
    """

    def __init__(
        self,
        config: PipelineConfig,
        baseline: Baseline,
        baseline_updates: BaselineUpdates | None = None,
        resume: ResumePoint | None = None,
        single_firing: bool = False,
        summaries: bool = True,
    ) -> None:
        super().__init__()
        # A batch job fires every window once: revision 0 with no state (FirstFiring).
        self._single_firing = single_firing
        self._config = config
        self._baseline = baseline
        self._feature_bins = resolve_bins(config, baseline)
        self._updates = baseline_updates
        self._resume = resume
        self._summaries = summaries

    @no_annotations  # Beam takes no dict of PCollections as an output hint (it warns)
    def expand(
        self, batches: beam.PCollection[EventBatch] | tuple[beam.PCollection[EventBatch], ...]
    ) -> dict[str, beam.PCollection]:
        spec = self._config.window
        period = Duration(micros=spec.period_us)
        lateness = spec.allowed_lateness_us
        pane_counts, dead_letters = self._bin(batches)
        windows = (
            pane_counts
            | "PaneHistograms"
            >> WindowedSum(
                window.FixedWindows(period),
                # Panes stay open until their last sliding window closes.
                allowed_lateness_us=lateness + spec.size_us,
            )
            | "PaneToWindows"
            >> beam.ParDo(
                PaneToWindows(
                    spec.size_us,
                    spec.period_us,
                    resume.reported_until_us(self._resume, lateness),
                    event_slots=self._feature_bins[0].n_bins + 2,
                )
            )
            .with_input_types(PANE_COUNTS)
            .with_output_types(WINDOW_ELEMENT)
            # Standard WindowFns only (Flink's Java side rejects pickled Python ones). Elements are
            # stamped at their sliding window's last ms, so FixedWindows(period) gives the window
            # [start + size - period, start + size): the same end (firing) as [start, start + size).
            | "SlidingHistograms"
            >> WindowedSum(window.FixedWindows(period), allowed_lateness_us=lateness)
            # Revise's state window ends at end + allowed_lateness: restamp to its last ms, then
            # FixedWindows(period) offset by lateness % period has a boundary exactly there.
            | "ReviseStamp"
            >> beam.ParDo(StampAtReviseEnd(lateness))
            .with_input_types(WINDOW_ELEMENT)
            .with_output_types(STAMPED_DELTA)
            | "ReviseWindows"
            >> beam.WindowInto(
                window.FixedWindows(period, offset=Timestamp(micros=lateness % spec.period_us))
            )
            | "Revise"
            >> beam.ParDo(
                FirstFiring() if self._single_firing else Revise(feature_slots(self._feature_bins))
            )
            .with_input_types(STAMPED_DELTA)
            .with_output_types(REVISION)
        )
        scored = windows | "Score" >> beam.ParDo(
            Score(self._config, self._feature_bins, self._baseline, self._updates, self._summaries)
        ).with_input_types(REVISION).with_output_types(
            REPORT_BLOCK, **{SUMMARIES: SUMMARY_BLOCK}
        ).with_outputs(SUMMARIES, main=REPORTS)
        return {
            REPORTS: scored[REPORTS],
            SUMMARIES: scored[SUMMARIES],
            DEAD_LETTERS: dead_letters,
        }

    def _bin(
        self, batches: beam.PCollection[EventBatch] | tuple[beam.PCollection[EventBatch], ...]
    ) -> tuple[beam.PCollection, beam.PCollection]:
        """(pane counts, dead letters): one Bin step; or, given one PCollection per reader
        (`kldrift run --worker-processes`), one per reader (`Bin0`, `Bin1`, ...) with its reader's
        resource hints, so that it runs in its reader's environment (worker process) and only
        pane counts leave it."""
        if not isinstance(batches, tuple):
            binned = batches | "Bin" >> self._bin_step()
            return binned.pane_counts, binned[DEAD_LETTERS]
        parts = []
        for i, branch in enumerate(batches):
            step = self._bin_step()
            if branch.producer is not None:
                step.get_resource_hints().update(branch.producer.resource_hints)
            parts.append(branch | f"Bin{i}" >> step)
        return (
            tuple(p.pane_counts for p in parts) | "PaneCounts" >> beam.Flatten(),
            tuple(p[DEAD_LETTERS] for p in parts) | "BinDeadLetters" >> beam.Flatten(),
        )

    def _bin_step(self) -> beam.PTransform:
        return (
            beam.ParDo(BinPanes(self._config, self._feature_bins, self._resume))
            .with_output_types(PANE_COUNTS)
            .with_outputs(DEAD_LETTERS, main="pane_counts")
        )
