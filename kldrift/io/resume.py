"""The restart protocol of the Kafka source: what a reader commits, and what a restart reads back.

A reader commits, per partition, an offset behind what it read, with metadata
``{"kldrift": 3, "run", "floor_us", "read_to", "done_us", "window"}``:

* ``floor_us``: every window whose end + allowed_lateness <= it has been reported (by this run or
  an earlier one). Each partition's floor is such a claim on its own, so a restart may take the
  newest (largest) of them.
* the committed offset: every record before it belongs only to windows closed by that floor.
* ``read_to``: the records before it were read (binned or dead-lettered) by some run.
* ``done_us``: the committing reader's own watermark COMMIT_DELAY_S ago, published for the other
  readers of the same run (``run``).
* ``window``: ``[size_us, period_us, allowed_lateness_us]``, what the floor and the offsets mean. A
  restart with another window refuses (``geometry_change``) unless told to reset its resume point
  (``reset_for_window``), which reports only windows complete from the committed offsets on.

The floor never passes what the sinks have acknowledged: a step after both sinks (kldrift.io.acked)
commits, to the group ``GROUP.acked`` on partition 0 of the report topic, the event time before
which every report and dead letter was acknowledged by the broker (``{"kldrift": 3, "run",
"acked_us"}``); each reader commits by the minimum of its floor and that.

With several readers a window is reported only once the slowest reader's watermark passes it, so a
reader may not commit past a window because its own watermark has: its floor is the minimum of its
own ``done_us`` and every other partition's ``done_us`` of the same run. Until every partition
has published one, it commits its carried-forward resume point instead (the offsets and floor
the run started from), which keeps a restart's guarantees whatever the readers' progress.
Version 1 metadata (``floor_us``, ``read_to``; one reader) reads the same way.

The whole protocol lives here: what a restart resumes from (ResumePoint, read_resume_point), what a
reader tracks and commits (add_pending, safe_offsets, encode, published_floor), and what the
composite skips after a restart (reported_until_us, first_unreported_window).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kldrift.events import NO_WATERMARK

if TYPE_CHECKING:
    from kldrift.schemas.config import KafkaSpec

METADATA_VERSION = 3
_READABLE_VERSIONS = (1, 2, 3)
ACKED_GROUP_SUFFIX = ".acked"
"""The sinks' acknowledged progress is committed to the group GROUP + this (kldrift.io.acked)."""

Window = tuple[int, int, int]
"""(size_us, period_us, allowed_lateness_us): what a resume point's floor and offsets mean."""

Offsets = tuple[tuple[int, int], ...]
"""((partition, next offset to read), ...), sorted by partition."""

Pending = tuple[tuple[int, int, int], ...]
"""((partition, first offset of a batch, its closing time in micros), ...): the batches whose
windows may still be open, per partition in offset order with increasing closing times."""


@dataclass(frozen=True)
class ResumePoint:
    """Where a restarted streaming job picks up from its committed offsets.

    Every window whose end + allowed_lateness <= `floor_us` was reported by the previous run; the
    records below `read_to[(topic, partition)]` were read (binned or dead-lettered) by it. A record
    read again whose every window closed by the floor is skipped, and windows closed by the floor
    are not reported again, so nothing is counted twice and no window is reported partial.
    """

    floor_us: int
    read_to: dict[tuple[str, int], int]
    window: Window | None = None
    """The window the previous run reported with (None: written by kldrift before it was kept)."""

    def read_before(self, source: str, partition: int, offset: int) -> bool:
        return offset < self.read_to.get((source, partition), -1)


def reported_until_us(resume: ResumePoint | None, allowed_lateness_us: int) -> int | None:
    """After a restart: windows ending at or before this were reported by the previous run (their
    end + allowed_lateness <= the floor); None without a resume point."""
    if resume is None:
        return None
    return resume.floor_us - allowed_lateness_us


def first_unreported_window(first: int, reported_until: int, size_us: int, period_us: int) -> int:
    """The first window start from `first` on (in steps of `period_us`) whose window ends after
    `reported_until`, i.e. was not reported by the previous run."""
    unreported = reported_until - size_us + 1  # window end > reported_until
    steps = max(0, -(-(unreported - first) // period_us))
    return first + steps * period_us


def add_pending(pending: list[tuple[int, int]], first: int, closing: int, done: int) -> None:
    """Track a batch in one partition's [(first offset, closing)] list, kept with increasing
    closing times (a batch closing no later than an earlier one is covered by it); entries closed
    by `done` are dropped from the front."""
    if closing > done and (not pending or closing > pending[-1][1]):
        pending.append((first, closing))
    while pending and pending[0][1] <= done:
        pending.pop(0)


def safe_offsets(start: Offsets, pending: Pending, done_us: int) -> Offsets:
    """Per partition, the offset a restart must read from so that no window open at `done_us`
    misses a record: the first pending batch not closed by then, else where reading resumes
    (`start`)."""
    first_open: dict[int, int] = {}
    for partition, first, closing in pending:
        if closing > done_us and partition not in first_open:
            first_open[partition] = first
    return tuple((p, first_open.get(p, offset)) for p, offset in start)


@dataclass(frozen=True)
class PartitionResume:
    """One partition's committed resume fields (see the module docstring)."""

    floor_us: int
    read_to: int
    run: str = ""
    done_us: int = NO_WATERMARK
    window: Window | None = None


def encode(resume: PartitionResume) -> str:
    """A committed offset's metadata (Kafka keeps up to offset.metadata.max.bytes, 4 KiB)."""
    fields: dict[str, object] = {
        "kldrift": METADATA_VERSION,
        "run": resume.run,
        "floor_us": resume.floor_us,
        "read_to": resume.read_to,
        "done_us": resume.done_us,
    }
    if resume.window is not None:
        fields["window"] = list(resume.window)
    return json.dumps(fields)


def decode(metadata: str | None) -> PartitionResume | None:
    """The resume fields of a committed offset's metadata; None when another tool (or nothing)
    committed it."""
    try:
        fields = json.loads(metadata or "")
        if not isinstance(fields, dict) or fields.get("kldrift") not in _READABLE_VERSIONS:
            return None
        window = fields.get("window")
        return PartitionResume(
            floor_us=int(fields["floor_us"]),
            read_to=int(fields["read_to"]),
            run=str(fields.get("run", "")),
            done_us=int(fields.get("done_us", NO_WATERMARK)),
            window=None if window is None else _window(window),
        )
    except (ValueError, TypeError, KeyError):
        return None


def _window(value: object) -> Window:
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError(f"not a window: {value!r}")
    size_us, period_us, lateness_us = (int(v) for v in value)
    return size_us, period_us, lateness_us


def encode_acked(run: str, acked_us: int) -> str:
    """The sinks' acknowledged progress (see the module docstring), as commit metadata."""
    return json.dumps({"kldrift": METADATA_VERSION, "run": run, "acked_us": acked_us})


def decode_acked(metadata: str | None, run: str) -> int | None:
    """The acknowledged progress this run's sinks committed; None if none (or another run's)."""
    try:
        fields = json.loads(metadata or "")
        if not isinstance(fields, dict) or fields.get("run") != run:
            return None
        return int(fields["acked_us"])
    except (ValueError, TypeError, KeyError):
        return None


def resume_point(topic: str, committed: Mapping[int, str | None]) -> ResumePoint | None:
    """What a restart takes from the committed metadata per partition: the newest floor (each is
    a claim of its own) and the offsets read; None when no partition carries kldrift's metadata."""
    newest: PartitionResume | None = None
    read_to: dict[tuple[str, int], int] = {}
    for partition, metadata in committed.items():
        fields = decode(metadata)
        if fields is None:
            continue
        if newest is None or fields.floor_us > newest.floor_us:
            newest = fields
        read_to[(topic, partition)] = fields.read_to
    if newest is None:
        return None
    return ResumePoint(floor_us=newest.floor_us, read_to=read_to, window=newest.window)


def geometry_change(resume: ResumePoint, window: Window) -> str | None:
    """What differs between the window a resume point was written with and `window` (None if
    nothing does, nothing was reported yet, or the point predates kept windows)."""
    if resume.window is None or resume.floor_us == NO_WATERMARK or resume.window == window:
        return None
    names = ("window.size", "window.period", "window.allowed_lateness")
    return ", ".join(
        f"{name} {before / 1e6:g} s -> {after / 1e6:g} s"
        for name, before, after in zip(names, resume.window, window, strict=True)
        if before != after
    )


def complete_from_us(resume: ResumePoint) -> int:
    """The earliest event time from which the committed offsets hold every record: a record before
    them belongs only to windows closed by the floor, so its pane started at or before
    floor - size - allowed_lateness of the window it was counted in."""
    assert resume.window is not None
    size_us, period_us, lateness_us = resume.window
    return resume.floor_us - size_us - lateness_us + period_us


def reset_for_window(resume: ResumePoint, window: Window) -> ResumePoint:
    """A resume point for a changed `window` (`kldrift run --reset-resume`): read from the
    committed offsets as before, but report only the new windows starting at or after
    complete_from_us (complete from there on); earlier ones are counted as reported."""
    size_us, _, lateness_us = window
    first_start_us = complete_from_us(resume)
    # reported_until_us = floor - lateness; windows ending after it start at >= first_start_us.
    floor_us = first_start_us + size_us - 1 + lateness_us
    return ResumePoint(floor_us=floor_us, read_to=resume.read_to, window=window)


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


def read_resume_point(
    spec: KafkaSpec, topic: str, partitions: list[int], group_id: str
) -> ResumePoint | None:
    """What the group's committed offsets say previous runs reported and read (their metadata,
    written by kafka_source), for `start_from: committed`; None on a first run."""
    from kafka import KafkaConsumer, TopicPartition

    from kldrift.io.kafka_client import client_settings

    consumer = KafkaConsumer(**client_settings(spec, "consumer"), group_id=group_id)
    try:
        committed = {
            p: consumer.committed(TopicPartition(topic, p), metadata=True) for p in partitions
        }
    finally:
        consumer.close()
    return resume_point(
        topic, {p: getattr(offset, "metadata", None) for p, offset in committed.items()}
    )
