"""Raw records to events: JSON, event time, key; every malformed record becomes a dead letter."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kldrift.events import (
    NO_WATERMARK,
    DeadLetter,
    EventBatch,
    EventDecoder,
    RecordBatch,
    dead_letter_json,
)
from kldrift.schemas.config import parse_config

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
YEAR_1 = "0001-01-01T00:00:00Z"  # a min_event_time that lets every time RFC 3339 can write through


def _us(moment: datetime) -> int:
    """Epoch microseconds, by exact timedelta arithmetic."""
    return (moment - EPOCH) // timedelta(microseconds=1)


def _decoder(**fields: Any) -> EventDecoder:
    config = {
        "name": "m",
        "event_time_field": "ts",
        "window": {"size": "10m", "period": "1m"},
        "features": [{"name": "x", "kind": "numeric", "edges": [0]}],
        **fields,
    }
    return EventDecoder(parse_config(config))


def _decode(values: list[bytes], decoder: EventDecoder | None = None, **kwargs: Any) -> EventBatch:
    batch = RecordBatch(values=values, offsets=list(range(100, 100 + len(values))), **kwargs)
    return (decoder or _decoder()).decode(batch)


def _one_dead_letter(value: bytes, decoder: EventDecoder | None = None) -> DeadLetter:
    decoded = _decode([value], decoder)
    assert len(decoded) == 0
    assert len(decoded.dead_letters) == 1
    return decoded.dead_letters[0]


def _time_us(raw_time: Any, decoder: EventDecoder | None = None) -> int:
    decoded = _decode([json.dumps({"ts": raw_time, "x": 1}).encode()], decoder)
    assert decoded.dead_letters == [], decoded.dead_letters
    return int(decoded.event_time_us[0])


# --- dead letters ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [b"not json", b'{"ts": 1', b"", b"\xff\xfe\xfa"])
def test_not_json_is_dead_lettered(value: bytes) -> None:
    assert _one_dead_letter(value).reason == "not_json"


@pytest.mark.parametrize("value", [b"[1, 2]", b"42", b'"text"', b"null"])
def test_json_that_is_not_an_object_is_dead_lettered(value: bytes) -> None:
    dead = _one_dead_letter(value)

    assert dead.reason == "not_object"
    assert dead.value == value


@pytest.mark.parametrize("value", [b'{"x": 1}', b'{"ts": null, "x": 1}', b"{}"])
def test_missing_event_time_is_dead_lettered(value: bytes) -> None:
    dead = _one_dead_letter(value)

    assert dead.reason == "missing_event_time"
    assert "'ts'" in dead.detail


@pytest.mark.parametrize(
    "raw_time",
    [True, False, "yesterday", "2024-13-01T00:00:00Z", "", [1], {"s": 1}, "NaN"],
)
def test_unusable_event_time_is_dead_lettered(raw_time: Any) -> None:
    dead = _one_dead_letter(json.dumps({"ts": raw_time}).encode())

    assert dead.reason == "invalid_event_time"
    assert "'ts'" in dead.detail


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_event_time_is_dead_lettered(literal: bytes) -> None:
    # Python's json accepts these non-standard literals; they are not times.
    assert _one_dead_letter(b'{"ts": ' + literal + b"}").reason == "invalid_event_time"


@pytest.mark.parametrize(
    "raw_time",
    [
        1_700_000_000_000_000,  # epoch microseconds sent to a seconds config
        10**30,
        -(10**30),
        1e300,
        253_402_300_800,  # 10000-01-01T00:00:00Z: one second past what RFC 3339 can write
    ],
)
def test_event_time_beyond_year_9999_is_dead_lettered_not_a_crash(raw_time: float) -> None:
    assert _one_dead_letter(json.dumps({"ts": raw_time}).encode()).reason == "invalid_event_time"


def test_missing_key_is_dead_lettered() -> None:
    decoder = _decoder(key_field="user")

    for user in [b"", b', "user": null', b', "user": {"id": 7}']:
        value = b'{"ts": 1700000000' + user + b"}"
        dead = _one_dead_letter(value, decoder)
        assert dead.reason == "missing_key"
        assert "'user'" in dead.detail


# --- min_event_time --------------------------------------------------------------------------

Y2K_S = 946_684_800  # 2000-01-01T00:00:00Z, the default min_event_time: 30 years of 365.25 days


def test_default_floor_is_2000() -> None:
    assert _us(datetime(2000, 1, 1, tzinfo=UTC)) == Y2K_S * 1_000_000
    assert _time_us(Y2K_S) == Y2K_S * 1_000_000  # at the floor: an event


@pytest.mark.parametrize(
    ("raw_time", "when"),
    [
        (-62_000_000_000, "0005-04-19T09:46:40Z"),  # -62e9 s = -717,593 days + 09:46:40
        (0, "1970-01-01T00:00:00Z"),  # an unset device clock
        (Y2K_S - 1, "1999-12-31T23:59:59Z"),
        (Y2K_S - 0.000001, "1999-12-31T23:59:59.999999Z"),  # a microsecond before
        ("1999-12-31T23:59:59.5Z", "1999-12-31T23:59:59.500000Z"),
        ("0005-04-19T09:46:40Z", "0005-04-19T09:46:40Z"),
    ],
)
def test_an_event_time_before_min_event_time_is_dead_lettered(raw_time: Any, when: str) -> None:
    dead = _one_dead_letter(json.dumps({"ts": raw_time, "x": 1}).encode())

    assert dead.reason == "past_event_time"
    assert dead.detail == f"event time {when} is before min_event_time 2000-01-01T00:00:00Z"


def test_just_after_the_floor_is_an_event_on_the_fast_path_and_off_it() -> None:
    decoder = _decoder(key_field="k")
    values = [
        b'{"ts": 946684800.000001, "k": "a"}',  # inside the fast path's margin
        b'{"ts": 946684801.5, "k": "a"}',  # past it
        b'{"ts": 946684801.5, "k": "\u00e9"}',  # a non-ASCII key: the general path
    ]

    decoded = _decode(values, decoder)

    assert decoded.dead_letters == []
    assert decoded.event_time_us.tolist() == [
        946_684_800_000_001,
        946_684_801_500_000,
        946_684_801_500_000,
    ]


@pytest.mark.parametrize(
    ("floor", "floor_text"),
    [
        ("2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z"),
        ("2024-01-01T02:00:00+02:00", "2024-01-01T00:00:00Z"),
        (1_704_067_200, "2024-01-01T00:00:00Z"),
        ("1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z"),
    ],
)
def test_min_event_time_as_text_or_epoch_seconds(floor: Any, floor_text: str) -> None:
    decoder = _decoder(min_event_time=floor, event_time_unit="ms")
    floor_ms = _us(datetime.fromisoformat(floor_text)) // 1000
    values = [json.dumps({"ts": floor_ms + d}).encode() for d in (-1, 0, 1)]

    decoded = _decode(values, decoder)

    assert decoded.event_time_us.tolist() == [floor_ms * 1000, (floor_ms + 1) * 1000]
    assert [d.reason for d in decoded.dead_letters] == ["past_event_time"]
    assert decoded.dead_letters[0].offset == 100
    assert decoded.dead_letters[0].detail.endswith(f"before min_event_time {floor_text}")


def test_given_timestamps_are_held_to_the_floor_too() -> None:
    # event_time="timestamp" in the library: the element timestamps are the events' times.
    floor_us = Y2K_S * 1_000_000
    times_us = [-62_000_000_000 * 1_000_000, 0, floor_us - 1, floor_us, floor_us + 1]
    batch = RecordBatch(values=[{"x": i} for i in range(5)], offsets=list(range(5)))

    decoded = _decoder().decode(batch, times_us)

    assert decoded.event_time_us.tolist() == [floor_us, floor_us + 1]
    assert [(d.offset, d.reason) for d in decoded.dead_letters] == [
        (0, "past_event_time"),
        (1, "past_event_time"),
        (2, "past_event_time"),
    ]


# --- event time ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "moment"),
    [
        ("2024-01-01T00:00:00Z", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01t00:00:00z", datetime(2024, 1, 1, tzinfo=UTC)),
        (
            "2024-01-01T02:00:00+02:00",  # the same instant as 00:00 UTC
            datetime(2024, 1, 1, tzinfo=UTC),
        ),
        (
            "2024-06-30T23:59:59.123456-07:30",
            datetime(2024, 7, 1, 7, 29, 59, 123456, tzinfo=UTC),
        ),
        ("1969-12-31T23:59:59.5Z", datetime(1969, 12, 31, 23, 59, 59, 500000, tzinfo=UTC)),
        ("2024-03-10T12:00:00", datetime(2024, 3, 10, 12, tzinfo=UTC)),  # naive = UTC
    ],
)
def test_rfc3339_event_time(text: str, moment: datetime) -> None:
    assert _time_us(text, _decoder(min_event_time=YEAR_1)) == _us(moment)


def test_rfc3339_offset_is_applied() -> None:
    # 2024-01-01T00:00:00+02:00 is 2023-12-31T22:00:00Z: two hours before midnight UTC.
    assert _time_us("2024-01-01T00:00:00Z") - _time_us("2024-01-01T00:00:00+02:00") == 7_200_000_000
    assert _time_us("2024-01-01T00:00:00+02:00") == 1_704_060_000 * 1_000_000


@pytest.mark.parametrize(
    ("raw_time", "expected_us"),
    [
        (1_704_067_200, 1_704_067_200_000_000),  # 2024-01-01T00:00:00Z
        (1_704_067_200.25, 1_704_067_200_250_000),
        (0, 0),
        (-1.5, -1_500_000),
    ],
)
def test_epoch_seconds_event_time(raw_time: float, expected_us: int) -> None:
    assert _time_us(raw_time, _decoder(min_event_time=YEAR_1)) == expected_us


def test_epoch_seconds_agree_with_rfc3339() -> None:
    moment = datetime(2024, 5, 17, 8, 30, 15, tzinfo=UTC)

    assert _time_us(moment.timestamp()) == _us(moment) == _time_us("2024-05-17T08:30:15Z")


@pytest.mark.parametrize(
    ("raw_time", "expected_us"),
    [
        (1_704_067_200_123, 1_704_067_200_123_000),  # ms -> us is * 1000
        (1_704_067_200_123.5, 1_704_067_200_123_500),
        ("2024-01-01T00:00:00Z", 1_704_067_200_000_000),  # text is not scaled
    ],
)
def test_epoch_milliseconds_event_time(raw_time: Any, expected_us: int) -> None:
    assert _time_us(raw_time, _decoder(event_time_unit="ms")) == expected_us


def test_dotted_event_time_field_reads_a_nested_field() -> None:
    decoder = _decoder(event_time_field="meta.time.event")
    value = b'{"meta": {"time": {"event": "2024-01-01T00:01:00Z"}}, "ts": 5}'

    decoded = _decode([value], decoder)

    assert decoded.event_time_us.tolist() == [_us(datetime(2024, 1, 1, 0, 1, tzinfo=UTC))]
    assert _one_dead_letter(b'{"meta": {"time": 5}}', decoder).reason == "missing_event_time"


# --- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw_key", "key"),
    [(7, "7"), ("eu-west", "eu-west"), (True, "true"), (2.5, "2.5"), ("", "")],
)
def test_key_is_text(raw_key: Any, key: str) -> None:
    decoded = _decode(
        [json.dumps({"ts": 1_700_000_000, "user": raw_key}).encode()], _decoder(key_field="user")
    )

    assert decoded.keys == [key]


def test_dotted_key_field() -> None:
    decoded = _decode([b'{"ts": 1700000000, "who": {"id": 7}}'], _decoder(key_field="who.id"))

    assert decoded.keys == ["7"]


def test_keys_are_none_without_a_key_field() -> None:
    decoded = _decode([b'{"ts": 1700000001, "user": 7}', b'{"ts": 1700000002}'])

    assert decoded.keys == [None, None]


# --- the batch -------------------------------------------------------------------------------


def test_every_record_is_accounted_for_with_its_offset() -> None:
    values = [
        b'{"ts": 1700000001, "x": 1}',  # 100 ok
        b"garbage",  # 101 not_json
        b'{"ts": 1700000002, "x": 2}',  # 102 ok
        b"[]",  # 103 not_object
        b'{"x": 3}',  # 104 missing_event_time
        b'{"ts": "soon"}',  # 105 invalid_event_time
        b'{"ts": "2024-01-01T00:00:00Z"}',  # 106 ok
    ]

    decoded = _decode(values, source="events", partition=3, watermark_us=123)

    assert decoded.records == len(decoded) + len(decoded.dead_letters) == len(values)
    assert decoded.offsets == [100, 102, 106]
    assert decoded.values == [values[0], values[2], values[6]]
    assert [e.get("x") for e in decoded.events] == [1, 2, None]
    assert decoded.event_time_us.tolist() == [
        1_700_000_001_000_000,
        1_700_000_002_000_000,
        1_704_067_200_000_000,
    ]
    assert [(d.offset, d.reason) for d in decoded.dead_letters] == [
        (101, "not_json"),
        (103, "not_object"),
        (104, "missing_event_time"),
        (105, "invalid_event_time"),
    ]
    assert all(d.source == "events" and d.partition == 3 for d in decoded.dead_letters)
    assert [d.value for d in decoded.dead_letters] == [values[i] for i in (1, 3, 4, 5)]
    assert (decoded.source, decoded.partition, decoded.watermark_us) == ("events", 3, 123)


def test_empty_batch() -> None:
    decoded = _decode([])

    assert decoded.records == 0
    assert decoded.event_time_us.shape == (0,)
    assert decoded.watermark_us == NO_WATERMARK


# --- dead_letter_json ------------------------------------------------------------------------


def test_dead_letter_json_keeps_utf8_text() -> None:
    raw = '{"ts": "bad", "city": "Zürich"'.encode()
    dead = DeadLetter(raw, "not_json", "Expecting ','", "events", 2, 41)

    record = json.loads(dead_letter_json(dead))

    assert record == {
        "reason": "not_json",
        "detail": "Expecting ','",
        "source": "events",
        "partition": 2,
        "offset": 41,
        "value": '{"ts": "bad", "city": "Zürich"',
    }
    assert record["value"].encode() == raw


def test_dead_letter_json_base64_encodes_bytes_that_are_not_utf8() -> None:
    raw = b"\x00\xff\xfe binary \x80"
    dead = _one_dead_letter(raw)

    record = json.loads(dead_letter_json(dead))

    assert "value" not in record
    assert base64.b64decode(record["value_base64"]) == raw
    assert record["reason"] == "not_json"
    assert record["offset"] == 100


def test_events_given_as_text_or_objects_are_decoded_or_dead_lettered_with_a_reason() -> None:
    """What the library's front door hands the decoder: JSON text (str, even one JSON cannot turn
    into UTF-8), bytearray, dicts, and things that are not events."""
    decoder = _decoder(key_field="model")
    deep_text = "[" * 150 + "]" * 150
    values = [
        '{"ts": 1700000000, "model": "a", "x": 1}',
        bytearray(b'{"ts": 1700000001, "model": "b"}'),
        {"ts": 1700000002, "model": "c", "when": datetime(2024, 1, 1)},
        '{"ts": 1700000003, "model": "\\ud800' + " " * 300 + '"}',  # a lone surrogate, long
        deep_text,
        7,
        {"model": "d"},
    ]
    batch = decoder.decode(RecordBatch(values, [-1] * len(values)))
    assert [e["model"] for e in batch.events] == ["a", "b", "c"]
    assert batch.event_time_us.tolist() == [1_700_000_000_000_000 + i * 1_000_000 for i in range(3)]
    reasons = [(d.reason, d.value) for d in batch.dead_letters]
    assert reasons[0][0] == "invalid_key"  # the lone surrogate, read from text as it is
    assert reasons[1] == ("too_deep", deep_text.encode())
    assert reasons[2] == ("not_object", b"7")
    assert reasons[3] == ("missing_event_time", b'{"model": "d"}')
