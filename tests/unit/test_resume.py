"""The restart protocol's pure parts (kldrift.io.resume): what a commit's metadata says, how a
restart reads it back, and how a reader holds its floor back to the other readers' progress."""

from __future__ import annotations

import json

from kldrift.events import NO_WATERMARK
from kldrift.io.resume import (
    PartitionResume,
    ResumePoint,
    decode,
    decode_acked,
    encode,
    encode_acked,
    first_unreported_window,
    geometry_change,
    published_floor,
    reported_until_us,
    reset_for_window,
    resume_point,
)


def test_metadata_round_trips_and_names_its_version() -> None:
    fields = PartitionResume(
        floor_us=1_000, read_to=42, run="r1", done_us=2_000, window=(20_000_000, 10_000_000, 0)
    )
    text = encode(fields)
    assert json.loads(text)["kldrift"] == 3
    assert json.loads(text)["window"] == [20_000_000, 10_000_000, 0]
    assert decode(text) == fields


def test_version_2_metadata_still_reads_without_a_window() -> None:
    old = json.dumps({"kldrift": 2, "run": "r", "floor_us": 7, "read_to": 9, "done_us": 5})
    assert decode(old) == PartitionResume(floor_us=7, read_to=9, run="r", done_us=5, window=None)
    point = resume_point("events", {0: old})
    assert point is not None and point.window is None
    # Nothing to compare against: not refused (the window was not kept then).
    assert geometry_change(point, (30_000_000, 10_000_000, 0)) is None


def test_version_1_metadata_still_reads() -> None:
    """Commits written before readers published their progress (one reader) keep working."""
    old = json.dumps({"kldrift": 1, "floor_us": 7, "read_to": 9})
    assert decode(old) == PartitionResume(floor_us=7, read_to=9, run="", done_us=NO_WATERMARK)


def test_metadata_of_other_tools_is_ignored() -> None:
    for foreign in (None, "", "not json", "[1]", '{"floor_us": 1, "read_to": 2}', '{"kldrift": 9}'):
        assert decode(foreign) is None, foreign
    assert decode(json.dumps({"kldrift": 2, "floor_us": "x", "read_to": 1})) is None


def test_a_restart_takes_the_newest_floor_and_every_partitions_read_offsets() -> None:
    """Each partition's floor is a claim of its own ("windows closed by it were reported"), so the
    largest holds; partitions without kldrift metadata resume with no read-before offsets."""
    committed = {
        0: encode(PartitionResume(floor_us=100, read_to=10)),
        1: encode(PartitionResume(floor_us=300, read_to=20)),
        2: None,
    }
    point = resume_point("events", committed)
    assert point is not None
    assert point.floor_us == 300
    assert point.read_to == {("events", 0): 10, ("events", 1): 20}
    assert resume_point("events", {0: None, 1: "other tool"}) is None


def test_a_reader_waits_for_every_other_partition_of_its_run() -> None:
    """A window closes only when the slowest reader's watermark passes it: the floor is the
    minimum of the others' published done watermarks, and unknown until all have published in
    this run (an earlier run's commit says nothing about this run's readers)."""
    this_run = [
        PartitionResume(floor_us=0, read_to=0, run="r2", done_us=500),
        PartitionResume(floor_us=0, read_to=0, run="r2", done_us=300),
    ]
    assert published_floor("r2", this_run) == 300
    assert published_floor("r2", [*this_run, None]) is None
    earlier = PartitionResume(floor_us=0, read_to=0, run="r1", done_us=900)
    assert published_floor("r2", [*this_run, earlier]) is None


S = 1_000_000


def test_a_changed_window_is_named_field_by_field() -> None:
    point = ResumePoint(
        floor_us=1_000 * S, read_to={("events", 0): 5}, window=(10 * S, 10 * S, 10 * S)
    )
    assert geometry_change(point, (10 * S, 10 * S, 10 * S)) is None
    assert geometry_change(point, (30 * S, 10 * S, 10 * S)) == "window.size 10 s -> 30 s"
    assert geometry_change(point, (20 * S, 5 * S, 0)) == (
        "window.size 10 s -> 20 s, window.period 10 s -> 5 s, window.allowed_lateness 10 s -> 0 s"
    )
    nothing_reported = ResumePoint(NO_WATERMARK, {("events", 0): 5}, window=(10 * S, 10 * S, 0))
    assert geometry_change(nothing_reported, (30 * S, 10 * S, 0)) is None


def test_a_reset_resume_point_reports_only_windows_complete_from_the_committed_offsets() -> None:
    """Hand-worked: the old run (10 s windows every 10 s, 10 s lateness) committed floor 1000 s.
    A record before the committed offsets belongs only to windows closed by the floor: its pane
    started at or before 1000 - 10 - 10 = 980 s, so every record at or after 990 s is read again.
    With 30 s windows every 10 s (lateness 10 s) the first window reported starts at 990 s, and
    records whose every new window starts before it are counted as already reported."""
    old = ResumePoint(1_000 * S, {("events", 0): 77}, window=(10 * S, 10 * S, 10 * S))
    new = reset_for_window(old, (30 * S, 10 * S, 10 * S))
    assert new.window == (30 * S, 10 * S, 10 * S) and new.read_to == old.read_to
    reported_until = reported_until_us(new, 10 * S)
    assert reported_until is not None
    assert first_unreported_window(900 * S, reported_until, 30 * S, 10 * S) == 990 * S
    # An event at 989.9 s: its newest window starts at 980 s, not reported; at 990 s: reported.
    horizon = 30 * S + 10 * S
    assert 980 * S + horizon <= new.floor_us < 990 * S + horizon


def test_acknowledged_progress_is_read_back_only_by_its_own_run() -> None:
    text = encode_acked("r2", 123_456)
    assert decode_acked(text, "r2") == 123_456
    assert decode_acked(text, "r1") is None
    for foreign in (None, "", "x", '{"run": "r2"}'):
        assert decode_acked(foreign, "r2") is None
