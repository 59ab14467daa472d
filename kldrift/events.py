"""Raw records to decoded events: JSON parse, event time, key. Malformed records become dead letters.

Pure Python/numpy, shared by every driver (Kafka source, file replay, baseline builder).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
from msgspec.json import Decoder as _JSONDecoder

from kldrift.event_columns import ColumnReader
from kldrift.schemas.config import PipelineConfig, datetime_us

NO_WATERMARK = -(2**63)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)

# Numeric event times are accepted over the range RFC 3339 text can express (years 1-9999); beyond
# it (e.g. microseconds sent as seconds) the record is a dead letter, not an int64 overflow.
_MIN_EVENT_TIME_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00Z
_MAX_EVENT_TIME_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z
# Numeric times strictly within +-this (about 1,900 years either side of 1970, inside the range
# above) are valid whatever their unit and rounding: EventDecoder checks them inline.
_FAST_EVENT_TIME_LIMIT_US = 60_000_000_000_000_000

MAX_NESTING = 100
"""The deepest JSON nesting (objects and arrays) a record may have. Deeper records are dead
letters (`too_deep`) whatever the call stack's depth where they are parsed, so replay and
streaming agree and no later step (a coder, a repr) can hit Python's recursion limit."""
MAX_KEY_CHARS = 1000
"""The longest key_field value: every report's message key carries it."""

DEAD_LETTER_REASONS: dict[str, str] = {
    "null_value": "the record has no value (a Kafka tombstone)",
    "not_json": "not JSON: empty, invalid UTF-8, bad syntax, or an integer of over 4,300 digits",
    "too_deep": f"JSON nested more than {MAX_NESTING} levels deep",
    "not_object": "JSON, but not an object",
    "not_wire_format": "kafka.format avro/protobuf: not in the Confluent wire format (no magic "
    "byte 0 and 4-byte schema id)",
    "unknown_schema": "kafka.format avro/protobuf: the registry has no schema of that format "
    "with the record's id",
    "undecodable": "kafka.format avro/protobuf: the payload does not decode with its writer "
    "schema (truncated, corrupt, bytes left over)",
    "missing_event_time": "no event time field (or null)",
    "invalid_event_time": "an event time that is not epoch seconds/ms or RFC 3339, or whose "
    "windows lie outside years 1-9999",
    "future_event_time": "an event time more than kafka.max_future ahead of the reader's clock",
    "past_event_time": "an event time before min_event_time (default 2000-01-01T00:00:00Z): a "
    "producer clock far behind or unset (1970)",
    "missing_key": "no usable key_field value (absent, null, an object or a list)",
    "invalid_key": f"a key_field text longer than {MAX_KEY_CHARS} characters or not valid "
    "Unicode (a lone surrogate)",
    "too_late": "every window holding the event had closed (watermark past end + lateness)",
}
"""Every reason a record is dead-lettered for, and what it means (README's "Bins" lists them)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that was not binned, with why. `source` is a topic or file; `offset` a Kafka offset
    or a line number."""

    value: bytes | None
    """The raw record value; None for a Kafka tombstone. An event given as an object (a dict) is
    kept as its JSON text (values JSON cannot hold, such as datetimes, as their str())."""
    reason: str
    detail: str
    source: str = ""
    partition: int = -1
    offset: int = -1

    def __post_init__(self) -> None:
        if self.value is not None and type(self.value) is not bytes:
            object.__setattr__(self, "value", _raw_bytes(self.value))


def _raw_bytes(value: Any) -> bytes:
    if isinstance(value, bytearray):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return json.dumps(value, default=str, ensure_ascii=False).encode("utf-8", "surrogatepass")


@dataclass(slots=True)
class RecordBatch:
    """Raw records read together from one partition (or one file chunk), in read order."""

    values: Sequence[bytes | None]
    offsets: list[int]
    source: str = ""
    partition: int = -1
    watermark_us: int = NO_WATERMARK
    """The reading partition's watermark before this batch: events whose every window closed
    before it are dead-lettered as too late."""
    max_event_time_us: int | None = None
    """Events after this are dead-lettered as `future_event_time` (the Kafka reader sets its wall
    clock + kafka.max_future; bounded replays set none)."""


@dataclass(slots=True)
class EventBatch:
    """Decoded events of one RecordBatch, plus the records that could not be decoded.

    The events are dicts (`events`), or, decoded by `EventDecoder.decode_columns`, only the
    fields the job reads, one list per field path (`columns`; `events` is then empty): either
    way `column(path)` gives a field's values, event by event."""

    events: list[dict[str, Any]]
    event_time_us: np.ndarray
    keys: list[str | None]
    values: list[bytes]
    offsets: list[int]
    source: str = ""
    partition: int = -1
    watermark_us: int = NO_WATERMARK
    dead_letters: list[DeadLetter] = field(default_factory=list)
    columns: dict[str, list[Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.event_time_us)

    @property
    def records(self) -> int:
        """Records this batch accounts for: decoded events plus dead letters."""
        return len(self) + len(self.dead_letters)

    def column(self, path: str) -> list[Any]:
        """The (dotted) field `path` of every event, in order; absent or null: None."""
        values = self.columns.get(path)
        if values is None:
            if len(self.events) != len(self):
                raise KeyError(f"field {path!r} was not decoded (EventDecoder.decode_columns)")
            get = field_getter(path)
            values = self.columns[path] = [get(e) for e in self.events]
        return values

    def take(self, rows: np.ndarray, **changes: Any) -> EventBatch:
        """The events of `rows` (indices, in order), no dead letters; `changes` as in
        dataclasses.replace."""
        picked = rows.tolist()
        fields: dict[str, Any] = {
            "events": [self.events[i] for i in picked] if self.events else [],
            "event_time_us": self.event_time_us[rows],
            "keys": [self.keys[i] for i in picked],
            "values": [self.values[i] for i in picked],
            "offsets": [self.offsets[i] for i in picked],
            "source": self.source,
            "partition": self.partition,
            "watermark_us": self.watermark_us,
            "dead_letters": [],
            "columns": {p: [c[i] for i in picked] for p, c in self.columns.items()},
        }
        fields.update(changes)
        return EventBatch(**fields)


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
    """Decodes raw JSON records per the config's event_time_field, event_time_unit, key_field and
    min_event_time.

    Never raises for a record's content: every record comes out as an event or a dead letter
    with one of DEAD_LETTER_REASONS."""

    def __init__(self, config: PipelineConfig) -> None:
        self._time_field = config.event_time_field
        self._get_time = field_getter(config.event_time_field)
        self._time_scale_us = 1_000_000 if config.event_time_unit == "s" else 1_000
        self._key_field = config.key_field
        self._get_key = field_getter(config.key_field) if config.key_field else None
        # Every window holding an accepted event must be expressible as RFC 3339 (years 1-9999).
        self._min_time_us = _MIN_EVENT_TIME_US + config.window.size_us
        self._max_time_us = _MAX_EVENT_TIME_US - config.window.size_us
        self._floor_us = config.min_event_time_us
        # A unit's margin above the floor: a float time that close to it is checked exactly.
        self._fast_min_us = max(
            -_FAST_EVENT_TIME_LIMIT_US, self._min_time_us, self._floor_us + self._time_scale_us
        )
        self._fast_max_us = min(_FAST_EVENT_TIME_LIMIT_US, self._max_time_us)
        features = [f.name for f in config.features if f.kind != "joint"]
        # decode_columns reads these fields, and no other, of a JSON record.
        self._columns = ColumnReader(
            [config.event_time_field, *([config.key_field] if config.key_field else []), *features],
            MAX_NESTING,
        )
        self._features = tuple(features)

    def decode(self, batch: RecordBatch, times_us: Sequence[int] | None = None) -> EventBatch:
        """Records -> events and dead letters (with the batch's source and offsets).

        A value is JSON (``bytes``, ``bytearray`` or ``str``), None (a Kafka tombstone), or an
        event already parsed (a ``dict``; anything else is a `not_object` dead letter). With
        `times_us`, those are the events' times and the event time field is not read.
        """
        parsed: list[Any] = []
        problems: dict[int, tuple[str, str]] = {}
        # msgspec, ~3x faster; whatever it refuses (NaN/Infinity, lone surrogates, other encodings
        # than UTF-8, bad JSON...) is parsed by json.loads, so the event or dead letter is always
        # json.loads's.
        loads = json.loads
        fast_loads = _fast_loads
        shallow_bytes = _SHALLOW_BYTES
        for row, value in enumerate(batch.values):
            if type(value) is dict:  # an event already parsed (a Parquet or Avro record...)
                parsed.append(value)
                continue
            try:
                if type(value) is not bytes:
                    raise TypeError  # a tombstone (None), str, dict...: handled below
                event = fast_loads(value)
            except Exception:
                try:
                    event = loads(value)  # type: ignore[arg-type]
                except ValueError as err:  # JSONDecodeError, UnicodeDecodeError: ValueErrors
                    problems[row] = ("not_json", "empty value" if not value else str(err)[:200])
                    parsed.append(None)
                    continue
                except RecursionError:
                    problems[row] = _too_deep_problem()
                    parsed.append(None)
                    continue
                except TypeError:  # not text: None is a tombstone, anything else an object
                    if value is None:
                        problems[row] = ("null_value", "the record has no value (a tombstone)")
                    parsed.append(value)
                    continue
            # Parsed JSON text (bytes, bytearray or str): its nesting is bounded.
            if len(value) > shallow_bytes and _nesting_exceeds(value, event):  # type: ignore[arg-type]
                event, problems[row] = None, _too_deep_problem()
            parsed.append(event)
        return self._accept(parsed, problems, batch, times_us)

    def decode_columns(self, batch: RecordBatch) -> EventBatch:
        """As `decode`, with the events as the config's feature fields (EventBatch.columns; no
        dicts): the same events, times, keys and dead letters in the same order. JSON records
        read as kldrift.event_columns reads them take a path without a Python step per record
        where their event times and keys are plain; every other record goes through `decode`."""
        if len(batch.offsets) != len(batch.values):
            raise ValueError(f"{len(batch.values)} record values but {len(batch.offsets)} offsets")
        structs = self._columns.structs(batch.values)
        if None in structs:
            fast_rows = np.flatnonzero([s is not None for s in structs])
            structs = [structs[i] for i in fast_rows.tolist()]
        else:
            fast_rows = np.arange(len(structs))
        times_us, accepted = self._plain_times(
            self._columns.column(self._time_field, structs), batch.max_event_time_us
        )
        keys: list[Any] = [None] * len(structs)
        if self._key_field is not None:
            keys = self._columns.column(self._key_field, structs)
            accepted &= _plain_keys(keys)
        if accepted.all() and len(fast_rows) == len(batch.values):
            return EventBatch(
                events=[],
                event_time_us=times_us,
                keys=keys,
                values=list(batch.values),  # type: ignore[arg-type]  # all bytes here
                offsets=list(batch.offsets),
                source=batch.source,
                partition=batch.partition,
                watermark_us=batch.watermark_us,
                columns={f: self._columns.column(f, structs) for f in self._features},
            )
        return self._merge_general(batch, fast_rows, structs, times_us, keys, accepted)

    def _merge_general(
        self,
        batch: RecordBatch,
        fast_rows: np.ndarray,
        structs: list[Any],
        times_us: np.ndarray,
        keys: list[Any],
        accepted: np.ndarray,
    ) -> EventBatch:
        """decode_columns where some records need `decode`: theirs merged with the others'."""
        kept = np.flatnonzero(accepted)
        fast = fast_rows[kept].tolist()
        general_rows = sorted(set(range(len(batch.values))) - set(fast))
        # Decoded with row numbers for offsets: its events and dead letters say their rows.
        general = self.decode(
            RecordBatch(
                [batch.values[r] for r in general_rows],
                general_rows,
                batch.source,
                batch.partition,
                batch.watermark_us,
                batch.max_event_time_us,
            )
        )
        rows = fast + general.offsets
        order = np.argsort(rows, kind="stable")
        kept_structs = [structs[i] for i in kept.tolist()]
        columns = {}
        for feature in self._features:
            values = self._columns.column(feature, kept_structs) + general.column(feature)
            columns[feature] = [values[i] for i in order.tolist()]
        all_keys = [keys[i] for i in kept.tolist()] + general.keys
        offsets = batch.offsets
        return EventBatch(
            events=[],
            event_time_us=np.concatenate([times_us[kept], general.event_time_us])[order],
            keys=[all_keys[i] for i in order.tolist()],
            values=[batch.values[rows[i]] for i in order.tolist()],
            offsets=[offsets[rows[i]] for i in order.tolist()],
            source=batch.source,
            partition=batch.partition,
            watermark_us=batch.watermark_us,
            dead_letters=[replace(d, offset=offsets[d.offset]) for d in general.dead_letters],
            columns=columns,
        )

    def _plain_times(
        self, raw: list[Any], max_time_us: int | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Event times (us) of the raw values `decode` takes without a check (all numbers of
        one type, well inside the valid range), and which those are; the others' times are 0."""
        scale = self._time_scale_us
        fast_max_us = self._fast_max_us
        if max_time_us is not None:
            fast_max_us = min(fast_max_us, max_time_us - 1_000_000)  # a second's margin: rounding
        low, high = self._fast_min_us / scale, fast_max_us / scale
        types = set(map(type, raw))
        if types == {float}:
            numbers = np.array(raw, dtype=np.float64)
            accepted = (numbers > low) & (numbers < high)
            # As decode's math.floor(raw * scale): the same float product, floored.
            times_us = np.floor(np.where(accepted, numbers, 0.0) * scale).astype(np.int64)
        elif types == {int} and all(abs(t) < 2**62 for t in (min(raw), max(raw))):
            integers = np.array(raw, dtype=np.int64)
            # Exact: an int64 beyond 2**53 converts inexactly, but lies far outside (low, high).
            accepted = (integers > low) & (integers < high)
            times_us = np.where(accepted, integers, 0) * scale
        else:  # mixed: decode's own inline check, value by value
            times_us = np.fromiter(
                (
                    math.floor(t * scale) if type(t) in _NUMBER_TYPES and low < t < high else 0
                    for t in raw
                ),
                np.int64,
                len(raw),
            )
            accepted = np.ones(len(raw), bool)
        accepted &= times_us != 0
        return times_us, accepted

    def decode_parsed(
        self,
        batch: RecordBatch,
        parsed: list[Any],
        problems: dict[int, tuple[str, str]],
        times_us: Sequence[int] | None = None,
    ) -> EventBatch:
        """Records another format decoded (kldrift.formats): `parsed[row]` is row's event (a
        dict), or `problems[row]` why it has none. Dead letters keep the raw values of `batch`.
        With `times_us`, those are the events' times (as in `decode`)."""
        return self._accept(parsed, problems, batch, times_us)

    def _accept(
        self,
        parsed: list[Any],
        problems: dict[int, tuple[str, str]],
        batch: RecordBatch,
        times_us: Sequence[int] | None,
    ) -> EventBatch:
        """Parsed records -> events (event time, key) and dead letters (`problems`, and whatever
        fails the time and key checks)."""
        events: list[dict[str, Any]] = []
        times: list[int] = []
        keys: list[str | None] = []
        dead: list[DeadLetter] = []
        dead_rows: list[int] = []
        # The common record (an object, a finite epoch time well inside the valid range, not
        # before min_event_time and not in the future, an ASCII text key of usual length or none)
        # is checked inline; anything else takes the general path, which says why.
        get_time = self._get_time
        get_key = self._get_key
        scale = self._time_scale_us
        max_time_us = batch.max_event_time_us
        fast_max_us = self._fast_max_us
        if max_time_us is not None:
            fast_max_us = min(fast_max_us, max_time_us - 1_000_000)  # a second's margin: rounding
        fast_min_us = self._fast_min_us
        fast_low = fast_min_us / scale
        fast_high = fast_max_us / scale
        problem: tuple[str, str] | None
        for row, event in enumerate(parsed):
            problem = problems.get(row) if problems else None
            if problem is None and type(event) is dict and times_us is None:
                raw_time = get_time(event)
                time_type = type(raw_time)
                if time_type is float or time_type is int:
                    time_us = math.floor(raw_time * scale) if fast_low < raw_time < fast_high else 0
                elif time_type is datetime:  # a Parquet or Avro timestamp (naive: UTC)
                    since = raw_time - (_NAIVE_EPOCH if raw_time.tzinfo is None else EPOCH)
                    # Its fields, not `since // timedelta(microseconds=1)`: twice as fast.
                    time_us = (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds
                    time_us = time_us if fast_min_us < time_us < fast_max_us else 0
                else:
                    time_us = 0
                if time_us:
                    key = None if get_key is None else get_key(event)
                    if get_key is None or (
                        type(key) is str and len(key) <= MAX_KEY_CHARS and key.isascii()
                    ):
                        events.append(event)
                        times.append(time_us)
                        keys.append(key)
                        continue
            if problem is None:
                given = None if times_us is None else times_us[row]
                time_us, key, problem = self._check(event, max_time_us, given)
            if problem is not None:
                reason, detail = problem
                dead_rows.append(row)
                dead.append(
                    DeadLetter(
                        batch.values[row],
                        reason,
                        detail,
                        batch.source,
                        batch.partition,
                        batch.offsets[row],
                    )
                )
                continue
            events.append(event)
            times.append(time_us)
            keys.append(key)
        values, offsets = batch.values, batch.offsets
        if len(offsets) != len(values):
            raise ValueError(f"{len(values)} record values but {len(offsets)} offsets")
        if dead_rows:
            dead_set = set(dead_rows)
            kept = [row for row in range(len(values)) if row not in dead_set]
            values = [values[row] for row in kept]
            offsets = [offsets[row] for row in kept]
        return EventBatch(
            events=events,
            event_time_us=np.asarray(times, dtype=np.int64),
            keys=keys,
            values=list(values),  # type: ignore[arg-type]  # tombstones are dead letters
            offsets=list(offsets),
            source=batch.source,
            partition=batch.partition,
            watermark_us=batch.watermark_us,
            dead_letters=dead,
        )

    def _check(
        self, event: Any, max_time_us: int | None, given_time_us: int | None = None
    ) -> tuple[int, str | None, tuple[str, str] | None]:
        """A parsed record's event time (`given_time_us` when the caller has it) and key, or why
        it is a dead letter."""
        if not isinstance(event, dict):
            return 0, None, ("not_object", f"a {_json_type(event)}, not an object")
        if given_time_us is not None:
            if not self._min_time_us <= given_time_us <= self._max_time_us:
                return 0, None, ("invalid_event_time", _outside_years(given_time_us))
            time_us: int | None = given_time_us
        else:
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
                    f"or RFC 3339 within years 1-9999: {_excerpt(raw_time)}",
                ),
            )
        if time_us < self._floor_us:
            return (
                0,
                None,
                (
                    "past_event_time",
                    f"event time {_rfc3339(time_us)} is before min_event_time "
                    f"{_rfc3339(self._floor_us)}",
                ),
            )
        if max_time_us is not None and time_us > max_time_us:
            return (
                0,
                None,
                (
                    "future_event_time",
                    f"event time {_rfc3339(time_us)} is after {_rfc3339(max_time_us)} "
                    "(the reader's clock + kafka.max_future)",
                ),
            )
        key: str | None = None
        if self._get_key is not None:
            raw_key = self._get_key(event)
            if raw_key is None or isinstance(raw_key, dict | list):
                return 0, None, ("missing_key", f"no usable key field {self._key_field!r}")
            key = _key_text(raw_key)
            if len(key) > MAX_KEY_CHARS:
                return (
                    0,
                    None,
                    (
                        "invalid_key",
                        f"key field {self._key_field!r} has {len(key)} characters, more than "
                        f"{MAX_KEY_CHARS}",
                    ),
                )
            if not key.isascii() and not encodable(key):
                return (
                    0,
                    None,
                    (
                        "invalid_key",
                        f"key field {self._key_field!r} is not valid Unicode text: {_excerpt(key)}",
                    ),
                )
        return time_us, key, None

    @property
    def _time_unit_name(self) -> str:
        return "seconds" if self._time_scale_us == 1_000_000 else "milliseconds"

    def _event_time_us(self, raw: Any) -> int | None:
        if isinstance(raw, bool):
            return None
        if isinstance(raw, int):  # exact, whatever its size (no float conversion)
            time_us: int | None = raw * self._time_scale_us
        elif isinstance(raw, float):  # finite, yet its microseconds may overflow to inf
            scaled = raw * self._time_scale_us
            time_us = math.floor(scaled) if math.isfinite(scaled) else None
        elif isinstance(raw, str):
            time_us = parse_rfc3339_us(raw)
        elif isinstance(raw, datetime):  # events given as Python objects (dicts, Beam Rows)
            time_us = datetime_us(raw)
        elif isinstance(raw, date):  # a Parquet or Avro date: its midnight, as "2026-11-25" is
            time_us = datetime_us(datetime(raw.year, raw.month, raw.day))
        elif type(getattr(raw, "micros", None)) is int:  # apache_beam.utils.timestamp.Timestamp
            time_us = raw.micros
        else:
            return None
        if time_us is None or not self._min_time_us <= time_us <= self._max_time_us:
            return None
        return time_us


_NUMBER_TYPES = frozenset({int, float})


def _plain_keys(keys: list[Any]) -> np.ndarray:
    """Which keys `decode` takes without a check: ASCII text of at most MAX_KEY_CHARS."""
    try:
        distinct = set(keys)
    except TypeError:  # a list or an object
        distinct = None
    if distinct is not None and all(_plain_key(k) for k in distinct):
        return np.ones(len(keys), bool)
    return np.fromiter(map(_plain_key, keys), bool, len(keys))


def _plain_key(key: Any) -> bool:
    return type(key) is str and len(key) <= MAX_KEY_CHARS and key.isascii()


_fast_loads = _JSONDecoder().decode
"""msgspec's JSON decoder: the same values as json.loads for what it accepts (big integers exact),
about 3x faster; EventDecoder hands everything it refuses to json.loads."""

_SHALLOW_BYTES = 2 * MAX_NESTING + 1
"""A record this short cannot nest deeper than MAX_NESTING (each level takes two bytes)."""


def _nesting_exceeds(value: bytes | bytearray | str, parsed: Any) -> bool:
    """Whether a parsed record nests objects/arrays deeper than MAX_NESTING. Counting brackets (in
    strings too) bounds the depth from above, so the walk runs only for bracket-heavy records."""
    if isinstance(value, str):
        brackets = value.count("[") + value.count("{")
    else:
        brackets = len(value) - len(value.translate(None, b"[{"))
    if brackets <= MAX_NESTING:
        return False
    level = [(parsed, 1)]
    while level:
        node, depth = level.pop()
        if depth > MAX_NESTING:
            return True
        if isinstance(node, dict):
            level.extend((child, depth + 1) for child in node.values() if type(child) in _NESTED)
        elif isinstance(node, list):
            level.extend((child, depth + 1) for child in node if type(child) in _NESTED)
    return False


_NESTED = frozenset({dict, list})


def _json_type(value: Any) -> str:
    """How a non-object record reads in a dead letter: `a JSON list`, `a Python int`..."""
    kind = type(value)
    if kind in (list, str, int, float, bool) or value is None:
        return f"JSON {kind.__name__}"
    return f"Python {kind.__name__}"


def _outside_years(time_us: int) -> str:
    return (
        f"the element's timestamp ({time_us} microseconds since the epoch) leaves a window outside "
        "years 1-9999: an element without an event-time timestamp? (use event_time='field')"
    )


def _too_deep_problem() -> tuple[str, str]:
    return "too_deep", f"JSON nested more than {MAX_NESTING} levels deep"


def encodable(text: str) -> bool:
    """Whether text is valid Unicode (no lone surrogate, which JSON can carry but UTF-8 cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _excerpt(value: Any) -> str:
    """A short repr of a JSON value for a dead letter's detail (ASCII, at most ~60 characters)."""
    text = ascii(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _rfc3339(micros: int) -> str:
    return (EPOCH + timedelta(microseconds=micros)).isoformat().replace("+00:00", "Z")


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
    return datetime_us(moment)


def batch_records(values: Sequence[bytes], offsets: Sequence[int], **kwargs: Any) -> RecordBatch:
    return RecordBatch(values=list(values), offsets=list(offsets), **kwargs)


def dead_letter_json(dead_letter: DeadLetter) -> bytes:
    """A dead letter as one JSON line (the raw value as text, base64 when it is not UTF-8, null for
    a tombstone)."""
    record: dict[str, Any] = {
        "reason": dead_letter.reason,
        "detail": dead_letter.detail,
        "source": dead_letter.source,
        "partition": dead_letter.partition,
        "offset": dead_letter.offset,
    }
    if dead_letter.value is None:
        record["value"] = None  # a tombstone
        return json.dumps(record).encode()
    try:
        record["value"] = dead_letter.value.decode("utf-8")
    except UnicodeDecodeError:
        record["value_base64"] = base64.b64encode(dead_letter.value).decode()
    return json.dumps(record).encode()
