"""Raw records to decoded events: JSON parse, event time, key. Malformed records become dead letters.

Pure Python/numpy, shared by every driver (Kafka source, file replay, baseline builder).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from kldrift.schemas.config import PipelineConfig

NO_WATERMARK = -(2**63)

# Numeric event times are accepted over the range RFC 3339 text can express (years 1-9999); beyond
# it (e.g. microseconds sent as seconds) the record is a dead letter, not an int64 overflow.
_MIN_EVENT_TIME_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z
_MAX_EVENT_TIME_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z
# Numeric times strictly within +-this (about 1,900 years either side of 1970, inside the range
# above) are valid whatever their unit and rounding: EventDecoder checks them inline.
_FAST_EVENT_TIME_LIMIT_US = 60_000_000_000_000_000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that was not binned, with why. `source` is a topic or file; `offset` a Kafka offset
    or a line number."""

    value: bytes
    reason: str
    detail: str
    source: str = ""
    partition: int = -1
    offset: int = -1


@dataclass(frozen=True)
class ResumePoint:
    """Where a restarted streaming job picks up from its committed offsets (see kafka_source).

    Every window whose end + allowed_lateness <= `floor_us` was reported by the previous run; the
    records below `read_to[(topic, partition)]` were read (binned or dead-lettered) by it. A record
    read again whose every window closed by the floor is skipped, and windows closed by the floor
    are not reported again, so nothing is counted twice and no window is reported partial.
    """

    floor_us: int
    read_to: dict[tuple[str, int], int]

    def read_before(self, source: str, partition: int, offset: int) -> bool:
        return offset < self.read_to.get((source, partition), -1)


@dataclass(slots=True)
class RecordBatch:
    """Raw records read together from one partition (or one file chunk), in read order."""

    values: list[bytes]
    offsets: list[int]
    source: str = ""
    partition: int = -1
    watermark_us: int = NO_WATERMARK
    """The reading partition's watermark before this batch: events whose every window closed
    before it are dead-lettered as too late."""


@dataclass(slots=True)
class EventBatch:
    """Decoded events of one RecordBatch, plus the records that could not be decoded."""

    events: list[dict[str, Any]]
    event_time_us: np.ndarray
    keys: list[str | None]
    values: list[bytes]
    offsets: list[int]
    source: str = ""
    partition: int = -1
    watermark_us: int = NO_WATERMARK
    dead_letters: list[DeadLetter] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.events)

    @property
    def records(self) -> int:
        """Records this batch accounts for: decoded events plus dead letters."""
        return len(self.events) + len(self.dead_letters)


def field_getter(path: str):
    """A function reading a (possibly dotted, nested) field of an event; absent -> None."""
    parts = tuple(path.split("."))
    if len(parts) == 1:
        name = parts[0]
        return lambda event: event.get(name)

    def get(event: dict[str, Any]) -> Any:
        value: Any = event
        for part in parts:
            if not isinstance(value, dict):
                return None
            value = value.get(part)
        return value

    return get


class EventDecoder:
    """Decodes raw JSON records per the config's event_time_field, event_time_unit and key_field."""

    def __init__(self, config: PipelineConfig) -> None:
        self._time_field = config.event_time_field
        self._get_time = field_getter(config.event_time_field)
        self._time_scale_us = 1_000_000 if config.event_time_unit == "s" else 1_000
        self._key_field = config.key_field
        self._get_key = field_getter(config.key_field) if config.key_field else None

    def decode(self, batch: RecordBatch) -> EventBatch:
        events: list[dict[str, Any]] = []
        times: list[int] = []
        keys: list[str | None] = []
        dead: list[DeadLetter] = []
        dead_rows: list[int] = []
        # The common record (an object, a finite epoch time well inside the valid range, a text key
        # or none) is checked inline; anything else takes the general path, which says why.
        loads = json.loads
        get_time = self._get_time
        get_key = self._get_key
        scale = self._time_scale_us
        fast_limit = _FAST_EVENT_TIME_LIMIT_US / scale
        problem: tuple[str, str] | None
        for row, value in enumerate(batch.values):
            try:
                event = loads(value)
            except (ValueError, UnicodeDecodeError) as err:
                event, problem = None, ("not_json", str(err)[:200])
            else:
                problem = None
            if problem is None and type(event) is dict:
                raw_time = get_time(event)
                time_type = type(raw_time)
                if (time_type is float or time_type is int) and -fast_limit < raw_time < fast_limit:
                    key = None if get_key is None else get_key(event)
                    if get_key is None or type(key) is str:
                        events.append(event)
                        times.append(math.floor(raw_time * scale))
                        keys.append(key)
                        continue
            if problem is None:
                time_us, key, problem = self._check(event)
            if problem is not None:
                reason, detail = problem
                dead_rows.append(row)
                dead.append(
                    DeadLetter(
                        value, reason, detail, batch.source, batch.partition, batch.offsets[row]
                    )
                )
                continue
            events.append(event)
            times.append(time_us)
            keys.append(key)
        values, offsets = batch.values, batch.offsets
        if dead_rows:
            dead_set = set(dead_rows)
            kept = [row for row in range(len(values)) if row not in dead_set]
            values = [values[row] for row in kept]
            offsets = [offsets[row] for row in kept]
        elif len(offsets) != len(values):
            raise ValueError(f"{len(values)} record values but {len(offsets)} offsets")
        return EventBatch(
            events=events,
            event_time_us=np.asarray(times, dtype=np.int64),
            keys=keys,
            values=list(values),
            offsets=list(offsets),
            source=batch.source,
            partition=batch.partition,
            watermark_us=batch.watermark_us,
            dead_letters=dead,
        )

    def _check(self, event: Any) -> tuple[int, str | None, tuple[str, str] | None]:
        """A parsed record's event time and key, or why it is a dead letter."""
        if not isinstance(event, dict):
            return 0, None, ("not_object", f"a JSON {type(event).__name__}, not an object")
        raw_time = self._get_time(event)
        if raw_time is None:
            return 0, None, ("missing_event_time", f"no field {self._time_field!r}")
        time_us = self._event_time_us(raw_time)
        if time_us is None:
            return (
                0,
                None,
                (
                    "invalid_event_time",
                    f"field {self._time_field!r} is not epoch {self._time_unit_name} "
                    f"or RFC 3339: {str(raw_time)[:60]!r}",
                ),
            )
        key: str | None = None
        if self._get_key is not None:
            raw_key = self._get_key(event)
            if raw_key is None or isinstance(raw_key, dict | list):
                return 0, None, ("missing_key", f"no usable key field {self._key_field!r}")
            key = _key_text(raw_key)
        return time_us, key, None

    @property
    def _time_unit_name(self) -> str:
        return "seconds" if self._time_scale_us == 1_000_000 else "milliseconds"

    def _event_time_us(self, raw: Any) -> int | None:
        if isinstance(raw, bool):
            return None
        if isinstance(raw, int | float):
            if not math.isfinite(raw):
                return None
            time_us = math.floor(raw * self._time_scale_us)
            return time_us if _MIN_EVENT_TIME_US <= time_us <= _MAX_EVENT_TIME_US else None
        if isinstance(raw, str):
            return parse_rfc3339_us(raw)
        return None


def _key_text(raw: Any) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return raw if isinstance(raw, str) else str(raw)


def parse_rfc3339_us(text: str) -> int | None:
    """Microseconds since the epoch from RFC 3339 text; naive times are taken as UTC."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def batch_records(values: Sequence[bytes], offsets: Sequence[int], **kwargs: Any) -> RecordBatch:
    return RecordBatch(values=list(values), offsets=list(offsets), **kwargs)


def dead_letter_json(dead_letter: DeadLetter) -> bytes:
    """A dead letter as one JSON line (the raw value as text, or base64 when it is not UTF-8)."""
    record: dict[str, Any] = {
        "reason": dead_letter.reason,
        "detail": dead_letter.detail,
        "source": dead_letter.source,
        "partition": dead_letter.partition,
        "offset": dead_letter.offset,
    }
    try:
        record["value"] = dead_letter.value.decode("utf-8")
    except UnicodeDecodeError:
        record["value_base64"] = base64.b64encode(dead_letter.value).decode()
    return json.dumps(record).encode()
