"""The restart protocol of the Kafka source: what a reader commits, and what a restart reads back.

A reader commits, per partition, an offset behind what it read, with metadata
``{"kldrift": 2, "run", "floor_us", "read_to", "done_us"}``:

* ``floor_us``: every window whose end + allowed_lateness <= it has been reported (by this run or
  an earlier one). Each partition's floor is such a claim on its own, so a restart may take the
  newest (largest) of them.
* the committed offset: every record before it belongs only to windows closed by that floor.
* ``read_to``: the records before it were read (binned or dead-lettered) by some run.
* ``done_us``: the committing reader's own watermark COMMIT_DELAY_S ago, published for the other
  readers of the same run (``run``).

With several readers a window is reported only once the slowest reader's watermark passes it, so a
reader may not commit past a window because its own watermark has: its floor is the minimum of its
own ``done_us`` and every other partition's ``done_us`` of the same run. Until every partition
has published one, it commits its carried-forward resume point instead (the offsets and floor
the run started from), which keeps a restart's guarantees whatever the readers' progress.
Version 1 metadata (``floor_us``, ``read_to``; one reader) reads the same way.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kldrift.events import NO_WATERMARK, ResumePoint

METADATA_VERSION = 2
_READABLE_VERSIONS = (1, 2)


@dataclass(frozen=True)
class PartitionResume:
    """One partition's committed resume fields (see the module docstring)."""

    floor_us: int
    read_to: int
    run: str = ""
    done_us: int = NO_WATERMARK


def encode(resume: PartitionResume) -> str:
    """A committed offset's metadata (Kafka keeps up to offset.metadata.max.bytes, 4 KiB)."""
    return json.dumps(
        {
            "kldrift": METADATA_VERSION,
            "run": resume.run,
            "floor_us": resume.floor_us,
            "read_to": resume.read_to,
            "done_us": resume.done_us,
        }
    )


def decode(metadata: str | None) -> PartitionResume | None:
    """The resume fields of a committed offset's metadata; None when another tool (or nothing)
    committed it."""
    try:
        fields = json.loads(metadata or "")
        if not isinstance(fields, dict) or fields.get("kldrift") not in _READABLE_VERSIONS:
            return None
        return PartitionResume(
            floor_us=int(fields["floor_us"]),
            read_to=int(fields["read_to"]),
            run=str(fields.get("run", "")),
            done_us=int(fields.get("done_us", NO_WATERMARK)),
        )
    except (ValueError, TypeError, KeyError):
        return None


def resume_point(topic: str, committed: Mapping[int, str | None]) -> ResumePoint | None:
    """What a restart takes from the committed metadata per partition: the newest floor (each is
    a claim of its own) and the offsets read; None when no partition carries kldrift's metadata."""
    floors: list[int] = []
    read_to: dict[tuple[str, int], int] = {}
    for partition, metadata in committed.items():
        fields = decode(metadata)
        if fields is None:
            continue
        floors.append(fields.floor_us)
        read_to[(topic, partition)] = fields.read_to
    if not read_to:
        return None
    return ResumePoint(floor_us=max(floors), read_to=read_to)


def published_floor(run: str, others: Iterable[PartitionResume | None]) -> int | None:
    """The oldest done watermark the other partitions published in this run: a reader commits
    by the minimum of its own and this. None while some partition has not published one in
    this run (a commit of another run says nothing about this run's readers)."""
    floor: int | None = None
    for fields in others:
        if fields is None or fields.run != run:
            return None
        floor = fields.done_us if floor is None else min(floor, fields.done_us)
    return floor
