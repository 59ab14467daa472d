"""The Kafka read's restriction: offsets only advance by reading, and progress never breaks a
runner's split request."""

from __future__ import annotations

import math

import pytest
from apache_beam.io.iobase import RestrictionProgress
from apache_beam.runners.worker.bundle_processor import DataInputOperation

from kldrift.io.kafka_source import (
    Claim,
    NewPartitions,
    PartitionOffsets,
    _OffsetsTracker,
    reader_starts,
)
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


def test_partitions_added_later_go_to_the_reader_that_would_have_been_dealt_them() -> None:
    """Partition p is reader p % readers's, as the round-robin deal at the start made it: the
    partitions 3 and 4 added to a 3-partition topic read by 2 readers go to readers 1 and 0."""
    starts = reader_starts("t", {0: 0, 1: 0, 2: 0}, readers=2)
    assert [[p for p in range(6) if s.owns(p)] for s in starts] == [[0, 2, 4], [1, 3, 5]]
    for start in starts:  # the deal at the start follows the same rule
        assert all(start.owns(p) for p, _ in start.offsets)


def test_a_claimed_new_partition_is_read_from_its_offset_and_survives_a_checkpoint() -> None:
    tracker = _OffsetsTracker(PartitionOffsets(((0, 5),)))
    assert tracker.try_claim(NewPartitions(((3, 0),)))
    assert tracker.try_claim(Claim(3, 4, first_offset=0, closing_us=100, done_us=0))
    _, residual = tracker.try_split(0)
    assert residual == PartitionOffsets(((0, 5), (3, 4)), None, ((3, 0, 100),))
    assert not tracker.try_claim(NewPartitions(((4, 0),)))  # nothing after the checkpoint


def test_a_new_partition_starts_at_the_readers_watermark_never_holding_it_back_to_the_start() -> (
    None
):
    from kldrift.io.kafka_source import _ReaderWatermark

    watermark = _ReaderWatermark(None)
    watermark.start([0, 1], now=100.0)
    watermark.records_seen(0, 5_000_000, now=100.0)
    watermark.records_seen(1, 7_000_000, now=100.0)
    watermark.add_partitions([2], now=101.0)
    assert watermark.partition_watermark(2) == 5_000_000
    assert watermark.current_watermark().micros == 5_000_000
    assert watermark.idle_partitions(102.0, idle_s=2.0) == [0, 1]  # 2 is quiet only from 101 s
