"""The Kafka read's restriction: offsets only advance by reading, and progress never breaks a
runner's split request."""

from __future__ import annotations

import math

import pytest
from apache_beam.io.iobase import RestrictionProgress
from apache_beam.runners.worker.bundle_processor import DataInputOperation

from kldrift.io.kafka_source import Claim, PartitionOffsets, _OffsetsTracker, reader_starts
from kldrift.io.resume import add_pending, safe_offsets


def test_checkpoint_hands_back_the_next_offsets_and_refuses_other_splits() -> None:
    tracker = _OffsetsTracker(PartitionOffsets(((0, 5), (2, 7))))
    assert tracker.try_claim(Claim(0, 9, first_offset=5, closing_us=100, done_us=0))
    assert tracker.try_split(0.5) is None  # never a split into a future offset range
    primary, residual = tracker.try_split(0)
    assert primary == PartitionOffsets(((0, 5), (2, 7)), ((0, 9), (2, 7)))
    assert residual == PartitionOffsets(((0, 9), (2, 7)), None, ((0, 5, 100),))
    assert not tracker.try_claim(Claim(2, 8, 7, 100, 0))  # nothing is claimed after the checkpoint
    assert not tracker.try_claim(Claim(1, 3, 2, 100, 0))  # a partition this reader does not own


def test_a_restart_reads_again_from_the_first_batch_of_a_window_still_open() -> None:
    """Batches (first offset, closing time): 0-9 close at 50, 10-19 at 80, 20-29 at 60 (out of
    order: covered by the batch closing at 80), 30-39 at 120."""
    tracker = _OffsetsTracker(PartitionOffsets(((0, 0),)))
    for first, closing in ((0, 50), (10, 80), (20, 60), (30, 120)):
        assert tracker.try_claim(Claim(0, first + 10, first, closing, done_us=40))
    _, residual = tracker.try_split(0)
    assert residual.pending == ((0, 0, 50), (0, 10, 80), (0, 30, 120))
    # Reports are known written for windows closed by done_us: read again from the first batch
    # whose windows were not all closed by then.
    assert safe_offsets(residual.start, residual.pending, done_us=40) == ((0, 0),)
    assert safe_offsets(residual.start, residual.pending, done_us=50) == ((0, 10),)
    assert safe_offsets(residual.start, residual.pending, done_us=79) == ((0, 10),)
    assert safe_offsets(residual.start, residual.pending, done_us=80) == ((0, 30),)
    assert safe_offsets(residual.start, residual.pending, done_us=120) == (
        (0, 40),
    )  # all closed: where reading resumes
    # Claims with a later done_us drop the closed batches from the state.
    tracker = _OffsetsTracker(residual)
    assert tracker.try_claim(Claim(0, 45, 40, 130, done_us=80))
    _, residual = tracker.try_split(0)
    assert residual.pending == ((0, 30, 120), (0, 40, 130))


def test_pending_list_keeps_increasing_closing_times() -> None:
    pending: list[tuple[int, int]] = []
    for first, closing in ((0, 50), (10, 40), (20, 50), (30, 70)):
        add_pending(pending, first, closing, done=0)
    assert pending == [(0, 50), (30, 70)]
    add_pending(pending, 40, 60, done=50)
    assert pending == [(30, 70)]
    add_pending(pending, 50, 10, done=70)  # already closed when read
    assert pending == []


def test_progress_stays_finite_when_beam_fills_in_output_bytes() -> None:
    progress = _OffsetsTracker(PartitionOffsets(((0, 0),))).current_progress()
    # Beam's SDF operation replaces `completed` with output bytes, NaN before a first sample.
    reported = progress.with_completed(math.nan)
    assert reported.fraction_completed == 0.0
    split = DataInputOperation._compute_split(
        index=0,
        current_element_progress=reported.fraction_completed,
        stop=3,
        fraction_of_remainder=0.5,
        total_buffer_size=3,
    )
    assert split is not None  # a split at an element boundary, no error
    # Progress given as completed/remaining became NaN and failed the bundle (seen live on Prism).
    naive = RestrictionProgress(completed=0, remaining=1).with_completed(math.nan)
    with pytest.raises(ValueError, match="NaN"):
        DataInputOperation._compute_split(0, naive.fraction_completed, 3, 0.5, 3)


def test_partitions_are_dealt_to_readers_round_robin() -> None:
    starts = reader_starts("t", {0: 10, 1: 11, 2: 12}, readers=2)
    assert [s.offsets for s in starts] == [((0, 10), (2, 12)), ((1, 11),)]
    assert len(reader_starts("t", {0: 1}, readers=4)) == 1
