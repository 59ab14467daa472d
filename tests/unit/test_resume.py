"""The restart protocol's pure parts (kldrift.io.resume): what a commit's metadata says, how a
restart reads it back, and how a reader holds its floor back to the other readers' progress."""

from __future__ import annotations

import json

from kldrift.events import NO_WATERMARK
from kldrift.io.resume import PartitionResume, decode, encode, published_floor, resume_point


def test_metadata_round_trips_and_names_its_version() -> None:
    fields = PartitionResume(floor_us=1_000, read_to=42, run="r1", done_us=2_000)
    text = encode(fields)
    assert json.loads(text)["kldrift"] == 2
    assert decode(text) == fields


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
