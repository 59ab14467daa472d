"""The Kafka read's restriction: offsets only advance by reading, and progress never breaks a
runner's split request."""

from __future__ import annotations

import math

import pytest
from apache_beam.io.iobase import RestrictionProgress
from apache_beam.runners.worker.bundle_processor import DataInputOperation

from kldrift.io.kafka_source import PartitionOffsets, _OffsetsTracker, reader_starts


def test_checkpoint_hands_back_the_next_offsets_and_refuses_other_splits() -> None:
    tracker = _OffsetsTracker(PartitionOffsets(((0, 5), (2, 7))))
    assert tracker.try_claim((0, 9))
    assert tracker.try_split(0.5) is None  # never a split into a future offset range
    primary, residual = tracker.try_split(0)
    assert primary == PartitionOffsets(((0, 5), (2, 7)), ((0, 9), (2, 7)))
    assert residual == PartitionOffsets(((0, 9), (2, 7)))
    assert not tracker.try_claim((2, 8))  # nothing is claimed after the checkpoint
    assert not tracker.try_claim((1, 3))  # a partition this reader does not own


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
